"""Filesystem mode: every operation and its error cases.

Most tests are differential: a scenario runs once on a fresh image mounted
read-write by the kernel's own ext4 driver and once on kaiofs serving a
second fresh image made the same way (ext4 with 1K and 4K blocks, ext3 with
4K blocks, ext2 with 1K blocks -- the last two map file blocks through
indirect blocks). Each scenario returns a list of (label, outcome) pairs --
return values, errno names, stat fields, timestamps compared relatively
("m+" changed, "c=" unchanged) -- and the two lists must be identical.
Afterwards the kaiofs image must pass e2fsck -fn, and the tree it holds
(read by the kernel) must match the tree the kernel left on its own image:
names, types, modes, owners, link counts, sizes, allocated ranges, device
numbers, symlink targets, contents, inode flags (lsattr) and extended
attributes (ACLs included).

Direct tests follow for what the kernel's ext4 does differently on purpose
(fallocate modes ext4 implements and kaiofs refuses), for well-known
values (statfs), for ACLs read back by the kernel, and for files that need
single, double and triple indirect blocks.
"""

import ast
import collections
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import platform
import random
import re
import shutil
import stat
import struct
import subprocess
import time
import traceback

import pytest

import fs_support
import kaiofs_helpers as kh

MiB = kh.MiB

libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
OTHER_UID = 4242
OTHER_GID = 4343
CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)

_GETDENTS64 = {"x86_64": 217, "aarch64": 61}

libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                           ctypes.c_char_p, ctypes.c_uint]
libc.renameat2.restype = ctypes.c_int
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.fallocate.restype = ctypes.c_int
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                          ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p,
                           ctypes.POINTER(_Timespec * 2), ctypes.c_int]
libc.utimensat.restype = ctypes.c_int


def _check(res):
    if res < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return res


def _b(path):
    return os.fsencode(path)


def renameat2(old, new, flags):
    return _check(libc.renameat2(AT_FDCWD, _b(old), AT_FDCWD, _b(new), flags))


def fallocate(fd, mode, offset, length):
    return _check(libc.fallocate(fd, mode, offset, length))


def utimensat(path, atime, mtime, follow=True):
    """atime/mtime: (sec, nsec) with nsec possibly UTIME_NOW/UTIME_OMIT."""
    ts = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    return _check(libc.utimensat(AT_FDCWD, _b(path), ctypes.byref(ts),
                                 0 if follow else 0x100))


def getxattr_size(path, name, size):
    """getxattr(2) with a caller-sized buffer (size 0 asks for the length)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    return _check(libc.getxattr(_b(path), name.encode(), buf if size else None, size))


def getdents(fd, bufsize):
    """One getdents64 call: list of (name bytes, d_type, d_ino, d_off)."""
    buf = ctypes.create_string_buffer(bufsize)
    n = _check(libc.syscall(ctypes.c_long(_GETDENTS64[platform.machine()]),
                            ctypes.c_int(fd), buf, ctypes.c_uint(bufsize)))
    raw = buf.raw[:n]
    out = []
    pos = 0
    while pos < n:
        ino, off, reclen, dtype = struct.unpack_from("<QqHB", raw, pos)
        name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
        out.append((name, dtype, ino, off))
        pos += reclen
    return out


def getdents_all(path, bufsize=32768):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = []
        while True:
            chunk = getdents(fd, bufsize)
            if not chunk:
                return out
            out += chunk
    finally:
        os.close(fd)


def pattern(n, seed=0):
    return random.Random(seed * 7919 + n).randbytes(n)


def ename(e):
    return errno.errorcode.get(e.errno, "errno %d" % e.errno)


def tick():
    """Wait until the coarse clock has moved past the current fine time, so
    that any timestamp taken from now on is later than any taken before."""
    t = time.time_ns()
    ok = kh.wait_for(lambda: time.clock_gettime_ns(CLOCK_REALTIME_COARSE) > t,
                     2, interval=0.001)
    assert ok, "CLOCK_REALTIME_COARSE did not advance"


def write_file(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644):
    fd = os.open(path, flags, mode)
    try:
        done = 0
        view = memoryview(data)
        while done < len(data):
            done += os.write(fd, view[done:])
    finally:
        os.close(fd)


def read_file(path, size=-1, offset=0):
    fd = os.open(path, os.O_RDONLY)
    try:
        if size < 0:
            size = os.fstat(fd).st_size - offset
        return read_exact(fd, size, offset)
    finally:
        os.close(fd)


def read_exact(fd, size, offset):
    """pread until size bytes or EOF."""
    parts = []
    while size > 0:
        b = os.pread(fd, min(size, 4 * MiB), offset)
        if not b:
            break
        parts.append(b)
        size -= len(b)
        offset += len(b)
    return b"".join(parts)


def open_close(path, flags, mode=0o644):
    os.close(os.open(path, flags, mode))


def summary(path, follow=False):
    """Observable stat fields (no inode number, no timestamps, no directory
    sizes: those legitimately differ between implementations)."""
    s = os.stat(path, follow_symlinks=follow)
    kind = stat.S_IFMT(s.st_mode)
    out = {"type": stat.filemode(s.st_mode)[0], "perm": "%04o" % stat.S_IMODE(s.st_mode),
           "nlink": s.st_nlink, "uid": s.st_uid, "gid": s.st_gid}
    if kind != stat.S_IFDIR:
        out["size"] = s.st_size
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        out["rdev"] = (os.major(s.st_rdev), os.minor(s.st_rdev))
    return out


def mctimes(path, follow=False):
    s = os.stat(path, follow_symlinks=follow)
    return s.st_mtime_ns, s.st_ctime_ns


def _rel(a, b):
    return "+" if b > a else ("=" if b == a else "-")


class Rec:
    """Collects the outcomes of one scenario run under `root`."""

    def __init__(self, root):
        self.root = root
        self.out = []
        self.bs = os.statvfs(root).f_bsize

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def add(self, label, value):
        self.out.append((label, value))
        return value

    def do(self, label, fn, *args, **kwargs):
        """Record fn's return value (or the errno name) and return it (None on error)."""
        try:
            value = fn(*args, **kwargs)
        except OSError as e:
            self.add(label, ename(e))
            return None
        self.add(label, value)
        return value

    def ok(self, label, fn, *args, **kwargs):
        """Record "ok" or the errno name; returns True on success."""
        try:
            fn(*args, **kwargs)
        except OSError as e:
            self.add(label, ename(e))
            return False
        self.add(label, "ok")
        return True

    def st(self, label, path, follow=False):
        try:
            return self.add("stat " + label, summary(path, follow))
        except OSError as e:
            return self.add("stat " + label, ename(e))

    def mark(self, *paths):
        """Timestamps of paths now; later operations get newer timestamps."""
        before = {p: mctimes(p) for p in paths}
        tick()
        return before

    def times(self, label, before):
        for p, (m0, c0) in before.items():
            m1, c1 = mctimes(p)
            name = os.path.relpath(p, self.root)
            self.add("%s: times of %s" % (label, name), "m%s c%s" % (_rel(m0, m1), _rel(c0, c1)))

    def listing(self, label, path):
        try:
            return self.add("listdir " + label, sorted(os.listdir(path)))
        except OSError as e:
            return self.add("listdir " + label, ename(e))

    def ino_eq(self, label, a, b):
        self.add(label, os.stat(a).st_ino == os.stat(b).st_ino)


# --------------------------------------------------------------------------
# inode flags (lsattr/chattr), O_TMPFILE, statx

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_NODUMP_FL, FS_NOATIME_FL = 0x40, 0x80
FS_APPEND_FL, FS_IMMUTABLE_FL = 0x20, 0x10
FS_EXTENT_FL, FS_JOURNAL_DATA_FL, FS_INDEX_FL = 0x80000, 0x4000, 0x1000
FS_XFLAG_APPEND, FS_XFLAG_NODUMP, FS_XFLAG_NOATIME = 0x10, 0x80, 0x40
_FSXATTR = struct.Struct("=IIIII8x")
O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_FOLLOW = 0x400
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BASIC_STATS, STATX_BTIME = 0x7FF, 0x800
STATX_ATTRS = {0x4: "compressed", 0x10: "immutable", 0x20: "append", 0x40: "nodump",
               0x800: "encrypted", 0x100000: "verity"}

libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_int]
libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                       ctypes.c_void_p]


def _flags_ioctl(path, cmd, arg):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return fcntl.ioctl(fd, cmd, arg)
    finally:
        os.close(fd)


def getflags(path):
    return struct.unpack("I", _flags_ioctl(path, FS_IOC_GETFLAGS, bytes(4)))[0]


def setflags(path, flags):
    _flags_ioctl(path, FS_IOC_SETFLAGS, struct.pack("I", flags))


def chflags(path, add=0, remove=0):
    setflags(path, (getflags(path) | add) & ~remove)


def fsgetxattr(path):
    xflags, extsize, nextents, projid, cow = _FSXATTR.unpack(
        _flags_ioctl(path, FS_IOC_FSGETXATTR, bytes(_FSXATTR.size)))
    return {"xflags": hex(xflags), "extsize": extsize, "nextents": nextents,
            "projid": projid, "cowextsize": cow}


def fssetxattr(path, xflags, projid=0):
    _flags_ioctl(path, FS_IOC_FSSETXATTR, _FSXATTR.pack(xflags, 0, 0, projid, 0))


def linkat(olddirfd, oldpath, newpath, flags):
    return _check(libc.linkat(olddirfd, _b(oldpath), AT_FDCWD, _b(newpath), flags))


def statx(path, follow=True):
    """mask, attributes (names), btime (ns) and ctime (ns) from statx(2). The
    kernel's FUSE passes on the birth time but not the attributes."""
    buf = ctypes.create_string_buffer(256)
    _check(libc.statx(AT_FDCWD, _b(path), 0 if follow else AT_SYMLINK_NOFOLLOW,
                      STATX_BASIC_STATS | STATX_BTIME, buf))
    mask, _, attrs = struct.unpack_from("=IIQ", buf.raw, 0)
    amask = struct.unpack_from("=Q", buf.raw, 56)[0]

    def ts(off):
        sec, nsec = struct.unpack_from("=qI", buf.raw, off)
        return sec * 10**9 + nsec
    return {"btime": mask & STATX_BTIME != 0,
            "attributes": sorted(v for k, v in STATX_ATTRS.items() if attrs & k),
            "attributes_mask": sorted(v for k, v in STATX_ATTRS.items() if amask & k),
            "btime_ns": ts(80), "ctime_ns": ts(96), "mtime_ns": ts(112)}


# --------------------------------------------------------------------------
# tree snapshot (read through the kernel's ext4)


def _digest(path, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return "%d:%s" % (size, h.hexdigest()[:24])


FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HDR = struct.Struct("=QQIIII")
_FIEMAP_EXT = struct.Struct("=QQQQQIIII")
FIEMAP_EXTENT_LAST = 0x1


def mapped_ranges(path):
    """Allocated byte ranges of a file on a kernel ext4 mount (FIEMAP),
    adjacent ranges merged whatever their written/unwritten state: which
    parts of the file own blocks, independent of where the allocator put
    them and of extent tree blocks."""
    ranges = []
    start = 0
    with open(path, "rb") as f:
        while True:
            count = 256
            buf = bytearray(_FIEMAP_HDR.size + count * _FIEMAP_EXT.size)
            _FIEMAP_HDR.pack_into(buf, 0, start, (1 << 64) - 1 - start, 1, 0, count, 0)
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            n = _FIEMAP_HDR.unpack_from(buf, 0)[3]
            last = False
            for i in range(n):
                logical, _, length, _, _, flags, _, _, _ = _FIEMAP_EXT.unpack_from(
                    buf, _FIEMAP_HDR.size + i * _FIEMAP_EXT.size)
                if ranges and ranges[-1][1] == logical:
                    ranges[-1][1] = logical + length
                else:
                    ranges.append([logical, logical + length])
                start = logical + length
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if n == 0 or last:
                return [tuple(x) for x in ranges]


def blocks_of(st_blocks, data_bytes, bs):
    """st_blocks judged against the data a file must own: equal, or at most
    two more blocks (extent tree blocks depend on how fragmented the
    allocation is, which is not part of the semantics)."""
    extra = st_blocks * 512 - data_bytes
    if 0 <= extra <= 2 * bs:
        return "data blocks (+ <= 2 metadata blocks)"
    return "unexpected: %d sectors for %d data bytes" % (st_blocks, data_bytes)


def snapshot(root):
    tree = {}
    inodes = collections.defaultdict(list)

    def visit(rel):
        p = os.path.join(root, rel) if rel else root
        s = os.lstat(p)
        item = summary(p)
        kind = stat.S_IFMT(s.st_mode)
        if kind in (stat.S_IFREG, stat.S_IFDIR):
            # the hash index of a directory is its format, not its semantics
            item["flags"] = hex(getflags(p) & ~FS_INDEX_FL)
        if kind == stat.S_IFREG:
            item["data"] = _digest(p, s.st_size)
            item["allocated"] = mapped_ranges(p)
        elif kind != stat.S_IFDIR:
            item["blocks"] = s.st_blocks
        if kind == stat.S_IFLNK:
            item["target"] = os.readlink(p)
        xattrs = {}
        for name in sorted(os.listxattr(p, follow_symlinks=False)):
            v = os.getxattr(p, name, follow_symlinks=False)
            xattrs[name] = v.hex() if len(v) <= 64 else \
                "%d:%s" % (len(v), hashlib.sha256(v).hexdigest()[:24])
        if xattrs:
            item["xattrs"] = xattrs
        tree[rel or "/"] = item
        if kind != stat.S_IFDIR and s.st_nlink > 1:
            inodes[s.st_ino].append(rel)
        if kind == stat.S_IFDIR:
            for name in sorted(os.listdir(p)):
                visit(os.path.join(rel, name))

    visit("")
    tree["#hardlinks"] = sorted(sorted(v) for v in inodes.values())
    return tree


def diff_trees(kt, ft):
    lines = []
    for key in sorted(set(kt) | set(ft)):
        a, b = kt.get(key), ft.get(key)
        if a == b:
            continue
        if a is None or b is None:
            lines.append("  %s: kernel %s, kaiofs %s"
                         % (key, "missing" if a is None else "has it",
                            "missing" if b is None else "has it"))
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(set(a) | set(b))
            for fld in fields:
                if a.get(fld) != b.get(fld):
                    lines.append("  %s [%s]: kernel %r, kaiofs %r"
                                 % (key, fld, a.get(fld), b.get(fld)))
        else:
            lines.append("  %s: kernel %r, kaiofs %r" % (key, a, b))
    return lines


def _short(v):
    r = repr(v)
    return r if len(r) <= 400 else r[:400] + "...(%d chars)" % len(r)


def diff_outcomes(k, f):
    lines = []
    for i in range(max(len(k), len(f))):
        a = k[i] if i < len(k) else None
        b = f[i] if i < len(f) else None
        if a == b:
            continue
        label = (a or b)[0]
        if a and b and a[0] != b[0]:
            label = "%s / %s" % (a[0], b[0])
        lines.append("  #%d %s\n      kernel ext4: %s\n      kaiofs:      %s"
                     % (i, label, _short(a[1]) if a else "(no step)",
                        _short(b[1]) if b else "(no step)"))
        if a and b and a[0] != b[0]:
            lines.append("  (the two runs diverged here; later steps not compared)")
            break
    return lines


# --------------------------------------------------------------------------
# scenarios

SCENARIOS = []


ALL_VARIANTS = (("ext4", 1024), ("ext4", 4096), ("ext3", 4096), ("ext2", 1024))


def scenario(variants=ALL_VARIANTS, needs=()):
    def deco(fn):
        fn.variants = variants
        fn.needs = needs
        SCENARIOS.append(fn)
        return fn
    return deco


def run_scenario(fn, root, catch=False):
    """The outcomes of fn under root. With catch, an unexpected exception
    ends the run and is returned as text with the outcomes so far."""
    r = Rec(root)
    old = os.umask(0o022)
    try:
        fn(r)
    except Exception:
        if not catch:
            raise
        return r.out, traceback.format_exc(limit=-3)
    finally:
        os.umask(old)
    return (r.out, None) if catch else r.out


@scenario()
def sc_lookup(r):
    f, d = r.p("f"), r.p("d")
    r.st("missing before create", r.p("late"))
    write_file(f, b"hello")
    os.mkdir(d)
    write_file(r.p("late"), b"")
    r.st("late after create", r.p("late"))
    r.st("f", f)
    r.st("d", d)
    r.st("root", r.root)
    r.st("missing", r.p("missing"))
    r.st("f/x (file used as dir)", r.p("f", "x"))
    r.st("f/ (trailing slash)", f + "/")
    r.st("d/ (trailing slash)", d + "/")
    r.st("d/missing/x", r.p("d", "missing", "x"))
    r.st("f/x/y", r.p("f", "x", "y"))
    r.ok("open f/x O_CREAT", open_close, r.p("f", "x"), os.O_CREAT | os.O_WRONLY)
    r.ok("mkdir f/x", os.mkdir, r.p("f", "x"))
    r.ok("open d/missing/x O_CREAT", open_close, r.p("d", "missing", "x"),
         os.O_CREAT | os.O_WRONLY)
    r.add("access f R_OK|W_OK", os.access(f, os.R_OK | os.W_OK))
    r.add("access f X_OK", os.access(f, os.X_OK))
    r.add("access missing", os.access(r.p("missing"), os.F_OK))
    r.ino_eq("d/.. is root", r.p("d", ".."), r.root)
    r.ino_eq("d/. is d", r.p("d", "."), d)
    r.listing("root", r.root)
    r.listing("d", d)
    r.do("read f via lookup", read_file, f)


@scenario()
def sc_chmod(r):
    f, d = r.p("f"), r.p("d")
    write_file(f, b"data")
    os.mkdir(d)
    for mode in (0o4755, 0o2755, 0o1777, 0o7777, 0o000, 0o2645, 0o644):
        r.ok("chmod f %o" % mode, os.chmod, f, mode)
        r.st("f after chmod %o" % mode, f)
    before = r.mark(f, r.root)
    r.ok("chmod f 600", os.chmod, f, 0o600)
    r.times("chmod", before)
    r.ok("chmod d 3775", os.chmod, d, 0o3775)
    r.st("d", d)
    os.symlink("f", r.p("l"))
    r.ok("chmod via symlink", os.chmod, r.p("l"), 0o640)
    r.st("f via symlink chmod", f)
    r.st("l", r.p("l"))
    r.ok("chmod missing", os.chmod, r.p("missing"), 0o644)
    fd = os.open(f, os.O_RDONLY)
    try:
        r.ok("fchmod 0604", os.fchmod, fd, 0o604)
        r.add("fstat mode", "%o" % os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    # root writing/truncating keeps set-id bits (it has CAP_FSETID)
    os.chmod(f, 0o6755)
    write_file(f, b"more", os.O_WRONLY | os.O_APPEND)
    r.st("set-id file after root write", f)
    os.truncate(f, 2)
    r.st("set-id file after root truncate", f)


@scenario()
def sc_chown(r):
    f, d = r.p("f"), r.p("d")
    write_file(f, b"data")
    os.mkdir(d)
    before = r.mark(f)
    r.ok("chown f 1234:5678", os.chown, f, 1234, 5678)
    r.times("chown", before)
    r.st("f", f)
    r.ok("chown f -1:42", os.chown, f, -1, 42)
    r.st("f", f)
    r.ok("chown f to 32-bit ids", os.chown, f, 4000000000, 4000000001)
    r.st("f", f)
    os.chmod(f, 0o6755)
    r.ok("chown set-id file", os.chown, f, 1, 1)
    r.st("set-id bits cleared by chown", f)
    os.chmod(f, 0o2645)
    r.ok("chown sgid-without-gx file", os.chown, f, 2, 2)
    r.st("sgid without group exec kept", f)
    os.chmod(f, 0o4755)
    before = r.mark(f)
    r.ok("chown f -1:-1", os.chown, f, -1, -1)
    r.times("chown -1:-1", before)
    r.st("f after chown -1:-1", f)
    os.chmod(d, 0o6755)
    r.ok("chown d", os.chown, d, 77, 88)
    r.st("directory keeps set-id bits", d)
    os.symlink("f", r.p("l"))
    r.ok("lchown l", os.chown, r.p("l"), 7, 8, follow_symlinks=False)
    r.st("l", r.p("l"))
    r.st("f unchanged by lchown", f)
    r.ok("chown missing", os.chown, r.p("missing"), 1, 1)


@scenario()
def sc_truncate(r):
    bs = r.bs
    f = r.p("f")
    data = pattern(3 * bs + 500, 1)
    cut = bs + 333
    write_file(f, data)
    before = r.mark(f)
    r.ok("truncate down mid-block", os.truncate, f, cut)
    r.times("truncate down", before)
    r.add("content after truncate down", read_file(f) == data[:cut])
    r.ok("truncate up", os.truncate, f, 3 * bs + 500)
    got = read_file(f)
    r.add("size after truncate up", len(got))
    r.add("head kept", got[:cut] == data[:cut])
    r.add("zeros past old end", got[cut:] == bytes(len(got) - cut))
    r.ok("truncate to 1", os.truncate, f, 1)
    r.ok("truncate to 2 blocks + 7", os.truncate, f, 2 * bs + 7)
    got = read_file(f)
    r.add("after 1 then up", (len(got), got[:1] == data[:1], got[1:] == bytes(len(got) - 1)))
    before = r.mark(f)
    r.ok("truncate to same size", os.truncate, f, 2 * bs + 7)
    r.times("truncate same size", before)
    fd = os.open(f, os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * 100, bs - 50)
        r.ok("ftruncate mid-block", os.ftruncate, fd, bs - 20)
        r.ok("ftruncate up", os.ftruncate, fd, bs + 100)
        r.add("ftruncate content", read_exact(fd, bs + 100, 0)
              == data[:1] + bytes(bs - 51) + b"x" * 30 + bytes(120))
    finally:
        os.close(fd)
    fd = os.open(f, os.O_RDONLY)
    try:
        r.ok("ftruncate O_RDONLY fd", os.ftruncate, fd, 0)
    finally:
        os.close(fd)
    r.ok("truncate negative", os.truncate, f, -1)
    os.mkdir(r.p("d"))
    r.ok("truncate dir", os.truncate, r.p("d"), 0)
    r.ok("truncate missing", os.truncate, r.p("missing"), 0)
    r.ok("truncate to 0", os.truncate, f, 0)
    r.st("f", f)
    # the largest file ext4 allows with extents: 2^32 - 1 blocks
    maxbytes = ((1 << 32) - 1) * bs
    g = r.p("huge")
    write_file(g, b"")
    r.ok("truncate to max size", os.truncate, g, maxbytes)
    r.st("huge", g)
    r.ok("truncate past max size", os.truncate, g, maxbytes + 1)
    r.ok("truncate to 2^50", os.truncate, g, 1 << 50)
    fd = os.open(g, os.O_RDWR)
    try:
        r.do("pwrite last byte", os.pwrite, fd, b"z", maxbytes - 1)
        r.do("pwrite across max size (short)", os.pwrite, fd, b"yy", maxbytes - 1)
        r.do("pwrite at max size", os.pwrite, fd, b"w", maxbytes)
        r.do("read last byte", os.pread, fd, 10, maxbytes - 1)
        r.do("read below last byte", os.pread, fd, 2, maxbytes - 2)
        r.add("blocks of huge sparse file", blocks_of(os.fstat(fd).st_blocks, bs, bs))
    finally:
        os.close(fd)
    r.ok("truncate huge to 0", os.truncate, g, 0)


@scenario()
def sc_utimes(r):
    f, d = r.p("f"), r.p("d")
    write_file(f, b"x")
    os.mkdir(d)
    os.symlink("f", r.p("l"))

    def at(path, follow=True):
        s = os.stat(path, follow_symlinks=follow)
        return s.st_atime_ns, s.st_mtime_ns

    for ns in ((1_000_000_123, 2_000_000_456), (0, 1), (-1_234_567_891, 4_102_444_800_999_999_999),
               (2_147_483_647_000_000_000, 2_147_483_648_000_000_001),
               (8_589_934_592_123_456_789, -2_147_483_648_000_000_000)):
        before = r.mark(f)
        r.ok("utime ns=%r" % (ns,), os.utime, f, ns=ns)
        r.add("atime/mtime after %r" % (ns,), at(f))
        r.times("utime %r" % (ns,), before)
    before = r.mark(f)
    t0 = time.time_ns()
    r.ok("utime now", os.utime, f)
    a, m = at(f)
    r.add("utime now: atime == mtime, recent", (a == m, a >= t0 - 20_000_000))
    r.times("utime now", before)
    os.utime(f, ns=(10_000_000_010, 20_000_000_020))
    before = r.mark(f)
    r.ok("utimensat atime set, mtime omit", utimensat, f, (5, 6), (0, UTIME_OMIT))
    r.add("after omit mtime", at(f))
    r.times("omit mtime", before)
    before = r.mark(f)
    r.ok("utimensat atime omit, mtime now", utimensat, f, (0, UTIME_OMIT), (0, UTIME_NOW))
    a, m = at(f)
    r.add("atime kept, mtime now", (a == 5_000_000_006, m > 20_000_000_020))
    r.times("mtime now", before)
    before = r.mark(f)
    r.ok("utimensat omit both", utimensat, f, (0, UTIME_OMIT), (0, UTIME_OMIT))
    r.times("omit both", before)
    r.ok("utimensat bad nsec", utimensat, f, (1, 1_000_000_000), (1, 0))
    r.ok("lutimes symlink", os.utime, r.p("l"), ns=(11, 22), follow_symlinks=False)
    r.add("symlink times", at(r.p("l"), follow=False))
    r.add("target untouched by lutimes", at(f)[0] == 5_000_000_006)
    r.ok("utime dir", os.utime, d, ns=(33, 44))
    r.add("dir times", at(d))
    fd = os.open(f, os.O_RDONLY)
    try:
        r.ok("futimens", os.utime, fd, ns=(55, 66))
        r.add("after futimens", at(f))
    finally:
        os.close(fd)
    r.ok("utime missing", os.utime, r.p("missing"), ns=(1, 1))
    # beyond what ext4 can store (1901..2446): the kernel clamps
    ns = (16_725_225_600_000_000_000, -3_000_000_000_000_000_000)
    r.ok("utime out of range", os.utime, f, ns=ns)
    r.add("out-of-range times clamped", at(f))


@scenario()
def sc_mknod(r):
    nodes = [
        ("reg", stat.S_IFREG | 0o640, 0),
        ("type0", 0o644, 0),
        ("fifo", stat.S_IFIFO | 0o600, 0),
        ("sock", stat.S_IFSOCK | 0o755, 0),
        ("null", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
        ("sda1", stat.S_IFBLK | 0o660, os.makedev(8, 1)),
        ("big", stat.S_IFCHR | 0o600, os.makedev(300, 70000)),
        ("bigblk", stat.S_IFBLK | 0o600, os.makedev(4095, 1048575)),
        ("minor256", stat.S_IFCHR | 0o600, os.makedev(1, 256)),
        ("major256", stat.S_IFBLK | 0o600, os.makedev(256, 1)),
        ("umasked", stat.S_IFREG | 0o777, 0),
    ]
    before = r.mark(r.root)
    nlink = os.stat(r.root).st_nlink
    for name, mode, dev in nodes:
        r.ok("mknod " + name, os.mknod, r.p(name), mode, dev)
        r.st(name, r.p(name))
    r.times("mknod", before)
    r.add("root nlink unchanged", os.stat(r.root).st_nlink == nlink)
    r.ok("mknod existing", os.mknod, r.p("fifo"), stat.S_IFIFO | 0o600)
    r.ok("mknod in missing dir", os.mknod, r.p("nodir", "x"), stat.S_IFIFO | 0o600)
    write_file(r.p("reg"), b"through mknod", os.O_WRONLY)
    r.do("read mknod file", read_file, r.p("reg"))
    r.ok("link fifo", os.link, r.p("fifo"), r.p("fifo2"))
    r.st("fifo", r.p("fifo"))
    r.ok("unlink sock", os.unlink, r.p("sock"))
    r.listing("root", r.root)


@scenario()
def sc_mkdir(r):
    n0 = os.stat(r.root).st_nlink
    before = r.mark(r.root)
    for name, mode in (("a", 0o750), ("b", 0o777), ("c", 0o1777), ("e", 0o7777), ("z", 0o000)):
        r.ok("mkdir %s %o" % (name, mode), os.mkdir, r.p(name), mode)
        r.st(name, r.p(name))
    r.times("mkdir", before)
    r.add("root nlink +5", os.stat(r.root).st_nlink - n0)
    r.add("new dir entries", sorted((n, t) for n, t, _, _ in getdents_all(r.p("a"))))
    r.ok("mkdir existing dir", os.mkdir, r.p("a"))
    write_file(r.p("f"), b"")
    r.ok("mkdir existing file", os.mkdir, r.p("f"))
    r.ok("mkdir under file", os.mkdir, r.p("f", "x"))
    r.ok("mkdir missing/x", os.mkdir, r.p("missing", "x"))
    r.ok("mkdir nested", os.mkdir, r.p("a", "n"))
    r.st("a after nested", r.p("a"))
    # set-group-id directory: new entries take its group, subdirs inherit the bit
    g = r.p("g")
    os.mkdir(g, 0o775)
    os.chown(g, -1, 4321)
    os.chmod(g, 0o2775)
    write_file(os.path.join(g, "file"), b"")
    r.st("file in sgid dir", os.path.join(g, "file"))
    os.mkdir(os.path.join(g, "sub"))
    r.st("subdir of sgid dir", os.path.join(g, "sub"))
    os.mknod(os.path.join(g, "fifo"), stat.S_IFIFO | 0o644)
    r.st("fifo in sgid dir", os.path.join(g, "fifo"))
    os.symlink("file", os.path.join(g, "link"))
    r.st("symlink in sgid dir", os.path.join(g, "link"))
    open_close(os.path.join(g, "sgidfile"), os.O_CREAT | os.O_WRONLY, 0o2755)
    r.st("sgid file created by root in sgid dir", os.path.join(g, "sgidfile"))
    r.st("g", g)


@scenario()
def sc_rmdir_unlink(r):
    d = r.p("d")
    os.mkdir(d)
    os.mkdir(r.p("d", "sub"))
    write_file(r.p("d", "f"), b"x")
    os.symlink("d", r.p("ld"))
    n0 = os.stat(r.root).st_nlink
    r.ok("rmdir non-empty", os.rmdir, d)
    r.ok("rmdir file", os.rmdir, r.p("d", "f"))
    r.ok("rmdir missing", os.rmdir, r.p("missing"))
    r.ok("rmdir symlink to dir", os.rmdir, r.p("ld"))
    r.ok("rmdir d/.", os.rmdir, r.p("d", "."))
    r.ok("rmdir d/sub/..", os.rmdir, r.p("d", "sub", ".."))
    r.st("d", d)
    before = r.mark(d)
    r.ok("rmdir d/sub", os.rmdir, r.p("d", "sub"))
    r.times("rmdir", before)
    r.st("d after rmdir sub", d)
    r.st("d/sub after rmdir", r.p("d", "sub"))
    r.ok("unlink dir", os.unlink, d)
    r.ok("unlink missing", os.unlink, r.p("d", "missing"))
    r.ok("unlink f/x", os.unlink, r.p("d", "f", "x"))
    os.link(r.p("d", "f"), r.p("h"))
    before = r.mark(d, r.p("h"))
    r.ok("unlink one of two links", os.unlink, r.p("d", "f"))
    r.times("unlink link", before)
    r.st("h", r.p("h"))
    r.ok("rmdir d", os.rmdir, d)
    r.add("root nlink -1", os.stat(r.root).st_nlink - n0)
    r.st("d after rmdir", d)
    # an open directory that is removed
    os.mkdir(r.p("e"))
    fd = os.open(r.p("e"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        r.ok("rmdir open dir", os.rmdir, r.p("e"))
        r.add("fstat removed dir nlink", os.fstat(fd).st_nlink)
        try:
            r.add("getdents removed dir", getdents(fd, 4096))
        except OSError as e:
            r.add("getdents removed dir", ename(e))
        r.ok("create in removed dir", lambda: os.close(
            os.open("x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)))
    finally:
        os.close(fd)
    r.listing("root", r.root)


@scenario()
def sc_rename(r):
    p = r.p
    write_file(p("a"), b"A")
    write_file(p("b"), b"B")
    before = r.mark(p("a"), r.root)
    r.ok("rename a over b", os.rename, p("a"), p("b"))
    r.times("rename over", {p("b"): before[p("a")], r.root: before[r.root]})
    r.do("b content", read_file, p("b"))
    r.st("a", p("a"))
    # the replaced inode loses one link
    write_file(p("x"), b"X")
    os.link(p("x"), p("x2"))
    write_file(p("y"), b"Y")
    r.ok("rename y over x (x has 2 links)", os.rename, p("y"), p("x"))
    r.st("x2", p("x2"))
    r.do("x2 content", read_file, p("x2"))
    r.do("x content", read_file, p("x"))
    before = r.mark(p("b"), r.root)
    r.ok("rename to new name", os.rename, p("b"), p("b2"))
    r.times("rename new name", {p("b2"): before[p("b")], r.root: before[r.root]})
    # directories between parents
    for dd in ("d1", "d2", "d1/sub"):
        os.mkdir(p(dd))
    write_file(p("d1", "sub", "f"), b"F")
    before = r.mark(p("d1"), p("d2"), p("d1", "sub"))
    r.ok("move d1/sub to d2/sub", os.rename, p("d1", "sub"), p("d2", "sub"))
    r.times("move dir", {p("d1"): before[p("d1")], p("d2"): before[p("d2")],
                         p("d2", "sub"): before[p("d1", "sub")]})
    r.st("d1", p("d1"))
    r.st("d2", p("d2"))
    r.ino_eq("d2/sub/.. is d2", p("d2", "sub", ".."), p("d2"))
    r.do("moved content", read_file, p("d2", "sub", "f"))
    r.add("dotdot dirent of moved dir", [t for t in getdents_all(p("d2", "sub"))
                                          if t[0] == b".."][0][2] == os.stat(p("d2")).st_ino)
    r.ok("rename dir same parent", os.rename, p("d2", "sub"), p("d2", "sub2"))
    r.st("d2 after same-parent rename", p("d2"))
    r.ok("rename back", os.rename, p("d2", "sub2"), p("d2", "sub"))
    # directory over an empty directory
    os.mkdir(p("e1"))
    os.mkdir(p("e2"))
    n0 = os.stat(r.root).st_nlink
    r.ok("rename dir over empty dir", os.rename, p("e1"), p("e2"))
    r.add("root nlink change", os.stat(r.root).st_nlink - n0)
    r.st("e1", p("e1"))
    # errors
    r.ok("dir into its own subdir", os.rename, p("d2"), p("d2", "sub", "x"))
    r.ok("dir onto itself/child", os.rename, p("d2"), p("d2", "sub"))
    r.ok("child onto ancestor", os.rename, p("d2", "sub"), p("d2"))
    os.mkdir(p("dd"))
    r.ok("dir over file", os.rename, p("dd"), p("b2"))
    r.ok("file over dir", os.rename, p("b2"), p("dd"))
    r.ok("dir over non-empty dir", os.rename, p("dd"), p("d2"))
    r.ok("missing source", os.rename, p("missing"), p("zz"))
    r.ok("target in missing dir", os.rename, p("b2"), p("missing", "zz"))
    r.ok("target under a file", os.rename, p("b2"), p("x", "zz"))
    r.ok("rename root/.. ", os.rename, p("dd", ".."), p("zz"))
    # renameat2 flags
    r.ok("NOREPLACE over existing", renameat2, p("b2"), p("x2"), RENAME_NOREPLACE)
    r.ok("NOREPLACE to new name", renameat2, p("b2"), p("nb"), RENAME_NOREPLACE)
    r.do("nb", read_file, p("nb"))
    r.ok("EXCHANGE two files", renameat2, p("nb"), p("x2"), RENAME_EXCHANGE)
    r.do("nb after exchange", read_file, p("nb"))
    r.do("x2 after exchange", read_file, p("x2"))
    r.ok("EXCHANGE with missing target", renameat2, p("nb"), p("nothere"), RENAME_EXCHANGE)
    r.ok("NOREPLACE|EXCHANGE", renameat2, p("nb"), p("x2"),
         RENAME_NOREPLACE | RENAME_EXCHANGE)
    for dd in ("p1", "p2", "p2/dir", "p2/dir/child", "q1", "q2", "q1/da", "q2/db"):
        os.mkdir(p(dd))
    write_file(p("p1", "file"), b"P")
    before = r.mark(p("p1"), p("p2"), p("p1", "file"))
    r.ok("EXCHANGE file and dir across parents", renameat2, p("p1", "file"),
         p("p2", "dir"), RENAME_EXCHANGE)
    r.times("exchange", {p("p1"): before[p("p1")], p("p2"): before[p("p2")],
                         p("p2", "dir"): before[p("p1", "file")]})
    r.st("p1", p("p1"))
    r.st("p2", p("p2"))
    r.st("p1/file (now the dir)", p("p1", "file"))
    r.st("p2/dir (now the file)", p("p2", "dir"))
    r.ino_eq("p1/file/.. is p1", p("p1", "file", ".."), p("p1"))
    r.listing("p1/file", p("p1", "file"))
    write_file(p("q1", "da", "m"), b"")
    r.ok("EXCHANGE two dirs across parents", renameat2, p("q1", "da"), p("q2", "db"),
         RENAME_EXCHANGE)
    r.st("q1", p("q1"))
    r.st("q2", p("q2"))
    r.ino_eq("q1/da/.. is q1", p("q1", "da", ".."), p("q1"))
    r.ino_eq("q2/db/.. is q2", p("q2", "db", ".."), p("q2"))
    r.listing("q2/db", p("q2", "db"))
    r.ok("EXCHANGE dir with its child", renameat2, p("q2"), p("q2", "db"), RENAME_EXCHANGE)
    # hard links of one inode, and a name onto itself
    write_file(p("h1"), b"H")
    os.link(p("h1"), p("h2"))
    r.ok("rename link onto other link", os.rename, p("h1"), p("h2"))
    r.st("h1", p("h1"))
    r.st("h2", p("h2"))
    r.ok("rename onto itself", os.rename, p("h2"), p("h2"))
    r.st("h2", p("h2"))
    os.symlink("h2", p("sl"))
    r.ok("rename symlink", os.rename, p("sl"), p("d1", "sl"))
    r.add("moved symlink target", os.readlink(p("d1", "sl")))
    r.ok("rename file into dir", os.rename, p("x2"), p("d1", "x2"))
    for dd in (".", "d1", "d2", "p1", "p2", "q1", "q2"):
        r.listing(dd, p(dd))


@scenario()
def sc_link(r):
    p = r.p
    write_file(p("f"), b"F")
    os.mkdir(p("d"))
    before = r.mark(p("f"), r.root)
    r.ok("link f g", os.link, p("f"), p("g"))
    r.times("link", before)
    r.st("f", p("f"))
    r.st("g", p("g"))
    r.ino_eq("same inode", p("f"), p("g"))
    r.ok("link onto existing", os.link, p("f"), p("g"))
    r.ok("link a directory", os.link, p("d"), p("d2"))
    r.ok("link missing", os.link, p("missing"), p("m2"))
    r.ok("link into missing dir", os.link, p("f"), p("missing", "x"))
    r.ok("link under a file", os.link, p("f"), p("g", "x"))
    r.ok("link into subdir", os.link, p("f"), p("d", "f3"))
    os.symlink("f", p("s"))
    r.ok("link a symlink itself", os.link, p("s"), p("s2"), follow_symlinks=False)
    r.st("s2", p("s2"))
    r.st("s", p("s"))
    for i in range(100):
        os.link(p("f"), p("d", "l%d" % i))
    r.st("f with 103 links", p("f"))
    for i in range(100):
        os.unlink(p("d", "l%d" % i))
    r.st("f after unlinking 100", p("f"))
    r.do("content via link", read_file, p("d", "f3"))
    write_file(p("g"), b"changed via g", os.O_WRONLY | os.O_TRUNC)
    r.do("change visible via f", read_file, p("f"))


@scenario()
def sc_symlink(r):
    p = r.p
    write_file(p("f"), b"F")
    for n in (1, 59, 60, 61, 500, 1000, 1023, 1024, 4000, 4095):
        target = ("t/" * n)[:n]
        name = p("s%d" % n)
        if r.ok("symlink target %d bytes" % n, os.symlink, target, name):
            r.add("readlink %d" % n, os.readlink(name) == target)
            s = os.lstat(name)
            r.add("lstat %d" % n, (stat.filemode(s.st_mode), s.st_size, s.st_blocks))
    r.ok("symlink 4096 bytes", os.symlink, "x" * 4096, p("s4096"))
    before = r.mark(r.root)
    r.ok("symlink to f", os.symlink, "f", p("l"))
    r.times("symlink", before)
    r.ok("symlink existing name", os.symlink, "f", p("l"))
    r.ok("symlink in missing dir", os.symlink, "f", p("missing", "l"))
    r.st("through symlink", p("l"), follow=True)
    os.symlink("nowhere", p("dangling"))
    r.st("dangling followed", p("dangling"), follow=True)
    r.st("dangling", p("dangling"))
    os.symlink("loop2", p("loop1"))
    os.symlink("loop1", p("loop2"))
    r.st("loop", p("loop1"), follow=True)
    r.ok("readlink of a file", os.readlink, p("f"))
    r.ok("readlink missing", os.readlink, p("missing"))
    r.ok("open O_NOFOLLOW", open_close, p("l"), os.O_RDONLY | os.O_NOFOLLOW)
    r.do("read through symlink", read_file, p("l"))
    os.mkdir(p("d"))
    os.symlink("../f", p("d", "up"))
    r.do("relative up symlink", read_file, p("d", "up"))
    os.symlink("d", p("ld"))
    r.ok("create through dir symlink", write_file, p("ld", "new"), b"N")
    r.listing("d", p("d"))


@scenario()
def sc_open_flags(r):
    p = r.p
    f = p("f")
    write_file(f, b"0123456789")
    C, W = os.O_CREAT, os.O_WRONLY
    r.ok("O_CREAT|O_EXCL existing", open_close, f, C | os.O_EXCL | W)
    os.symlink("target", p("dangling"))
    r.ok("O_CREAT|O_EXCL dangling symlink", open_close, p("dangling"), C | os.O_EXCL | W)
    r.st("target after O_EXCL", p("target"))
    r.ok("O_CREAT dangling symlink", open_close, p("dangling"), C | W, 0o640)
    r.st("target created through symlink", p("target"))
    r.ok("O_CREAT existing", open_close, f, C | W, 0o600)
    r.do("content kept", read_file, f)
    r.st("mode kept", f)
    r.ok("O_EXCL without O_CREAT", open_close, f, os.O_EXCL | os.O_RDONLY)
    before = r.mark(f)
    r.ok("O_TRUNC", open_close, f, W | os.O_TRUNC)
    r.times("O_TRUNC", before)
    r.st("after O_TRUNC", f)
    before = r.mark(f)
    r.ok("O_TRUNC empty file", open_close, f, W | os.O_TRUNC)
    r.times("O_TRUNC empty", before)
    write_file(f, b"abc")
    r.ok("O_RDONLY|O_TRUNC", open_close, f, os.O_RDONLY | os.O_TRUNC)
    r.st("after O_RDONLY|O_TRUNC", f)
    write_file(f, b"start")
    fd = os.open(f, os.O_RDWR | os.O_APPEND)
    try:
        r.do("append write 1", os.write, fd, b"-ab")
        os.lseek(fd, 0, os.SEEK_SET)
        r.do("append after lseek 0", os.write, fd, b"-cd")
        r.do("position after append", os.lseek, fd, 0, os.SEEK_CUR)
        r.do("pwrite with O_APPEND", os.pwrite, fd, b"-ef", 0)
        os.lseek(fd, 0, os.SEEK_SET)
        r.do("read back", os.read, fd, 100)
    finally:
        os.close(fd)
    for name, mode in (("m600", 0o600), ("m4777", 0o4777), ("m0", 0)):
        r.ok("create mode %o" % mode, open_close, p(name), C | W | os.O_EXCL, mode)
        r.st(name, p(name))
    os.mkdir(p("d"))
    r.ok("O_DIRECTORY on file", open_close, f, os.O_RDONLY | os.O_DIRECTORY)
    r.ok("dir O_WRONLY", open_close, p("d"), os.O_WRONLY)
    r.ok("dir O_RDONLY", open_close, p("d"), os.O_RDONLY)
    r.ok("O_CREAT on dir", open_close, p("d"), C | os.O_RDONLY)
    r.ok("missing without O_CREAT", open_close, p("missing"), os.O_RDONLY)
    r.ok("O_CREAT in missing dir", open_close, p("missing", "x"), C | W)
    r.ok("O_CREAT|O_EXCL trailing slash", open_close, p("new") + "/", C | W | os.O_EXCL)
    fd = os.open(f, os.O_RDONLY)
    try:
        r.ok("write on O_RDONLY fd", os.write, fd, b"x")
    finally:
        os.close(fd)
    fd = os.open(f, os.O_WRONLY)
    try:
        r.ok("read on O_WRONLY fd", os.read, fd, 1)
    finally:
        os.close(fd)
    fd = os.open(p("d"), os.O_RDONLY)
    try:
        r.ok("read on dir fd", os.read, fd, 1)
    finally:
        os.close(fd)


@scenario()
def sc_names(r):
    p = r.p
    write_file(p("f"), b"F")
    long_ok = "a" * 255
    too_long = "b" * 256
    r.ok("create 255", open_close, p(long_ok), os.O_CREAT | os.O_WRONLY)
    r.ok("create 256", open_close, p(too_long), os.O_CREAT | os.O_WRONLY)
    r.ok("mkdir 255", os.mkdir, p("c" * 255))
    r.ok("mkdir 256", os.mkdir, p("c" * 256))
    r.ok("rename to 256", os.rename, p("f"), p("d" * 256))
    r.ok("rename to 255", os.rename, p("f"), p("d" * 255))
    r.ok("link 256", os.link, p("d" * 255), p("e" * 256))
    r.ok("link 255", os.link, p("d" * 255), p("e" * 255))
    r.ok("symlink name 256", os.symlink, "x", p("g" * 256))
    r.ok("symlink name 255", os.symlink, "x", p("g" * 255))
    r.ok("symlink target of one 255 name", os.symlink, "h" * 255, p("sym"))
    r.ok("mknod 256", os.mknod, p("i" * 256), stat.S_IFIFO | 0o644)
    r.ok("mknod 255", os.mknod, p("i" * 255), stat.S_IFIFO | 0o644)
    r.st("stat 256", p(too_long))
    r.st("stat 255", p(long_ok))
    r.ok("unlink 256", os.unlink, p(too_long))
    r.ok("rmdir 256", os.rmdir, p("c" * 256))
    r.ok("create 254+2-byte utf-8 (256)", open_close, p("\u00e9" * 128), os.O_CREAT | os.O_WRONLY)
    r.ok("create 254 bytes of utf-8", open_close, p("\u00e9" * 127), os.O_CREAT | os.O_WRONLY)
    r.ok("create odd bytes", open_close, os.path.join(_b(r.root), b"\x01\x7f\xff\xfe name\t"),
         os.O_CREAT | os.O_WRONLY)
    r.ok("create in 255 dir with 255 name", open_close, p("c" * 255, "j" * 255),
         os.O_CREAT | os.O_WRONLY)
    r.add("listdir root", sorted(os.listdir(_b(r.root))))
    r.listing("255 dir", p("c" * 255))
    r.st("255 file in 255 dir", p("c" * 255, "j" * 255))
    r.ok("xattr name 255", os.setxattr, p(long_ok), "user." + "x" * 250, b"v")
    r.ok("xattr name 256", os.setxattr, p(long_ok), "user." + "x" * 251, b"v")
    r.add("listxattr", os.listxattr(p(long_ok)))


@scenario()
def sc_readwrite(r):
    p = r.p
    bs = r.bs
    f = p("f")
    write_file(f, b"hello")
    fd = os.open(f, os.O_RDWR)
    try:
        r.do("read at 0", os.pread, fd, 100, 0)
        r.do("read at EOF", os.pread, fd, 10, 5)
        r.do("read after EOF", os.pread, fd, 10, 1000)
        before = r.mark(f)
        r.do("read does not change times", os.pread, fd, 3, 1)
        r.times("read", before)
        before = r.mark(f)
        r.do("pwrite 1 byte", os.pwrite, fd, b"X", 3)
        r.times("pwrite", before)
        r.do("after 1-byte write", os.pread, fd, 100, 0)
        r.do("sequential read", lambda: (os.lseek(fd, 1, os.SEEK_SET), os.read(fd, 2),
                                          os.read(fd, 100), os.read(fd, 100)))
    finally:
        os.close(fd)
    # sparse write far beyond EOF
    g = p("sparse")
    write_file(g, b"head")
    fd = os.open(g, os.O_RDWR)
    try:
        r.do("pwrite at 1 GiB + 5", os.pwrite, fd, b"TAIL", (1 << 30) + 5)
        s = os.fstat(fd)
        r.add("sparse size", s.st_size)
        r.add("sparse blocks", blocks_of(s.st_blocks, 2 * bs, bs))
        r.add("gap reads zeros", os.pread(fd, 65536, 512 * MiB) == bytes(65536))
        r.add("read across gap end", os.pread(fd, 20, (1 << 30) - 5))
        r.add("read across head", os.pread(fd, 10, 0))
    finally:
        os.close(fd)
    os.unlink(g)
    # unaligned writes across block boundaries
    h = p("h")
    model = bytearray(b"a" * (4 * bs))
    write_file(h, bytes(model))
    fd = os.open(h, os.O_RDWR)
    try:
        for off, n in ((bs - 100, 200), (2 * bs - 1, 2), (100, 3 * bs + 123),
                       (3 * bs + 1000, 2 * bs), (7 * bs - 3, 10), (10 * bs + 17, 5)):
            data = pattern(n, off)
            r.do("pwrite %d@%d" % (n, off), os.pwrite, fd, data, off)
            end = off + n
            if end > len(model):
                model.extend(bytes(end - len(model)))
            model[off:end] = data
        r.add("unaligned content matches", read_exact(fd, len(model) + 100, 0) == bytes(model))
        r.add("unaligned size", os.fstat(fd).st_size)
    finally:
        os.close(fd)
    # a small random write/truncate/read workload checked against a model
    rng = random.Random(20240917)
    fz = p("fsx")
    write_file(fz, b"")
    model = bytearray()
    bad = []
    fd = os.open(fz, os.O_RDWR)
    try:
        for i in range(300):
            op = rng.random()
            if op < 0.55:
                off = rng.randrange(0, 300000)
                n = rng.randrange(1, 40000)
                data = rng.randbytes(n)
                os.pwrite(fd, data, off)
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = data
            elif op < 0.7:
                size = rng.randrange(0, 300000)
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            else:
                off = rng.randrange(0, 320000)
                n = rng.randrange(1, 50000)
                got = os.pread(fd, n, off)
                if got != bytes(model[off:off + n]):
                    bad.append((i, off, n))
        r.add("random ops mismatches", bad[:5])
        r.add("random ops final", read_exact(fd, len(model) + 10, 0) == bytes(model))
        r.add("random ops size", os.fstat(fd).st_size)
    finally:
        os.close(fd)
    # one big write
    big = pattern(3 * MiB + 1, 9)
    write_file(p("big"), big)
    r.add("3 MiB + 1 write reads back", read_file(p("big")) == big)
    # O_DIRECT with aligned buffers
    dio = p("dio")
    fd = os.open(dio, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    wbuf = mmap.mmap(-1, 16384)
    rbuf = mmap.mmap(-1, 16384)
    try:
        wbuf.write(pattern(16384, 5))
        r.do("O_DIRECT pwrite 16K at 4K", os.pwrite, fd, wbuf, 4096)
        r.do("O_DIRECT preadv 16K at 4K", os.preadv, fd, [rbuf], 4096)
        r.add("O_DIRECT data", rbuf[:] == wbuf[:])
        r.do("O_DIRECT read at EOF", os.preadv, fd, [rbuf], 20480)
        r.add("O_DIRECT size", os.fstat(fd).st_size)
    finally:
        os.close(fd)
        wbuf.close()
        rbuf.close()
    r.add("O_DIRECT data via buffered read", read_file(dio) == bytes(4096) + pattern(16384, 5))
    # copy_file_range between two files of the volume
    src = os.open(p("big"), os.O_RDONLY)
    dst = os.open(p("copy"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        copied = 0
        while copied < 2 * MiB:
            n = os.copy_file_range(src, dst, 2 * MiB - copied, 1000 + copied, 7 + copied)
            if n == 0:
                break
            copied += n
        r.add("copy_file_range copied", copied)
    except OSError as e:
        r.add("copy_file_range copied", ename(e))
    finally:
        os.close(src)
        os.close(dst)
    r.add("copied data", read_file(p("copy")) == bytes(7) + big[1000:1000 + 2 * MiB])


@scenario()
def sc_fsync(r):
    f = r.p("f")
    os.mkdir(r.p("d"))
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 10000)
        r.ok("fsync", os.fsync, fd)
        r.ok("fdatasync", os.fdatasync, fd)
        os.ftruncate(fd, 50)
        r.ok("fsync after truncate", os.fsync, fd)
    finally:
        os.close(fd)
    for label, path in (("file", f), ("dir", r.p("d")), ("root", r.root)):
        fd = os.open(path, os.O_RDONLY)
        try:
            r.ok("fsync O_RDONLY " + label, os.fsync, fd)
            r.ok("fdatasync O_RDONLY " + label, os.fdatasync, fd)
        finally:
            os.close(fd)
    os.sync()
    r.st("f", f)


DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFIFO: 1,
      stat.S_IFSOCK: 12, stat.S_IFCHR: 2, stat.S_IFBLK: 6}


@scenario()
def sc_readdir(r):
    d = r.p("d")
    os.mkdir(d)
    write_file(os.path.join(d, "reg"), b"")
    os.mkdir(os.path.join(d, "dir"))
    os.symlink("reg", os.path.join(d, "lnk"))
    os.mknod(os.path.join(d, "fifo"), stat.S_IFIFO | 0o644)
    os.mknod(os.path.join(d, "sock"), stat.S_IFSOCK | 0o644)
    os.mknod(os.path.join(d, "chr"), stat.S_IFCHR | 0o644, os.makedev(1, 3))
    os.mknod(os.path.join(d, "blk"), stat.S_IFBLK | 0o644, os.makedev(7, 0))
    write_file(os.path.join(d, "z" * 255), b"")
    ents = getdents_all(d)
    r.add("entries and d_type", sorted((n, t) for n, t, _, _ in ents))
    r.add("each name once", len(ents) == len({n for n, _, _, _ in ents}))
    r.add("d_type matches lstat", all(
        t == DT[stat.S_IFMT(os.lstat(os.path.join(_b(d), n)).st_mode)] for n, t, _, _ in ents))
    r.add("d_ino matches stat", [n for n, _, ino, _ in ents
                                 if ino != os.stat(os.path.join(_b(d), n)).st_ino])
    r.add("scandir types", sorted((e.name, e.is_dir(follow_symlinks=False),
                                   e.is_file(follow_symlinks=False),
                                   e.is_symlink()) for e in os.scandir(d)))
    sub = os.path.join(d, "dir")
    r.add("empty dir", sorted((n, t) for n, t, _, _ in getdents_all(sub)))
    r.add("root entries", sorted((n, t) for n, t, _, _ in getdents_all(r.root)))
    # small buffers, and a buffer too small for one entry
    r.add("small buffer reads", sorted(n for n, _, _, _ in getdents_all(d, 400)))
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r.ok("getdents buffer too small", getdents, fd, 16)
    finally:
        os.close(fd)
    # rewind
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first = sorted(n for n, _, _, _ in getdents(fd, 65536))
        os.lseek(fd, 0, os.SEEK_SET)
        again = sorted(n for n, _, _, _ in getdents(fd, 65536))
        r.add("rewind gives the same", first == again)
    finally:
        os.close(fd)
    for name in ("reg", "lnk", "fifo"):
        os.unlink(os.path.join(d, name))
    r.add("after unlinks", sorted(n for n, _, _, _ in getdents_all(d)))


def _bigdir_names(n, seed):
    rng = random.Random(seed)
    names = set()
    while len(names) < n:
        names.add("%05d-%s" % (len(names), "n" * rng.randrange(0, 120)))
    return sorted(names)


@scenario(variants=(("ext4", 1024), ("ext4", 4096), ("ext3", 4096)))
def sc_bigdir(r):
    d = r.p("big")
    os.mkdir(d)
    names = _bigdir_names(5000, 1)
    for name in names:
        os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(d)
    r.add("5000 listed", (len(listed), sorted(listed) == names))
    ents = getdents_all(d, 4096)
    r.add("getdents count and duplicates",
          (len(ents), len(ents) - len({n for n, _, _, _ in ents})))
    r.add("all regular", all(t == 8 for n, t, _, _ in ents if n not in (b".", b"..")))
    r.st("big", d)
    for name in names[::3]:
        os.unlink(os.path.join(d, name))
    keep = sorted(set(names) - set(names[::3]))
    r.add("after removing a third", sorted(os.listdir(d)) == keep)
    for name in keep[:500]:
        os.rename(os.path.join(d, name), os.path.join(d, "R" + name))
    expect = sorted(["R" + n for n in keep[:500]] + keep[500:])
    r.add("after 500 renames", sorted(os.listdir(d)) == expect)
    r.ok("rmdir non-empty big", os.rmdir, d)
    r.st("a renamed entry", os.path.join(d, "R" + keep[0]))
    r.st("an old name", os.path.join(d, keep[0]))
    # the directory stays: the kernel reads it back (htree lookups) afterwards
    e = r.p("emptied")
    os.mkdir(e)
    for name in names[:1500]:
        os.close(os.open(os.path.join(e, name), os.O_CREAT | os.O_WRONLY, 0o644))
    for name in names[:1500]:
        os.unlink(os.path.join(e, name))
    r.add("emptied", os.listdir(e))
    r.ok("rmdir emptied dir", os.rmdir, e)


@scenario(variants=(("ext4", 4096),))
def sc_readdir_stable(r):
    d = r.p("dir")
    os.mkdir(d)
    stable = ["s%04d_%s" % (i, "x" * (i % 40)) for i in range(2000)]
    others = ["o%04d" % i for i in range(300)]
    for name in stable + others:
        os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY, 0o644))
    seen = collections.Counter()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    step = 0
    try:
        while True:
            chunk = getdents(fd, 1024)
            if not chunk:
                break
            for name, _, _, _ in chunk:
                seen[name.decode()] += 1
            # change OTHER entries between two reads (the first 50 reads, so
            # that both runs end with the same tree)
            if step < 50:
                for _ in range(2):
                    os.unlink(os.path.join(d, others.pop()))
                for k in range(2):
                    os.close(os.open(os.path.join(d, "n%04d_%d" % (step, k)),
                                     os.O_CREAT | os.O_WRONLY, 0o644))
            step += 1
    finally:
        os.close(fd)
    missing = [s for s in stable if seen[s] == 0]
    dups = sorted(n for n, c in seen.items() if c > 1)
    r.add("stable entries missing", (len(missing), missing[:10]))
    r.add("entries returned twice", (len(dups), dups[:10]))
    r.add(". and .. once", (seen["."], seen[".."]))
    r.add("enough reads", step > 50)
    # telldir/seekdir: d_off of an entry resumes right after it
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ents = []
        while True:
            chunk = getdents(fd, 2048)
            if not chunk:
                break
            ents += chunk
        results = []
        for k in (0, 1, len(ents) // 3, len(ents) // 2, len(ents) - 2):
            os.lseek(fd, ents[k][3], os.SEEK_SET)
            nxt = getdents(fd, 2048)
            results.append(bool(nxt) and nxt[0][0] == ents[k + 1][0])
        os.lseek(fd, ents[-1][3], os.SEEK_SET)
        results.append(getdents(fd, 2048) == [])
        r.add("seek to d_off resumes after that entry", results)
    finally:
        os.close(fd)


def _wait_statvfs(root, field, value, timeout=5):
    def cond():
        os.sync()
        return getattr(os.statvfs(root), field) == value
    return bool(kh.wait_for(cond, kh.tmo(timeout), interval=0.05))


@scenario()
def sc_statfs(r):
    s0 = os.statvfs(r.root)
    r.add("statvfs geometry", (s0.f_bsize, s0.f_frsize, s0.f_blocks, s0.f_files,
                               s0.f_namemax))
    r.add("reserved blocks (bfree - bavail)", s0.f_bfree - s0.f_bavail)
    r.add("ffree == favail", s0.f_ffree == s0.f_favail)
    r.add("read-only flag", bool(s0.f_flag & os.ST_RDONLY))
    f = r.p("big")
    data = pattern(8 * MiB, 3)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.sync()
    s1 = os.statvfs(r.root)
    r.add("blocks used by an 8 MiB file (bfree drop)",
          blocks_of((s0.f_bfree - s1.f_bfree) * s0.f_bsize // 512, 8 * MiB, s0.f_bsize))
    r.add("bavail drop == bfree drop", s0.f_bavail - s1.f_bavail == s0.f_bfree - s1.f_bfree)
    r.add("inodes used", s0.f_ffree - s1.f_ffree)
    r.add("st_blocks of the file", blocks_of(os.stat(f).st_blocks, 8 * MiB, s0.f_bsize))
    os.unlink(f)
    r.add("bfree back after unlink", _wait_statvfs(r.root, "f_bfree", s0.f_bfree))
    r.add("ffree back after unlink", _wait_statvfs(r.root, "f_ffree", s0.f_ffree))
    os.mkdir(r.p("d"))
    r.add("a directory takes one inode and one block",
          (s0.f_ffree - os.statvfs(r.root).f_ffree, s0.f_bfree - os.statvfs(r.root).f_bfree))
    os.rmdir(r.p("d"))
    r.add("back after rmdir", _wait_statvfs(r.root, "f_bfree", s0.f_bfree))
    r.add("namemax via pathconf", os.pathconf(r.root, "PC_NAME_MAX"))


@scenario()
def sc_enospc(r):
    s0 = os.statvfs(r.root)
    f = r.p("fill")
    chunk = pattern(MiB, 4)
    total = 0
    err = None
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as e:
                err = ename(e)
                break
            total += n
            if total > 2 * s0.f_blocks * s0.f_bsize:
                err = "no error"
                break
        r.add("error when full", err)
        r.add("filled at least 90% of free space", total >= 0.9 * s0.f_bfree * s0.f_bsize)
        r.ok("fsync after ENOSPC", os.fsync, fd)
    finally:
        os.close(fd)
    r.add("size == bytes written", os.stat(f).st_size == total)
    ok = True
    fd = os.open(f, os.O_RDONLY)
    try:
        for off in range(0, total, MiB):
            want = chunk[:min(MiB, total - off)]
            if os.pread(fd, len(want), off) != want:
                ok = False
                break
    finally:
        os.close(fd)
    r.add("data written before ENOSPC reads back", ok)
    r.ok("create small file when full", write_file, r.p("small"), b"x" * 100000)
    os.unlink(f)
    if os.path.exists(r.p("small")):
        os.unlink(r.p("small"))
    r.add("space back", _wait_statvfs(r.root, "f_bfree", s0.f_bfree))
    r.ok("write after freeing", write_file, r.p("after"), chunk)
    os.unlink(r.p("after"))
    # an ordinary user may not take the blocks reserved for root
    os.mkdir(r.p("pub"), 0o777)
    os.chmod(r.p("pub"), 0o777)
    os.sync()
    bfree_before = os.statvfs(r.root).f_bfree
    reserve = 0.04 * s0.f_blocks

    def child():
        total = 0
        fd = os.open(r.p("pub", "userfill"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    total += os.write(fd, chunk)
                except OSError as e:
                    err = ename(e)
                    break
                if total > 2 * s0.f_blocks * s0.f_bsize:
                    err = "no error"
                    break
        finally:
            os.close(fd)
        return [("user fill: error", err),
                ("user fill: reserved blocks left free",
                 os.statvfs(r.root).f_bfree >= reserve)]

    for label, value in _as_other_user(child):
        r.add(label, value)
    os.unlink(r.p("pub", "userfill"))
    r.add("space back after user fill", _wait_statvfs(r.root, "f_bfree", bfree_before))


@scenario()
def sc_xattr(r):
    p = r.p
    f = p("f")
    write_file(f, b"")
    os.mkdir(p("d"))
    os.symlink("f", p("l"))
    os.mknod(p("fifo"), stat.S_IFIFO | 0o644)
    r.add("list empty", os.listxattr(f))
    before = r.mark(f)
    r.ok("set user.a", os.setxattr, f, "user.a", b"value-a")
    r.times("setxattr", before)
    r.do("get user.a", os.getxattr, f, "user.a")
    r.ok("set user.empty", os.setxattr, f, "user.empty", b"")
    r.do("get user.empty", os.getxattr, f, "user.empty")
    r.ok("set trusted.t", os.setxattr, f, "trusted.t", b"\x00\x01\x02")
    r.ok("set security.s", os.setxattr, f, "security.s", b"sec")
    r.add("list", sorted(os.listxattr(f)))
    r.ok("XATTR_CREATE existing", os.setxattr, f, "user.a", b"x", os.XATTR_CREATE)
    r.ok("XATTR_REPLACE missing", os.setxattr, f, "user.nope", b"x", os.XATTR_REPLACE)
    r.ok("XATTR_REPLACE existing", os.setxattr, f, "user.a", b"replaced", os.XATTR_REPLACE)
    r.ok("XATTR_CREATE new", os.setxattr, f, "user.b", b"b", os.XATTR_CREATE)
    r.do("get replaced", os.getxattr, f, "user.a")
    r.do("get missing", os.getxattr, f, "user.missing")
    r.do("size query", getxattr_size, f, "user.a", 0)
    r.do("buffer too small", getxattr_size, f, "user.a", 3)
    before = r.mark(f)
    r.ok("remove user.a", os.removexattr, f, "user.a")
    r.times("removexattr", before)
    r.ok("remove missing", os.removexattr, f, "user.a")
    r.do("get removed", os.getxattr, f, "user.a")
    r.add("list after remove", sorted(os.listxattr(f)))
    r.ok("unknown namespace", os.setxattr, f, "foo.bar", b"x")
    r.ok("user.* on symlink", os.setxattr, p("l"), "user.x", b"x", follow_symlinks=False)
    r.ok("trusted.* on symlink", os.setxattr, p("l"), "trusted.x", b"x",
         follow_symlinks=False)
    r.add("symlink list", os.listxattr(p("l"), follow_symlinks=False))
    r.ok("user.* on fifo", os.setxattr, p("fifo"), "user.x", b"x")
    r.ok("user.* on dir", os.setxattr, p("d"), "user.dir", b"dirval")
    r.do("get dir", os.getxattr, p("d"), "user.dir")
    r.ok("value 3000 bytes", os.setxattr, f, "user.big", pattern(3000, 7))
    r.add("big value back", os.getxattr(f, "user.big") == pattern(3000, 7)
          if "user.big" in os.listxattr(f) else "absent")
    r.ok("value 65536 bytes", os.setxattr, f, "user.huge", bytes(65536))
    r.ok("value 65537 bytes", os.setxattr, f, "user.toohuge", bytes(65537))
    g = p("many")
    write_file(g, b"")
    results = []
    for i in range(120):
        try:
            os.setxattr(g, "user.attr%03d" % i, pattern(24, i))
            results.append("ok")
        except OSError as e:
            results.append(ename(e))
    r.add("many attributes", results)
    r.add("many: list", sorted(os.listxattr(g)))
    r.add("many: values", all(os.getxattr(g, n) == pattern(24, int(n[9:]))
                              for n in os.listxattr(g)))
    for name in sorted(os.listxattr(g))[::2]:
        os.removexattr(g, name)
    r.add("many: after removing half", sorted(os.listxattr(g)))
    # identical sets (shared on disk by the kernel), then one changes
    for name in ("s1", "s2", "s3"):
        write_file(p(name), b"")
        for i in range(6):
            os.setxattr(p(name), "user.shared%d" % i, pattern(100, i))
    r.ok("change one of identical sets", os.setxattr, p("s2"), "user.shared3", b"changed")
    r.add("others keep theirs", [os.getxattr(p(n), "user.shared3") == pattern(100, 3)
                                 for n in ("s1", "s3")])
    r.do("changed one", os.getxattr, p("s2"), "user.shared3")
    os.unlink(p("s1"))
    r.add("after unlinking one sharer", os.getxattr(p("s3"), "user.shared5") == pattern(100, 5))
    r.ok("xattr on missing", os.setxattr, p("missing"), "user.a", b"x")


def _require_acl_tools():
    missing = [t for t in ("setfacl", "getfacl") if shutil.which(t) is None]
    if missing:
        pytest.fail("%s not found: install the Debian package `acl` (apt-get install acl)"
                    % " and ".join(missing), pytrace=False)


def _getfacl(root, *names):
    res = subprocess.run(["getfacl", "-n", "-c", *names], cwd=root, capture_output=True,
                         text=True, timeout=kh.tmo(30))
    return (res.returncode, res.stdout, res.stderr.strip())


def _setfacl(root, *args):
    res = subprocess.run(["setfacl", *args], cwd=root, capture_output=True, text=True,
                         timeout=kh.tmo(30))
    return (res.returncode, res.stderr.strip())


@scenario(needs=("acl",))
def sc_acl(r):
    write_file(r.p("f"), b"")
    os.mkdir(r.p("d"))
    r.add("setfacl access", _setfacl(r.root, "-m", "u:1234:rwx,g:55:r-x,m::rwx,o::r--", "f"))
    r.st("f after setfacl", r.p("f"))
    r.add("getfacl f", _getfacl(r.root, "f"))
    r.add("setfacl default", _setfacl(r.root, "-m", "u:1234:r-x,g::rwx", "-d", "-m",
                                      "u:1234:rwx,g:77:r-x,g::r-x,o::---", "d"))
    r.add("getfacl d", _getfacl(r.root, "d"))
    r.st("d after setfacl", r.p("d"))
    # new entries inherit the default ACL
    open_close(r.p("d", "new"), os.O_CREAT | os.O_WRONLY, 0o666)
    os.mkdir(r.p("d", "newdir"), 0o777)
    r.st("inherited file", r.p("d", "new"))
    r.st("inherited dir", r.p("d", "newdir"))
    r.add("getfacl inherited", _getfacl(r.root, "d/new", "d/newdir"))
    r.add("chmod updates the mask", (os.chmod(r.p("f"), 0o640), _getfacl(r.root, "f"))[1])
    r.add("minimal ACL is just mode", _setfacl(r.root, "-b", "-m", "u::rwx,g::r-x,o::---", "f"))
    r.st("f after minimal ACL", r.p("f"))
    r.add("getfacl after minimal", _getfacl(r.root, "f"))
    r.add("bad ACL (named user without mask)",
          (_setfacl(r.root, "-n", "--set", "u::rw-,u:5:r--,g::r--,o::r--", "f")[0],
           _getfacl(r.root, "f")))
    r.add("remove all", _setfacl(r.root, "-b", "-k", "d"))
    r.add("getfacl d after remove", _getfacl(r.root, "d"))
    # ACL entries are enforced
    write_file(r.p("granted"), b"granted")
    os.chmod(r.p("granted"), 0o640)
    write_file(r.p("denied"), b"denied")
    os.chmod(r.p("denied"), 0o644)
    os.mkdir(r.p("dgrant"), 0o700)
    r.add("grant", _setfacl(r.root, "-m", "u:%d:rw-" % OTHER_UID, "granted"))
    r.add("deny", _setfacl(r.root, "-m", "u:%d:---" % OTHER_UID, "denied"))
    r.add("grant dir", _setfacl(r.root, "-m", "u:%d:rwx" % OTHER_UID, "dgrant"))

    def child():
        out = []
        for label, fn in (("read granted", lambda: read_file(r.p("granted"))),
                          ("write granted", lambda: open_close(r.p("granted"), os.O_WRONLY)),
                          ("read denied", lambda: read_file(r.p("denied"))),
                          ("create in granted dir",
                           lambda: open_close(r.p("dgrant", "c"), os.O_CREAT | os.O_WRONLY))):
            try:
                out.append((label, fn()))
            except OSError as e:
                out.append((label, ename(e)))
        return out

    for label, value in _as_other_user(child):
        r.add("as uid %d: %s" % (OTHER_UID, label), value)


@scenario()
def sc_fallocate(r):
    p = r.p
    bs = r.bs
    fd = os.open(p("probe"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        supported = r.ok("fallocate probe", fallocate, fd, 0, 0, bs)
        if not supported:
            # ext4 preallocates only in extent-mapped files (not on ext2/ext3);
            # punching holes works in both
            data = pattern(8 * bs, 21)
            os.write(fd, data)
            for label, mode in (("KEEP_SIZE", FALLOC_FL_KEEP_SIZE),
                                ("ZERO_RANGE", FALLOC_FL_ZERO_RANGE)):
                r.ok("unsupported: " + label, fallocate, fd, mode, 0, 4 * bs)
            r.add("file unchanged", read_exact(fd, 9 * bs, 0) == data)
            r.ok("PUNCH_HOLE", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 bs + 100, 3 * bs)
            got = read_exact(fd, 9 * bs, 0)
            a, b = bs + 100, 4 * bs + 100
            r.add("after punch", (len(got), got[:a] == data[:a], got[a:b] == bytes(b - a),
                                  got[b:] == data[b:]))
            r.add("blocks after punch", blocks_of(os.fstat(fd).st_blocks, 6 * bs, bs))
            # the C library falls back to writing zeros
            r.ok("posix_fallocate emulated", os.posix_fallocate, fd, 0, 10 * bs)
            got = read_exact(fd, 11 * bs, 0)
            r.add("after emulation", (len(got), got[:a] == data[:a], got[a:b] == bytes(b - a),
                                      got[b:8 * bs] == data[b:], got[8 * bs:] == bytes(2 * bs)))
            return
    finally:
        os.close(fd)
    os.unlink(p("probe"))
    # free space first holds non-zero data: fallocated space must not show it
    write_file(p("junk"), b"\xee" * (4 * MiB))
    os.sync()
    os.unlink(p("junk"))
    os.sync()
    f = p("pre")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        before = r.mark(f)
        r.ok("posix_fallocate 4 MiB", os.posix_fallocate, fd, 0, 4 * MiB)
        r.times("posix_fallocate", before)
        s = os.fstat(fd)
        r.add("size, blocks", (s.st_size, blocks_of(s.st_blocks, 4 * MiB, bs)))
        r.add("preallocated reads zeros", read_exact(fd, 4 * MiB, 0) == bytes(4 * MiB))
        r.do("write into preallocated", os.pwrite, fd, b"PAYLOAD", MiB + 5)
        r.add("data in preallocated space", os.pread(fd, 20, MiB) ==
              bytes(5) + b"PAYLOAD" + bytes(8))
        r.add("rest still zeros", read_exact(fd, MiB, 2 * MiB) == bytes(MiB))
        r.ok("posix_fallocate inside existing", os.posix_fallocate, fd, 1000, 5000)
        r.add("data kept", os.pread(fd, 7, MiB + 5))
    finally:
        os.close(fd)
    e = p("edges")
    fd = os.open(e, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        r.ok("fallocate unaligned range", fallocate, fd, 0, 1000, 2 * bs)
        s = os.fstat(fd)
        r.add("unaligned: size, blocks", (s.st_size, blocks_of(s.st_blocks, 3 * bs, bs)))
        r.ok("KEEP_SIZE unaligned past EOF", fallocate, fd, FALLOC_FL_KEEP_SIZE,
             5 * bs + 7, bs)
        s = os.fstat(fd)
        r.add("KEEP_SIZE unaligned: size, blocks",
              (s.st_size, blocks_of(s.st_blocks, 5 * bs, bs)))
        r.ok("ZERO_RANGE unaligned over a hole", fallocate, fd, FALLOC_FL_ZERO_RANGE,
             10 * bs + 100, 2 * bs)
        s = os.fstat(fd)
        r.add("ZERO_RANGE unaligned: size, blocks",
              (s.st_size, blocks_of(s.st_blocks, 8 * bs, bs)))
        r.add("edges read zeros", read_exact(fd, s.st_size, 0) == bytes(s.st_size))
    finally:
        os.close(fd)
    g = p("keep")
    write_file(g, b"0123456789")
    fd = os.open(g, os.O_RDWR)
    try:
        r.add("one block before", blocks_of(os.fstat(fd).st_blocks, bs, bs))
        before = r.mark(g)
        r.ok("KEEP_SIZE 1 MiB", fallocate, fd, FALLOC_FL_KEEP_SIZE, 0, MiB)
        r.times("KEEP_SIZE", before)
        s = os.fstat(fd)
        r.add("KEEP_SIZE size, blocks", (s.st_size, blocks_of(s.st_blocks, MiB, bs)))
        r.do("read keeps size", os.pread, fd, 100, 0)
        r.do("write inside preallocation past EOF", os.pwrite, fd, b"LATE", 500000)
        r.add("size after", os.fstat(fd).st_size)
        r.add("gap zeros", os.pread(fd, 500004, 0) == b"0123456789" + bytes(499990) + b"LATE")
        r.add("blocks after write", blocks_of(os.fstat(fd).st_blocks, MiB, bs))
    finally:
        os.close(fd)
    h = p("punch")
    data = pattern(64 * 1024, 11)
    write_file(h, data)
    fd = os.open(h, os.O_RDWR)
    try:
        os.fsync(fd)
        b0 = os.fstat(fd).st_blocks
        before = r.mark(h)
        r.ok("PUNCH_HOLE unaligned", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             5000, 15000)
        r.times("PUNCH_HOLE", before)
        got = read_exact(fd, 70000, 0)
        r.add("punched range zero, edges intact",
              (len(got), got[:5000] == data[:5000], got[5000:20000] == bytes(15000),
               got[20000:] == data[20000:]))
        r.add("blocks released", (b0 - os.fstat(fd).st_blocks) * 512
              == (20000 // bs - -(-5000 // bs)) * bs)
        r.do("write into the punched range", os.pwrite, fd, b"refill", 9000)
        got = read_exact(fd, 20000, 0)
        r.add("refilled block", (got[5000:9000] == bytes(4000), got[9000:9006] == b"refill",
                                 got[9006:20000] == bytes(10994)))
        r.ok("PUNCH_HOLE without KEEP_SIZE", fallocate, fd, FALLOC_FL_PUNCH_HOLE, 0, 100)
        r.ok("PUNCH_HOLE past EOF", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             MiB, MiB)
        r.add("size after punch past EOF", os.fstat(fd).st_size)
        r.ok("PUNCH_HOLE inside one block", fallocate, fd,
             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 30001, 10)
        got = read_exact(fd, 70000, 0)
        r.add("small punch", (got[30001:30011] == bytes(10), got[30000] == data[30000],
                              got[30011:] == data[30011:]))
        r.ok("PUNCH_HOLE everything", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             0, 64 * 1024)
        s = os.fstat(fd)
        r.add("all punched", (s.st_size, blocks_of(s.st_blocks, 0, bs),
                              read_exact(fd, 70000, 0) == bytes(65536)))
    finally:
        os.close(fd)
    # preallocation past EOF and truncate
    fd = os.open(p("pk"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"k" * 100)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 16 * bs)
        r.ok("truncate down with preallocation past EOF", os.ftruncate, fd, 50)
        r.add("pk blocks", blocks_of(os.fstat(fd).st_blocks, bs, bs))
        r.add("pk content", os.pread(fd, 100, 0))
    finally:
        os.close(fd)
    fd = os.open(p("pk2"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"k" * 100)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 16 * bs)
        r.ok("truncate up into preallocation", os.ftruncate, fd, 3 * bs + 1)
        r.add("pk2 blocks", blocks_of(os.fstat(fd).st_blocks, 16 * bs, bs))
        r.add("pk2 content", os.pread(fd, 4 * bs, 0) == b"k" * 100 + bytes(3 * bs - 99))
    finally:
        os.close(fd)
    z = p("zero")
    write_file(z, data)
    fd = os.open(z, os.O_RDWR)
    try:
        r.ok("ZERO_RANGE inside", fallocate, fd, FALLOC_FL_ZERO_RANGE, 1000, 3000)
        got = read_exact(fd, 70000, 0)
        r.add("zeroed", (len(got), got[:1000] == data[:1000], got[1000:4000] == bytes(3000),
                         got[4000:] == data[4000:]))
        r.ok("ZERO_RANGE past EOF", fallocate, fd, FALLOC_FL_ZERO_RANGE, 60000, 20000)
        got = read_exact(fd, 90000, 0)
        r.add("grown by ZERO_RANGE", (len(got), got[60000:] == bytes(20000),
                                      got[4000:60000] == data[4000:60000]))
        r.ok("ZERO_RANGE|KEEP_SIZE past EOF", fallocate, fd,
             FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 80000, 20000)
        r.add("size kept", os.fstat(fd).st_size)
        r.ok("len 0", fallocate, fd, 0, 0, 0)
        r.ok("negative offset", fallocate, fd, 0, -1, 10)
        maxbytes = ((1 << 32) - 1) * bs
        r.ok("past max file size", fallocate, fd, 0, maxbytes, bs)
    finally:
        os.close(fd)
    fd = os.open(z, os.O_RDONLY)
    try:
        r.ok("fallocate on O_RDONLY fd", fallocate, fd, 0, 0, 10)
    finally:
        os.close(fd)
    big = p("toobig")
    fd = os.open(big, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # ext4 keeps what it allocated before running out; only the error is compared
        r.ok("fallocate more than the volume", fallocate, fd, 0, 0, 1 << 30)
    finally:
        os.close(fd)
    os.unlink(big)


@scenario()
def sc_seek(r):
    f = r.p("sparse")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, pattern(4096, 1), 0)
        os.pwrite(fd, pattern(4096, 2), MiB)
        end = MiB + 4096
        for label, off, whence in (("DATA 0", 0, os.SEEK_DATA), ("HOLE 0", 0, os.SEEK_HOLE),
                                   ("DATA 100", 100, os.SEEK_DATA),
                                   ("DATA 4096", 4096, os.SEEK_DATA),
                                   ("HOLE 4096", 4096, os.SEEK_HOLE),
                                   ("DATA 500K", 500000, os.SEEK_DATA),
                                   ("HOLE 1M", MiB, os.SEEK_HOLE),
                                   ("HOLE 1M+100", MiB + 100, os.SEEK_HOLE),
                                   ("DATA end", end, os.SEEK_DATA),
                                   ("HOLE end", end, os.SEEK_HOLE),
                                   ("DATA end+1", end + 1, os.SEEK_DATA),
                                   ("HOLE end+1", end + 1, os.SEEK_HOLE),
                                   ("SET -1", -1, os.SEEK_SET),
                                   ("END 0", 0, os.SEEK_END),
                                   ("END +10", 10, os.SEEK_END),
                                   ("CUR -5", -5, os.SEEK_CUR)):
            r.do("lseek " + label, os.lseek, fd, off, whence)
        os.ftruncate(fd, 2 * MiB)
        r.do("HOLE 1M after truncate up", os.lseek, fd, MiB, os.SEEK_HOLE)
        r.do("DATA past last data", os.lseek, fd, end, os.SEEK_DATA)
        r.do("HOLE at tail hole", os.lseek, fd, end + 10, os.SEEK_HOLE)
        r.do("read tail hole", os.pread, fd, 8, 2 * MiB - 8)
    finally:
        os.close(fd)
    write_file(r.p("empty"), b"")
    fd = os.open(r.p("empty"), os.O_RDONLY)
    try:
        r.do("empty: DATA 0", os.lseek, fd, 0, os.SEEK_DATA)
        r.do("empty: HOLE 0", os.lseek, fd, 0, os.SEEK_HOLE)
    finally:
        os.close(fd)
    write_file(r.p("full"), pattern(3 * 4096 + 10, 3))
    fd = os.open(r.p("full"), os.O_RDONLY)
    try:
        r.do("full: HOLE 0", os.lseek, fd, 0, os.SEEK_HOLE)
        r.do("full: DATA 5000", os.lseek, fd, 5000, os.SEEK_DATA)
    finally:
        os.close(fd)


@scenario()
def sc_unlink_open(r):
    s0 = os.statvfs(r.root)
    f = r.p("f")
    data = pattern(2 * MiB, 8)
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    fd2 = None
    try:
        os.write(fd, data)
        os.fsync(fd)
        fd2 = os.open(f, os.O_RDONLY)
        r.ok("unlink open file", os.unlink, f)
        r.st("name gone", f)
        r.add("listdir", sorted(os.listdir(r.root)))
        r.add("fstat nlink", os.fstat(fd).st_nlink)
        r.add("read through fd", read_exact(fd, 2 * MiB, 0) == data)
        more = pattern(MiB, 9)
        r.do("write through fd", os.pwrite, fd, more, 2 * MiB)
        r.add("size", os.fstat(fd).st_size)
        r.add("read new data", read_exact(fd, MiB, 2 * MiB) == more)
        r.ok("fchmod", os.fchmod, fd, 0o600)
        r.add("fstat mode", "%o" % os.fstat(fd).st_mode)
        r.ok("ftruncate", os.ftruncate, fd, MiB + 7)
        r.add("size after ftruncate", os.fstat(fd).st_size)
        r.ok("fsync", os.fsync, fd)
        os.close(fd)
        fd = None
        r.add("second fd still reads", read_exact(fd2, 100, MiB) == data[MiB:MiB + 7])
        r.add("second fd size", os.fstat(fd2).st_size)
        write_file(f, b"new file, same name")
        r.add("new file under the old name", read_file(f))
        r.add("old inode still via fd2", read_exact(fd2, 10, 0) == data[:10])
    finally:
        if fd is not None:
            os.close(fd)
        if fd2 is not None:
            os.close(fd2)
    os.unlink(f)
    r.add("blocks freed after last close", _wait_statvfs(r.root, "f_bfree", s0.f_bfree))
    r.add("inode freed after last close", _wait_statvfs(r.root, "f_ffree", s0.f_ffree))
    # rename over an open file
    write_file(r.p("victim"), b"OLD" * 1000)
    fd = os.open(r.p("victim"), os.O_RDONLY)
    try:
        write_file(r.p("newer"), b"NEW")
        r.ok("rename over open file", os.rename, r.p("newer"), r.p("victim"))
        r.add("fd sees old data", os.pread(fd, 6, 0))
        r.add("fstat nlink of replaced", os.fstat(fd).st_nlink)
        r.add("name has new data", read_file(r.p("victim")))
    finally:
        os.close(fd)
    os.unlink(r.p("victim"))
    r.add("space back after rename-over", _wait_statvfs(r.root, "f_bfree", s0.f_bfree))


def _as_other_user(fn):
    """Run fn() in a child process with uid/gid OTHER_UID/OTHER_GID; returns
    the list of outcomes it produced."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(OTHER_GID, OTHER_GID, OTHER_GID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
            out = fn()
            os.write(wfd, repr(out).encode())
            code = 0
        except BaseException as e:  # noqa: B036 - report anything to the parent
            try:
                os.write(wfd, repr([("child failed", repr(e))]).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    os.waitpid(pid, 0)
    out = ast.literal_eval(b"".join(chunks).decode())
    if out and out[0][0] == "child failed":
        raise RuntimeError("the unprivileged child failed: %s" % out[0][1])
    return out


@scenario()
def sc_permissions(r):
    p = r.p
    pub = p("pub")
    os.mkdir(pub)
    os.chmod(pub, 0o1777)
    write_file(p("pub", "rootfile"), b"root")
    write_file(p("pub", "shared"), b"shared")
    os.chmod(p("pub", "shared"), 0o666)
    write_file(p("pub", "suid"), b"suid")
    os.chmod(p("pub", "suid"), 0o6777)
    write_file(p("private"), b"secret")
    os.chmod(p("private"), 0o600)
    os.mkdir(p("closed"), 0o700)

    def child():
        out = []

        def t(label, fn, *args, **kw):
            try:
                fn(*args, **kw)
                out.append((label, "ok"))
            except OSError as e:
                out.append((label, ename(e)))

        t("create in root-owned 0755 dir", open_close, p("nope"), os.O_CREAT | os.O_WRONLY)
        t("read 0600 root file", read_file, p("private"))
        t("list 0700 root dir", os.listdir, p("closed"))
        t("unlink other's file in sticky dir", os.unlink, p("pub", "rootfile"))
        t("rename other's file in sticky dir", os.rename, p("pub", "rootfile"),
          p("pub", "stolen"))
        t("create in sticky dir", write_file, p("pub", "mine"), b"mine")
        t("write 0644 root file", open_close, p("pub", "rootfile"), os.O_WRONLY)
        t("chmod other's file", os.chmod, p("pub", "shared"), 0o777)
        t("chown own file", os.chown, p("pub", "mine"), 0, -1)
        t("chown own file to own gid", os.chown, p("pub", "mine"), -1, OTHER_GID)
        t("utime set on other's file", os.utime, p("pub", "shared"), ns=(1, 1))
        t("utime now on writable other's file", os.utime, p("pub", "shared"))
        t("write to set-id file", write_file, p("pub", "suid"), b"x",
          os.O_WRONLY | os.O_APPEND)
        t("truncate shared", os.truncate, p("pub", "shared"), 1)
        t("user xattr on other's file", os.setxattr, p("pub", "shared"), "user.k", b"v")
        t("trusted xattr", os.setxattr, p("pub", "mine"), "trusted.k", b"v")
        t("user xattr on own file", os.setxattr, p("pub", "mine"), "user.k", b"v")
        t("chmod own file g+s (not in group)", os.chmod, p("pub", "mine"), 0o2755)
        s = os.stat(p("pub", "mine"))
        out.append(("own file", (s.st_uid, s.st_gid, "%o" % s.st_mode)))
        t("mkdir in sticky dir", os.mkdir, p("pub", "cdir"))
        t("unlink own file", os.unlink, p("pub", "mine"))
        return out

    for label, value in _as_other_user(child):
        r.add("as uid %d: %s" % (OTHER_UID, label), value)
    r.st("suid file after other's write", p("pub", "suid"))
    r.st("shared", p("pub", "shared"))
    r.st("cdir", p("pub", "cdir"))
    r.listing("pub", pub)


# --------------------------------------------------------------------------
# inode flags (lsattr/chattr), O_TMPFILE, birth time, O_DIRECT alignment,
# shared mappings

@scenario()
def sc_inode_flags(r):
    f, d, empty = r.p("f"), r.p("d"), r.p("empty")
    write_file(f, pattern(3000, 1))
    os.mkdir(d)
    write_file(empty, b"")
    r.do("flags of a new file", getflags, f)
    r.do("flags of a new directory", getflags, d)
    for path, what in ((f, "file"), (d, "directory"), (empty, "empty file")):
        old = getflags(path)
        for bit in range(32):
            # moving existing blocks between extents and block maps: not done
            if 1 << bit == FS_EXTENT_FL and path != empty:
                continue
            ok = r.ok("%s: toggle %#x" % (what, 1 << bit), setflags, path, old ^ (1 << bit))
            r.add("%s: flags after toggling %#x" % (what, 1 << bit), getflags(path))
            if ok:
                setflags(path, old)
    before = r.mark(f)
    r.ok("chattr +d", chflags, f, FS_NODUMP_FL)
    r.times("after chattr +d", before)
    r.do("lsattr's letters", lambda: subprocess.run(
        ["lsattr", "-d", f], capture_output=True, text=True, check=True).stdout.split()[0])
    r.ok("chattr +A via the command", subprocess.run, ["chattr", "+A", f], check=True)
    r.do("FS_IOC_FSGETXATTR", fsgetxattr, f)
    r.ok("FS_IOC_FSSETXATTR append+nodump", fssetxattr, f, FS_XFLAG_APPEND | FS_XFLAG_NODUMP)
    r.do("flags after FSSETXATTR", getflags, f)
    r.ok("FS_IOC_FSSETXATTR with a project id", fssetxattr, f, FS_XFLAG_NOATIME, 7)
    r.do("flags after FSSETXATTR with a project id", getflags, f)
    setflags(f, getflags(f) & ~FS_APPEND_FL)

    # an immutable file, with a descriptor opened for writing before
    imm = r.p("imm")
    write_file(imm, pattern(5000, 2))
    wfd = os.open(imm, os.O_RDWR)
    try:
        r.ok("chattr +i", chflags, imm, FS_IMMUTABLE_FL)
        r.do("write through an earlier descriptor", os.pwrite, wfd, b"x", 0)
        r.ok("fallocate through it", fallocate, wfd, 0, 0, 8192)
        r.ok("ftruncate through it", os.ftruncate, wfd, 10)
    finally:
        os.close(wfd)
    for label, flags in (("O_WRONLY", os.O_WRONLY), ("O_RDWR|O_APPEND", os.O_RDWR | os.O_APPEND),
                         ("O_RDONLY", os.O_RDONLY), ("O_RDONLY|O_TRUNC", os.O_RDONLY | os.O_TRUNC)):
        r.ok("open immutable " + label, open_close, imm, flags)
    # an append-only file
    app = r.p("app")
    write_file(app, b"start\n")
    r.ok("chattr +a", chflags, app, FS_APPEND_FL)
    r.ok("open append-only O_WRONLY", open_close, app, os.O_WRONLY)
    r.ok("open append-only O_WRONLY|O_APPEND|O_TRUNC", open_close, app,
         os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
    r.ok("append to it", write_file, app, b"more\n", os.O_WRONLY | os.O_APPEND)
    r.add("its content", read_file(app))
    fd = os.open(app, os.O_WRONLY | os.O_APPEND)
    try:
        r.ok("fallocate KEEP_SIZE on append-only", fallocate, fd, FALLOC_FL_KEEP_SIZE, 0, 8192)
        r.ok("punch on append-only", fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             0, 4096)
        r.ok("ftruncate append-only", os.ftruncate, fd, 2)
    finally:
        os.close(fd)
    for path, what in ((imm, "immutable"), (app, "append-only")):
        r.ok("truncate %s" % what, os.truncate, path, 1)
        r.ok("chmod %s" % what, os.chmod, path, 0o600)
        r.ok("chown %s" % what, os.chown, path, OTHER_UID, -1)
        r.ok("utime set on %s" % what, os.utime, path, ns=(1, 1))
        r.ok("utime now on %s" % what, os.utime, path)
        r.ok("setxattr on %s" % what, os.setxattr, path, "user.k", b"v")
        r.ok("unlink %s" % what, os.unlink, path)
        r.ok("rename %s" % what, os.rename, path, path + ".moved")
        r.ok("rename over %s" % what, os.rename, empty, path)
        r.ok("link %s" % what, os.link, path, path + ".link")
        r.st(what, path)
    # directories
    idir, adir = r.p("idir"), r.p("adir")
    for x in (idir, adir):
        os.mkdir(x)
        write_file(os.path.join(x, "old"), b"old")
    r.ok("chattr +i dir", chflags, idir, FS_IMMUTABLE_FL)
    r.ok("chattr +a dir", chflags, adir, FS_APPEND_FL)
    for x, what in ((idir, "immutable dir"), (adir, "append-only dir")):
        r.ok("create in %s" % what, write_file, os.path.join(x, "new"), b"new")
        r.ok("mkdir in %s" % what, os.mkdir, os.path.join(x, "sub"))
        r.ok("symlink in %s" % what, os.symlink, "t", os.path.join(x, "sym"))
        r.ok("O_TMPFILE in %s" % what, lambda x=x: os.close(os.open(x, O_TMPFILE | os.O_RDWR, 0o600)))
        r.ok("unlink in %s" % what, os.unlink, os.path.join(x, "old"))
        r.ok("rename out of %s" % what, os.rename, os.path.join(x, "old"), r.p("out"))
        r.ok("rename into %s" % what, os.rename, empty, os.path.join(x, "in"))
        r.ok("rmdir %s" % what, os.rmdir, x)
        r.listing(what, x)
    # an owner without CAP_LINUX_IMMUTABLE
    own = r.p("own")
    write_file(own, b"own")
    os.chown(own, OTHER_UID, OTHER_GID)

    def child():
        out = []
        for label, fn in (("set nodump", lambda: chflags(own, FS_NODUMP_FL)),
                          ("set append-only", lambda: chflags(own, FS_APPEND_FL)),
                          ("set flags of root's file", lambda: chflags(f, FS_NOATIME_FL))):
            try:
                fn()
                out.append((label, "ok"))
            except OSError as e:
                out.append((label, ename(e)))
        return out
    for label, value in _as_other_user(child):
        r.add("as uid %d: %s" % (OTHER_UID, label), value)
    r.do("flags of own", getflags, own)
    # what stays for the tree comparison: a nodump and noatime file, an
    # immutable file, an append-only directory
    chflags(idir, remove=FS_IMMUTABLE_FL)
    chflags(app, remove=FS_APPEND_FL)


@scenario()
def sc_tmpfile(r):
    d = r.p("d")
    os.mkdir(d)
    s0 = os.statvfs(r.root)
    fd = os.open(d, O_TMPFILE | os.O_RDWR, 0o666)
    try:
        st = os.fstat(fd)
        r.add("fstat of an O_TMPFILE file", (st.st_nlink, "%o" % st.st_mode, st.st_size))
        r.add("one inode more in use", _wait_statvfs(r.root, "f_ffree", s0.f_ffree - 1))
        r.listing("its directory", d)
        data = pattern(200000, 3)
        r.do("write", os.pwrite, fd, data, 0)
        r.add("read back", read_exact(fd, len(data) + 1, 0) == data)
        r.ok("fchmod", os.fchmod, fd, 0o640)
        r.ok("link it through /proc", linkat, AT_FDCWD, "/proc/self/fd/%d" % fd, r.p("d", "named"),
             AT_SYMLINK_FOLLOW)
        r.st("named", r.p("d", "named"))
        r.add("fstat nlink after the link", os.fstat(fd).st_nlink)
        r.ok("link it again", linkat, fd, "", r.p("second"), AT_EMPTY_PATH)
        r.st("second", r.p("second"))
    finally:
        os.close(fd)
    r.add("named content", read_file(r.p("d", "named")) == data)
    fd = os.open(r.root, O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        r.ok("O_EXCL: link refused", linkat, fd, "", r.p("never"), AT_EMPTY_PATH)
        os.write(fd, pattern(100000, 4))
    finally:
        os.close(fd)
    r.add("the O_EXCL file's inode is freed", _wait_statvfs(r.root, "f_ffree", s0.f_ffree - 1))
    s1 = os.statvfs(r.root)
    fd = os.open(r.root, O_TMPFILE | os.O_RDWR, 0o600)
    os.write(fd, pattern(300000, 5))
    os.close(fd)
    r.add("an unnamed file's inode is freed at close", _wait_statvfs(r.root, "f_ffree", s1.f_ffree))
    r.add("and its blocks", _wait_statvfs(r.root, "f_bfree", s1.f_bfree))
    r.ok("O_TMPFILE on a file", lambda: os.close(os.open(r.p("second"), O_TMPFILE | os.O_RDWR)))
    r.ok("O_TMPFILE in a missing dir", lambda: os.close(os.open(r.p("nodir"), O_TMPFILE | os.O_RDWR)))
    r.ok("O_TMPFILE read-only", lambda: os.close(os.open(d, O_TMPFILE | os.O_RDONLY)))
    sg = r.p("sg")
    os.mkdir(sg)
    os.chown(sg, 0, OTHER_GID)
    os.chmod(sg, 0o2777)
    fd = os.open(sg, O_TMPFILE | os.O_RDWR, 0o6755)
    try:
        st = os.fstat(fd)
        r.add("O_TMPFILE in a set-gid dir", (st.st_gid, "%o" % st.st_mode))
        linkat(fd, "", r.p("sg", "kept"), AT_EMPTY_PATH)
    finally:
        os.close(fd)
    r.st("kept", r.p("sg", "kept"))


@scenario()
def sc_btime(r):
    f, d, ln = r.p("f"), r.p("d"), r.p("ln")
    open_close(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.mkdir(d)
    os.symlink("f", ln)
    for path, what in ((f, "file"), (d, "directory"), (ln, "symlink")):
        x = statx(path, follow=False)
        r.add("%s: btime given" % what, x["btime"])
        r.add("%s: btime is the creation's ctime" % what, x["btime_ns"] == x["ctime_ns"])
    x0 = statx(f)
    tick()
    write_file(f, b"changed", os.O_WRONLY | os.O_APPEND)
    os.chmod(f, 0o600)
    x1 = statx(f)
    r.add("btime unchanged by writes and chmod", x1["btime_ns"] == x0["btime_ns"])
    r.add("ctime later than btime", x1["ctime_ns"] > x1["btime_ns"])
    r.do("stat %w is a date", lambda: subprocess.run(
        ["stat", "-c", "%w", f], capture_output=True, text=True, check=True).stdout.strip() != "-")


@scenario()
def sc_odirect_alignment(r):
    f = r.p("f")
    write_file(f, pattern(20000, 6))
    buf = mmap.mmap(-1, 3 * 4096)
    fd = os.open(f, os.O_RDWR | os.O_DIRECT)
    try:
        view = memoryview(buf)
        buf[:8192] = pattern(8192, 7)
        r.do("aligned write", os.pwrite, fd, view[:8192], 4096)
        r.do("512-byte write at 512", os.pwrite, fd, view[:512], 512)
        r.do("write at an odd offset", os.pwrite, fd, view[:4096], 100)
        r.do("write of an odd length", os.pwrite, fd, view[:100], 0)
        r.do("read at an odd offset", os.preadv, fd, [view[:4096]], 100)
        r.do("read of an odd length", os.preadv, fd, [view[:1000]], 0)
        r.do("aligned read across the end", os.preadv, fd, [view[:8192]], 16384)
        r.do("aligned read past the end", os.preadv, fd, [view[:4096]], 40960)
        del view
    finally:
        os.close(fd)
        buf.close()
    r.add("content", hashlib.sha256(read_file(f)).hexdigest()[:16])


@scenario()
def sc_mmap_shared(r):
    f = r.p("f")
    write_file(f, pattern(3 * 4096, 8))
    fd = os.open(f, os.O_RDWR)
    dfd = os.open(f, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    try:
        m = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED)
        try:
            m[100:105] = b"HELLO"
            m.flush()
            r.add("a mapped write, read(2) after msync", os.pread(fd, 5, 100))
            buf[:] = pattern(4096, 9)
            os.pwrite(dfd, buf, 4096)
            r.add("the mapping sees an O_DIRECT write", m[4096:8192] == pattern(4096, 9))
            m[8192:8200] = b"unsynced"
            r.add("an O_DIRECT read sees a mapped write", os.preadv(dfd, [buf], 8192) == 4096
                  and buf[:8] == b"unsynced")
        finally:
            m.close()
        priv = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE)
        priv[:4] = b"PRIV"
        priv.close()
        r.add("a private mapping's write stays private", os.pread(fd, 4, 0))
    finally:
        buf.close()
        os.close(dfd)
        os.close(fd)
    ro = os.open(f, os.O_RDONLY)
    try:
        r.ok("writable shared mapping of a read-only descriptor",
             lambda: mmap.mmap(ro, 4096, mmap.MAP_SHARED).close())
    finally:
        os.close(ro)
    r.add("content", hashlib.sha256(read_file(f)).hexdigest()[:16])


# --------------------------------------------------------------------------
# the differential test


def _params():
    out = []
    for fn in SCENARIOS:
        for fstype, bs in fn.variants:
            out.append(pytest.param(fn, fstype, bs, id="%s-%s-%dk"
                                    % (fn.__name__[3:], fstype, bs // 1024)))
    return out


@pytest.mark.parametrize("scenario_fn,fstype,bs", _params())
def test_same_as_kernel(scenario_fn, fstype, bs, volumes, workdir):
    if "acl" in scenario_fn.needs:
        _require_acl_tools()
    args = ("-b", str(bs))
    kdev = volumes.make(fstype, args=args, name="kernel.img")
    fdev = volumes.make(fstype, args=args, name="kaiofs.img")
    with fs_support.kernel_mount(kdev.path, os.path.join(workdir, "kernel"),
                                 readonly=False) as kroot:
        expected = run_scenario(scenario_fn, kroot)
    # both trees are read the same way: a fresh read-only kernel mount
    with fs_support.kernel_mount(kdev.path, os.path.join(workdir, "kernel-ro")) as kro:
        ktree = snapshot(kro)
    m = volumes.mount(fdev, options=("allow_other",))
    got, crash = run_scenario(scenario_fn, m.mountpoint, catch=True)
    rc = m.stop()
    problems = []
    if crash:
        problems.append("the scenario stopped on kaiofs after %d steps (the kernel's ext4 "
                        "completed it):\n%s" % (len(got), crash))
        expected = expected[:len(got)]
    if rc != 0:
        problems.append("kaiofs exit status %r after unmount; stderr:\n%s" % (rc, m.stderr))
    diffs = diff_outcomes(expected, got)
    if diffs:
        problems.append("outcomes differ from the kernel's ext4:\n" + "\n".join(diffs))
    fsck_rc, fsck_out = fs_support.fsck(fdev.path)
    if fsck_rc != 0:
        problems.append("e2fsck -fn of the kaiofs image: exit %d\n%s" % (fsck_rc, fsck_out))
    with fs_support.kernel_mount(fdev.path, os.path.join(workdir, "kread")) as kread:
        ftree = snapshot(kread)
    tdiff = diff_trees(ktree, ftree)
    if tdiff:
        problems.append("tree left by kaiofs (read by the kernel) differs from the "
                        "kernel's:\n" + "\n".join(tdiff))
    if problems and m.stderr.strip():
        problems.append("kaiofs stderr:\n" + m.stderr[-4000:])
    assert not problems, "\n\n".join(problems)


# --------------------------------------------------------------------------
# direct tests


def _stop_and_check(m, dev):
    rc = m.stop()
    assert rc == 0, "kaiofs exit status %r; stderr:\n%s" % (rc, m.stderr)
    fs_support.assert_fsck_clean(dev.path)


def test_acl_reads_back_through_kernel(volumes, workdir):
    _require_acl_tools()
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    root = m.mountpoint
    write_file(os.path.join(root, "f"), b"")
    os.mkdir(os.path.join(root, "d"))
    rc, err = _setfacl(root, "-m", "u:1234:rwx,u:99:r--,g:55:r-x,g::r--,m::rwx,o::---", "f")
    assert rc == 0, "setfacl on kaiofs failed: %s" % err
    rc, err = _setfacl(root, "-m", "u:1234:r-x,g:66:rwx", "-d", "-m",
                       "u:1234:rwx,g:77:r-x,g::r-x,m::rwx,o::---", "d")
    assert rc == 0, "setfacl -d on kaiofs failed: %s" % err
    on_kaiofs = _getfacl(root, "f", "d")
    assert on_kaiofs[0] == 0, on_kaiofs
    assert "user:1234:rwx" in on_kaiofs[1] and "default:group:77:r-x" in on_kaiofs[1], \
        on_kaiofs[1]
    raw = {n: os.getxattr(os.path.join(root, "d"), n)
           for n in ("system.posix_acl_access", "system.posix_acl_default")}
    _stop_and_check(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        on_kernel = _getfacl(k, "f", "d")
        raw_k = {n: os.getxattr(os.path.join(k, "d"), n) for n in raw}
    assert on_kernel == on_kaiofs, "ACLs read by the kernel differ:\nkaiofs:\n%s\nkernel:\n%s" \
        % (on_kaiofs[1], on_kernel[1])
    assert raw_k == raw


@pytest.mark.parametrize("mode,name", [(FALLOC_FL_COLLAPSE_RANGE, "COLLAPSE_RANGE"),
                                       (FALLOC_FL_INSERT_RANGE, "INSERT_RANGE"),
                                       (0x40, "UNSHARE_RANGE")])
def test_fallocate_unsupported_mode(volumes, mode, name):
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    f = os.path.join(m.mountpoint, "f")
    data = pattern(64 * 1024, 1)
    write_file(f, data)
    fd = os.open(f, os.O_RDWR)
    try:
        with pytest.raises(OSError) as ei:
            fallocate(fd, mode, 8192, 8192)
        assert ei.value.errno == errno.EOPNOTSUPP, \
            "fallocate %s: %s, expected EOPNOTSUPP" % (name, ename(ei.value))
        assert read_exact(fd, 70000, 0) == data
    finally:
        os.close(fd)
    _stop_and_check(m, dev)


def test_odirect_alignment_and_mixed_io(volumes):
    """O_DIRECT and buffered descriptors on one file see each other's data;
    an unaligned O_DIRECT transfer is refused with EINVAL, as ext4 refuses it
    (the buffer's own alignment is not visible through FUSE)."""
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    f = os.path.join(m.mountpoint, "f")
    model = bytearray(pattern(100000, 2))
    write_file(f, bytes(model))
    dfd = os.open(f, os.O_RDWR | os.O_DIRECT)
    bfd = os.open(f, os.O_RDWR)
    buf = mmap.mmap(-1, 65536)
    try:
        for off, n in ((0, 4096), (4096, 65536), (12288, 8192)):
            buf[:n] = pattern(n, off)
            assert os.pwrite(dfd, memoryview(buf)[:n], off) == n
            model[off:off + n] = pattern(n, off)
            assert os.pread(bfd, n, off) == bytes(model[off:off + n])
        os.pwrite(bfd, b"buffered", 5000)
        model[5000:5008] = b"buffered"
        got = os.preadv(dfd, [buf], 0)
        assert got == 65536 and buf[:] == bytes(model[:65536])
        for off, n in ((77777, 4096), (4096, 3)):
            with pytest.raises(OSError) as e:
                os.pwrite(dfd, memoryview(buf)[:n], off)
            assert e.value.errno == errno.EINVAL, e.value
            with pytest.raises(OSError) as e:
                os.preadv(dfd, [memoryview(buf)[:n]], off)
            assert e.value.errno == errno.EINVAL, e.value
        assert read_exact(bfd, len(model) + 10, 0) == bytes(model)
    finally:
        os.close(dfd)
        os.close(bfd)
        buf.close()
    _stop_and_check(m, dev)


def test_no_birth_time_in_small_inodes(volumes, workdir):
    """128-byte inodes have no room for a creation time: statx says so on
    kaiofs as on the kernel's ext4, and stat %w prints "-"."""
    outcomes = []
    for name in ("kernel", "kaiofs"):
        dev = volumes.make("ext4", args=("-I", "128"), name=name + ".img")
        if name == "kernel":
            with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k"),
                                         readonly=False) as root:
                outcomes.append(_birth_times(root))
        else:
            m = volumes.mount(dev)
            outcomes.append(_birth_times(m.mountpoint))
            _stop_and_check(m, dev)
    assert outcomes[0] == outcomes[1] == [False, "-"], outcomes


def _birth_times(root):
    f = os.path.join(root, "f")
    write_file(f, b"x")
    return [statx(f)["btime"], subprocess.run(["stat", "-c", "%w", f], capture_output=True,
                                             text=True, check=True).stdout.strip()]


def test_statfs_values(volumes):
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    root = m.mountpoint
    s0 = os.statvfs(root)
    assert (s0.f_bsize, s0.f_frsize, s0.f_namemax) == (4096, 4096, 255)
    assert 16384 * 0.8 < s0.f_blocks < 16384, s0
    assert s0.f_files == 16384, s0
    assert os.pathconf(root, "PC_NAME_MAX") == 255
    # blocks reserved for root are not available to others
    res = subprocess.run(["dumpe2fs", "-h", dev.path], capture_output=True, text=True,
                         timeout=kh.tmo(30))
    reserved = int(re.search(r"^Reserved block count:\s+(\d+)", res.stdout, re.M).group(1))
    assert reserved > 0
    assert s0.f_bavail <= s0.f_bfree - reserved, \
        "f_bavail %d includes the %d blocks reserved for root (f_bfree %d)" \
        % (s0.f_bavail, reserved, s0.f_bfree)
    write_file(os.path.join(root, "big"), pattern(8 * MiB, 1))
    s1 = os.statvfs(root)
    assert s0.f_bfree - s1.f_bfree >= 2048, (s0, s1)
    assert s0.f_ffree - s1.f_ffree == 1, (s0, s1)
    os.unlink(os.path.join(root, "big"))
    assert _wait_statvfs(root, "f_bfree", s0.f_bfree), (s0, os.statvfs(root))
    assert _wait_statvfs(root, "f_ffree", s0.f_ffree), (s0, os.statvfs(root))
    _stop_and_check(m, dev)


@pytest.mark.parametrize("fstype,bs", [("ext3", 4096), ("ext2", 1024)])
def test_block_mapped_files(volumes, workdir, fstype, bs):
    """ext2/ext3 files map their blocks through indirect blocks: files that
    need single, double and triple indirection, written, read back, checked
    by e2fsck and read by the kernel."""
    dev = volumes.make(fstype, args=("-b", str(bs)))
    m = volumes.mount(dev)
    root = m.mountpoint
    per = bs // 4
    cases = {
        "direct": (0, 12 * bs),
        "single": (0, 13 * bs),
        "double": (0, (12 + per + 3) * bs + 100),
        "triple-sparse": ((12 + per + per * per + 5) * bs + 7, 3 * bs),
    }
    for name, (off, n) in cases.items():
        fd = os.open(os.path.join(root, name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                assert os.pwrite(fd, pattern(n, off), off) == n
            except OSError as e:
                pytest.fail("%s: pwrite of %d bytes at %d on %s-%dk: %s"
                            % (name, n, off, fstype, bs // 1024, ename(e)))
            assert os.fstat(fd).st_size == off + n
            assert read_exact(fd, n, off) == pattern(n, off), name
            if off:
                assert os.pread(fd, 4096, off // 2) == bytes(4096), name
        finally:
            os.close(fd)
    dn = cases["double"][1]
    os.truncate(os.path.join(root, "double"), 5 * bs + 1)
    expect = {name: (off, pattern(n, off)) for name, (off, n) in cases.items()}
    expect["double"] = (0, pattern(dn, 0)[:5 * bs + 1])
    _stop_and_check(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        for name, (off, data) in expect.items():
            with open(os.path.join(k, name), "rb") as f:
                got = f.read()
            assert len(got) == off + len(data), name
            assert got[off:] == data and got[:off] == bytes(off), name
