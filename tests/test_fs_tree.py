"""Filesystem mode: whole trees written through kaiofs and read back by the
kernel's ext2/3/4 driver, and trees written by the kernel read (and then
changed) through kaiofs.

Each tree is built by the same code against a model of what it should hold.
A manifest of a mounted tree records, for every name, the file type, mode,
owner, link count, size, block count, inode number, device number, access
and modification times to the nanosecond, every extended attribute, the
symlink target, the data/hole map (SEEK_DATA/SEEK_HOLE) and every byte.
The manifest of the writer is checked against the model, the manifest of the
reader against the writer's."""

import errno
import os
import re
import stat
import subprocess

import pytest

import fs_support
import kaiofs_helpers as kh

MiB = kh.MiB
UMASK = 0o022

from kaiofs_helpers import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,  # noqa: E402
                            FALLOC_FL_ZERO_RANGE, fallocate)


def errname(e):
    return errno.errorcode.get(e, str(e))


def expect_errno(expected, what, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except OSError as e:
        assert e.errno == expected, "%s: got %s (%s), expected %s" % (
            what, errname(e.errno), e, errname(expected))
        return
    pytest.fail("%s: succeeded, expected %s" % (what, errname(expected)), pytrace=False)


def block_size(image):
    r = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True,
                       timeout=kh.tmo(60))
    assert r.returncode == 0, r.stderr
    return int(re.search(r"(?m)^Block size:\s+(\d+)", r.stdout).group(1))


def inode_flags(image, path):
    r = subprocess.run(["debugfs", "-R", "stat %s" % path, image], capture_output=True,
                       text=True, timeout=kh.tmo(60))
    m = re.search(r"Flags:\s+0x([0-9a-fA-F]+)", r.stdout)
    assert m, "debugfs stat %s: %s %s" % (path, r.stdout, r.stderr)
    return int(m.group(1), 16)


EXT4_INDEX_FL = 0x1000

# ---------------------------------------------------------------------------
# the model


class Node:
    """What one inode should hold; hard links share one Node."""

    def __init__(self, kind, mode, uid=0, gid=0):
        self.kind = kind            # reg dir lnk fifo chr blk
        self.mode = mode            # permission and set-id/sticky bits
        self.uid = uid
        self.gid = gid
        self.data = bytearray() if kind == "reg" else None
        self.target = None
        self.rdev = None
        self.xattrs = {}
        self.times = None           # (atime_ns, mtime_ns) once set

    def size(self):
        if self.kind == "reg":
            return len(self.data)
        if self.kind == "lnk":
            return len(self.target)
        return None


def parent_of(rel):
    d = os.path.dirname(rel)
    return d if d else b"."


class Model:
    def __init__(self):
        self.names = {b".": Node("dir", 0o755), b"lost+found": Node("dir", 0o700)}

    def nlink(self, rel):
        node = self.names[rel]
        if node.kind == "dir":
            return 2 + sum(1 for n, x in self.names.items()
                           if x.kind == "dir" and n != b"." and parent_of(n) == rel)
        return sum(1 for x in self.names.values() if x is node)

    def remove(self, rel):
        del self.names[rel]


class Builder:
    """Applies each change to a mounted tree and to the model."""

    def __init__(self, root, model, rng, bs, extents):
        self.root = os.fsencode(root)
        self.model = model
        self.rng = rng
        self.bs = bs
        self.extents = extents   # ext4 (extent mapped files) or ext2/3

    def p(self, rel):
        return os.path.join(self.root, rel) if rel != b"." else self.root

    def _new(self, rel, kind, mode):
        par = self.model.names[parent_of(rel)]
        gid = 0
        if par.mode & stat.S_ISGID:
            gid = par.gid
            if kind == "dir":
                mode |= stat.S_ISGID
        node = Node(kind, mode, 0, gid)
        assert rel not in self.model.names, rel
        self.model.names[rel] = node
        return node

    # -- creation
    def mkdir(self, rel, req=0o755):
        os.mkdir(self.p(rel), req)
        return self._new(rel, "dir", req & ~UMASK)

    def create(self, rel, req=0o644, data=b""):
        fd = os.open(self.p(rel), os.O_CREAT | os.O_EXCL | os.O_RDWR, req)
        try:
            if data:
                kh.pwrite_all(fd, data, 0)
        finally:
            os.close(fd)
        node = self._new(rel, "reg", req & ~UMASK)
        node.data[:] = data
        return node

    def symlink(self, rel, target):
        os.symlink(target, self.p(rel))
        node = self._new(rel, "lnk", 0o777)
        node.target = target
        return node

    def link(self, existing, rel):
        os.link(self.p(existing), self.p(rel))
        self.model.names[rel] = self.model.names[existing]

    def mkfifo(self, rel, req=0o644):
        os.mkfifo(self.p(rel), req)
        return self._new(rel, "fifo", req & ~UMASK)

    def mknod(self, rel, kind, req, rdev):
        fmt = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
        os.mknod(self.p(rel), fmt | req, rdev)
        node = self._new(rel, kind, req & ~UMASK)
        node.rdev = rdev
        return node

    # -- data
    def _fd(self, rel, flags=os.O_RDWR):
        return os.open(self.p(rel), flags)

    def pwrite(self, rel, off, data):
        fd = self._fd(rel)
        try:
            kh.pwrite_all(fd, data, off)
        finally:
            os.close(fd)
        d = self.model.names[rel].data
        if len(d) < off:
            d.extend(bytes(off - len(d)))
        d[off:off + len(data)] = data

    def append(self, rel, data):
        with open(self.p(rel), "ab") as f:
            f.write(data)
        self.model.names[rel].data.extend(data)

    def truncate(self, rel, size):
        os.truncate(self.p(rel), size)
        d = self.model.names[rel].data
        if size < len(d):
            del d[size:]
        else:
            d.extend(bytes(size - len(d)))

    def posix_fallocate(self, rel, off, length):
        fd = self._fd(rel)
        try:
            os.posix_fallocate(fd, off, length)
        finally:
            os.close(fd)
        d = self.model.names[rel].data
        if len(d) < off + length:
            d.extend(bytes(off + length - len(d)))

    def fallocate(self, rel, mode, off, length, expect_err=None):
        fd = self._fd(rel)
        try:
            if expect_err is not None:
                expect_errno(expect_err, "fallocate(%r, mode=%#x)" % (rel, mode),
                             fallocate, fd, mode, off, length)
                return
            fallocate(fd, mode, off, length)
        finally:
            os.close(fd)
        d = self.model.names[rel].data
        kh.fallocate_model(d, mode, off, length)

    # -- attributes
    def chown(self, rel, uid, gid):
        os.chown(self.p(rel), uid, gid, follow_symlinks=False)
        node = self.model.names[rel]
        assert not node.mode & (stat.S_ISUID | stat.S_ISGID) or node.kind == "dir"
        node.uid, node.gid = uid, gid

    def chmod(self, rel, mode):
        os.chmod(self.p(rel), mode)
        self.model.names[rel].mode = mode

    def setxattr(self, rel, name, value):
        os.setxattr(self.p(rel), name, value, follow_symlinks=False)
        self.model.names[rel].xattrs[name] = bytes(value)

    def removexattr(self, rel, name):
        os.removexattr(self.p(rel), name, follow_symlinks=False)
        del self.model.names[rel].xattrs[name]

    def utime(self, rel, atime_ns, mtime_ns):
        os.utime(self.p(rel), ns=(atime_ns, mtime_ns), follow_symlinks=False)
        self.model.names[rel].times = (atime_ns, mtime_ns)


# ---------------------------------------------------------------------------
# the tree

PROFILES = {
    # ext4 of 256 MiB
    "full": dict(files=40, max_size=3 * MiB, bigdir=5000, sparse_size=40 * MiB),
    # ext2/ext3 of 64 MiB
    "small": dict(files=12, max_size=1 * MiB, bigdir=600, sparse_size=4 * MiB),
}

ODD_NAMES = [b"sp ace", b"new\nline", b"\xff\xfe\x80", b"x" * 255, b"-dash",
             b"\xe2\x98\x83snow", b"tab\there", b"back\\slash", b"...", b"a=b,c;d"]

SPECIAL_TIMES = [0, -1, -2**31 * 10**9, 2**31 * 10**9 - 1, 2**31 * 10**9,
                 2**32 * 10**9 + 5, 2**33 * 10**9 + 123456789,
                 15032385534 * 10**9 + 999999999, 1700000000 * 10**9 + 1]


def big_dir_name(rng, i, prefix=b"e"):
    stem = b"%s%05d-" % (prefix, i)
    n = rng.choice([0, rng.randrange(0, 20), rng.randrange(0, 255 - len(stem) + 1)])
    return stem + bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789_.")
                        for _ in range(n))


def build_tree(b, prof):
    rng = b.rng
    bs = b.bs
    for d in (b"files", b"sparse", b"prealloc", b"links", b"special", b"deep", b"big",
              b"modes", b"owners", b"xattrs", b"names"):
        b.mkdir(d)

    # files of random sizes, some with holes from writes at scattered offsets
    for i in range(prof["files"]):
        rel = b"files/f%02d" % i
        b.create(rel)
        size = rng.choice([0, rng.randrange(1, 2 * bs), rng.randrange(0, prof["max_size"] + 1),
                           rng.randrange(0, prof["max_size"] + 1)])
        style = i % 3
        if style == 0 and size:
            b.pwrite(rel, 0, rng.randbytes(size))
        elif style == 1:
            b.truncate(rel, size)
            for _ in range(rng.randrange(1, 7)):
                if size == 0:
                    break
                off = rng.randrange(0, size)
                b.pwrite(rel, off, rng.randbytes(rng.randrange(1, min(size - off, 300000) + 1)))
        else:
            for _ in range(rng.randrange(1, 7)):
                off = rng.randrange(0, max(1, prof["max_size"] - 300000))
                b.pwrite(rel, off, rng.randbytes(rng.randrange(1, 300001)))

    # sparse files
    sz = prof["sparse_size"]
    b.create(b"sparse/big")
    b.truncate(b"sparse/big", sz)
    b.pwrite(b"sparse/big", 0, rng.randbytes(1000))
    b.pwrite(b"sparse/big", sz // 2 + 123, rng.randbytes(5000))
    b.pwrite(b"sparse/big", sz - 1, b"\x5a")
    b.create(b"sparse/grown", data=rng.randbytes(3000))
    b.truncate(b"sparse/grown", 2 * MiB + 17)
    b.create(b"sparse/nodata")
    b.truncate(b"sparse/nodata", 5 * MiB)
    b.create(b"sparse/shrunk", data=rng.randbytes(MiB))
    b.truncate(b"sparse/shrunk", 300001)
    b.truncate(b"sparse/shrunk", 700000)
    b.create(b"sparse/far")
    b.pwrite(b"sparse/far", 3 * MiB + 77, rng.randbytes(bs + 3))

    # preallocated files
    unsup = None if b.extents else errno.EOPNOTSUPP
    b.create(b"prealloc/posix")
    b.posix_fallocate(b"prealloc/posix", 0, 2 * MiB)
    b.pwrite(b"prealloc/posix", 512 * 1024 + 7, rng.randbytes(100000))
    b.create(b"prealloc/keep", data=rng.randbytes(10000))
    b.fallocate(b"prealloc/keep", FALLOC_FL_KEEP_SIZE, 0, MiB, expect_err=unsup)
    b.create(b"prealloc/keep_beyond", data=rng.randbytes(5000))
    b.fallocate(b"prealloc/keep_beyond", FALLOC_FL_KEEP_SIZE, 64 * 1024, 256 * 1024,
                expect_err=unsup)
    b.pwrite(b"prealloc/keep_beyond", 100 * 1024, rng.randbytes(1000))
    b.create(b"prealloc/grow", data=rng.randbytes(3000))
    b.fallocate(b"prealloc/grow", 0, MiB, MiB, expect_err=unsup)
    b.create(b"prealloc/punched", data=rng.randbytes(MiB))
    b.fallocate(b"prealloc/punched", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                100000, 500000)
    b.create(b"prealloc/zeroed", data=rng.randbytes(MiB))
    b.fallocate(b"prealloc/zeroed", FALLOC_FL_ZERO_RANGE, 3 * 4096 + 5, 300000,
                expect_err=unsup)
    b.create(b"prealloc/zero_grow", data=rng.randbytes(20000))
    b.fallocate(b"prealloc/zero_grow", FALLOC_FL_ZERO_RANGE, 15000, 100000,
                expect_err=unsup)
    b.create(b"prealloc/posix_mid", data=rng.randbytes(70000))
    b.posix_fallocate(b"prealloc/posix_mid", 30000, 400000)

    # symlinks, short (in the inode) and long (in a block), and hard links
    for n in (1, 59, 60, 61, 200, bs - 1):
        b.symlink(b"links/s%d" % n, bytes(rng.choice(b"abcdefgh/.") for _ in range(n)))
    b.symlink(b"links/abs", b"/etc/passwd")
    b.symlink(b"links/up", b"../files/f00")
    b.symlink(b"links/odd", b"\xff\xfe weird\nname")
    expect_errno(errno.ENAMETOOLONG, "symlink with a %d byte target" % bs,
                 os.symlink, b"y" * bs, b.p(b"links/toolong"))
    b.create(b"links/h0", data=rng.randbytes(12345))
    b.link(b"links/h0", b"links/h1")
    b.link(b"links/h0", b"deep/h2")
    b.link(b"files/f01", b"links/f01-again")

    # fifos and device nodes
    b.mkfifo(b"special/fifo")
    b.mkfifo(b"special/fifo0600", 0o600)
    b.mknod(b"special/null", "chr", 0o666, os.makedev(1, 3))
    b.mknod(b"special/bigchr", "chr", 0o600, os.makedev(300, 123456))
    b.mknod(b"special/blk", "blk", 0o660, os.makedev(8, 1))
    b.mknod(b"special/bigblk", "blk", 0o640, os.makedev(4000, 1048575))

    # nested directories, 5 levels
    d = b"deep"
    for level in range(1, 6):
        d += b"/l%d" % level
        b.mkdir(d)
        b.create(d + b"/file", data=rng.randbytes(rng.randrange(0, 5000)))
    b.symlink(d + b"/up", b"../../../../..")
    b.mkfifo(d + b"/fifo")

    # a directory of many entries
    for i in range(prof["bigdir"]):
        rel = b"big/" + big_dir_name(rng, i)
        data = rng.randbytes(rng.randrange(1, 200)) if i % 10 == 0 else b""
        b.create(rel, data=data)
    b.mkdir(b"big/subdir")

    # odd names
    for n in ODD_NAMES:
        b.create(b"names/" + n, data=n)

    # owners
    b.create(b"owners/u1000", data=b"1000")
    b.chown(b"owners/u1000", 1000, 1000)
    b.create(b"owners/u100000", data=b"100000")
    b.chown(b"owners/u100000", 100000, 200000)
    b.create(b"owners/uhuge")
    b.chown(b"owners/uhuge", 4000000000, 3000000000)
    b.mkdir(b"owners/dir")
    b.chown(b"owners/dir", 123, 456)
    b.create(b"owners/dir/inner", data=b"inner")
    b.chown(b"owners/dir/inner", 65534, 65534)
    b.symlink(b"owners/lnk", b"u1000")
    b.chown(b"owners/lnk", 777, 888)
    b.mkfifo(b"owners/fifo")
    b.chown(b"owners/fifo", 1, 2)

    # modes
    for mode in (0o600, 0o000, 0o777, 0o4755, 0o2755, 0o6711, 0o1644):
        rel = b"modes/f%04o" % mode
        b.create(rel, data=rel)
        b.chmod(rel, mode)
    b.mkdir(b"modes/d0751")
    b.create(b"modes/d0751/inside", data=b"x")
    b.chmod(b"modes/d0751", 0o751)
    b.mkdir(b"modes/sticky")
    b.chmod(b"modes/sticky", 0o1777)
    b.mkdir(b"modes/d0000")
    b.chmod(b"modes/d0000", 0o000)
    b.mkdir(b"modes/sgid")
    b.chown(b"modes/sgid", 0, 1234)
    b.chmod(b"modes/sgid", 0o2775)
    b.create(b"modes/sgid/file", data=b"inherits gid")
    b.mkdir(b"modes/sgid/sub")                 # inherits gid and the setgid bit
    b.create(b"modes/sgid/sub/file", data=b"deeper")
    b.mkdir(b"modes/sgid/sub/subsub")
    b.symlink(b"modes/sgid/lnk", b"file")
    b.mkfifo(b"modes/sgid/fifo")

    # extended attributes
    xa = b"xattrs/f1"
    b.create(xa, data=b"with xattrs")
    b.setxattr(xa, "user.empty", b"")
    b.setxattr(xa, "user.one", b"1")
    b.setxattr(xa, "user.fifty", rng.randbytes(50))
    b.setxattr(xa, "user.big", rng.randbytes(300))
    b.mkdir(b"xattrs/dir")
    b.setxattr(b"xattrs/dir", "user.dirattr", b"d" * 40)
    b.create(b"xattrs/many")
    for i in range(15):
        b.setxattr(b"xattrs/many", "user.m%02d" % i, rng.randbytes(8))
    shared = rng.randbytes(200)
    for n in (b"xattrs/shared1", b"xattrs/shared2", b"xattrs/shared3"):
        b.create(n, data=n)
        b.setxattr(n, "user.s", shared)
    b.create(b"xattrs/trusted")
    b.setxattr(b"xattrs/trusted", "trusted.t", b"root only")
    b.symlink(b"xattrs/lnk", b"f1")
    b.setxattr(b"xattrs/lnk", "trusted.l", b"on a symlink")
    b.create(b"xattrs/unicode")
    b.setxattr(b"xattrs/unicode", "user.\u00fcn\u00efc\u00f6de", "v\u00e4lue".encode())
    b.create(b"xattrs/changed")
    b.setxattr(b"xattrs/changed", "user.r", rng.randbytes(100))
    b.setxattr(b"xattrs/changed", "user.r", rng.randbytes(10))
    b.setxattr(b"xattrs/changed", "user.gone", b"soon removed")
    b.removexattr(b"xattrs/changed", "user.gone")
    b.setxattr(b"xattrs/changed", "user.later", b"added after a removal")
    b.setxattr(b"links/h0", "user.on_hardlinked", b"seen through every name")

    # time stamps last: nothing above may change them afterwards
    names = sorted(b.model.names, key=lambda r: (-r.count(b"/"), r))
    specials = list(SPECIAL_TIMES)
    for rel in names:
        if rel == b"lost+found":
            continue
        if specials and rel.startswith((b"files/", b"links/", b"special/", b"modes/")):
            a = specials.pop()
            m = specials[-1] if specials else rng.randrange(0, 2**31) * 10**9
        else:
            a = rng.randrange(0, 2**31) * 10**9 + rng.randrange(10**9)
            m = rng.randrange(0, 2**31) * 10**9 + rng.randrange(10**9)
        b.utime(rel, a, m)


# ---------------------------------------------------------------------------
# manifests


def file_type(mode):
    for test, name in ((stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk")):
        if test(mode):
            return name
    return "other(%o)" % mode


def collect(root):
    """Manifest of everything below root: {relpath: record}; problems found
    while walking (duplicate names in a listing) are returned as well."""
    root = os.fsencode(root)
    out = {}
    problems = []

    def visit(rel, path):
        st = os.lstat(path)
        kind = file_type(st.st_mode)
        rec = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
               "gid": st.st_gid, "nlink": st.st_nlink, "size": st.st_size,
               "blocks": st.st_blocks, "ino": st.st_ino, "atime_ns": st.st_atime_ns,
               "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
               "rdev": st.st_rdev if kind in ("chr", "blk") else None}
        rec["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False)
                         for n in os.listxattr(path, follow_symlinks=False)}
        if kind == "lnk":
            rec["target"] = os.readlink(path)
        if kind == "reg":
            fd = os.open(path, os.O_RDONLY)
            try:
                # before reading: the kernel counts cached pages as data
                rec["seekmap"] = fs_support.seek_map(fd, st.st_size)
                rec["data"] = kh.pread_exact(fd, st.st_size + 1, 0)
            finally:
                os.close(fd)
        out[rel] = rec
        if kind == "dir":
            names = os.listdir(path)
            if len(names) != len(set(names)):
                dups = sorted(n for n in set(names) if names.count(n) > 1)
                problems.append("%r: readdir lists names more than once: %r"
                                % (rel, dups[:10]))
            for n in sorted(set(names)):
                visit(n if rel == b"." else rel + b"/" + n, os.path.join(path, n))

    visit(b".", root)
    return out, problems


FIELDS = ("type", "mode", "uid", "gid", "nlink", "size", "blocks", "ino", "rdev",
          "atime_ns", "mtime_ns", "xattrs", "target", "seekmap", "data")


def _show(field, value):
    if field == "mode" and value is not None:
        return "%o" % value
    if field == "data" and value is not None:
        return "<%d bytes>" % len(value)
    if field == "xattrs" and value is not None:
        return "{%s}" % ", ".join("%s: %r" % (k, v if len(v) <= 16 else
                                              v[:16] + b"...(%d)" % len(v))
                                  for k, v in sorted(value.items()))
    return repr(value)


def compare_manifests(expected, actual, what):
    """Every field of every name; returns a list of differences."""
    diffs = []
    for rel in sorted(set(expected) - set(actual)):
        diffs.append("%s: %r missing" % (what, rel))
    for rel in sorted(set(actual) - set(expected)):
        diffs.append("%s: %r unexpected" % (what, rel))
    for rel in sorted(set(expected) & set(actual)):
        e, a = expected[rel], actual[rel]
        for f in FIELDS:
            if e.get(f) != a.get(f):
                if f == "data":
                    diffs.append("%s: %r %s" % (what, rel, kh.describe_difference(
                        a["data"], e["data"])))
                else:
                    diffs.append("%s: %r %s %s, expected %s" % (
                        what, rel, f, _show(f, a.get(f)), _show(f, e.get(f))))
        if not a["ctime_ns"]:
            diffs.append("%s: %r has no ctime" % (what, rel))
    return diffs


def check_model(model, man, what):
    """The manifest against what the tree should hold."""
    diffs = []
    for rel in sorted(set(model.names) - set(man)):
        diffs.append("%s: %r missing" % (what, rel))
    for rel in sorted(set(man) - set(model.names)):
        diffs.append("%s: %r unexpected" % (what, rel))
    inodes = {}
    for rel in sorted(set(model.names) & set(man)):
        node, a = model.names[rel], man[rel]
        exp = {"type": node.kind, "mode": node.mode, "uid": node.uid, "gid": node.gid,
               "nlink": model.nlink(rel)}
        if node.kind != "dir":
            exp["size"] = node.size() or 0
            exp["xattrs"] = node.xattrs
        else:
            exp["xattrs"] = node.xattrs
        if node.kind in ("chr", "blk"):
            exp["rdev"] = node.rdev
        if node.kind == "lnk":
            exp["target"] = node.target
        if node.times is not None:
            exp["atime_ns"], exp["mtime_ns"] = node.times
        for f, v in exp.items():
            if f == "xattrs":
                # security.* labels may be added by the host; compare the rest
                got = {k: x for k, x in a["xattrs"].items()
                       if not k.startswith("security.")}
                if got != v:
                    diffs.append("%s: %r xattrs %s, expected %s"
                                 % (what, rel, _show(f, got), _show(f, v)))
            elif a.get(f) != v:
                diffs.append("%s: %r %s %s, expected %s"
                             % (what, rel, f, _show(f, a.get(f)), _show(f, v)))
        if node.kind == "reg" and a.get("data") != bytes(node.data):
            diffs.append("%s: %r %s" % (what, rel, kh.describe_difference(
                a["data"], bytes(node.data))))
        if not a["ctime_ns"]:
            diffs.append("%s: %r has no ctime" % (what, rel))
        inodes.setdefault(id(node), set()).add(a["ino"])
    seen = {}
    for key, inos in inodes.items():
        if len(inos) != 1:
            diffs.append("%s: hard links of one file show inodes %r" % (what, sorted(inos)))
        for ino in inos:
            if ino in seen and seen[ino] != key:
                diffs.append("%s: inode %d shared by unrelated names" % (what, ino))
            seen[ino] = key
    return diffs


def report(problems):
    if problems:
        pytest.fail("%d problems:\n%s" % (len(problems), "\n".join(problems[:80])),
                    pytrace=False)


def build(root, model, rng, bs, extents, prof):
    old = os.umask(UMASK)
    try:
        build_tree(Builder(root, model, rng, bs, extents), prof)
    finally:
        os.umask(old)


def fsck_problems(image, when):
    rc, out = fs_support.fsck(image)
    return [] if rc == 0 else ["e2fsck -fn %s (%s) exit %d:\n%s" % (image, when, rc, out)]


def stop_problems(m):
    rc = m.stop()
    return [] if rc == 0 else ["kaiofs exited with %r at unmount; stderr:\n%s" % (rc, m.stderr)]


# ---------------------------------------------------------------------------
# tests

VOLUMES = [
    pytest.param("ext4", 256 * MiB, (), "full", id="ext4"),
    pytest.param("ext4", 256 * MiB, ("-b", "4096"), "small", id="ext4-4k"),
    pytest.param("ext3", 64 * MiB, (), "small", id="ext3"),
    pytest.param("ext2", 64 * MiB, (), "small", id="ext2"),
]


@pytest.mark.parametrize("fstype,size,args,profile", VOLUMES)
def test_tree_written_by_kaiofs_read_by_kernel(volumes, workdir, rng, fstype, size, args,
                                               profile):
    dev = volumes.make(fstype, size=size, args=args)
    bs = block_size(dev.path)
    model = Model()
    m = volumes.mount(dev)
    build(m.mountpoint, model, rng, bs, fstype == "ext4", PROFILES[profile])
    kman, problems = collect(m.mountpoint)
    problems += check_model(model, kman, "kaiofs")
    problems += stop_problems(m)
    problems += fsck_problems(dev.path, "after kaiofs built the tree")
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kern, p = collect(k)
    problems += p
    problems += compare_manifests(kman, kern, "kernel vs kaiofs")
    problems += check_model(model, kern, "kernel")
    report(problems)


@pytest.mark.parametrize("fstype,size,args,profile", VOLUMES)
def test_tree_written_by_kernel_read_and_changed_by_kaiofs(volumes, workdir, rng, fstype,
                                                           size, args, profile):
    dev = volumes.make(fstype, size=size, args=args)
    bs = block_size(dev.path)
    model = Model()
    kdir = os.path.join(workdir, "kernel")
    with fs_support.kernel_mount(dev.path, kdir, readonly=False) as k:
        build(k, model, rng, bs, fstype == "ext4", PROFILES[profile])
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, kdir) as k:
        kern, p = collect(k)
    # the kernel must agree with the model, or the model is wrong
    report(p + check_model(model, kern, "kernel (reference)"))
    big_indexed = inode_flags(dev.path, "/big") & EXT4_INDEX_FL
    assert big_indexed, "the kernel did not make /big an indexed (htree) directory"

    m = volumes.mount(dev)
    kman, problems = collect(m.mountpoint)
    problems += compare_manifests(kern, kman, "kaiofs vs kernel")
    problems += check_model(model, kman, "kaiofs")

    # change it through kaiofs
    root = os.fsencode(m.mountpoint)
    b = Builder(m.mountpoint, model, rng, bs, fstype == "ext4")
    old = os.umask(UMASK)
    removed = []
    try:
        # a small file grows past the blocks the inode maps directly (for
        # ext2/3: a new indirect block), a sparse one gets data far out
        appended = [b"deep/l1/file", b"sparse/grown"]
        appended += [r for r in sorted(model.names) if r.startswith(b"files/")
                     and model.nlink(r) == 1 and model.names[r].size()][:2]
        for rel in appended:
            b.append(rel, rng.randbytes(rng.randrange(14 * bs, 50000 + 14 * bs)))
            model.names[rel].times = None
        big = sorted(r for r in model.names if r.startswith(b"big/") and r != b"big/subdir")
        n = max(50, len(big) // 15)
        for rel in rng.sample(big, n):
            os.unlink(os.path.join(root, rel))
            model.remove(rel)
            removed.append(rel)
        for i in range(n):
            rel = b"big/" + big_dir_name(rng, i, prefix=b"new")
            b.create(rel, data=rng.randbytes(rng.randrange(0, 3000)) if i % 3 == 0 else b"")
        left = sorted(r for r in model.names if r.startswith(b"big/e"))
        for i, rel in enumerate(rng.sample(left, 30)):
            new = b"big/renamed%03d-" % i + rel[4:40]
            os.rename(os.path.join(root, rel), os.path.join(root, new))
            model.names[new] = model.names.pop(rel)
            removed.append(rel)
        b.mkdir(b"big/newdir")
        b.create(b"big/newdir/f", data=b"f")
        model.names[b"big"].times = None
    finally:
        os.umask(old)
    kman2, p = collect(m.mountpoint)
    problems += p + check_model(model, kman2, "kaiofs after changes")
    problems += stop_problems(m)
    problems += fsck_problems(dev.path, "after kaiofs changed the kernel's tree")
    with fs_support.kernel_mount(dev.path, kdir) as k:
        kern2, p = collect(k)
        for rel in removed:
            if os.path.lexists(os.path.join(os.fsencode(k), rel)):
                problems.append("kernel: removed name %r can still be looked up" % rel)
    problems += p
    problems += compare_manifests(kman2, kern2, "kernel vs kaiofs after changes")
    problems += check_model(model, kern2, "kernel after kaiofs changes")
    report(problems)
