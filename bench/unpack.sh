#!/usr/bin/env bash
# unpack.sh: time how fast layers are unpacked by moat, umoci and plain `tar -xzf`, on a
# large multi-layer image (a Debian rootfs of a few hundred MB split into gzip layers) and on
# a small one (a 2 MB busybox-static rootfs, one layer). Prints MB/s and the ratios.
#
#   sudo bash bench/unpack.sh                 # moat from target/release/moat (cargo build --release)
#   sudo MOAT=/path/to/moat bash bench/unpack.sh
#   sudo ROOTFS=/some/rootfs bash bench/unpack.sh   # reuse a rootfs instead of debootstrap
#
# This is a benchmark, not a test: it fails only when a tool cannot unpack the image or its
# tree does not have the expected entries. Targets (from the issue): moat >= 5x faster than
# umoci, and >= 90 % of `tar -xzf`'s rate on the large image.
#
# What is timed (hyperfine; --prepare, not counted, moves the previous output aside, syncs,
# drops the page cache for the large image, and reads the inputs once so they are in the page
# cache; see "Machine quirks" below):
#   tar    `tar -xzf LAYER -C OUT` for each layer in turn, all into one directory
#   moat   `moat --root ROOT import LAYER` for each layer in turn, a fresh ROOT per run (so
#          nothing is deduplicated): each layer becomes a one-layer image (decompress, sha256
#          of the tar = diff id, blob written and fsync'd, snapshot unpacked, image recorded in
#          SQLite).
#   moat-load-tar  the same from one tar of that layout (`moat load -i OCI.tar`).
#   moat-load  (when the binary has `moat load`) `moat --root ROOT load -i OCI-DIR`, a fresh
#          ROOT per run: the whole multi-layer image from the same OCI layout umoci reads.
#   umoci  `umoci unpack --image OCI:TAG BUNDLE`, a fresh BUNDLE per run, over an OCI layout
#          (one per image) holding the very same .tar.gz files as blobs. That is umoci's normal unpack path:
#          it also writes config.json and an mtree manifest of the rootfs.
#   zcat   (reference, large image only) `gzip -dc LAYER >/dev/null` per layer: the cost of
#          decompression alone, single-threaded.
#   tar2   tar again, last, with the same settings: how much the machine drifted meanwhile.
# Before each tool's hyperfine runs, each tool unpacks once outside the timing and its tree is
# checked: the same number of entries as the rootfs (tar, umoci), or as the layer tars (moat,
# per snapshot), else the script fails. A metadata listing (path, type, size, mode, owner,
# mtime, link target) is compared with tar's too; a difference is reported, not fatal.
#
# Settings (environment):
#   MOAT=target/release/moat   moat binary (relative paths are taken from the repo root)
#   W=/tmp/moat-bench-unpack   work dir; the script works in $W/run, removed at the end
#                              (KEEP=1 keeps it); W itself is removed only if the script made it
#   ROOTFS=                    an existing rootfs to split into layers (default: debootstrap)
#   SUITE=bookworm MIRROR=     debootstrap suite and mirror (default: the first Debian URI in
#                              /etc/apt/sources.list{,.d}, else http://deb.debian.org/debian)
#   INCLUDE=...                packages added to the minbase rootfs (see below)
#   RUNS=                      hyperfine runs for the large image (default: 10 for a tool whose
#                              check run took < 5 s, else 5); WARM=0 warm-up runs there (each
#                              run's --prepare reads its inputs and the tools' binaries)
#   SMALL_RUNS=30 SMALL_WARM=3 hyperfine runs and warm-up runs for the busybox image
#   GATE_PCT=15 GATE_MAX_S=120 before each benchmark, wait up to GATE_MAX_S s for < GATE_PCT %
#                              CPU busy over 2 s. The busy % is printed either way.
#   KEEP_OUTPUTS=auto SETTLE_S=65  see "Machine quirks" below
#   FRESH_MEMORY=1             drop the page cache before each large-image run (see below)
#
# MB are 10^6 bytes of uncompressed tar (the sum of the layers' tar sizes); MB/s = MB / median.
#
# Machine quirks (a Firecracker guest; / is ext4 *without a journal*, mounted -o discard; DAMON
# pages out memory idle for 30 s):
#  * Deleting a big tree makes every file creation on the filesystem slower for the next 60 s
#    (360 s while the inode table blocks are dirty): without a journal, ext4's inode allocator
#    skips inodes deleted that recently (recently_deleted() in find_inode_bit, 15-20 % of the
#    profile after a delete). Measured: tar over the large image, 3.8 s after no delete, 6-9 s
#    right after deleting the previous tree, even after sync and 40 s of sleep. So nothing is
#    deleted while benchmarks run: --prepare renames the previous output into $X/trash, and all
#    of it is deleted at the end. That takes up to ~50 GB of disk; with less free space than that
#    (or KEEP_OUTPUTS=0), the trash is deleted between tools and SETTLE_S=65 s are waited.
#  * Inputs idle for 30 s are paged out by DAMON: --prepare reads the inputs (the layers, and
#    the tar moat-load-tar reads) and the tools' binaries, so the timed runs find them cached.
#  * Memory free for a while costs more to write into than memory just freed: the guest reports
#    free pages to its host (virtio-balloon), which takes them back, and a page written after
#    that faults on the host too. Measured on the large image: `moat load` 1.2-1.3 s with 0.6 s
#    of system time right after memory was freed, 2.0-2.2 s with 2.4-2.6 s of system time in
#    back-to-back runs (tar: 1.4 against 2.1-2.4 s of system time; umoci, slower and
#    single-threaded, 5.75 s either way). So for the large image --prepare syncs and drops the
#    page cache, dentries and inodes (`echo 3 > /proc/sys/vm/drop_caches`) before it reads the
#    inputs and binaries back, for every tool alike: each run starts with the same memory
#    state (FRESH_MEMORY=0: not).
#  * Other work may share the 2 cores. Trust ratios more than absolute times; the tar2 row
#    shows the drift over the run.
set -uo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
W=${W:-/tmp/moat-bench-unpack}
MOAT=${MOAT:-target/release/moat}
case $MOAT in /*) ;; *) MOAT=$REPO/$MOAT ;; esac
SUITE=${SUITE:-bookworm}
INCLUDE=${INCLUDE:-python3,python3-pip,perl,git,vim-runtime,tzdata,libicu72,libllvm14}
RUNS=${RUNS:-}
WARM=${WARM:-0}
SMALL_RUNS=${SMALL_RUNS:-30}
SMALL_WARM=${SMALL_WARM:-3}
ROOTFS=${ROOTFS:-}

die() { echo "!! unpack.sh: $*" >&2; exit 1; }

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

[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$MOAT" ] || die "no moat binary at $MOAT (build with cargo build --release, or set MOAT)"

need=()
for c in umoci hyperfine jq pigz gzip tar sha256sum; do command -v "$c" >/dev/null || need+=("$c"); done
[ -n "$ROOTFS" ] || command -v debootstrap >/dev/null || need+=(debootstrap)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y "${need[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=300 update >&2 && apt-get -o DPkg::Lock::Timeout=300 install -y "${need[@]}" >&2; } \
    || die "cannot install ${need[*]}"
fi
BUSYBOX=$(dpkg -L busybox-static | grep -m1 'bin/busybox$')

MADE_W=0; [ -d "$W" ] || MADE_W=1
X=$W/run          # everything this script makes
R=$X/results
L=$X/layers       # the large image's layers, L1.tar.gz ...
O=$X/out          # unpack outputs, moved to $T before each run
T=$X/trash        # previous outputs, deleted between tools
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $X" >&2; return; fi
  rm -rf "$X"
  [ "$MADE_W" = 1 ] && rmdir "$W" 2>/dev/null
  return 0
}
if [ -e "$X" ]; then  # left by KEEP=1: deleting it starts ext4's recently-deleted window
  rm -rf "$X"; sync; echo "== deleted the previous $X; waiting ${SETTLE_S:-65} s" >&2; sleep "${SETTLE_S:-65}"
fi
mkdir -p "$R" "$L" "$O" "$T" || die "cannot create $X"
trap cleanup EXIT

echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/{print $2}') GiB," \
     "kernel $(uname -r), $X on $(df -T "$X" | awk 'NR==2{print $2" ("$1")"}'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "   $("$MOAT" --version) ($MOAT), umoci $(umoci --version | awk '{print $3}'), $(tar --version | head -1)," \
     "gzip $(gzip --version | awk 'NR==1{print $2}'), $(hyperfine --version)" >&2

# ---------- the large rootfs ----------
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
  if debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" > "$R/debootstrap.log" 2>&1; then
    # as Debian's container images do: no package cache, no apt lists
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/*
    ROOTFS_NOTE="debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR (apt cache and lists removed)"
    echo "   done in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}') s" >&2
  else
    echo "!! debootstrap failed (tail of its log below); FALLBACK: a rootfs from the files of the" \
         "largest installed packages (dpkg -L), copied out" >&2
    tail -5 "$R/debootstrap.log" >&2
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
    dpkg-query -W -f='${Installed-Size}\t${Package}\n' | sort -rn | awk '{s+=$1; print $2; if (s > 450000) exit}' > "$R/fallback-packages"
    # shellcheck disable=SC2046
    dpkg -L $(cat "$R/fallback-packages") 2>/dev/null | sort -u \
      | while IFS= read -r p; do [ -e "$p" ] || [ -L "$p" ] && printf '%s\n' "${p#/}"; done > "$R/fallback-files"
    tar -C / --no-recursion -cf - -T "$R/fallback-files" | tar -C "$ROOTFS" -xf - || die "fallback rootfs copy failed"
    ROOTFS_NOTE="FALLBACK (debootstrap failed): files of $(wc -l < "$R/fallback-packages") installed packages ($(tr '\n' ' ' < "$R/fallback-packages")) copied out"
  fi
else
  ROOTFS_NOTE="given: $ROOTFS"
fi
[ -d "$ROOTFS/usr" ] || die "rootfs $ROOTFS has no usr/"

# ---------- split into layers ----------
# L1 everything but usr/ and var/; L2 usr/lib/x86_64-linux-gnu; L3 the rest of usr/lib;
# L4 usr/share; L5 the rest of usr/ and var/. Parent directories are repeated in each layer,
# as in images built layer by layer. Compressed with pigz -6 (gzip format, not timed).
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
( cd "$ROOTFS" && ls -A | grep -vx -e usr -e var ) > "$R/l1"
[ -d "$ROOTFS/usr/lib/x86_64-linux-gnu" ] || die "no usr/lib/x86_64-linux-gnu in the rootfs"
printf 'usr\nusr/lib\n' > "$R/p23"; echo usr/lib/x86_64-linux-gnu > "$R/l2"
children usr/lib usr/lib/x86_64-linux-gnu > "$R/l3"
echo usr > "$R/p4"; echo usr/share > "$R/l4"
{ children usr usr/lib usr/share; [ -e "$ROOTFS/var" ] && echo var; } > "$R/l5"
mk_layer 1 "$R/none" "$R/l1"; mk_layer 2 "$R/p23" "$R/l2"; mk_layer 3 "$R/p23" "$R/l3"
mk_layer 4 "$R/p4" "$R/l4"; mk_layer 5 "$R/p4" "$R/l5"
LAYERS=("$L"/L*.tar.gz)
NL=${#LAYERS[@]}

# ---------- the small image: busybox-static rootfs, one layer ----------
S=$X/bb-rootfs
mkdir -p "$S"/{bin,proc,sys,dev,etc,tmp,root}
cp "$BUSYBOX" "$S/bin/busybox"
for a in $("$BUSYBOX" --list); do [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"; echo 'root:x:0:' > "$S/etc/group"
tar -C "$S" --numeric-owner --sort=name -cf - . | gzip -6 > "$X/bb.tar.gz" || die "cannot build the busybox layer"

# ---------- OCI layouts for umoci, holding the same .tar.gz files ----------
# mk_oci DIR TAG LAYER...: blobs, config (diff ids), manifest and an index.json entry, by hand
mk_oci() {
  local dir=$1 tag=$2; shift 2
  local f d s diff layers="[]" diffs="[]" cfg man
  mkdir -p "$dir/blobs/sha256"; echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  for f in "$@"; do
    d=$(sha256sum < "$f" | cut -c1-64); s=$(stat -c %s "$f"); diff=$(gzip -dc < "$f" | sha256sum | cut -c1-64)
    ln "$f" "$dir/blobs/sha256/$d" 2>/dev/null || cp "$f" "$dir/blobs/sha256/$d"
    layers=$(jq -c --arg d "sha256:$d" --argjson s "$s" '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")
    diffs=$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs")
  done
  jq -nc --argjson ids "$diffs" '{architecture: "amd64", os: "linux", config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"]},
      rootfs: {type: "layers", diff_ids: $ids}}' > "$dir/cfg.json"
  cfg=$(sha256sum < "$dir/cfg.json" | cut -c1-64); mv "$dir/cfg.json" "$dir/blobs/sha256/$cfg"
  jq -nc --arg c "sha256:$cfg" --argjson cs "$(stat -c %s "$dir/blobs/sha256/$cfg")" --argjson l "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}, layers: $l}' > "$dir/man.json"
  man=$(sha256sum < "$dir/man.json" | cut -c1-64); mv "$dir/man.json" "$dir/blobs/sha256/$man"
  [ -s "$dir/index.json" ] || echo '{"schemaVersion": 2, "manifests": []}' > "$dir/index.json"
  jq -c --arg m "sha256:$man" --argjson ms "$(stat -c %s "$dir/blobs/sha256/$man")" --arg t "$tag" \
    '.manifests += [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
      annotations: {"org.opencontainers.image.ref.name": $t}}]' "$dir/index.json" > "$dir/index.new" \
    && mv "$dir/index.new" "$dir/index.json"
}
mk_oci "$X/oci-big" big "${LAYERS[@]}"
mk_oci "$X/oci-bb" bb "$X/bb.tar.gz"
MOAT_TOOLS="moat"
# The same layouts as one tar each (not timed): `moat load -i TAR` reads an archive as it
# streams (`docker save | moat load`), layers straight into the store.
tar -C "$X/oci-big" -cf "$X/oci-big.tar" . && tar -C "$X/oci-bb" -cf "$X/oci-bb.tar" . || die "cannot tar the OCI layouts"
if "$MOAT" load --help >/dev/null 2>&1; then MOAT_TOOLS="moat moat-load moat-load-tar"
else echo "   (this moat has no 'load' command: only 'moat import' is timed)" >&2; fi

# ---------- sizes ----------
sum_tar_bytes() { local f t=0; for f in "$@"; do t=$((t + $(gzip -dc < "$f" | wc -c))); done; echo "$t"; }
entries() { find "$1" -mindepth 1 | wc -l; }
BIG_U=$(sum_tar_bytes "${LAYERS[@]}"); BIG_C=$(cat "${LAYERS[@]}" | wc -c)
BIG_N=$(entries "$ROOTFS")
BB_U=$(sum_tar_bytes "$X/bb.tar.gz"); BB_C=$(stat -c %s "$X/bb.tar.gz"); BB_N=$(entries "$S")
LAYER_ENTRIES=0; : > "$R/layers.txt"
for f in "${LAYERS[@]}"; do
  n=$(tar -tzf "$f" | wc -l); LAYER_ENTRIES=$((LAYER_ENTRIES + n))
  echo "   $(basename "$f"): $(awk -v c="$(stat -c %s "$f")" -v u="$(sum_tar_bytes "$f")" 'BEGIN{printf "%.1f MB gz, %.1f MB tar", c/1e6, u/1e6}'), $n entries" >> "$R/layers.txt"
done
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }
# keep every output until the end when the disk has room: ~1.6x the tar size per run and tool
FREE=$(df -B1 --output=avail "$X" | tail -1)
NEED=$((BIG_U * 16 / 10 * 11 * 5 + 5000000000))
case ${KEEP_OUTPUTS:-auto} in
  auto) if [ "$FREE" -gt "$NEED" ]; then KEEP_OUTPUTS=1; else KEEP_OUTPUTS=0; fi ;;
esac
echo "== outputs: $( [ "$KEEP_OUTPUTS" = 1 ] && echo "kept until the end (up to $(mb "$NEED") MB; $(mb "$FREE") MB free)" \
  || echo "deleted between tools, then ${SETTLE_S:-65} s of settling ($(mb "$FREE") MB free, $(mb "$NEED") MB needed to keep them)")" >&2
echo "== large image: $NL layers, $(mb "$BIG_C") MB compressed, $(mb "$BIG_U") MB uncompressed, $BIG_N entries (files, dirs, links) in the rootfs, $LAYER_ENTRIES entries in the layer tars" >&2
cat "$R/layers.txt" >&2
echo "== small image: busybox-static rootfs, 1 layer, $(mb "$BB_C") MB compressed, $(mb "$BB_U") MB uncompressed, $BB_N entries" >&2

# ---------- the commands ----------
# cmd_big TOOL / cmd_small TOOL: the timed command; out_* its output dir; prep_* the prepare
LQ=$(printf '%q ' "${LAYERS[@]}")
cmd_big() {
  case $1 in
    tar)   echo "for f in $LQ; do tar -xzf \"\$f\" -C $O/tar || exit 1; done" ;;
    moat)  echo "for f in $LQ; do $MOAT --root $O/moat import \"\$f\" >/dev/null || exit 1; done" ;;
    moat-load) echo "$MOAT --root $O/moat-load load -i $X/oci-big >/dev/null" ;;
    moat-load-tar) echo "$MOAT --root $O/moat-load-tar load -i $X/oci-big.tar >/dev/null" ;;
    umoci) echo "umoci unpack --image $X/oci-big:big $O/umoci >/dev/null" ;;
    zcat)  echo "for f in $LQ; do gzip -dc \"\$f\" >/dev/null || exit 1; done" ;;
    tar2)  cmd_big tar ;;
  esac
}
# the timed tools' binaries, read back by --prepare after it drops the page cache
BINS=$(printf '%q ' "$(readlink -f "$MOAT")" $(command -v umoci tar gzip | xargs -r readlink -f))
# aside DIR: the shell words that move DIR into the trash, if it exists
aside() { echo "if [ -e $1 ]; then mv $1 $T/\$(basename $1).\$(date +%s%N); fi"; }
prep_big() {
  local warm="cat $LQ $BINS >/dev/null" fresh=true
  [ "$1" = moat-load-tar ] && warm="$warm && cat $X/oci-big.tar >/dev/null"
  [ "${FRESH_MEMORY:-1}" = 1 ] && fresh="echo 3 > /proc/sys/vm/drop_caches"
  case $1 in
    tar|tar2) echo "$(aside "$O/tar") && sync && $fresh && $warm && mkdir $O/tar" ;;
    *)        echo "$(aside "$O/$1") && sync && $fresh && $warm" ;;
  esac
}
cmd_small() {
  case $1 in
    tar)   echo "tar -xzf $X/bb.tar.gz -C $O/s-tar" ;;
    moat)  echo "$MOAT --root $O/s-moat import $X/bb.tar.gz" ;;
    moat-load) echo "$MOAT --root $O/s-moat-load load -i $X/oci-bb" ;;
    moat-load-tar) echo "$MOAT --root $O/s-moat-load-tar load -i $X/oci-bb.tar" ;;
    umoci) echo "umoci unpack --image $X/oci-bb:bb $O/s-umoci" ;;
  esac
}
prep_small() { # run by hyperfine -N: no shell unless asked for
  case $1 in
    tar) echo "bash -c '$(aside "$O/s-tar") && cat $X/bb.tar.gz >/dev/null && sync && mkdir $O/s-tar'" ;;
    *)   echo "bash -c '$(aside "$O/s-$1") && cat $X/bb.tar.gz >/dev/null && sync'" ;;
  esac
}
# empty_trash: between tools, move the previous outputs into the trash (KEEP_OUTPUTS=1), or
# delete them and wait SETTLE_S for ext4's recently-deleted window to pass (see the header)
empty_trash() {
  local d
  if [ "$KEEP_OUTPUTS" = 1 ]; then
    for d in "$O"/*; do [ -e "$d" ] && mv "$d" "$T/$(basename "$d").$(date +%s%N)"; done; sync
  elif [ -n "$(find "$T" "$O" -mindepth 1 -maxdepth 1 | head -1)" ]; then
    rm -rf "${T:?}"/* "$O"/*; sync; sleep "${SETTLE_S:-65}"
  fi
}

# listing DIR...: one sorted line per entry (path, type, size of non-directories, mode, owner,
# mtime, link target), the union over the DIRs
listing() {
  local d
  for d in "$@"; do
    find "$d" -mindepth 1 -printf '%P|%y|%s|%m|%U:%G|%T@|%l\n' | awk -F'|' -v OFS='|' '$2=="d"{$3="-"} {print}'
  done | sort -u
}

# check SIZE TOOL: after one unpack, the tree (trees) must have the expected entries
check() {
  local size=$1 tool=$2 got want dirs d what
  case $size/$tool in
    big/tar*)    dirs=("$O/tar") ;;
    big/umoci)   dirs=("$O/umoci/rootfs") ;;
    big/moat*)   dirs=("$O/$tool"/image/snapshots/*) ;;
    small/tar)   dirs=("$O/s-tar") ;;
    small/umoci) dirs=("$O/s-umoci/rootfs") ;;
    small/moat*) dirs=("$O/s-$tool"/image/snapshots/*) ;;
    */zcat)      return 0 ;;
  esac
  [ -d "${dirs[0]}" ] || die "$size/$tool: no output tree (${dirs[0]})"
  if [ "${tool#moat}" != "$tool" ]; then
    local nl=$NL; [ "$size" = small ] && nl=1
    [ "${#dirs[@]}" = "$nl" ] || die "$size/$tool: ${#dirs[@]} snapshots, expected $nl: ${dirs[*]}"
    case " ${dirs[*]}" in *"/tmp-"*) die "$size/$tool: a temporary snapshot was left: ${dirs[*]}" ;; esac
    got=0; for d in "${dirs[@]}"; do got=$((got + $(entries "$d"))); done
    want=$LAYER_ENTRIES; [ "$size" = small ] && want=$BB_N; what="entries in $nl snapshots"
  else
    got=$(entries "${dirs[0]}"); want=$BIG_N; [ "$size" = small ] && want=$BB_N; what=entries
  fi
  [ "$got" = "$want" ] || die "$size/$tool: $got $what, expected $want"
  listing "${dirs[@]}" > "$R/$size.$tool.listing"
  if [ "${CHECK_QUIET:-0}" = 1 ]; then :
  elif [ "$tool" = tar ] || [ "$tool" = tar2 ]; then
    echo "   check $size/$tool: $got $what, as expected" >&2
  elif cmp -s "$R/$size.tar.listing" "$R/$size.$tool.listing"; then
    echo "   check $size/$tool: $got $what, as expected; metadata listing identical to tar's" >&2
  else
    local n; n=$(diff "$R/$size.tar.listing" "$R/$size.$tool.listing" | grep -c '^[<>]')
    echo "   check $size/$tool: $got $what, as expected; NOTE: metadata listing differs from tar's in $n lines, e.g.:" >&2
    diff "$R/$size.tar.listing" "$R/$size.$tool.listing" | grep '^[<>]' | head -6 | sed 's/^/      /' >&2
  fi
}

# bench SIZE TOOL: one checked unpack, then hyperfine; appends to $R/rows.tsv:
# size tool n median mean stddev min max busy
bench() {
  local size=$1 tool=$2 busy t0 t1 secs runs warm cmd prep opts=()
  if [ "$size" = big ]; then cmd=$(cmd_big "$tool"); prep=$(prep_big "$tool")
  else cmd=$(cmd_small "$tool"); prep=$(prep_small "$tool"); opts=(-N); fi
  # the check run (not timed by hyperfine)
  empty_trash
  if [ "$size" = big ]; then sh -c "$prep" || die "prepare $size/$tool failed"
  else eval "$prep" || die "prepare $size/$tool failed"; fi
  t0=$EPOCHREALTIME
  bash -c "$cmd" > "$R/$size.$tool.check.out" 2>&1 || { cat "$R/$size.$tool.check.out" >&2; die "$size/$tool: the unpack failed"; }
  t1=$EPOCHREALTIME
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  check "$size" "$tool"
  if [ "$size" = big ]; then
    runs=${RUNS:-$(awk -v s="$secs" 'BEGIN{print (s < 5 ? 10 : 5)}')}; warm=$WARM
  else runs=$SMALL_RUNS; warm=$SMALL_WARM; fi
  busy=$(quiet_gate)
  echo "-- $size/$tool: check run ${secs} s; hyperfine --runs $runs --warmup $warm; cpu-busy-before=${busy}%, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  hyperfine "${opts[@]}" --runs "$runs" --warmup "$warm" --prepare "$prep" --export-json "$R/$size.$tool.json" \
      -n "$tool" "$cmd" > "$R/$size.$tool.txt" 2>&1 \
    || { cat "$R/$size.$tool.txt" >&2; die "hyperfine $size/$tool failed"; }
  sed -n '/Time (mean/,/Range/p' "$R/$size.$tool.txt" | sed 's/^/   /' >&2
  # the last timed run's output must be complete too
  CHECK_QUIET=1 check "$size" "$tool"
  jq -r --arg s "$size" --arg t "$tool" --arg b "$busy" '.results[0] |
      [$s, $t, (.times|length), .median, .mean, .stddev, .min, .max, $b] | @tsv' "$R/$size.$tool.json" >> "$R/rows.tsv"
}

: > "$R/rows.tsv"
echo "== large image" >&2
for t in tar $MOAT_TOOLS umoci zcat tar2; do bench big "$t"; done
echo "== small image (busybox)" >&2
for t in tar $MOAT_TOOLS umoci; do bench small "$t"; done

# ---------- summary ----------
echo
echo "unpack.sh: $(date -u '+%F %T UTC'); $(nproc) cores, kernel $(uname -r), load now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "large: $NL gzip layers, $(mb "$BIG_C") MB compressed, $(mb "$BIG_U") MB uncompressed, $BIG_N entries; rootfs: $ROOTFS_NOTE"
cat "$R/layers.txt"
echo "small: busybox-static, 1 layer, $(mb "$BB_C") MB compressed, $(mb "$BB_U") MB uncompressed, $BB_N entries"
awk -F'\t' -v bigu="$BIG_U" -v bbu="$BB_U" '
  { size[NR]=$1; tool[NR]=$2; n[NR]=$3; med[NR]=$4; mean[NR]=$5; sd[NR]=$6; min[NR]=$7; max[NR]=$8; busy[NR]=$9
    m[$1 "/" $2]=$4 }
  END {
    printf "\n| image | tool | n | median s | mean s (± sd) | min s | max s | MB/s (uncompressed / median) | rate / tar | umoci median / median | cpu busy before |\n"
    printf "|---|---|---|---|---|---|---|---|---|---|---|\n"
    for (i=1; i<=NR; i++) {
      u = (size[i] == "big") ? bigu : bbu; t = m[size[i] "/tar"]; um = m[size[i] "/umoci"]
      name = (tool[i] == "zcat") ? "gzip -dc > /dev/null (reference)" : (tool[i] == "tar2") ? "tar, again at the end (drift)" : tool[i]
      printf "| %s | %s | %d | %.3f | %.3f ± %.3f | %.3f | %.3f | %.1f | %.2f | %.2f | %s%% |\n", (size[i]=="big" ? "large" : "busybox"), name, n[i],
        med[i], mean[i], sd[i], min[i], max[i], u/1e6/med[i], t/med[i], um/med[i], busy[i]
    }
    printf "\n"
    split("moat moat-load moat-load-tar", ms, " ")
    for (j=1; j<=3; j++) { k = ms[j]
      if (m["big/" k])   printf "large, %s: rate / tar rate = %.2f (target >= 0.90); %.2fx faster than umoci (target >= 5)\n", k, m["big/tar"]/m["big/" k], m["big/umoci"]/m["big/" k]
      if (m["small/" k]) printf "busybox, %s: rate / tar rate = %.2f; %.2fx faster than umoci (target >= 5)\n", k, m["small/tar"]/m["small/" k], m["small/umoci"]/m["small/" k]
    }
  }' "$R/rows.tsv"
