#!/usr/bin/env bash
# One RAM-backed loop device, measured four ways with the same fio jobs:
# the raw device (a 1 GiB region), the kernel's ext4, fuse2fs and kaiofs (a
# 1 GiB file on a freshly made ext4 each time), plus metadata timings on the
# three filesystems. Run as root from anywhere in the repository:
#
#   tests/bench/fs_compare.sh
#
# Environment:
#   RUNTIME       seconds per time-based fio job                  (default: 10)
#   SIZE          size of the RAM-backed device                   (default: 3G)
#   FILE_SIZE     size of the fio region / file                   (default: 1G)
#   META_FILES    files of the create/stat/unlink test            (default: 3000)
#   SCALE_FILES, SCALE_WINDOW   files created in one directory, and the size of
#                 the first and last blocks timed                 (default: 20000, 1000)
#   SYSTEMS       which columns to measure          (default: "raw ext4 fuse2fs kaiofs")
#   KAIOFS_OPTS   extra -o options for kaiofs (it always gets -o stats)
#   FUSE2FS_OPTS  -o options for fuse2fs                          (default: rw)
#   BUILD_DIR     build directory with src/kaiofs                 (default: build)
#   KAIOFS_BIN, KAIOFS_STAT_BIN   explicit binaries (override BUILD_DIR)
#   FIO_SLACK, LAYOUT_LIMIT, META_LIMIT   time limits in seconds: RUNTIME +
#                 FIO_SLACK per fio job, the first write, each metadata test
#                 (default: 60, 300, 600); a job over its limit counts as failed
#   BENCH_OUT     directory for the results: fio JSON, timings, table.txt,
#                 fs_compare.csv, daemon logs (default: a new /tmp/kaiofs-fs-compare.*)
#
# fio: ioengine=libaio direct=1 numjobs=1 fallocate=none. Each target is
# first written once sequentially (1M, iodepth 8; that pass is reported too),
# so the 4k random writes overwrite allocated, written blocks and no read
# hits a hole or an unwritten extent. ext4 is made with Debian's defaults
# plus -E lazy_itable_init=0,lazy_journal_init=0,nodiscard, so the kernel
# runs no background inode-table zeroing and the RAM behind the device stays
# allocated. Metadata, on each filesystem (fs_compare.py): META_FILES empty
# files created in one directory, stat()ed, unlinked, each phase timed (no
# cache is dropped: FUSE has no way to); then SCALE_FILES created in another
# directory, the first and the last SCALE_WINDOW timed (goal for kaiofs:
# last/first < 3). FUSE mounts are checked with e2fsck -fn afterwards.
# The exit status is 1 if any measurement failed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"

BUILD_DIR=${BUILD_DIR:-$ROOT/build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
KAIOFS=${KAIOFS_BIN:-$BUILD_DIR/src/kaiofs}
KAIOFS_STAT=${KAIOFS_STAT_BIN:-$BUILD_DIR/src/kaiofs-stat}
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-3G}
FILE_SIZE=${FILE_SIZE:-1G}
META_FILES=${META_FILES:-3000}
SCALE_FILES=${SCALE_FILES:-20000}
SCALE_WINDOW=${SCALE_WINDOW:-1000}
SYSTEMS=${SYSTEMS:-raw ext4 fuse2fs kaiofs}
KAIOFS_OPTS=${KAIOFS_OPTS:-}
FUSE2FS_OPTS=${FUSE2FS_OPTS:-rw}
# shellcheck disable=SC2054
MKFS_ARGS=(-q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard)
PYTHON=/usr/bin/python3
HELPER=$ROOT/tests/bench/fs_compare.py

# Time limits (seconds) of each step; a FUSE daemon that stops answering
# turns into a timeout here, never into a hang.
FIO_SLACK=${FIO_SLACK:-60}     # on top of RUNTIME for a time-based job
LAYOUT_LIMIT=${LAYOUT_LIMIT:-300} # the first sequential write of FILE_SIZE
META_LIMIT=${META_LIMIT:-600}   # each metadata program
STAT_LIMIT=20                   # kaiofs-stat

# name rw bs iodepth time_based
WORKLOADS=(
    "layout-1M write 1M 8 0"
    "randread-4k randread 4k 32 1"
    "randwrite-4k randwrite 4k 32 1"
    "read-1M read 1M 8 1"
    "write-1M write 1M 8 1"
)

bench_require_root
# shellcheck disable=SC2086
bench_check_systems $SYSTEMS
command -v fio >/dev/null || bench_die "fio not installed (tests/run setup)"
command -v fusermount3 >/dev/null || bench_die "fusermount3 not installed (fuse3)"

if [ -z "${BENCH_OUT:-}" ]; then
    BENCH_OUT=$(mktemp -d /tmp/kaiofs-fs-compare.XXXXXX)
else
    case $BENCH_OUT in /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
    mkdir -p "$BENCH_OUT"
    rm -rf "$BENCH_OUT/fio"
    rm -f "$BENCH_OUT"/*-meta.json "$BENCH_OUT"/*-scale.json "$BENCH_OUT"/kaiofs-stat-*.json \
        "$BENCH_OUT"/notes.txt "$BENCH_OUT"/table.txt "$BENCH_OUT"/fs_compare.csv "$BENCH_OUT"/jobs.txt
fi
mkdir -p "$BENCH_OUT/fio"
printf '%s\n' "${WORKLOADS[@]}" >"$BENCH_OUT/jobs.txt"
: >"$BENCH_OUT/notes.txt"

bench_setup kaiofs-fs-compare
FAILED=()

note() { printf '%s\n' "$*" | tee -a "$BENCH_OUT/notes.txt" >&2; }

# fio_job SYSTEM TARGET NAME RW BS IODEPTH TIMED
fio_job() {
    local sys=$1 target=$2 name=$3 rw=$4 bs=$5 qd=$6 timed=$7
    local out=$BENCH_OUT/fio/$sys-$name.json limit=$LAYOUT_LIMIT rc=0
    local args=(--name="$name" --filename="$target" --size="$FILE_SIZE" --rw="$rw" --bs="$bs"
                --iodepth="$qd" --ioengine=libaio --direct=1 --numjobs=1 --fallocate=none
                --verify_state_save=0 --output-format=json --output="$out")
    if [ "$timed" = 1 ]; then
        args+=(--time_based --runtime="$RUNTIME")
        limit=$((RUNTIME + FIO_SLACK))
    fi
    local what="$FILE_SIZE once"
    [ "$timed" = 1 ] && what="${RUNTIME}s"
    bench_log "$sys: fio $name (rw=$rw bs=$bs iodepth=$qd, $what)"
    : >"$out"
    bench_run "$limit" fio "${args[@]}" 2>"$BENCH_OUT/fio/$sys-$name.err" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note "$sys: fio $name did not finish within ${limit}s (killed): fio ${args[*]}"
        return 1
    elif [ "$rc" -ne 0 ]; then
        note "$sys: fio $name failed (exit $rc): fio ${args[*]}"
        sed 's/^/    /' "$BENCH_OUT/fio/$sys-$name.err" | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    [ -s "$BENCH_OUT/fio/$sys-$name.err" ] || rm -f "$BENCH_OUT/fio/$sys-$name.err"
}

# fio_all SYSTEM TARGET [HOOK]: every workload; HOOK NAME runs after each job.
fio_all() {
    local sys=$1 target=$2 hook=${3:-} w
    for w in "${WORKLOADS[@]}"; do
        # shellcheck disable=SC2086
        fio_job "$sys" "$target" $w || return 1
        [ -z "$hook" ] || "$hook" "${w%% *}" || return 1
    done
}

# meta_all SYSTEM MNT: create/stat/unlink, then the many-files directory.
meta_all() {
    local sys=$1 mnt=$2 kind rc
    for kind in meta scale; do
        local out=$BENCH_OUT/$sys-$kind.json args=("$mnt" "$META_FILES")
        [ "$kind" = meta ] || args=("$mnt" "$SCALE_FILES" "$SCALE_WINDOW")
        bench_log "$sys: $kind test (${args[*]:1})"
        : >"$out"
        rc=0
        bench_run "$META_LIMIT" "$PYTHON" "$HELPER" "$kind" "${args[@]}" >"$out" 2>"$BENCH_OUT/$sys-$kind.err" || rc=$?
        if [ "$rc" -ne 0 ]; then
            [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note "$sys: the $kind test did not finish within ${META_LIMIT}s (killed)"
            note "$sys: the $kind test failed (exit $rc): $PYTHON $HELPER $kind ${args[*]}"
            sed 's/^/    /' "$BENCH_OUT/$sys-$kind.err" | tee -a "$BENCH_OUT/notes.txt" >&2
            return 1
        fi
        rm -f "$BENCH_OUT/$sys-$kind.err"
    done
}

# odirect_probe SYSTEM MNT: record whether O_DIRECT works on the mount.
odirect_probe() {
    local sys=$1 mnt=$2 msg rc=0
    msg=$(bench_run 60 "$PYTHON" "$HELPER" odirect "$mnt" 2>&1) || rc=$?
    note "$sys: $msg"
    return "$rc"
}

fresh_ext4() {
    bench_log "mkfs.ext4 ${MKFS_ARGS[*]} $BENCH_DEV"
    mkfs.ext4 "${MKFS_ARGS[@]}" "$BENCH_DEV" >"$BENCH_OUT/mkfs.log" 2>&1 || {
        note "mkfs.ext4 failed:"; cat "$BENCH_OUT/mkfs.log" >&2; return 1; }
}

# fsck_after SYSTEM: e2fsck -fn of the device once the mount is gone.
fsck_after() {
    local sys=$1 rc=0
    e2fsck -fn "$BENCH_DEV" >"$BENCH_OUT/$sys-e2fsck.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        note "$sys: e2fsck -fn after the unmount: clean"
        rm -f "$BENCH_OUT/$sys-e2fsck.log"
    else
        note "$sys: e2fsck -fn after the unmount exits $rc (output in $BENCH_OUT/$sys-e2fsck.log):"
        sed 's/^/    /' "$BENCH_OUT/$sys-e2fsck.log" | head -40 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
}

run_raw() {
    fio_all raw "$BENCH_DEV"
}

run_ext4() {
    local mnt=$BENCH_TMP/mnt-ext4
    mkdir -p "$mnt"
    fresh_ext4 || return 1
    bench_kernel_mount "$BENCH_DEV" "$mnt" -t ext4 || { note "ext4: mount failed"; return 1; }
    note "ext4: mount options: $(awk -v m="$mnt" '$5 == m { print $6 "," $NF }' /proc/self/mountinfo)"
    odirect_probe ext4 "$mnt" || return 1
    fio_all ext4 "$mnt/fio.dat" || return 1
    rm -f "$mnt/fio.dat"
    meta_all ext4 "$mnt" || return 1
    bench_kernel_umount || { note "ext4: umount failed (detached lazily)"; return 1; }
    fsck_after ext4
}

run_fuse2fs() {
    local mnt=$BENCH_TMP/mnt-fuse2fs opts=$FUSE2FS_OPTS st=0
    mkdir -p "$mnt"
    fresh_ext4 || return 1
    bench_log "mount: fuse2fs -f $BENCH_DEV $mnt -o $opts"
    bench_fuse_start "$mnt" "$BENCH_OUT/fuse2fs.log" fuse2fs -f "$BENCH_DEV" "$mnt" -o "$opts" || {
        note "fuse2fs: mount failed"; return 1; }
    if ! odirect_probe fuse2fs "$mnt"; then
        # Older kernels refuse O_DIRECT on FUSE files unless the daemon
        # asks for direct_io; try again that way.
        bench_fuse_stop 120 || true
        opts=$opts,direct_io
        bench_log "mount: fuse2fs -f $BENCH_DEV $mnt -o $opts"
        bench_fuse_start "$mnt" "$BENCH_OUT/fuse2fs.log" fuse2fs -f "$BENCH_DEV" "$mnt" -o "$opts" || {
            note "fuse2fs: mount with direct_io failed"; return 1; }
        odirect_probe fuse2fs "$mnt" || return 1
    fi
    note "fuse2fs: mounted with -o $opts (mount options: $(awk -v m="$mnt" '$5 == m { print $6 "," $NF }' /proc/self/mountinfo));" \
         "fio runs with direct=1 on it"
    fio_all fuse2fs "$mnt/fio.dat" || return 1
    rm -f "$mnt/fio.dat"
    meta_all fuse2fs "$mnt" || return 1
    bench_log "unmount fuse2fs"
    bench_fuse_stop 120 || st=$?
    if [ "$st" -ne 0 ]; then
        note "fuse2fs: unmount or daemon exit failed (status $st); its output:"
        sed 's/^/    /' "$BENCH_OUT/fuse2fs.log" | tail -20 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    fsck_after fuse2fs
}

kaiofs_stat_after() {
    local mnt=$BENCH_TMP/mnt-kaiofs
    case $1 in
        randwrite-4k) kaiofs_stat "$mnt" stat-4k ;;
        write-1M) kaiofs_stat "$mnt" stat-fio ;;
    esac
}

kaiofs_stat() {
    local mnt=$1 kind=$2 rc=0
    bench_run "$STAT_LIMIT" "$KAIOFS_STAT" --json "$mnt" >"$BENCH_OUT/kaiofs-$kind.json" || rc=$?
    [ "$rc" -eq 0 ] || { note "kaiofs: kaiofs-stat --json $mnt failed (exit $rc)"; return 1; }
}

run_kaiofs() {
    local mnt=$BENCH_TMP/mnt-kaiofs opts="stats${KAIOFS_OPTS:+,$KAIOFS_OPTS}" st=0
    mkdir -p "$mnt"
    fresh_ext4 || return 1
    bench_log "mount: $KAIOFS -f -o $opts $BENCH_DEV $mnt"
    bench_fuse_start "$mnt" "$BENCH_OUT/kaiofs.log" "$KAIOFS" -f -o "$opts" "$BENCH_DEV" "$mnt" || {
        note "kaiofs: mount failed"; return 1; }
    odirect_probe kaiofs "$mnt" || return 1
    fio_all kaiofs "$mnt/fio.dat" kaiofs_stat_after || return 1
    rm -f "$mnt/fio.dat"
    meta_all kaiofs "$mnt" || return 1
    kaiofs_stat "$mnt" stat-end || return 1
    bench_log "unmount kaiofs"
    bench_fuse_stop 120 || st=$?
    if [ "$st" -ne 0 ]; then
        note "kaiofs: unmount or daemon exit failed (status $st); its output:"
        sed 's/^/    /' "$BENCH_OUT/kaiofs.log" | tail -20 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    # Its own messages start with "kaiofs: " (the statistics table does not).
    if grep -q '^kaiofs: ' "$BENCH_OUT/kaiofs.log"; then
        note "kaiofs: messages of the daemon:"
        grep '^kaiofs: ' "$BENCH_OUT/kaiofs.log" | head -20 | sed 's/^/    /' |
            tee -a "$BENCH_OUT/notes.txt" >&2
    fi
    fsck_after kaiofs
}

bench_ram_device "$SIZE"
bench_log "RAM-backed device $BENCH_DEV ($SIZE, $BENCH_IMG); results in $BENCH_OUT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for s in $SYSTEMS; do
    if ! "run_$s"; then
        FAILED+=("$s")
        note "$s: measurements stopped at the first failure"
        # Whatever is still mounted goes before the device is reused.
        bench_stop "$BENCH_CHILD"
        bench_fuse_abort
        bench_kernel_umount || true
    fi
done

{
    echo
    echo "fio $(fio --version | sed 's/^fio-//'), kernel $(uname -r), $(nproc) CPUs," \
         "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
    echo "device: $SIZE file in /dev/shm on a loop device (direct-io=on); fio region/file $FILE_SIZE," \
         "${RUNTIME}s per time-based job; mkfs.ext4 ${MKFS_ARGS[*]:2}"
    echo "kaiofs -o stats${KAIOFS_OPTS:+,$KAIOFS_OPTS}; fuse2fs -o $FUSE2FS_OPTS"
    echo
} | tee "$BENCH_OUT/table.txt"
"$PYTHON" "$HELPER" report "$BENCH_OUT"
if [ -s "$BENCH_OUT/notes.txt" ]; then
    echo
    echo "notes:"
    sed 's/^/  /' "$BENCH_OUT/notes.txt"
fi | tee -a "$BENCH_OUT/table.txt"
echo
echo "results: $BENCH_OUT (table.txt, fs_compare.csv, fio/*.json, *-meta.json, *-scale.json, logs)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}" >&2
    exit 1
fi
