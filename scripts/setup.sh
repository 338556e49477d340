#!/usr/bin/env bash
# moat's set-up for a fresh Debian 12 machine (run as root):
#   - installs every Debian package that moat, its tests and its benchmarks need;
#   - builds the release binary (target/release/moat, plus the moat-runtime name for engines);
#   - makes a demo bundle from Debian's busybox-static at /var/lib/moat/demo, and imports the same
#     rootfs as the image busybox:local.
# With --deps-only it stops after the packages (the test script uses that).
# Idempotent: packages already installed are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (namespaces, mounts and cgroups need it)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=300"
# build: gcc, pkg-config, libseccomp; tests: busybox-static (test images), jq, bsdutils (script:
# a real terminal for -it tests);
# benchmarks: crun, runc, hyperfine (the peers moat is measured against);
# engine tests: podman (runs containers with moat as its OCI runtime);
# image interoperability tests: skopeo and umoci (they write and read the archives moat does);
# registry tests: Debian's docker-registry, and htpasswd (apache2-utils) for basic auth.
# API tests: docker-compose (v1) against moat serve; openssl makes the registry tests' certificates.
# networks: nftables (moat writes its rules with nft), iproute2 and util-linux (the tests' own
# namespaces: ip, unshare, nsenter), python3 (pty-driven terminal tests, the tests' world server).
# VM containers: qemu-system-x86 (the VMM), and linux-source-6.1 with the kernel's build tools
# (xz-utils to unpack them, patch, bc, flex, bison, libelf-dev) for the guest kernel scripts/vm-kernel.sh builds;
# linux-image-cloud-amd64, the distribution kernel VM containers fall back to without that one
# (its modules go into the guest's initramfs; nothing boots it on the host).
# The boot unit (contrib/systemd/moat.service): systemd, whose systemd-analyze checks it.
PKGS="build-essential pkg-config libseccomp-dev busybox-static jq bsdutils nftables iproute2 util-linux python3 crun runc hyperfine podman containernetworking-plugins skopeo umoci docker-registry apache2-utils docker-compose openssl qemu-system-x86 linux-source-6.1 xz-utils bc flex bison libelf-dev patch linux-image-cloud-amd64 systemd"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup.sh: installing$missing"
  $APT update -qq
  # shellcheck disable=SC2086
  $APT install -y -qq --no-install-recommends $missing
fi
# API tests: docker-py and pytest drive `moat serve` (tests/dockerpy), from PyPI.
if ! python3 -c 'import docker, pytest' 2>/dev/null; then
  echo "setup.sh: installing docker-py and pytest"
  python3 -m pip install --quiet --disable-pip-version-check 'docker>=7,<8' 'pytest>=8'
fi
if ! command -v cargo >/dev/null; then
  echo "setup.sh: cargo not found: install a Rust toolchain >= 1.87 (rustup), then run this again" >&2
  exit 1
fi
# The guest kernel of VM containers: built once (4-5 min), cached in /var/cache/moat/kernel.
bash scripts/vm-kernel.sh
[ "${1:-}" = --deps-only ] && exit 0

cargo build --release
# The build target is explicit (.cargo/config.toml); give the binary its short path too.
mkdir -p target/release
ln -sfn ../x86_64-unknown-linux-gnu/release/moat target/release/moat
ln -sfn moat target/release/moat-runtime

demo=/var/lib/moat/demo
if [ ! -x "$demo/rootfs/bin/busybox" ]; then
  mkdir -p "$demo/rootfs"/{bin,proc,sys,dev,etc,tmp,root}
  cp /bin/busybox "$demo/rootfs/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$demo/rootfs/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$demo/rootfs/etc/passwd"
  echo 'root:x:0:' > "$demo/rootfs/etc/group"
  chmod 1777 "$demo/rootfs/tmp"
fi
rm -f "$demo/config.json"
target/release/moat runtime spec --bundle "$demo"
jq '.process.terminal = false
  | .process.args = ["sh", "-c", "echo \"hello from moat: pid $$ in $(hostname), $(grep -c . /proc/self/mountinfo) mounts, uid $(id -u)\""]' \
  "$demo/config.json" > "$demo/config.json.tmp" && mv "$demo/config.json.tmp" "$demo/config.json"
# The demo image for `moat run` (no registry is reachable here: imported from busybox-static).
if [ -z "$(target/release/moat images -q busybox:local 2>/dev/null)" ]; then
  tar -C "$demo/rootfs" -cf - . | target/release/moat import --change 'CMD ["/bin/sh"]' - busybox:local >/dev/null
fi
echo "setup.sh: ready. Try: target/release/moat run --rm busybox:local echo hello"
