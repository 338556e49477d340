#!/usr/bin/env bash
# api.sh: the same docker CLI (/usr/local/bin/docker, 28.x) against `moat serve` and against a
# dockerd, both started by this script: `docker run --rm --network none busybox:bench true` (and
# `... echo hi`, which goes through attach), with hyperfine in one run, and the ratios. A
# benchmark, not a test. Target (from the issue): moat >= 5x faster than dockerd through the same
# client: docker median / moat median >= 5 for `run --rm true`, with --network none and without.
#
#   sudo bash bench/api.sh                        # moat from target/release/moat
#   sudo MOAT=/path/to/moat RUNS=30 bash bench/api.sh
#
# What is timed (hyperfine -N --warmup WARM --runs RUNS; one hyperfine per row; -N runs without a
# shell, so DOCKER_HOST is given per command through env):
#   moat       env DOCKER_HOST=unix://$X/moat.sock   docker run --rm --network none busybox:bench true
#   docker     env DOCKER_HOST=unix://$X/docker.sock docker run --rm --network none busybox:bench true
#   moat-echo / docker-echo   the same with `echo hi` (output attached; hyperfine discards it)
#   moat-default / docker-default   `run --rm IMG true` with no --network (NETDEFAULT=1): on a
#              dockerd with --bridge=none the container still gets its own netns with loopback, made
#              by runc, while `--network none` makes libnetwork create (and later delete) a sandbox
#              netns: ~120 ms more per run here. Since issue 7 moat's default is its bridge network
#              (a veth and an address per run), so this pair compares unlike set-ups;
#   docker-bridge   the same `run --rm IMG true` against a second dockerd started as installed,
#              with its default bridge (docker0, a veth per container; --iptables=false still,
#              as for the first): the like-for-like peer of moat-default, both engines as a user
#              gets them. NETDEFAULT=1 turns these three rows on. The whole script runs in a
#              throwaway network namespace (it re-executes itself under `unshare --net`), so
#              neither bridge touches the host.
#   moat2      the first row again, last: how much the machine drifted meanwhile
#   cli        `docker --version` (no daemon): the client's own start-up, a floor for every row
# Both engines hold the same image: a busybox-static rootfs (the binary, its applet symlinks,
# /etc/passwd, /etc/group), tarred once; `moat import` and `docker import` of that tarball, both
# with CMD ["/bin/sh"]. --network none for both: dockerd runs with --bridge=none, and moat's bridge
# is bench/net.sh's subject. Before timing, for each engine: `echo ok` must print ok, `true` must return
# 0 and `sh -c 'exit 7'` must return 7, through the docker CLI; else the script fails. After the
# rows: no container may be left (docker ps -a through each engine), and what moat left under its
# root, mounts under its root, new cgroup dirs under /sys/fs/cgroup/*/moat/ and the serve
# log's warnings and errors are printed as NOTEs.
#
# Settings (environment):
#   MOAT=target/release/moat   moat binary (relative paths from the repo root; falls back to
#                              target/x86_64-unknown-linux-gnu/release/moat). Copied into the work
#                              dir first, so a rebuild during the run changes nothing.
#   DOCKER=/usr/local/bin/docker   the docker CLI for both engines (dockerd is Debian's)
#   W=/tmp/moat-bench-api      work dir; the script works in $W/run, removed at the end (KEEP=1
#                              keeps it); W itself is removed only if the script made it
#   RUNS=30 WARM=3             hyperfine runs and warm-up runs per row
#   ECHO=1                     also time `echo hi` (0: only `true`)
#   NETDEFAULT=1               also time both engines with no --network (0: only --network none)
#   GATE_PCT=15 GATE_MAX_S=60  before each row, wait up to GATE_MAX_S s for < GATE_PCT % CPU busy
#                              over 2 s. The busy % and the load are printed either way.
#
# Machine quirks: the 2 cores may be shared with other work (builds, tests): trust the ratios more
# than the milliseconds. dockerd runs with its own --data-root, --exec-root, --pidfile and socket,
# --iptables=false --bridge=none; it and its containerd are stopped by PID at the end, as is moat
# serve. The only things outside the work dir the script may leave are the engines' parent cgroups
# (/sys/fs/cgroup/*/docker is removed when this run made it; /sys/fs/cgroup/*/moat is shared with
# any other moat on the host and left alone).
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
# Network safety: everything runs in a throwaway network namespace (only loopback, brought up
# here): moat's default bridge (NETDEFAULT=1) and dockerd never touch the host's interfaces.
if [ "${API_SH_INNER:-0}" != 1 ]; then
  API_SH_INNER=1 exec unshare --net -- bash "$SELF" "$@"
fi
ip link set lo up || { echo "api.sh: cannot bring lo up" >&2; exit 1; }
W=${W:-/tmp/moat-bench-api}
X=$W/run                # everything this script makes
R=$X/results
BIN=$X/bin/moat         # the copy of moat that is timed
MROOT=$X/moat           # moat's --root
DEXEC=$X/docker-exec
DOCKER=${DOCKER:-/usr/local/bin/docker}
IMG=busybox:bench
RUNS=${RUNS:-30}; WARM=${WARM:-3}; ECHO=${ECHO:-1}; NETDEFAULT=${NETDEFAULT:-0}
MSOCK=unix://$X/moat.sock
DSOCK=unix://$X/docker.sock
BSOCK=unix://$X/dockerb.sock   # the second dockerd, with its default bridge (NETDEFAULT=1)
BEXEC=$X/dockerb-exec

die() { echo "!! api.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
MOAT_GIVEN=${MOAT:+1}; MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
[ -x "$MOAT" ] || [ -n "$MOAT_GIVEN" ] || MOAT=$REPO/target/x86_64-unknown-linux-gnu/release/moat
[ -x "$MOAT" ] || die "no moat binary at $MOAT (build with cargo build --release, or set MOAT)"
"$MOAT" serve --help > /dev/null 2>&1 || die "$MOAT has no 'serve' (an old build? cargo build --release)"
[ -x "$DOCKER" ] || die "no docker CLI at $DOCKER (set DOCKER=...)"

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io hyperfine jq busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2 || die "cannot install ${need[*]}"
fi
BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')

# umount_under DIR: unmount whatever is mounted at or below DIR, deepest first
umount_under() {
  local m
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}
# busy_pct SECS: percentage of all CPU time that anything used over SECS, from /proc/stat
busy_pct() {
  local a b; a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
  local i ta=0 tb=0; for i in 1 2 3 4 5 6 7 8; do ta=$((ta+a[i])); tb=$((tb+b[i])); done
  local ia=$((a[4]+a[5])) ib=$((b[4]+b[5]))
  echo $(( 100 - 100*(ib-ia)/( (tb-ta) > 0 ? (tb-ta) : 1 ) ))
}
# quiet_gate: wait up to GATE_MAX_S for < GATE_PCT % busy over 2 s, then print the last busy %
quiet_gate() {
  local t=0 b; while :; do b=$(busy_pct 2); t=$((t+2))
    [ "$b" -lt "${GATE_PCT:-15}" ] || [ "$t" -ge "${GATE_MAX_S:-60}" ] && break; sleep 3; t=$((t+3)); done
  echo "$b"
}
# stop_pid PID NAME [SECS]: SIGTERM, wait up to SECS (default 15), then SIGKILL; prints the wait
stop_pid() {
  local pid=$1 name=$2 max=${3:-15} i t0=$EPOCHREALTIME
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for i in $(seq 1 $((max * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "   NOTE: $name (pid $pid) still running ${max} s after SIGTERM: SIGKILL" >&2; kill -KILL "$pid"; sleep 0.5
  else
    echo "   $name stopped $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s after SIGTERM" >&2
  fi
}
dockerd_stop() {  # dockerd_stop PIDFILE EXECROOT: SIGTERM a dockerd of the script, wait for it and its containerd
  local pid c i
  [ -s "$1" ] || return 0
  pid=$(cat "$1"); c=$(cat "$2/containerd/containerd.pid" 2>/dev/null)
  stop_pid "$pid" dockerd 30
  if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = containerd ]; then
    for i in $(seq 1 40); do kill -0 "$c" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$c" 2>/dev/null && kill -TERM "$c"
  fi
  rm -f "$1"; umount_under "$2"
}
serve_stop() {
  [ -s "$X/serve.pid" ] || return 0
  stop_pid "$(cat "$X/serve.pid")" "moat serve" 15
  rm -f "$X/serve.pid"
}
dk() { DOCKER_HOST=$1 "$DOCKER" "${@:2}"; }   # dk SOCKET ARGS...: the docker CLI against one engine
cg_moat() { ls -d /sys/fs/cgroup/*/moat/*/ 2>/dev/null | sort; }

MADE_W=0; [ -d "$W" ] || MADE_W=1
[ -s "$X/docker.pid" ] && kill -0 "$(cat "$X/docker.pid")" 2>/dev/null && die "a dockerd from $X is running; stop it first"
[ -s "$X/serve.pid" ] && kill -0 "$(cat "$X/serve.pid")" 2>/dev/null && die "a moat serve from $X is running; stop it first"
if [ -e "$X" ]; then umount_under "$X"; rm -rf "$X"; fi   # left by KEEP=1
mkdir -p "$R" "$X/bin" "$X/rootfs"/{bin,proc,sys,dev,etc,tmp,root} || die "cannot create $X"
HAD_DOCKER_CG=$(ls -d /sys/fs/cgroup/*/docker 2>/dev/null | wc -l)
cg_moat > "$X/cg-before"
cleanup() {
  [ -S "$X/moat.sock" ] && dk "$MSOCK" rm -f $(dk "$MSOCK" ps -aq 2>/dev/null) > /dev/null 2>&1
  [ -S "$X/docker.sock" ] && dk "$DSOCK" rm -f $(dk "$DSOCK" ps -aq 2>/dev/null) > /dev/null 2>&1
  [ -S "$X/dockerb.sock" ] && dk "$BSOCK" rm -f $(dk "$BSOCK" ps -aq 2>/dev/null) > /dev/null 2>&1
  serve_stop
  dockerd_stop "$X/docker.pid" "$DEXEC"
  dockerd_stop "$X/dockerb.pid" "$BEXEC"
  umount_under "$X"
  if [ "$HAD_DOCKER_CG" = 0 ]; then
    for h in /sys/fs/cgroup/*/; do rmdir "$h"docker 2>/dev/null; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $X" >&2; return; fi
  rm -rf "$X"
  [ "$MADE_W" = 1 ] && rmdir "$W" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$MOAT" "$BIN" || die "cannot copy $MOAT"
echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/{print $2}') GiB," \
     "kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "   $("$BIN" --version) (copied from $MOAT, built $(date -u -r "$MOAT" '+%F %T UTC')); docker CLI $("$DOCKER" --version | awk '{print $3}' | tr -d ,) ($DOCKER);" \
     "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,); $(hyperfine --version)" >&2

# ---------- the image: a busybox-static rootfs, one tarball for both engines ----------
S=$X/rootfs
cp "$BUSYBOX" "$S/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"; echo 'root:x:0:' > "$S/etc/group"
tar -C "$S" --numeric-owner --sort=name -cf "$X/bb.tar" . || die "cannot tar the rootfs"
"$BIN" --root "$MROOT" import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "moat import failed"

# ---------- the two daemons ----------
setsid "$BIN" --root "$MROOT" serve -H "$MSOCK" > "$R/serve.log" 2>&1 < /dev/null &
echo $! > "$X/serve.pid"
setsid dockerd --host "$DSOCK" --data-root "$X/docker-data" --exec-root "$DEXEC" \
  --pidfile "$X/docker.pid" --iptables=false --bridge=none > "$R/dockerd.log" 2>&1 < /dev/null &
t0=$EPOCHREALTIME
for i in $(seq 1 200); do dk "$MSOCK" version > /dev/null 2>&1 && break; sleep 0.05; done
dk "$MSOCK" version > /dev/null 2>&1 || { tail -20 "$R/serve.log" >&2; die "moat serve did not answer on $MSOCK"; }
echo "== moat serve (pid $(cat "$X/serve.pid")) answers after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s;" \
     "API $(dk "$MSOCK" version --format '{{.Server.APIVersion}} (min {{.Server.MinAPIVersion}}), server {{.Server.Version}}')" >&2
for i in $(seq 1 120); do dk "$DSOCK" version > /dev/null 2>&1 && break; sleep 0.25; done
dk "$DSOCK" version > /dev/null 2>&1 || { tail -20 "$R/dockerd.log" >&2; die "dockerd did not answer on $DSOCK"; }
echo "== dockerd (pid $(cat "$X/docker.pid")) answers; API $(dk "$DSOCK" version --format '{{.Server.APIVersion}}, server {{.Server.Version}}');" \
     "$(dk "$DSOCK" info --format 'storage {{.Driver}}, cgroup driver {{.CgroupDriver}} v{{.CgroupVersion}}, runtime {{.DefaultRuntime}}')" >&2
dk "$DSOCK" import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "docker import failed"
if [ "$NETDEFAULT" = 1 ]; then
  setsid dockerd --host "$BSOCK" --data-root "$X/dockerb-data" --exec-root "$BEXEC" \
    --pidfile "$X/dockerb.pid" --iptables=false > "$R/dockerb.log" 2>&1 < /dev/null &
  for i in $(seq 1 120); do dk "$BSOCK" version > /dev/null 2>&1 && break; sleep 0.25; done
  dk "$BSOCK" version > /dev/null 2>&1 || { tail -20 "$R/dockerb.log" >&2; die "the bridged dockerd did not answer on $BSOCK"; }
  dk "$BSOCK" import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "docker import (bridged dockerd) failed"
  out=$(dk "$BSOCK" run --rm "$IMG" sh -c 'ip -o -4 addr show eth0 | wc -l' 2>&1)
  [ "$out" = 1 ] || die "the bridged dockerd's container has no eth0 address ($out)"
  out=$(dk "$MSOCK" run --rm "$IMG" sh -c 'ip -o -4 addr show eth0 | wc -l' 2>&1)
  [ "$out" = 1 ] || die "moat's default-network container has no eth0 address ($out)"
  echo "   check: both default networks give the container an eth0 address (moat's bridge, docker0)" >&2
fi
for e in moat docker; do
  s=$MSOCK; [ $e = docker ] && s=$DSOCK
  echo "   $e image: $(dk "$s" image inspect --format '{{.Id}} {{.Size}} bytes, Cmd {{json .Config.Cmd}}' "$IMG")" >&2
done

# ---------- sanity: each engine really runs the container ----------
for e in moat docker; do
  s=$MSOCK; [ $e = docker ] && s=$DSOCK
  out=$(dk "$s" run --rm --network none "$IMG" echo ok 2>&1); [ "$out" = ok ] || die "$e: 'docker run --rm $IMG echo ok' printed '$out', not 'ok'"
  dk "$s" run --rm --network none "$IMG" true || die "$e: 'docker run --rm $IMG true' returned $?"
  dk "$s" run --rm --network none "$IMG" sh -c 'exit 7'; rc=$?; [ "$rc" = 7 ] || die "$e: 'sh -c \"exit 7\"' returned $rc, not 7"
  echo "   check $e: echo ok printed ok, true returned 0, exit 7 returned 7" >&2
done

# ---------- the rows ----------
cmd() { # cmd ROW: the timed command
  local s=$MSOCK; case $1 in docker-bridge) s=$BSOCK ;; docker*) s=$DSOCK ;; esac
  case $1 in
    moat|moat2|docker) echo "env DOCKER_HOST=$s $DOCKER run --rm --network none $IMG true" ;;
    *-echo)            echo "env DOCKER_HOST=$s $DOCKER run --rm --network none $IMG echo hi" ;;
    *-default|*-bridge) echo "env DOCKER_HOST=$s $DOCKER run --rm $IMG true" ;;
    cli)               echo "$DOCKER --version" ;;
  esac
}
: > "$R/rows.tsv"
bench() { # bench ROW: hyperfine; appends: row n median mean stddev min max busy load
  local row=$1 c busy load; c=$(cmd "$row")
  busy=$(quiet_gate); load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $row: $c; cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  hyperfine -N --warmup "$WARM" --runs "$RUNS" --export-json "$R/$row.json" -n "$row" "$c" > "$R/$row.txt" 2>&1 \
    || { cat "$R/$row.txt" >&2; die "hyperfine $row failed"; }
  sed -n '/Time (mean/,/Range/p' "$R/$row.txt" | sed 's/^/   /' >&2
  jq -r --arg r "$row" --arg b "$busy" --arg l "$load" '.results[0] |
      [$r, (.times|length), .median, .mean, .stddev, .min, .max, $b, $l] | @tsv' "$R/$row.json" >> "$R/rows.tsv"
}
ROWS="moat docker"; [ "$NETDEFAULT" = 1 ] && ROWS="$ROWS moat-default docker-default docker-bridge"; [ "$ECHO" = 1 ] && ROWS="$ROWS moat-echo docker-echo"; ROWS="$ROWS moat2 cli"
for row in $ROWS; do bench "$row"; done

# ---------- what is left ----------
for e in moat docker; do
  s=$MSOCK; [ $e = docker ] && s=$DSOCK
  left=$(dk "$s" ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE $e: containers left after --rm: $(echo $left)" >&2
done
left=$(find "$MROOT/containers" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
[ "$left" = 0 ] || echo "   NOTE moat: $left entries left in $MROOT/containers" >&2
left=$(find "$MROOT" -mindepth 1 -maxdepth 2 -printf '%P\n' | grep -vx -e containers -e image -e run -e 'image/blobs' \
         -e 'image/snapshots' -e 'image/l' -e 'image/store.lock' -e 'image/moat\.db' -e 'image/moat\.db-wal' \
         -e 'image/moat\.db-shm' -e 'run/@seccomp' \
         -e events.jsonl -e network -e 'network/network\.db' -e 'network/network\.db-wal' -e 'network/network\.db-shm' \
         -e apply -e 'apply/revisions\.db' -e 'apply/revisions\.db-wal' -e 'apply/revisions\.db-shm' -e netns)
[ -z "$left" ] || echo "   NOTE moat: other entries in its root: $(echo $left)" >&2
n=$(find "$MROOT/image/snapshots" -mindepth 1 -maxdepth 1 | wc -l)
[ "$n" = 1 ] || echo "   NOTE moat: $n snapshots in the store (1 expected, the image's layer)" >&2
left=$(awk -v d="$MROOT" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts)
[ -z "$left" ] || echo "   NOTE moat: mounts left under its root: $(echo $left)" >&2
# new, empty cgroup dirs under moat's parent: leftovers (another moat's running containers have processes)
left=$(comm -13 "$X/cg-before" <(cg_moat) | while read -r d; do [ -s "$d/cgroup.procs" ] || echo "$d"; done)
[ -z "$left" ] || echo "   NOTE: new empty cgroup dirs under /sys/fs/cgroup/*/moat/ (this run's, or another moat's): $(echo $left)" >&2
n=$(grep -ciE 'warn|error|panic' "$R/serve.log")
[ "$n" = 0 ] || { echo "   NOTE: $n warning/error lines in moat serve's log:" >&2; grep -iE 'warn|error|panic' "$R/serve.log" | sort | uniq -c | sort -rn | head -5 | sed 's/^/     /' >&2; }

# ---------- summary ----------
echo
echo "api.sh: $(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each after $WARM warm-up"
echo "$("$BIN" --version) serve (from $MOAT); dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) (--bridge=none --iptables=false); docker CLI $("$DOCKER" --version | awk '{print $3}' | tr -d ,) for both"
awk -F'\t' -v img="$IMG" '
  function label(t) {
    if (t == "moat") return "moat serve: docker run --rm --network none true"
    if (t == "docker") return "dockerd: docker run --rm --network none true"
    if (t == "moat-default") return "moat serve: docker run --rm true (no --network)"
    if (t == "docker-default") return "dockerd --bridge=none: docker run --rm true (no --network)"
    if (t == "docker-bridge") return "dockerd with its default bridge: docker run --rm true (no --network)"
    if (t == "moat-echo") return "moat serve: docker run --rm --network none echo hi"
    if (t == "docker-echo") return "dockerd: docker run --rm --network none echo hi"
    if (t == "moat2") return "moat serve: docker run --rm --network none true, again at the end (drift)"
    if (t == "cli") return "docker --version (the CLI alone, no daemon)"
    return t
  }
  function peer(t) { return t ~ /echo/ ? "docker-echo" : (t ~ /default/ ? "docker-default" : "docker") }
  { row[NR]=$1; n[NR]=$2; med[NR]=$3*1000; mean[NR]=$4*1000; sd[NR]=$5*1000; min[NR]=$6*1000; max[NR]=$7*1000; busy[NR]=$8; load[NR]=$9
    m[$1]=$3*1000 }
  END {
    printf "\n| what | n | median ms | mean ms (± sd) | min ms | max ms | docker median / this | cpu busy before | load |\n"
    printf "|---|---|---|---|---|---|---|---|---|\n"
    for (i=1; i<=NR; i++) {
      r = (row[i] == "cli") ? "-" : sprintf("%.2f", m[peer(row[i])]/med[i])
    if (row[i] == "moat-default" && m["docker-bridge"]) r = r sprintf(" (%.2f against the bridged dockerd)", m["docker-bridge"]/med[i])
      printf "| %s | %d | %.1f | %.1f ± %.1f | %.1f | %.1f | %s | %s%% | %s |\n", label(row[i]), n[i], med[i], mean[i], sd[i], min[i], max[i], r, busy[i], load[i]
    }
    printf "\n"
    x = m["docker"]/m["moat"]
    printf "run --rm --network none true: docker/moat = %.2f (%s)", x, (x >= 5 ? "met, >= 5" : "MISSED, target >= 5")
    if (m["moat2"]) printf "; with the drift row: %.2f", m["docker"]/m["moat2"]
    printf "\n"
    if (m["moat-default"]) { x = m["docker-default"]/m["moat-default"]
      printf "run --rm true, no --network: docker/moat = %.2f against dockerd --bridge=none (unlike: moat makes a bridge endpoint)\n", x
      if (m["docker-bridge"]) { x = m["docker-bridge"]/m["moat-default"]
        printf "run --rm true, both engines with their default bridge: docker/moat = %.2f (%s)\n", x, (x >= 5 ? "met, >= 5" : "MISSED, target >= 5") } }
    if (m["moat-echo"]) printf "run --rm --network none echo hi: docker/moat = %.2f\n", m["docker-echo"]/m["moat-echo"]
    if (m["cli"]) printf "the CLI alone: %.1f ms, so moat serve adds %.1f ms and dockerd %.1f ms to it (medians)\n", m["cli"], m["moat"]-m["cli"], m["docker"]-m["cli"]
  }' "$R/rows.tsv"
