"""Load: eight threads of mixed data and metadata operations on a 1 GiB ext4
volume mounted by kaiofs (the workload is tests/load_workload.py; read its
header for the operations and the model).

While the load runs, the daemon is sampled every second (VmRSS, VmHWM,
threads, open descriptors) and kaiofs-stat --json every five seconds: its
aio error count must stay 0. Afterwards:
  - the descriptor and thread counts of the daemon are back where they were
    before the load (polled, bounded);
  - the RSS after the warm-up (the first quarter) grew by no more than
    load_workload.rss_bound_kib() allows (max(8 MiB, 10%), doubled under
    AddressSanitizer; the reasons are given there);
  - every file's bytes, size, mode, link count, inode number, xattrs, every
    symlink and every directory listing match the model, through kaiofs;
  - kaiofs unmounts with exit status 0 and no sanitizer report, e2fsck -fn
    is clean, and the kernel's ext4 (read-only) reads the same tree.

Duration: KAIOFS_LOAD_SECONDS (default 120) for the "default" case, which is
part of the suite (about 125 s in all with the normal build). The
"long" case runs 600 s and is marked slow (KAIOFS_SLOW=1). The ten-minute
run on its own, with the report printed (tests/bench/load.sh wraps this):

    KAIOFS_LOAD_SECONDS=600 KAIOFS_BIN=build/src/kaiofs \\
        KAIOFS_STAT_BIN=build/src/kaiofs-stat \\
        /usr/bin/python3 -m pytest -p no:cacheprovider -s tests/test_load.py -k default

Other knobs: KAIOFS_LOAD_THREADS (8), KAIOFS_LOAD_OPTS (extra -o options of
the mount, e.g. io=cached), KAIOFS_LOAD_REPORT (write the figures there as
JSON), KAIOFS_SEED (the seed of every thread's choices).
"""

import json
import os
import re

import pytest

import fs_support
import kaiofs_helpers as kh
import load_workload as lw

GiB = 1 << 30
VOLUME_SIZE = GiB
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
                              r"SUMMARY: \w+Sanitizer")


def load_seconds(param):
    if param is not None:
        return param
    return float(os.environ.get("KAIOFS_LOAD_SECONDS", "120"))


def mount_options():
    extra = os.environ.get("KAIOFS_LOAD_OPTS", "")
    return tuple(o for o in extra.split(",") if o)


def daemon_env():
    """The environment of the daemon. Under AddressSanitizer freed memory
    waits in a quarantine (256 MiB by default) that fills over minutes of
    load and would read as growth of the RSS; 16 MiB fills within the
    warm-up, and a use after free of any of the last 16 MiB freed is still
    caught. An explicit quarantine_size_mb in ASAN_OPTIONS is kept."""
    if not kh.SANITIZER_BUILD:
        return None
    env = dict(os.environ)
    asan = env.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in asan:
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=16"
    return env


def write_report(rep):
    path = os.environ.get("KAIOFS_LOAD_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(rep, f, indent=1, sort_keys=True)


@pytest.mark.parametrize("seconds", [pytest.param(None, id="default"),
                                     pytest.param(600, id="long", marks=pytest.mark.slow)])
def test_mixed_load(volumes, workdir, seed, kaiofs_stat_bin, seconds):
    seconds = load_seconds(seconds)
    threads = int(os.environ.get("KAIOFS_LOAD_THREADS", "8"))
    dev = volumes.make("ext4", size=VOLUME_SIZE)
    m = volumes.mount(dev, options=mount_options(), watchdog=seconds + 900, env=daemon_env())
    mnt = m.mountpoint

    def stats():
        return kh.get_stats(kaiofs_stat_bin, mnt)

    run = lw.LoadRun(mnt, seconds, threads=threads, seed=seed, pid=m.pid, stat_fn=stats,
                     stuck_after=kh.tmo(120), sanitizer=kh.SANITIZER_BUILD)
    problems = []
    rep = None
    failure = None
    try:
        run.setup()
        run.run()
        run.quiesce(kh.tmo(30))
        rep = run.report()
        print(lw.format_report(rep))
        problems += lw.memory_problems(rep["memory"], kh.SANITIZER_BUILD)
        final = lw.stat_counters(stats())
        rep["kaiofs_stat_final"] = final
        print("kaiofs-stat after the load: " + ", ".join("%s %s" % kv for kv in final.items()))
        if final["aio_errors"]:
            problems.append("kaiofs-stat: %d aio errors" % final["aio_errors"])
        run.verify(mnt, "kaiofs")
    except lw.LoadFailed as e:
        failure = str(e)
    finally:
        if rep is not None:
            write_report(rep)
    if failure is not None:
        pytest.fail("%s\n\n(seed %d) kaiofs stderr (tail):\n%s"
                    % (failure, seed, m.stderr[-3000:]), pytrace=False)

    rc = m.stop(timeout=300)
    err = m.stderr
    assert rc == 0, "kaiofs exited with %r at unmount; stderr:\n%s" % (rc, err[-5000:])
    assert not SANITIZER_REPORT.search(err), "sanitizer report:\n%s" % err[-8000:]
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        try:
            run.verify(k, "kernel")
        except lw.LoadFailed as e:
            failure = str(e)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    rep["durations_s"] = {k: round(v, 1) for k, v in run.times.items()}
    write_report(rep)
    print("verified through kaiofs in %.1f s and the kernel's ext4 in %.1f s"
          % (run.times["verify kaiofs"], run.times["verify kernel"]))
    assert not problems, "; ".join(problems)


ZEROING_MODES = {
    lw.FALLOC_FL_PUNCH_HOLE | lw.FALLOC_FL_KEEP_SIZE: "PUNCH_HOLE",
    lw.FALLOC_FL_ZERO_RANGE: "ZERO_RANGE",
    lw.FALLOC_FL_ZERO_RANGE | lw.FALLOC_FL_KEEP_SIZE: "ZERO_RANGE|KEEP_SIZE",
}


def test_zeroing_from_a_block_start_to_inside_it(volumes, workdir):
    """PUNCH_HOLE and ZERO_RANGE of a range that starts on a block boundary
    and ends inside that block (a case the load runs into): those bytes
    read as zeros, through kaiofs and through the kernel's ext4."""
    bs = 4096
    dev = volumes.make("ext4", size=64 * kh.MiB, args=("-b", str(bs)))
    m = volumes.mount(dev)
    size = 4 * bs
    expected = {}
    for mode, mname in ZEROING_MODES.items():
        for off, length in ((0, 100), (bs, 100), (bs, 2023), (2 * bs, bs - 1)):
            name = "%s-%d-%d" % (mname.replace("|", "+"), off, length)
            exp = bytearray(b"x" * size)
            exp[off:off + length] = bytes(length)
            expected[name] = bytes(exp)
            fd = os.open(os.path.join(m.mountpoint, name), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                kh.pwrite_all(fd, b"x" * size, 0)
                lw.fallocate(fd, mode, off, length)
            finally:
                os.close(fd)

    def wrong(root):
        out = []
        for name, exp in sorted(expected.items()):
            got = kh.read_file(os.path.join(root, name))
            if got != exp:
                out.append("%s: %s" % (name, lw.describe_diff(got, exp, 0)))
        return out

    bad = wrong(m.mountpoint)
    fs_support.stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        bad_kernel = wrong(k)
    if bad or bad_kernel:
        pytest.fail("through kaiofs:\n  %s\nthrough the kernel's ext4:\n  %s" % (
            "\n  ".join(bad), "\n  ".join(bad_kernel)), pytrace=False)
