"""Filesystem mode: file data. A long seeded random sequence of writes,
truncations, fallocate calls and reads checked against an in-memory model;
fio with verification into holes and into preallocated extents; unlink of
open files, renames and directory listings under concurrency; and the
layout of a large sequential write. Every test ends with a clean unmount,
a clean e2fsck and, where it matters, the kernel's ext4 reading the result."""

import collections
import ctypes
import errno
import os
import random
import re
import subprocess
import threading
import time
import traceback

import pytest

import fs_support
import kaiofs_helpers as kh
from conftest import ENGINES

MiB = kh.MiB
ALIGN = 4096

from kaiofs_helpers import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,  # noqa: E402
                            FALLOC_FL_ZERO_RANGE, FALLOC_MODES, fallocate)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int


def renameat2(old, new, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "renameat2(%s, %s, %#x): %s" % (old, new, flags, os.strerror(e)))


stop_and_fsck = fs_support.stop_and_fsck


def first_nonzero(buf, start, end):
    seg = bytes(buf[start:end])
    rest = seg.lstrip(b"\0")
    return None if not rest else start + len(seg) - len(rest)


# ---------------------------------------------------------------------------
# random operations against a model

FILE_MAX = 8 * MiB
NFILES = 4
POOL = 2 * MiB


class RandomOps:
    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.names = ["f%d" % i for i in range(NFILES)]
        self.model = {n: bytearray() for n in self.names}
        self.fd = {}
        self.dfd = {}
        self.pool = rng.randbytes(POOL)
        self.history = collections.deque(maxlen=25)
        self.stderr = lambda: ""
        self.counts = collections.Counter()
        for n in self.names:
            self.fd[n] = os.open(self.path(n), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self.dfd[n] = None

    def path(self, n):
        return os.path.join(self.root, n)

    def close(self):
        for table in (self.fd, self.dfd):
            for n, fd in list(table.items()):
                if fd is not None:
                    os.close(fd)
                table[n] = None

    # -- choices
    def data(self, length):
        start = self.rng.randrange(0, POOL - length + 1)
        return self.pool[start:start + length]

    def offset(self, n, aligned):
        rng = self.rng
        size = len(self.model[n])
        r = rng.random()
        if r < 0.4:
            off = rng.randrange(max(0, size - 65536), min(FILE_MAX, size + 65536) + 1)
        elif r < 0.5:
            off = size
        else:
            off = rng.randrange(0, FILE_MAX)
        if aligned:
            off -= off % ALIGN
        return min(off, FILE_MAX - (ALIGN if aligned else 1))

    def length(self, off, aligned, limit=300 * 1024):
        rng = self.rng
        r = rng.random()
        if aligned:
            length = ALIGN * rng.randrange(1, limit // ALIGN + 1)
        elif r < 0.3:
            length = rng.randrange(1, 100)
        elif r < 0.5:
            length = ALIGN * rng.randrange(1, limit // ALIGN + 1) + rng.choice((-1, 1))
        else:
            length = rng.randrange(1, limit + 1)
        length = min(length, FILE_MAX - off)
        if aligned:
            length -= length % ALIGN
        return max(length, 1 if not aligned else ALIGN)

    # -- model
    def model_write(self, n, off, data):
        d = self.model[n]
        if len(d) < off:
            d.extend(bytes(off - len(d)))
        d[off:off + len(data)] = data

    def expect_read(self, n, off, length):
        return bytes(self.model[n][off:off + length])

    # -- operations
    def op_write(self, n):
        aligned = self.rng.random() < 0.4
        off = self.offset(n, aligned)
        data = self.data(self.length(off, aligned))
        self.note("pwrite", n, off, len(data))
        kh.pwrite_all(self.fd[n], data, off)
        self.model_write(n, off, data)

    def op_dwrite(self, n):
        if self.dfd[n] is None:
            return self.op_reopen(n, direct=True)
        off = self.offset(n, True)
        data = self.data(self.length(off, True))
        self.note("O_DIRECT pwrite", n, off, len(data))
        got = kh.direct_pwrite(self.dfd[n], data, off)
        assert got == len(data), "short O_DIRECT write: %d of %d" % (got, len(data))
        self.model_write(n, off, data)

    def op_read(self, n):
        aligned = self.rng.random() < 0.3
        size = len(self.model[n])
        if self.rng.random() < 0.8 and size:
            off = self.rng.randrange(0, size)
            if aligned:
                off -= off % ALIGN
        else:
            off = self.offset(n, aligned)
        length = self.length(off, aligned, limit=400 * 1024)
        self.note("pread", n, off, length)
        got = os.pread(self.fd[n], length, off)
        self.check_read(n, got, off, length)

    def op_dread(self, n):
        if self.dfd[n] is None:
            return self.op_reopen(n, direct=True)
        size = len(self.model[n])
        off = self.rng.randrange(0, max(size, 1))
        off -= off % ALIGN
        length = self.length(off, True, limit=400 * 1024)
        self.note("O_DIRECT pread", n, off, length)
        got = kh.direct_pread(self.dfd[n], length, off)
        self.check_read(n, got, off, length)

    def check_read(self, n, got, off, length):
        exp = self.expect_read(n, off, length)
        if got != exp:
            self.fail("%s: read of %d bytes at %d: %s" % (
                n, length, off, kh.describe_difference(got, exp, base=off)))

    def op_truncate(self, n):
        rng = self.rng
        size = len(self.model[n])
        r = rng.random()
        if r < 0.1:
            new = 0
        elif r < 0.6:
            new = max(0, min(FILE_MAX, size + rng.randrange(-65536, 65537)))
        else:
            new = rng.randrange(0, FILE_MAX + 1)
        if rng.random() < 0.3:
            new -= new % ALIGN
        self.note("ftruncate", n, new)
        os.ftruncate(self.fd[n], new)
        d = self.model[n]
        if new < len(d):
            del d[new:]
        else:
            d.extend(bytes(new - len(d)))

    def op_fallocate(self, n):
        mode = self.rng.choice(sorted(FALLOC_MODES))
        aligned = self.rng.random() < 0.4
        off = self.offset(n, aligned)
        length = self.length(off, aligned, limit=MiB)
        self.note("fallocate " + FALLOC_MODES[mode], n, off, length)
        fallocate(self.fd[n], mode, off, length)
        d = self.model[n]
        kh.fallocate_model(d, mode, off, length)

    def op_seek(self, n):
        """SEEK_DATA/SEEK_HOLE may be coarse but must never skip data."""
        d = self.model[n]
        size = len(d)
        fd = self.fd[n]
        if size == 0 or self.rng.random() < 0.05:
            off = size + self.rng.randrange(0, 10000)
            self.note("lseek past EOF", n, off)
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                try:
                    got = os.lseek(fd, off, whence)
                except OSError as e:
                    assert e.errno == errno.ENXIO, e
                    continue
                self.fail("%s: lseek(%d, %d) at/after EOF (size %d) returned %d, expected "
                          "ENXIO" % (n, off, whence, size, got))
            return
        off = self.rng.randrange(0, size)
        self.note("lseek SEEK_DATA/SEEK_HOLE", n, off)
        try:
            data_at = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            data_at = size
        hole_at = os.lseek(fd, off, os.SEEK_HOLE)
        if not off <= data_at <= size:
            self.fail("%s: SEEK_DATA from %d gave %d (size %d)" % (n, off, data_at, size))
        if not off <= hole_at <= size:
            self.fail("%s: SEEK_HOLE from %d gave %d (size %d)" % (n, off, hole_at, size))
        first = first_nonzero(d, off, data_at)
        if first is not None:
            self.fail("%s: SEEK_DATA from %d skipped data: gave %d but byte %d is nonzero"
                      % (n, off, data_at, first))
        if hole_at < size:
            try:
                nxt = os.lseek(fd, hole_at, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                nxt = size
            first = first_nonzero(d, hole_at, nxt)
            if first is not None:
                self.fail("%s: SEEK_HOLE from %d reported a hole at [%d, %d) but byte %d "
                          "is nonzero" % (n, off, hole_at, nxt, first))

    def op_reopen(self, n, direct=None):
        if direct is None:
            direct = self.rng.random() < 0.4
        if direct:
            if self.dfd[n] is not None:
                self.note("close O_DIRECT handle", n)
                os.close(self.dfd[n])
                self.dfd[n] = None
            else:
                self.note("open O_DIRECT handle", n)
                self.dfd[n] = os.open(self.path(n), os.O_RDWR | os.O_DIRECT)
        else:
            self.note("close and reopen", n)
            os.close(self.fd[n])
            self.fd[n] = None
            self.fd[n] = os.open(self.path(n), os.O_RDWR)

    def op_fsync(self, n):
        self.note("fsync", n)
        os.fsync(self.fd[n])

    OPS = (("op_write", 25), ("op_dwrite", 8), ("op_read", 22), ("op_dread", 5),
           ("op_truncate", 7), ("op_fallocate", 16), ("op_seek", 3), ("op_reopen", 4),
           ("op_fsync", 1))

    def note(self, what, n, *args):
        self.counts[what] += 1
        self.history.append("#%d %s %s %s" % (self.i, what, n, " ".join(map(str, args))))

    def fail(self, msg):
        pytest.fail("%s\nafter these operations (most recent last):\n%s\nkaiofs stderr:\n%s"
                    % (msg, "\n".join(self.history), self.stderr()[-3000:]), pytrace=False)

    def run(self, nops):
        names = [o for o, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for self.i in range(nops):
            n = self.rng.choice(self.names)
            op = self.rng.choices(names, weights)[0]
            try:
                getattr(self, op)(n)
                size = os.fstat(self.fd[n]).st_size
            except OSError as e:
                self.fail("%s failed: %s" % (op, e))
            if size != len(self.model[n]):
                self.fail("%s: size %d, expected %d" % (n, size, len(self.model[n])))
            if self.i % 1000 == 999:
                self.verify_open(n)

    def verify_open(self, n):
        got = kh.pread_exact(self.fd[n], len(self.model[n]) + 1, 0)
        if got != bytes(self.model[n]):
            self.fail("%s: whole file: %s" % (n, kh.describe_difference(got, bytes(self.model[n]))))


def verify_files(root, model, what, seekmaps=None):
    """Every file's size and bytes; SEEK maps are collected before reading."""
    for n, d in sorted(model.items()):
        p = os.path.join(root, n)
        fd = os.open(p, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            assert size == len(d), "%s: %s size %d, expected %d" % (what, n, size, len(d))
            if seekmaps is not None:
                seekmaps[n] = fs_support.seek_map(fd, size)
            kh.assert_same_data(kh.pread_exact(fd, size + 1, 0), bytes(d), "%s: %s" % (what, n))
        finally:
            os.close(fd)


# Seeds of runs that once failed, replayed every time: 1966951827 met
# libext2fs 1.47.0's ext2fs_punch failing ("extent not found") on a
# truncate that emptied leaves of a two-level extent tree, at operation 4087.
REGRESSION_SEEDS = [1966951827]


# Both engines, but for the replayed seeds: they found faults of the block
# maps, which no engine reaches, and run with the default engine only.
@pytest.mark.parametrize("engine,nops",
                         [pytest.param("engine=" + e, 20000, id="%s-20k" % e) for e in ENGINES]
                         + [pytest.param("engine=" + e, 100000, id="%s-100k" % e,
                                         marks=pytest.mark.slow) for e in ENGINES]
                         + [pytest.param("engine=aio", (s, 5000), id="aio-seed%d" % s)
                            for s in REGRESSION_SEEDS])
def test_random_operations_against_model(volumes, workdir, seed, rng, engine, nops):
    if isinstance(nops, tuple):
        seed, nops = nops
        rng = random.Random(seed)
    print("seed", seed)
    dev = volumes.make("ext4", size=128 * MiB)
    m = volumes.mount(dev, options=(engine,))
    ops = RandomOps(m.mountpoint, rng)
    ops.stderr = lambda: m.stderr
    try:
        ops.run(nops)
        for n in ops.names:
            ops.verify_open(n)
    finally:
        ops.close()
    print("operations:", dict(ops.counts))
    model = ops.model
    verify_files(m.mountpoint, model, "kaiofs before unmount")
    stop_and_fsck(m, dev.path)

    m = volumes.mount(dev, options=(engine,))
    kaiofs_maps = {}
    verify_files(m.mountpoint, model, "kaiofs after remount", kaiofs_maps)
    stop_and_fsck(m, dev.path)

    kernel_maps = {}
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        verify_files(k, model, "kernel", kernel_maps)
    for n in sorted(model):
        assert kaiofs_maps[n] == kernel_maps[n], (
            "%s: SEEK_DATA/SEEK_HOLE data ranges differ: kaiofs %r, kernel %r"
            % (n, kaiofs_maps[n][:20], kernel_maps[n][:20]))


@pytest.mark.parametrize("how", ["blocks", "sub-blocks", "holes"])
def test_many_random_writes_into_one_file(volumes, workdir, rng, how):
    """2500 writes in random order make an extent tree several leaves wide:
    into preallocated (unwritten) extents that are split around each write,
    or into holes that get fresh extents."""
    size = 64 * MiB
    dev = volumes.make("ext4", size=512 * MiB)
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    model = bytearray(size)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if how == "holes":
            os.ftruncate(fd, size)
        else:
            fallocate(fd, 0, 0, size)
        blocks = list(range(size // ALIGN))
        rng.shuffle(blocks)
        for b in blocks[:2500]:
            if how == "sub-blocks":
                off, length = b * ALIGN + 512 * rng.randrange(8), 512 * rng.randrange(1, 3)
                length = min(length, (b + 1) * ALIGN - off)
            else:
                off, length = b * ALIGN, ALIGN
            data = rng.randbytes(length)
            kh.pwrite_all(fd, data, off)
            model[off:off + length] = data
        kh.assert_same_data(kh.pread_exact(fd, size + 1, 0), bytes(model), "kaiofs")
    finally:
        os.close(fd)
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, "f")), bytes(model), "kernel")


# ---------------------------------------------------------------------------
# fio with verification


def fio_randwrite_args(filename, size_mib, extra):
    return ["--name=randw", "--filename=" + filename, "--ioengine=libaio", "--direct=1",
            "--rw=randwrite", "--iodepth=32", "--size=%dM" % size_mib, "--verify=crc32c",
            "--verify_fatal=1", "--do_verify=1", "--randseed=4242"] + list(extra)


# Allocating 4k random writes are slow (a few hundred per second), so the
# default run uses 16M files and the full 64M ones are marked slow.
@pytest.mark.parametrize("bs,size_mib", [
    pytest.param(["--bs=4k"], 16, id="bs4k-16M"),
    pytest.param(["--bsrange=512-128k"], 64, id="bsrange-64M"),
    pytest.param(["--bs=4k"], 64, id="bs4k-64M", marks=pytest.mark.slow),
])
def test_fio_verify_holes_and_preallocated(volumes, workdir, fio_bin, bs, size_mib, engine):
    dev = volumes.make("ext4", size=512 * MiB)
    cwd = os.path.join(workdir, "fio-cwd")
    os.mkdir(cwd)
    jobs = {"holes": bs + ["--fallocate=none"], "prealloc": bs + ["--fallocate=native"]}
    m = volumes.mount(dev, options=(engine,))
    for name, extra in jobs.items():
        path = os.path.join(m.mountpoint, name)
        kh.check_fio(kh.run_fio(fio_randwrite_args(path, size_mib, extra), cwd=cwd,
                                timeout=600), "fio " + name)
        assert os.stat(path).st_size == size_mib * MiB
    stop_and_fsck(m, dev.path)

    m = volumes.mount(dev, options=(engine,))
    for name, extra in jobs.items():
        path = os.path.join(m.mountpoint, name)
        kh.check_fio(kh.run_fio(fio_randwrite_args(path, size_mib, extra) + ["--verify_only"],
                                cwd=cwd, timeout=600),
                     "fio --verify_only " + name + " after remount")
    stop_and_fsck(m, dev.path)


@pytest.mark.parametrize("size_mib", [pytest.param(8, id="8M"),
                                      pytest.param(32, id="32M", marks=pytest.mark.slow)])
def test_fio_verify_psync_four_jobs(volumes, workdir, fio_bin, size_mib):
    dev = volumes.make("ext4", size=256 * MiB)
    cwd = os.path.join(workdir, "fio-cwd")
    os.mkdir(cwd)
    m = volumes.mount(dev)
    args = ["--name=psync", "--directory=" + m.mountpoint, "--ioengine=psync", "--direct=1",
            "--rw=randwrite", "--bs=4k", "--numjobs=4", "--size=%dM" % size_mib,
            "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--randseed=777",
            "--group_reporting"]
    kh.check_fio(kh.run_fio(args, cwd=cwd, timeout=600), "fio psync numjobs=4")
    names = sorted(os.listdir(m.mountpoint))
    files = [n for n in names if n.startswith("psync")]
    assert len(files) == 4, names
    for n in files:
        assert os.stat(os.path.join(m.mountpoint, n)).st_size == size_mib * MiB, n
    stop_and_fsck(m, dev.path)
    m = volumes.mount(dev)
    args[1] = "--directory=" + m.mountpoint
    kh.check_fio(kh.run_fio(args + ["--verify_only"], cwd=cwd, timeout=600),
                 "fio psync numjobs=4 --verify_only after remount")
    stop_and_fsck(m, dev.path)


# ---------------------------------------------------------------------------
# concurrency


class Workers:
    """Threads whose exceptions are collected; joined with a bound."""

    def __init__(self):
        self.threads = []
        self.errors = []
        self.stop = threading.Event()

    def start(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException:
                self.errors.append(traceback.format_exc())
                self.stop.set()
        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def join(self, timeout=120):
        self.stop.set()
        deadline = time.monotonic() + kh.tmo(timeout)
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, "%d worker threads still running (hang?)" % len(alive)
        assert not self.errors, "worker errors:\n" + "\n".join(self.errors[:5])


def pattern(tag, it, length):
    unit = b"%08d:%08d|" % (tag, it)
    return (unit * (length // len(unit) + 1))[:length]


def test_unlink_while_open_many_writers(volumes, workdir):
    dev = volumes.make("ext4", size=128 * MiB)
    m = volumes.mount(dev)
    root = m.mountpoint
    free_before = os.statvfs(root).f_bfree
    path = os.path.join(root, "victim")
    nthreads, region, chunk, iters = 8, 512 * 1024, 64 * 1024 + 100, 30
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    rfd = os.open(path, os.O_RDONLY)
    progress = [0] * nthreads
    w = Workers()

    def writer(t):
        for it in range(iters):
            data = pattern(t, it, region)
            for off in range(0, region, chunk):
                kh.pwrite_all(fd, data[off:off + chunk], t * region + off)
            progress[t] = it + 1

    def reader():
        while not w.stop.is_set():
            os.pread(rfd, 256 * 1024, 0)

    try:
        for t in range(nthreads):
            w.start(writer, t)
        w.start(reader)
        assert kh.wait_for(lambda: min(progress) >= 2 or w.errors, kh.tmo(60)), progress
        os.unlink(path)
        assert not os.path.lexists(path)
        # a new file under the same name is a different inode
        with open(path, "wb") as f:
            f.write(b"replacement")
        assert os.stat(path).st_ino != os.fstat(fd).st_ino
        assert kh.wait_for(lambda: min(progress) >= iters or w.errors, kh.tmo(120)), progress
        w.join()
        st = os.fstat(fd)
        assert st.st_nlink == 0, st
        assert st.st_size == nthreads * region, st
        got = kh.pread_exact(fd, st.st_size + 1, 0)
        for t in range(nthreads):
            kh.assert_same_data(got[t * region:(t + 1) * region], pattern(t, iters - 1, region),
                                "unlinked file, region of thread %d" % t, base=t * region)
        # still writable after the writers are done
        kh.pwrite_all(fd, b"tail", st.st_size)
        assert os.pread(rfd, 10, st.st_size) == b"tail"
    finally:
        w.stop.set()
        os.close(fd)
        os.close(rfd)
    with open(path, "rb") as f:
        assert f.read() == b"replacement"
    os.unlink(path)
    # the unlinked inode's blocks come back once the last handle is gone
    assert kh.wait_for(lambda: os.statvfs(root).f_bfree == free_before, kh.tmo(10)), (
        "free blocks %d after the last close, %d before" % (os.statvfs(root).f_bfree,
                                                             free_before))
    assert os.listdir(root) == ["lost+found"]
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        assert os.listdir(k) == ["lost+found"]
        assert os.statvfs(k).f_bfree == free_before


def file_content(name):
    n = 1 + (sum(name.encode()) * 7919) % 3000
    return pattern(sum(name.encode()), len(name), n) + name.encode()


def test_rename_stress(volumes, workdir, rng):
    dev = volumes.make("ext4", size=128 * MiB)
    m = volumes.mount(dev)
    root = m.mountpoint
    tops = ["D%d" % i for i in range(4)]
    for d in tops:
        os.mkdir(os.path.join(root, d))
    w = Workers()
    duration = 4.0
    file_threads, files_per_thread = 3, 40
    dir_threads, dirs_per_thread, files_per_dir = 2, 6, 5
    # file threads: fid -> (top dir, name); content is tied to the original name
    floc = [dict() for _ in range(file_threads)]
    fcontent = {}
    for t in range(file_threads):
        for i in range(files_per_thread):
            name = "t%d-f%03d" % (t, i)
            d = rng.choice(tops)
            with open(os.path.join(root, d, name), "wb") as f:
                f.write(file_content(name))
            floc[t][name] = (d, name)
            fcontent[name] = file_content(name)
    # dir threads: sid -> (parent, name) where parent is a top dir or another sid
    dloc = [dict() for _ in range(dir_threads)]
    dfiles = {}
    for t in range(dir_threads):
        for i in range(dirs_per_thread):
            sid = "s%d-%d" % (t, i)
            d = rng.choice(tops)
            os.mkdir(os.path.join(root, d, sid))
            dloc[t][sid] = (d, sid)
            dfiles[sid] = []
            for k in range(files_per_dir):
                name = "%s-f%d" % (sid, k)
                with open(os.path.join(root, d, sid, name), "wb") as f:
                    f.write(file_content(name))
                dfiles[sid].append(name)
    seeds = [rng.randrange(2**32) for _ in range(file_threads + dir_threads)]
    counts = collections.Counter()

    def fpath(loc, fid):
        d, name = loc[fid]
        return os.path.join(root, d, name)

    def file_worker(t):
        import random
        r = random.Random(seeds[t])
        loc = floc[t]
        gen = 0
        while not w.stop.is_set():
            gen += 1
            ids = sorted(loc)
            fid = r.choice(ids)
            x = r.random()
            if x < 0.6 or len(ids) < 10:
                d = r.choice(tops)
                name = "%s-g%d" % (fid, gen)
                os.rename(fpath(loc, fid), os.path.join(root, d, name))
                loc[fid] = (d, name)
                counts["move"] += 1
            elif x < 0.7:
                other = r.choice([i for i in ids if i != fid])
                os.rename(fpath(loc, fid), fpath(loc, other))
                loc[fid] = loc.pop(other)
                counts["replace"] += 1
            elif x < 0.9:
                other = r.choice([i for i in ids if i != fid])
                renameat2(fpath(loc, fid), fpath(loc, other), RENAME_EXCHANGE)
                loc[fid], loc[other] = loc[other], loc[fid]
                counts["exchange"] += 1
            else:
                other = r.choice([i for i in ids if i != fid])
                try:
                    renameat2(fpath(loc, fid), fpath(loc, other), RENAME_NOREPLACE)
                except OSError as e:
                    assert e.errno == errno.EEXIST, e
                else:
                    raise AssertionError("RENAME_NOREPLACE onto an existing name succeeded")
                counts["noreplace"] += 1

    def dpath(loc, sid):
        parent, name = loc[sid]
        base = dpath(loc, parent) if parent in loc else os.path.join(root, parent)
        return os.path.join(base, name)

    def descendants(loc, sid):
        out = {sid}
        changed = True
        while changed:
            changed = False
            for s, (p, _) in loc.items():
                if p in out and s not in out:
                    out.add(s)
                    changed = True
        return out

    def dir_worker(t):
        import random
        r = random.Random(seeds[file_threads + t])
        loc = dloc[t]
        gen = 0
        while not w.stop.is_set():
            gen += 1
            sid = r.choice(sorted(loc))
            x = r.random()
            if x < 0.6:
                parent = r.choice(tops)
            else:
                allowed = sorted(set(loc) - descendants(loc, sid))
                parent = r.choice(allowed) if allowed else r.choice(tops)
            name = "%s-g%d" % (sid, gen)
            src = dpath(loc, sid)
            base = dpath(loc, parent) if parent in loc else os.path.join(root, parent)
            if r.random() < 0.15:
                # replace an empty directory
                os.mkdir(os.path.join(base, name))
                counts["dir over empty dir"] += 1
            os.rename(src, os.path.join(base, name))
            loc[sid] = (parent, name)
            counts["dir move"] += 1
            if r.random() < 0.1:
                other = r.choice(sorted(loc))
                if other != sid and other not in descendants(loc, sid) and \
                        sid not in descendants(loc, other):
                    try:
                        os.rename(dpath(loc, sid), dpath(loc, other))
                    except OSError as e:
                        assert e.errno == errno.ENOTEMPTY, e
                    else:
                        raise AssertionError("rename onto a non-empty directory succeeded")
                    counts["dir over non-empty"] += 1

    for t in range(file_threads):
        w.start(file_worker, t)
    for t in range(dir_threads):
        w.start(dir_worker, t)
    w.stop.wait(duration)
    w.join()
    print("renames:", dict(counts))

    # what must be there
    exp_files = {}
    exp_dirs = {os.path.join(root, d) for d in tops}
    for t in range(file_threads):
        for fid, (d, name) in floc[t].items():
            exp_files[os.path.join(root, d, name)] = fcontent[fid]
    for t in range(dir_threads):
        for sid in dloc[t]:
            p = dpath(dloc[t], sid)
            exp_dirs.add(p)
            for name in dfiles[sid]:
                exp_files[os.path.join(p, name)] = file_content(name)

    def check(top, what):
        rel_files = {os.path.relpath(p, root): c for p, c in exp_files.items()}
        rel_dirs = {os.path.relpath(p, root) for p in exp_dirs}
        seen_files, seen_dirs = {}, set()
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, top)
            if rel.startswith("lost+found"):
                continue
            assert len(set(dirnames + filenames)) == len(dirnames + filenames), \
                "%s: %s lists a name twice" % (what, rel)
            if rel != ".":
                seen_dirs.add(rel)
                st = os.lstat(dirpath)
                assert st.st_nlink == 2 + len(dirnames), (
                    "%s: %s has nlink %d with %d subdirectories"
                    % (what, rel, st.st_nlink, len(dirnames)))
            for n in filenames:
                p = os.path.join(dirpath, n)
                with open(p, "rb") as f:
                    seen_files[os.path.normpath(os.path.join(rel, n))] = f.read()
        assert seen_dirs == rel_dirs, "%s: directories missing %r, unexpected %r" % (
            what, sorted(rel_dirs - seen_dirs)[:10], sorted(seen_dirs - rel_dirs)[:10])
        assert set(seen_files) == set(rel_files), "%s: files missing %r, unexpected %r" % (
            what, sorted(set(rel_files) - set(seen_files))[:10],
            sorted(set(seen_files) - set(rel_files))[:10])
        for p, c in sorted(rel_files.items()):
            assert seen_files[p] == c, "%s: %s has the wrong content" % (what, p)
        # every file name appears once in the whole tree
        base = collections.Counter(os.path.basename(p) for p in seen_files)
        assert max(base.values()) == 1, [n for n, c in base.items() if c > 1][:10]

    check(root, "kaiofs")
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        check(k, "kernel")


def stable_name(i):
    return "stable-%05d-%s" % (i, "s" * (i % 97))


@pytest.mark.parametrize("layout", ["linear", "htree"])
def test_readdir_during_create_and_remove(volumes, workdir, layout):
    dev = volumes.make("ext4", size=128 * MiB)
    nstable = 2000
    stable = {stable_name(i) for i in range(nstable)}
    if layout == "htree":
        # the kernel indexes a directory once it outgrows one block
        with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel"),
                                     readonly=False) as k:
            os.mkdir(os.path.join(k, "d"))
            for n in stable:
                open(os.path.join(k, "d", n), "wb").close()
        r = subprocess.run(["debugfs", "-R", "stat /d", dev.path], capture_output=True,
                           text=True, timeout=kh.tmo(60))
        flags = int(re.search(r"Flags:\s+0x([0-9a-fA-F]+)", r.stdout).group(1), 16)
        assert flags & 0x1000, "the kernel did not index /d: " + r.stdout[:500]
    m = volumes.mount(dev)
    d = os.path.join(m.mountpoint, "d")
    if layout == "linear":
        os.mkdir(d)
        for n in stable:
            open(os.path.join(d, n), "wb").close()
    w = Workers()
    alive = [set() for _ in range(3)]

    def churn(t):
        i = 0
        mine = alive[t]
        order = collections.deque()
        while not w.stop.is_set():
            i += 1
            name = "tmp-%d-%06d-%s" % (t, i, "t" * (i % 50))
            open(os.path.join(d, name), "wb").close()
            mine.add(name)
            order.append(name)
            if len(order) > 150:
                old = order.popleft()
                if i % 3 == 0:
                    new = "ren-" + old
                    os.rename(os.path.join(d, old), os.path.join(d, new))
                    mine.discard(old)
                    mine.add(new)
                    order.append(new)
                else:
                    os.unlink(os.path.join(d, old))
                    mine.discard(old)

    for t in range(len(alive)):
        w.start(churn, t)
    listings = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline or listings < 10:
            names = os.listdir(d)
            listings += 1
            counts = collections.Counter(names)
            dup = sorted(n for n, c in counts.items() if c > 1)
            missing = sorted(stable - set(names))
            assert not dup and not missing, (
                "listing %d of %d names during creates/removes: %d names listed twice "
                "(%d of them stable), e.g. %r; %d stable names missing, e.g. %r"
                % (listings, len(names), len(dup), len(stable.intersection(dup)), dup[:3],
                   len(missing), missing[:3]))
            odd = [n for n in names if n not in stable and not n.startswith(("tmp-", "ren-"))]
            assert not odd, "listing %d shows unknown names %r" % (listings, odd[:5])
            assert not w.errors, w.errors[0]
            if listings >= 200:
                break
    finally:
        w.join()
    print("listings:", listings)
    expected = stable.union(*alive)
    assert set(os.listdir(d)) == expected
    assert len(os.listdir(d)) == len(expected)
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        names = os.listdir(os.path.join(k, "d"))
        assert len(names) == len(expected) and set(names) == expected
        for n in sorted(expected)[::50]:
            assert os.path.exists(os.path.join(k, "d", n)), n


# ---------------------------------------------------------------------------
# layout of a large sequential write


def extent_count(path):
    r = subprocess.run(["filefrag", "-v", path], capture_output=True, text=True,
                       timeout=kh.tmo(60))
    assert r.returncode == 0, "filefrag -v %s: %s" % (path, r.stderr)
    m = re.search(r"(\d+) extents? found", r.stdout)
    assert m, r.stdout
    return int(m.group(1)), r.stdout


@pytest.mark.parametrize("writer", ["dd", "fio"])
def test_large_sequential_write_is_few_extents(volumes, workdir, rng, fio_bin, writer):
    size = 256 * MiB
    dev = volumes.make("ext4", size=1024 * MiB)
    m = volumes.mount(dev)
    target = os.path.join(m.mountpoint, "big")
    digest = None
    if writer == "dd":
        src = os.path.join(workdir, "src")
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(rng.randbytes(MiB))
        digest = kh.sha256_file(src)
        r = subprocess.run(["dd", "if=" + src, "of=" + target, "bs=1M", "oflag=direct",
                            "conv=fsync", "status=none"], capture_output=True, text=True,
                           timeout=kh.tmo(300))
        assert r.returncode == 0, r.stderr
        os.unlink(src)
    else:
        cwd = os.path.join(workdir, "fio-cwd")
        os.mkdir(cwd)
        kh.check_fio(kh.run_fio(["--name=seq", "--filename=" + target, "--rw=write",
                                 "--bs=1M", "--size=256M", "--ioengine=libaio", "--iodepth=8",
                                 "--direct=1", "--verify=crc32c", "--do_verify=1",
                                 "--verify_fatal=1"], cwd=cwd), "fio sequential write")
    assert os.stat(target).st_size == size
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        n, out = extent_count(os.path.join(k, "big"))
        print("%s: %d extents" % (writer, n))
        assert n <= 16, "256 MiB written sequentially lies in %d extents:\n%s" % (
            n, out[:4000])
        if digest is not None:
            assert kh.sha256_file(os.path.join(k, "big")) == digest


def test_truncate_below_the_first_extent_of_a_two_level_tree(volumes, workdir):
    """Truncating to a size whose first freed block is the first extent of a
    file with a multi-level extent tree frees every block and leaves e2fsck
    clean (the range kaiofs punches in two steps)."""
    dev = volumes.make("ext4", size=64 * MiB, args=("-b", "1024"))
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        # every other 1 KiB block from block 400 on: hundreds of extents,
        # so the tree needs leaf blocks under the inode's root
        for blk in range(400, 2400, 2):
            os.pwrite(fd, b"d" * 1024, blk * 1024)
        os.ftruncate(fd, 400 * 1024 - 7)
        assert os.fstat(fd).st_size == 400 * 1024 - 7
        assert os.pread(fd, 200, 400 * 1024 - 100) == b"\0" * 93
    finally:
        os.close(fd)
    st = os.stat(path)
    assert st.st_blocks == 0, "blocks left after the truncate: %d" % st.st_blocks
    assert m.stop() == 0, m.stderr
    fs_support.assert_fsck_clean(dev.path)


def extent_leaves(image, path):
    """The first logical block of each leaf of a file's extent tree, as
    debugfs reads it from the unmounted image."""
    r = subprocess.run(["debugfs", "-R", "ex " + path, image], capture_output=True, text=True,
                       timeout=kh.tmo(60))
    assert r.returncode == 0, r.stderr
    # "Level Entries Logical Physical Length": index entries are level 0 of
    # a depth-1 tree, "0/ 1   2/  3  2557 -  6899  15799  4343"
    starts = []
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "0/" and f[1] == "1":
            starts.append(int(f[4]))
    return starts


@pytest.mark.parametrize("cut", ["truncate", "punch-leaf", "punch-to-end"])
def test_cuts_at_the_first_extent_of_a_leaf(volumes, workdir, cut):
    """A truncate or punched hole that begins at the first extent of a leaf
    other than the first (libext2fs 1.47.0's ext2fs_punch fails there with
    "extent not found" and leaves the tree half edited): the data left reads
    back, e2fsck is clean, the kernel reads the same file."""
    bs = 1024
    dev = volumes.make("ext4", size=64 * MiB, args=("-b", str(bs)))
    model = bytearray(599 * bs)
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        # every other block: 300 extents, a tree of a few leaves under the root
        for blk in range(0, 599, 2):
            data = bytes([blk % 251 + 1]) * bs
            os.pwrite(fd, data, blk * bs)
            model[blk * bs:(blk + 1) * bs] = data
    finally:
        os.close(fd)
    stop_and_fsck(m, dev.path)
    leaves = extent_leaves(dev.path, "f")
    assert len(leaves) >= 3, "the tree has %d leaves" % len(leaves)
    first, after = leaves[1], leaves[2]
    m = volumes.mount(dev)
    fd = os.open(os.path.join(m.mountpoint, "f"), os.O_RDWR)
    try:
        if cut == "truncate":
            os.ftruncate(fd, first * bs)
            del model[first * bs:]
        else:
            end = after if cut == "punch-leaf" else len(model) // bs
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, first * bs, (end - first) * bs)
            model[first * bs:end * bs] = bytes((end - first) * bs)
        kh.assert_same_data(kh.pread_exact(fd, len(model) + 1, 0), bytes(model), "after the " + cut)
    finally:
        os.close(fd)
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, "f")), bytes(model), "kernel")


@pytest.mark.parametrize("cuts", [
    pytest.param([("truncate", 1801 * 1024 + 5), ("truncate", 1201 * 1024),
                  ("truncate", 601 * 1024 - 3), ("truncate", 3)], id="truncates-in-holes"),
    pytest.param([("truncate", 1800 * 1024 + 100), ("truncate", 999 * 1024)], id="truncates-in-extents"),
    pytest.param([("punch", 101, 700), ("punch", 1000, 1001), ("punch", 1499, 1800),
                  ("punch", 0, 90), ("truncate", 1700 * 1024)], id="punches"),
])
def test_cuts_across_extent_leaves(volumes, workdir, cuts):
    """Truncates and punched holes through a file whose extent tree has a
    dozen leaves (every other 1 KiB block written): inside extents, in the
    holes between them, across whole leaves. The data left reads back, the
    blocks are freed, e2fsck is clean and the kernel reads the same file."""
    bs = 1024
    dev = volumes.make("ext4", size=64 * MiB, args=("-b", str(bs)))
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    model = bytearray(1999 * bs)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for blk in range(0, 2000, 2):
            data = bytes([blk % 251 + 1]) * bs
            os.pwrite(fd, data, blk * bs)
            model[blk * bs:(blk + 1) * bs] = data
        for cut in cuts:
            if cut[0] == "truncate":
                os.ftruncate(fd, cut[1])
                del model[cut[1]:]
            else:
                first, last = cut[1], cut[2]
                fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, first * bs,
                          (last - first + 1) * bs)
                model[first * bs:(last + 1) * bs] = bytes((last - first + 1) * bs)
            kh.assert_same_data(kh.pread_exact(fd, len(model) + 1, 0), bytes(model),
                                "after %r" % (cut,))
        used = sum(1 for b in range(0, len(model), bs) if any(model[b:b + bs]))
        assert os.fstat(fd).st_blocks * 512 <= (used + 16) * bs, "blocks not freed"
    finally:
        os.close(fd)
    stop_and_fsck(m, dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, "f")), bytes(model), "kernel")

