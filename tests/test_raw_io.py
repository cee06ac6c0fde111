"""Data path of the raw mode: random I/O against a model, fio verification,
concurrent unaligned writes, unmount under load and the statistics."""

import os
import random
import re
import signal
import subprocess
import threading
import time
import traceback

import pytest

import kaiofs_helpers as kh
from kaiofs_helpers import BLOCK, MiB, tmo

# --------------------------------------------------------------------------
# 1. random reads and writes checked against a model

NTHREADS = 4
OPS_PER_THREAD = 700
MAX_LEN = 2 * MiB


def _random_length(r):
    """1 byte .. 2 MiB, log-uniform so that small and large sizes both occur."""
    return max(1, min(MAX_LEN, int(2 ** r.uniform(0, 21))))


_TOTALS_LOCK = threading.Lock()


class OpLog:
    """The last operations of one thread, for failure messages."""

    def __init__(self, keep=12):
        self.keep = keep
        self.ops = []

    def add(self, *op):
        self.ops.append(op)
        del self.ops[:-self.keep]

    def __str__(self):
        return "; ".join("%s off=%d len=%d" % op for op in self.ops)


def _random_io_worker(tid, seed, fd, dfd, base, region, model, stop, failures, totals):
    r = random.Random(seed * 1000 + tid)
    log = OpLog()
    counts = dict.fromkeys(totals, 0)
    i = -1
    try:
        for i in range(OPS_PER_THREAD):
            if stop.is_set():
                return
            choice = r.random()
            if choice < 0.2:
                # O_DIRECT through the FUSE file: page aligned buffer, 4K aligned
                length = r.randint(1, MAX_LEN // BLOCK) * BLOCK
                off = base + r.randrange(0, (region - length) // BLOCK + 1) * BLOCK
                if r.random() < 0.5:
                    data = r.randbytes(length)
                    log.add("direct-write", off, length)
                    n = kh.direct_pwrite(dfd, data, off)
                    if n != length:
                        raise AssertionError("short O_DIRECT write: %d of %d" % (n, length))
                    model[off:off + length] = data
                    counts["direct-write"] += 1
                else:
                    log.add("direct-read", off, length)
                    got = kh.direct_pread(dfd, length, off)
                    msg = kh.describe_difference(got, model[off:off + length], off)
                    if msg:
                        raise AssertionError("O_DIRECT read: " + msg)
                    counts["direct-read"] += 1
                continue
            if r.random() < 0.25:
                length = r.randint(1, MAX_LEN // BLOCK) * BLOCK
                off = base + r.randrange(0, (region - length) // BLOCK + 1) * BLOCK
            else:
                length = _random_length(r)
                off = base + r.randrange(0, region - length + 1)
            if r.random() < 0.55:
                data = r.randbytes(length)
                log.add("write", off, length)
                kh.pwrite_all(fd, data, off)
                model[off:off + length] = data
                counts["write"] += 1
            else:
                log.add("read", off, length)
                got = kh.pread_exact(fd, length, off)
                msg = kh.describe_difference(got, model[off:off + length], off)
                if msg:
                    raise AssertionError("read: " + msg)
                counts["read"] += 1
    except BaseException as e:  # reported by the main thread
        stop.set()
        detail = "%s: %s" % (type(e).__name__, e)
        if not isinstance(e, AssertionError):
            detail += "\n" + traceback.format_exc()
        failures.append("thread %d op #%d failed: %s\n  recent ops: %s"
                        % (tid, i, detail, log))
    finally:
        with _TOTALS_LOCK:
            for key, value in counts.items():
                totals[key] += value


def _check_image(device, model, what="image after unmount"):
    kh.assert_same_data(device.read_all(), model, what)


def test_random_io_against_model(device, mounter, seed, engine):
    model = bytearray(device.read_all())
    m = mounter.mount(device, options=("raw", engine))
    assert os.listdir(m.mountpoint) == [device.name]
    assert os.stat(m.file).st_size == device.size

    fd = os.open(m.file, os.O_RDWR)
    try:
        dfd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    except OSError as e:
        os.close(fd)
        pytest.fail("open(O_RDWR|O_DIRECT) on the kaiofs file failed: %s" % e)
    region = device.size // NTHREADS // BLOCK * BLOCK
    stop = threading.Event()
    failures = []
    counts = {"write": 0, "read": 0, "direct-write": 0, "direct-read": 0}
    threads = [threading.Thread(target=_random_io_worker,
                                args=(t, seed, fd, dfd, t * region, region, model,
                                      stop, failures, counts), daemon=True)
               for t in range(NTHREADS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=tmo(300))
        assert not any(t.is_alive() for t in threads), "I/O threads hung"
        assert not failures, "\n".join(failures)
        print("operations:", counts)
        assert sum(counts.values()) == NTHREADS * OPS_PER_THREAD

        # whole file through the mount, buffered and O_DIRECT
        for off in range(0, device.size, 4 * MiB):
            got = kh.pread_exact(fd, 4 * MiB, off)
            kh.assert_same_data(got, model[off:off + 4 * MiB], "full read via mount", off)
        got = kh.direct_pread(dfd, 4 * MiB, device.size - 4 * MiB)
        kh.assert_same_data(got, model[-4 * MiB:], "O_DIRECT read of the tail",
                            device.size - 4 * MiB)
    finally:
        stop.set()
        os.close(dfd)
        os.close(fd)
    assert m.stop() == 0, m.stderr
    _check_image(device, model)


# --------------------------------------------------------------------------
# 2. fio verification on the mounted file


def _fio_jobs(kind, filename):
    common = ["--filename=" + filename, "--verify=crc32c", "--verify_fatal=1",
              "--do_verify=1", "--fallocate=none", "--randrepeat=1"]
    if kind == "libaio":
        return ["--name=v", "--size=32M", "--rw=randwrite", "--bs=4k",
                "--ioengine=libaio", "--direct=1", "--iodepth=32"] + common
    if kind == "psync-8jobs":
        return ["--name=v", "--size=4M", "--offset_increment=4M", "--numjobs=8",
                "--rw=randwrite", "--bs=4k", "--ioengine=psync", "--direct=1"] + common
    if kind == "psync-bsrange":
        return ["--name=v", "--size=32M", "--rw=randwrite", "--bsrange=512-256k",
                "--ioengine=psync", "--direct=0"] + common
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["libaio",
                                  pytest.param("psync-8jobs", marks=pytest.mark.slow),
                                  pytest.param("psync-bsrange", marks=pytest.mark.slow)])
def test_fio_verify(device, mounter, fio_bin, kind, engine):
    before = device.read_all()
    m = mounter.mount(device, options=("raw", engine))
    r = kh.run_fio(_fio_jobs(kind, m.file), cwd=m.logdir)
    out = kh.check_fio(r, "fio %s on the kaiofs file" % kind)
    assert re.search(r"(?m)^\s*WRITE: bw=", out), out[-3000:]
    assert re.search(r"(?m)^\s*READ: bw=", out), "fio did not read back for verify:\n" + out[-3000:]
    assert m.stop() == 0, m.stderr

    # The image itself must verify with the same job (fio replays the same
    # offsets and checks the headers it wrote).
    r = kh.run_fio(_fio_jobs(kind, device.backing) + ["--verify_only"], cwd=m.logdir)
    kh.check_fio(r, "fio --verify_only on the image after unmount")
    # bytes past what fio touched are unchanged
    after = device.read_all()
    kh.assert_same_data(after[32 * MiB:], before[32 * MiB:], "image beyond the fio area",
                        32 * MiB)


# --------------------------------------------------------------------------
# 3. concurrent overlapping unaligned writes (read-modify-write races)


@pytest.mark.slow
@pytest.mark.parametrize("stripe,iterations", [(100, 25), (3000, 250), (4096, 200)],
                         ids=["stripe100", "stripe3000", "stripe4096"])
def test_concurrent_unaligned_stripes(device, mounter, seed, stripe, iterations):
    """Threads own interleaved byte stripes that share 4 KiB blocks; every
    stripe must end with the last value its owner wrote. A read-modify-write
    that used stale block contents would revert a neighbour's stripe.

    Synchronous writes to one inode are serialized by the kernel, so this
    mostly checks the sequential read-modify-write path; the _aio variant
    below gets the writes into kaiofs concurrently."""
    nthreads = 4
    start = 5 * BLOCK + 1234            # unaligned start
    nstripes = max(nthreads * 3, (10 * BLOCK) // stripe)
    end = start + nstripes * stripe
    model = bytearray(device.read_all())
    m = mounter.mount(device)

    owner = [k % nthreads for k in range(nstripes)]
    last = [None] * nstripes
    stop = threading.Event()
    failures = []
    barrier = threading.Barrier(nthreads)

    def worker(tid):
        r = random.Random(seed + tid)
        mine = [k for k in range(nstripes) if owner[k] == tid]
        fd = os.open(m.file, os.O_RDWR)
        try:
            barrier.wait(timeout=tmo(30))
            for it in range(iterations):
                r.shuffle(mine)
                for k in mine:
                    if stop.is_set():
                        return
                    value = 1 + (tid * 64 + it) % 255
                    data = bytes([value]) * stripe
                    kh.pwrite_all(fd, data, start + k * stripe)
                    last[k] = value
        except BaseException as e:
            stop.set()
            failures.append("thread %d: %s: %s" % (tid, type(e).__name__, e))
        finally:
            os.close(fd)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True)
               for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=tmo(240))
    assert not any(t.is_alive() for t in threads), "writer threads hung"
    assert not failures, failures

    for k in range(nstripes):
        model[start + k * stripe:start + (k + 1) * stripe] = bytes([last[k]]) * stripe

    def check(data, what):
        bad = []
        for k in range(nstripes):
            got = data[start + k * stripe:start + (k + 1) * stripe]
            if got != bytes([last[k]]) * stripe:
                bad.append("stripe %d (owner %d, offset %d): expected all 0x%02x, got %s"
                           % (k, owner[k], start + k * stripe, last[k],
                              sorted(set(got))[:8]))
        assert not bad, "%s: %d lost updates, e.g. %s" % (what, len(bad), "; ".join(bad[:5]))

    with open(m.file, "rb") as f:
        via_mount = f.read()
    check(via_mount, "read through the mount")
    kh.assert_same_data(via_mount, model, "whole file through the mount")
    assert m.stop() == 0, m.stderr
    image = device.read_all()
    check(image, "image after unmount")
    kh.assert_same_data(image, model, "image after unmount")
    assert end < device.size


@pytest.mark.skipif(not kh.native_aio_available(), reason="no native AIO syscall table")
@pytest.mark.parametrize("stripe", [100, 1000, 3000, 5000])
def test_concurrent_unaligned_stripes_aio(device, mounter, kaiofs_stat_bin, seed, stripe):
    """Same ownership check, but with O_DIRECT + native AIO so that many
    unaligned writes sharing 4 KiB blocks are in kaiofs at the same time
    (synchronous writes to one inode are serialized by the kernel).
    Each round submits every stripe once and waits for all of them; the
    final content of every stripe is the value of the last round."""
    r = random.Random(seed)
    rounds = 40
    start = 3 * BLOCK + 777
    nstripes = max(16, (24 * BLOCK) // stripe)
    slot = (stripe + BLOCK - 1) // BLOCK * BLOCK
    model = bytearray(device.read_all())
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    aio = kh.NativeAio(nstripes + 8)
    bufs = kh.aligned_buffer(nstripes * slot)
    last = [None] * nstripes
    try:
        for rnd in range(rounds):
            order = list(range(nstripes))
            r.shuffle(order)
            reqs = []
            for k in order:
                value = 1 + (k * 7 + rnd) % 255
                bufs[k * slot:k * slot + stripe] = bytes([value]) * stripe
                last[k] = value
                reqs.append((k, kh.IOCB_CMD_PWRITE, fd, kh.buffer_address(bufs, k * slot),
                             stripe, start + k * stripe))
            # submit in a few chunks so batching differs between rounds
            keep = []
            cut = sorted(r.sample(range(1, nstripes), 3))
            for a, b in zip([0] + cut, cut + [nstripes]):
                keep.append(aio.submit(reqs[a:b]))
            results = {}
            deadline = time.monotonic() + tmo(60)
            while len(results) < nstripes:
                assert time.monotonic() < deadline, "AIO writes did not complete"
                for tag, res in aio.getevents(1, nstripes, 5):
                    results[tag] = res
            bad = {k: v for k, v in results.items() if v != stripe}
            assert not bad, "round %d: unexpected AIO results %r" % (rnd, bad)
            del keep
        stats = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
        print("aio stats:", stats["aio"], "fuse extras:",
              {k: v for k, v in stats["fuse"].items() if k not in ("requests",)})
    finally:
        aio.close()
        os.close(fd)
        bufs.close()
    for k in range(nstripes):
        model[start + k * stripe:start + (k + 1) * stripe] = bytes([last[k]]) * stripe

    def check(data, what):
        lost = []
        for k in range(nstripes):
            got = data[start + k * stripe:start + (k + 1) * stripe]
            if got != bytes([last[k]]) * stripe:
                lost.append("stripe %d at %d: expected 0x%02x, holds %s"
                            % (k, start + k * stripe, last[k],
                               ",".join("%02x" % b for b in sorted(set(got))[:6])))
        assert not lost, "%s: %d of %d stripes lost their last update, e.g. %s" % (
            what, len(lost), nstripes, "; ".join(lost[:5]))

    with open(m.file, "rb") as f:
        via_mount = f.read()
    check(via_mount, "read through the mount")
    kh.assert_same_data(via_mount, model, "whole file through the mount")
    assert m.stop() == 0, m.stderr
    image = device.read_all()
    check(image, "image after unmount")
    kh.assert_same_data(image, model, "image after unmount")


def _serial_order_violation(writes, before, after, base):
    """writes: list of (id, offset, length) relative to base, each filling its
    range with the byte id. Returns None when `after` is explained by
    applying the writes in some serial order to `before`, else a message."""
    cover = [[] for _ in range(len(after))]
    for wid, off, length in writes:
        for i in range(off, off + length):
            cover[i].append(wid)
    edges = {wid: set() for wid, _, _ in writes}   # a -> b: a before b
    for i, ids in enumerate(cover):
        got = after[i]
        if not ids:
            if got != before[i]:
                return "byte %d changed (0x%02x -> 0x%02x) though no write covered it" % (
                    base + i, before[i], got)
            continue
        if got not in ids:
            return "byte %d holds 0x%02x, not the value of any write covering it %r" % (
                base + i, got, ids)
        for other in ids:
            if other != got:
                edges[other].add(got)
    # the precedence graph must be acyclic
    indeg = {w: 0 for w in edges}
    for a in edges:
        for b in edges[a]:
            indeg[b] += 1
    ready = [w for w, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for b in edges[a]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    if seen != len(edges):
        cyc = sorted(w for w, d in indeg.items() if d > 0)
        detail = ["id %d @%d+%d" % (w, base + o, l) for w, o, l in writes if w in cyc]
        return ("no serial order explains the result: writes %s overlap inconsistently "
                "(a torn or lost update)" % ", ".join(detail[:8]))
    return None


@pytest.mark.skipif(not kh.native_aio_available(), reason="no native AIO syscall table")
def test_overlapping_aio_writes_serializable(device, mounter, seed):
    """Many overlapping unaligned O_DIRECT writes in flight at once: the
    result must be as if they were applied one after another."""
    r = random.Random(seed)
    base = 2 * BLOCK + 333
    window = 12 * BLOCK
    nwrites = 48
    rounds = 30
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    aio = kh.NativeAio(nwrites + 8)
    slot = 4 * BLOCK
    bufs = kh.aligned_buffer(nwrites * slot)
    try:
        state = kh.direct_pread(fd, 16 * BLOCK, 0)[base:base + window]
        assert len(state) == window
        for rnd in range(rounds):
            writes = []
            reqs = []
            for j in range(nwrites):
                wid = 1 + (j + rnd * 5) % 255
                length = r.choice([r.randint(1, 600), r.randint(1, 3 * BLOCK)])
                off = r.randrange(0, window - length + 1)
                writes.append((wid, off, length))
                bufs[j * slot:j * slot + length] = bytes([wid]) * length
                reqs.append((j, kh.IOCB_CMD_PWRITE, fd, kh.buffer_address(bufs, j * slot),
                             length, base + off))
            keep = aio.submit(reqs)
            results = {}
            deadline = time.monotonic() + tmo(60)
            while len(results) < nwrites:
                assert time.monotonic() < deadline, "AIO writes did not complete"
                for tag, res in aio.getevents(1, nwrites, 5):
                    results[tag] = res
            del keep
            bad = {j: res for j, res in results.items() if res != writes[j][2]}
            assert not bad, "round %d: AIO results %r" % (rnd, bad)
            after = kh.direct_pread(fd, 16 * BLOCK, 0)[base:base + window]
            msg = _serial_order_violation(writes, state, after, base)
            assert msg is None, "round %d: %s" % (rnd, msg)
            state = after
    finally:
        aio.close()
        os.close(fd)
        bufs.close()
    assert m.stop() == 0, m.stderr
    assert device.read(base, window) == state, "image differs from the last state read"


# --------------------------------------------------------------------------
# 4. unmount while writes are in flight


class Writers:
    """Threads appending non-overlapping chunks to their own regions and
    recording every write that reported success."""

    def __init__(self, path, size, seed, nthreads=3, direct_thread=True):
        self.path = path
        self.nthreads = nthreads
        self.region = size // nthreads // BLOCK * BLOCK
        self.seed = seed
        self.direct_thread = direct_thread
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = []       # (offset, data) that returned success
        self.unknown = []    # (offset, length) of writes that failed
        self.errors = []
        self.finished = 0
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(nthreads)]

    def start(self):
        for t in self.threads:
            t.start()

    def count(self):
        with self.lock:
            return len(self.done)

    def _run(self, tid):
        r = random.Random(self.seed * 7 + tid)
        direct = self.direct_thread and tid == self.nthreads - 1
        flags = os.O_RDWR | (os.O_DIRECT if direct else 0)
        fd = None
        try:
            fd = os.open(self.path, flags)
            off = tid * self.region
            limit = off + self.region
            while not self.stop.is_set():
                if direct:
                    length = r.randint(1, 32) * BLOCK
                else:
                    length = r.randint(1, 64 * 1024)
                if off + length > limit:
                    break
                data = r.randbytes(length)
                try:
                    if direct:
                        n = kh.direct_pwrite(fd, data, off)
                    else:
                        n = os.pwrite(fd, data, off)
                except OSError as e:
                    with self.lock:
                        self.unknown.append((off, length))
                        self.errors.append(e.errno)
                    break
                with self.lock:
                    self.done.append((off, data[:n]))
                    if n < length:
                        self.unknown.append((off + n, length - n))
                        self.errors.append("short write %d/%d" % (n, length))
                if n < length:
                    break
                off += length
        except OSError as e:
            with self.lock:
                self.errors.append(e.errno)
        finally:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            with self.lock:
                self.finished += 1

    def join(self, timeout):
        for t in self.threads:
            t.join(timeout=timeout)
        return not any(t.is_alive() for t in self.threads)

    def expected_image(self, initial, actual):
        model = bytearray(initial)
        for off, data in self.done:
            model[off:off + len(data)] = data
        # writes that failed may or may not have reached the device
        for off, length in self.unknown:
            model[off:off + length] = actual[off:off + length]
        return model


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount"])
def test_unmount_during_writes(device, mounter, seed, how):
    initial = device.read_all()
    m = mounter.mount(device)
    w = Writers(m.file, device.size, seed)
    w.start()
    try:
        assert kh.wait_for(lambda: w.count() >= 150 or w.finished, tmo(60)), \
            "writers made no progress"
        assert not w.finished, "writers stopped early: %r" % w.errors
        if how in ("SIGTERM", "SIGINT"):
            m.signal(getattr(signal, how))
            rc = m.wait(timeout=30)
            assert rc is not None, "kaiofs did not exit within 30s of %s" % how
            assert rc == 0, "kaiofs exited with %d after %s; stderr:\n%s" % (rc, how, m.stderr)
            assert kh.wait_for(lambda: not m.mounted(), tmo(10)), "still mounted"
            # the writers must now fail (connection gone) rather than hang
            assert w.join(tmo(30)), "writers hung after the daemon exited"
        else:
            r = m.unmount()
            if r.returncode != 0:
                # busy because files are open: detach lazily instead
                r = m.unmount(lazy=True)
                assert r.returncode == 0, r.stderr
            assert kh.wait_for(lambda: not m.mounted(), tmo(10)), "still mounted"
            # open files keep working after a lazy unmount; then let them go
            n = w.count()
            kh.wait_for(lambda: w.count() >= n + 50 or w.finished == w.nthreads, tmo(30))
            w.stop.set()
            assert w.join(tmo(60)), "writers hung"
            rc = m.wait(timeout=30)
            assert rc is not None, "kaiofs did not exit after the lazy unmount and close"
            assert rc == 0, "kaiofs exited with %d; stderr:\n%s" % (rc, m.stderr)
    finally:
        w.stop.set()
        w.join(tmo(30))
    print("successful writes: %d, failures: %r" % (len(w.done), w.errors))
    assert len(w.done) >= 150
    assert not kh.fuse_mounted_at(m.mountpoint)
    actual = device.read_all()
    kh.assert_same_data(actual, w.expected_image(initial, actual),
                        "image after %s (only successful writes checked)" % how)


# --------------------------------------------------------------------------
# 5. statistics


def _num(d, *path):
    for key in path:
        assert isinstance(d, dict) and key in d, "stats: missing key %s in %r" % (
            "/".join(path), d)
        d = d[key]
    assert isinstance(d, (int, float)) and not isinstance(d, bool), \
        "stats: %s is not a number: %r" % ("/".join(path), d)
    return d


def _op_count(requests, name):
    return sum(v for k, v in requests.items() if k.lower() == name)


def _check_stats_shape(s):
    for section in ("aio", "arena", "fuse"):
        assert isinstance(s.get(section), dict), "stats: no object %r in %r" % (section, s)
    top = s.get("iocbs_per_submit")
    assert isinstance(top, float) or isinstance(top, int), \
        "stats: top-level iocbs_per_submit missing or not a number: %r" % top
    for key in ("submits", "iocbs", "in_flight", "in_flight_peak", "completions", "errors"):
        v = _num(s, "aio", key)
        assert v >= 0 and v == int(v), "aio.%s = %r" % (key, v)
    _num(s, "aio", "iocbs_per_submit")
    for key in ("size", "in_use", "peak", "waits", "allocs"):
        v = _num(s, "arena", key)
        assert v >= 0 and v == int(v), "arena.%s = %r" % (key, v)
    req = s["fuse"].get("requests")
    assert isinstance(req, dict) and req, "fuse.requests: %r" % req
    for k, v in req.items():
        assert isinstance(k, str) and isinstance(v, int) and v >= 0, (k, v)
    _num(s, "fuse", "bytes_read")
    _num(s, "fuse", "bytes_written")


def _check_stats_consistent(s, arena_size=None, live=False):
    """Relations between counters. A snapshot taken while I/O runs reads the
    counters one by one, so (live=True) only single-counter bounds apply."""
    aio, arena = s["aio"], s["arena"]
    assert arena["in_use"] <= arena["size"], arena
    assert arena["peak"] <= arena["size"], arena
    if arena_size is not None:
        assert arena["size"] == arena_size, arena
    if live:
        return
    assert aio["in_flight"] <= aio["in_flight_peak"], aio
    assert aio["completions"] <= aio["iocbs"], aio
    if aio["submits"]:
        ratio = aio["iocbs"] / aio["submits"]
        assert abs(aio["iocbs_per_submit"] - ratio) <= 0.01 + 0.01 * ratio, aio
        assert abs(s["iocbs_per_submit"] - ratio) <= 0.01 + 0.01 * ratio, (s["iocbs_per_submit"], aio)
    assert arena["in_use"] <= arena["peak"], arena


def _wait_idle(stat_bin, mnt):
    def idle():
        s = kh.get_stats(stat_bin, mnt)
        # idle: only the FUSE receive buffers are left in the arena
        arena = s["arena"]
        return s if s["aio"]["in_flight"] == 0 and arena["in_use"] == arena["rx_buffers"] else None
    s = kh.wait_for(idle, tmo(10), interval=0.1)
    assert s, "kaiofs never became idle: %r" % kh.get_stats(stat_bin, mnt)
    return s


def _fio_stats_job(filename, rw, extra=()):
    return ["--name=st", "--filename=" + filename, "--size=32M", "--rw=" + rw, "--bs=4k",
            "--ioengine=libaio", "--direct=1", "--iodepth=32", "--fallocate=none",
            "--randrepeat=1"] + list(extra)


def test_stats_under_fio(file_device, mounter, kaiofs_stat_bin, fio_bin):
    dev = file_device
    m = mounter.mount(dev)
    s0 = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
    _check_stats_shape(s0)
    _check_stats_consistent(s0, arena_size=64 * MiB)

    # randwrite with verify (reads back), then a few seconds of randread
    write_job = _fio_stats_job(m.file, "randwrite",
                               ["--verify=crc32c", "--verify_fatal=1", "--do_verify=1"])
    proc = subprocess.Popen(kh.fio_argv(write_job), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=m.logdir)
    samples = []
    while proc.poll() is None and len(samples) < 2000:
        samples.append(kh.get_stats(kaiofs_stat_bin, m.mountpoint))
        time.sleep(0.2)   # sampling interval, not synchronisation
    out, _ = proc.communicate(timeout=tmo(180))
    kh.check_fio(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""),
                 "fio randwrite+verify")
    for s in samples:
        _check_stats_shape(s)
        _check_stats_consistent(s, arena_size=64 * MiB, live=True)

    r = kh.run_fio(_fio_stats_job(m.file, "randread", ["--time_based", "--runtime=3"]),
                   cwd=m.logdir)
    kh.check_fio(r, "fio randread")

    s = _wait_idle(kaiofs_stat_bin, m.mountpoint)
    _check_stats_shape(s)
    _check_stats_consistent(s, arena_size=64 * MiB)
    aio, arena, fuse = s["aio"], s["arena"], s["fuse"]
    print("stats after fio:", s)
    assert s["iocbs_per_submit"] > 1.0, \
        "io_submit batching: %r iocbs per submit under iodepth=32" % s["iocbs_per_submit"]
    assert aio["iocbs_per_submit"] > 1.0, aio
    assert aio["submits"] > 0 and aio["iocbs"] > aio["submits"], aio
    assert aio["in_flight_peak"] > 1, aio
    assert aio["completions"] == aio["iocbs"], "idle but completions != iocbs: %r" % aio
    assert aio["errors"] == 0, aio
    assert arena["allocs"] > 0 and arena["peak"] > 0, arena
    assert fuse["bytes_written"] >= 32 * MiB, fuse
    assert fuse["bytes_read"] >= 32 * MiB, fuse
    assert _op_count(fuse["requests"], "write") > 0, fuse["requests"]
    assert _op_count(fuse["requests"], "read") > 0, fuse["requests"]
    # monotonic counters never go backwards
    seq = [s0] + samples + [s]
    for a, b in zip(seq, seq[1:]):
        for key in ("submits", "iocbs", "completions", "in_flight_peak"):
            assert b["aio"][key] >= a["aio"][key], (key, a["aio"], b["aio"])
        assert b["fuse"]["bytes_written"] >= a["fuse"]["bytes_written"]
        assert b["fuse"]["bytes_read"] >= a["fuse"]["bytes_read"]

    r = kh.run_stat(kaiofs_stat_bin, m.mountpoint, json_output=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "kaiofs-stat without --json printed nothing"

    assert m.stop() == 0, m.stderr
    r = kh.run_fio(_fio_stats_job(dev.backing, "randwrite",
                                  ["--verify=crc32c", "--verify_fatal=1", "--verify_only"]),
                   cwd=m.logdir)
    kh.check_fio(r, "fio --verify_only on the image after unmount")


ENGINE_KEYS = {"engine", "submits", "iocbs", "iocbs_per_submit", "completions", "errors",
               "eagain", "short_io", "in_flight", "in_flight_peak", "queued", "queued_peak"}


def test_stats_name_the_engine(file_device, mounter, kaiofs_stat_bin, fio_bin, engine):
    """The statistics say which engine runs, under the same keys for both;
    with io_uring every read and write goes out from the registered arena
    on the registered device, on each of the rings."""
    name = engine.split("=", 1)[1]
    m = mounter.mount(file_device, options=("raw", engine, "reapers=2"))
    kh.check_fio(kh.run_fio(_fio_stats_job(m.file, "randrw", ["--io_size=8M"]), cwd=m.logdir),
                 "fio randrw")
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    s = _wait_idle(kaiofs_stat_bin, m.mountpoint)
    _check_stats_shape(s)
    _check_stats_consistent(s, arena_size=64 * MiB)
    assert s["engine"] == name and s["aio"]["engine"] == name, s["aio"]
    assert set(s["aio"]) == ENGINE_KEYS, sorted(s["aio"])
    aio = s["aio"]
    assert aio["errors"] == 0 and aio["iocbs"] == aio["completions"] > 2000, aio
    fsyncs = s["latency"]["device"]["fsync"]["count"]
    assert fsyncs >= 1, s["latency"]["device"]["fsync"]
    if name == "uring":
        u = s["uring"]
        assert u["rings"] == 2 and u["registered_bytes"] == 2 * 64 * MiB, u
        assert u["sq_entries"] >= 128 and u["cq_entries"] >= u["sq_entries"], u
        assert u["fixed_buffer_ios"] == aio["iocbs"] - fsyncs, (u, aio)
        assert u["other_buffer_ios"] == 0 and u["fixed_file_ios"] == aio["iocbs"], (u, aio)
    else:
        assert "uring" not in s, s["uring"]
    table = kh.run_stat(kaiofs_stat_bin, m.mountpoint, json_output=False).stdout
    assert table.splitlines()[0] == "%s engine" % name, table
    calls = "io_uring_enter" if name == "uring" else "io_submit calls"
    assert re.search(r"(?m)^  %s +%d +iocbs" % (calls, aio["submits"]), table), table
    r = subprocess.run([kaiofs_stat_bin, "--watch", "0.05", "--count", "1", m.mountpoint],
                       capture_output=True, text=True, timeout=tmo(20))
    assert r.returncode == 0, r.stderr
    header, line = r.stdout.splitlines()
    assert header.split()[-1] == "engine" and line.split()[-1] == name, r.stdout
    assert m.stop() == 0, m.stderr


def test_queue_depth_and_arena_options_in_stats(file_device, mounter, kaiofs_stat_bin,
                                                fio_bin):
    before = kh.sha256_file(file_device.backing)
    m = mounter.mount(file_device, options=("raw", "queue_depth=4", "arena=8M"))
    r = kh.run_fio(_fio_stats_job(m.file, "randread", ["--time_based", "--runtime=2"]),
                   cwd=m.logdir)
    kh.check_fio(r, "fio randread")
    s = _wait_idle(kaiofs_stat_bin, m.mountpoint)
    _check_stats_shape(s)
    _check_stats_consistent(s, arena_size=8 * MiB)
    assert 1 <= s["aio"]["in_flight_peak"] <= 4, \
        "queue_depth=4 but in_flight_peak=%r" % s["aio"]["in_flight_peak"]
    assert s["aio"]["errors"] == 0
    assert s["fuse"]["bytes_read"] > 0
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(file_device.backing) == before, "reads changed the image"


@pytest.mark.parametrize("how", ["fusermount", "SIGTERM"])
def test_stats_option_prints_table_at_unmount(file_device, mounter, kaiofs_stat_bin, how):
    m = mounter.mount(file_device, options=("raw", "stats"))
    data = os.urandom(3 * BLOCK + 17)
    fd = os.open(m.file, os.O_RDWR)
    try:
        kh.pwrite_all(fd, data, 12345)
        assert kh.pread_exact(fd, len(data), 12345) == data
    finally:
        os.close(fd)
    s = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
    assert s["fuse"]["bytes_written"] >= len(data)
    assert not m.stderr.strip(), "stderr before unmount: %r" % m.stderr
    if how == "fusermount":
        assert m.stop() == 0, m.stderr
    else:
        m.signal(signal.SIGTERM)
        assert m.wait(30) == 0, m.stderr
    err = m.stderr
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) >= 3, "expected a statistics table on stderr, got %r" % err
    assert re.search(r"\d", err) and re.search(r"(?i)iocb|submit|aio", err), err
    assert file_device.read(12345, len(data)) == data


@pytest.mark.parametrize("iodepth", [1, 8])
def test_in_flight_peak_bounded_by_application_depth(file_device, mounter, kaiofs_stat_bin,
                                                     fio_bin, iodepth):
    """Aligned 4 KiB O_DIRECT reads map to one device iocb each, so kaiofs
    can never have more iocbs in flight than fio keeps outstanding."""
    before = kh.sha256_file(file_device.backing)
    m = mounter.mount(file_device)
    job = ["--name=qd", "--filename=" + m.file, "--size=32M", "--rw=randread", "--bs=4k",
           "--ioengine=libaio", "--direct=1", "--iodepth=%d" % iodepth,
           "--time_based", "--runtime=2"]
    kh.check_fio(kh.run_fio(job, cwd=m.logdir), "fio randread iodepth=%d" % iodepth)
    s = _wait_idle(kaiofs_stat_bin, m.mountpoint)
    assert s["aio"]["iocbs"] > 1000, s["aio"]
    assert 1 <= s["aio"]["in_flight_peak"] <= iodepth, \
        "fio kept at most %d reads outstanding but aio.in_flight_peak=%d (%r)" % (
            iodepth, s["aio"]["in_flight_peak"], s["aio"])
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(file_device.backing) == before


def test_arena_pressure(file_device, mounter, kaiofs_stat_bin, fio_bin):
    """The smallest arena with many large requests outstanding: requests wait
    for arena space instead of failing or deadlocking, and data verifies."""
    m = mounter.mount(file_device, options=("raw", "arena=4M"))
    job = ["--name=ap", "--filename=" + m.file, "--size=32M", "--rw=randwrite",
           "--bsrange=64k-1m", "--ioengine=libaio", "--direct=1", "--iodepth=16",
           "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--fallocate=none",
           "--randrepeat=1"]
    kh.check_fio(kh.run_fio(job, cwd=m.logdir), "fio with a 4M arena")
    s = _wait_idle(kaiofs_stat_bin, m.mountpoint)
    _check_stats_consistent(s, arena_size=4 * MiB)
    print("arena:", s["arena"])
    assert s["aio"]["errors"] == 0
    assert m.stop() == 0, m.stderr
    job[1] = "--filename=" + file_device.backing
    kh.check_fio(kh.run_fio(job + ["--verify_only"], cwd=m.logdir),
                 "fio --verify_only on the image after unmount")


def test_large_single_requests(device, mounter):
    """Single reads and writes much larger than a FUSE request."""
    model = bytearray(device.read_all())
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR)
    dfd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    try:
        data = os.urandom(16 * MiB + 12345)
        off = 3 * MiB + 4321
        kh.pwrite_all(fd, data, off)
        model[off:off + len(data)] = data
        data = os.urandom(12 * MiB)
        off = 40 * MiB
        assert kh.direct_pwrite(dfd, data, off) == len(data)
        model[off:off + len(data)] = data
        got = kh.direct_pread(dfd, 24 * MiB, 2 * MiB)
        kh.assert_same_data(got, model[2 * MiB:26 * MiB], "24 MiB O_DIRECT read", 2 * MiB)
        got = kh.pread_exact(fd, device.size - 1001, 1001)
        kh.assert_same_data(got, model[1001:], "whole-file read", 1001)
    finally:
        os.close(dfd)
        os.close(fd)
    assert m.stop() == 0, m.stderr
    kh.assert_same_data(device.read_all(), model, "image after unmount")


def test_large_aligned_writes_go_out_from_their_receive_buffer(device, mounter, kaiofs_stat_bin,
                                                               engine):
    """Whole-block writes of 64 KiB and more are written from the buffer the
    kernel delivered them in; smaller or unaligned ones are copied. Both land
    byte for byte, also next to each other and while other writes reuse the
    receive buffers. The receive buffers are arena memory: with io_uring
    they are registered buffers too."""
    m = mounter.mount(device, options=("raw", engine))
    expect = bytearray(device.read_all())
    rng = random.Random(11)
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    try:
        before = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]["writes_in_place"]
        in_place = 0
        for off, length in ((0, MiB), (MiB, 64 * 1024), (3 * MiB, 256 * 1024),
                            (5 * MiB, 60 * 1024), (6 * MiB + BLOCK, MiB - BLOCK)):
            data = rng.randbytes(length)
            kh.direct_pwrite(fd, data, off)
            expect[off:off + length] = data
            in_place += length >= 64 * 1024
        after = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]["writes_in_place"]
        assert after - before == in_place, (before, after, in_place)
    finally:
        os.close(fd)
    with open(m.file, "r+b", buffering=0) as f:   # unaligned: copied, edges merged
        f.seek(8 * MiB + 7)
        data = rng.randbytes(MiB - 7)
        f.write(data)
        expect[8 * MiB + 7:9 * MiB] = data
    assert kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]["writes_in_place"] == after
    kh.assert_same_data(kh.read_file(m.file), bytes(expect), "raw file")
    s = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
    if engine == "engine=uring":
        assert s["uring"]["other_buffer_ios"] == 0, s["uring"]
        assert s["uring"]["fixed_buffer_ios"] == s["aio"]["iocbs"], (s["uring"], s["aio"])
    assert m.stop() == 0, m.stderr
    kh.assert_same_data(device.read_all(), bytes(expect), "device after unmount")
