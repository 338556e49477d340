#!/usr/bin/env bash
# runtime.sh: time one container lifecycle (create + start + wait + delete of /bin/true in
# a busybox bundle) for moat, crun and runc with hyperfine, and print the ratios.
#
#   sudo bash bench/runtime.sh                 # moat from target/release/moat (cargo build --release)
#   sudo MOAT=/path/to/moat bash bench/runtime.sh
#
# This is a benchmark, not a test: it fails only when a runtime cannot run the container.
# Goal: moat's median at or below crun's.
#
# Each runtime runs `<rt> --root <statedir> run <id>` in the bundle directory. `run` covers
# create+start+wait+delete. The id is fixed per runtime because each run deletes the container.
# The bundle: a busybox-static rootfs (the binary plus one symlink per applet), and a
# config.json from `crun spec` with terminal=false and args=["/bin/true"]. The one other
# change sets capabilities.inheritable to the ambient set; see NOTE 1 below.
#
# Settings (environment):
#   MOAT=target/release/moat  moat binary (relative paths are taken from the repo root)
#   W=/tmp/moat-bench-runtime work dir, removed at the end (KEEP=1 keeps it)
#   RUNS=50 WARM=3            hyperfine runs and warm-up runs per runtime
#   HYBRID=1                  also time moat and runc in the normal (hybrid cgroup) environment
#   GATE_PCT=15 GATE_MAX_S=120  before each benchmark, wait up to GATE_MAX_S s for < GATE_PCT %
#                             CPU busy over 2 s. The busy % is printed either way.
#
# Machine quirks:
#  * cgroups are hybrid here: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified
#    that holds only hugetlb. crun 1.8 refuses hybrid mode, so crun runs in a private mount
#    namespace where /sys/fs/cgroup/unified is unmounted, which leaves pure cgroup v1. For a
#    fair comparison all three runtimes are timed in that same namespace. moat and runc are
#    also timed in the hybrid environment when HYBRID=1.
#  * Other work may share the 2 cores. Trust the ratios more than the absolute times.
#
# NOTE 1: crun 1.8's `crun spec` lists ambient capabilities but leaves inheritable empty.
# The kernel then refuses PR_CAP_AMBIENT_RAISE with EPERM; all three runtimes skip those
# (moat since it raises ambient capabilities best effort, as runc does). The bundle sets
# inheritable = ambient anyway, so all three do the same work; the script still reports which
# runtimes accept the unmodified config.
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-runtime}
RUNS=${RUNS:-50}
WARM=${WARM:-3}
HYBRID=${HYBRID:-1}
MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
R=$W/results
B=$W/bundle
export W RUNS WARM HYBRID MOAT R B SELF REPO

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
    [ "$b" -lt "${GATE_PCT:-15}" ] || [ "$t" -ge "${GATE_MAX_S:-120}" ] && break; sleep 3; t=$((t+3)); done
  echo "$b"
}

# rt_cmd RUNTIME: the command line for one lifecycle (hyperfine -N splits it on spaces)
rt_cmd() {
  case $1 in
    moat) echo "$MOAT runtime --root $W/state/moat run bench-moat" ;;
    crun) echo "crun --root $W/state/crun run bench-crun" ;;
    runc) echo "runc --root $W/state/runc run bench-runc" ;;
  esac
}
rt_bin() { case $1 in moat) echo "$MOAT runtime" ;; *) echo "$1" ;; esac; }

# bench ENV RUNTIME: one hyperfine run. Appends a row to $R/rows.tsv:
# env rt n median mean min max stddev busy (times in ms)
bench() {
  local env=$1 rt=$2 busy label=$1.$2
  busy=$(quiet_gate)
  echo "-- $label: cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  ( cd "$B" && hyperfine -N --warmup "$WARM" --runs "$RUNS" --export-json "$R/$label.json" \
      -n "$rt" "$(rt_cmd "$rt")" ) > "$R/$label.txt" 2>&1 \
    || { echo "!! hyperfine $label FAILED:" >&2; cat "$R/$label.txt" >&2; return 1; }
  jq -r --arg e "$env" --arg r "$rt" --arg b "$busy" '.results[0] |
      [$e, $r, (.times|length), .median*1000, .mean*1000, .min*1000, .max*1000, .stddev*1000, $b] | @tsv' \
      "$R/$label.json" >> "$R/rows.tsv"
  sed -n '/Time (mean/,/Range/p' "$R/$label.txt" | sed 's/^/   /' >&2
}

# sanity ENV RUNTIME: the runtime really runs a container: prints "ok", and returns the exit code 7
sanity() {
  local env=$1 rt=$2 out rc
  out=$(cd "$W/sanity-ok" && $(rt_bin "$rt") --root "$W/state/$rt" run "sanity-$rt" 2>&1); rc=$?
  [ "$rc" = 0 ] && [ "$out" = ok ] \
    || { echo "!! SANITY FAILED ($env, $rt): rc=$rc, output: $out" >&2; exit 1; }
  out=$(cd "$W/sanity-rc" && $(rt_bin "$rt") --root "$W/state/$rt" run "sanity-$rt" 2>&1); rc=$?
  [ "$rc" = 7 ] || { echo "!! SANITY FAILED ($env, $rt): exit 7 came back as rc=$rc ($out)" >&2; exit 1; }
  echo "   sanity $env/$rt: 'echo ok' printed ok, 'exit 7' returned 7" >&2
}

# stock RUNTIME: does it run the unmodified `crun spec` config (ambient caps, empty inheritable)?
stock() {
  local rt=$1 out rc
  out=$(cd "$W/stock" && $(rt_bin "$rt") --root "$W/state/$rt" run "stock-$rt" 2>&1); rc=$?
  if [ "$rc" = 0 ] && [ "$out" = ok ]; then echo "   unmodified 'crun spec' config (inheritable empty): $rt runs it" >&2
  else echo "   NOTE: unmodified 'crun spec' config (inheritable empty): $rt FAILS it, rc=$rc: $out" >&2; fi
}

# leftovers ENV MOUNTS0: what this run left behind: mounts under $W, cgroup dirs named after
# this run's ids (bench-*, sanity-*, stock-*) in any v1 hierarchy, entries in the state dirs
leftovers() {
  local env=$1 m c o s
  m=$(grep -c " $W" /proc/self/mountinfo)
  c=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 5 -type d \( -name 'bench-*' -o -name 'sanity-*' -o -name 'stock-*' \) 2>/dev/null | tr '\n' ' ')
  o=$(find /sys/fs/cgroup/*/moat -mindepth 1 -maxdepth 1 -type d ! -name 'bench-*' ! -name 'sanity-*' ! -name 'stock-*' 2>/dev/null | wc -l)
  s=$(cd "$W/state" 2>/dev/null && find . -mindepth 2 2>/dev/null | tr '\n' ' ')
  echo "   leftovers after $env: mounts under $W: $m; /proc/self/mounts $(wc -l < /proc/self/mounts) lines (were $2);" \
       "cgroup dirs of this run: ${c:-none}; state entries: ${s:-none}" \
       "(other dirs under /sys/fs/cgroup/*/moat, not from this run: $o)" >&2
}

# ---------- inside the private mount namespace ----------
if [ "${1:-}" = __private ]; then
  umount /sys/fs/cgroup/unified || { echo "cannot unmount /sys/fs/cgroup/unified" >&2; exit 1; }
  m0=$(wc -l < /proc/self/mounts)
  echo "== private mount namespace, /sys/fs/cgroup/unified unmounted (pure cgroup v1)" >&2
  for rt in moat crun runc; do stock "$rt"; done
  for rt in moat crun runc; do sanity private "$rt"; done
  for rt in moat crun runc; do bench private "$rt" || exit 1; done
  leftovers "private namespace" "$m0"
  exit 0
fi

# ---------- main ----------
[ "$(id -u)" = 0 ] || { echo "runtime.sh: run as root" >&2; exit 1; }
[ -x "$MOAT" ] || { echo "runtime.sh: no moat binary at $MOAT (build with cargo build --release, or set MOAT)" >&2; exit 1; }

need=()
for c in crun runc hyperfine jq; do command -v "$c" >/dev/null || need+=("$c"); done
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y "${need[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=300 update >&2 && apt-get -o DPkg::Lock::Timeout=300 install -y "${need[@]}" >&2; } \
    || { echo "runtime.sh: cannot install ${need[*]}" >&2; exit 1; }
fi
BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')

cleanup() {
  local rt id
  # crun refuses hybrid cgroups even for delete, so delete inside the same kind of namespace
  unshare -m --propagation private bash -c '
    umount /sys/fs/cgroup/unified 2>/dev/null
    for rt in moat crun runc; do
      bin=$rt; [ $rt = moat ] && bin="$MOAT runtime"
      for id in bench-$rt sanity-$rt stock-$rt; do $bin --root "$W/state/$rt" delete --force $id >/dev/null 2>&1; done
    done
    # with cgroup2 unmounted, crun also makes /sys/fs/cgroup/unified/<id> (a plain dir with a
    # cgroup.procs file on the /sys/fs/cgroup tmpfs, hidden under the cgroup2 mount outside
    # the namespace) and does not remove it on delete
    if ! mountpoint -q /sys/fs/cgroup/unified; then
      for id in bench-crun sanity-crun stock-crun; do rm -rf "/sys/fs/cgroup/unified/$id"; done
    fi'
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
rm -rf "$W"; mkdir -p "$R" "$W/state"/{moat,crun,runc}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "   cgroup: $(stat -fc %T /sys/fs/cgroup) at /sys/fs/cgroup, $(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null || echo none) at unified (controllers: $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null))" >&2
echo "   $("$MOAT" --version) ($MOAT), crun $(crun --version | awk 'NR==1{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), $(hyperfine --version), busybox $("$BUSYBOX" | awk 'NR==1{print $2}')" >&2
echo "   $RUNS runs, $WARM warm-up runs per runtime; command: <rt> --root $W/state/<rt> run bench-<rt> (in $B)" >&2
pre=$(find /sys/fs/cgroup/*/moat -mindepth 1 -maxdepth 1 -type d 2>/dev/null | tr '\n' ' ')
[ -z "$pre" ] || echo "   NOTE: already under /sys/fs/cgroup/*/moat before the run: $pre" >&2

# the bundle: busybox-static rootfs with applet symlinks, config from `crun spec`
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,etc,tmp,root}
cp "$BUSYBOX" "$B/rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$B/rootfs/bin/$a" ] || ln -s busybox "$B/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$B/rootfs/etc/passwd"; echo 'root:x:0:' > "$B/rootfs/etc/group"
( cd "$B" && crun spec ) || exit 1
jq '.process.terminal=false' "$B/config.json" > "$W/stock.json"
jq '.process.capabilities.inheritable = .process.capabilities.ambient' "$W/stock.json" > "$W/base.json"
jq '.process.args=["/bin/true"]' "$W/base.json" > "$B/config.json"
# the sanity bundles share the rootfs (absolute root.path)
mkdir -p "$W/sanity-ok" "$W/sanity-rc" "$W/stock"
sh_cfg() { jq --arg r "$B/rootfs" --arg c "$2" '.root.path=$r | .process.args=["/bin/sh","-c",$c]' "$1"; }
sh_cfg "$W/base.json" 'echo ok' > "$W/sanity-ok/config.json"
sh_cfg "$W/base.json" 'exit 7' > "$W/sanity-rc/config.json"
sh_cfg "$W/stock.json" 'echo ok' > "$W/stock/config.json"

if [ "$HYBRID" = 1 ]; then
  m0=$(wc -l < /proc/self/mounts)
  echo "== hybrid cgroups (the normal environment): moat and runc" >&2
  for rt in moat runc; do sanity hybrid "$rt"; done
  for rt in moat runc; do bench hybrid "$rt" || exit 1; done
  leftovers hybrid "$m0"
fi

unshare -m --propagation private bash "$SELF" __private || exit 1

# ---------- summary ----------
echo
echo "runtime.sh: create+start+wait+delete of /bin/true, busybox bundle, hyperfine -N --warmup $WARM --runs $RUNS"
echo "$(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' '
  { env[NR]=$1; rt[NR]=$2; n[NR]=$3; med[NR]=$4; mean[NR]=$5; min[NR]=$6; max[NR]=$7; sd[NR]=$8; busy[NR]=$9
    m[$1 "/" $2]=$4 }
  END {
    printf "\n| environment | runtime | n | median ms | mean ms (± sd) | min ms | max ms | median / crun | median / runc | cpu busy before |\n"
    printf "|---|---|---|---|---|---|---|---|---|---|\n"
    for (i=1; i<=NR; i++) {
      c = m[env[i] "/crun"]; r = m[env[i] "/runc"]
      printf "| %s | %s | %d | %.1f | %.1f ± %.1f | %.1f | %.1f | %s | %s | %s%% |\n", env[i], rt[i], n[i], med[i], mean[i], sd[i], min[i], max[i],
        (c ? sprintf("%.2f", med[i]/c) : "-"), (r ? sprintf("%.2f", med[i]/r) : "-"), busy[i]
    }
    printf "\n"
    if (m["private/crun"]) printf "private namespace: moat/crun = %.2f (goal: <= 1.00)\n", m["private/moat"]/m["private/crun"]
    if (m["private/runc"]) printf "private namespace: moat/runc = %.2f\n", m["private/moat"]/m["private/runc"]
    if (m["hybrid/runc"])  printf "hybrid cgroups:    moat/runc = %.2f\n", m["hybrid/moat"]/m["hybrid/runc"]
  }' "$R/rows.tsv"
