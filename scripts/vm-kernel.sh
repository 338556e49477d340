#!/usr/bin/env bash
# Builds the guest kernel of VM containers once and caches it outside the work tree:
#   /var/cache/moat/kernel/vmlinux-<version>-<hash of config and patches>, linked as
#   /var/cache/moat/kernel/vmlinux
# (the path moat looks at when MOAT_VM_KERNEL is not set). From Debian's linux-source-6.1:
# the patches in vm/patches applied, `make tinyconfig`, then vm/kernel.config merged over it, then
# `make vmlinux` (4-5 min on 2 cores). An unchanged config and patch set is not built again.
# Needs the packages setup.sh installs (linux-source-6.1, build-essential, patch, bc, flex,
# bison, libelf-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
src=/usr/src/linux-source-6.1.tar.xz
cache=${MOAT_KERNEL_CACHE:-/var/cache/moat/kernel}
[ -f "$src" ] || { echo "vm-kernel.sh: $src missing: install linux-source-6.1 (scripts/setup.sh)" >&2; exit 1; }
# moat's own changes to the guest kernel (each patch says why), in a fixed order.
shopt -s nullglob
export LC_ALL=C
patches=("$PWD"/vm/patches/*.patch)
hash=$( (cat vm/kernel.config "${patches[@]}"; stat -c %s "$src") | sha256sum | cut -c1-12)
out="$cache/vmlinux-6.1-$hash"
if [ -f "$out" ]; then
  ln -sfn "$(basename "$out")" "$cache/vmlinux"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "vm-kernel.sh: building the guest kernel in $work (4-5 min)"
tar -C "$work" -xf "$src"
cd "$work"/linux-source-6.1
for p in "${patches[@]}"; do
  patch -s -p1 --fuzz=0 < "$p" || { echo "vm-kernel.sh: $p does not apply to $src" >&2; exit 1; }
done
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$OLDPWD/vm/kernel.config" >/dev/null
make -s olddefconfig
# Every line of the fragment must have survived the merge (a dependency not met drops it
# silently, and a kernel without, say, 9p only fails at the first VM start).
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=y' "$OLDPWD/vm/kernel.config" | while read -r l; do grep -qx "$l" .config || echo "$l"; done)
[ -z "$missing" ] || { echo "vm-kernel.sh: options not taken by the kernel: $missing" >&2; exit 1; }
make -s -j"$(nproc)" vmlinux
cp vmlinux "$out.tmp" && mv "$out.tmp" "$out"
ln -sfn "$(basename "$out")" "$cache/vmlinux"
# Kernels of earlier configs go (a VM booted from one keeps its mapping of the unlinked file).
find "$cache" -maxdepth 1 -name 'vmlinux-*' ! -name "$(basename "$out")" -delete
echo "vm-kernel.sh: $out"
