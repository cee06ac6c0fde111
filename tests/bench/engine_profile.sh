#!/usr/bin/env bash
# Where the CPU time of large I/O goes with each engine: kaiofs in raw mode on
# a RAM-backed loop device, fio (libaio, direct=1) on its file, once with
# -o engine=aio and once with -o engine=uring per round, each job profiled
# with two `perf record -g` sessions (cpu-clock): one of the kaiofs process,
# one of fio, so that other work on a shared machine stays out. The table
# gives each job's rate, the machine's busy CPU time per MiB, and the share
# of the two processes' samples whose call chain pins or unpins user pages
# (get_user_pages and its fast path, iov_iter_extract_pages,
# bio_iov_iter_get_pages; unpin and release of bio pages): in kaiofs (its
# arena buffers) and in fio (the application's buffer, which FUSE's direct
# I/O pins with either engine). Kernel AIO pins the arena's pages for every
# direct I/O; io_uring's registered buffers were pinned once, at the start.
# Run as root from anywhere in the repository:
#
#   tests/bench/engine_profile.sh
#
# Environment:
#   RUNTIME       seconds per fio job                    (default: 8)
#   ROUNDS        aio/uring pairs per workload, alternating which goes first;
#                 each engine's median round (by rate) is reported (default: 3)
#   SIZE          size of the RAM-backed device          (default: 2G)
#   WORKLOADS     "name rw bs iodepth" entries, ';'-separated
#                 (default: "write-1M write 1M 8;read-1M read 1M 8")
#   KAIOFS_OPTS   extra -o options for kaiofs
#   BUILD_DIR     build directory with src/kaiofs         (default: build)
#   KAIOFS_BIN    explicit binary (overrides BUILD_DIR)
#   BENCH_OUT     directory to keep the perf samples, fio JSON and the table

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
KAIOFS=${KAIOFS_BIN:-$BUILD_DIR/src/kaiofs}
RUNTIME=${RUNTIME:-8}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-2G}
KAIOFS_OPTS=${KAIOFS_OPTS:-}
WORKLOADS=${WORKLOADS:-write-1M write 1M 8;read-1M read 1M 8}
BENCH_OUT=${BENCH_OUT:-}
case $BENCH_OUT in "" | /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
PYTHON=/usr/bin/python3

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"

bench_require_root
[ -x "$KAIOFS" ] || bench_die "missing $KAIOFS (build first: tests/run build)"
command -v fio >/dev/null || bench_die "fio not installed (tests/run setup)"
command -v perf >/dev/null || bench_die "perf not installed (apt-get install linux-perf)"

bench_setup kaiofs-profile
TMP=$BENCH_TMP
MNT=$TMP/mnt
mkdir "$MNT"
bench_ram_device "$SIZE"
DEV=$BENCH_DEV
FILE=$MNT/$(basename "$DEV")
bench_log "RAM-backed device $DEV ($SIZE), ${RUNTIME}s per job, $ROUNDS rounds"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# perf_script PERFDATA OUT: the samples with their call chains
perf_script() {
    perf script -i "$1" -F comm,pid,tid,ip,sym >"$2" 2>/dev/null ||
        bench_die "perf script of $1 failed"
    rm -f "$1"
}

# profile ENGINE ROUND NAME RW BS IODEPTH
profile() {
    local engine=$1 round=$2 name=$3 rw=$4 bs=$5 qd=$6 rc=0 perf_k
    local base=$TMP/$name-$engine-$round
    local opts="raw,engine=$engine${KAIOFS_OPTS:+,$KAIOFS_OPTS}"
    bench_fuse_start "$MNT" "$base.log" "$KAIOFS" -f -o "$opts" "$DEV" "$MNT" ||
        bench_die "kaiofs did not mount ($KAIOFS -f -o $opts $DEV $MNT)"
    bench_log "$engine round $round: $name (rw=$rw bs=$bs iodepth=$qd) under perf record"
    perf record -q -g -F 499 -p "$BENCH_FUSE_PID" -o "$base.kaiofs.perf" 2>"$base.perf.err" &
    perf_k=$!
    "$PYTHON" "$ROOT/tests/bench/scaling.py" cpu >"$base.cpu"
    bench_run $((RUNTIME + 60)) perf record -q -g -F 499 -o "$base.fio.perf" -- \
        fio --name="$name" --filename="$FILE" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --ioengine=libaio --direct=1 --numjobs=1 --time_based --runtime="$RUNTIME" \
        --size=1G --fallocate=none --verify_state_save=0 --output-format=json \
        --output="$base.json" || rc=$?
    "$PYTHON" "$ROOT/tests/bench/scaling.py" cpu >>"$base.cpu"
    kill -INT "$perf_k" 2>/dev/null || true
    wait "$perf_k" || true
    [ "$rc" -eq 0 ] || bench_die "fio under perf ($engine $name) failed (exit $rc)"
    perf_script "$base.kaiofs.perf" "$base.kaiofs.script"
    perf_script "$base.fio.perf" "$base.fio.script"
    bench_fuse_stop 60 || { cat "$base.log" >&2; bench_die "kaiofs ($engine) did not exit cleanly"; }
}

IFS=';' read -r -a WL <<<"$WORKLOADS"
for w in "${WL[@]}"; do
    read -r name rw bs qd <<<"$w"
    for ((r = 1; r <= ROUNDS; r++)); do
        if [ $((r % 2)) -eq 1 ]; then order="aio uring"; else order="uring aio"; fi
        for e in $order; do profile "$e" "$r" "$name" "$rw" "$bs" "$qd"; done
    done
done

echo
echo "kaiofs -o raw,engine=aio|uring${KAIOFS_OPTS:+,$KAIOFS_OPTS} on a $SIZE RAM-backed loop" \
     "device, fio libaio direct=1 ${RUNTIME}s per job, perf record -g -F 499, kernel $(uname -r)," \
     "$(nproc) CPUs, load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
"$PYTHON" "$ROOT/tests/bench/engine_profile.py" "$TMP" "$ROUNDS" "${WL[@]}" |
    tee "$TMP/profile.txt"

if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$BENCH_OUT"
    cp "$TMP"/*.json "$TMP"/*.script "$TMP"/*.cpu "$TMP/profile.txt" "$BENCH_OUT/"
    bench_log "results kept in $BENCH_OUT"
fi
