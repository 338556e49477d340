#!/usr/bin/env bash
# run.sh: `moat run --rm IMG true` against `docker run --rm` (its own dockerd with
# --iptables=false --bridge=none), `podman run --rm --network none` and a raw `crun run`, with
# hyperfine in one run, and the ratios. A benchmark, not a test (issue 4's target: moat's median
# <= 1.5x crun's, i.e. >= 10x faster than docker). moat runs with --network none (loopback only,
# as crun's bundle, docker's --bridge=none and podman's --network none): its default bridge
# network is measured by bench/net.sh, inside a throwaway network namespace.
#
#   sudo bash bench/run.sh            # moat from target/release/moat
#   sudo MOAT=/path/to/moat RUNS=30 bash bench/run.sh
#
# Machine quirks (see ../shared/peers/peers-bench.sh): crun refuses this host's hybrid cgroups, so
# crun (and, for a like-for-like ratio, moat too) also run in a private mount namespace with
# /sys/fs/cgroup/unified unmounted; podman gets explicit --ulimit values (the nofile hard limit is
# 20000 and CAP_SYS_RESOURCE is missing) and runc. No network is touched: dockerd runs with
# --bridge=none --iptables=false and every container has no network of its own but loopback.
set -uo pipefail
SELF=$(readlink -f "$0"); REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-run}; RUNS=${RUNS:-30}; WARM=${WARM:-3}; ROUNDS=${ROUNDS:-3}
MOAT=${MOAT:-target/release/moat}; case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
R=$W/results
export W RUNS WARM ROUNDS MOAT R
hf() { # hf LABEL COMMAND
  hyperfine -N --warmup "$WARM" --runs "$RUNS" --export-json "$R/$1.json" "$2" > "$R/$1.txt" 2>&1 \
    || { echo "$1 FAILED: $(tail -3 "$R/$1.txt")"; return 1; }
  jq -r --arg l "$1" '.results[0] | "\($l) \(.median*1000) \(.mean*1000) \(.min*1000)"' "$R/$1.json" >> "$R/all.txt"
}
if [ "${1:-}" = __private ]; then
  umount /sys/fs/cgroup/unified || exit 1
  # The ratio the target is about: crun and moat alternate in ROUNDS rounds of RUNS/ROUNDS
  # runs each (at least 10), so both see the same drift of this shared machine (two blocks of
  # 30 runs, one after the other, moved the ratio by up to 0.3 between back-to-back runs);
  # median, mean and min are over all of a command's runs.
  C="crun --root $W/crun-state run --bundle $W/bundle bench-crun"
  M="$MOAT --root $W/moat run --rm --network none busybox:local true"
  per=$((RUNS / ROUNDS)); [ "$per" -lt 10 ] && per=10
  for r in $(seq 1 "$ROUNDS"); do
    hyperfine -N --warmup "$WARM" --runs "$per" --export-json "$R/private.$r.json" "$C" "$M" \
      > "$R/private.$r.txt" 2>&1 || { echo "private round $r FAILED: $(tail -3 "$R/private.$r.txt")"; exit 1; }
  done
  jq -s -r 'def med: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def row($n; $t): "\($n) \($t | med * 1000) \($t | add / length * 1000) \($t | min * 1000)";
    row("private.crun"; [.[].results[0].times[]]), row("private.moat"; [.[].results[1].times[]])' \
    "$R"/private.*.json >> "$R/all.txt"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in docker.io podman crun runc hyperfine jq busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || NEED="${NEED:-} $p"
done
[ -n "${NEED:-}" ] && apt-get -o DPkg::Lock::Timeout=300 install -y -qq $NEED >/dev/null
[ -x "$MOAT" ] || { echo "no moat binary at $MOAT (cargo build --release)" >&2; exit 1; }
# A deleted tree slows file creation on this ext4 root for a while (its inode allocator skips
# inodes freed in the last 60 s: see RESULTS.md, unpack.sh's machine notes): after deleting
# an earlier run's tree, wait that out, or the engines that create files per container pay it.
if [ -e "$W" ]; then rm -rf "$W"; sync; date +%s > "$W.deleted"; fi
if [ -f "$W.deleted" ]; then
  left=$(( $(cat "$W.deleted") + ${SETTLE_S:-65} - $(date +%s) ))
  [ "$left" -gt 0 ] && { echo "(waiting $left s for the last deleted tree to settle)" >&2; sleep "$left"; }
fi
mkdir -p "$R" "$W/rootfs"/{bin,proc,sys,dev,etc,tmp,root}
export DOCKER_HOST=unix://$W/docker.sock
P="podman --root $W/podman-root --runroot $W/podman-run --cgroup-manager cgroupfs --events-backend file"
HAD=$(ls -d /sys/fs/cgroup/pids/docker /sys/fs/cgroup/pids/libpod_parent 2>/dev/null | wc -l)
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
U="--ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"
cleanup() {
  $P rm -af -t 0 >/dev/null 2>&1; docker rm -f $(docker ps -aq 2>/dev/null) >/dev/null 2>&1
  [ -s "$W/docker.pid" ] && kill "$(cat "$W/docker.pid")" 2>/dev/null && sleep 2
  umount "$W/docker-exec/netns/default" 2>/dev/null
  # The engines' own parent cgroups, when this run made them (empty once their containers are gone).
  if [ "$HAD" = 0 ]; then
    for h in /sys/fs/cgroup/*/; do rmdir "$h"docker "$h"libpod_parent/conmon "$h"libpod_parent 2>/dev/null; done
  fi
  [ "${KEEP:-0}" = 1 ] || { rm -rf "$W" 2>/dev/null; date +%s > "$W.deleted"; }
}
trap cleanup EXIT
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/rootfs/etc/passwd"; echo 'root:x:0:' > "$W/rootfs/etc/group"
tar -C "$W/rootfs" -cf "$W/bb.tar" .
"$MOAT" --root "$W/moat" import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null || exit 1
dockerd --host "$DOCKER_HOST" --data-root "$W/docker-data" --exec-root "$W/docker-exec" \
  --pidfile "$W/docker.pid" --iptables=false --bridge=none > "$R/dockerd.log" 2>&1 &
for i in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null || exit 1
$P import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null 2>&1 || exit 1
mkdir -p "$W/bundle"; cp -a "$W/rootfs" "$W/bundle/rootfs"
( cd "$W/bundle" && crun spec && jq '.process.terminal=false | .process.args=["/bin/true"]' config.json > c && mv c config.json )
for c in "$MOAT --root $W/moat run --rm --network none busybox:local true" "docker run --rm busybox:local true" \
         "$P run --rm --runtime runc $U --network none busybox:local true"; do
  $c || { echo "sanity FAILED: $c"; exit 1; }
done
# The target's pair first: docker's and podman's rows delete a container tree per run, which
# slows the file creation of whatever runs next on this disk (see above).
unshare -m --propagation private bash "$SELF" __private
hf hybrid.moat "$MOAT --root $W/moat run --rm --network none busybox:local true"
hf docker "docker run --rm busybox:local true"
hf podman "$P run --rm --runtime runc $U --network none busybox:local true"
echo "run.sh: $(date -u '+%F %T') UTC; $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each"
crun=$(awk '$1=="private.crun"{print $2}' "$R/all.txt")
printf '| what | median ms | mean ms | min ms | median / crun |\n|---|---|---|---|---|\n'
awk -v c="$crun" '{printf "| %s | %.1f | %.1f | %.1f | %.2f |\n", $1, $2, $3, $4, $2/c}' "$R/all.txt"
