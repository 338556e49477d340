#!/usr/bin/env bash
# apply.sh: N replicas of one busybox service brought up from one file with `moat apply`, beside
# docker-compose (Debian's 1.29, v1) doing the same against a dockerd and against `moat serve`,
# both started by this script, in one run; then a rolling update of all N replicas (one
# environment value changed) in each. A benchmark, not a test. Target (issue 9): moat apply >= 10x
# faster than docker-compose on dockerd: compose-dockerd-up median / moat-apply-up median >= 10.
#
#   sudo bash bench/apply.sh                     # moat from target/release/moat, N=100, RUNS=3
#   sudo MOAT=/path/to/moat N=5 RUNS=1 bash bench/apply.sh
#
# Network safety: the script re-executes itself under `unshare --net --mount` (a throwaway network
# namespace with only loopback, which it brings up, and a private mount namespace) and does all
# its work there: the projects' bridge networks, veths and moat's nftables table are made inside
# it and never see the host's interfaces; the containers only sleep and send nothing. The outer
# script compares the host's links, routes, nftables tables and forwarding sysctls before and
# after and prints a NOTE on any change.
#
# The service (the same in both files, written into $X/proj/; `BENCH_VERSION` is interpolated by
# moat apply and by docker-compose from their environment):
#   services: {svc: {image: busybox:bench, command: [sleep, "3600"], stop_signal: KILL,
#              environment: {BENCH_VERSION: "${BENCH_VERSION:-1}"}}}   on the project's default
#   network (each tool makes a bridge network PROJECT_default). moat.yaml adds
#   `deploy: {replicas: N, update_config: {parallelism: PAR, order: stop-first}}`; compose.yaml
#   has no `deploy` (docker-compose v1 scales with --scale instead).
# What is timed (wall clock of one command, $EPOCHREALTIME around it, RUNS times per row; the
# rows of an engine are run as pairs: up, then update, then an untimed teardown):
#   moat-apply-up       BENCH_VERSION=1 moat --root $X/moat apply -f moat.yaml -p benchapply
#   compose-dockerd-up  BENCH_VERSION=1 docker-compose -f compose.yaml -p benchdocker up -d --scale svc=N
#                       with DOCKER_HOST=unix://$X/docker.sock
#   compose-serve-up    the same with -p benchserve and DOCKER_HOST=unix://$X/moat.sock (moat serve
#                       on the same --root as moat apply)
#   *-update            the same command with BENCH_VERSION=2 on the running project: every
#                       replica's configuration changed, so each is replaced:
#     moat apply: a rolling update as the file says (stop-first, PAR containers at a time, PAR=10):
#                 each old container is stopped (SIGKILL) and renamed NAME-old-ID8, the new one
#                 created and started (running, no healthcheck, monitor 0); the old ones (kept
#                 stopped for a rollback) are removed after the last group.
#     docker-compose v1: recreates every container, up to COMPOSE_PARALLEL_LIMIT (default 64) at a
#                 time: stop the old one (SIGKILL), rename it, create and start the new one, remove
#                 the old one. (docker-compose v1 ignores deploy.update_config.)
#   moat apply creates the N containers of the first apply 4 at a time (a service's new replicas);
#   docker-compose creates and starts them in parallel (its limit of 64).
# Untimed, around each timed command: before `up`, the project is taken down (moat apply --down;
# docker-compose down -t 0) and must have no container left, then the quiet gate (below); after
# `up`, N containers must be running with BENCH_VERSION=1 and none other in the project; after
# `update`, N running with BENCH_VERSION=2, none other, and no id of before left. Checks go
# through the docker CLI against each engine's socket (moat apply's containers through moat
# serve); a failure ends that engine's runs (below). Both engines hold the same image: a
# busybox-static rootfs (the binary, its applet symlinks, /etc/passwd, /etc/group), tarred once,
# `moat import` and `docker import` with CMD ["/bin/sh"]. After the rows: containers, networks,
# veths, moat's netns pins, mounts and cgroup dirs left are printed as NOTEs, and the serve log's
# warnings. A command or check that fails ends that engine's runs (its output is printed) and
# the others still run; the summary lists the failures and the script exits 1.
#
# Settings (environment):
#   MOAT=target/release/moat   moat binary (relative paths from the repo root; falls back to
#                              target/x86_64-unknown-linux-gnu/release/moat). Copied into the work
#                              dir first, so a rebuild during the run changes nothing.
#   DOCKER=/usr/local/bin/docker   the docker CLI for the checks (dockerd is Debian's docker.io);
#                              docker-compose is Debian's /usr/bin/docker-compose (COMPOSE=...)
#   W=/tmp/moat-bench-apply    work dir; the script works in $W/run, removed at the end (KEEP=1
#                              keeps the logs and results, never the engines' state); W itself is
#                              removed only if the script made it
#   N=100 RUNS=3               replicas, and timed runs per row (the median is reported)
#   PAR=10                     moat's update_config.parallelism
#   ENGINES="moat docker serve"   which of the three to run (in this order)
#   GATE_PCT=15 GATE_MAX_S=60  before each timed command, wait up to GATE_MAX_S s for < GATE_PCT %
#                              CPU busy over 2 s; the busy % and load are recorded either way.
#
# Machine quirks: the 2 cores may be shared with other work: trust the ratios more than the
# seconds. dockerd runs with its own --data-root, --exec-root, --pidfile and socket,
# --iptables=false --bridge=none (compose's networks are user-defined bridges, which it still
# makes); it and its containerd are stopped by PID at the end, as is moat serve. Outside the work
# dir the script may leave only the engines' parent cgroups (/sys/fs/cgroup/*/docker is removed
# when this run made it; */moat is shared with any other moat and left alone).
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-apply}
X=$W/run                # everything this script makes
R=$X/results
BIN=$X/bin/moat         # the copy of moat that is timed
MROOT=$X/moat           # moat's --root (moat apply and moat serve)
DEXEC=$X/docker-exec
DOCKER=${DOCKER:-/usr/local/bin/docker}; COMPOSE=${COMPOSE:-/usr/bin/docker-compose}
IMG=busybox:bench
N=${N:-100}; RUNS=${RUNS:-3}; PAR=${PAR:-10}; ENGINES=${ENGINES:-moat docker serve}
MSOCK=unix://$X/moat.sock
DSOCK=unix://$X/docker.sock
LABEL=com.docker.compose.project

die() { echo "!! apply.sh: $*" >&2; exit 1; }

# host_net: the host's network state the script must not change
host_net() {
  ip -o link show | awk -F': ' '{print "link", $2}' | sed 's/@.*//'
  ip -4 route show | sed 's/^/route4 /'; ip -6 route show | sed 's/^/route6 /'
  nft list tables 2>/dev/null | sed 's/^/nft /'
  for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/bridge/bridge-nf-call-iptables; do
    [ -r "$f" ] && echo "sysctl $f $(cat "$f")"
  done
}

# ---------- outside: packages, then the same script in a throwaway network namespace ----------
if [ "${APPLY_SH_INNER:-0}" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "run as root"
  command -v unshare > /dev/null || die "no unshare (util-linux)"
  export DEBIAN_FRONTEND=noninteractive
  need=()
  for p in docker.io docker-compose jq busybox-static nftables iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2 || die "cannot install ${need[*]}"
  fi
  before=$(host_net)
  HOST_NETNS=$(readlink /proc/self/ns/net) || die "cannot read this process's network namespace"
  export HOST_NETNS
  APPLY_SH_INNER=1 unshare --net --mount --propagation private -- bash "$SELF" "$@"
  rc=$?
  after=$(host_net)
  if [ "$before" != "$after" ]; then
    echo "   NOTE: the host's network state changed during the run (this script works in its own namespace: another user's, or a bug):" >&2
    diff <(echo "$before") <(echo "$after") | grep '^[<>]' | sed 's/^/     /' >&2
  else
    echo "== host network unchanged (links, routes, nftables tables, ip_forward, bridge-nf-call-iptables)" >&2
  fi
  exit $rc
fi

# ---------- inside the namespace ----------
[ -n "${HOST_NETNS:-}" ] && [ "$(readlink /proc/self/ns/net)" != "$HOST_NETNS" ] || die "not in a network namespace of its own: refusing to run"
ip link set lo up || die "cannot bring lo up"
[ "$(ip -o link show | wc -l)" = 1 ] || die "the new namespace has links other than lo"

BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')
MOAT_GIVEN=${MOAT:+1}; MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
[ -x "$MOAT" ] || [ -n "$MOAT_GIVEN" ] || MOAT=$REPO/target/x86_64-unknown-linux-gnu/release/moat
[ -x "$MOAT" ] || die "no moat binary at $MOAT (build with cargo build --release -p moat, or set MOAT)"
"$MOAT" apply --help > /dev/null 2>&1 || die "$MOAT has no 'apply' (an old build?)"
[ -x "$DOCKER" ] || die "no docker CLI at $DOCKER (set DOCKER=...)"
[ -x "$COMPOSE" ] || die "no docker-compose at $COMPOSE (set COMPOSE=...)"
case $N in ''|*[!0-9]*|0) die "N=$N: a number of replicas >= 1" ;; esac
case $RUNS in ''|*[!0-9]*|0) die "RUNS=$RUNS: a number >= 1" ;; esac

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
# stop_pid PID NAME [SECS]: SIGTERM, wait up to SECS (default 15), then SIGKILL
stop_pid() {
  local pid=$1 name=$2 max=${3:-15} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for i in $(seq 1 $((max * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "   NOTE: $name (pid $pid) still running ${max} s after SIGTERM: SIGKILL" >&2; kill -KILL "$pid"; sleep 0.5
  fi
}
dockerd_stop() {  # SIGTERM the script's dockerd, wait for it and its containerd to exit
  local pid c i
  [ -s "$X/docker.pid" ] || return 0
  pid=$(cat "$X/docker.pid"); c=$(cat "$DEXEC/containerd/containerd.pid" 2>/dev/null)
  stop_pid "$pid" dockerd 30
  if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = containerd ]; then
    for i in $(seq 1 40); do kill -0 "$c" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$c" 2>/dev/null && kill -TERM "$c"
  fi
  rm -f "$X/docker.pid"; umount_under "$DEXEC"
}
serve_stop() { [ -s "$X/serve.pid" ] && stop_pid "$(cat "$X/serve.pid")" "moat serve" 15; rm -f "$X/serve.pid"; }
m() { "$BIN" --root "$MROOT" "$@"; }          # m ARGS...: the timed moat on the script's root
dk() { DOCKER_HOST=$1 "$DOCKER" "${@:2}"; }   # dk SOCKET ARGS...: the docker CLI against one engine
cg_moat() { ls -d /sys/fs/cgroup/*/moat/*/ 2>/dev/null | sort; }

MADE_W=0; [ -d "$W" ] || MADE_W=1
[ -s "$X/docker.pid" ] && kill -0 "$(cat "$X/docker.pid")" 2>/dev/null && die "a dockerd from $X is running; stop it first"
[ -s "$X/serve.pid" ] && kill -0 "$(cat "$X/serve.pid")" 2>/dev/null && die "a moat serve from $X is running; stop it first"
if [ -e "$X" ]; then umount_under "$X"; rm -rf --one-file-system "$X"; fi   # left by KEEP=1
mkdir -p "$R" "$X/bin" "$X/proj" "$X/rootfs"/{bin,proc,sys,dev,etc,tmp,root} || die "cannot create $X"
HAD_DOCKER_CG=$(ls -d /sys/fs/cgroup/*/docker 2>/dev/null | wc -l)
cg_moat > "$X/cg-before"
cleanup() {
  local ids
  [ -x "$BIN" ] && [ -d "$MROOT" ] && { ids=$(m ps -aq 2>/dev/null); [ -n "$ids" ] && m rm -f $ids > /dev/null 2>&1; }
  [ -S "$X/docker.sock" ] && { ids=$(dk "$DSOCK" ps -aq 2>/dev/null); [ -n "$ids" ] && dk "$DSOCK" rm -f $ids > /dev/null 2>&1; }
  serve_stop
  dockerd_stop
  umount_under "$X"
  if [ "$HAD_DOCKER_CG" = 0 ]; then
    for h in /sys/fs/cgroup/*/; do rmdir "$h"docker 2>/dev/null; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    rm -rf --one-file-system "$MROOT" "$X/docker-data" "$DEXEC" "$X/rootfs"; echo "kept $X" >&2; return
  fi
  rm -rf --one-file-system "$X"
  [ "$MADE_W" = 1 ] && rmdir "$W" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$MOAT" "$BIN" || die "cannot copy $MOAT"
echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/{print $2}') GiB," \
     "kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "   network namespace $(readlink /proc/self/ns/net) (the host's: $HOST_NETNS); N=$N replicas, RUNS=$RUNS, moat parallelism PAR=$PAR" >&2
echo "   $("$BIN" --version) (copied from $MOAT, built $(date -u -r "$MOAT" '+%F %T UTC')); $("$COMPOSE" version --short | sed 's/^/docker-compose /');" \
     "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,); docker CLI $("$DOCKER" --version | awk '{print $3}' | tr -d ,) (checks only)" >&2

# ---------- the image and the two files ----------
S=$X/rootfs
cp "$BUSYBOX" "$S/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"; echo 'root:x:0:' > "$S/etc/group"
tar -C "$S" --numeric-owner --sort=name -cf "$X/bb.tar" . || die "cannot tar the rootfs"
FC=$X/proj/compose.yaml; FM=$X/proj/moat.yaml
cat > "$FC" <<EOF
services:
  svc:
    image: $IMG
    command: ["sleep", "3600"]
    stop_signal: KILL
    environment:
      BENCH_VERSION: "\${BENCH_VERSION:-1}"
EOF
{ cat "$FC"; printf '    deploy:\n      replicas: %s\n      update_config: {parallelism: %s, order: stop-first}\n' "$N" "$PAR"; } > "$FM"

# ---------- the two daemons ----------
setsid "$BIN" --root "$MROOT" serve -H "$MSOCK" > "$R/moat-serve.log" 2>&1 < /dev/null &
echo $! > "$X/serve.pid"
setsid dockerd --host "$DSOCK" --data-root "$X/docker-data" --exec-root "$DEXEC" \
  --pidfile "$X/docker.pid" --iptables=false --bridge=none > "$R/dockerd.log" 2>&1 < /dev/null &
for i in $(seq 1 200); do dk "$MSOCK" version > /dev/null 2>&1 && break; sleep 0.05; done
dk "$MSOCK" version > /dev/null 2>&1 || { tail -20 "$R/moat-serve.log" >&2; die "moat serve did not answer on $MSOCK"; }
for i in $(seq 1 120); do dk "$DSOCK" version > /dev/null 2>&1 && break; sleep 0.25; done
dk "$DSOCK" version > /dev/null 2>&1 || { tail -20 "$R/dockerd.log" >&2; die "dockerd did not answer on $DSOCK"; }
echo "== moat serve (pid $(cat "$X/serve.pid")) and dockerd (pid $(cat "$X/docker.pid")) answer;" \
     "dockerd: $(dk "$DSOCK" info --format 'storage {{.Driver}}, cgroup driver {{.CgroupDriver}} v{{.CgroupVersion}}, runtime {{.DefaultRuntime}}')" >&2
m import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "moat import failed"
dk "$DSOCK" import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "docker import failed"

# ---------- the commands ----------
PROJ_moat=benchapply; PROJ_docker=benchdocker; PROJ_serve=benchserve
proj() { local v=PROJ_$1; echo "${!v}"; }
sock() { [ "$1" = docker ] && echo "$DSOCK" || echo "$MSOCK"; }
dc() { DOCKER_HOST=$(sock "$1") "$COMPOSE" -f "$FC" -p "$(proj "$1")" "${@:2}"; }  # dc ENGINE ARGS...
up() {   # up ENGINE VERSION: the timed command
  case $1 in
    moat) BENCH_VERSION=$2 m apply -f "$FM" -p "$(proj moat)" ;;
    *)    BENCH_VERSION=$2 dc "$1" up -d --scale svc="$N" ;;
  esac
}
down() { # down ENGINE: the untimed teardown; nothing of the project may be left
  local t0=$EPOCHREALTIME left
  case $1 in
    moat) m apply -f "$FM" -p "$(proj moat)" --down ;;
    # dockerd may refuse to remove the network while it is still releasing the endpoints of
    # the containers it just removed ("has active endpoints"): once more, a moment later.
    *)    dc "$1" down -t 0 || { sleep 3; dc "$1" down -t 0; } ;;
  esac >> "$R/log.$1" 2>&1 || { tail -20 "$R/log.$1" >&2; die "$1: the teardown failed"; }
  left=$(dk "$(sock "$1")" ps -aq --filter "label=$LABEL=$(proj "$1")")
  [ -z "$left" ] || die "$1: containers left after the teardown: $(echo $left)"
  echo "   ($1 teardown: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s)" >&2
}
check() { # check ENGINE VERSION: N running with BENCH_VERSION=VERSION, nothing else; ids to $X/ids.ENGINE;
  local s all run ok; s=$(sock "$1")  # else prints why and returns 1
  all=$(dk "$s" ps -aq --no-trunc --filter "label=$LABEL=$(proj "$1")" | sort)
  run=$(dk "$s" ps -q --no-trunc --filter "label=$LABEL=$(proj "$1")" --filter status=running | wc -l)
  ok=$(dk "$s" inspect -f '{{.State.Running}} {{range .Config.Env}}{{.}} {{end}}' $all 2>/dev/null | grep -c "^true .*BENCH_VERSION=$2 ")
  [ "$(echo "$all" | grep -c .)" = "$N" ] && [ "$run" = "$N" ] && [ "$ok" = "$N" ] \
    || { echo "expected $N running containers with BENCH_VERSION=$2; the project has $(echo "$all" | grep -c .), $run running, $ok running with it"; return 1; }
  echo "$all" > "$X/ids.$1"
}

# ---------- the rows: per engine, RUNS pairs of up and update ----------
: > "$R/rows.tsv"
: > "$R/failed.txt"
timed() { # timed ENGINE ROW VERSION RUN: gate, time `up`, append to rows.tsv; else prints why, returns 1
  local busy load t0 t1 rc
  busy=$(quiet_gate); load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $2 (run $4): cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  echo "== $2 run $4" >> "$R/log.$1"
  t0=$EPOCHREALTIME; up "$1" "$3" >> "$R/log.$1" 2>&1; rc=$?; t1=$EPOCHREALTIME
  [ $rc = 0 ] || { tail -8 "$R/log.$1" | sed 's/^/     /' >&2; echo "the command returned $rc (its output: $R/log.$1, kept with KEEP=1)"; return 1; }
  awk -v a="$t0" -v b="$t1" -v r="$2" -v k="$4" -v c="$busy" -v l="$load" \
    'BEGIN{printf "%s\t%d\t%.3f\t%s\t%s\n", r, k, b-a, c, l}' >> "$R/rows.tsv"
  echo "   $(tail -1 "$R/rows.tsv" | cut -f3) s" >&2
}
# A failed command or check is recorded (failed.txt, printed with the summary; the script then
# exits 1) and ends that engine's runs; the other engines still run.
fail() { echo "   FAILED $1: $2" >&2; printf '%s\t%s\n' "$1" "$2" >> "$R/failed.txt"; }
for e in $ENGINES; do
  case $e in moat) row=moat-apply ;; docker) row=compose-dockerd ;; serve) row=compose-serve ;; *) die "ENGINES: moat, docker or serve, not $e" ;; esac
  for k in $(seq 1 "$RUNS"); do
    down "$e"
    why=$(timed "$e" "$row-up" 1 "$k" && check "$e" 1) || { fail "$row-up run $k" "$why"; break; }
    cp "$X/ids.$e" "$X/ids.$e.before"
    why=$(timed "$e" "$row-update" 2 "$k" && check "$e" 2) || { fail "$row-update run $k" "$why"; break; }
    same=$(comm -12 "$X/ids.$e.before" "$X/ids.$e" | wc -l)
    [ "$same" = 0 ] || { fail "$row-update run $k" "$same of the $N containers were not replaced"; break; }
    echo "   check $e: $N running with BENCH_VERSION=1 after up, $N new ones with BENCH_VERSION=2 after the update" >&2
  done
  down "$e"
done

# ---------- what is left ----------
left=$(m ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE moat: containers left: $(echo $left)" >&2
left=$(dk "$DSOCK" ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE docker: containers left: $(echo $left)" >&2
left=$(dk "$MSOCK" network ls -q --filter "label=$LABEL" 2>&1); [ -z "$left" ] || echo "   NOTE moat: project networks left: $(echo $left)" >&2
left=$(dk "$DSOCK" network ls -q --filter "label=$LABEL" 2>&1); [ -z "$left" ] || echo "   NOTE docker: project networks left: $(echo $left)" >&2
left=$(ip -o link show type veth | awk -F': ' '{print $2}')
[ -z "$left" ] || echo "   NOTE: veths left in the namespace: $(echo $left)" >&2
left=$(find "$MROOT/netns" -mindepth 1 2>/dev/null | wc -l)
[ "$left" = 0 ] || echo "   NOTE moat: $left netns pins left under $MROOT/netns" >&2
left=$(find "$MROOT/containers" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
[ "$left" = 0 ] || echo "   NOTE moat: $left entries left in $MROOT/containers" >&2
left=$(awk -v d="$MROOT" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts)
[ -z "$left" ] || echo "   NOTE moat: mounts left under its root: $(echo $left)" >&2
left=$(comm -13 "$X/cg-before" <(cg_moat) | while read -r d; do [ -s "$d/cgroup.procs" ] || echo "$d"; done)
[ -z "$left" ] || echo "   NOTE: new empty cgroup dirs under /sys/fs/cgroup/*/moat/ (this run's, or another moat's): $(echo $left)" >&2
n=$(grep -ciE 'warn|error|panic' "$R/moat-serve.log")
[ "$n" = 0 ] || { echo "   NOTE: $n warning/error lines in moat serve's log:" >&2; grep -iE 'warn|error|panic' "$R/moat-serve.log" | sort | uniq -c | sort -rn | head -5 | sed 's/^/     /' >&2; }
echo "   links in the namespace at the end: $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | paste -sd' ')" >&2

# ---------- summary ----------
echo
echo "apply.sh: $(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg); N=$N replicas, $RUNS runs per row; in a network namespace of its own"
echo "$("$BIN" --version) (from $MOAT): apply (update: stop-first, parallelism $PAR) and serve; $("$COMPOSE" version --short | sed 's/^/docker-compose /') (parallel limit ${COMPOSE_PARALLEL_LIMIT:-64});" \
     "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) (--iptables=false --bridge=none)"
sort -t$'\t' -k1,1 -k3,3n "$R/rows.tsv" | awk -F'\t' -v N="$N" '
  { r=$1; n[r]++; t[r, n[r]]=$3; if (!(r in busy) || $4 > busy[r]) busy[r]=$4; all[r]=all[r] (all[r] ? ", " : "") sprintf("%.2f", $3) }
  END {
    split("moat-apply-up compose-dockerd-up compose-serve-up moat-apply-update compose-dockerd-update compose-serve-update", rows, " ")
    printf "\n| row | n | median s | min s | max s | runs, sorted (s) | max cpu busy before |\n|---|---|---|---|---|---|---|\n"
    for (i=1; i<=6; i++) { r=rows[i]; if (!(r in n)) continue; k=n[r]
      med[r] = (k % 2) ? t[r, (k+1)/2] : (t[r, k/2] + t[r, k/2+1]) / 2
      printf "| %s | %d | %.2f | %.2f | %.2f | %s | %s%% |\n", r, k, med[r], t[r, 1], t[r, k], all[r], busy[r] }
    printf "\n"
    split("up update", what, " ")
    for (j=1; j<=2; j++) { w=what[j]; a=med["moat-apply-" w]; if (!a) continue
      if (med["compose-dockerd-" w]) printf "%s: docker-compose on dockerd / moat apply = %.2f%s\n", w, med["compose-dockerd-" w]/a,
        (w != "up" ? "" : N != 100 ? " (the target, >= 10, is for N=100)" : med["compose-dockerd-up"]/a >= 10 ? " (met, >= 10)" : " (MISSED, target >= 10)")
      if (med["compose-serve-" w]) printf "%s: docker-compose on moat serve / moat apply = %.2f\n", w, med["compose-serve-" w]/a
    }
  }'
if [ -s "$R/failed.txt" ]; then
  echo; echo "FAILED (the rest of that engine's runs were skipped):"; sed 's/\t/: /; s/^/  /' "$R/failed.txt"; exit 1
fi
