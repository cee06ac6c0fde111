#!/usr/bin/python3
"""Helper of tests/bench/fs_compare.sh (standard library only).

  fs_compare.py meta DIR N           create N empty files in DIR/meta, stat them,
                                     unlink them; JSON timings on stdout
  fs_compare.py scale DIR N WINDOW   create N empty files in DIR/scale, timing each
                                     block of WINDOW files, then remove them
  fs_compare.py odirect DIR          can a file in DIR be opened with O_DIRECT and
                                     an aligned 4 KiB block written and read back?
  fs_compare.py report OUT           table of OUT (fs_compare.sh's results) on
                                     stdout, the same as OUT/fs_compare.csv
"""

import csv
import errno
import json
import mmap
import os
import sys
import time

# Column order of the report: (key used in the file names, column title).
SYSTEMS = (("raw", "raw"), ("ext4", "kernel-ext4"), ("fuse2fs", "fuse2fs"), ("kaiofs", "kaiofs"))
RATIO_TO = ("raw", "ext4", "fuse2fs")
SCALE_GOAL = 3.0


def names(d, n):
    return [os.path.join(d, "f%06d" % i) for i in range(n)]


def create(path):
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def check_listing(d, expect):
    got = sorted(os.listdir(d))
    if got != sorted(os.path.basename(p) for p in expect):
        raise SystemExit("%s: readdir gives %d names, expected %d" % (d, len(got), len(expect)))


def cmd_meta(top, n):
    d = os.path.join(top, "meta")
    os.mkdir(d)
    paths = names(d, n)
    t0 = time.perf_counter()
    for p in paths:
        create(p)
    t1 = time.perf_counter()
    for p in paths:
        st = os.stat(p)
        if st.st_size != 0:
            raise SystemExit("%s: size %d, expected 0" % (p, st.st_size))
    t2 = time.perf_counter()
    check_listing(d, paths)
    t3 = time.perf_counter()
    for p in paths:
        os.unlink(p)
    t4 = time.perf_counter()
    check_listing(d, [])
    os.rmdir(d)
    json.dump({"n": n, "create_s": t1 - t0, "stat_s": t2 - t1, "unlink_s": t4 - t3}, sys.stdout)
    print()


def cmd_scale(top, n, window):
    if n % window or n < 2 * window:
        raise SystemExit("N must be a multiple of WINDOW and at least 2 * WINDOW")
    d = os.path.join(top, "scale")
    os.mkdir(d)
    paths = names(d, n)
    blocks = []
    for b in range(0, n, window):
        t0 = time.perf_counter()
        for p in paths[b:b + window]:
            create(p)
        blocks.append(time.perf_counter() - t0)
    check_listing(d, paths)
    t0 = time.perf_counter()
    for p in paths:
        os.unlink(p)
    unlink_s = time.perf_counter() - t0
    os.rmdir(d)
    json.dump({"n": n, "window": window, "first_s": blocks[0], "last_s": blocks[-1],
               "blocks_s": blocks, "unlink_s": unlink_s}, sys.stdout)
    print()


def cmd_odirect(top):
    path = os.path.join(top, "odirect-probe")
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        print("open(O_DIRECT) fails: %s" % errno.errorcode.get(e.errno, e.errno))
        return 1
    try:
        wbuf = mmap.mmap(-1, 4096)
        wbuf.write(bytes(range(256)) * 16)
        rbuf = mmap.mmap(-1, 4096)
        try:
            n = os.pwrite(fd, wbuf, 0)
            if n != 4096:
                print("O_DIRECT write of 4096 bytes returns %d" % n)
                return 1
            n = os.preadv(fd, [rbuf], 0)
        except OSError as e:
            print("O_DIRECT I/O fails: %s" % errno.errorcode.get(e.errno, e.errno))
            return 1
        if n != 4096 or rbuf[:] != wbuf[:]:
            print("O_DIRECT read back %d bytes, %s" % (n, "equal" if rbuf[:n] == wbuf[:n] else "different"))
            return 1
    finally:
        os.close(fd)
        os.unlink(path)
    print("O_DIRECT open, write and read of 4 KiB work")
    return 0


# ---------------------------------------------------------------- report

class Missing:
    """A cell without a number: not measured ("-") or failed ("ERR")."""

    def __init__(self, text):
        self.text = text


NA = Missing("-")
ERR = Missing("ERR")


def load_json(path):
    """None if the file does not exist (not run), ERR if it holds no JSON
    document (the scripts create it empty before they run the job)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        # fio may print warnings before the JSON document.
        return json.loads(text[text.index("{"):])
    except ValueError:
        return ERR


def fio_value(out, system, name, rw, bs_bytes):
    doc = load_json(os.path.join(out, "fio", "%s-%s.json" % (system, name)))
    if doc is None:
        return NA
    if doc is ERR or not doc.get("jobs"):
        return ERR
    job = doc["jobs"][0]
    if job.get("error"):
        return ERR
    d = job["write" if "write" in rw else "read"]
    return d["iops"] if bs_bytes < 65536 else d["bw_bytes"] / 1e6


def parse_size(s):
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.lower()
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def side_doc(out, system, kind):
    path = os.path.join(out, "%s-%s.json" % (system, kind))
    doc = load_json(path)
    return NA if doc is None else doc


def fmt(v, unit):
    if isinstance(v, Missing):
        return v.text
    if unit in ("MB/s", "us/file"):
        return "%.1f" % v
    if unit == "ratio":
        return "%.2f" % v
    return "%.0f" % v


def cmd_report(out):
    jobs = []
    with open(os.path.join(out, "jobs.txt")) as f:
        for line in f:
            if line.strip():
                jobs.append(line.split())
    rows = []  # (label, unit, {system: value})
    for name, rw, bs, qd, timed in jobs:
        bsb = parse_size(bs)
        unit = "IOPS" if bsb < 65536 else "MB/s"
        label = "%s qd%s" % (name, qd) if timed == "1" else "%s qd%s (1st pass)" % (name, qd)
        rows.append((label, unit, {s: fio_value(out, s, name, rw, bsb) for s, _ in SYSTEMS}))

    meta = {s: side_doc(out, s, "meta") for s, _ in SYSTEMS}
    for phase in ("create", "stat", "unlink"):
        vals = {}
        label = None
        for s, _ in SYSTEMS:
            m = meta[s]
            if isinstance(m, Missing):
                vals[s] = m
            else:
                vals[s] = m["n"] / m[phase + "_s"]
                label = "%s %d files" % (phase, m["n"])
        rows.append((label or phase + " files", "ops/s", vals))

    scale = {s: side_doc(out, s, "scale") for s, _ in SYSTEMS}
    n = window = None
    for s, _ in SYSTEMS:
        if not isinstance(scale[s], Missing):
            n, window = scale[s]["n"], scale[s]["window"]
    first, last, ratio = {}, {}, {}
    for s, _ in SYSTEMS:
        sc = scale[s]
        if isinstance(sc, Missing):
            first[s] = last[s] = ratio[s] = sc
        else:
            first[s] = sc["first_s"] / sc["window"] * 1e6
            last[s] = sc["last_s"] / sc["window"] * 1e6
            ratio[s] = sc["last_s"] / sc["first_s"]
    tag = "create %s: " % (n if n else "N")
    w = window or "W"
    rows.append((tag + "first %s" % w, "us/file", first))
    rows.append((tag + "last %s" % w, "us/file", last))
    rows.append((tag + "last/first", "ratio", ratio))

    stats = []
    for label, kind in (("after the 4k fio jobs", "stat-4k"), ("after all fio jobs", "stat-fio")):
        doc = side_doc(out, "kaiofs", kind)
        if not isinstance(doc, Missing):
            stats.append((label, doc.get("iocbs_per_submit")))

    def ratio_of(vals, other):
        k, o = vals["kaiofs"], vals[other]
        if isinstance(k, Missing) or isinstance(o, Missing) or not o:
            return NA
        return k / o

    titles = [t for _, t in SYSTEMS] + ["kaiofs/" + t for s, t in SYSTEMS if s in RATIO_TO]
    csv_rows = [["workload", "unit"] + titles]
    table = [["workload", "unit"] + titles]
    for label, unit, vals in rows:
        ratios = [ratio_of(vals, o) for o in RATIO_TO]
        table.append([label, unit] + [fmt(vals[s], unit) for s, _ in SYSTEMS]
                     + [fmt(r, "ratio") for r in ratios])
        csv_rows.append([label, unit] + [
            "" if v is NA else ("ERR" if isinstance(v, Missing) else "%.6g" % v)
            for v in [vals[s] for s, _ in SYSTEMS] + ratios])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for r in table:
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1])]
                               + [c.rjust(w) for c, w in zip(r[2:], widths[2:])]))
        if len(lines) == 1:
            lines.append("-" * len(lines[0]))
    lines.append("")
    lines.append("Ratios are kaiofs's value divided by the other one: higher is better for"
                 " IOPS, MB/s and ops/s, lower is better for us/file.")
    for s, t in SYSTEMS:
        r = ratio[s]
        if not isinstance(r, Missing):
            lines.append("create %d files in one directory, %s: %.1f us/file for the first %d,"
                         " %.1f us/file for the last %d, last/first %.2f (goal < %g: %s)"
                         % (n, t, first[s], window, last[s], window, r, SCALE_GOAL,
                            "met" if r < SCALE_GOAL else "NOT met"))
    for label, v in stats:
        vs = "%.2f" % v if isinstance(v, (int, float)) else str(v)
        lines.append("kaiofs-stat iocbs_per_submit %s: %s" % (label, vs))
        csv_rows.append(["kaiofs-stat iocbs_per_submit " + label, "iocbs/submit", "", "", "",
                         "" if v is None else "%.6g" % v, "", "", ""])
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(out, "fs_compare.csv"), "w", newline="") as f:
        csv.writer(f).writerows(csv_rows)
    with open(os.path.join(out, "table.txt"), "a") as f:
        f.write(text)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "meta" and len(argv) == 4:
        return cmd_meta(argv[2], int(argv[3]))
    if len(argv) >= 2 and argv[1] == "scale" and len(argv) == 5:
        return cmd_scale(argv[2], int(argv[3]), int(argv[4]))
    if len(argv) == 3 and argv[1] == "odirect":
        return cmd_odirect(argv[2])
    if len(argv) == 3 and argv[1] == "report":
        return cmd_report(argv[2])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
