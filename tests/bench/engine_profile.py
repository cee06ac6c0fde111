#!/usr/bin/python3
"""The table of tests/bench/engine_profile.sh:

    engine_profile.py DIR ROUNDS "NAME RW BS IODEPTH"...

DIR holds, per workload NAME, engine and round R: NAME-ENGINE-R.json (fio),
NAME-ENGINE-R.cpu (two lines of scaling.py cpu) and NAME-ENGINE-R.kaiofs.script
and .fio.script (perf script -F comm,pid,tid,ip,sym of each process)."""

import json
import os
import re
import sys

PIN = re.compile(r"^(gup_fast|__gup_longterm_locked|pin_user_pages|get_user_pages"
                 r"|iov_iter_extract|iov_iter_get_pages|__iov_iter_get_pages"
                 r"|(__)?bio_iov_iter_get_pages|try_grab_folio|unpin_user_page|unpin_folio"
                 r"|(__)?bio_release_pages|gup_put_folio)")
# Who pins: the engine's direct I/O on the device (the block layer's bio
# pages), or FUSE copying a request or reply through a buffer of kaiofs.
# Pinning in fio is FUSE's direct I/O of the application's buffer.
ENGINE = re.compile(r"^((__)?bio_iov_iter_get_pages|(__)?bio_release_pages)")
FUSE_COPY = re.compile(r"^fuse_copy_")


def shares(path):
    """{"samples", "engine", "fuse", "other"}: samples, and those whose call
    chain pins or unpins user pages, by who does it."""
    n = {"samples": 0, "engine": 0, "fuse": 0, "other": 0}
    frames = None

    def sample():
        if frames is None:
            return
        n["samples"] += 1
        if not any(PIN.match(f) for f in frames):
            return
        if any(ENGINE.match(f) for f in frames):
            n["engine"] += 1
        elif any(FUSE_COPY.match(f) for f in frames):
            n["fuse"] += 1
        else:
            n["other"] += 1

    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            if line[0] in " \t":
                parts = line.split()
                if len(parts) >= 2 and frames is not None:
                    frames.append(parts[1])
            else:
                sample()
                frames = []
    sample()
    return n


def run(tmp, name, engine, r, rw):
    base = "%s/%s-%s-%d" % (tmp, name, engine, r)
    with open(base + ".json") as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    d = job["write" if "write" in rw else "read"]
    mib = d["io_bytes"] / 1048576
    with open(base + ".cpu") as f:
        s = [[int(x) for x in line.split()] for line in f if line.strip()]
    busy_s = (s[1][0] - s[0][0]) / os.sysconf("SC_CLK_TCK")
    k = shares(base + ".kaiofs.script")
    f = shares(base + ".fio.script")
    total = k["samples"] + f["samples"]

    def pct(x):
        return 100.0 * x / total if total else 0.0

    return {"mbs": d["bw_bytes"] / 1e6, "us_mib": busy_s * 1e6 / mib if mib else 0.0,
            "samples": total, "engine": pct(k["engine"]), "fuse": pct(k["fuse"] + k["other"]),
            "app": pct(f["engine"] + f["fuse"] + f["other"]),
            "all": pct(k["engine"] + k["fuse"] + k["other"] + f["engine"] + f["fuse"]
                       + f["other"])}


def median(runs):
    runs = sorted(runs, key=lambda x: x["mbs"])
    return runs[len(runs) // 2]


def main(argv):
    tmp, rounds = argv[1], int(argv[2])
    workloads = [w.split() for w in argv[3:]]
    hdr = "%-10s %-6s %9s %11s %8s %9s %9s %9s %9s" % (
        "workload", "engine", "MB/s", "CPU us/MiB", "samples", "engine%", "fuse%", "app%",
        "all%")
    print()
    print(hdr)
    print("-" * len(hdr))
    for name, rw, _bs, _qd in workloads:
        res = {}
        for engine in ("aio", "uring"):
            res[engine] = median([run(tmp, name, engine, r, rw) for r in range(1, rounds + 1)])
            x = res[engine]
            print("%-10s %-6s %9.1f %11.1f %8d %9.2f %9.2f %9.2f %9.2f" % (
                name, engine, x["mbs"], x["us_mib"], x["samples"], x["engine"], x["fuse"],
                x["app"], x["all"]))
        a, u = res["aio"], res["uring"]
        print("%-10s %-6s %9.2f %11.2f" % (name, "u/a", u["mbs"] / a["mbs"] if a["mbs"] else 0,
                                           u["us_mib"] / a["us_mib"] if a["us_mib"] else 0))
    print()
    print("CPU us/MiB: busy CPU time of the whole machine per MiB moved. The other columns:"
          " shares (%) of the samples of kaiofs and fio together whose call chain pins or"
          " unpins user pages, by who does it: engine% the engine's direct I/O of arena"
          " buffers on the device (bio pages), fuse% FUSE copying requests and replies"
          " through kaiofs's buffers, app% FUSE's direct I/O of fio's buffer; all% their sum."
          " Unpinning at completion that runs in other threads (the loop device's worker)"
          " is not in these two processes' samples. Median round by MB/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
