"""Raw mode file semantics, options and the daemon's life cycle."""

import errno
import os
import random
import signal
import stat
import subprocess
import threading

import pytest

import kaiofs_helpers as kh
from kaiofs_helpers import BLOCK, MiB, tmo



def clear_mount_and_pids(mnt, pids):
    """Whatever a test left: the mount goes, and its processes get 10 s to
    exit before they are killed."""
    if kh.fuse_mounted_at(mnt):
        kh.force_unmount(mnt)
    for p in pids:
        if kh.wait_for(lambda: not kh.pid_alive(p), tmo(10)) is False:
            os.kill(p, signal.SIGKILL)

def _expect_errno(expected, func, *args):
    """Call func(*args); it must fail with one of the expected errno values."""
    if isinstance(expected, int):
        expected = (expected,)
    try:
        result = func(*args)
    except OSError as e:
        assert e.errno in expected, "%s%r: expected %s, got %s" % (
            func.__name__, args[1:] if len(args) > 1 else args,
            "/".join(errno.errorcode[x] for x in expected),
            errno.errorcode.get(e.errno, e.errno))
        return e
    pytest.fail("%s%r succeeded (returned %r), expected %s"
                % (func.__name__, args[1:], result,
                   "/".join(errno.errorcode[x] for x in expected)), pytrace=False)


def _quick_io(path, model, rng, nops=200, max_len=300 * 1024):
    """A short random mix of writes and reads checked against model."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = len(model)
        for _ in range(nops):
            length = rng.randint(1, max_len)
            off = rng.randrange(0, size - length + 1)
            if rng.random() < 0.5:
                data = rng.randbytes(length)
                kh.pwrite_all(fd, data, off)
                model[off:off + length] = data
            else:
                got = kh.pread_exact(fd, length, off)
                kh.assert_same_data(got, model[off:off + length], "read", off)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# the directory and the file


def test_listing_and_attributes(device, mounter):
    before = kh.sha256_file(device.backing)
    m = mounter.mount(device)
    assert os.listdir(m.mountpoint) == [device.name]
    assert stat.S_ISDIR(os.stat(m.mountpoint).st_mode)
    st = os.stat(m.file)
    assert stat.S_ISREG(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o644, oct(st.st_mode)
    assert st.st_size == device.size
    assert st.st_nlink >= 1
    _expect_errno(errno.ENOENT, os.stat, os.path.join(m.mountpoint, "nope"))
    with pytest.raises(OSError):
        fd = os.open(os.path.join(m.mountpoint, "newfile"), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    assert os.listdir(m.mountpoint) == [device.name]
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(device.backing) == before


@pytest.mark.parametrize("fsname", [None, "mydisk"])
def test_mount_table_names(make_device, mounter, fsname):
    """The mount table shows the device (absolute, or the user's fsname=) as
    the source and fuse.kaiofs as the type, for df, findmnt and umount."""
    dev = make_device("file", 4 * MiB, name="with,comma.img")
    opts = ("raw",) + (("fsname=" + fsname,) if fsname else ())
    m = mounter.mount(dev, options=opts)
    found = [(t, src) for mnt, t, src in kh.mount_table() if mnt == m.mountpoint]
    assert found == [("fuse.kaiofs", fsname or os.path.realpath(dev.path))], found
    assert m.stop() == 0, m.stderr


@pytest.mark.parametrize("image_size", [64 * MiB + 1000, 3 * BLOCK + 5, 5 * BLOCK],
                         ids=["64M+1000", "12K+5", "20K"])
def test_image_size_rounded_down(make_device, mounter, image_size):
    size = image_size // BLOCK * BLOCK
    dev = make_device("file", size=size, image_size=image_size, name="disk.img")
    before = kh.read_file(dev.backing)
    m = mounter.mount(dev)
    assert os.listdir(m.mountpoint) == ["disk.img"]
    assert os.stat(m.file).st_size == size
    fd = os.open(m.file, os.O_RDWR)
    try:
        assert os.pread(fd, 10, size) == b""
        assert os.pwrite(fd, b"A" * 20, size - 10) == 10
        _expect_errno(errno.ENOSPC, os.pwrite, fd, b"B" * 10, size)
        assert os.pread(fd, 100, size - 10) == b"A" * 10
    finally:
        os.close(fd)
    assert m.stop() == 0, m.stderr
    after = kh.read_file(dev.backing)
    assert len(after) == image_size, "image file size changed"
    expected = bytearray(before)
    expected[size - 10:size] = b"A" * 10
    kh.assert_same_data(after, expected, "image (the tail beyond the rounded size "
                        "must stay untouched)")


def test_loop_device_name_and_size(make_device, mounter):
    dev = make_device("loop", size=16 * MiB)
    m = mounter.mount(dev)
    assert dev.name.startswith("loop")
    assert os.listdir(m.mountpoint) == [dev.name]
    assert os.stat(m.file).st_size == 16 * MiB
    assert m.stop() == 0, m.stderr


# --------------------------------------------------------------------------
# end of device


def test_end_of_device(device, mounter):
    size = device.size
    model = bytearray(device.read_all())
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR)
    dfd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    try:
        # reads stop at the end
        assert os.pread(fd, 100, size) == b""
        assert os.pread(fd, 100, size + 12345) == b""
        assert os.pread(fd, 5000, size - 1000) == bytes(model[-1000:])
        assert kh.direct_pread(dfd, 2 * BLOCK, size - BLOCK) == bytes(model[-BLOCK:])
        assert kh.direct_pread(dfd, BLOCK, size) == b""

        # writes at or past the end: ENOSPC
        _expect_errno(errno.ENOSPC, os.pwrite, fd, b"x" * 10, size)
        _expect_errno(errno.ENOSPC, os.pwrite, fd, b"x" * 10, size + 5 * BLOCK + 7)
        _expect_errno(errno.ENOSPC, kh.direct_pwrite, dfd, b"y" * BLOCK, size)

        # straddling the end: short
        data = os.urandom(200)
        assert os.pwrite(fd, data, size - 100) == 100
        model[size - 100:] = data[:100]
        data = os.urandom(2 * BLOCK)
        assert kh.direct_pwrite(dfd, data, size - BLOCK) == BLOCK
        model[size - BLOCK:] = data[:BLOCK]
        data = os.urandom(3000)
        assert os.pwrite(fd, data, size - 1234) == 1234
        model[size - 1234:] = data[:1234]

        assert os.fstat(fd).st_size == size
        assert os.pread(fd, 2 * BLOCK, size - BLOCK) == bytes(model[-BLOCK:])
        # seeking and writing with write() at the end
        os.lseek(fd, 0, os.SEEK_END)
        assert os.lseek(fd, 0, os.SEEK_CUR) == size
        _expect_errno(errno.ENOSPC, os.write, fd, b"z")
    finally:
        os.close(dfd)
        os.close(fd)
    assert m.stop() == 0, m.stderr
    assert os.path.getsize(device.backing) == size, "image file grew or shrank"
    kh.assert_same_data(device.read_all(), model, "image after unmount")


# --------------------------------------------------------------------------
# sync calls


def test_fsync_fdatasync_and_dsync(device, mounter):
    model = bytearray(device.read_all())
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR)
    try:
        data = os.urandom(10000)
        kh.pwrite_all(fd, data, 5555)
        model[5555:5555 + len(data)] = data
        os.fsync(fd)
        os.fdatasync(fd)
        assert os.pread(fd, len(data), 5555) == data
    finally:
        os.close(fd)

    for flag, name in ((os.O_DSYNC, "O_DSYNC"), (os.O_SYNC, "O_SYNC"),
                       (os.O_DSYNC | os.O_DIRECT, "O_DSYNC|O_DIRECT")):
        fd = os.open(m.file, os.O_RDWR | flag)
        try:
            if flag & os.O_DIRECT:
                off = 7 * MiB
                data = os.urandom(8 * BLOCK)
                assert kh.direct_pwrite(fd, data, off) == len(data), name
            else:
                off = 3 * MiB + 77 + (flag & 0xfff)
                data = os.urandom(70000)
                kh.pwrite_all(fd, data, off)
            model[off:off + len(data)] = data
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(m.file, "rb") as f:
            f.seek(off)
            assert f.read(len(data)) == data, name

    # fsync of a read-only descriptor and of the directory
    fd = os.open(m.file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.sync()
    assert m.stop() == 0, m.stderr
    kh.assert_same_data(device.read_all(), model, "image after unmount")


# --------------------------------------------------------------------------
# truncate


def test_truncate(device, mounter):
    before = kh.sha256_file(device.backing)
    size = device.size
    m = mounter.mount(device)
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        for other in (size - BLOCK, size + BLOCK, 0, size - 1, size + 1):
            _expect_errno(errno.EINVAL, os.ftruncate, fd, other)
        assert os.fstat(fd).st_size == size
    finally:
        os.close(fd)
    os.truncate(m.file, size)
    _expect_errno(errno.EINVAL, os.truncate, m.file, 1)
    assert os.stat(m.file).st_size == size
    assert m.stop() == 0, m.stderr
    assert os.path.getsize(device.backing) == size
    assert kh.sha256_file(device.backing) == before


# --------------------------------------------------------------------------
# read-only


def test_read_only(device, mounter):
    before = device.read_all()
    m = mounter.mount(device, options=("raw", "ro"))
    st = os.stat(m.file)
    assert stat.S_IMODE(st.st_mode) == 0o444, oct(st.st_mode)
    assert st.st_size == device.size
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_DIRECT):
        try:
            fd = os.open(m.file, flags)
        except OSError as e:
            assert e.errno == errno.EROFS, "open(%#o): %s" % (flags, e)
        else:
            try:
                _expect_errno(errno.EROFS, os.pwrite, fd, b"x" * BLOCK, 0)
            finally:
                os.close(fd)
    _expect_errno((errno.EROFS,), os.truncate, m.file, device.size)
    fd = os.open(m.file, os.O_RDONLY)
    try:
        for off, length in ((0, 100), (12345, 1 * MiB), (device.size - 5000, 10000)):
            got = os.pread(fd, length, off)
            kh.assert_same_data(got, before[off:off + length], "read-only read", off)
    finally:
        os.close(fd)
    assert m.stop() == 0, m.stderr
    kh.assert_same_data(device.read_all(), before, "image after a read-only mount")


# --------------------------------------------------------------------------
# life cycle


@pytest.mark.parametrize("how", ["fusermount", "SIGTERM", "SIGINT"])
def test_exit_status_after_unmount(file_device, mounter, how):
    m = mounter.mount(file_device)
    with open(m.file, "rb") as f:
        assert len(f.read(BLOCK)) == BLOCK
    if how == "fusermount":
        r = m.unmount()
        assert r.returncode == 0, r.stderr
    else:
        m.signal(getattr(signal, how))
    rc = m.wait(timeout=20)
    assert rc is not None, "kaiofs still running 20s after %s" % how
    assert rc == 0, "exit status %d after %s; stderr:\n%s" % (rc, how, m.stderr)
    assert kh.wait_for(lambda: not m.mounted(), tmo(10)), "still mounted after %s" % how


def test_remount_keeps_data(device, mounter):
    model = bytearray(device.read_all())
    m = mounter.mount(device)
    data = os.urandom(123457)
    fd = os.open(m.file, os.O_RDWR)
    try:
        kh.pwrite_all(fd, data, 999)
    finally:
        os.close(fd)
    model[999:999 + len(data)] = data
    assert m.stop() == 0, m.stderr
    m2 = mounter.mount(device, mountpoint=m.mountpoint)
    with open(m2.file, "rb") as f:
        kh.assert_same_data(f.read(), model, "data after remount")
    assert m2.stop() == 0, m2.stderr
    kh.assert_same_data(device.read_all(), model, "image after unmount")


def test_daemonizes_without_f(kaiofs_bin, file_device, workdir, rng):
    mnt = os.path.join(workdir, "mnt-bg")
    os.mkdir(mnt)
    model = bytearray(file_device.read_all())
    out = open(os.path.join(workdir, "bg.out"), "wb")
    err = open(os.path.join(workdir, "bg.err"), "wb")
    argv = [kaiofs_bin, "-o", "raw", file_device.path, mnt]
    pids = []
    try:
        # output goes to files: a daemon that kept a pipe open must not hang us
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=tmo(30))
        except subprocess.TimeoutExpired:
            pytest.fail("kaiofs without -f did not return within 30s")
        assert rc == 0, "kaiofs without -f exited %d: %s" % (
            rc, kh.read_file(err.name).decode(errors="replace"))
        assert kh.fuse_mounted_at(mnt), "not mounted when the foreground process returned"
        pids = kh.find_pids_by_cmdline(kaiofs_bin, mnt) or kh.find_pids_by_cmdline(mnt)
        assert pids, "no daemon process found"
        _quick_io(os.path.join(mnt, file_device.name), model, rng, nops=50)
        r = kh.fusermount(mnt)
        assert r.returncode == 0, r.stderr
        assert kh.wait_for(lambda: not any(kh.pid_alive(p) for p in pids), tmo(20)), \
            "daemon %r still running 20s after unmount" % pids
        assert not kh.fuse_mounted_at(mnt)
    finally:
        clear_mount_and_pids(mnt, pids)
        out.close()
        err.close()
    kh.assert_same_data(file_device.read_all(), model, "image after unmount")


def test_daemon_lets_go_of_its_callers_output(kaiofs_bin, file_device, workdir):
    """`kaiofs ... 2>&1 | cat` returns once mounted: the detached daemon
    keeps no descriptor of the pipes it was started with (it logs to
    syslog from then on)."""
    mnt = os.path.join(workdir, "mnt-pipe")
    os.mkdir(mnt)
    pids = []
    try:
        try:
            r = subprocess.run([kaiofs_bin, "-o", "raw", file_device.path, mnt],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=tmo(30), start_new_session=True)
        except subprocess.TimeoutExpired:
            pytest.fail("the pipes of kaiofs without -f stayed open after it returned")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"" and r.stderr == b"", (r.stdout, r.stderr)
        assert kh.fuse_mounted_at(mnt)
        pids = kh.find_pids_by_cmdline(kaiofs_bin, mnt)
        assert pids, "no daemon process found"
        for pid in pids:
            for fd in os.listdir("/proc/%d/fd" % pid):
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                assert not target.startswith("pipe:"), \
                    "daemon %d holds a pipe on fd %s" % (pid, fd)
        r = kh.fusermount(mnt)
        assert r.returncode == 0, r.stderr
        assert kh.wait_for(lambda: not any(kh.pid_alive(p) for p in pids), tmo(20)), \
            "daemon %r still running 20s after unmount" % pids
    finally:
        clear_mount_and_pids(mnt, pids)


# --------------------------------------------------------------------------
# options


@pytest.mark.parametrize("opts,arena", [
    (("arena=8M",), 8 * MiB),
    (("arena=4096K",), 4 * MiB),
    pytest.param(("arena=1G",), 1 << 30, marks=pytest.mark.slow),
    (("queue_depth=1",), None),
    (("queue_depth=1", "reapers=4"), None),
    (("queue_depth=512", "reapers=2", "arena=16M"), 16 * MiB),
    (("allow_other",), None),
], ids=lambda v: ",".join(v) if isinstance(v, tuple) else "")
def test_options_accepted(file_device, mounter, kaiofs_stat_bin, rng, opts, arena):
    device = file_device
    model = bytearray(device.read_all())
    m = mounter.mount(device, options=("raw",) + tuple(opts))
    stop = threading.Event()
    failures = []
    seeds = [rng.randrange(1 << 31) for _ in range(2)]

    def worker(tid):
        r = random.Random(seeds[tid])
        region = device.size // 2
        sub = bytearray(model[tid * region:(tid + 1) * region])
        try:
            fd = os.open(m.file, os.O_RDWR)
            try:
                for _ in range(120):
                    if stop.is_set():
                        return
                    length = r.randint(1, 600 * 1024)
                    off = r.randrange(0, region - length + 1)
                    if r.random() < 0.5:
                        data = r.randbytes(length)
                        kh.pwrite_all(fd, data, tid * region + off)
                        sub[off:off + length] = data
                    else:
                        got = kh.pread_exact(fd, length, tid * region + off)
                        msg = kh.describe_difference(got, sub[off:off + length],
                                                     tid * region + off)
                        assert msg is None, msg
            finally:
                os.close(fd)
        except BaseException as e:
            stop.set()
            failures.append("thread %d: %s: %s" % (tid, type(e).__name__, e))
        model[tid * region:(tid + 1) * region] = sub

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=tmo(120))
    assert not any(t.is_alive() for t in threads), "I/O hung"
    assert not failures, failures
    if arena is not None:
        s = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
        assert s["arena"]["size"] == arena, s["arena"]
    assert m.stop() == 0, m.stderr
    kh.assert_same_data(device.read_all(), model, "image after unmount")


def test_debug_flag(file_device, mounter):
    m = mounter.mount(file_device, extra_args=["-d"])
    with open(m.file, "rb") as f:
        assert f.read(100) == file_device.read(0, 100)
    assert m.stop() == 0, m.stderr
    assert m.stderr.strip(), "-d printed no debug output"


def test_two_mounts_at_once(make_device, mounter):
    a = make_device("file", size=8 * MiB, name="a.img")
    b = make_device("file", size=8 * MiB, name="b.img")
    ma = mounter.mount(a)
    mb = mounter.mount(b)
    model_a, model_b = bytearray(a.read_all()), bytearray(b.read_all())
    da, db = b"\xaa" * 50000, b"\xbb" * 50000
    for m, model, data in ((ma, model_a, da), (mb, model_b, db)):
        fd = os.open(m.file, os.O_RDWR)
        try:
            kh.pwrite_all(fd, data, 4000)
        finally:
            os.close(fd)
        model[4000:4000 + len(data)] = data
    assert os.listdir(ma.mountpoint) == ["a.img"]
    assert os.listdir(mb.mountpoint) == ["b.img"]
    assert ma.stop() == 0, ma.stderr
    with open(mb.file, "rb") as f:
        kh.assert_same_data(f.read(), model_b, "second mount after the first unmounted")
    assert mb.stop() == 0, mb.stderr
    kh.assert_same_data(a.read_all(), model_a, "image a")
    kh.assert_same_data(b.read_all(), model_b, "image b")
