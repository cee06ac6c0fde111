#!/usr/bin/env bash
# The long load run of kaiofs: eight threads of mixed data and metadata
# operations on a 1 GiB ext4 volume for ten minutes, with the daemon's
# memory, descriptors, threads and error counters sampled, every byte and
# name checked against a model, then a clean unmount, e2fsck -fn and the
# kernel's ext4 reading the same tree. It runs tests/test_load.py (the
# suite runs the same test for 120 s; read its header and that of
# tests/load_workload.py for what is checked). As root, from anywhere in the
# repository:
#
#   tests/bench/load.sh                      # normal build, 600 s (about 11 min)
#   ASAN=1 tests/bench/load.sh               # ASan/UBSan build (build-asan)
#   LOAD_SECONDS=120 tests/bench/load.sh     # the suite's length
#
# Environment:
#   LOAD_SECONDS   length of the load                        (default: 600)
#   ASAN=1         use ASAN_BUILD_DIR with ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
#                  and UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 (kept if set)
#   BUILD_DIR      build directory                           (default: build)
#   ASAN_BUILD_DIR sanitizer build directory                 (default: build-asan)
#   KAIOFS_BIN, KAIOFS_STAT_BIN   explicit binaries (override the build directories)
#   KAIOFS_SEED    seed of the workload (default: random, printed)
#   KAIOFS_LOAD_THREADS, KAIOFS_LOAD_OPTS   threads (8), extra -o options (e.g. io=cached)
#   BENCH_OUT      output directory (default: a new /tmp/kaiofs-load.YYYYmmdd-HHMMSS.XXXX)
# Output: the figures on stdout (operations per kind, bytes, RSS at the start,
# the end of the warm-up and the end, descriptors, threads, kaiofs-stat
# counters, durations), and in BENCH_OUT: report.json and pytest.log.
# The exit status is pytest's: 0 when every check passed.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
PYTHON=/usr/bin/python3
LOAD_SECONDS=${LOAD_SECONDS:-600}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-$ROOT/build-asan}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
case $ASAN_BUILD_DIR in /*) ;; *) ASAN_BUILD_DIR=$ROOT/$ASAN_BUILD_DIR ;; esac

die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (mounts, loop devices for the kernel's check)"
if [ "${ASAN:-0}" = 1 ]; then
    dir=$ASAN_BUILD_DIR
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
else
    dir=$BUILD_DIR
fi
export KAIOFS_BIN=${KAIOFS_BIN:-$dir/src/kaiofs}
export KAIOFS_STAT_BIN=${KAIOFS_STAT_BIN:-$dir/src/kaiofs-stat}
for f in "$KAIOFS_BIN" "$KAIOFS_STAT_BIN"; do
    [ -x "$f" ] || die "missing $f (build first: tests/run build)"
done
"$PYTHON" -c 'import pytest' 2>/dev/null || die "no pytest for $PYTHON (tests/run setup)"

if [ -z "${BENCH_OUT:-}" ]; then
    BENCH_OUT=$(mktemp -d "/tmp/kaiofs-load.$(date +%Y%m%d-%H%M%S).XXXX")
else
    mkdir -p "$BENCH_OUT" || exit 1
fi
export KAIOFS_LOAD_SECONDS=$LOAD_SECONDS
export KAIOFS_LOAD_REPORT=$BENCH_OUT/report.json
rm -f "$KAIOFS_LOAD_REPORT"

echo "==> kaiofs: $KAIOFS_BIN; load ${LOAD_SECONDS}s; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start=$SECONDS
# Up to the load, three times the checks at the end, and room for a slow machine.
timeout --foreground --kill-after=60 $((LOAD_SECONDS * 3 + 1800)) \
    "$PYTHON" -m pytest -p no:cacheprovider -s -q -rA --durations=0 \
    tests/test_load.py -k "test_mixed_load and default" 2>&1 | tee "$BENCH_OUT/pytest.log"
rc=${PIPESTATUS[0]}
echo "==> $((SECONDS - start)) s in all; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "==> results: $BENCH_OUT (exit $rc)" >&2
exit "$rc"
