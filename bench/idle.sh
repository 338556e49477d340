#!/usr/bin/env bash
# idle.sh: the idle memory of each engine's per-container helper process, N detached `sleep`
# containers per engine (default 50): moat's monitor (`moat-monitor --root ROOT monitor <id>`),
# podman's conmon and docker's containerd-shim-runc-v2 (its own dockerd with
# --iptables=false --bridge=none). PSS and RSS from /proc/PID/smaps_rollup, summed over the
# helpers and divided by N, and the ratios. A benchmark, not a test (the issue's target: moat's
# PSS per container at or below conmon's).
#
#   sudo bash bench/idle.sh            # moat from target/release/moat
#   sudo MOAT=/path/to/moat N=50 IDLE_S=60 bash bench/idle.sh
#
# Settings (environment):
#   MOAT=target/release/moat  moat binary (relative paths are taken from the repo root)
#   W=/tmp/moat-bench-idle    work dir (moat's --root, podman's and dockerd's state), removed at
#                             the end (KEEP=1 keeps the results, never the containers)
#   N=50                      containers per engine
#   PAR=4                     parallel starts (`xargs -P`)
#   IDLE_S=60                 seconds between the last engine's `fresh` measurement and the
#                             `idle` one
#
# Two measurements. `fresh`: each engine's helpers 3 s after its N-th container started (all its
# containers are then younger than 30 s). `idle`: all three engines' helpers again, IDLE_S later,
# with all 3N containers running. The two differ on this machine because DAMON pages out memory
# idle for 30 s (5 s aggregation x age 6; no swap, so only clean file pages go: binary text and
# libraries are dropped and fault back in when touched). `fresh` is the figure to compare with
# other machines; `idle` is what a long-idle container costs here.
#
# PSS splits each shared page between the processes that map it: the N helpers of one engine
# share their binary's text (and conmon shares glib/libc with everything else on the host), so
# PSS per container is the memory that one more container adds; RSS counts every mapped page.
# The breakdown table sums PSS by mapping: the helper's own binary, shared libraries, [heap],
# [stack], anonymous mmaps, and anything else.
#
# Machine quirks (see ../shared/peers/peers-bench.sh): podman gets explicit --ulimit values (the
# nofile hard limit is 20000 and CAP_SYS_RESOURCE is missing) and runc (crun refuses hybrid
# cgroups). No network is touched: dockerd runs with --bridge=none --iptables=false and every
# container runs with --network none (loopback only).
set -uo pipefail
SELF=$(readlink -f "$0"); REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-idle}; N=${N:-50}; PAR=${PAR:-4}; IDLE_S=${IDLE_S:-60}
MOAT=${MOAT:-target/release/moat}; case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
R=$W/results
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$MOAT" ] || { echo "no moat binary at $MOAT (cargo build --release)" >&2; exit 1; }
[ -s "$W/docker.pid" ] && kill -0 "$(cat "$W/docker.pid")" 2>/dev/null \
  && { echo "a dockerd from $W is running; stop it first" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in docker.io podman conmon runc busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || NEED="${NEED:-} $p"
done
[ -n "${NEED:-}" ] && apt-get -o DPkg::Lock::Timeout=300 install -y -qq $NEED >/dev/null

M="$MOAT --root $W/moat"
export DOCKER_HOST=unix://$W/docker.sock
P="podman --root $W/podman-root --runroot $W/podman-run --cgroup-manager cgroupfs --events-backend file"
HAD=$(ls -d /sys/fs/cgroup/pids/docker /sys/fs/cgroup/pids/libpod_parent 2>/dev/null | wc -l)
HAD_MOAT=$(ls -d /sys/fs/cgroup/pids/moat 2>/dev/null | wc -l)
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
U="--ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"
DPID=
cleanup() {
  trap - INT TERM
  [ -d "$W/moat" ] && { $M rm -f $($M ps -aq 2>/dev/null) >/dev/null 2>&1; }
  $P rm -af -t 0 >/dev/null 2>&1
  docker rm -f $(docker ps -aq 2>/dev/null) >/dev/null 2>&1
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -TERM "$DPID"; for i in $(seq 1 60); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.5; done
  fi
  # Whatever is still mounted under $W (podman's storage bind mount, dockerd's netns): ours.
  awk -v w="$W/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  # The engines' own parent cgroups, when this run made them (empty once their containers are gone).
  for h in /sys/fs/cgroup/*/; do
    [ "$HAD" = 0 ] && rmdir "$h"docker "$h"libpod_parent/conmon "$h"libpod_parent 2>/dev/null
    [ "$HAD_MOAT" = 0 ] && rmdir "$h"moat 2>/dev/null
  done
  if [ "${KEEP:-0}" = 1 ]; then
    find "$W" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} + 2>/dev/null
  else
    rm -rf "$W" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

awk -v w="$W/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null
rm -rf "$W"; mkdir -p "$R" "$W/rootfs"/{bin,proc,sys,dev,etc,tmp,root}

# helpers ENGINE: the pids of this run's helper processes of ENGINE, one per line
helpers() {
  case $1 in
    moat)   pgrep -f "^moat-monitor --root $W/moat monitor (--pending )?[0-9a-f]{64}( |\$)" ;;
    podman) pgrep -x conmon | while read -r p; do grep -qF "$W/" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; done ;;
    docker) pgrep -f "^[^ ]*containerd-shim-runc-v2 .*$W/" ;;
  esac
}
# measure PHASE ENGINE HELPER: sums smaps_rollup over the helpers into $R/mem.txt and the
# per-mapping PSS breakdown into $R/breakdown.txt
measure() {
  local phase=$1 eng=$2 name=$3 pids p exe
  pids=$(helpers "$eng" | tr '\n' ' ')
  for p in $pids; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done | awk -v ph="$phase" -v e="$eng" \
    -v h="$name" -v n="$N" -v k="$(echo $pids | wc -w)" \
    '/^Rss:/{r+=$2} /^Pss:/{p+=$2} /^Pss_Anon:/{a+=$2} /^Pss_File:/{f+=$2} /^Swap:/{s+=$2}
     END{printf "%s\t%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%d\n", ph, e, h, k, n, p/n, r/n, a/n, f/n, s}' >> "$R/mem.txt"
  for p in $pids; do
    exe=$(readlink "/proc/$p/exe" 2>/dev/null)
    awk -v exe="$exe" '/^[0-9a-f]+-[0-9a-f]+ /{nm=$6; c = nm == "" ? "anon mmap" : nm == exe ? "binary" \
        : nm ~ /\.so/ ? "shared libs" : nm == "[heap]" ? "heap" : nm == "[stack]" ? "stack" : "other: " nm
        sub(/^other: .*\//, "other: ", c); next}
      /^Pss:/{print c "\t" $2}' "/proc/$p/smaps" 2>/dev/null
  done | awk -F'\t' -v ph="$phase" -v e="$eng" -v n="$N" '{s[$1]+=$2} END{for (c in s) printf "%s\t%s\t%s\t%.0f\n", ph, e, c, s[c]/n}' \
    | sort -t$'\t' -k4,4nr >> "$R/breakdown.txt"
}
# start ENGINE CMD...: starts N containers with CMD (PAR at a time); ids to $R/ENGINE.ids
start() {
  local eng=$1; shift; local t0=$EPOCHREALTIME
  seq 1 "$N" | xargs -P "$PAR" -I{} "$@" > "$R/$eng.ids" 2> "$R/$eng.err"
  local ok; ok=$(grep -cE '^[0-9a-f]{64}$' "$R/$eng.ids")
  echo "$eng $ok $(echo "$t0 $EPOCHREALTIME" | awk '{printf "%.1f", $2-$1}')" >> "$R/starts.txt"
  [ "$ok" = "$N" ] || { echo "$eng: $ok of $N containers started:"; sort -u "$R/$eng.err" | head -5; }
  [ "$ok" = "$N" ]
}

# ---- busybox:local for the three engines, from busybox-static (no registry), dockerd ----
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/rootfs/etc/passwd"; echo 'root:x:0:' > "$W/rootfs/etc/group"
tar -C "$W/rootfs" -cf "$W/bb.tar" .
$M import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null || exit 1
dockerd --host "$DOCKER_HOST" --data-root "$W/docker-data" --exec-root "$W/docker-exec" \
  --pidfile "$W/docker.pid" --iptables=false --bridge=none > "$R/dockerd.log" 2>&1 &
DPID=$!
for i in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null || exit 1
$P import --change 'CMD ["/bin/sh"]' "$W/bb.tar" busybox:local >/dev/null 2>&1 || exit 1
: > "$R/mem.txt"; : > "$R/breakdown.txt"; : > "$R/starts.txt"

# ---- N containers per engine; each engine measured 3 s after its last start ----
start moat $M run -d --network none busybox:local sleep 600 || exit 1
sleep 3; measure fresh moat "moat monitor"
# moat re-executes itself from a sealed view of its binary (CVE-2019-5736): a lower-only overlayfs
# (shared page cache) or, when that fails, a private memfd copy per process. Say which one ran.
EXE=$(readlink "/proc/$(helpers moat | head -1)/exe" 2>/dev/null)
case $EXE in
  /memfd:*) NOTE="moat's monitors run from a memfd copy of the binary ($EXE): the overlayfs seal failed (dmesg: $(dmesg 2>/dev/null | grep -i overlayfs | tail -1 | sed 's/^\[[^]]*\] //'); a binary in an ancestor directory of W makes overlapping layers)" ;;
  *) NOTE="moat's monitors run from the overlayfs view of the binary ($EXE)" ;;
esac
start podman $P run -d --runtime runc $U --network none busybox:local sleep 600 || exit 1
sleep 3; measure fresh podman conmon
start docker docker run -d --network none busybox:local sleep 600 || exit 1
sleep 3; measure fresh docker containerd-shim-runc-v2
sleep "$IDLE_S"
measure idle moat "moat monitor"; measure idle podman conmon; measure idle docker containerd-shim-runc-v2
for e in moat podman docker; do  # still all running?
  echo "$e $(helpers $e | wc -l)" >> "$R/still.txt"
done

# ---- report ----
echo "idle.sh: $(date -u '+%F %T') UTC; $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "moat: $MOAT ($($MOAT --version 2>/dev/null), $(stat -Lc %s "$MOAT") bytes, mtime $(date -u -r "$MOAT" '+%F %T') UTC); podman $(podman --version | awk '{print $3}'), conmon $(conmon --version | awk 'NR==1{print $3}'), docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}')"
echo "$NOTE"
echo "starts (engine, ok of $N, seconds with $PAR in parallel): $(tr '\n' ';' < "$R/starts.txt")  helpers still running at the end: $(tr '\n' ';' < "$R/still.txt")"
echo
printf '| phase | engine | helper process | helpers / containers | PSS per container KB | RSS per container KB | PSS anon KB | PSS file KB | swap KB (all) | moat PSS / this |\n|---|---|---|---|---|---|---|---|---|---|\n'
awk -F'\t' 'NR==FNR{if ($2=="moat") m[$1]=$6; next}
     {printf "| %s | %s | %s | %d / %d | %d | %d | %d | %d | %d | %.2f |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, m[$1]/($6>0?$6:1)}' "$R/mem.txt" "$R/mem.txt"
echo
for ph in fresh idle; do
  awk -F'\t' -v ph=$ph '$1==ph{p[$2]=$6} END{printf "%s: moat/conmon PSS = %.2f, moat/shim PSS = %.2f\n", ph, p["moat"]/p["podman"], p["moat"]/p["docker"]}' "$R/mem.txt"
done
echo
echo "PSS per container by mapping, KB (fresh):"
printf '| engine | mapping | PSS per container KB |\n|---|---|---|\n'
awk -F'\t' '$1=="fresh" && $4>0 {printf "| %s | %s | %s |\n", $2, $3, $4}' "$R/breakdown.txt"
