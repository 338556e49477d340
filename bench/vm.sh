#!/usr/bin/env bash
# vm.sh: what VM isolation costs. `moat run --rm --isolation=vm IMG true` (the minimal guest
# kernel from scripts/vm-kernel.sh, and Debian's cloud kernel: `vm.cloud`) beside
# `moat run --rm IMG true` (process isolation), with
# hyperfine in one run, and the ratio; then the idle memory of N detached VM containers (PSS of
# each container's monitor, VM driver, QEMU and virtio-fs daemon, from /proc/PID/smaps_rollup). A benchmark, not
# a test (issue 8's targets under software emulation: <= 1 s median start with the minimal
# kernel, <= 64 MiB per idle VM container; Kata Containers publishes 0.8-1.3 s per start with
# hardware KVM and 115-142 MB per container).
#
#   sudo unshare --net bash bench/vm.sh              # moat from target/release/moat
#   sudo MOAT=/path/to/moat RUNS=10 N=3 unshare --net bash bench/vm.sh
#
# This host has no hardware virtualization (its /dev/kvm is PVM), so the VMs run under QEMU's
# TCG. The first rows run with --network none (loopback only, as bench/run.sh); `vm.bridge` adds
# the default bridge network (a tap wired to the container's veth). Run it inside a throwaway
# network namespace (`unshare --net`) so that the bridge and its rules never touch the host's
# interfaces.
set -uo pipefail
SELF=$(readlink -f "$0"); REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-vm}; RUNS=${RUNS:-10}; WARM=${WARM:-2}; N=${N:-3}
MOAT=${MOAT:-target/release/moat}; case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
R=$W/results
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$MOAT" ] || { echo "no moat binary at $MOAT (cargo build --release)" >&2; exit 1; }
[ -x "$(dirname "$(readlink -f "$MOAT")")/moat-agent" ] || { echo "no moat-agent beside $MOAT (cargo build --release)" >&2; exit 1; }
bash "$REPO/scripts/vm-kernel.sh" || exit 1
M="$MOAT --root $W/moat"
cleanup() {
  [ -d "$W/moat" ] && $M system reset --force >/dev/null 2>&1
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W" 2>/dev/null
}
trap cleanup EXIT
rm -rf "$W"; mkdir -p "$R" "$W/rootfs"/{bin,proc,sys,dev,etc,tmp,root}
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/rootfs/etc/passwd"; echo 'root:x:0:' > "$W/rootfs/etc/group"
tar -C "$W/rootfs" -cf "$W/bb.tar" .
$M import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null || exit 1
VM="$M run --rm --isolation=vm --network none busybox:local true"
VMNET="$M run --rm --isolation=vm busybox:local true"
PROC="$M run --rm --network none busybox:local true"
for c in "$VM" "$VMNET" "$PROC"; do $c || { echo "sanity FAILED: $c"; exit 1; }; done
hf() { # hf LABEL COMMAND
  hyperfine -N --warmup "$WARM" --runs "$RUNS" --export-json "$R/$1.json" "$2" > "$R/$1.txt" 2>&1 \
    || { echo "$1 FAILED: $(tail -3 "$R/$1.txt")"; return 1; }
  jq -r --arg l "$1" '.results[0] | "\($l) \(.median*1000) \(.mean*1000) \(.min*1000) \(.max*1000)"' "$R/$1.json" >> "$R/all.txt"
}
hf vm "$VM"
# The same with every share over 9p (the writable layer too: no virtiofsd), as before virtio-fs.
hf vm.9p "env MOAT_VIRTIOFSD=none $VM"
hf vm.bridge "$VMNET"
# Debian's cloud kernel, the fallback when the minimal one is not built (its drivers are
# modules the agent loads; every share over virtio-fs): issue 8 asks for both kernels' starts.
CLOUD=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1)
if [ -n "$CLOUD" ]; then
  hf vm.cloud "env MOAT_VM_KERNEL=$CLOUD $VM"
else
  echo "vm.cloud skipped: no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)"
fi
hf process "$PROC"
echo "vm.sh: $(date -u '+%F %T') UTC; $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each; accelerator: $( (grep -qw -e vmx -e svm /proc/cpuinfo && [ -w /dev/kvm ]) && echo kvm || echo tcg)"
proc=$(awk '$1=="process"{print $2}' "$R/all.txt")
printf '| what | median ms | mean ms | min ms | max ms | median / process |\n|---|---|---|---|---|---|\n'
awk -v p="$proc" '{printf "| %s | %.0f | %.0f | %.0f | %.0f | %.1fx |\n", $1, $2, $3, $4, $5, $2/p}' "$R/all.txt"
# Idle memory: N detached VM containers, measured 10 s after the last started.
# IDLE9P=1: the idle containers with every share over 9p (no virtiofsd).
[ "${IDLE9P:-0}" = 1 ] && export MOAT_VIRTIOFSD=none
for i in $(seq 1 "$N"); do $M run -d --isolation=vm --network none --name "idle$i" busybox:local sleep 3600 >/dev/null || exit 1; done
sleep 10
pss() { awk '/^Pss:/{s+=$2} END{print s+0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
rss() { awk '/^Rss:/{s+=$2} END{print s+0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# descendants PID: every process below PID (the virtio-fs daemon forks its sandboxed worker)
descendants() { local c; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done; }
tp=0; tr=0; qp=0
printf '\n| container | monitor PSS KiB | driver PSS KiB | QEMU PSS KiB | QEMU RSS KiB | virtiofsd PSS KiB | total PSS MiB |\n|---|---|---|---|---|---|---|\n'
for i in $(seq 1 "$N"); do
  id=$($M inspect -f '{{.Id}}' "idle$i")
  driver=$($M inspect -f '{{.State.Pid}}' "idle$i")
  mon=$(pgrep -f "monitor .*$id" | head -1)
  qemu=""; v=0
  for c in $(descendants "$driver"); do
    case $(cat /proc/"$c"/comm 2>/dev/null) in
      qemu*) qemu=$c ;;
      *) v=$((v + $(pss "$c"))) ;;   # virtiofsd and its sandboxed child
    esac
  done
  m=$(pss "$mon"); d=$(pss "$driver"); q=$(pss "$qemu"); qr=$(rss "$qemu")
  t=$((m + d + q + v)); tp=$((tp + t)); qp=$((qp + q)); tr=$((tr + qr))
  printf '| idle%s | %s | %s | %s | %s | %s | %.1f |\n' "$i" "$m" "$d" "$q" "$qr" "$v" "$(echo "$t/1024" | bc -l)"
done
printf '\nPSS per idle VM container: %.1f MiB (QEMU %.1f MiB of it); target <= 64 MiB\n' \
  "$(echo "$tp/$N/1024" | bc -l)" "$(echo "$qp/$N/1024" | bc -l)"
