#!/usr/bin/env bash
# Issue 4 targets and a scaling study of kaiofs, with each of its engines
# (kaiofs: -o engine=aio, kaiofs-uring: -o engine=uring), against the raw
# device, the kernel's ext4 and fuse2fs, in one run on one RAM-backed loop
# device, with fuse-null (tests/bench/fuse_null.c: FUSE with nothing behind
# it) as the cost of the FUSE round trip alone. Run as root from anywhere in the
# repository:
#
#   tests/bench/scaling.sh                        # about 25 min (RUNTIME=5)
#   QUICK=1 RUNTIME=1 tests/bench/scaling.sh      # smoke run, about 2 min
#
# Phase 1, the targets (printed as soon as they are measured, before phase 2
# starts). On each system, fio libaio direct=1 on a FILE_SIZE file (the raw
# device: its first FILE_SIZE bytes), numjobs=1:
#   1 MiB write into a new, empty file, iodepth 8 (FILE_SIZE once; it also
#     lays the file out, so later jobs never read holes or unwritten extents)
#   4 KiB random read and 4 KiB random write (overwrite), iodepth 32
#   1 MiB sequential read and write (overwrite), iodepth 8
# then create, stat and unlink of META_FILES files in one directory (each call
# timed; with DROP_CACHES=1 the kernel's caches are synced and dropped before
# each phase, so stat and unlink reach the filesystem: on a FUSE mount the
# kernel would otherwise answer stat from its own cache).
# kaiofs is checked against: 4k random read >= 0.6 x raw and >= 4 x fuse2fs;
# 4k random write >= 0.5 x raw and >= 8 x fuse2fs; 1M read and write >= 0.7 x
# raw; 1M write into a new file >= 0.5 x raw (the same job on the raw
# device); create, stat, unlink each >= 5 x fuse2fs, and stat >= 100k/s.
# fuse-null runs the same jobs on a file it keeps no data of (reads are
# zeros) and the same metadata phases on names it keeps in memory. Every job
# and phase also records the busy CPU time of the whole machine and its
# context switches (/proc/stat before and after); the second table of
# targets.txt gives them per operation, and for the fio rows the ratio to the
# raw device that kaiofs's CPU time allows, and the one left to a filesystem
# whose every I/O costs a fuse-null round trip plus a raw device I/O. A third
# table puts the two engines side by side: each row's value and CPU time per
# operation (per MiB on the 1 MiB rows) with aio and with io_uring, their
# ratios, and whether io_uring is at least equal to aio (and cheaper in CPU
# per MiB on 1 MiB I/O).
#
# Phase 2, the scaling study, on a fresh filesystem per system (a new file,
# laid out as above). Three one-axis sweeps through a common centre point
# (4k, iodepth 32, 1 job), each for randread and randwrite:
#   iodepth QD_LIST (1 4 16 32 64 128) at block sizes QD_SWEEP_BS (4k 1M), 1 job
#   block size BS_LIST (4k 16k 64k 256k 1M) at iodepth BS_QD (32), 1 job
#   numjobs JOBS_LIST (1 2 4) at JOBS_BS (4k), iodepth BS_QD per job
# Points shared between sweeps run once: 34 fio points per system by default.
# Each point records the machine's CPU time per operation too (scaling.csv,
# and the CPU table of sweeps.txt).
# Then creates of SCALE_FILES (100,000) empty files in one directory, timed
# per SCALE_WINDOW (10,000); each system gets SCALE_LIMIT seconds (fuse2fs's
# creates slow down as its directory grows) and the result records how far
# it got.
#
# Time at the defaults: per system about 40 points x (RUNTIME + ~1 s start-up)
# plus two 1 GiB writes, metadata, mkfs and e2fsck: 4-5 min, so 25-30 min for
# the six systems, plus up to SCALE_LIMIT (180 s) for each filesystem's
# creates: 30-45 min in all.
#
# Output: BENCH_OUT (default: a new /tmp/kaiofs-scaling.YYYYmmdd-HHMMSS) holds
# points.tsv (one line per measurement), the fio JSON files, scaling.csv (one
# row per fio job, per metadata phase and per create window: system,
# workload, rw, bs, iodepth, jobs, IOPS, MB/s, p50 and p99 latency), the
# PNG charts (IOPS vs iodepth, MB/s vs block size, CPU time per operation vs
# block size, IOPS vs jobs, create rate vs directory size), targets.txt,
# sweeps.txt, notes.txt and the daemon logs.
# stdout: the target table first, then the sweep tables, then the paths.
# Every FUSE mount and the kernel mount is followed by e2fsck -fn.
#
# Caveats. The device is written once in full before anything is measured
# (tmpfs is slow on the first write of a page). fuse2fs runs as root, so it
# needs no -o fakeroot; it accepts O_DIRECT opens (checked, and mounted again
# with -o direct_io where that fails), but it opens the device itself without
# O_DIRECT, so its file data goes through the device's page cache while the
# other three bypass every cache. The machine's load changes results: the
# load average at the start and end is printed; compare runs with RUNTIME >= 5.
#
# Environment:
#   RUNTIME       seconds per time-based fio job              (default: 5; QUICK: 1)
#   QUICK=1       tiny grid for a smoke run: FILE_SIZE 256M, SIZE 1G, iodepth 1 32,
#                 bs 4k 64k 1M, jobs 1 2, 3000 metadata files, 10,000 creates
#   SIZE          size of the RAM-backed device               (default: 3G)
#   FILE_SIZE     fio file / raw region                        (default: 1G)
#   SYSTEMS       systems of phase 1   (default: "raw ext4 fuse2fs fusenull kaiofs kaiofs-uring")
#   SCALE_SYSTEMS systems of phase 2   (default: "raw fusenull kaiofs kaiofs-uring ext4 fuse2fs")
#   PHASES        "targets scaling" (default), or just one of them
#   QD_LIST, QD_SWEEP_BS, BS_LIST, BS_QD, JOBS_LIST, JOBS_BS, RWS   the sweeps
#   META_FILES    files of the create/stat/unlink test         (default: 3000)
#   DROP_CACHES   1: drop the kernel's caches before each metadata phase (default: 1)
#   SCALE_FILES, SCALE_WINDOW, SCALE_LIMIT   creates in one directory
#                                              (default: 100000, 10000, 180 s)
#   KAIOFS_OPTS   extra -o options for kaiofs (it always gets -o stats, and
#                 engine=aio or engine=uring)
#   FUSE2FS_OPTS  -o options for fuse2fs (default: rw; direct_io is added if
#                 O_DIRECT does not work without it)
#   BUILD_DIR     build directory with src/kaiofs             (default: build)
#   KAIOFS_BIN, KAIOFS_STAT_BIN, FUSE_NULL_BIN   explicit binaries (override
#                 BUILD_DIR)
#   FIO_SLACK, LAYOUT_LIMIT, META_LIMIT   time limits in seconds: RUNTIME +
#                 FIO_SLACK per fio job, the first write, the metadata test
#                 (default: 60, 300, 600); a job over its limit counts as failed
#   BENCH_OUT     output directory (created; earlier results in it are replaced)
# The exit status is 1 if any measurement failed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNTIME=${RUNTIME:-1}
    SIZE=${SIZE:-1G}
    FILE_SIZE=${FILE_SIZE:-256M}
    QD_LIST=${QD_LIST:-1 32}
    BS_LIST=${BS_LIST:-4k 64k 1M}
    JOBS_LIST=${JOBS_LIST:-1 2}
    SCALE_FILES=${SCALE_FILES:-10000}
    SCALE_WINDOW=${SCALE_WINDOW:-2000}
    SCALE_LIMIT=${SCALE_LIMIT:-30}
fi
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
KAIOFS=${KAIOFS_BIN:-$BUILD_DIR/src/kaiofs}
KAIOFS_STAT=${KAIOFS_STAT_BIN:-$BUILD_DIR/src/kaiofs-stat}
FUSE_NULL=${FUSE_NULL_BIN:-$BUILD_DIR/tests/bench/fuse-null}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-3G}
FILE_SIZE=${FILE_SIZE:-1G}
SYSTEMS=${SYSTEMS:-raw ext4 fuse2fs fusenull kaiofs kaiofs-uring}
SCALE_SYSTEMS=${SCALE_SYSTEMS:-raw fusenull kaiofs kaiofs-uring ext4 fuse2fs}
PHASES=${PHASES:-targets scaling}
RWS=${RWS:-randread randwrite}
QD_LIST=${QD_LIST:-1 4 16 32 64 128}
QD_SWEEP_BS=${QD_SWEEP_BS:-4k 1M}
BS_LIST=${BS_LIST:-4k 16k 64k 256k 1M}
BS_QD=${BS_QD:-32}
JOBS_LIST=${JOBS_LIST:-1 2 4}
JOBS_BS=${JOBS_BS:-4k}
META_FILES=${META_FILES:-3000}
DROP_CACHES=${DROP_CACHES:-1}
SCALE_FILES=${SCALE_FILES:-100000}
SCALE_WINDOW=${SCALE_WINDOW:-10000}
SCALE_LIMIT=${SCALE_LIMIT:-180}
KAIOFS_OPTS=${KAIOFS_OPTS:-}
FUSE2FS_OPTS=${FUSE2FS_OPTS:-rw}
FIO_SLACK=${FIO_SLACK:-60}
LAYOUT_LIMIT=${LAYOUT_LIMIT:-300}
META_LIMIT=${META_LIMIT:-600}
STAT_LIMIT=20
# shellcheck disable=SC2054
MKFS_ARGS=(-q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard)
PYTHON=/usr/bin/python3
HELPER=$ROOT/tests/bench/scaling.py
FS_HELPER=$ROOT/tests/bench/fs_compare.py

# name rw bs iodepth time_based: the jobs of phase 1, in this order.
TARGET_JOBS=(
    "layout-1M write 1M 8 0"
    "randread-4k randread 4k 32 1"
    "randwrite-4k randwrite 4k 32 1"
    "read-1M read 1M 8 1"
    "write-1M write 1M 8 1"
)

# The distinct "rw bs iodepth jobs" points of phase 2.
SWEEP=()
declare -A SWEEP_SEEN=()
sweep_add() {
    [ -z "${SWEEP_SEEN[$*]:-}" ] || return 0
    SWEEP_SEEN[$*]=1
    SWEEP+=("$*")
}
for rw in $RWS; do
    for bs in $QD_SWEEP_BS; do
        for qd in $QD_LIST; do sweep_add "$rw" "$bs" "$qd" 1; done
    done
    for bs in $BS_LIST; do sweep_add "$rw" "$bs" "$BS_QD" 1; done
    for jobs in $JOBS_LIST; do sweep_add "$rw" "$JOBS_BS" "$BS_QD" "$jobs"; done
done

bench_require_root
# shellcheck disable=SC2086
bench_check_systems $SYSTEMS $SCALE_SYSTEMS
for p in $PHASES; do
    case $p in targets | scaling) ;; *) bench_die "unknown phase '$p' (targets scaling)" ;; esac
done
command -v fio >/dev/null || bench_die "fio not installed (tests/run setup)"
command -v fusermount3 >/dev/null || bench_die "fusermount3 not installed (fuse3)"
"$PYTHON" -c 'import matplotlib' 2>/dev/null ||
    echo "warning: no matplotlib for $PYTHON (apt-get install python3-matplotlib): no charts" >&2

if [ -z "${BENCH_OUT:-}" ]; then
    BENCH_OUT=$(mktemp -d "/tmp/kaiofs-scaling.$(date +%Y%m%d-%H%M%S).XXXX")
else
    case $BENCH_OUT in /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
    mkdir -p "$BENCH_OUT"
    rm -rf "$BENCH_OUT/fio" "$BENCH_OUT/meta"
    rm -f "$BENCH_OUT"/{points.tsv,header.txt,notes.txt,targets.txt,sweeps.txt,scaling.csv} \
        "$BENCH_OUT"/*.png "$BENCH_OUT"/*.log "$BENCH_OUT"/kaiofs-stat-*.json
fi
mkdir -p "$BENCH_OUT/fio" "$BENCH_OUT/meta"
: >"$BENCH_OUT/points.tsv"
: >"$BENCH_OUT/notes.txt"

bench_setup kaiofs-scaling
FAILED=()
TARGET=""   # what fio runs on: the device or a file on the current mount
MNT=""      # the current mount of a filesystem

note() { printf '%s\n' "$*" | tee -a "$BENCH_OUT/notes.txt" >&2; }

# record KIND PHASE SYSTEM WORKLOAD RW BS IODEPTH JOBS FILE STATUS
record() {
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$BENCH_OUT/points.tsv"
}

# fio_point PHASE SYSTEM WORKLOAD RW BS IODEPTH JOBS TIMED
fio_point() {
    local phase=$1 sys=$2 name=$3 rw=$4 bs=$5 qd=$6 jobs=$7 timed=$8 rc=0
    local base=$BENCH_OUT/fio/$phase-$sys-$name-$rw-$bs-qd$qd-j$jobs limit=$LAYOUT_LIMIT
    local args=(--name="$name" --filename="$TARGET" --size="$FILE_SIZE" --rw="$rw" --bs="$bs"
                --iodepth="$qd" --numjobs="$jobs" --group_reporting --ioengine=libaio --direct=1
                --fallocate=none --verify_state_save=0 --output-format=json --output="$base.json")
    local what="$FILE_SIZE once"
    if [ "$timed" = 1 ]; then
        args+=(--time_based --runtime="$RUNTIME")
        limit=$((RUNTIME + FIO_SLACK))
        what="${RUNTIME}s"
    fi
    bench_log "$phase/$sys: fio $name rw=$rw bs=$bs iodepth=$qd numjobs=$jobs ($what)"
    : >"$base.json"
    "$PYTHON" "$HELPER" cpu >"$base.cpu"
    bench_run "$limit" fio "${args[@]}" 2>"$base.err" || rc=$?
    "$PYTHON" "$HELPER" cpu >>"$base.cpu"
    record fio "$phase" "$sys" "$name" "$rw" "$bs" "$qd" "$jobs" "$base.json" "$rc"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note "$sys: fio did not finish within ${limit}s (killed): fio ${args[*]}"
        return 1
    elif [ "$rc" -ne 0 ]; then
        note "$sys: fio failed (exit $rc): fio ${args[*]}"
        sed 's/^/    /' "$base.err" | tail -20 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    [ -s "$base.err" ] || rm -f "$base.err"
}

# helper_point KIND PHASE SYSTEM LIMIT ARGS...: run scaling.py KIND ARGS...
helper_point() {
    local kind=$1 phase=$2 sys=$3 limit=$4 rc=0
    shift 4
    local out=$BENCH_OUT/meta/$phase-$sys-$kind.json
    bench_log "$phase/$sys: $kind $*"
    : >"$out"
    bench_run "$limit" "$PYTHON" "$HELPER" "$kind" "$@" >"$out" 2>"$out.err" || rc=$?
    record "$kind" "$phase" "$sys" "$kind" - - - - "$out" "$rc"
    if [ "$rc" -ne 0 ]; then
        { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && note "$sys: $kind did not finish within ${limit}s (killed)"
        note "$sys: $kind failed (exit $rc): $PYTHON $HELPER $kind $*"
        sed 's/^/    /' "$out.err" | tail -20 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    cat "$out.err" >&2
    rm -f "$out.err"
}

fresh_ext4() {
    bench_log "mkfs.ext4 ${MKFS_ARGS[*]} $BENCH_DEV"
    mkfs.ext4 "${MKFS_ARGS[@]}" "$BENCH_DEV" >"$BENCH_OUT/mkfs.log" 2>&1 || {
        note "mkfs.ext4 failed:"; cat "$BENCH_OUT/mkfs.log" >&2; return 1; }
}

# odirect_probe SYSTEM: does O_DIRECT work on the current mount?
odirect_probe() {
    local msg rc=0
    msg=$(bench_run 60 "$PYTHON" "$FS_HELPER" odirect "$MNT" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || note "$1: $msg"
    return "$rc"
}

mount_opts() {
    awk -v m="$1" '$5 == m { print $6 "," $NF }' /proc/self/mountinfo
}

# sys_up PHASE SYSTEM: a fresh filesystem, mounted (not for raw); sets
# TARGET and MNT.
sys_up() {
    local phase=$1 sys=$2 log
    MNT=$BENCH_TMP/mnt-$sys
    TARGET=$MNT/fio.dat
    log=$BENCH_OUT/$phase-$sys.log
    case $sys in
        raw)
            TARGET=$BENCH_DEV
            MNT=""
            return 0 ;;
    esac
    mkdir -p "$MNT"
    if [ "$sys" = fusenull ]; then
        bench_fuse_start "$MNT" "$log" "$FUSE_NULL" -f "$MNT" || {
            note "fusenull: mount failed"; return 1; }
        # no O_DIRECT probe: it reads back what it wrote, and fuse-null keeps no data
        [ "$phase" = scaling ] || note "$sys: mount options $(mount_opts "$MNT")"
        return 0
    fi
    fresh_ext4 || return 1
    case $sys in
        ext4)
            bench_kernel_mount "$BENCH_DEV" "$MNT" -t ext4 || { note "ext4: mount failed"; return 1; } ;;
        kaiofs | kaiofs-uring)
            local opts="stats,engine=$(kaiofs_engine "$sys")${KAIOFS_OPTS:+,$KAIOFS_OPTS}"
            bench_fuse_start "$MNT" "$log" "$KAIOFS" -f -o "$opts" "$BENCH_DEV" "$MNT" || {
                note "$sys: mount failed"; return 1; } ;;
        fuse2fs)
            local opts=$FUSE2FS_OPTS
            bench_fuse_start "$MNT" "$log" fuse2fs -f "$BENCH_DEV" "$MNT" -o "$opts" || {
                note "fuse2fs: mount failed"; return 1; }
            if ! odirect_probe fuse2fs; then
                # Some kernels refuse O_DIRECT on a FUSE file unless the
                # daemon asks for direct_io.
                bench_fuse_stop 120 || true
                opts=$opts,direct_io
                note "fuse2fs: mounting again with -o $opts"
                bench_fuse_start "$MNT" "$log" fuse2fs -f "$BENCH_DEV" "$MNT" -o "$opts" || {
                    note "fuse2fs: mount with direct_io failed"; return 1; }
            fi ;;
    esac
    odirect_probe "$sys" || return 1
    [ "$phase" = scaling ] || note "$sys: mount options $(mount_opts "$MNT")"
}

# kaiofs_engine SYSTEM: the -o engine= of a kaiofs system
kaiofs_engine() {
    case $1 in kaiofs-uring) echo uring ;; *) echo aio ;; esac
}

# kaiofs_stat PHASE SYSTEM
kaiofs_stat() {
    local rc=0 json=$BENCH_OUT/kaiofs-stat-$1-$(kaiofs_engine "$2").json
    bench_run "$STAT_LIMIT" "$KAIOFS_STAT" --json "$MNT" >"$json" || rc=$?
    [ "$rc" -eq 0 ] || note "$2: kaiofs-stat --json $MNT failed (exit $rc)"
    return "$rc"
}

# sys_down PHASE SYSTEM: unmount, check the daemon's exit and run e2fsck -fn.
sys_down() {
    local phase=$1 sys=$2 st=0 log=$BENCH_OUT/$1-$2.log rc=0
    case $sys in
        raw) return 0 ;;
        ext4)
            bench_kernel_umount || { note "ext4: umount failed (detached lazily)"; return 1; } ;;
        fusenull)
            bench_fuse_stop 120 || { note "fusenull: unmount or daemon exit failed"; return 1; }
            return 0 ;;
        kaiofs | kaiofs-uring | fuse2fs)
            [ "$sys" = fuse2fs ] || kaiofs_stat "$phase" "$sys" || return 1
            bench_log "$phase/$sys: unmount"
            bench_fuse_stop 120 || st=$?
            if [ "$st" -ne 0 ]; then
                note "$sys: unmount or daemon exit failed (status $st); its output:"
                sed 's/^/    /' "$log" | tail -20 | tee -a "$BENCH_OUT/notes.txt" >&2
                return 1
            fi
            # kaiofs's own messages start with "kaiofs: " (its statistics do not).
            if [ "$sys" != fuse2fs ] && grep -q '^kaiofs: ' "$log"; then
                note "$sys: messages of the daemon ($phase):"
                grep '^kaiofs: ' "$log" | head -20 | sed 's/^/    /' | tee -a "$BENCH_OUT/notes.txt" >&2
            fi ;;
    esac
    e2fsck -fn "$BENCH_DEV" >"$BENCH_OUT/$phase-$sys-e2fsck.log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        note "$sys: e2fsck -fn after the $phase phase exits $rc ($BENCH_OUT/$phase-$sys-e2fsck.log):"
        sed 's/^/    /' "$BENCH_OUT/$phase-$sys-e2fsck.log" | head -40 | tee -a "$BENCH_OUT/notes.txt" >&2
        return 1
    fi
    rm -f "$BENCH_OUT/$phase-$sys-e2fsck.log"
}

phase_targets() {
    local sys=$1 w
    sys_up targets "$sys" || return 1
    for w in "${TARGET_JOBS[@]}"; do
        # shellcheck disable=SC2086
        set -- $w
        fio_point targets "$sys" "$1" "$2" "$3" "$4" 1 "$5" || return 1
    done
    if [ -n "$MNT" ]; then
        rm -f "$TARGET"
        helper_point meta targets "$sys" "$META_LIMIT" "$MNT" "$META_FILES" "$DROP_CACHES" || return 1
    fi
    sys_down targets "$sys"
}

phase_scaling() {
    local sys=$1 p
    sys_up scaling "$sys" || return 1
    # shellcheck disable=SC2086
    fio_point scaling "$sys" layout-1M write 1M 8 1 0 || return 1
    for p in "${SWEEP[@]}"; do
        # shellcheck disable=SC2086
        fio_point scaling "$sys" sweep $p 1 || return 1
    done
    if [ -n "$MNT" ]; then
        rm -f "$TARGET"
        helper_point dircreate scaling "$sys" $((SCALE_LIMIT + 300)) \
            "$MNT" "$SCALE_FILES" "$SCALE_WINDOW" "$SCALE_LIMIT" || return 1
    fi
    sys_down scaling "$sys"
}

# run_phase PHASE SYSTEMS...
run_phase() {
    local phase=$1 sys
    shift
    for sys in "$@"; do
        if ! "phase_$phase" "$sys"; then
            FAILED+=("$phase/$sys")
            note "$phase/$sys: stopped at the first failure"
            # Whatever is still mounted goes before the device is reused.
            bench_stop "$BENCH_CHILD"
            bench_fuse_abort
            bench_kernel_umount || true
        fi
    done
}

bench_ram_device "$SIZE"
bench_log "RAM-backed device $BENCH_DEV ($SIZE, $BENCH_IMG); results in $BENCH_OUT"
case " $PHASES " in
    *" scaling "*) bench_log "phase 2: ${#SWEEP[@]} fio points on each of: $SCALE_SYSTEMS" ;;
esac
{
    echo "fio $(fio --version | sed 's/^fio-//') libaio direct=1, kernel $(uname -r), $(nproc) CPUs," \
         "RAM-backed $SIZE loop device (direct-io), $FILE_SIZE file/region, ${RUNTIME}s per job"
    echo "kaiofs -o stats,engine=aio|uring${KAIOFS_OPTS:+,$KAIOFS_OPTS}; fuse2fs -o $FUSE2FS_OPTS;" \
         "mkfs.ext4 ${MKFS_ARGS[*]:2}; metadata: caches dropped before each phase: $([ "$DROP_CACHES" = 1 ] && echo yes || echo no);" \
         "load average at the start $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$BENCH_OUT/header.txt"

case " $PHASES " in
    *" targets "*)
        # shellcheck disable=SC2086
        run_phase targets $SYSTEMS
        echo
        "$PYTHON" "$HELPER" targets "$BENCH_OUT"
        echo ;;
esac
case " $PHASES " in
    *" scaling "*)
        # shellcheck disable=SC2086
        run_phase scaling $SCALE_SYSTEMS ;;
esac
echo
"$PYTHON" "$HELPER" report "$BENCH_OUT"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -s "$BENCH_OUT/notes.txt" ]; then
    echo
    echo "notes:"
    sed 's/^/  /' "$BENCH_OUT/notes.txt"
fi
echo "results: $BENCH_OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}" >&2
    exit 1
fi
