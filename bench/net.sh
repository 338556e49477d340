#!/usr/bin/env bash
# net.sh: what a bridge network adds to `run --rm IMG true`, per engine, with hyperfine in one run:
# moat's default bridge network against `--network none`, beside docker (its own dockerd, with its
# docker0 bridge) and podman (its default CNI bridge, cni-podman0) doing the same, and each
# engine's difference (bridge minus none) and the ratios. A benchmark, not a test. Target (issue
# 7): moat's bridge adds <= 5 ms to the median of `moat run --rm IMG true`.
#
#   sudo bash bench/net.sh                       # moat from target/release/moat
#   sudo MOAT=/path/to/moat RUNS=30 bash bench/net.sh
#
# Network safety: the script re-executes itself under `unshare -n -m` (a throwaway network
# namespace with only loopback, which it brings up, and a private mount namespace) and does all
# its work there: dockerd (and its containerd), podman and moat make their bridges, veths, routes
# and NAT rules (nftables, iptables-nft) inside it and never see the host's interfaces. No
# container sends any traffic (`true`); the sanity checks only read `ip addr` inside containers.
# The namespace and everything in it go away when the inner script exits; the outer one compares
# the host's links, routes, nftables tables and forwarding sysctls before and after and prints a
# NOTE on any change. Inside the private mount namespace a tmpfs covers /var/lib/cni (CNI's IPAM
# records and result cache) and /run/netns (podman's namespace pins), so podman writes nothing
# there on the host (either directory is created empty first if missing, and removed at the end
# if the script made it).
#
# What is timed (hyperfine -N --warmup WARM --runs RUNS; one hyperfine per row, in this order;
# before each row the script waits for a quiet machine, as api.sh does):
#   moat-bridge     moat --root $X/moat run --rm busybox:bench true     (the default network)
#   moat-none       moat --root $X/moat run --rm --network none busybox:bench true
#   docker-bridge   docker run --rm busybox:bench true                   (docker0, veth per container)
#   docker-none     docker run --rm --network none busybox:bench true
#   podman-bridge   podman ... run --rm --runtime runc $U busybox:bench true   (CNI bridge)
#   podman-none     podman ... run --rm --runtime runc $U --network none busybox:bench true
#   moat-none2, moat-bridge2   moat's two rows again at the end, in the other order (AGAIN=1):
#                   moat's difference is the target and only a few ms, so it is taken twice and
#                   averaged, which cancels a linear drift of the machine between the rows.
# All engines hold the same image: a busybox-static rootfs (the binary, its applet symlinks,
# /etc/passwd, /etc/group), tarred once and imported with CMD ["/bin/sh"] (`moat import`,
# `docker import`, `podman import`). Before timing, for each engine: the bridge run must show an
# eth0 with an IPv4 address and `--network none` only lo (`ip -o addr` in the container), and
# `true` must return 0 in both modes; else the script fails (a failure of moat's bridge is printed
# as moat says it). After the rows: containers left (each engine's ps -a), veths left in the
# namespace, moat's netns pins and mounts left under its root are printed as NOTEs.
#
# Settings (environment):
#   MOAT=target/release/moat   moat binary (relative paths from the repo root; falls back to
#                              target/x86_64-unknown-linux-gnu/release/moat). Copied into the work
#                              dir first, so a rebuild during the run changes nothing.
#   DOCKER=/usr/local/bin/docker   the docker CLI (dockerd is Debian's docker.io)
#   W=/tmp/moat-bench-net      work dir; the script works in $W/run, removed at the end (KEEP=1
#                              keeps the results, never the engines' state); W itself is removed
#                              only if the script made it
#   RUNS=30 WARM=3             hyperfine runs and warm-up runs per row
#   AGAIN=1                    time moat's two rows again at the end (0: once)
#   PODMAN=1                   time podman (0: skip it); installed with apt (Debian's podman) if
#                              missing, within INSTALL_S=300 s, else skipped with the reason
#   DOCKER_IPTABLES=1          dockerd as by default, with its iptables rules (NAT, isolation) in
#                              the namespace, as moat's nftables and podman's CNI rules are; 0:
#                              --iptables=false, as peers-bench.sh's bridge rows
#   GATE_PCT=15 GATE_MAX_S=60  before each row, wait up to GATE_MAX_S s for < GATE_PCT % CPU busy
#                              over 2 s. The busy % and the load are printed either way.
#
# Machine quirks (see /work/shared/peers/peers-bench.sh): podman gets runc and explicit --ulimit
# values (crun refuses the hybrid cgroups; the nofile hard limit is 20000 and CAP_SYS_RESOURCE is
# missing). The 2 cores may be shared with other work: trust the ratios and the differences
# between rows of one run more than the milliseconds. dockerd runs with its own --data-root,
# --exec-root, --pidfile and socket; it and its containerd are stopped by PID at the end. Outside
# the work dir the script may leave only the engines' parent cgroups (/sys/fs/cgroup/*/docker and
# */libpod_parent are removed when this run made them; */moat is shared and left alone).
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-net}
X=$W/run                # everything this script makes
R=$X/results
BIN=$X/bin/moat         # the copy of moat that is timed
MROOT=$X/moat           # moat's --root
DEXEC=$X/docker-exec
DOCKER=${DOCKER:-/usr/local/bin/docker}
IMG=busybox:bench
RUNS=${RUNS:-30}; WARM=${WARM:-3}; AGAIN=${AGAIN:-1}; PODMAN=${PODMAN:-1}
DOCKER_IPTABLES=${DOCKER_IPTABLES:-1}; INSTALL_S=${INSTALL_S:-300}
export DOCKER_HOST=unix://$X/docker.sock
P="podman --root $X/podman-root --runroot $X/podman-run --tmpdir $X/podman-tmp --cgroup-manager cgroupfs --events-backend file"
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
U="--ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"

die() { echo "!! net.sh: $*" >&2; exit 1; }

# host_net: the host's network state the script must not change (links, routes, nftables tables,
# forwarding and bridge-netfilter sysctls)
host_net() {
  ip -o link show | awk -F': ' '{print "link", $2}' | sed 's/@.*//'
  ip -4 route show | sed 's/^/route4 /'; ip -6 route show | sed 's/^/route6 /'
  nft list tables 2>/dev/null | sed 's/^/nft /'
  for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/bridge/bridge-nf-call-iptables; do
    [ -r "$f" ] && echo "sysctl $f $(cat "$f")"
  done
}

# ---------- outside: packages, then the same script in a throwaway network namespace ----------
if [ "${NET_SH_INNER:-0}" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "run as root"
  command -v unshare > /dev/null || die "no unshare (util-linux)"
  export DEBIAN_FRONTEND=noninteractive
  need=()
  for p in docker.io hyperfine jq busybox-static nftables iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2 || die "cannot install ${need[*]}"
  fi
  PODMAN_SKIP=""
  if [ "$PODMAN" != 1 ]; then
    PODMAN_SKIP="PODMAN=$PODMAN"
  elif ! command -v podman > /dev/null; then
    echo "== podman is missing: apt-get install podman (Debian's), at most $INSTALL_S s" >&2
    timeout "$INSTALL_S" apt-get -o DPkg::Lock::Timeout=120 install -y -qq podman containernetworking-plugins >&2 \
      || PODMAN_SKIP="apt-get install podman failed or took more than $INSTALL_S s"
    command -v podman > /dev/null || PODMAN_SKIP=${PODMAN_SKIP:-"no podman after apt-get install"}
  elif ! { [ -x /usr/lib/cni/bridge ] || command -v netavark > /dev/null; }; then
    PODMAN_SKIP="podman has no network backend (neither CNI plugins in /usr/lib/cni nor netavark)"
  fi
  export PODMAN_SKIP
  before=$(host_net)
  HOST_NETNS=$(readlink /proc/self/ns/net) || die "cannot read this process's network namespace"
  export HOST_NETNS
  NET_SH_INNER=1 unshare --net --mount --propagation private -- bash "$SELF" "$@"
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
[ "$(ip -o link show | wc -l)" = 1 ] || die "the new namespace has links other than lo: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"

BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')
MOAT_GIVEN=${MOAT:+1}; MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
[ -x "$MOAT" ] || [ -n "$MOAT_GIVEN" ] || MOAT=$REPO/target/x86_64-unknown-linux-gnu/release/moat
[ -x "$MOAT" ] || die "no moat binary at $MOAT (build with cargo build --release -p moat, or set MOAT)"
[ -x "$DOCKER" ] || die "no docker CLI at $DOCKER (set DOCKER=...)"
"$MOAT" run --help 2>/dev/null | grep -q -- '--network' || die "$MOAT has no run --network (an old build?)"

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
m() { "$BIN" --root "$MROOT" "$@"; }   # m ARGS...: the timed moat on the script's root

MADE_W=0; [ -d "$W" ] || MADE_W=1
[ -s "$X/docker.pid" ] && kill -0 "$(cat "$X/docker.pid")" 2>/dev/null && die "a dockerd from $X is running; stop it first"
if [ -e "$X" ]; then umount_under "$X"; rm -rf --one-file-system "$X"; fi   # left by KEEP=1
mkdir -p "$R" "$X/bin" "$X/rootfs"/{bin,proc,sys,dev,etc,tmp,root} "$X/podman-tmp" || die "cannot create $X"
HAD_CG=$(ls -d /sys/fs/cgroup/*/docker /sys/fs/cgroup/*/libpod_parent 2>/dev/null | wc -l)
# CNI's state and podman's netns pins: a tmpfs over each, in this mount namespace only
MADE_DIRS=()
for d in /var/lib/cni /run/netns; do
  [ -d "$d" ] || { mkdir -p "$d" && MADE_DIRS+=("$d"); }
  mount -t tmpfs -o mode=0755,size=16m "moat-bench-net" "$d" || die "cannot mount a tmpfs on $d"
done
cleanup() {
  [ -x "$BIN" ] && [ -d "$MROOT" ] && { ids=$(m ps -aq 2>/dev/null); [ -n "$ids" ] && m rm -f $ids > /dev/null 2>&1; }
  [ -S "$X/docker.sock" ] && "$DOCKER" rm -f $("$DOCKER" ps -aq 2>/dev/null) > /dev/null 2>&1
  [ -z "$PODMAN_SKIP" ] && [ -d "$X/podman-root" ] && $P rm -af -t 0 > /dev/null 2>&1
  dockerd_stop
  umount_under "$X"
  local d; for d in /var/lib/cni /run/netns; do umount_under "$d"; done
  for d in "${MADE_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  if [ "$HAD_CG" = 0 ]; then
    for h in /sys/fs/cgroup/*/; do rmdir "$h"docker "$h"libpod_parent/conmon "$h"libpod_parent 2>/dev/null; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    rm -rf --one-file-system "$X/moat" "$X/docker-data" "$DEXEC" "$X/podman-root" "$X/podman-run" "$X/podman-tmp" "$X/rootfs"
    echo "kept $X" >&2; return
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
echo "   network namespace $(readlink /proc/self/ns/net) (the host's: $HOST_NETNS), links: $(ip -o link show | awk -F': ' '{print $2}')" >&2
echo "   $("$BIN" --version) (copied from $MOAT, built $(date -u -r "$MOAT" '+%F %T UTC')); docker CLI $("$DOCKER" --version | awk '{print $3}' | tr -d ,);" \
     "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,); $( [ -z "$PODMAN_SKIP" ] && podman --version || echo "podman skipped: $PODMAN_SKIP"); $(hyperfine --version)" >&2

# ---------- the image: a busybox-static rootfs, one tarball for every engine ----------
S=$X/rootfs
cp "$BUSYBOX" "$S/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"; echo 'root:x:0:' > "$S/etc/group"
tar -C "$S" --numeric-owner --sort=name -cf "$X/bb.tar" . || die "cannot tar the rootfs"

# ---------- dockerd first: docker0 takes its subnet before moat's bridge picks a free one ----------
dflags=(--host "$DOCKER_HOST" --data-root "$X/docker-data" --exec-root "$DEXEC" --pidfile "$X/docker.pid")
[ "$DOCKER_IPTABLES" = 1 ] || dflags+=(--iptables=false)
setsid dockerd "${dflags[@]}" > "$R/dockerd.log" 2>&1 < /dev/null &
for i in $(seq 1 120); do "$DOCKER" version > /dev/null 2>&1 && break; sleep 0.25; done
"$DOCKER" version > /dev/null 2>&1 || { tail -20 "$R/dockerd.log" >&2; die "dockerd did not answer on $DOCKER_HOST"; }
echo "== dockerd (pid $(cat "$X/docker.pid")) with its bridge, $( [ "$DOCKER_IPTABLES" = 1 ] && echo 'iptables on' || echo '--iptables=false'); $("$DOCKER" info --format 'storage {{.Driver}}, cgroup driver {{.CgroupDriver}} v{{.CgroupVersion}}, runtime {{.DefaultRuntime}}')" >&2
"$DOCKER" import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "docker import failed"
m import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null || die "moat import failed"
if [ -z "$PODMAN_SKIP" ]; then
  $P import --change 'CMD ["/bin/sh"]' "$X/bb.tar" "$IMG" > /dev/null 2> "$R/podman-import.err" || { cat "$R/podman-import.err" >&2; die "podman import failed"; }
fi

# ---------- sanity: each engine's bridge run has an eth0 with an address, --network none only lo ----------
ENGINES="moat docker"; [ -z "$PODMAN_SKIP" ] && ENGINES="$ENGINES podman"
run_cmd() { # run_cmd ENGINE MODE: the command line that runs a container (IMG and its args follow)
  local net=""; [ "$2" = none ] && net=" --network none"
  case $1 in
    moat)   echo "$BIN --root $MROOT run --rm$net" ;;
    docker) echo "$DOCKER run --rm$net" ;;
    podman) echo "$P run --rm --runtime runc $U$net" ;;
  esac
}
for e in $ENGINES; do
  for mode in bridge none; do
    c=$(run_cmd $e $mode)
    out=$($c "$IMG" ip -o addr 2>&1); rc=$?
    if [ $rc != 0 ]; then
      echo "!! $e, $mode: '$c $IMG ip -o addr' returned $rc and printed:" >&2; echo "$out" | sed 's/^/   /' >&2
      die "$e cannot run a container with $( [ $mode = none ] && echo '--network none' || echo 'its bridge network')"
    fi
    ifs=$(echo "$out" | awk '{print $2}' | sort -u | tr '\n' ' ')
    if [ $mode = bridge ]; then
      a=$(echo "$out" | awk '$2 == "eth0" && $3 == "inet" {print $4}')
      [ -n "$a" ] || { echo "$out" >&2; die "$e, bridge: no IPv4 address on eth0 in the container"; }
    else
      [ "$ifs" = "lo " ] || { echo "$out" >&2; die "$e, --network none: interfaces other than lo in the container: $ifs"; }
      a=-
    fi
    $c "$IMG" true || die "$e, $mode: '$c $IMG true' returned $?"
    echo "   check $e $mode: interfaces ${ifs}(eth0 $a), true returned 0" >&2
  done
done
echo "   bridges in the namespace: $(ip -o -4 addr show | awk '$2 != "lo" {print $2, $4}' | paste -sd, | sed 's/,/, /g')" >&2

# ---------- the rows ----------
: > "$R/rows.tsv"
bench() { # bench ROW: hyperfine; appends: row n median mean stddev min max busy load
  local row=$1 e=${1%%-*} mode=${1#*-} c busy load
  mode=${mode%2}; c="$(run_cmd "$e" "$mode") $IMG true"
  busy=$(quiet_gate); load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $row: $c; cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  hyperfine -N --warmup "$WARM" --runs "$RUNS" --export-json "$R/$row.json" -n "$row" "$c" > "$R/$row.txt" 2>&1 \
    || { cat "$R/$row.txt" >&2; die "hyperfine $row failed"; }
  sed -n '/Time (mean/,/Range/p' "$R/$row.txt" | sed 's/^/   /' >&2
  jq -r --arg r "$row" --arg b "$busy" --arg l "$load" '.results[0] |
      [$r, (.times|length), .median, .mean, .stddev, .min, .max, $b, $l] | @tsv' "$R/$row.json" >> "$R/rows.tsv"
}
ROWS="moat-bridge moat-none docker-bridge docker-none"
[ -z "$PODMAN_SKIP" ] && ROWS="$ROWS podman-bridge podman-none"
[ "$AGAIN" = 1 ] && ROWS="$ROWS moat-none2 moat-bridge2"
for row in $ROWS; do bench "$row"; done

# ---------- what is left ----------
left=$(m ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE moat: containers left after --rm: $(echo $left)" >&2
left=$("$DOCKER" ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE docker: containers left after --rm: $(echo $left)" >&2
if [ -z "$PODMAN_SKIP" ]; then left=$($P ps -aq 2>&1); [ -z "$left" ] || echo "   NOTE podman: containers left after --rm: $(echo $left)" >&2; fi
left=$(ip -o link show type veth | awk -F': ' '{print $2}')
[ -z "$left" ] || echo "   NOTE: veths left in the namespace: $(echo $left)" >&2
left=$(find "$MROOT/netns" -mindepth 1 2>/dev/null | wc -l)
[ "$left" = 0 ] || echo "   NOTE moat: $left netns pins left under $MROOT/netns" >&2
left=$(find "$MROOT/containers" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
[ "$left" = 0 ] || echo "   NOTE moat: $left entries left in $MROOT/containers" >&2
left=$(awk -v d="$MROOT" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts)
[ -z "$left" ] || echo "   NOTE moat: mounts left under its root: $(echo $left)" >&2
echo "   links in the namespace at the end: $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | paste -sd' ')" >&2

# ---------- summary ----------
echo
echo "net.sh: $(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each after $WARM warm-up; in a network namespace of its own"
echo "$("$BIN" --version) (from $MOAT); dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) ($( [ "$DOCKER_IPTABLES" = 1 ] && echo 'its bridge, iptables' || echo 'its bridge, --iptables=false')), docker CLI $("$DOCKER" --version | awk '{print $3}' | tr -d ,);" \
     "$( [ -z "$PODMAN_SKIP" ] && echo "podman $(podman --version | awk '{print $3}') (runc, CNI bridge)" || echo "podman SKIPPED: $PODMAN_SKIP")"
awk -F'\t' '
  { row[NR]=$1; n[NR]=$2; med[NR]=$3*1000; mean[NR]=$4*1000; sd[NR]=$5*1000; min[NR]=$6*1000; max[NR]=$7*1000; busy[NR]=$8; load[NR]=$9
    m[$1]=$3*1000 }
  END {
    printf "\n| row | n | median ms | mean ms (± sd) | min ms | max ms | cpu busy before | load |\n|---|---|---|---|---|---|---|---|\n"
    for (i=1; i<=NR; i++)
      printf "| %s | %d | %.1f | %.1f ± %.1f | %.1f | %.1f | %s%% | %s |\n", row[i], n[i], med[i], mean[i], sd[i], min[i], max[i], busy[i], load[i]
    printf "\n| engine | bridge median ms | none median ms | bridge - none ms | bridge / none | bridge: engine / moat | none: engine / moat |\n|---|---|---|---|---|---|---|\n"
    split("moat docker podman", es, " ")
    for (k=1; k<=3; k++) { e=es[k]; if (!((e "-bridge") in m)) continue
      b=m[e "-bridge"]; z=m[e "-none"]
      printf "| %s | %.1f | %.1f | **%+.1f** | %.2f | %.2f | %.2f |\n", e, b, z, b-z, b/z, b/m["moat-bridge"], z/m["moat-none"] }
    if ("moat-bridge2" in m) {
      b=m["moat-bridge2"]; z=m["moat-none2"]
      printf "| moat, again at the end | %.1f | %.1f | **%+.1f** | %.2f | - | - |\n", b, z, b-z, b/z }
    printf "\n"
    d=m["moat-bridge"]-m["moat-none"]; how="the first pair"
    if ("moat-bridge2" in m) { d=(d + m["moat-bridge2"]-m["moat-none2"])/2; how="the mean of both pairs" }
    printf "moat: the bridge adds %.1f ms to the median (%s): %s\n", d, how, (d <= 5 ? "met, <= 5 ms" : "MISSED, target <= 5 ms")
    for (k=2; k<=3; k++) { e=es[k]; if ((e "-bridge") in m)
      printf "%s: the bridge adds %.1f ms (%.1f x what it adds to moat)\n", e, m[e "-bridge"]-m[e "-none"], (d > 0 ? (m[e "-bridge"]-m[e "-none"])/d : 0) }
  }' "$R/rows.tsv"
[ -z "$PODMAN_SKIP" ] || echo "podman was skipped: $PODMAN_SKIP"
