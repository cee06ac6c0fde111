#!/usr/bin/python3
"""Helper of tests/bench/scaling.sh (standard library; matplotlib for charts).

  scaling.py meta DIR N DROP      create N empty files in DIR/meta, stat them,
                                  unlink them, timing every call; DROP=1: sync
                                  and drop the kernel's caches before each phase
                                  (untimed); JSON on stdout
  scaling.py dircreate DIR N WINDOW LIMIT
                                  create up to N empty files in DIR/dir, timing
                                  each block of WINDOW files; stops once LIMIT
                                  seconds have passed and records how far it got
  scaling.py targets OUT          the target table of OUT on stdout and in
                                  OUT/targets.txt
  scaling.py report OUT           OUT/scaling.csv, the sweep tables on stdout
                                  and in OUT/sweeps.txt, PNG charts in OUT
  scaling.py cpu                  one line "BUSY TOTAL CTXT" of /proc/stat now
                                  (see cpu_sample)

OUT holds points.tsv, written by scaling.sh: one line per measurement,
tab-separated: kind (fio, meta, dircreate), phase (target, scaling), system,
workload, rw, bs, iodepth, jobs, result file, exit status of the program.
Beside each fio result FILE.json, FILE.cpu holds two samples of /proc/stat
(busy ticks, all ticks, context switches of the whole machine) taken before
and after the job; the meta JSON carries the same samples for each phase.
"""

import csv
import json
import os
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fs_compare  # noqa: E402  (names, create, check_listing, load_json, parse_size)

# kaiofs is kaiofs with its default engine (aio), kaiofs-uring with -o engine=uring.
SYSTEMS = ("kaiofs", "kaiofs-uring", "raw", "ext4", "fuse2fs", "fusenull")
TITLES = {"kaiofs": "kaiofs aio", "kaiofs-uring": "kaiofs uring", "raw": "raw device",
          "ext4": "kernel ext4", "fuse2fs": "fuse2fs", "fusenull": "fuse-null"}
STYLE = {
    "kaiofs": dict(color="tab:red", linewidth=2.4, marker="o", zorder=4),
    "kaiofs-uring": dict(color="tab:purple", linewidth=2.4, marker="D", zorder=5),
    "raw": dict(color="black", linewidth=1.4, linestyle="--", marker="s", zorder=3),
    "ext4": dict(color="tab:blue", linewidth=1.4, marker="^", zorder=2),
    "fuse2fs": dict(color="tab:orange", linewidth=1.4, marker="v", zorder=1),
    "fusenull": dict(color="tab:gray", linewidth=1.0, linestyle=":", marker="x", zorder=1),
}

# The targets: label, unit, (kind, workload of the "targets" phase), checks.
# A check is (system, factor): kaiofs >= factor * system, or ("abs", value).
TARGETS = (
    ("4 KiB random read, qd32", "IOPS", ("fio", "randread-4k"), (("raw", 0.6), ("fuse2fs", 4))),
    ("4 KiB random write (overwrite), qd32", "IOPS", ("fio", "randwrite-4k"),
     (("raw", 0.5), ("fuse2fs", 8))),
    ("1 MiB sequential read, qd8", "MB/s", ("fio", "read-1M"), (("raw", 0.7),)),
    ("1 MiB sequential write (overwrite), qd8", "MB/s", ("fio", "write-1M"), (("raw", 0.7),)),
    ("1 MiB write into a new, empty file, qd8", "MB/s", ("fio", "layout-1M"), (("raw", 0.5),)),
    ("create %(n)s files", "ops/s", ("meta", "create"), (("fuse2fs", 5),)),
    ("stat %(n)s files (caches dropped)", "ops/s", ("meta", "stat"),
     (("fuse2fs", 5), ("abs", 100000))),
    ("unlink %(n)s files (caches dropped)", "ops/s", ("meta", "unlink"), (("fuse2fs", 5),)),
)

CSV_FIELDS = ("phase", "system", "workload", "rw", "bs", "iodepth", "jobs", "iops", "mb_s",
              "p50_us", "p99_us", "entries", "busy_cpus", "cpu_us_op", "cs_op", "status")
# The systems of the target table, and those whose value kaiofs is compared with.
TARGET_SYSTEMS = ("kaiofs", "kaiofs-uring", "raw", "ext4", "fuse2fs", "fusenull")
COMPARED = ("raw", "ext4", "fuse2fs")


# ---------------------------------------------------------------- measuring

def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency_summary(lat):
    lat = sorted(lat)
    return {"p50_us": percentile(lat, 0.50) * 1e6, "p99_us": percentile(lat, 0.99) * 1e6}


def stat_empty(path):
    st = os.stat(path)
    if st.st_size != 0:
        raise SystemExit("%s: size %d, expected 0" % (path, st.st_size))


def timed_each(paths, op):
    clock = time.perf_counter
    lat = []
    t0 = clock()
    for p in paths:
        a = clock()
        op(p)
        lat.append(clock() - a)
    return clock() - t0, lat


def cpu_sample():
    """[busy ticks, all ticks, context switches] of the machine since boot."""
    busy = total = ctxt = 0
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == "cpu":
                # user to softirq: steal (time given to other guests) is neither
                ticks = [int(x) for x in fields[1:8]]
                total = sum(ticks)
                busy = total - ticks[3] - ticks[4]  # less idle and iowait
            elif fields[0] == "ctxt":
                ctxt = int(fields[1])
    return [busy, total, ctxt]


def cpu_per_op(before, after, ops):
    """{"busy_cpus", "cpu_us_op", "cs_op"} over a measurement of `ops` operations:
    CPUs busy on average, busy CPU time of the whole machine per operation and
    context switches per operation."""
    busy, total, ctxt = (a - b for a, b in zip(after, before))
    if total <= 0 or ops <= 0:
        return None
    ncpu = os.cpu_count() or 1
    return {"busy_cpus": ncpu * busy / total,
            "cpu_us_op": busy / os.sysconf("SC_CLK_TCK") * 1e6 / ops, "cs_op": ctxt / ops}


def cmd_meta(top, n, drop):
    d = os.path.join(top, "meta")
    os.mkdir(d)
    paths = fs_compare.names(d, n)
    result = {"n": n, "drop_caches": drop}
    for phase, op in (("create", fs_compare.create), ("stat", stat_empty), ("unlink", os.unlink)):
        if drop:
            drop_caches()
        before = cpu_sample()
        total, lat = timed_each(paths, op)
        result[phase] = dict(latency_summary(lat), s=total, ops_s=n / total,
                             cpu=[before, cpu_sample()])
        if phase == "create":
            fs_compare.check_listing(d, paths)
    fs_compare.check_listing(d, [])
    os.rmdir(d)
    json.dump(result, sys.stdout)
    print()


def cmd_dircreate(top, n, window, limit):
    d = os.path.join(top, "dir")
    os.mkdir(d)
    clock = time.perf_counter
    start = clock()
    deadline = start + limit
    windows = []
    done = 0
    stopped = False
    while done < n and not stopped:
        lat = []
        t0 = clock()
        for i in range(done, min(done + window, n)):
            a = clock()
            fs_compare.create(os.path.join(d, "f%06d" % i))
            b = clock()
            lat.append(b - a)
            if b > deadline:
                stopped = True
                break
        total = clock() - t0
        done += len(lat)
        windows.append(dict(latency_summary(lat), entries=done, count=len(lat), s=total,
                            ops_s=len(lat) / total))
        sys.stderr.write("  %d entries, %.0f creates/s in the last %d\n"
                         % (done, len(lat) / total, len(lat)))
    elapsed = clock() - start
    t0 = clock()
    listed = len(os.listdir(d))
    list_s = clock() - t0
    if listed != done:
        raise SystemExit("%s: readdir gives %d names, expected %d" % (d, listed, done))
    json.dump({"n": n, "window": window, "limit_s": limit, "done": done, "stopped": stopped,
               "elapsed_s": elapsed, "list_s": list_s, "windows": windows}, sys.stdout)
    print()


# ---------------------------------------------------------------- results

def load_points(out):
    points = []
    with open(os.path.join(out, "points.tsv")) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 10:
                continue
            keys = ("kind", "phase", "system", "workload", "rw", "bs", "iodepth", "jobs",
                    "path", "rc")
            points.append(dict(zip(keys, fields)))
    return points


def fio_result(path, rw):
    """{"iops", "mb_s", "p50_us", "p99_us"} or a status string."""
    doc = fs_compare.load_json(path)
    if doc is None or doc is fs_compare.ERR or not doc.get("jobs"):
        return "ERR"
    job = doc["jobs"][0]
    if job.get("error"):
        return "ERR"
    d = job["write" if "write" in rw else "read"]
    pct = d.get("clat_ns", {}).get("percentile", {})

    def us(key):
        v = pct.get(key)
        return v / 1000 if v else None

    res = {"iops": d["iops"], "mb_s": d["bw_bytes"] / 1e6,
           "p50_us": us("50.000000"), "p99_us": us("99.000000")}
    cpu = fio_cpu(path, d.get("total_ios", 0))
    if cpu:
        res.update(cpu)
    return res


def fio_cpu(json_path, ops):
    try:
        with open(json_path[:-len(".json")] + ".cpu") as f:
            samples = [[int(x) for x in line.split()] for line in f if line.strip()]
    except (OSError, ValueError):
        return None
    return cpu_per_op(samples[0], samples[1], ops) if len(samples) == 2 else None


def json_result(path):
    doc = fs_compare.load_json(path)
    return "ERR" if doc is None or doc is fs_compare.ERR else doc


def point_result(p):
    if p["rc"] not in ("0", ""):
        return "timeout" if p["rc"] in ("124", "137") else "ERR"
    if p["kind"] == "fio":
        return fio_result(p["path"], p["rw"])
    return json_result(p["path"])


def rows_of(points):
    """The CSV rows: one per fio job, per metadata phase, per create window."""
    rows = []
    for p in points:
        res = point_result(p)
        base = {k: p[k] for k in ("phase", "system", "workload", "rw", "bs", "iodepth", "jobs")}
        if isinstance(res, str):
            rows.append(dict(base, status=res))
        elif p["kind"] == "fio":
            rows.append(dict(base, status="ok", **res))
        elif p["kind"] == "meta":
            for phase in ("create", "stat", "unlink"):
                r = res[phase]
                cpu = cpu_per_op(r["cpu"][0], r["cpu"][1], res["n"]) if "cpu" in r else None
                rows.append(dict(base, rw=phase, iops=r["ops_s"], p50_us=r["p50_us"],
                                 p99_us=r["p99_us"], entries=res["n"], **(cpu or {}),
                                 status="ok, caches dropped" if res["drop_caches"] else "ok"))
        elif p["kind"] == "dircreate":
            for w in res["windows"]:
                status = "ok"
                if res["stopped"] and w is res["windows"][-1]:
                    status = "stopped at %d of %d entries (limit %gs)" % (
                        res["done"], res["n"], res["limit_s"])
                rows.append(dict(base, rw="create", iops=w["ops_s"], p50_us=w["p50_us"],
                                 p99_us=w["p99_us"], entries=w["entries"], status=status))
    return rows


def find(rows, **want):
    for r in rows:
        if all(str(r.get(k)) == str(v) for k, v in want.items()):
            return r
    return None


def value_of(row, unit):
    if row is None:
        return "-"
    if row["status"] not in ("ok", "ok, caches dropped"):
        return row["status"]
    return row["mb_s"] if unit == "MB/s" else row["iops"]


def fmt(v, unit=""):
    if isinstance(v, str):
        return v
    if unit == "ratio":
        return "%.2f" % v
    if unit == "MB/s":
        return "%.1f" % v
    return "%.0f" % v


def table_lines(table):
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for r in table:
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1])]
                               + [c.rjust(w) for c, w in zip(r[2:-1], widths[2:-1])]
                               + [r[-1]]).rstrip())
        if len(lines) == 1:
            lines.append("-" * max(len(x) for x in lines))
    return lines


def read_header(out):
    try:
        with open(os.path.join(out, "header.txt")) as f:
            return f.read().rstrip("\n").split("\n")
    except FileNotFoundError:
        return []


def target_row(rows, s, kind, name):
    if kind == "fio":
        return find(rows, system=s, workload=name)
    return None if s == "raw" else find(rows, system=s, workload="meta", rw=name)


def cost_lines(rows, n_meta):
    """Where the time goes: busy CPU time per operation of each system, and
    for the fio rows what that makes of kaiofs's ratio to the raw device
    when the CPUs are the limit."""
    have = [s for s in TARGET_SYSTEMS if any(r["system"] == s for r in rows)]
    table = [["workload", ""] + ["%s us" % TITLES[s] for s in have]
             + ["aio cs", "uring cs", "aio CPUs", "uring CPUs", "raw/aio us", "raw/uring us",
                "raw/(null+raw) us", ""]]
    for label, unit, (kind, name), _ in TARGETS:
        label = label % {"n": n_meta}
        got = {s: target_row(rows, s, kind, name) for s in have}
        us = {s: (got[s] or {}).get("cpu_us_op") for s in have}

        def cell(s, key, f="%.1f"):
            r = got.get(s)
            return f % r[key] if r is not None and r.get(key) is not None else "-"

        def raw_over(s):
            return fmt(us["raw"] / us[s], "ratio") if us.get("raw") and us.get(s) else "-"

        fuse_plus_raw = "-"
        if us.get("raw") and us.get("fusenull"):
            fuse_plus_raw = fmt(us["raw"] / (us["fusenull"] + us["raw"]), "ratio")
        table.append([label, ""] + [cell(s, "cpu_us_op") for s in have]
                     + [cell("kaiofs", "cs_op", "%.2f"), cell("kaiofs-uring", "cs_op", "%.2f"),
                        cell("kaiofs", "busy_cpus", "%.2f"),
                        cell("kaiofs-uring", "busy_cpus", "%.2f"),
                        raw_over("kaiofs"), raw_over("kaiofs-uring"), fuse_plus_raw, ""])
    lines = [
        "Where the time goes: busy CPU time of the whole machine per operation (one fio I/O,"
        " or one create, stat or unlink; us, all CPUs together, fio and the loop device"
        " included); the machine's context switches per operation and CPUs busy on average"
        " while kaiofs ran with each engine.",
        "raw/aio us, raw/uring us: kaiofs's ratio to the raw device where the CPUs are the"
        " limit, with each engine."
        " raw/(null+raw) us: the same for a filesystem whose every I/O costs a FUSE round trip"
        " (fuse-null: the same job served from memory) plus a raw device I/O and nothing else.",
        ""]
    return lines + table_lines(table)


def engine_lines(rows, n_meta):
    """The two engines side by side on the target rows: io_uring should be
    at least equal to aio on every row, and cheaper in CPU time per MiB on
    1 MiB I/O (one operation is one MiB there)."""
    table = [["workload", "unit", "aio", "uring", "uring/aio", "aio us/op", "uring us/op",
              "uring/aio us", "target", "result"]]
    met = total = 0
    for label, unit, (kind, name), _ in TARGETS:
        label = label % {"n": n_meta}
        a, u = (target_row(rows, s, kind, name) for s in ("kaiofs", "kaiofs-uring"))
        va, vu = value_of(a, unit), value_of(u, unit)
        ca, cu = ((r or {}).get("cpu_us_op") for r in (a, u))
        ratio = vu / va if not isinstance(va, str) and not isinstance(vu, str) and va else None
        cpu = cu / ca if ca and cu else None
        wants, result = [">= 1 x aio"], []
        checks = [ratio is not None and ratio >= 1.0]
        if kind == "fio" and name.endswith("1M"):
            wants.append("less CPU per MiB")
            checks.append(cpu is not None and cpu < 1.0)
        for ok in checks:
            total += 1
            met += ok
            result.append("PASS" if ok else "MISS")
        table.append([label, unit, fmt(va, unit), fmt(vu, unit),
                      fmt(ratio, "ratio") if ratio is not None else "-",
                      "%.1f" % ca if ca else "-", "%.1f" % cu if cu else "-",
                      fmt(cpu, "ratio") if cpu is not None else "-",
                      ", ".join(wants), " ".join(result)])
    lines = ["The engines side by side: kaiofs -o engine=aio and -o engine=uring on the same"
             " jobs (us/op: busy CPU time of the whole machine per operation; on the 1 MiB rows"
             " per MiB).", ""]
    lines += table_lines(table)
    lines.append("%d of %d engine targets met." % (met, total))
    return lines


def check_targets(label, vals, k, checks):
    """The targets of one row for the value k: (ratios to COMPARED, what is
    wanted, one PASS/MISS/n/a per check, the misses)."""
    def ratio(other):
        o = vals[other]
        if isinstance(k, str) or isinstance(o, str) or not o:
            return "-"
        return k / o

    ratios = {s: ratio(s) for s in COMPARED}
    wants, result, misses = [], [], []
    for other, factor in checks:
        if other == "abs":
            wants.append("%gk/s" % (factor / 1000))
            got = k
        else:
            wants.append("%g x %s" % (factor, other))
            got = ratios[other]
        if isinstance(got, str):
            result.append("n/a")
        elif got >= factor:
            result.append("PASS")
        else:
            misses.append("%s %.0f/s < %.0f/s" % (label, got, factor) if other == "abs"
                          else "%s: %.2f x %s < %g" % (label, got, other, factor))
            result.append("MISS")
    return ratios, wants, result, misses


def cmd_targets(out):
    rows = [r for r in rows_of(load_points(out)) if r["phase"] == "targets"]
    n_meta = next((r["entries"] for r in rows if r["workload"] == "meta"), "N")
    table = [["workload", "unit"] + [TITLES[s] for s in TARGET_SYSTEMS]
             + ["k/" + s for s in COMPARED] + ["target: kaiofs >=", "result aio", "uring"]]
    met = total = 0
    misses = []
    for label, unit, (kind, name), checks in TARGETS:
        label = label % {"n": n_meta}
        vals = {s: value_of(target_row(rows, s, kind, name), unit) for s in TARGET_SYSTEMS}
        if kind != "fio":
            vals["raw"] = "n/a"
        results = {}
        for sys_ in ("kaiofs", "kaiofs-uring"):
            ratios_s, wants, results[sys_], miss = check_targets(label, vals, vals[sys_], checks)
            if sys_ == "kaiofs":
                ratios = ratios_s
            total += sum(r != "n/a" for r in results[sys_])
            met += results[sys_].count("PASS")
            misses += ["%s: %s" % (TITLES[sys_], m) for m in miss]
        table.append([label, unit] + [fmt(vals[s], unit) for s in TARGET_SYSTEMS]
                     + [fmt(ratios[s], "ratio") for s in COMPARED]
                     + [", ".join(wants), " ".join(results["kaiofs"]),
                        " ".join(results["kaiofs-uring"])])
    lines = ["Issue 4 targets: kaiofs against the raw device, the kernel's ext4 and fuse2fs"]
    lines += read_header(out)
    lines.append("")
    lines += table_lines(table)
    lines.append("")
    lines.append("k/X = kaiofs aio's value divided by X's; the result columns (kaiofs with the"
                 " aio and with the uring engine) have one word per target in the order of the"
                 " target column.")
    lines.append("%d of %d targets met" % (met, total) + (":" if misses else "."))
    lines += ["  MISS " + m for m in misses]
    lines.append("")
    lines += cost_lines(rows, n_meta)
    if any(r["system"] == "kaiofs-uring" for r in rows):
        lines.append("")
        lines += engine_lines(rows, n_meta)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(out, "targets.txt"), "w") as f:
        f.write(text)
    return 0


# ---------------------------------------------------------------- sweeps

def sweep_rows(rows):
    return [r for r in rows if r["phase"] == "scaling" and r["workload"] == "sweep"]


def bs_bytes(bs):
    return fs_compare.parse_size(bs)


def bs_label(b):
    return "%dM" % (b >> 20) if b >= 1 << 20 and b % (1 << 20) == 0 else "%dk" % (b >> 10)


def fio_key(r):
    return (r["rw"], bs_bytes(r["bs"]), int(r["iodepth"]), int(r["jobs"]))


def sweep_row_of(rows, s, key):
    return next((r for r in rows if r["system"] == s and fio_key(r) == key), None)


def ratio_cell(a, b):
    ok = not isinstance(a, str) and not isinstance(b, str) and a is not None and b
    return fmt(a / b, "ratio") if ok else "-"


def sweep_table(rows):
    points = sorted({fio_key(r) for r in rows})
    have = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    others = ([s for s in have if s not in ("kaiofs", "kaiofs-uring")]
              if "kaiofs" in have else [])
    engines = "kaiofs" in have and "kaiofs-uring" in have
    table = [["rw bs qd jobs", "unit"] + [TITLES[s] for s in have]
             + ["k/" + s for s in others] + (["uring/aio"] if engines else [])
             + (["kaiofs p50/p99 us"] if others else [""])]
    for key in points:
        rw, bsb, qd, jobs = key
        unit = "MB/s" if bsb >= 65536 else "IOPS"
        vals = {}
        lat = "-"
        for s in have:
            r = sweep_row_of(rows, s, key)
            vals[s] = value_of(r, unit)
            if s == "kaiofs" and r is not None and r.get("p50_us") is not None:
                lat = "%.0f/%.0f" % (r["p50_us"], r["p99_us"])
        ratios = [ratio_cell(vals.get("kaiofs"), vals[s]) for s in others]
        if engines:
            ratios.append(ratio_cell(vals["kaiofs-uring"], vals["kaiofs"]))
        table.append(["%s %s qd%d j%d" % (rw, bs_label(bsb), qd, jobs), unit]
                     + [fmt(vals[s], unit) for s in have] + ratios + [lat if others else ""])
    return table_lines(table)


def sweep_cpu_table(rows):
    """Busy CPU time of the whole machine per operation at each sweep point."""
    points = sorted({fio_key(r) for r in rows})
    have = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    engines = "kaiofs" in have and "kaiofs-uring" in have
    table = [["rw bs qd jobs", ""] + ["%s us" % TITLES[s] for s in have]
             + (["uring/aio us"] if engines else []) + [""]]
    for key in points:
        rw, bsb, qd, jobs = key
        us = {}
        for s in have:
            r = sweep_row_of(rows, s, key)
            us[s] = r.get("cpu_us_op") if r is not None and r["status"] == "ok" else None
        table.append(["%s %s qd%d j%d" % (rw, bs_label(bsb), qd, jobs), ""]
                     + ["%.1f" % us[s] if us[s] else "-" for s in have]
                     + ([ratio_cell(us["kaiofs-uring"], us["kaiofs"])] if engines else [])
                     + [""])
    return table_lines(table)


def dircreate_lines(rows):
    lines = []
    by_sys = {}
    for r in rows:
        if r["phase"] == "scaling" and r["workload"] == "dircreate":
            by_sys.setdefault(r["system"], []).append(r)
    for s in SYSTEMS:
        rs = by_sys.get(s)
        if not rs:
            continue
        if rs[0]["status"] in ("ERR", "timeout"):
            lines.append("%-8s %s" % (s, rs[0]["status"]))
            continue
        rates = " ".join("%.0f" % r["iops"] for r in rs)
        lines.append("%-8s creates/s per window: %s" % (s, rates))
        first, last = rs[0]["iops"], rs[-1]["iops"]
        extra = ""
        if rs[-1]["status"] != "ok":
            extra = "; " + rs[-1]["status"]
        lines.append("%-8s %d entries; last window / first window rate %.2f%s"
                     % ("", rs[-1]["entries"], last / first, extra))
    return lines


def write_csv(out, rows):
    path = os.path.join(out, "scaling.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("%.6g" % r[k] if isinstance(r.get(k), float) else r.get(k, ""))
                        for k in CSV_FIELDS})
    return path


# ---------------------------------------------------------------- charts

def plot_lines(ax, rows, x_of, y_of, select):
    for s in SYSTEMS:
        pts = sorted((x_of(r), y_of(r)) for r in rows
                     if r["system"] == s and r["status"] == "ok" and select(r))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=TITLES[s], **STYLE[s])


def finish(fig, path, title, subtitle):
    width = int(fig.get_figwidth() * 12)
    fig.suptitle(title + "\n" + textwrap.fill(subtitle, width), fontsize=10)
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    fig.savefig(path, dpi=110)


def log2_axis(ax, ticks, labels):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)


def charts(out, rows, subtitle):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sweep_rows(rows)
    rws = [rw for rw in ("randread", "randwrite") if any(r["rw"] == rw for r in sweep)]
    paths = []
    if not rws:
        return paths

    # IOPS against iodepth, one job, for the smallest and the largest block size.
    depths = {}
    for r in sweep:
        if int(r["jobs"]) == 1:
            depths.setdefault(bs_bytes(r["bs"]), set()).add(int(r["iodepth"]))
    qd_bs = sorted(b for b, qds in depths.items() if len(qds) > 1)
    if qd_bs:
        fig, axes = plt.subplots(len(qd_bs), len(rws), figsize=(5.5 * len(rws), 4 * len(qd_bs)),
                                 squeeze=False)
        qds = sorted({int(r["iodepth"]) for r in sweep})
        for i, b in enumerate(qd_bs):
            for j, rw in enumerate(rws):
                ax = axes[i][j]
                plot_lines(ax, sweep, lambda r: int(r["iodepth"]), lambda r: r["iops"],
                           lambda r, b=b, rw=rw: r["rw"] == rw and bs_bytes(r["bs"]) == b
                           and int(r["jobs"]) == 1)
                ax.set_title("%s %s, 1 job" % (rw, bs_label(b)))
                ax.set_xlabel("iodepth")
                ax.set_ylabel("IOPS")
                log2_axis(ax, qds, [str(q) for q in qds])
        path = os.path.join(out, "iops_vs_iodepth.png")
        finish(fig, path, "IOPS vs iodepth", subtitle)
        plt.close(fig)
        paths.append(path)

    # MB/s against block size at the queue depth of the bs sweep, one job.
    qd_of_bs = max({int(r["iodepth"]) for r in sweep},
                   key=lambda q: len({r["bs"] for r in sweep if int(r["iodepth"]) == q}))
    sizes = sorted({bs_bytes(r["bs"]) for r in sweep if int(r["iodepth"]) == qd_of_bs})
    def against_bs(name, title, ylabel, y_of, points):
        fig, axes = plt.subplots(1, len(rws), figsize=(5.5 * len(rws), 4.2), squeeze=False)
        for j, rw in enumerate(rws):
            ax = axes[0][j]
            plot_lines(ax, points, lambda r: bs_bytes(r["bs"]), y_of,
                       lambda r, rw=rw: r["rw"] == rw and int(r["iodepth"]) == qd_of_bs
                       and int(r["jobs"]) == 1)
            ax.set_title("%s, iodepth %d, 1 job" % (rw, qd_of_bs))
            ax.set_xlabel("block size")
            ax.set_ylabel(ylabel)
            log2_axis(ax, sizes, [bs_label(b) for b in sizes])
        path = os.path.join(out, name)
        finish(fig, path, title, subtitle)
        plt.close(fig)
        paths.append(path)

    against_bs("mbs_vs_bs.png", "MB/s vs block size", "MB/s", lambda r: r["mb_s"], sweep)
    # CPU time per operation against block size, same points.
    against_bs("cpu_vs_bs.png", "CPU time per I/O vs block size",
               "busy CPU us per I/O (whole machine)", lambda r: r["cpu_us_op"],
               [r for r in sweep if r.get("cpu_us_op")])

    # IOPS against numjobs, smallest block size, at the queue depth of the bs sweep.
    jobs = sorted({int(r["jobs"]) for r in sweep})
    if len(jobs) > 1:
        small = min(bs_bytes(r["bs"]) for r in sweep if int(r["jobs"]) > 1)
        fig, axes = plt.subplots(1, len(rws), figsize=(5.5 * len(rws), 4.2), squeeze=False)
        for j, rw in enumerate(rws):
            ax = axes[0][j]
            plot_lines(ax, sweep, lambda r: int(r["jobs"]), lambda r: r["iops"],
                       lambda r, rw=rw: r["rw"] == rw and bs_bytes(r["bs"]) == small
                       and int(r["iodepth"]) == qd_of_bs)
            ax.set_title("%s %s, iodepth %d per job" % (rw, bs_label(small), qd_of_bs))
            ax.set_xlabel("numjobs")
            ax.set_ylabel("IOPS")
            log2_axis(ax, jobs, [str(x) for x in jobs])
        path = os.path.join(out, "iops_vs_jobs.png")
        finish(fig, path, "IOPS vs fio jobs", subtitle)
        plt.close(fig)
        paths.append(path)

    # Create rate against directory size.
    creates = [r for r in rows if r["phase"] == "scaling" and r["workload"] == "dircreate"
               and r.get("iops") is not None]
    if creates:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for s in SYSTEMS:
            pts = [(r["entries"], r["iops"]) for r in creates if r["system"] == s]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=TITLES[s], **STYLE[s])
            last = [r for r in creates if r["system"] == s][-1]
            if last["status"].startswith("stopped"):
                ax.annotate("stopped at %d" % last["entries"], (last["entries"], last["iops"]),
                            textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=8,
                            color=STYLE[s]["color"])
        ax.set_xlabel("entries in the directory (end of each window)")
        ax.set_ylabel("creates/s in the window")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        path = os.path.join(out, "create_rate_vs_dirsize.png")
        finish(fig, path, "create rate vs directory size (one directory)", subtitle)
        plt.close(fig)
        paths.append(path)
    return paths


def cmd_report(out):
    rows = rows_of(load_points(out))
    csv_path = write_csv(out, rows)
    header = read_header(out)
    lines = ["Scaling sweeps (fio libaio direct=1, random offsets over the region/file)", ""]
    sweep = sweep_rows(rows)
    lines += sweep_table(sweep) if sweep else ["  (not measured)"]
    if sweep:
        lines += ["", "CPU time per operation (busy CPU time of the whole machine, us; fio and the"
                  " loop device included):", ""]
        lines += sweep_cpu_table(sweep)
    lines.append("")
    lines.append("Creates in one directory:")
    lines += dircreate_lines(rows) or ["  (not measured)"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(out, "sweeps.txt"), "w") as f:
        f.write(text)
    try:
        pngs = charts(out, rows, header[0] if header else "")
    except ImportError as e:
        sys.stderr.write("no charts: %s (apt-get install python3-matplotlib)\n" % e)
        pngs = []
    print()
    print("CSV:    " + csv_path)
    for p in pngs:
        print("chart:  " + p)
    for name in ("targets.txt", "sweeps.txt"):
        if os.path.exists(os.path.join(out, name)):
            print("table:  " + os.path.join(out, name))
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "cpu":
        print(*cpu_sample())
        return 0
    if len(argv) == 5 and argv[1] == "meta":
        return cmd_meta(argv[2], int(argv[3]), argv[4] == "1")
    if len(argv) == 6 and argv[1] == "dircreate":
        return cmd_dircreate(argv[2], int(argv[3]), int(argv[4]), float(argv[5]))
    if len(argv) == 3 and argv[1] == "targets":
        return cmd_targets(argv[2])
    if len(argv) == 3 and argv[1] == "report":
        return cmd_report(argv[2])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
