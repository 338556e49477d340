#!/usr/bin/env bash
# pull.sh: a cold pull of the same image from a local registry by moat, skopeo, podman and docker,
# with hyperfine in one run: a large multi-layer image (a Debian rootfs of a few hundred MB split
# into gzip layers, as bench/unpack.sh makes it) and a small one (a busybox-static rootfs, one
# layer). Prints seconds and the ratios. A benchmark, not a test. Targets (from the issue): moat's
# cold pull-and-unpack >= 1.5x faster than podman's and docker's, and no slower than skopeo's copy
# to an OCI layout (which does not unpack).
#
#   sudo bash bench/pull.sh                       # moat from target/release/moat
#   sudo MOAT=/path/to/moat bash bench/pull.sh
#   sudo ROOTFS=/some/rootfs bash bench/pull.sh   # reuse a rootfs instead of debootstrap
#
# What is timed (hyperfine -N; REF is 127.0.0.1:PORT/bench/large:1 or .../bench/busybox:1):
#   moat      `moat --root ROOT pull REF`: ROOT is an empty store (created by `moat images` in
#             --prepare). Loopback registries are plain HTTP for moat, as for Docker.
#   moat-new  the same into a ROOT that does not exist yet: the store is created in the timed run.
#   skopeo    `skopeo copy --src-tls-verify=false docker://REF oci:DIR:TAG`, a new DIR per run:
#             downloads and verifies the blobs, does not decompress or unpack them.
#   podman    `podman --root .. --runroot .. --tmpdir .. pull --tls-verify=false REF`: a new empty
#             store per run, initialised by `podman images` in --prepare (the first command on a
#             new store spends ~0.35 s checking overlayfs: not a pull cost).
#   docker    `docker pull REF` (Debian's docker CLI): --prepare stops the script's dockerd, gives
#             it a new --data-root and starts it again (--insecure-registry 127.0.0.1:PORT,
#             --bridge=none --iptables=false), so every pull starts with no layer in the daemon.
#   moat2     (large image) moat again, last: how much the machine drifted meanwhile.
# "Cold" is: no layer of the image in the engine's store, nothing of a previous run reused. The
# registry (Debian's docker-registry on 127.0.0.1, its own port and directory) serves from the page
# cache: --prepare reads its blobs, and syncs, neither timed. Before each tool's hyperfine runs, one
# checked pull: the image id must be the config's digest, with the right number of layers, and
# (moat, podman, docker) the unpacked layer trees must hold every entry of the layer tars
# (skopeo: every layer blob, with its size); the last timed run is checked again. Else it fails.
#
# Settings (environment):
#   MOAT=target/release/moat   moat binary (relative paths from the repo root; falls back to
#                              target/x86_64-unknown-linux-gnu/release/moat). It is copied into
#                              the work dir first, so a rebuild during the run changes nothing.
#   W=/tmp/moat-bench-pull     work dir; the script works in $W/run, removed at the end (KEEP=1
#                              keeps it); W itself is removed only if the script made it
#   ROOTFS=                    an existing rootfs to split into layers (default: debootstrap)
#   SUITE=bookworm MIRROR= INCLUDE=...   as in bench/unpack.sh
#   RUNS=10 WARM=0             hyperfine runs and warm-up runs for the large image
#   SMALL_RUNS=20 SMALL_WARM=3 the same for busybox
#   TOOLS="moat moat-new skopeo podman docker"   which rows to time (moat2 follows when moat ran)
#   GATE_PCT=15 GATE_MAX_S=120 before each benchmark, wait up to GATE_MAX_S s for < GATE_PCT %
#                              CPU busy over 2 s. The busy % is printed either way.
#   DOCKER=/usr/bin/docker     the docker CLI (the daemon is Debian's dockerd)
#   KEEP_OUTPUTS=auto SETTLE_S=65  see below
#
# Machine quirks (see bench/unpack.sh and bench/RESULTS.md): on this ext4 without a journal,
# deleting a big tree slows every file creation for the next minutes, so nothing is deleted while
# benchmarks run: --prepare moves the previous store into $X/trash, deleted at the end (needs
# ~50 GB of disk; with less, or KEEP_OUTPUTS=0, the trash is deleted between tools and SETTLE_S
# seconds are waited). podman needs no --ulimit here (no container runs). Files idle for 30 s
# are paged out (DAMON): --prepare reads the registry's blobs. The 2 cores may be shared: the load
# and the CPU busy % before each benchmark are printed; trust the ratios more than the seconds.
#
# Outside its work dir the script touches only what skopeo and podman always write as root, the
# blob-info cache /var/lib/containers/cache/blob-info-cache-v1.boltdb: it is saved first and put
# back at the end (removed if it did not exist). dockerd, its containerd and the registry are
# stopped by PID, and any mount left under the work dir is unmounted.
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-pull}
X=$W/run                # everything this script makes
R=$X/results
O=$X/out                # the stores of the current runs, moved into $T by --prepare
T=$X/trash
L=$X/layers
REG=$X/registry         # the registry's storage
BIN=$X/bin/moat         # the copy of moat that is timed
DOCKER=${DOCKER:-/usr/bin/docker}; [ -x "$DOCKER" ] || DOCKER=$(command -v docker)
DEXEC=$X/docker-exec
PODMAN="podman --root $O/podman/root --runroot $O/podman/run --tmpdir $O/podman/tmp --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
BIC=/var/lib/containers/cache/blob-info-cache-v1.boltdb
export W X R O T L REG BIN DOCKER DEXEC PODMAN
export DOCKER_HOST=unix://$X/docker.sock

die() { echo "!! pull.sh: $*" >&2; exit 1; }

# umount_under DIR: unmount whatever is mounted at or below DIR, deepest first
umount_under() {
  local m
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}
# aside DIR: move DIR into the trash (never delete during a benchmark)
aside() { if [ -e "$1" ]; then umount_under "$1"; mv "$1" "$T/$(basename "$1").$(date +%s%N)"; fi; }
# warm_registry: the registry's files in the page cache, then sync
warm_registry() { find "$REG" -type f -exec cat {} + > /dev/null; sync; }

dockerd_stop() {  # SIGTERM the script's dockerd, wait for it and its containerd to exit
  local pid c i
  [ -s "$X/docker.pid" ] || return 0
  pid=$(cat "$X/docker.pid"); c=$(cat "$DEXEC/containerd/containerd.pid" 2>/dev/null)
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for i in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; sleep 0.5; }
  fi
  if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = containerd ]; then
    for i in $(seq 1 40); do kill -0 "$c" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$c" 2>/dev/null && kill -TERM "$c"
  fi
  rm -f "$X/docker.pid"; umount_under "$DEXEC"
}
dockerd_start() {  # a dockerd on $O/docker-data; waits until it answers
  local i
  setsid dockerd --host "$DOCKER_HOST" --data-root "$O/docker-data" --exec-root "$DEXEC" \
    --pidfile "$X/docker.pid" --iptables=false --bridge=none --insecure-registry "127.0.0.1:$PORT" \
    >> "$R/dockerd.log" 2>&1 < /dev/null &
  for i in $(seq 1 120); do "$DOCKER" info > /dev/null 2>&1 && return 0; sleep 0.25; done
  tail -20 "$R/dockerd.log" >&2; die "dockerd did not start"
}

# prep TOOL: the state before a cold pull (run by hyperfine --prepare, and before the check run)
prep() {
  case $1 in
    moat|moat2) aside "$O/moat"; "$BIN" --root "$O/moat" images > /dev/null || exit 1 ;;
    moat-new)   aside "$O/moat-new" ;;
    skopeo)     aside "$O/skopeo" ;;
    podman)     aside "$O/podman"; $PODMAN images > /dev/null 2>&1 || exit 1 ;;
    docker)     dockerd_stop; aside "$O/docker-data"; dockerd_start ;;
  esac
  warm_registry
  [ "$1" = docker ] && sleep 1  # let the new daemon settle
  return 0
}
if [ "${1:-}" = __prep ]; then prep "$2"; exit; fi

[ "$(id -u)" = 0 ] || die "run as root"
MOAT_GIVEN=${MOAT:+1}; MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
[ -x "$MOAT" ] || [ -n "$MOAT_GIVEN" ] || MOAT=$REPO/target/x86_64-unknown-linux-gnu/release/moat
[ -x "$MOAT" ] || die "no moat binary at $MOAT (build with cargo build --release, or set MOAT)"
SUITE=${SUITE:-bookworm}
INCLUDE=${INCLUDE:-python3,python3-pip,perl,git,vim-runtime,tzdata,libicu72,libllvm14}
RUNS=${RUNS:-10}; WARM=${WARM:-0}; SMALL_RUNS=${SMALL_RUNS:-20}; SMALL_WARM=${SMALL_WARM:-3}
TOOLS=${TOOLS:-moat moat-new skopeo podman docker}
ROOTFS=${ROOTFS:-}

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io podman skopeo docker-registry hyperfine jq pigz curl busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
[ -n "$ROOTFS" ] || command -v debootstrap > /dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=300 update >&2 && apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2; } \
    || die "cannot install ${need[*]}"
fi
BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')

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

MADE_W=0; [ -d "$W" ] || MADE_W=1
[ -s "$X/docker.pid" ] && kill -0 "$(cat "$X/docker.pid")" 2>/dev/null && die "a dockerd from $X is running; stop it first"
[ -s "$X/registry.pid" ] && kill -0 "$(cat "$X/registry.pid")" 2>/dev/null && die "a registry from $X is running; stop it first"
if [ -e "$X" ]; then  # left by KEEP=1: deleting it starts ext4's recently-deleted window
  umount_under "$X"; rm -rf "$X"; sync
  echo "== deleted the previous $X; waiting ${SETTLE_S:-65} s" >&2; sleep "${SETTLE_S:-65}"
fi
mkdir -p "$R" "$O" "$T" "$L" "$REG" "$X/bin" || die "cannot create $X"
HAD_BIC=0; [ -e "$BIC" ] && { HAD_BIC=1; cp -a "$BIC" "$X/bic.saved"; }
HAD_BIC_DIR=0; [ -d "$(dirname "$BIC")" ] && HAD_BIC_DIR=1
cleanup() {
  dockerd_stop
  [ -s "$X/registry.pid" ] && kill "$(cat "$X/registry.pid")" 2>/dev/null
  if [ "$HAD_BIC" = 1 ]; then cp -a "$X/bic.saved" "$BIC"
  else rm -f "$BIC"; [ "$HAD_BIC_DIR" = 1 ] || rmdir "$(dirname "$BIC")" 2>/dev/null; fi
  umount_under "$X"
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $X" >&2; return; fi
  rm -rf "$X"
  [ "$MADE_W" = 1 ] && rmdir "$W" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$MOAT" "$BIN" || die "cannot copy $MOAT"
echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/{print $2}') GiB," \
     "kernel $(uname -r), $X on $(df -T "$X" | awk 'NR==2{print $2" ("$1")"}'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "   $("$BIN" --version) (copied from $MOAT, built $(date -u -r "$MOAT" '+%F %T UTC')), skopeo $(skopeo --version | awk '{print $3}')," \
     "podman $(podman --version | awk '{print $3}'), dockerd $(dockerd --version | awk '{print $3}' | tr -d ,)," \
     "docker-registry $(dpkg-query -W -f '${Version}' docker-registry), $(hyperfine --version)" >&2

# ---------- the large rootfs (as bench/unpack.sh) ----------
ROOTFS_NOTE=
if [ -z "$ROOTFS" ]; then
  ROOTFS=$X/rootfs
  if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
               | awk '$1=="deb" && $2 ~ /^https?:/ && $2 !~ /security/ {print $2; exit}')
    [ -n "$MIRROR" ] || MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
               | awk '$1=="URIs:" {for (i=2;i<=NF;i++) if ($i !~ /security/) {print $i; exit}}' | head -1)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
  fi
  echo "== debootstrap --variant=minbase --include=$INCLUDE $SUITE ($MIRROR)" >&2
  t0=$EPOCHREALTIME
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" > "$R/debootstrap.log" 2>&1 \
    || { tail -5 "$R/debootstrap.log" >&2; die "debootstrap failed (give ROOTFS=... instead)"; }
  umount_under "$ROOTFS"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/*
  ROOTFS_NOTE="debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR (apt cache and lists removed)"
  echo "   done in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}') s" >&2
else
  ROOTFS_NOTE="given: $ROOTFS"
fi
[ -d "$ROOTFS/usr/lib/x86_64-linux-gnu" ] || die "rootfs $ROOTFS has no usr/lib/x86_64-linux-gnu"

# ---------- layers: the large image's five (unpack.sh's split), busybox's one ----------
# L1 everything but usr/ and var/; L2 usr/lib/x86_64-linux-gnu; L3 the rest of usr/lib;
# L4 usr/share; L5 the rest of usr/ and var/. Parent directories repeated in each layer.
echo "== splitting $ROOTFS into layers" >&2
children() { # children DIR EXCEPT...: the entries of $ROOTFS/DIR, as paths relative to $ROOTFS
  local d=$1; shift; local e
  ( cd "$ROOTFS" && for e in "$d"/* "$d"/.[!.]*; do
      [ -e "$e" ] || [ -L "$e" ] || continue
      case " $* " in *" $e "*) continue ;; esac
      printf '%s\n' "$e"
    done )
}
mk_layer() { # mk_layer N PARENTS-FILE TREES-FILE
  tar -C "$ROOTFS" --numeric-owner --sort=name -cf - --no-recursion -T "$2" --recursion -T "$3" \
    | pigz -6 > "$L/L$1.tar.gz" || die "cannot build layer $1"
}
: > "$R/none"
( cd "$ROOTFS" && ls -A | grep -vx -e usr -e var -e proc -e sys ) > "$R/l1"
for d in proc sys; do [ -d "$ROOTFS/$d" ] && echo "$d"; done > "$R/l1-empty"  # empty, even if mounted
printf 'usr\nusr/lib\n' > "$R/p23"; echo usr/lib/x86_64-linux-gnu > "$R/l2"
children usr/lib usr/lib/x86_64-linux-gnu > "$R/l3"
echo usr > "$R/p4"; echo usr/share > "$R/l4"
{ children usr usr/lib usr/share; [ -e "$ROOTFS/var" ] && echo var; } > "$R/l5"
mk_layer 1 "$R/l1-empty" "$R/l1"; mk_layer 2 "$R/p23" "$R/l2"; mk_layer 3 "$R/p23" "$R/l3"
mk_layer 4 "$R/p4" "$R/l4"; mk_layer 5 "$R/p4" "$R/l5"
S=$X/bb-rootfs
mkdir -p "$S"/{bin,proc,sys,dev,etc,tmp,root}
cp "$BUSYBOX" "$S/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"; echo 'root:x:0:' > "$S/etc/group"
mkdir -p "$X/bb-layer"
tar -C "$S" --numeric-owner --sort=name -cf - . | gzip -6 > "$X/bb-layer/L1.tar.gz" || die "cannot build the busybox layer"

# ---------- OCI layouts, pushed to the registry by skopeo as Docker schema 2 images ----------
# mk_oci DIR TAG LAYER...: blobs, config (diff ids, history), manifest and index.json, by hand
mk_oci() {
  local dir=$1 tag=$2; shift 2
  local f d s diff layers="[]" diffs="[]" hist="[]" cfg man
  mkdir -p "$dir/blobs/sha256"; echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  for f in "$@"; do
    d=$(sha256sum < "$f" | cut -c1-64); s=$(stat -c %s "$f"); diff=$(gzip -dc < "$f" | sha256sum | cut -c1-64)
    ln "$f" "$dir/blobs/sha256/$d" 2>/dev/null || cp "$f" "$dir/blobs/sha256/$d"
    layers=$(jq -c --arg d "sha256:$d" --argjson s "$s" '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")
    diffs=$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs")
    hist=$(jq -c --arg b "$(basename "$f")" '. + [{created: "2026-01-01T00:00:00Z", created_by: ("pull.sh: " + $b)}]' <<<"$hist")
  done
  jq -nc --argjson ids "$diffs" --argjson h "$hist" '{architecture: "amd64", os: "linux", created: "2026-01-01T00:00:00Z",
      config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"]},
      rootfs: {type: "layers", diff_ids: $ids}, history: $h}' > "$dir/cfg.json"
  cfg=$(sha256sum < "$dir/cfg.json" | cut -c1-64); mv "$dir/cfg.json" "$dir/blobs/sha256/$cfg"
  jq -nc --arg c "sha256:$cfg" --argjson cs "$(stat -c %s "$dir/blobs/sha256/$cfg")" --argjson l "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}, layers: $l}' > "$dir/man.json"
  man=$(sha256sum < "$dir/man.json" | cut -c1-64); mv "$dir/man.json" "$dir/blobs/sha256/$man"
  jq -nc --arg m "sha256:$man" --argjson ms "$(stat -c %s "$dir/blobs/sha256/$man")" --arg t "$tag" \
    '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
      annotations: {"org.opencontainers.image.ref.name": $t}}]}' > "$dir/index.json"
}
mk_oci "$X/oci-large" large "$L"/L*.tar.gz
mk_oci "$X/oci-busybox" busybox "$X/bb-layer/L1.tar.gz"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
  || die "no free port"
export PORT
cat > "$X/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$X/registry.yml" > "$R/registry.log" 2>&1 < /dev/null & echo $! > "$X/registry.pid"
for i in $(seq 1 40); do curl -sf "http://127.0.0.1:$PORT/v2/" > /dev/null && break; sleep 0.25; done
curl -sf "http://127.0.0.1:$PORT/v2/" > /dev/null || { cat "$R/registry.log" >&2; die "the registry did not start"; }
ACCEPT='application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'
declare -A REF CFG NL ENTRIES MANIFEST CBYTES UBYTES DIFFS LAYERS
for size in large busybox; do
  REF[$size]=127.0.0.1:$PORT/bench/$size:1
  skopeo copy --quiet --format v2s2 --dest-tls-verify=false "oci:$X/oci-$size:$size" "docker://${REF[$size]}" > "$R/push-$size.log" 2>&1 \
    || { cat "$R/push-$size.log" >&2; die "skopeo could not push the $size image"; }
  curl -sf -H "Accept: $ACCEPT" "http://127.0.0.1:$PORT/v2/bench/$size/manifests/1" > "$R/manifest-$size.json" || die "no manifest for $size"
  MANIFEST[$size]=$(jq -r .mediaType "$R/manifest-$size.json")
  CFG[$size]=$(jq -r .config.digest "$R/manifest-$size.json")
  NL[$size]=$(jq '.layers | length' "$R/manifest-$size.json")
  CBYTES[$size]=$(jq '[.layers[].size] | add' "$R/manifest-$size.json")
  LAYERS[$size]=$(jq -c '[.layers[].digest]' "$R/manifest-$size.json")
  DIFFS[$size]=$(jq -c .rootfs.diff_ids "$X/oci-$size/blobs/sha256/${CFG[$size]#sha256:}")
done
# expected entries of the unpacked layers (the layer tars' entries, less "./")
count_entries() { local f n=0; for f in "$@"; do n=$((n + $(tar -tzf "$f" | grep -cvx -e '\./' -e '\.'))); done; echo "$n"; }
sum_tar_bytes() { local f t=0; for f in "$@"; do t=$((t + $(gzip -dc < "$f" | wc -c))); done; echo "$t"; }
ENTRIES[large]=$(count_entries "$L"/L*.tar.gz); UBYTES[large]=$(sum_tar_bytes "$L"/L*.tar.gz)
ENTRIES[busybox]=$(count_entries "$X/bb-layer/L1.tar.gz"); UBYTES[busybox]=$(sum_tar_bytes "$X/bb-layer/L1.tar.gz")
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }
: > "$R/layers.txt"
for f in "$L"/L*.tar.gz; do
  echo "   $(basename "$f" .tar.gz): $(mb "$(stat -c %s "$f")") MB gz, $(mb "$(sum_tar_bytes "$f")") MB tar, $(count_entries "$f") entries" >> "$R/layers.txt"
done
for size in large busybox; do
  echo "== $size: ${REF[$size]} (${MANIFEST[$size]}), gzip layers: ${NL[$size]}, $(mb "${CBYTES[$size]}") MB compressed," \
       "$(mb "${UBYTES[$size]}") MB uncompressed, ${ENTRIES[$size]} entries; config ${CFG[$size]}" >&2
  [ "$size" = large ] && cat "$R/layers.txt" >&2
done

# keep every store until the end when the disk has room (per run: moat ~ tar + gz, skopeo gz,
# podman and docker ~ tar; check run + RUNS each, plus the drift row)
FREE=$(df -B1 --output=avail "$X" | tail -1)
U=${UBYTES[large]}; C=${CBYTES[large]}
NEED=$(( (RUNS + WARM + 1) * (3 * (U * 11 / 10 + C) + C + 2 * (U * 11 / 10)) + 10000000000 ))
case ${KEEP_OUTPUTS:-auto} in auto) if [ "$FREE" -gt "$NEED" ]; then KEEP_OUTPUTS=1; else KEEP_OUTPUTS=0; fi ;; esac
echo "== stores: $( [ "$KEEP_OUTPUTS" = 1 ] && echo "kept until the end (up to $(mb "$NEED") MB; $(mb "$FREE") MB free)" \
  || echo "deleted between tools, then ${SETTLE_S:-65} s of settling ($(mb "$FREE") MB free, $(mb "$NEED") MB needed to keep them)")" >&2
# empty_trash: between tools, delete the trash when the stores are not kept, and wait
empty_trash() {
  if [ "$KEEP_OUTPUTS" != 1 ] && [ -n "$(find "$T" -mindepth 1 -maxdepth 1 | head -1)" ]; then
    rm -rf "${T:?}"/*; sync; sleep "${SETTLE_S:-65}"
  fi
}

# ---------- commands and checks ----------
cmd() { # cmd TOOL SIZE: the timed command
  case $1 in
    moat|moat2) echo "$BIN --root $O/moat pull ${REF[$2]}" ;;
    moat-new)   echo "$BIN --root $O/moat-new pull ${REF[$2]}" ;;
    skopeo)     echo "skopeo copy --src-tls-verify=false docker://${REF[$2]} oci:$O/skopeo:$2" ;;
    podman)     echo "$PODMAN pull --tls-verify=false ${REF[$2]}" ;;
    docker)     echo "$DOCKER pull ${REF[$2]}" ;;
  esac
}
tree_entries() { local n=0 d; for d in "$@"; do n=$((n + $(find "$d" -mindepth 1 | wc -l))); done; echo "$n"; }
# check TOOL SIZE [quiet]: the image is really there, unpacked; fails loudly otherwise
check() {
  local tool=$1 size=$2 id n got root dirs=() man d s
  local want_id=${CFG[$size]} want_n=${NL[$size]} want_e=${ENTRIES[$size]}
  case $tool in
    moat*)
      root=$O/moat; [ "$tool" = moat-new ] && root=$O/moat-new
      id=$("$BIN" --root "$root" image inspect "${REF[$size]}" | jq -r '.[0].Id') || die "$size/$tool: moat image inspect failed"
      n=$("$BIN" --root "$root" image inspect "${REF[$size]}" | jq '.[0].RootFS.Layers | length')
      for d in "$root"/image/snapshots/*; do case ${d##*/} in tmp*) ;; *) dirs+=("$d") ;; esac; done
      [ "${#dirs[@]}" = "$want_n" ] || die "$size/$tool: ${#dirs[@]} snapshots, expected $want_n"
      got=$(tree_entries "${dirs[@]}")
      if [ "${3:-}" != quiet ]; then
        local left; left=$(find "$root" -mindepth 1 -maxdepth 2 -printf '%P\n' | grep -vx -e image -e image/blobs -e image/snapshots \
                             -e image/l -e image/store.lock -e 'image/moat\.db' -e 'image/moat\.db-wal' -e 'image/moat\.db-shm')
        [ -z "$left" ] || echo "   NOTE $size/$tool: other entries in the root: $(echo $left)" >&2
        [ -z "$(find "$root/image/snapshots" -maxdepth 1 -name 'tmp*' | head -1)" ] || echo "   NOTE $size/$tool: temporary snapshots left" >&2
        [ -z "$(ls -A "$root/image/blobs/tmp" 2>/dev/null)" ] || echo "   NOTE $size/$tool: files left in image/blobs/tmp" >&2
      fi ;;
    skopeo)
      man=$(jq -r '.manifests[0].digest' "$O/skopeo/index.json" 2>/dev/null) || die "$size/skopeo: no index.json"
      man=$O/skopeo/blobs/sha256/${man#sha256:}
      # skopeo rewrites the config for an OCI layout (another digest): compare layers and diff ids
      n=$(jq '.layers | length' "$man")
      [ "$(jq -c '[.layers[].digest]' "$man")" = "${LAYERS[$size]}" ] || die "$size/skopeo: other layer blobs than the registry's"
      d=$(jq -r .config.digest "$man")
      [ "$(jq -c .rootfs.diff_ids "$O/skopeo/blobs/sha256/${d#sha256:}")" = "${DIFFS[$size]}" ] || die "$size/skopeo: other diff ids"
      id=$want_id
      while read -r d s; do
        [ "$(stat -c %s "$O/skopeo/blobs/sha256/${d#sha256:}" 2>/dev/null)" = "$s" ] || die "$size/skopeo: blob $d missing or short"
      done < <(jq -r '.layers[] | "\(.digest) \(.size)"' "$man")
      got=$want_e ;;
    podman)
      id=sha256:$($PODMAN image inspect --format '{{.Id}}' "${REF[$size]}" 2>/dev/null) || die "$size/podman: no image"
      n=$($PODMAN image inspect --format '{{len .RootFS.Layers}}' "${REF[$size]}" 2>/dev/null)
      got=$(tree_entries "$O"/podman/root/overlay/*/diff) ;;
    docker)
      id=$("$DOCKER" image inspect --format '{{.Id}}' "${REF[$size]}" 2>/dev/null) || die "$size/docker: no image"
      n=$("$DOCKER" image inspect --format '{{len .RootFS.Layers}}' "${REF[$size]}" 2>/dev/null)
      got=$(tree_entries "$O"/docker-data/overlay2/*/diff) ;;
  esac
  [ "$id" = "$want_id" ] || die "$size/$tool: image id $id, expected $want_id"
  [ "$n" = "$want_n" ] || die "$size/$tool: $n layers, expected $want_n"
  [ "$got" = "$want_e" ] || die "$size/$tool: $got entries in the unpacked layers, expected $want_e"
  [ "${3:-}" = quiet ] || echo "   check $size/$tool: id ${id:7:12}, layers $n$( [ "$tool" = skopeo ] && echo ", every blob" || echo ", $got entries unpacked"): as expected" >&2
}

# bench SIZE TOOL: one checked pull, then hyperfine; appends to $R/rows.tsv:
# size tool n median mean stddev min max busy load
bench() {
  local size=$1 tool=$2 c busy load t0 secs runs warm
  c=$(cmd "$tool" "$size")
  empty_trash
  prep "$tool" || die "prepare $size/$tool failed"
  t0=$EPOCHREALTIME
  $c > "$R/$size.$tool.check.out" 2>&1 || { cat "$R/$size.$tool.check.out" >&2; die "$size/$tool: the pull failed: $c"; }
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
  check "$tool" "$size"
  if [ "$size" = large ]; then runs=$RUNS; warm=$WARM; else runs=$SMALL_RUNS; warm=$SMALL_WARM; fi
  busy=$(quiet_gate); load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $size/$tool: check run ${secs} s; hyperfine --runs $runs --warmup $warm; cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  hyperfine -N --runs "$runs" --warmup "$warm" --prepare "bash $SELF __prep $tool" \
      --export-json "$R/$size.$tool.json" -n "$tool" "$c" > "$R/$size.$tool.txt" 2>&1 \
    || { cat "$R/$size.$tool.txt" >&2; die "hyperfine $size/$tool failed"; }
  sed -n '/Time (mean/,/Range/p' "$R/$size.$tool.txt" | sed 's/^/   /' >&2
  check "$tool" "$size" quiet  # the last timed run's pull too
  [ "$tool" = docker ] && dockerd_stop
  jq -r --arg s "$size" --arg t "$tool" --arg b "$busy" --arg l "$load" '.results[0] |
      [$s, $t, (.times|length), .median, .mean, .stddev, .min, .max, $b, $l] | @tsv' "$R/$size.$tool.json" >> "$R/rows.tsv"
}

: > "$R/rows.tsv"
for size in large busybox; do
  echo "== $size image" >&2
  for t in $TOOLS; do bench "$size" "$t"; done
  [ "$size" = large ] && case " $TOOLS " in *" moat "*) bench large moat2 ;; esac
done

# ---------- summary ----------
echo
echo "pull.sh: $(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg); $("$BIN" --version) (from $MOAT)"
echo "registry: docker-registry $(dpkg-query -W -f '${Version}' docker-registry) on 127.0.0.1 (plain HTTP); images pushed by skopeo as ${MANIFEST[large]}"
echo "large: ${NL[large]} gzip layers, $(mb "${CBYTES[large]}") MB compressed, $(mb "${UBYTES[large]}") MB uncompressed, ${ENTRIES[large]} entries; rootfs: $ROOTFS_NOTE"
cat "$R/layers.txt"
echo "busybox: busybox-static, ${NL[busybox]} gzip layer, $(mb "${CBYTES[busybox]}") MB compressed, $(mb "${UBYTES[busybox]}") MB uncompressed, ${ENTRIES[busybox]} entries"
awk -F'\t' '
  function label(t) {
    if (t == "moat") return "moat pull (empty store)"
    if (t == "moat-new") return "moat pull (new --root)"
    if (t == "moat2") return "moat pull (empty store), again at the end (drift)"
    if (t == "skopeo") return "skopeo copy to an OCI layout (no unpack)"
    if (t == "podman") return "podman pull"
    if (t == "docker") return "docker pull"
    return t
  }
  { size[NR]=$1; tool[NR]=$2; n[NR]=$3; med[NR]=$4; mean[NR]=$5; sd[NR]=$6; min[NR]=$7; max[NR]=$8; busy[NR]=$9; load[NR]=$10
    m[$1 "/" $2]=$4 }
  END {
    printf "\n| image | tool | n | median s | mean s (± sd) | min s | max s | median / moat median | cpu busy before | load |\n"
    printf "|---|---|---|---|---|---|---|---|---|---|\n"
    for (i=1; i<=NR; i++)
      printf "| %s | %s | %d | %.3f | %.3f ± %.3f | %.3f | %.3f | %.2f | %s%% | %s |\n", size[i], label(tool[i]), n[i],
        med[i], mean[i], sd[i], min[i], max[i], (m[size[i] "/moat"] ? med[i]/m[size[i] "/moat"] : 0), busy[i], load[i]
    printf "\n"
    split("large busybox", ss, " "); split("moat moat-new", ms, " ")
    for (j=1; j<=2; j++) for (k=1; k<=2; k++) { s = ss[j]; t = ms[k]; x = m[s "/" t]; if (!x) continue
      line = sprintf("%s, %s:", s, label(t))
      if (m[s "/podman"]) line = line sprintf(" podman/moat = %.2f (%s)", m[s "/podman"]/x, m[s "/podman"]/x >= 1.5 ? "met, >= 1.5" : "MISSED, target >= 1.5")
      if (m[s "/docker"]) line = line sprintf("; docker/moat = %.2f (%s)", m[s "/docker"]/x, m[s "/docker"]/x >= 1.5 ? "met, >= 1.5" : "MISSED, target >= 1.5")
      if (m[s "/skopeo"]) line = line sprintf("; skopeo/moat = %.2f (%s)", m[s "/skopeo"]/x, m[s "/skopeo"]/x >= 1.0 ? "met, >= 1.0" : "MISSED, target >= 1.0")
      print line
    }
  }' "$R/rows.tsv"
