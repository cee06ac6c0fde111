#!/usr/bin/env bash
# fio on a RAM-backed loop device, directly and through a kaiofs raw-mode mount
# of the same device. Run as root from anywhere in the repository:
#
#   tests/bench/raw_vs_kaiofs.sh
#
# Environment:
#   RUNTIME       seconds per fio job                    (default: 10)
#   ROUNDS        raw/kaiofs pairs per workload; each side's median counts
#                 (default: 3; alternating the two sides in short jobs keeps a
#                 shared, noisy machine from favouring either)
#   SIZE          size of the RAM-backed device          (default: 2G)
#   KAIOFS_OPTS   extra -o options for kaiofs, e.g. "queue_depth=256,reapers=2"
#   BUILD_DIR     build directory with src/kaiofs         (default: build)
#   KAIOFS_BIN, KAIOFS_STAT_BIN   explicit binaries (override BUILD_DIR)
#   BENCH_OUT     directory to keep the fio JSON files and the table (optional)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
KAIOFS=${KAIOFS_BIN:-$BUILD_DIR/src/kaiofs}
KAIOFS_STAT=${KAIOFS_STAT_BIN:-$BUILD_DIR/src/kaiofs-stat}
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-2G}
KAIOFS_OPTS=${KAIOFS_OPTS:-}
BENCH_OUT=${BENCH_OUT:-}
case $BENCH_OUT in "" | /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
PYTHON=/usr/bin/python3

# name rw bs iodepth
WORKLOADS=(
    "randread-4k randread 4k 32"
    "randwrite-4k randwrite 4k 32"
    "read-1M read 1M 8"
    "write-1M write 1M 8"
)

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"
log() { bench_log "$@"; }

bench_require_root
for f in "$KAIOFS" "$KAIOFS_STAT"; do
    [ -x "$f" ] || bench_die "missing $f (build first: tests/run build)"
done
command -v fio >/dev/null || bench_die "fio not installed (tests/run setup)"

bench_setup kaiofs-bench
TMP=$BENCH_TMP
MNT=$TMP/mnt
mkdir "$MNT"
bench_ram_device "$SIZE"
DEV=$BENCH_DEV
log "RAM-backed device $DEV ($SIZE, $BENCH_IMG), runtime ${RUNTIME}s per job"

# run_fio SIDE TARGET NAME RW BS IODEPTH
run_fio() {
    local side=$1 target=$2 name=$3 rw=$4 bs=$5 qd=$6 rc=0
    log "$side: $name (rw=$rw bs=$bs iodepth=$qd)"
    bench_run $((RUNTIME + 60)) fio --name="$name" --filename="$target" --rw="$rw" --bs="$bs" \
        --iodepth="$qd" --ioengine=libaio --direct=1 --numjobs=1 --time_based --runtime="$RUNTIME" \
        --fallocate=none --verify_state_save=0 --output-format=json \
        --output="$TMP/$side-$name.json" || rc=$?
    [ "$rc" -eq 0 ] || bench_die "fio $side $name failed (exit $rc; 124/137: out of time)"
}

opts="raw,stats${KAIOFS_OPTS:+,$KAIOFS_OPTS}"
FILE=$MNT/$(basename "$DEV")

# run_kaiofs NAME RW BS IODEPTH: mount, one fio job, the statistics, unmount.
# (The device cannot stay mounted under the raw jobs: the kernel refuses
# writes to a block device that is held exclusively.)
run_kaiofs() {
    local rc=0
    bench_fuse_start "$MNT" "$TMP/kaiofs.log" "$KAIOFS" -f -o "$opts" "$DEV" "$MNT" ||
        bench_die "kaiofs did not mount ($KAIOFS -f -o $opts $DEV $MNT)"
    run_fio kaiofs "$FILE" "$@"
    bench_run 20 "$KAIOFS_STAT" --json "$MNT" >"$TMP/stat-$1.json"
    bench_fuse_stop 60 || rc=$?
    [ "$rc" -eq 0 ] || { cat "$TMP/kaiofs.log" >&2; bench_die "kaiofs exited with status $rc"; }
}

log "kaiofs -f -o $opts $DEV $MNT, mounted for each kaiofs job"
for w in "${WORKLOADS[@]}"; do
    read -r name rw bs qd <<<"$w"
    for ((r = 1; r <= ROUNDS; r++)); do
        run_fio raw "$DEV" "$name.$r" "$rw" "$bs" "$qd"
        run_kaiofs "$name.$r" "$rw" "$bs" "$qd"
    done
done

echo
echo "fio $(fio --version | sed 's/^fio-//'), kernel $(uname -r), $(nproc) CPUs," \
     "device $SIZE RAM-backed loop (direct-io), ${RUNTIME}s per job, median of $ROUNDS" \
     "alternating rounds, kaiofs -o $opts"
"$PYTHON" - "$TMP" "$ROUNDS" "${WORKLOADS[@]}" <<'EOF' | tee "$TMP/table.txt"
import json
import sys

tmp = sys.argv[1]
rounds = int(sys.argv[2])
workloads = [w.split() for w in sys.argv[3:]]


def load(path):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    return json.loads(text[text.index("{"):])


def one(side, name, rw):
    job = load(f"{tmp}/{side}-{name}.json")["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"fio {side} {name}: error {job['error']}")
    d = job["write" if "write" in rw else "read"]
    return d["iops"], d["bw_bytes"] / 1e6


def result(side, name, rw):
    """The median round (by IOPS) of one side."""
    runs = sorted(one(side, f"{name}.{r}", rw) for r in range(1, rounds + 1))
    return runs[len(runs) // 2]


print()
hdr = f"{'workload':<18} {'raw IOPS':>10} {'raw MB/s':>9} {'kaiofs IOPS':>12} {'kaiofs MB/s':>12} {'kaiofs/raw':>10}"
print(hdr)
print("-" * len(hdr))
for name, rw, bs, qd in workloads:
    riops, rmbs = result("raw", name, rw)
    kiops, kmbs = result("kaiofs", name, rw)
    ratio = kiops / riops if riops else float("nan")
    label = f"{name} qd{qd}"
    print(f"{label:<18} {riops:>10.0f} {rmbs:>9.1f} {kiops:>12.0f} {kmbs:>12.1f} {ratio:>10.2f}")
print()
for name, rw, bs, qd in workloads:
    per_round = []
    for r in range(1, rounds + 1):
        with open(f"{tmp}/stat-{name}.{r}.json") as f:
            per_round.append(json.load(f)["iocbs_per_submit"])
    print(f"kaiofs-stat iocbs_per_submit, {name}: " + " ".join(f"{v:.2f}" for v in per_round))
EOF

echo
echo "kaiofs statistics at the last unmount:"
cat "$TMP/kaiofs.log"

if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$BENCH_OUT"
    cp "$TMP"/*.json "$TMP/table.txt" "$TMP/kaiofs.log" "$BENCH_OUT/"
    log "results kept in $BENCH_OUT"
fi
