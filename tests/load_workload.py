#!/usr/bin/python3
"""A seeded, mixed load of data and metadata operations on a directory tree,
checked against an in-memory model, with the serving process sampled.

Used by tests/test_load.py (which mounts a volume with kaiofs, runs this and
then checks the volume) and runnable on its own against any directory:

    /usr/bin/python3 tests/load_workload.py [--seconds 60] [--threads 8]
        [--seed N] [--pid PID] [--stat-bin kaiofs-stat --stat-mnt MNT] DIR

(with --pid the process PID is sampled as kaiofs would be; run it against a
directory on the kernel's ext4 to check the workload itself).

The tree. Each of the N threads owns a directory tN and, in each of the
shared directories shared0..shared2, the names that start with "tN.". A
thread only ever touches names it owns, so every operation has exactly one
correct outcome (the shared directories still see eight threads creating,
renaming and removing entries at once), and any error is a failure.

The model. A file's bytes are a list of segments over a pool of seeded
random bytes: (start, end, pool offset) or (start, end, None) for zeros, so
a few bytes per write describe up to 4 MiB of content. A file also has its
mode, its user xattrs, its names (hard links), its inode number, and its
mtime while the last change to it was an explicit utime. Directories have a
mode and xattrs; symlinks a target.

The operations (weights in OPS): create with initial data (0 to 4 MiB,
buffered or O_DIRECT), pwrite at a random offset (aligned or not, buffered
or O_DIRECT, often read back at once), append (O_APPEND), read a range or the
whole file (buffered or O_DIRECT), truncate (shrink and extend), fallocate
(0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE), fsync/fdatasync of files and
directories, rename (within and across directories, over an existing name,
directories too), link, unlink, unlink of an open file that is then written
and read, mkdir, rmdir (and rmdir of a non-empty directory: ENOTEMPTY),
symlink and readlink, setxattr/getxattr/listxattr/removexattr, chmod,
utime, readdir of a directory with a stat of each entry, and a stat of every
name the thread owns. Each thread keeps its data below a budget (a share of
the volume's free space at the start) and its names below a count, by
unlinking.

The sampler reads VmRSS, VmHWM, Threads and the number of open descriptors
of the serving process every second, and every few seconds a statistics
callback (kaiofs-stat --json); aio errors must stay 0.

A failure names the thread, what differed and its last operations (40, or
KAIOFS_LOAD_HISTORY of them); KAIOFS_LOAD_DUMP=FILE also writes every
thread's history there. Each thread's choices depend only on the seed and
its own results, so the same seed replays the same operations per thread.
"""

import argparse
import collections
import errno
import json
import mmap
import os
import random
import stat
import subprocess
import sys
import threading
import time
import traceback

KiB = 1024
MiB = 1 << 20
ALIGN = 4096

MAX_WRITE = 4 * MiB          # largest single write
FILE_MAX = 8 * MiB           # no file grows past this
POOL_SIZE = 12 * MiB         # seeded random bytes all data comes from
SHARED_DIRS = ("shared0", "shared1", "shared2")
MAX_NAMES = 300              # names one thread owns at most
MAX_LINKS = 4                # names of one file at most
MAX_DEPTH = 4                # path components of a directory at most
XATTR_BUDGET = 2500          # bytes of user xattrs (names, values, overhead) per inode
READ_CHUNK = MiB

from kaiofs_helpers import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,  # noqa: E402
                            FALLOC_FL_ZERO_RANGE, FALLOC_MODES, fallocate)


class CheckFailed(Exception):
    """What the file system returned differs from the model."""


def errname(e):
    return errno.errorcode.get(e, str(e))


# --------------------------------------------------------------------------
# file contents as segments of the pool


class Content:
    """A file's bytes: contiguous segments [start, end, src] covering
    [0, size); src is the pool offset of byte `start`, or None for zeros."""

    __slots__ = ("segs",)

    def __init__(self):
        self.segs = []

    @property
    def size(self):
        return self.segs[-1][1] if self.segs else 0

    def _merge(self, segs):
        out = []
        for s in segs:
            if s[0] >= s[1]:
                continue
            if out:
                p = out[-1]
                if p[2] is None and s[2] is None or \
                        p[2] is not None and s[2] is not None and s[2] == p[2] + (p[1] - p[0]):
                    p[1] = s[1]
                    continue
            out.append(list(s))
        self.segs = out

    def put(self, off, end, src):
        """Bytes [off, end) become pool[src:...] (or zeros for src None)."""
        if end <= off:
            return
        segs = []
        size = self.size
        for s, e, p in self.segs:
            if e <= off or s >= end:
                segs.append([s, e, p])
                continue
            if s < off:
                segs.append([s, off, p])
            if e > end:
                segs.append([end, e, None if p is None else p + (end - s)])
        if off > size:
            segs.append([size, off, None])
        segs.append([off, end, src])
        segs.sort(key=lambda x: x[0])
        self._merge(segs)

    def truncate(self, new):
        size = self.size
        if new >= size:
            if new > size:
                self.segs.append([size, new, None])
                self._merge(self.segs)
            return
        segs = []
        for s, e, p in self.segs:
            if s >= new:
                break
            segs.append([s, min(e, new), p])
        self._merge(segs)

    def zero(self, off, end):
        """Zeros over [off, end) within the current size."""
        end = min(end, self.size)
        if off < end:
            self.put(off, end, None)

    def expected(self, pool, off, length):
        """The bytes a read of `length` at `off` must return (short at EOF)."""
        end = min(off + length, self.size)
        if off >= end:
            return b""
        out = bytearray()
        for s, e, p in self.segs:
            if e <= off:
                continue
            if s >= end:
                break
            a, b = max(s, off), min(e, end)
            if p is None:
                out += bytes(b - a)
            else:
                out += pool[p + (a - s):p + (b - s)]
        return bytes(out)


class Inode:
    """A regular file of the model."""

    __slots__ = ("content", "mode", "xattrs", "mtime_ns", "paths", "ino", "alloc_end")

    def __init__(self, mode):
        self.content = Content()
        self.mode = mode
        self.xattrs = {}
        self.mtime_ns = None
        self.paths = []
        self.ino = None
        self.alloc_end = 0

    @property
    def size(self):
        return self.content.size

    def allocated(self):
        """Upper bound of the bytes of data blocks this file can hold."""
        n = max(self.size, self.alloc_end)
        return (n + ALIGN - 1) // ALIGN * ALIGN


class DirNode:
    __slots__ = ("mode", "xattrs", "ino")

    def __init__(self, mode):
        self.mode = mode
        self.xattrs = {}
        self.ino = None


class Symlink:
    __slots__ = ("target", "ino")

    def __init__(self, target):
        self.target = target
        self.ino = None


def xattr_cost(xattrs):
    return sum(len(k) + len(v) + 24 for k, v in xattrs.items())


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n


def describe_diff(got, exp, base):
    i = first_diff(got, exp)
    msg = "got %d bytes, expected %d; first difference at file offset %d" % (
        len(got), len(exp), base + i)
    if i < min(len(got), len(exp)):
        bad = sum(1 for k in range(0, min(len(got), len(exp)), 4096)
                  if got[k:k + 4096] != exp[k:k + 4096])
        msg += " (got 0x%02x, expected 0x%02x; %d of %d 4 KiB blocks differ%s)" % (
            got[i], exp[i], bad, (min(len(got), len(exp)) + 4095) // 4096,
            "; the bad bytes are zero" if not any(got[i:i + 64]) else "")
    return msg


# --------------------------------------------------------------------------
# one thread's share of the tree


class Worker:
    """One load thread: its names, its model and its random choices."""

    OPS = (("create", 10), ("write", 14), ("append", 4), ("read", 14), ("truncate", 5),
           ("fallocate", 6), ("fsync", 3), ("rename", 7), ("link", 3), ("unlink", 4),
           ("unlink_open", 1), ("mkdir", 3), ("rmdir", 2), ("symlink", 3), ("readlink", 2),
           ("xattr", 6), ("chmod", 2), ("utime", 2), ("scan", 4), ("stat_all", 1))

    def __init__(self, run, index):
        self.run = run
        self.index = index
        self.pool = run.pool
        self.root = run.root
        self.rng = random.Random(run.seed * 1000003 + index)
        self.home = "t%d" % index
        self.prefix = "t%d." % index
        self.files = {}      # path -> Inode (a file with two names appears twice)
        self.links = {}      # path -> Symlink
        self.dirs = {}       # path -> DirNode, the thread's own directories
        self.counter = 0
        self.counts = collections.Counter()
        self.op_time = collections.Counter()
        self.op_max = collections.Counter()
        self.bytes_written = 0
        self.bytes_read = 0
        self.history = collections.deque(maxlen=int(os.environ.get("KAIOFS_LOAD_HISTORY", "40")))
        self.current = None          # (op, monotonic start) while an op runs
        self.buf = mmap.mmap(-1, MAX_WRITE + ALIGN)   # page aligned, for O_DIRECT
        self.names = [o for o, _ in self.OPS]
        self.weights = [w for _, w in self.OPS]

    # -- paths and choices ----------------------------------------------

    def full(self, path):
        return os.path.join(self.root, path)

    def note(self, *what):
        self.history.append(" ".join(str(w) for w in what))

    def check(self, cond, msg, *args):
        if not cond:
            raise CheckFailed(msg % args if args else msg)

    def new_name(self, parent, kind):
        self.counter += 1
        base = "%s%d" % (kind, self.counter)
        if parent not in self.dirs:
            base = self.prefix + base     # a shared directory
        return parent + "/" + base

    def parents(self):
        return list(self.dirs) + list(SHARED_DIRS)

    def pick_parent(self):
        if self.rng.random() < 0.3:
            return self.rng.choice(SHARED_DIRS)
        return self.rng.choice(list(self.dirs))

    def children(self, d):
        pre = d + "/"
        out = []
        for table in (self.files, self.links, self.dirs):
            for p in table:
                if p.startswith(pre) and "/" not in p[len(pre):]:
                    out.append(p[len(pre):])
        return out

    def inodes(self):
        seen = {}
        for ind in self.files.values():
            seen[id(ind)] = ind
        return list(seen.values())

    def allocated(self):
        return sum(ind.allocated() for ind in self.inodes())

    def nnames(self):
        return len(self.files) + len(self.links) + len(self.dirs)

    def pick_length(self, aligned, limit=MAX_WRITE, zero_ok=False):
        r = self.rng.random()
        if r < 0.3:
            n = self.rng.randrange(0 if zero_ok else 1, 8 * KiB)
        elif r < 0.7:
            n = self.rng.randrange(1, 256 * KiB + 1)
        else:
            n = self.rng.randrange(1, limit + 1)
        n = min(n, limit)
        if aligned:
            n = max(ALIGN, n // ALIGN * ALIGN) if n or not zero_ok else 0
        return n

    def pick_offset(self, size, length, aligned):
        r = self.rng.random()
        top = FILE_MAX - length
        if r < 0.3:
            off = self.rng.randrange(max(0, size - 64 * KiB), size + 64 * KiB + 1)
        elif r < 0.45:
            off = size
        elif r < 0.55:
            off = 0
        else:
            off = self.rng.randrange(0, top + 1)
        off = min(off, top)
        if aligned:
            off -= off % ALIGN
        return off

    def pool_src(self, length):
        return self.rng.randrange(0, POOL_SIZE - length + 1)

    # -- I/O with the model ---------------------------------------------

    def write_at(self, fd, direct, off, src, length):
        """One pwrite of pool[src:src+length] at off; must be complete."""
        if direct:
            self.buf[:length] = self.pool[src:src + length]
            with memoryview(self.buf) as view:
                n = os.pwritev(fd, [view[:length]], off)
        else:
            with memoryview(self.pool) as view:
                n = os.pwrite(fd, view[src:src + length], off)
        self.check(n == length, "short %s write at %d: %d of %d bytes",
                   "O_DIRECT" if direct else "buffered", off, n, length)
        self.bytes_written += length

    def read_at(self, fd, direct, off, length):
        if direct:
            with memoryview(self.buf) as view:
                n = os.preadv(fd, [view[:length]], off)
            data = bytes(self.buf[:n])
        else:
            data = os.pread(fd, length, off)
        self.bytes_read += len(data)
        return data

    def check_read(self, what, path, ind, fd, direct, off, length, before=None):
        """A read against the model; `before`: the file's segments before
        the operation being checked, to tell stale bytes apart."""
        got = self.read_at(fd, direct, off, length)
        exp = ind.content.expected(self.pool, off, length)
        if got != exp:
            again = self.read_at(fd, direct, off, length)
            raise CheckFailed("%s: %s read of %d at %d (size %d): %s%s; read again: %s [%s]" % (
                path, "O_DIRECT" if direct else "buffered", length, off, ind.size,
                describe_diff(got, exp, off), self.origin(got, exp, off, ind, before),
                "the same" if again == got else "now right" if again == exp else "different",
                what))

    def origin(self, got, exp, off, ind, before=None):
        """Where the wrong bytes come from, if from the pool."""
        i = first_diff(got, exp)
        probe = got[i:i + 32]
        if len(probe) < 16 or not any(probe):
            return ""
        at = self.pool.find(probe)
        if at < 0:
            return "; the bytes read are not from the pool"
        for segs, whose in ((ind.content.segs, "this file's own bytes there"),
                            (before or [], "the bytes this file held there before the "
                             "operation (unchanged)")):
            for s, e, p in segs:
                if p is not None and s <= off + i < e and p + (off + i - s) == at:
                    return "; the bytes read are " + whose
        return "; the bytes read are pool[%d...], not this file's bytes there" % at

    def check_whole(self, what, path, ind, fd, direct=False):
        """Read the file in aligned chunks until one ends past EOF (so the
        last read is also a read at or across EOF)."""
        off = 0
        while True:
            self.check_read(what, path, ind, fd, direct, off, READ_CHUNK)
            off += READ_CHUNK
            if off > ind.size:
                break

    # -- stat checks ------------------------------------------------------

    def check_entry(self, path, st=None, check_mtime=True):
        """lstat of one owned name against the model."""
        st = st or os.lstat(self.full(path))
        if path in self.files:
            ind = self.files[path]
            self.check(stat.S_ISREG(st.st_mode), "%s: not a regular file (mode %o)",
                       path, st.st_mode)
            self.check(st.st_size == ind.size, "%s: size %d, expected %d", path,
                       st.st_size, ind.size)
            self.check(stat.S_IMODE(st.st_mode) == ind.mode, "%s: mode %o, expected %o",
                       path, stat.S_IMODE(st.st_mode), ind.mode)
            self.check(st.st_nlink == len(ind.paths), "%s: nlink %d, expected %d (%s)",
                       path, st.st_nlink, len(ind.paths), " ".join(ind.paths))
            self.check(st.st_ino == ind.ino, "%s: inode %d, expected %d", path,
                       st.st_ino, ind.ino)
            if check_mtime and ind.mtime_ns is not None:
                self.check(st.st_mtime_ns == ind.mtime_ns, "%s: mtime %d, expected %d "
                           "(set by utime)", path, st.st_mtime_ns, ind.mtime_ns)
            self.check(st.st_blocks * 512 <= ind.allocated() + 64 * KiB,
                       "%s: %d blocks of 512 bytes, expected at most %d bytes of data",
                       path, st.st_blocks, ind.allocated())
        elif path in self.links:
            ln = self.links[path]
            self.check(stat.S_ISLNK(st.st_mode), "%s: not a symlink (mode %o)", path,
                       st.st_mode)
            self.check(st.st_size == len(os.fsencode(ln.target)),
                       "%s: symlink size %d, expected %d", path, st.st_size,
                       len(os.fsencode(ln.target)))
            self.check(st.st_ino == ln.ino, "%s: inode %d, expected %d", path, st.st_ino,
                       ln.ino)
        elif path in self.dirs:
            dn = self.dirs[path]
            self.check(stat.S_ISDIR(st.st_mode), "%s: not a directory (mode %o)", path,
                       st.st_mode)
            self.check(stat.S_IMODE(st.st_mode) == dn.mode, "%s: mode %o, expected %o",
                       path, stat.S_IMODE(st.st_mode), dn.mode)
            subdirs = sum(1 for c in self.children(path) if path + "/" + c in self.dirs)
            self.check(st.st_nlink == 2 + subdirs, "%s: nlink %d, expected %d", path,
                       st.st_nlink, 2 + subdirs)
            self.check(st.st_ino == dn.ino, "%s: inode %d, expected %d", path, st.st_ino,
                       dn.ino)
        else:
            raise CheckFailed("%s: not in the model" % path)

    def check_listing(self, d):
        names = os.listdir(self.full(d))
        if d not in self.dirs:
            names = [n for n in names if n.startswith(self.prefix)]
        dup = sorted(n for n, c in collections.Counter(names).items() if c > 1)
        self.check(not dup, "readdir %s: names listed twice: %s", d, dup[:10])
        exp = set(self.children(d))
        got = set(names)
        self.check(got == exp, "readdir %s: missing %s, unexpected %s", d,
                   sorted(exp - got)[:10], sorted(got - exp)[:10])

    def check_xattrs(self, path, xattrs):
        p = self.full(path)
        got = sorted(n for n in os.listxattr(p) if n.startswith("user."))
        self.check(got == sorted(xattrs), "%s: listxattr %s, expected %s", path, got,
                   sorted(xattrs))
        for name, value in xattrs.items():
            v = os.getxattr(p, name)
            self.check(v == value, "%s: getxattr %s: %d bytes, expected %d (%s)", path,
                       name, len(v), len(value), "differ" if len(v) == len(value) else "")

    # -- operations -------------------------------------------------------

    def pick_file(self):
        if not self.files:
            return None, None
        path = self.rng.choice(list(self.files))
        return path, self.files[path]

    def op_create(self):
        parent = self.pick_parent()
        path = self.new_name(parent, "f")
        direct = self.rng.random() < 0.3
        length = self.pick_length(direct, zero_ok=True)
        mode = self.rng.choice((0o644, 0o600, 0o664, 0o640, 0o755, 0o666))
        ind = Inode(mode & ~self.run.umask)
        self.note("create", path, "direct" if direct else "buffered", length)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DIRECT if direct else 0)
        fd = os.open(self.full(path), flags, mode)
        try:
            st = os.fstat(fd)
            ind.ino = st.st_ino
            ind.paths.append(path)
            self.files[path] = ind
            if length:
                src = self.pool_src(length)
                self.note("  data: pool", src)
                self.write_at(fd, direct, 0, src, length)
                ind.content.put(0, length, src)
            self.maybe_sync(fd)
        finally:
            os.close(fd)
        self.check_entry(path)

    def maybe_sync(self, fd):
        r = self.rng.random()
        if r < 0.08:
            self.note("  fsync")
            os.fsync(fd)
            self.counts["fsync_after_write"] += 1
        elif r < 0.16:
            self.note("  fdatasync")
            os.fdatasync(fd)
            self.counts["fdatasync_after_write"] += 1

    def op_write(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        direct = self.rng.random() < 0.3
        aligned = direct or self.rng.random() < 0.3
        length = self.pick_length(aligned)
        off = self.pick_offset(ind.size, length, aligned)
        src = self.pool_src(length)
        self.note("pwrite", path, "direct" if direct else "buffered", off, length, "pool", src)
        before = [list(x) for x in ind.content.segs]
        fd = os.open(self.full(path), os.O_RDWR | (os.O_DIRECT if direct else 0))
        try:
            self.write_at(fd, direct, off, src, length)
            ind.content.put(off, off + length, src)
            ind.mtime_ns = None
            self.maybe_sync(fd)
            if self.rng.random() < 0.5:
                self.check_read("read back after the write", path, ind, fd, direct, off,
                                length, before)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.check(st.st_size == ind.size, "%s: size %d after the write, expected %d",
                   path, st.st_size, ind.size)

    def op_append(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        length = min(self.pick_length(False), FILE_MAX - ind.size)
        if length <= 0:
            return self.op_truncate()
        src = self.pool_src(length)
        self.note("append", path, ind.size, length, "pool", src)
        fd = os.open(self.full(path), os.O_WRONLY | os.O_APPEND)
        try:
            with memoryview(self.pool) as view:
                n = os.write(fd, view[src:src + length])
            self.check(n == length, "%s: short append: %d of %d bytes", path, n, length)
            self.bytes_written += length
            ind.content.put(ind.size, ind.size + length, src)
            ind.mtime_ns = None
            self.maybe_sync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.check(st.st_size == ind.size, "%s: size %d after append, expected %d", path,
                   st.st_size, ind.size)

    def op_read(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        direct = self.rng.random() < 0.3
        whole = self.rng.random() < 0.25
        fd = os.open(self.full(path), os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            if whole:
                self.note("read whole", path, "direct" if direct else "buffered", ind.size)
                self.check_whole("whole file", path, ind, fd, direct)
            else:
                aligned = direct or self.rng.random() < 0.3
                length = self.pick_length(aligned)
                off = self.rng.randrange(0, ind.size + 8 * KiB)
                if aligned:
                    off -= off % ALIGN
                self.note("pread", path, "direct" if direct else "buffered", off, length)
                self.check_read("range", path, ind, fd, direct, off, length)
        finally:
            os.close(fd)

    def op_truncate(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        size = ind.size
        r = self.rng.random()
        if r < 0.1:
            new = 0
        elif r < 0.5:
            new = max(0, min(FILE_MAX, size + self.rng.randrange(-64 * KiB, 64 * KiB + 1)))
        else:
            new = self.rng.randrange(0, FILE_MAX + 1)
        if self.rng.random() < 0.3:
            new -= new % ALIGN
        via_fd = self.rng.random() < 0.5
        self.note("truncate", path, size, "->", new, "ftruncate" if via_fd else "truncate")
        if via_fd:
            fd = os.open(self.full(path), os.O_WRONLY)
            try:
                os.ftruncate(fd, new)
            finally:
                os.close(fd)
        else:
            os.truncate(self.full(path), new)
        ind.content.truncate(new)
        if new < size:
            ind.alloc_end = min(ind.alloc_end, new)
        ind.mtime_ns = None
        self.check_entry(path)

    def op_fallocate(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        mode = self.rng.choice(sorted(FALLOC_MODES))
        aligned = self.rng.random() < 0.4
        length = self.pick_length(aligned, limit=2 * MiB)
        off = self.pick_offset(ind.size, length, aligned)
        end = off + length
        self.note("fallocate", FALLOC_MODES[mode], path, off, length, "size", ind.size)
        before = [list(x) for x in ind.content.segs]
        fd = os.open(self.full(path), os.O_RDWR)
        try:
            fallocate(fd, mode, off, length)
            if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
                ind.content.zero(off, end)
            if not mode & FALLOC_FL_KEEP_SIZE and end > ind.size:
                ind.content.truncate(end)
            if not mode & FALLOC_FL_PUNCH_HOLE:
                ind.alloc_end = max(ind.alloc_end, end)
            ind.mtime_ns = None
            self.check_read("after fallocate", path, ind, fd, False, max(0, off - 100),
                            length + 200, before)
        finally:
            os.close(fd)
        self.check_entry(path)

    def op_fsync(self):
        if self.files and self.rng.random() < 0.7:
            path, ind = self.pick_file()
            flags = os.O_RDONLY
        else:
            path = self.rng.choice(self.parents())
            flags = os.O_RDONLY | os.O_DIRECTORY
        data_only = self.rng.random() < 0.5
        self.note("fdatasync" if data_only else "fsync", path)
        fd = os.open(self.full(path), flags)
        try:
            (os.fdatasync if data_only else os.fsync)(fd)
        finally:
            os.close(fd)

    def remove_name(self, path):
        """Model: `path` no longer exists (unlinked or replaced)."""
        if path in self.files:
            ind = self.files.pop(path)
            ind.paths.remove(path)
        elif path in self.links:
            del self.links[path]
        else:
            raise AssertionError(path)

    def op_rename(self):
        rng = self.rng
        movable_dirs = [d for d in self.dirs if d != self.home and
                        not any(c in self.dirs for c in
                                (d + "/" + x for x in self.children(d)))]
        if movable_dirs and rng.random() < 0.15:
            return self.rename_dir(rng.choice(movable_dirs))
        names = list(self.files) + list(self.links)
        if not names:
            return self.op_create()
        src = rng.choice(names)
        src_ind = self.files.get(src)
        targets = [p for p in names if p != src and
                   (src_ind is None or self.files.get(p) is not src_ind)]
        if targets and rng.random() < 0.35:
            dst = rng.choice(targets)
        else:
            dst = self.new_name(self.pick_parent(), "r")
        replaced = dst in self.files or dst in self.links
        self.note("rename", src, dst, "(replaces)" if replaced else "")
        os.rename(self.full(src), self.full(dst))
        if replaced:
            self.remove_name(dst)
        if src_ind is not None:
            del self.files[src]
            src_ind.paths[src_ind.paths.index(src)] = dst
            self.files[dst] = src_ind
        else:
            self.links[dst] = self.links.pop(src)
        self.check(not os.path.lexists(self.full(src)), "%s still exists after rename "
                   "to %s", src, dst)
        self.check_entry(dst)

    def rename_dir(self, d):
        parent = self.pick_parent()
        if parent == d or parent.startswith(d + "/") or parent.count("/") + 2 > MAX_DEPTH:
            parent = self.home
        dst = self.new_name(parent, "e")
        self.note("rename dir", d, dst)
        os.rename(self.full(d), self.full(dst))
        pre = d + "/"
        for table in (self.files, self.links):
            for p in [p for p in table if p.startswith(pre)]:
                q = dst + p[len(d):]
                obj = table.pop(p)
                table[q] = obj
                if isinstance(obj, Inode):
                    obj.paths[obj.paths.index(p)] = q
        self.dirs[dst] = self.dirs.pop(d)
        self.check(not os.path.lexists(self.full(d)), "%s still exists after rename", d)
        self.check_entry(dst)
        self.check_listing(dst)

    def op_link(self):
        path, ind = self.pick_file()
        if path is None or len(ind.paths) >= MAX_LINKS:
            return self.op_create()
        new = self.new_name(self.pick_parent(), "h")
        self.note("link", path, new)
        os.link(self.full(path), self.full(new))
        ind.paths.append(new)
        self.files[new] = ind
        self.check_entry(new)
        self.check_entry(path)

    def op_unlink(self, path=None):
        if path is None:
            names = list(self.files) + list(self.links)
            if not names:
                return self.op_create()
            path = self.rng.choice(names)
        self.note("unlink", path)
        os.unlink(self.full(path))
        ind = self.files.get(path)
        self.remove_name(path)
        self.check(not os.path.lexists(self.full(path)), "%s exists after unlink", path)
        if ind is not None and ind.paths:
            self.check_entry(ind.paths[0])

    def op_unlink_open(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        self.note("unlink while open", path)
        fd = os.open(self.full(path), os.O_RDWR)
        try:
            os.unlink(self.full(path))
            self.remove_name(path)
            length = self.pick_length(False, limit=MiB)
            off = self.pick_offset(ind.size, length, False)
            src = self.pool_src(length)
            self.note("  pwrite on the unlinked file", off, length, "pool", src)
            self.write_at(fd, False, off, src, length)
            ind.content.put(off, off + length, src)
            ind.mtime_ns = None
            st = os.fstat(fd)
            self.check(st.st_nlink == len(ind.paths), "%s: nlink %d after unlink while "
                       "open, expected %d", path, st.st_nlink, len(ind.paths))
            self.check_whole("unlinked while open", path, ind, fd)
        finally:
            os.close(fd)
        if ind.paths:
            self.check_entry(ind.paths[0])

    def op_mkdir(self):
        parents = [p for p in self.parents() if p.count("/") + 2 <= MAX_DEPTH]
        parent = self.rng.choice(parents)
        path = self.new_name(parent, "d")
        mode = self.rng.choice((0o755, 0o700, 0o775, 0o750))
        self.note("mkdir", path)
        os.mkdir(self.full(path), mode)
        dn = DirNode(mode & ~self.run.umask)
        dn.ino = os.lstat(self.full(path)).st_ino
        self.dirs[path] = dn
        self.check_entry(path)
        if parent in self.dirs:
            self.check_entry(parent)

    def op_rmdir(self):
        own = [d for d in self.dirs if d != self.home]
        if not own:
            return self.op_mkdir()
        empty = [d for d in own if not self.children(d)]
        if empty and self.rng.random() < 0.8:
            d = self.rng.choice(empty)
            self.note("rmdir", d)
            os.rmdir(self.full(d))
            del self.dirs[d]
            self.check(not os.path.lexists(self.full(d)), "%s exists after rmdir", d)
            return
        full = [d for d in own if self.children(d)]
        if not full:
            return
        d = self.rng.choice(full)
        self.note("rmdir (not empty)", d)
        try:
            os.rmdir(self.full(d))
        except OSError as e:
            self.check(e.errno == errno.ENOTEMPTY, "rmdir %s (not empty): %s, expected "
                       "ENOTEMPTY", d, errname(e.errno))
            self.counts["rmdir_enotempty"] += 1
        else:
            raise CheckFailed("rmdir %s succeeded on a directory holding %s"
                              % (d, self.children(d)[:5]))
        self.check_listing(d)

    def random_target(self):
        rng = self.rng
        r = rng.random()
        if r < 0.4 and self.files:
            return os.path.basename(rng.choice(list(self.files)))
        if r < 0.7:
            n = rng.randrange(1, 60)
        else:
            n = rng.randrange(60, 1200)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-/"
        return "".join(rng.choice(alphabet) for _ in range(n))

    def op_symlink(self):
        path = self.new_name(self.pick_parent(), "s")
        target = self.random_target()
        self.note("symlink", path, len(target))
        os.symlink(target, self.full(path))
        ln = Symlink(target)
        ln.ino = os.lstat(self.full(path)).st_ino
        self.links[path] = ln
        self.check_link(path)

    def check_link(self, path):
        got = os.readlink(self.full(path))
        exp = self.links[path].target
        self.check(got == exp, "readlink %s: %r, expected %r", path, got[:80], exp[:80])
        self.check_entry(path)

    def op_readlink(self):
        if not self.links:
            return self.op_symlink()
        path = self.rng.choice(list(self.links))
        self.note("readlink", path)
        self.check_link(path)

    def op_xattr(self):
        rng = self.rng
        if self.files and rng.random() < 0.8:
            path, obj = self.pick_file()
        else:
            path = rng.choice(list(self.dirs))
            obj = self.dirs[path]
        xa = obj.xattrs
        p = self.full(path)
        r = rng.random()
        name = "user.k%d" % rng.randrange(16)
        if r < 0.5:
            value = rng.randbytes(rng.choice((0, rng.randrange(1, 64), rng.randrange(64, 700))))
            trial = dict(xa)
            trial[name] = value
            if xattr_cost(trial) > XATTR_BUDGET:
                r = 0.9
            else:
                flag = os.XATTR_REPLACE if name in xa else os.XATTR_CREATE
                self.note("setxattr", path, name, len(value),
                          "replace" if name in xa else "create")
                os.setxattr(p, name, value, flag)
                xa[name] = value
                got = os.getxattr(p, name)
                self.check(got == value, "%s: getxattr %s after set: %d bytes, expected %d",
                           path, name, len(got), len(value))
                return
        if r < 0.7:
            self.note("getxattr", path, name)
            if name in xa:
                got = os.getxattr(p, name)
                self.check(got == xa[name], "%s: getxattr %s: %d bytes, expected %d", path,
                           name, len(got), len(xa[name]))
            else:
                try:
                    os.getxattr(p, name)
                except OSError as e:
                    self.check(e.errno == errno.ENODATA, "%s: getxattr of the missing %s: "
                               "%s, expected ENODATA", path, name, errname(e.errno))
                else:
                    raise CheckFailed("%s: getxattr of the missing %s succeeded" % (path, name))
            return
        if r < 0.85 or not xa:
            self.note("listxattr", path)
            self.check_xattrs(path, xa)
            return
        name = rng.choice(sorted(xa))
        self.note("removexattr", path, name)
        os.removexattr(p, name)
        del xa[name]
        self.check_xattrs(path, xa)

    def op_chmod(self):
        if self.files and self.rng.random() < 0.8:
            path, obj = self.pick_file()
            mode = self.rng.randrange(0o1000) | 0o600
        else:
            path = self.rng.choice(list(self.dirs))
            obj = self.dirs[path]
            mode = self.rng.randrange(0o1000) | 0o700
        self.note("chmod", path, oct(mode))
        os.chmod(self.full(path), mode)
        obj.mode = mode
        self.check_entry(path)

    def op_utime(self):
        path, ind = self.pick_file()
        if path is None:
            return self.op_create()
        rng = self.rng
        atime = rng.randrange(315532800, 4102444800) * 10**9 + rng.randrange(10**9)
        mtime = rng.randrange(315532800, 4102444800) * 10**9 + rng.randrange(10**9)
        self.note("utime", path, atime, mtime)
        os.utime(self.full(path), ns=(atime, mtime))
        ind.mtime_ns = mtime
        st = os.lstat(self.full(path))
        self.check(st.st_atime_ns == atime, "%s: atime %d after utime, expected %d", path,
                   st.st_atime_ns, atime)
        self.check_entry(path, st)

    def op_scan(self):
        d = self.rng.choice(self.parents())
        self.note("readdir and stat", d)
        self.check_listing(d)
        for c in self.children(d):
            self.check_entry(d + "/" + c)

    def op_stat_all(self):
        self.note("stat everything")
        for d in self.parents():
            self.check_listing(d)
        for table in (self.dirs, self.files, self.links):
            for p in list(table):
                self.check_entry(p)

    def reclaim(self):
        """Over budget: remove every name of the largest file, or names
        until below the count."""
        self.counts["reclaim"] += 1
        if self.allocated() > self.run.budget and self.files:
            ind = max(self.inodes(), key=lambda i: i.allocated())
            for p in list(ind.paths):
                self.op_unlink(p)
                self.counts["unlink"] += 1
            return
        names = list(self.files) + list(self.links)
        if names:
            self.op_unlink(self.rng.choice(names))
            self.counts["unlink"] += 1
            return
        empty = [d for d in self.dirs if d != self.home and not self.children(d)]
        if empty:
            d = self.rng.choice(empty)
            self.note("rmdir", d)
            os.rmdir(self.full(d))
            del self.dirs[d]
            self.counts["rmdir"] += 1

    # -- the loop ---------------------------------------------------------

    def setup(self):
        mode = 0o755
        os.mkdir(self.full(self.home), mode)
        dn = DirNode(mode & ~self.run.umask)
        dn.ino = os.lstat(self.full(self.home)).st_ino
        self.dirs[self.home] = dn

    def step(self):
        if self.allocated() > self.run.budget or self.nnames() > MAX_NAMES:
            op = "reclaim"
            fn = self.reclaim
        else:
            op = self.rng.choices(self.names, self.weights)[0]
            fn = getattr(self, "op_" + op)
        self.current = (op, time.monotonic())
        t0 = self.current[1]
        fn()
        dt = time.monotonic() - t0
        self.current = None
        if op != "reclaim":
            self.counts[op] += 1
        self.op_time[op] += dt
        self.op_max[op] = max(self.op_max[op], dt)

    def loop(self):
        try:
            self.setup()
            while not self.run.stop.is_set():
                self.step()
        except BaseException as e:  # any error ends the run
            if isinstance(e, CheckFailed):
                what = "check failed: %s" % e
            else:
                what = "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc(limit=6))
            self.run.fail("thread %d: %s\nits last operations (most recent last):\n  %s"
                          % (self.index, what, "\n  ".join(self.history)))

    # -- verification of the whole share ---------------------------------

    def verify(self, root, what):
        """Every name, byte, mode, link count, xattr and symlink of this
        thread's share, read through `root`."""
        saved = self.root
        self.root = root
        try:
            for d in self.parents():
                self.check_listing(d)
            for p in self.dirs:
                self.check_entry(p)
                self.check_xattrs(p, self.dirs[p].xattrs)
            for p in self.links:
                self.check_link(p)
            for ind in self.inodes():
                for p in ind.paths:
                    self.check_entry(p)
                self.check_xattrs(ind.paths[0], ind.xattrs)
                fd = os.open(self.full(ind.paths[0]), os.O_RDONLY)
                try:
                    self.check_whole(what, ind.paths[0], ind, fd)
                finally:
                    os.close(fd)
        finally:
            self.root = saved


# --------------------------------------------------------------------------
# sampling the serving process


def proc_sample(pid):
    """VmRSS and VmHWM in KiB, thread count and open descriptors of pid."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k.lower()] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def stat_counters(stats):
    """The figures of kaiofs-stat --json that the load follows."""
    aio = stats.get("aio", {})
    fuse = stats.get("fuse", {})
    return {"aio_errors": aio.get("errors"), "aio_eagain": aio.get("eagain"),
            "aio_short_io": aio.get("short_io"), "aio_in_flight": aio.get("in_flight"),
            "aio_completions": aio.get("completions"),
            "arena_in_use": stats.get("arena", {}).get("in_use"),
            "arena_waits": stats.get("arena", {}).get("waits"),
            "fuse_requests": sum(fuse.get("requests", {}).values()),
            "fuse_bytes_read": fuse.get("bytes_read"),
            "fuse_bytes_written": fuse.get("bytes_written")}


class Sampler(threading.Thread):
    def __init__(self, run, interval, stat_every):
        super().__init__(name="load-sampler", daemon=True)
        self.run_ = run
        self.interval = interval
        self.stat_every = stat_every
        self.halt = threading.Event()
        self.samples = []
        self.stats = []

    def sample_now(self, with_stats=True):
        run = self.run_
        s = {"t": time.monotonic() - run.t0}
        if run.pid:
            s.update(proc_sample(run.pid))
        vfs = os.statvfs(run.root)
        s["free"] = vfs.f_bavail * vfs.f_frsize
        self.samples.append(s)
        if with_stats and run.stat_fn:
            c = stat_counters(run.stat_fn())
            c["t"] = s["t"]
            self.stats.append(c)
            if c["aio_errors"]:
                run.fail("kaiofs-stat reports %d aio errors at %.0fs" % (c["aio_errors"], s["t"]))
        if s["free"] < run.space_floor:
            run.fail("the volume is nearly full (%d MiB free at %.0fs): the data budget "
                     "of the workload is too large" % (s["free"] >> 20, s["t"]))
        return s

    def run(self):
        n = 0
        try:
            while not self.halt.wait(self.interval):
                n += 1
                self.sample_now(with_stats=n % self.stat_every == 0)
                self.run_.check_stuck()
        except BaseException as e:
            self.run_.fail("sampler: %s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))


# --------------------------------------------------------------------------
# a whole run


class LoadFailed(Exception):
    pass


class LoadRun:
    """setup(), run() for `seconds`, then verify(root) as often as wanted.

    root: the directory to load (empty); pid: the process to sample (or
    None); stat_fn: returns kaiofs-stat --json as a dict (or None)."""

    def __init__(self, root, seconds, threads=8, seed=1, pid=None, stat_fn=None,
                 interval=1.0, stat_every=5, stuck_after=120.0, sanitizer=False):
        self.root = root
        self.seconds = seconds
        self.nthreads = threads
        self.seed = seed
        self.pid = pid
        self.stat_fn = stat_fn
        self.interval = interval
        self.stat_every = stat_every
        self.stuck_after = stuck_after
        self.sanitizer = sanitizer
        self.pool = random.Random(seed).randbytes(POOL_SIZE)
        self.stop = threading.Event()
        self.failures = []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        old = os.umask(0)
        os.umask(old)
        self.umask = old
        vfs = os.statvfs(root)
        free = vfs.f_bavail * vfs.f_frsize
        total = vfs.f_blocks * vfs.f_frsize
        # Half the free space for data (the estimate counts every byte up
        # to the end of a file or of its preallocation, so it is an upper
        # bound); the rest covers extent trees, directories and xattr blocks.
        self.budget = free // 2 // threads
        self.space_floor = total // 20
        self.workers = [Worker(self, i) for i in range(threads)]
        self.sampler = Sampler(self, interval, stat_every)
        self.threads = []
        self.times = {}

    def fail(self, msg):
        with self.lock:
            self.failures.append(msg)
        self.stop.set()

    def check_stuck(self):
        now = time.monotonic()
        for w in self.workers:
            cur = w.current
            if cur and now - cur[1] > self.stuck_after:
                self.fail("thread %d: %s has not returned after %.0fs; last operations:\n  %s"
                          % (w.index, cur[0], now - cur[1], "\n  ".join(w.history)))

    def raise_failures(self):
        if self.failures:
            raise LoadFailed("\n\n".join(self.failures[:3]))

    def setup(self):
        for d in SHARED_DIRS:
            os.mkdir(os.path.join(self.root, d), 0o755)

    def run(self):
        """The load: every thread until `seconds` pass or the first failure."""
        self.t0 = time.monotonic()
        self.idle = self.sampler.sample_now()
        self.sampler.start()
        for w in self.workers:
            t = threading.Thread(target=w.loop, name="load-%d" % w.index, daemon=True)
            self.threads.append(t)
            t.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        self.times["load"] = time.monotonic() - self.t0
        deadline = time.monotonic() + self.stuck_after
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            self.check_stuck()
            self.fail("threads still running %.0fs after the end of the load: %s"
                      % (self.stuck_after, alive))
        self.sampler.halt.set()
        self.sampler.join(30)
        self.times["stopped"] = time.monotonic() - self.t0
        if self.failures and os.environ.get("KAIOFS_LOAD_DUMP"):
            self.dump_histories(os.environ["KAIOFS_LOAD_DUMP"])
        self.raise_failures()

    def dump_histories(self, path):
        with open(path, "w") as f:
            for w in self.workers:
                f.write("== thread %d\n" % w.index)
                f.write("\n".join(w.history) + "\n")

    def quiesce(self, timeout):
        """After the load: wait until the descriptor and thread counts are
        back where they were before it; returns the last sample."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.sampler.sample_now(with_stats=False)
            if not self.pid or (s["fds"] == self.idle["fds"] and
                                s["threads"] == self.idle["threads"]):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        self.quiet = s
        self.raise_failures()
        return s

    def verify(self, root, what):
        """Every thread's share, and nothing else in the tree."""
        t = time.monotonic()
        top = sorted(n for n in os.listdir(root) if n != "lost+found")
        exp = sorted(list(SHARED_DIRS) + [w.home for w in self.workers])
        if top != exp:
            raise LoadFailed("%s: the top directory holds %s, expected %s" % (what, top, exp))
        for d in SHARED_DIRS:
            names = set(os.listdir(os.path.join(root, d)))
            owned = set()
            for w in self.workers:
                owned |= set(w.children(d))
            if names != owned:
                raise LoadFailed("%s: %s holds unexpected %s, misses %s" % (
                    what, d, sorted(names - owned)[:10], sorted(owned - names)[:10]))
        for w in self.workers:
            try:
                w.verify(root, what)
            except (CheckFailed, OSError) as e:
                raise LoadFailed("%s: thread %d's files: %s: %s" % (what, w.index,
                                                                  type(e).__name__, e))
        self.times["verify " + what] = time.monotonic() - t

    # -- figures --------------------------------------------------------

    def totals(self):
        counts = collections.Counter()
        op_time = collections.Counter()
        op_max = collections.Counter()
        for w in self.workers:
            counts.update(w.counts)
            op_time.update(w.op_time)
            for k, v in w.op_max.items():
                op_max[k] = max(op_max[k], v)
        return {
            "ops": dict(sorted(counts.items())),
            "ops_total": sum(v for k, v in counts.items()
                             if k not in ("fsync_after_write", "fdatasync_after_write",
                                          "rmdir_enotempty", "reclaim")),
            "op_mean_ms": {k: round(1000 * op_time[k] / max(1, counts.get(k, 0) or 1), 2)
                           for k in sorted(op_time)},
            "op_max_ms": {k: round(1000 * v, 1) for k, v in sorted(op_max.items())},
            "bytes_written": sum(w.bytes_written for w in self.workers),
            "bytes_read": sum(w.bytes_read for w in self.workers),
            "files_at_end": sum(len(w.inodes()) for w in self.workers),
            "names_at_end": sum(w.nnames() for w in self.workers),
            "data_at_end": sum(sum(i.size for i in w.inodes()) for w in self.workers),
        }

    def memory(self, warm_fraction=0.25, window_fraction=0.1):
        """RSS figures: the largest RSS in the window that ends the warm-up,
        and in the window that ends the load (with the quiescent sample)."""
        if not self.pid:
            return None
        load = self.times["load"]
        warm_end = warm_fraction * load
        win = window_fraction * load
        ss = [s for s in self.sampler.samples if "vmrss" in s]
        warm = [s["vmrss"] for s in ss if warm_end - win <= s["t"] <= warm_end]
        end = [s["vmrss"] for s in ss if load - win <= s["t"] <= load]
        if not warm:
            warm = [min(ss, key=lambda s: abs(s["t"] - warm_end))["vmrss"]]
        end.append(self.quiet["vmrss"])
        return {"rss_start_kib": self.idle["vmrss"], "rss_warm_kib": max(warm),
                "rss_end_kib": max(end), "rss_quiet_kib": self.quiet["vmrss"],
                "rss_max_kib": max(s["vmrss"] for s in ss),
                "hwm_end_kib": self.quiet["vmhwm"],
                "growth_kib": max(end) - max(warm),
                "rss_timeline_kib": self.timeline(ss),
                "fds_idle": self.idle["fds"], "fds_quiet": self.quiet["fds"],
                "fds_max": max(s["fds"] for s in ss),
                "threads_idle": self.idle["threads"], "threads_quiet": self.quiet["threads"],
                "threads_max": max(s["threads"] for s in ss)}

    @staticmethod
    def timeline(samples, points=12):
        """(seconds, VmRSS KiB) at about `points` moments of the run."""
        step = max(1, len(samples) // points)
        picked = samples[::step]
        if picked[-1] is not samples[-1]:
            picked.append(samples[-1])
        return [(round(s["t"]), s["vmrss"]) for s in picked]

    def report(self):
        rep = {"seed": self.seed, "threads": self.nthreads, "seconds": self.seconds,
               "sanitizer": self.sanitizer,
               "budget_per_thread_mib": round(self.budget / MiB, 1),
               "durations_s": {k: round(v, 1) for k, v in self.times.items()},
               "min_free_mib": min(s["free"] for s in self.sampler.samples) >> 20}
        rep.update(self.totals())
        mem = self.memory()
        if mem:
            rep["memory"] = mem
        if self.sampler.stats:
            first, last = self.sampler.stats[0], self.sampler.stats[-1]
            rep["kaiofs_stat"] = {"aio_errors_max": max(s["aio_errors"] or 0
                                                        for s in self.sampler.stats),
                                  "samples": len(self.sampler.stats), "last": last,
                                  "first": first}
        return rep


def rss_bound_kib(baseline_kib, sanitizer=False):
    """How much the RSS may grow after the warm-up: max(8 MiB, 10%).

    Without a leak the RSS of kaiofs still moves after the warm-up: kaiofs
    keeps a node, and with it the file's extent map, for each inode the
    kernel holds, and the kernel holds more of them as the load goes on
    (with the normal build the heap in use grew from 1.7 to 2.7 MiB over a
    300 s load, more slowly as it went, and fell to 1.4 MiB once the
    kernel's caches were dropped and it had forgotten them); glibc gives
    kaiofs' threads their own malloc arenas, whose heaps fragment as the mix
    of request sizes shifts (a few MiB on 2 cores). The arena is locked at
    mount time and does not move. A leak of a request buffer (>= 4 KiB) per
    operation exceeds 8 MiB within 2048 operations; a leak of 64 bytes per
    operation exceeds it within about 130,000 operations (the 10-minute run
    does about 100,000 to 140,000 on 2 shared cores; the 2-minute run
    catches leaks of about 400 bytes per operation and more). Leaks of
    memory that nothing points to any more are LeakSanitizer's to find in
    the ASan build, at unmount.

    Under AddressSanitizer the bound is doubled, max(16 MiB, 20%): every
    heap block carries redzones and its shadow, and freed blocks wait in
    the quarantine, so the same growth of the heap shows two to four times
    larger in the RSS (measured after the warm-up: 1 MiB in a 300 s run of
    the normal build, 9 MiB in a 600 s run of the ASan build)."""
    if sanitizer:
        return max(16 * 1024, baseline_kib // 5)
    return max(8 * 1024, baseline_kib // 10)


def memory_problems(mem, sanitizer=False):
    """Why the memory figures of a run are not flat (empty when they are)."""
    problems = []
    bound = rss_bound_kib(mem["rss_warm_kib"], sanitizer)
    if mem["growth_kib"] > bound:
        problems.append("RSS grew by %d KiB after the warm-up (%d -> %d KiB), more than "
                        "the bound of %d KiB" % (mem["growth_kib"], mem["rss_warm_kib"],
                                                 mem["rss_end_kib"], bound))
    if mem["fds_quiet"] != mem["fds_idle"]:
        problems.append("open descriptors: %d before the load, %d after it"
                        % (mem["fds_idle"], mem["fds_quiet"]))
    if mem["threads_quiet"] != mem["threads_idle"]:
        problems.append("threads: %d before the load, %d after it"
                        % (mem["threads_idle"], mem["threads_quiet"]))
    return problems


def format_report(rep):
    lines = ["load: %d threads, %.0f s, seed %d, data budget %.1f MiB per thread"
             % (rep["threads"], rep["durations_s"].get("load", 0), rep["seed"],
                rep["budget_per_thread_mib"])]
    lines.append("operations: %d (%.0f/s)" % (
        rep["ops_total"], rep["ops_total"] / max(1e-9, rep["durations_s"].get("load", 1))))
    lines.append("  " + ", ".join("%s %d" % kv for kv in rep["ops"].items()))
    lines.append("bytes written %.1f MiB, read %.1f MiB; at the end %d files (%d names), "
                 "%.1f MiB; lowest free space %d MiB"
                 % (rep["bytes_written"] / MiB, rep["bytes_read"] / MiB, rep["files_at_end"],
                    rep["names_at_end"], rep["data_at_end"] / MiB, rep["min_free_mib"]))
    lines.append("mean ms per op: " + ", ".join("%s %.1f" % kv
                                                for kv in rep["op_mean_ms"].items()))
    lines.append("max ms per op: " + ", ".join("%s %.0f" % kv
                                               for kv in rep["op_max_ms"].items()))
    mem = rep.get("memory")
    if mem:
        lines.append("RSS KiB: start %d, warm-up end %d, end %d, quiescent %d, max %d "
                     "(growth %+d KiB, bound %d); VmHWM %d"
                     % (mem["rss_start_kib"], mem["rss_warm_kib"], mem["rss_end_kib"],
                        mem["rss_quiet_kib"], mem["rss_max_kib"], mem["growth_kib"],
                        rss_bound_kib(mem["rss_warm_kib"], rep.get("sanitizer")),
                        mem["hwm_end_kib"]))
        lines.append("RSS timeline (s, KiB): " + " ".join(
            "%d:%d" % tuple(p) for p in mem["rss_timeline_kib"]))
        lines.append("fds: idle %d, max %d, quiescent %d; threads: idle %d, max %d, "
                     "quiescent %d" % (mem["fds_idle"], mem["fds_max"], mem["fds_quiet"],
                                       mem["threads_idle"], mem["threads_max"],
                                       mem["threads_quiet"]))
    ks = rep.get("kaiofs_stat")
    if ks:
        last = ks["last"]
        lines.append("kaiofs-stat (%d samples): aio errors max %d; at the end: %s"
                     % (ks["samples"], ks["aio_errors_max"],
                        ", ".join("%s %s" % (k, v) for k, v in last.items() if k != "t")))
    lines.append("durations s: " + ", ".join("%s %.1f" % kv
                                             for kv in rep["durations_s"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# standalone


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="an empty directory to load")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--pid", type=int, default=None, help="process to sample")
    ap.add_argument("--stat-bin", default=None, help="kaiofs-stat, with --stat-mnt")
    ap.add_argument("--stat-mnt", default=None)
    ap.add_argument("--json", default=None, help="write the report here as JSON")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2**31)
    stat_fn = None
    if a.stat_bin:
        def stat_fn():
            r = subprocess.run([a.stat_bin, "--json", a.stat_mnt or a.dir],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError("kaiofs-stat failed: %s" % r.stderr.strip())
            return json.loads(r.stdout)
    run = LoadRun(a.dir, a.seconds, threads=a.threads, seed=seed, pid=a.pid, stat_fn=stat_fn)
    print("seed %d" % seed, flush=True)
    rc = 0
    try:
        run.setup()
        run.run()
        run.quiesce(30)
        run.verify(a.dir, "after the load")
    except LoadFailed as e:
        print("FAILED: %s" % e, file=sys.stderr)
        rc = 1
    rep = run.report() if run.times.get("load") and getattr(run, "quiet", None) else None
    if rep:
        print(format_report(rep))
        if rep.get("memory"):
            for p in memory_problems(rep["memory"]):
                print("FAILED: %s" % p, file=sys.stderr)
                rc = 1
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rep, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
