"""Filesystem mode, volume-level behaviour: the superblock's clean state,
read-only mounts, volumes kaiofs must refuse, running out of space, file
size limits, kill -9 under load, permissions for other users, ext2/ext3
volumes and the statistics."""

import errno
import os
import pickle
import random
import re
import signal
import stat
import subprocess
import threading
import traceback

import pytest

import fs_support
import kaiofs_helpers as kh
from kaiofs_helpers import MiB

NOBODY = 65534
TiB = 1 << 40
# ext4 extent files: at most 2^32 - 1 blocks
EXT4_MAX_4K = ((1 << 32) - 1) * 4096


# --------------------------------------------------------------------------
# helpers


def dumpe2fs(image):
    """The superblock fields printed by dumpe2fs -h, as a dict."""
    r = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True,
                       timeout=kh.tmo(60))
    assert r.returncode == 0, "dumpe2fs -h %s failed: %s" % (image, r.stderr)
    fields = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def debugfs_w(image, request):
    r = subprocess.run(["debugfs", "-w", "-R", request, image], capture_output=True,
                       text=True, timeout=kh.tmo(60))
    assert r.returncode == 0, "debugfs -w -R %r failed: %s" % (request, r.stderr)


def mount_options(path):
    """Per-mount options (e.g. ['ro', 'nosuid', ...]) of the innermost mount at path."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4]) == path:
                found = parts[5].split(",")
    return found


def errno_of(fn, *args, **kwargs):
    """0 when fn succeeds, else the errno name of the OSError it raised."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return 0


class ChildFailed(Exception):
    pass


def run_as(fn, uid=NOBODY, gid=NOBODY, groups=()):
    """Run fn() in a forked child with the given credentials; returns what
    fn returned (it must be picklable). An exception in the child is raised
    here as ChildFailed with its traceback."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(rfd)
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            result = ("ok", fn())
        except BaseException:
            result = ("exc", traceback.format_exc())
        try:
            data = pickle.dumps(result)
            view = memoryview(data)
            while view:
                n = os.write(wfd, view)
                view = view[n:]
        except BaseException:
            status = 1
        os._exit(status)
    os.close(wfd)
    chunks = []
    try:
        with os.fdopen(rfd, "rb") as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed("child (uid %d) died with wait status %d" % (uid, status))
    kind, value = pickle.loads(b"".join(chunks))
    if kind != "ok":
        raise ChildFailed("in the child running as uid %d:\n%s" % (uid, value))
    return value


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def check_files(root, files, what):
    for name, data in sorted(files.items()):
        path = os.path.join(root, name)
        assert os.path.isfile(path), "%s: %s is missing" % (what, name)
        kh.assert_same_data(kh.read_file(path), data, "%s: %s" % (what, name))


def stop_clean(m, dev):
    """Unmount with fusermount3 -u: exit 0, then e2fsck -fn clean."""
    rc = m.stop()
    assert rc == 0, "kaiofs exited with %r; stderr:\n%s" % (rc, m.stderr)
    fs_support.assert_fsck_clean(dev.path)


def stderr_lines(m):
    return [l for l in m.stderr.splitlines() if l.strip()]


def nobody_can_use_dev_fuse():
    def probe():
        try:
            os.close(os.open("/dev/fuse", os.O_RDWR))
        except OSError as e:
            return e.errno
        return 0
    return run_as(probe) == 0


def populate(volumes, dev, rng, count=6):
    """Write a few files with a kaiofs mount; returns {name: data}."""
    m = volumes.mount(dev)
    files = {}
    os.mkdir(os.path.join(m.mountpoint, "dir"))
    for i in range(count):
        name = os.path.join("dir" if i % 2 else "", "file%d" % i)
        data = rng.randbytes(rng.randrange(1, 200000))
        write_file(os.path.join(m.mountpoint, name), data)
        files[name] = data
    stop_clean(m, dev)
    return files


def assert_read_only_mount(mnt, files):
    """Everything reads back; every kind of change fails with EROFS."""
    opts = mount_options(mnt)
    assert opts is not None and "ro" in opts, "mount options of %s: %r" % (mnt, opts)
    check_files(mnt, files, "read-only mount")
    some = os.path.join(mnt, sorted(files)[0])
    got = {
        "open O_WRONLY": errno_of(lambda: os.close(os.open(some, os.O_WRONLY))),
        "open O_RDWR": errno_of(lambda: os.close(os.open(some, os.O_RDWR))),
        "create": errno_of(lambda: os.close(os.open(os.path.join(mnt, "new"),
                                                    os.O_WRONLY | os.O_CREAT, 0o644))),
        "mkdir": errno_of(os.mkdir, os.path.join(mnt, "newdir")),
        "unlink": errno_of(os.unlink, some),
        "rename": errno_of(os.rename, some, os.path.join(mnt, "renamed")),
        "symlink": errno_of(os.symlink, "x", os.path.join(mnt, "sym")),
        "link": errno_of(os.link, some, os.path.join(mnt, "hard")),
        "chmod": errno_of(os.chmod, some, 0o600),
        "truncate": errno_of(os.truncate, some, 0),
        "utime": errno_of(os.utime, some, (1, 1)),
        "setxattr": errno_of(os.setxattr, some, "user.k", b"v"),
    }
    want = {k: "EROFS" for k in got}
    assert got == want
    check_files(mnt, files, "read-only mount after the attempts")


# --------------------------------------------------------------------------
# 1. clean state


@pytest.mark.parametrize("how", ["fusermount", "SIGTERM", "SIGINT", "SIGHUP"])
def test_clean_state_while_mounted_and_after_exit(volumes, workdir, rng, how):
    dev = volumes.make("ext4")
    before = dumpe2fs(dev.path)
    assert before["Filesystem state"] == "clean", before
    count0 = int(before["Mount count"])
    m = volumes.mount(dev)
    during = dumpe2fs(dev.path)
    assert during["Filesystem state"] == "not clean", during
    assert int(during["Mount count"]) == count0 + 1, during
    data = rng.randbytes(300000)
    write_file(os.path.join(m.mountpoint, "f"), data)
    os.mkdir(os.path.join(m.mountpoint, "d"))
    if how == "fusermount":
        rc = m.stop()
    else:
        m.signal(getattr(signal, how))
        rc = m.wait(timeout=30)
    assert rc == 0, "kaiofs exit status %r after %s; stderr:\n%s" % (rc, how, m.stderr)
    assert kh.wait_for(lambda: not m.mounted(), kh.tmo(10)), \
        "%s still mounted after the daemon exited" % m.mountpoint
    after = dumpe2fs(dev.path)
    assert after["Filesystem state"] == "clean", after
    assert int(after["Mount count"]) == count0 + 1, after
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, {"f": data}, "kernel")
        assert os.path.isdir(os.path.join(k, "d"))


# --------------------------------------------------------------------------
# 2. read-only


def test_ro_option_changes_nothing(volumes, rng):
    dev = volumes.make("ext4")
    files = populate(volumes, dev, rng)
    digest = kh.sha256_file(dev.path)
    m = volumes.mount(dev, options=("ro",))
    assert dumpe2fs(dev.path)["Filesystem state"] == "clean"
    assert_read_only_mount(m.mountpoint, files)
    rc = m.stop()
    assert rc == 0, m.stderr
    assert kh.sha256_file(dev.path) == digest, "a read-only mount changed the image"
    fs_support.assert_fsck_clean(dev.path)


def _drop_dac_prefix():
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--inh-caps=" + caps, "--bounding-set=" + caps, "--"]


OTHER_USER = 65533


def test_unprivileged_user_mounts_own_image(volumes, mounter, workdir, kaiofs_bin,
                                            kaiofs_stat_bin):
    """A user mounts an image they own with the default options (the arena
    shrinks to their memlock limit); without allow_other nobody else, not
    even root, can enter the mount; what they wrote is on the volume."""
    if not nobody_can_use_dev_fuse():
        pytest.skip("/dev/fuse is not usable by uid %d here (mode %o)"
                    % (NOBODY, stat.S_IMODE(os.stat("/dev/fuse").st_mode)))
    dev = volumes.make("ext4", args=("-E", "root_owner=%d:%d" % (NOBODY, NOBODY)))
    os.chown(dev.path, NOBODY, NOBODY)
    mnt = mounter.mountpoint()
    os.chown(mnt, NOBODY, NOBODY)
    prefix = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    m = mounter.mount(dev, options=(), mountpoint=mnt, prefix=prefix)
    assert stderr_lines(m) == [], m.stderr
    files = {"a": os.urandom(100000), "d/b": b"bee" * 1000}

    def write_as_owner():
        os.mkdir(os.path.join(mnt, "d"))
        for name, data in files.items():
            write_file(os.path.join(mnt, name), data)
        return [os.stat(os.path.join(mnt, n)).st_uid for n in sorted(files)]

    assert run_as(write_as_owner) == [NOBODY, NOBODY]
    assert run_as(lambda: errno_of(os.listdir, mnt), uid=OTHER_USER, gid=OTHER_USER) \
        == "EACCES"
    assert errno_of(os.stat, os.path.join(mnt, "a")) == "EACCES"
    arena = kh.get_stats(kaiofs_stat_bin, mnt)["arena"]["size"]
    if not kh.SANITIZER_BUILD:  # mlock is a no-op there: no limit to fit
        assert arena <= 8 * kh.MiB, arena
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        check_files(k, files, "kernel's view")
        assert os.stat(os.path.join(k, "d", "b")).st_uid == NOBODY


@pytest.mark.parametrize("how", ["nobody", "root-without-dac-override", "read-only-bind"])
def test_read_only_image_file_mounts_read_only(volumes, mounter, workdir, rng, kaiofs_bin, how):
    """An image kaiofs cannot open for writing is mounted read-only, with a
    one-line notice saying so."""
    dev = volumes.make("ext4")
    files = populate(volumes, dev, rng)
    image = dev.path
    prefix = []
    options = []
    as_nobody = how == "nobody"
    bind = None
    try:
        if how == "read-only-bind":
            # the image seen through a read-only bind mount: open(O_RDWR) gives EROFS
            bind = os.path.join(workdir, "robind")
            os.mkdir(bind)
            src = os.path.join(workdir, "imgdir")
            os.mkdir(src)
            os.rename(image, os.path.join(src, "vol.img"))
            image = os.path.join(src, "vol.img")
            subprocess.run(["mount", "--bind", src, bind], check=True, timeout=60)
            subprocess.run(["mount", "-o", "remount,ro,bind", bind], check=True, timeout=60)
            kaiofs_image = os.path.join(bind, "vol.img")
        else:
            os.chmod(image, 0o444)
            kaiofs_image = image
        if as_nobody:
            if not nobody_can_use_dev_fuse():
                pytest.skip("/dev/fuse is not usable by uid %d here (mode %o)"
                            % (NOBODY, stat.S_IMODE(os.stat("/dev/fuse").st_mode)))
            assert run_as(lambda: os.access(kaiofs_bin, os.X_OK)), \
                "uid %d cannot run %s" % (NOBODY, kaiofs_bin)
            prefix = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                      "--clear-groups"]
            # an unprivileged process may lock only 8 MiB by default
            options = ["arena=4M"]
        elif how == "root-without-dac-override":
            prefix = _drop_dac_prefix()
        digest = kh.sha256_file(image)
        mnt = mounter.mountpoint()
        if as_nobody:
            os.chown(mnt, NOBODY, NOBODY)
        m = mounter.mount(kaiofs_image, options=options, mountpoint=mnt, prefix=prefix)
        lines = stderr_lines(m)
        assert len(lines) == 1 and lines[0].startswith("kaiofs: ") and \
            re.search(r"read-only", lines[0]), \
            "expected one 'kaiofs: ... read-only' notice, got %r" % m.stderr
        if as_nobody:
            run_as(lambda: assert_read_only_mount(mnt, files))
        else:
            assert_read_only_mount(mnt, files)
        rc = m.stop()
        assert rc == 0, m.stderr
        assert kh.sha256_file(image) == digest, "the image changed"
        fs_support.assert_fsck_clean(image)
    finally:
        if bind is not None:
            mounter.cleanup()
            kh.force_unmount(bind)


def test_read_only_loop_device_mounts_read_only(volumes, mounter, rng):
    dev = volumes.make("ext4")
    files = populate(volumes, dev, rng)
    digest = kh.sha256_file(dev.path)
    r = subprocess.run(["losetup", "--find", "--show", "--read-only", dev.path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loop = r.stdout.strip()
    try:
        m = mounter.new(loop, options=())
        try:
            m.start()
        except kh.MountFailed as e:
            pytest.fail("a read-only loop device was not mounted read-only: %s" % e,
                        pytrace=False)
        lines = stderr_lines(m)
        assert len(lines) == 1 and lines[0].startswith("kaiofs: ") and \
            re.search(r"read-only", lines[0]), m.stderr
        assert_read_only_mount(m.mountpoint, files)
        assert m.stop() == 0, m.stderr
    finally:
        mounter.cleanup()
        err = kh.losetup_detach(loop)
        assert err is None, err
    assert kh.sha256_file(dev.path) == digest


# --------------------------------------------------------------------------
# 3. refusals


def _refuse(kaiofs_bin, image, mnt, options=(), pattern="."):
    digest = kh.sha256_file(image)
    argv = [kaiofs_bin, "-f"] + (["-o", ",".join(options)] if options else []) + [image, mnt]
    res = kh.run_expect_exit(argv, mountpoint=mnt, timeout=20)
    kh.assert_refused(res, pattern, image, digest, mnt)
    return res


@pytest.mark.parametrize("content", ["zeros", "random"])
def test_not_a_filesystem_is_refused(kaiofs_bin, mounter, workdir, content):
    image = os.path.join(workdir, "junk.img")
    kh.make_image(image, 16 * MiB, seed=77, fill=0 if content == "zeros" else None)
    mnt = mounter.mountpoint()
    for opts in [(), ("ro",)]:
        _refuse(kaiofs_bin, image, mnt, opts, r"no ext2/ext3/ext4 filesystem")


def test_not_a_filesystem_message_is_readable(kaiofs_bin, mounter, workdir):
    """The reason given is libext2fs' text, not an unresolved error code."""
    image = os.path.join(workdir, "zeros.img")
    kh.make_image(image, 16 * MiB, fill=0)
    res = _refuse(kaiofs_bin, image, mounter.mountpoint(), (), r"no ext2/ext3/ext4")
    assert "Unknown code" not in res.stderr, res.stderr


@pytest.mark.parametrize("state", ["errors", "not-clean"])
def test_volume_needing_fsck_refused_rw_accepted_ro(volumes, kaiofs_bin, mounter, rng, state):
    dev = volumes.make("ext4")
    files = populate(volumes, dev, rng)
    # s_state: bit 0 valid (cleanly unmounted), bit 1 errors recorded
    debugfs_w(dev.path, "ssv state %d" % (2 if state == "errors" else 0))
    expect = "not clean with errors" if state == "errors" else "not clean"
    assert dumpe2fs(dev.path)["Filesystem state"] == expect
    mnt = mounter.mountpoint()
    _refuse(kaiofs_bin, dev.path, mnt, (), r"e2fsck")
    digest = kh.sha256_file(dev.path)
    m = volumes.mount(dev, options=("ro",), mountpoint=mnt)
    assert_read_only_mount(m.mountpoint, files)
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(dev.path) == digest
    assert dumpe2fs(dev.path)["Filesystem state"] == expect


def test_journal_needing_recovery_is_refused(volumes, kaiofs_bin, mounter):
    dev = volumes.make("ext4")
    debugfs_w(dev.path, "feature needs_recovery")
    assert "needs_recovery" in dumpe2fs(dev.path)["Filesystem features"]
    mnt = mounter.mountpoint()
    for opts in [(), ("ro",)]:
        res = _refuse(kaiofs_bin, dev.path, mnt, opts, r"recover")
        assert "e2fsck" in res.stderr, res


@pytest.mark.parametrize("feature,args,ro_ok", [
    ("inline_data", ("-O", "inline_data"), False),
    ("bigalloc", ("-O", "bigalloc", "-C", "16384"), False),
    ("quota", ("-O", "quota"), True),
    ("encrypt", ("-O", "encrypt"), False),
    ("verity", ("-O", "verity"), True),
    ("casefold", ("-O", "casefold"), False),
])
def test_unsupported_feature_is_refused(volumes, kaiofs_bin, mounter, feature, args, ro_ok):
    dev = volumes.make("ext4", args=args)
    assert feature in dumpe2fs(dev.path)["Filesystem features"].split()
    mnt = mounter.mountpoint()
    res = _refuse(kaiofs_bin, dev.path, mnt, (), re.escape(feature))
    if not ro_ok:
        _refuse(kaiofs_bin, dev.path, mnt, ("ro",), re.escape(feature))
        return
    # only unsafe to write: the hint says -o ro, which then works
    assert "-o ro" in res.stderr, res
    digest = kh.sha256_file(dev.path)
    m = volumes.mount(dev, options=("ro",), mountpoint=mnt)
    assert os.listdir(m.mountpoint) == ["lost+found"]
    assert errno_of(os.mkdir, os.path.join(m.mountpoint, "x")) == "EROFS"
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(dev.path) == digest


def _second_mount_refused(kaiofs_bin, mounter, target, image, first, rng):
    mnt2 = mounter.mountpoint()
    for opts in [(), ("ro",)]:
        digest = kh.sha256_file(image)
        argv = [kaiofs_bin, "-f"] + (["-o", ",".join(opts)] if opts else []) + [target, mnt2]
        res = kh.run_expect_exit(argv, mountpoint=mnt2, timeout=5)
        # the first mount is idle meanwhile, so the image must not change
        kh.assert_refused(res, r"lock|busy|in use", image, digest, mnt2)
        data = rng.randbytes(50000)
        path = os.path.join(first.mountpoint, "after-%s" % ("ro" if opts else "rw"))
        write_file(path, data)
        assert kh.read_file(path) == data
        assert first.alive() and first.mounted()


def test_second_kaiofs_on_same_image_is_refused(volumes, kaiofs_bin, mounter, rng):
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    write_file(os.path.join(m.mountpoint, "before"), b"x" * 10000)
    _second_mount_refused(kaiofs_bin, mounter, dev.path, dev.path, m, rng)
    stop_clean(m, dev)


def test_second_kaiofs_on_same_loop_device_is_refused(volumes, kaiofs_bin, mounter, rng):
    dev = volumes.make("ext4")
    loop = kh.losetup_attach(dev.path)
    try:
        m = volumes.mount(loop)
        write_file(os.path.join(m.mountpoint, "before"), b"x" * 10000)
        _second_mount_refused(kaiofs_bin, mounter, loop, dev.path, m, rng)
        rc = m.stop()
        assert rc == 0, m.stderr
    finally:
        mounter.cleanup()
        err = kh.losetup_detach(loop)
        assert err is None, err
    fs_support.assert_fsck_clean(dev.path)


# --------------------------------------------------------------------------
# 4. ENOSPC, the reserved blocks, EFBIG


def _fill(root, prefix, rng, chunk_max=65536, size_range=(1, 400000), top_up=False):
    """Write files until ENOSPC. With top_up, the first ENOSPC only switches
    to writes of one block, and the fill stops when one of those fails, so
    the volume ends up really full. Returns (complete {name: data},
    (name, acknowledged bytes, data) of the file that hit the final ENOSPC,
    errno)."""
    complete = {}
    limit = chunk_max
    block = os.statvfs(root).f_frsize
    i = 0
    while True:
        name = "%s%d" % (prefix, i)
        data = rng.randbytes(rng.randrange(*size_range))
        done = 0
        try:
            fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            return complete, None, e.errno
        try:
            while done < len(data):
                n = min(limit, rng.randrange(1, chunk_max))
                try:
                    done += os.write(fd, data[done:done + n])
                except OSError as e:
                    if e.errno != errno.ENOSPC or not top_up or limit == block:
                        raise
                    limit = block
        except OSError as e:
            return complete, (name, done, data), e.errno
        finally:
            os.close(fd)
        complete[name] = data
        i += 1


@pytest.mark.parametrize("block", [1024, 4096])
def test_enospc(volumes, workdir, seed, block):
    dev = volumes.make("ext4", size=8 * MiB, args=("-b", str(block)))
    m = volumes.mount(dev)
    root = m.mountpoint
    results = [None] * 3

    def writer(t):
        results[t] = _fill(root, "t%d-" % t, random.Random(seed * 10 + t), top_up=True)

    kh.run_threads(writer, 3)
    assert m.alive(), "kaiofs died; stderr:\n%s" % m.stderr
    complete = {}
    partial = []
    for t, (done, part, err) in enumerate(results):
        assert err == errno.ENOSPC, "writer %d stopped with %s, expected ENOSPC" % (
            t, errno.errorcode.get(err, err))
        complete.update(done)
        if part:
            partial.append(part)
    assert complete, "nothing fitted on the volume"
    check_files(root, complete, "after ENOSPC")
    for name, acked, data in partial:
        got = kh.read_file(os.path.join(root, name))
        assert len(got) == acked, "%s: size %d, %d bytes were acknowledged" % (
            name, len(got), acked)
        kh.assert_same_data(got, data[:acked], name)
    sv = os.statvfs(root)
    assert sv.f_bfree * sv.f_frsize < 300000, "ENOSPC with %d bytes free" % (
        sv.f_bfree * sv.f_frsize)
    # freeing space lets writes work again
    victim = max(complete, key=lambda n: len(complete[n]))
    freed = len(complete.pop(victim))
    os.unlink(os.path.join(root, victim))
    assert kh.wait_for(lambda: os.statvfs(root).f_bfree > sv.f_bfree, kh.tmo(5)), \
        "unlinking %s (%d bytes) freed nothing" % (victim, freed)
    new = random.Random(seed).randbytes(freed // 2)
    write_file(os.path.join(root, "after-delete"), new)
    complete["after-delete"] = new
    check_files(root, complete, "after delete and rewrite")
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, complete, "kernel")
        for name, acked, data in partial:
            kh.assert_same_data(kh.read_file(os.path.join(k, name)), data[:acked],
                                "kernel: " + name)


def test_concurrent_writers_on_1k_block_volume(volumes, workdir, seed):
    """Three threads appending to their own files in odd-sized pieces on a
    1 KiB-block volume: the files' blocks and extent blocks interleave on
    the device, and no file may lose data to another's metadata update."""
    dev = volumes.make("ext4", size=8 * MiB)
    m = volumes.mount(dev)
    root = m.mountpoint
    assert os.statvfs(root).f_frsize == 1024
    kept = {}
    for rnd in range(8):
        written = {}
        lock = threading.Lock()

        def writer(t):
            rng = random.Random(seed * 100 + rnd * 10 + t)
            for i in range(4):
                name = "r%d-t%d-%d" % (rnd, t, i)
                data = rng.randbytes(rng.randrange(1, 300000))
                fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    off = 0
                    while off < len(data):
                        off += os.write(fd, data[off:off + rng.randrange(1, 65536)])
                finally:
                    os.close(fd)
                with lock:
                    written[name] = data

        kh.run_threads(writer, 3)
        check_files(root, written, "round %d" % rnd)
        # keep one file per round, free the rest for the next round
        keep = sorted(written)[rnd % len(written)]
        kept[keep] = written[keep]
        for name in written:
            if name != keep:
                os.unlink(os.path.join(root, name))
    check_files(root, kept, "kept files")
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, kept, "kernel")


def test_reserved_blocks_only_for_root(volumes, workdir, seed):
    dev = volumes.make("ext4", size=16 * MiB, args=("-m", "20"))
    m = volumes.mount(dev, options=("allow_other",))
    root = m.mountpoint
    udir = os.path.join(root, "u")
    os.mkdir(udir)
    os.chown(udir, NOBODY, NOBODY)

    def fill_as_nobody():
        done, part, err = _fill(udir, "n", random.Random(seed), top_up=True)
        sv = os.statvfs(root)
        return done, part, err, (sv.f_bavail, sv.f_bfree, sv.f_blocks)

    done, part, err, (bavail, bfree, blocks) = run_as(fill_as_nobody)
    assert err == errno.ENOSPC, "nobody's writes stopped with %s" % errno.errorcode.get(err, err)
    assert bavail == 0, "f_bavail for nobody is %d after ENOSPC" % bavail
    # the reserve (20%) is still there; only root may use it
    assert bfree >= blocks // 10, "f_bfree %d of %d after nobody's ENOSPC" % (bfree, blocks)
    assert run_as(lambda: errno_of(write_file, os.path.join(udir, "more"), b"y" * 65536)) \
        == "ENOSPC"
    rootdata = random.Random(seed + 1).randbytes(MiB)
    write_file(os.path.join(root, "rootfile"), rootdata)
    done = {os.path.join("u", n): d for n, d in done.items()}
    if part:
        name, acked, data = part
        done[os.path.join("u", name)] = data[:acked]
    done["rootfile"] = rootdata
    check_files(root, done, "kaiofs")
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, done, "kernel")
        st = os.stat(os.path.join(k, "u", "n0"))
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_efbig_beyond_max_file_size(volumes):
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        got = {
            "truncate 17T": errno_of(os.ftruncate, fd, 17 * TiB),
            "truncate 16T": errno_of(os.ftruncate, fd, 16 * TiB),
            "truncate max+1": errno_of(os.ftruncate, fd, EXT4_MAX_4K + 1),
            "pwrite at 16T": errno_of(os.pwrite, fd, b"x" * 4096, 16 * TiB),
            "pwrite at max": errno_of(os.pwrite, fd, b"x", EXT4_MAX_4K),
        }
        assert got == {k: "EFBIG" for k in got}
        assert os.fstat(fd).st_size == 0
        os.ftruncate(fd, EXT4_MAX_4K)
        assert os.fstat(fd).st_size == EXT4_MAX_4K
        os.ftruncate(fd, 0)
        assert os.pwrite(fd, b"z" * 4096, EXT4_MAX_4K - 4096) == 4096
        assert os.fstat(fd).st_size == EXT4_MAX_4K
        assert os.pread(fd, 4096, EXT4_MAX_4K - 4096) == b"z" * 4096
    finally:
        os.close(fd)
    stop_clean(m, dev)


def test_pwrite_straddling_max_file_size_is_short(volumes):
    """A write crossing the size limit writes up to it (like ext4), and
    only a write entirely beyond it fails with EFBIG."""
    dev = volumes.make("ext4", args=("-b", "4096"))
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            n = os.pwrite(fd, b"q" * 8192, EXT4_MAX_4K - 4096)
        except OSError as e:
            pytest.fail("pwrite of 8 KiB ending 4 KiB past the limit: %s, "
                        "expected a short write of 4096 bytes"
                        % errno.errorcode.get(e.errno), pytrace=False)
        assert n == 4096
        assert os.fstat(fd).st_size == EXT4_MAX_4K
    finally:
        os.close(fd)
    stop_clean(m, dev)


# --------------------------------------------------------------------------
# 5. kill -9 under a write load


def clear_killed_mount(m):
    """After kill -9 of the daemon: it died of it, and its dead mount goes."""
    assert m.wait(timeout=30) == -signal.SIGKILL
    if m.mounted():
        r = m.unmount()
        if m.mounted():
            r = m.unmount(lazy=True)
        assert not m.mounted(), "the dead mount could not be removed: %s" % r.stderr


@pytest.mark.parametrize("end", ["unmount", "fsync-then-kill9"])
def test_directory_times_reach_the_disk(volumes, workdir, end):
    """Names added and removed inside a directory's existing blocks leave its
    new times in memory until the directory is fsync'ed, forgotten or
    unmounted: at each of those they must reach the disk."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    d = os.path.join(m.mountpoint, "d")
    os.mkdir(d)
    for i in range(5):
        os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY))
    os.unlink(os.path.join(d, "f0"))
    want = os.stat(d)
    if end == "unmount":
        stop_clean(m, dev)
    else:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        os.kill(m.pid, signal.SIGKILL)
        clear_killed_mount(m)
        rc, out = fs_support.fsck(dev.path, fix=True)
        assert rc in (0, 1), "e2fsck -fy exit %d:\n%s" % (rc, out)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        got = os.stat(os.path.join(k, "d"))
        assert sorted(os.listdir(os.path.join(k, "d"))) == ["f1", "f2", "f3", "f4"]
    assert (got.st_mtime_ns, got.st_ctime_ns) == (want.st_mtime_ns, want.st_ctime_ns), \
        "kaiofs showed mtime/ctime %d/%d, the disk has %d/%d" % (
            want.st_mtime_ns, want.st_ctime_ns, got.st_mtime_ns, got.st_ctime_ns)


def test_unlinked_files_stay_deleted(volumes, kaiofs_stat_bin, workdir, rng):
    """An unlink writes the directory block and the inode, which it records
    deleted (no links, a deletion time): freeing an empty inode when the
    kernel forgets it writes nothing more. kill -9 after unlinks, of closed
    files and of one still open, leaves them deleted: e2fsck frees them
    (none turns up in lost+found) and the other files are intact."""
    dev = volumes.make("ext4")
    # one receive thread: the forgets the unlinks cause are read before
    # the next request, so they are done when it is answered
    m = volumes.mount(dev, options=("fuse_threads=1",))
    d = os.path.join(m.mountpoint, "d")
    os.mkdir(d)
    keep = {"d/keep%d" % i: rng.randbytes(9000 * i) for i in range(4)}
    for name, data in keep.items():
        write_file(os.path.join(m.mountpoint, name), data)
    for i in range(40):
        os.close(os.open(os.path.join(d, "empty%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
    for i in range(6):
        write_file(os.path.join(d, "data%d" % i), rng.randbytes(70000))
    held_data = rng.randbytes(50000)
    write_file(os.path.join(d, "held"), held_data)
    held = os.open(os.path.join(d, "held"), os.O_RDONLY)
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        os.stat(d)
        before = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["metadata"]["writes"]
        for i in range(40):
            os.unlink(os.path.join(d, "empty%d" % i))
        os.stat(d)      # a GETATTR, read after the forgets
        writes = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["metadata"]["writes"] - before
        assert writes <= 2 * 40, "%d metadata writes for 40 unlinks" % writes
        for i in range(6):
            os.unlink(os.path.join(d, "data%d" % i))
        os.unlink(os.path.join(d, "held"))
        assert os.pread(held, len(held_data) + 1, 0) == held_data
        os.kill(m.pid, signal.SIGKILL)
    finally:
        os.close(held)
    clear_killed_mount(m)
    rc, out = fs_support.fsck(dev.path, fix=True)
    assert rc in (0, 1), "e2fsck -fy exit %d:\n%s" % (rc, out)
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        assert os.listdir(os.path.join(k, "lost+found")) == []
        assert sorted(os.listdir(os.path.join(k, "d"))) == sorted(n[2:] for n in keep)
        check_files(k, keep, "kernel ext4")


def test_tmpfiles_after_kill9(volumes, workdir, rng):
    """O_TMPFILE files are on the disk as deleted (no links, a deletion
    time) until linkat names them: after kill -9, e2fsck frees the unnamed
    ones (nothing in lost+found) and the named one is intact."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    named_data, loose_data = rng.randbytes(60000), rng.randbytes(90000)
    named = os.open(m.mountpoint, os.O_TMPFILE | os.O_RDWR, 0o644)
    loose = os.open(m.mountpoint, os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        kh.pwrite_all(named, named_data, 0)
        kh.pwrite_all(loose, loose_data, 0)
        kh.link_open_file(named, os.path.join(m.mountpoint, "named"))
        os.fsync(named)
        dfd = os.open(m.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        os.kill(m.pid, signal.SIGKILL)
    finally:
        os.close(named)
        os.close(loose)
    clear_killed_mount(m)
    rc, out = fs_support.fsck(dev.path, fix=True)
    assert rc in (0, 1), "e2fsck -fy exit %d:\n%s" % (rc, out)
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        assert os.listdir(os.path.join(k, "lost+found")) == []
        assert sorted(os.listdir(k)) == ["lost+found", "named"]
        kh.assert_same_data(kh.read_file(os.path.join(k, "named")), named_data, "named")


@pytest.mark.parametrize("dir_fsync", [False, True], ids=["fsync-file", "fsync-file-and-dir"])
def test_kill9_under_write_load(volumes, mounter, workdir, seed, dir_fsync):
    """Files are recorded once fsync(file) (and, in one variant, fsync of
    its directory too) returned; kill -9 of the daemon must lose none."""
    dev = volumes.make("ext4", size=256 * MiB)
    m = volumes.mount(dev)
    root = m.mountpoint
    nthreads = 4
    for t in range(nthreads):
        os.mkdir(os.path.join(root, "w%d" % t))
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    synced = {}          # name -> data, for files whose fsyncs returned
    lock = threading.Lock()
    killed = threading.Event()
    unexpected = []

    def writer(t):
        rng = random.Random(seed * 100 + t)
        d = os.path.join(root, "w%d" % t)
        i = 0
        while not killed.is_set() and i < 100000:
            name = os.path.join("w%d" % t, "f%d" % i)
            data = rng.randbytes(rng.choice([1, 4096, 5000, 65536, 200001, MiB + 4097]))
            try:
                fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    kh.pwrite_all(fd, data, 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if dir_fsync:
                    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            except OSError as e:
                if not killed.is_set():
                    unexpected.append("%s: %s" % (name, e))
                return
            except BaseException:
                # a write the kernel split into several FUSE requests comes
                # back short when the kill falls between them
                if not killed.is_set():
                    unexpected.append(traceback.format_exc())
                return
            with lock:
                synced[name] = data
            i += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    try:
        enough = kh.wait_for(lambda: len(synced) >= 300 or unexpected, kh.tmo(60))
        with lock:
            before_kill = dict(synced)
        killed.set()
        os.kill(m.pid, signal.SIGKILL)
    finally:
        killed.set()
        for t in threads:
            t.join(kh.tmo(60))
    assert not any(t.is_alive() for t in threads), "writers still blocked after kill -9"
    assert not unexpected, unexpected
    assert enough, "only %d files synced in time" % len(before_kill)
    clear_killed_mount(m)
    # only files recorded before the kill count (any later one came back too
    # late to be sure it was before the kill)
    rc, out = fs_support.fsck(dev.path, fix=True)
    assert rc in (0, 1, 2), "e2fsck -fy exit %d:\n%s" % (rc, out)
    print("e2fsck -fy after kill -9 of a run with %d synced files: exit %d\n%s"
          % (len(before_kill), rc, out))
    fs_support.assert_fsck_clean(dev.path)
    m2 = volumes.mount(dev)
    check_files(m2.mountpoint, before_kill, "kaiofs after kill -9 and e2fsck")
    stop_clean(m2, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, before_kill, "kernel after kill -9 and e2fsck")


# --------------------------------------------------------------------------
# 6. permissions for other users


def _permission_scenario(r):
    """Root builds a tree at r; then uid NOBODY tries things in it. Returns
    the outcome of each attempt and the owners and set-gid bits left."""
    p = lambda *a: os.path.join(r, *a)  # noqa: E731
    write_file(p("secret"), b"secret")
    os.chmod(p("secret"), 0o600)
    write_file(p("public"), b"public")
    os.chmod(p("public"), 0o666)
    os.mkdir(p("private"))
    write_file(p("private", "inner"), b"inner")
    os.chmod(p("private"), 0o700)
    os.mkdir(p("open"))
    os.chmod(p("open"), 0o777)
    os.mkdir(p("sgid"))
    os.chown(p("sgid"), 0, 100)
    os.chmod(p("sgid"), 0o2777)
    os.mkdir(p("tmp"))
    os.chmod(p("tmp"), 0o1777)
    write_file(p("tmp", "roots"), b"r")
    os.chmod(p("tmp", "roots"), 0o666)

    def as_nobody():
        got = {
            "read 0600 root file": errno_of(kh.read_file, p("secret")),
            "write 0600 root file": errno_of(lambda: os.close(os.open(p("secret"), os.O_WRONLY))),
            "write 0666 file": errno_of(lambda: write_file(p("public"), b"changed by nobody")),
            "list 0700 dir": errno_of(os.listdir, p("private")),
            "stat inside 0700 dir": errno_of(os.stat, p("private", "inner")),
            "create in 0755 root": errno_of(write_file, p("mine"), b"m"),
            "create in 0777 dir": errno_of(write_file, p("open", "mine"), b"m"),
            "mkdir in 0777 dir": errno_of(os.mkdir, p("open", "mydir")),
            "create in sgid dir": errno_of(write_file, p("sgid", "f"), b"f"),
            "mkdir in sgid dir": errno_of(os.mkdir, p("sgid", "sub")),
            "unlink other's in sticky": errno_of(os.unlink, p("tmp", "roots")),
            "rename over other's in sticky": 0,
            "create in sticky": errno_of(write_file, p("tmp", "nobodys"), b"n"),
            "chown root's file": errno_of(os.chown, p("public"), NOBODY, NOBODY),
            "chmod root's file": errno_of(os.chmod, p("public"), 0o600),
            "chown own file to root": 0,
        }
        got["rename over other's in sticky"] = errno_of(os.rename, p("tmp", "nobodys"),
                                                        p("tmp", "roots"))
        got["chown own file to root"] = errno_of(os.chown, p("open", "mine"), 0, 0)
        got["unlink own in sticky"] = errno_of(os.unlink, p("tmp", "nobodys"))
        return got

    got = run_as(as_nobody)
    owners = {}
    for name in ["open/mine", "open/mydir", "sgid/f", "sgid/sub", "public", "tmp/roots"]:
        st = os.stat(p(name))
        owners[name] = (st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode) & 0o2000))
    return got, owners


def test_permissions_with_allow_other(volumes, workdir):
    """A second, unprivileged user on a mount with allow_other (and kaiofs'
    default_permissions) meets the same permission checks as on the kernel's
    ext4: the same scenario runs on both and the outcomes are compared."""
    kdev = volumes.make("ext4", name="kernel.img")
    with fs_support.kernel_mount(kdev.path, os.path.join(workdir, "kext4"),
                                 readonly=False) as kroot:
        os.chmod(kroot, 0o755)
        expected = _permission_scenario(kroot)
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("allow_other",))
    got = _permission_scenario(m.mountpoint)
    assert got == expected, "kaiofs %r\nkernel's ext4 %r" % (got, expected)
    want = {
        "read 0600 root file": "EACCES",
        "write 0600 root file": "EACCES",
        "write 0666 file": 0,
        "list 0700 dir": "EACCES",
        "stat inside 0700 dir": "EACCES",
        "create in 0755 root": "EACCES",
        "create in 0777 dir": 0,
        "mkdir in 0777 dir": 0,
        "create in sgid dir": 0,
        "mkdir in sgid dir": 0,
        "unlink other's in sticky": "EPERM",
        "rename over other's in sticky": "EPERM",
        "create in sticky": 0,
        "chown root's file": "EPERM",
        "chmod root's file": "EPERM",
        "chown own file to root": "EPERM",
        "unlink own in sticky": 0,
    }
    assert expected[0] == want
    want_owners = {
        "open/mine": (NOBODY, NOBODY, "0o0"),
        "open/mydir": (NOBODY, NOBODY, "0o0"),
        "sgid/f": (NOBODY, 100, "0o0"),
        "sgid/sub": (NOBODY, 100, "0o2000"),
        "public": (0, 0, "0o0"),
        "tmp/roots": (0, 0, "0o0"),
    }
    assert expected[1] == want_owners
    r = m.mountpoint
    p = lambda *a: os.path.join(r, *a)  # noqa: E731
    assert kh.read_file(p("public")) == b"changed by nobody"
    assert kh.read_file(p("tmp", "roots")) == b"r"
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        st = os.stat(os.path.join(k, "sgid", "sub"))
        assert (st.st_uid, st.st_gid) == (NOBODY, 100)
        assert st.st_mode & stat.S_ISGID
        assert kh.read_file(os.path.join(k, "public")) == b"changed by nobody"


def _setid_scenario(root):
    """Changes to set-uid/set-gid files by another user and by root;
    returns the resulting modes."""
    p = lambda n: os.path.join(root, n)  # noqa: E731
    names = ["w-nobody", "pwrite-nobody", "trunc-nobody", "w-root", "chown-root",
             "sgid-noexec-w-nobody", "sgid-noexec-w-group-member"]
    for n in names:
        write_file(p(n), b"0123456789")
        os.chmod(p(n), 0o6777)
    os.chmod(p("sgid-noexec-w-nobody"), 0o2666)
    # nobody's own group: writing keeps a set-gid that does not mean set-gid
    os.chown(p("sgid-noexec-w-group-member"), 0, NOBODY)
    os.chmod(p("sgid-noexec-w-group-member"), 0o2666)

    def as_nobody():
        with open(p("w-nobody"), "ab") as f:
            f.write(b"more")
        fd = os.open(p("pwrite-nobody"), os.O_WRONLY)
        try:
            os.pwrite(fd, b"zz", 2)
        finally:
            os.close(fd)
        os.truncate(p("trunc-nobody"), 3)
        with open(p("sgid-noexec-w-nobody"), "ab") as f:
            f.write(b"more")
        with open(p("sgid-noexec-w-group-member"), "ab") as f:
            f.write(b"more")
        return True

    run_as(as_nobody)
    with open(p("w-root"), "ab") as f:
        f.write(b"more")
    os.chown(p("chown-root"), 1, 1)
    return {n: oct(stat.S_IMODE(os.stat(p(n)).st_mode)) for n in names}


def test_writes_clear_setid_bits_like_ext4(volumes, workdir):
    # what the kernel's ext4 does, on a scratch image
    ref = os.path.join(workdir, "ref.img")
    fs_support.mkfs(ref, size=16 * MiB)
    kdir = os.path.join(workdir, "kref")
    with fs_support.kernel_mount(ref, kdir, readonly=False) as k:
        os.chmod(k, 0o777)
        want = _setid_scenario(k)
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("allow_other",))
    os.chmod(m.mountpoint, 0o777)
    got = _setid_scenario(m.mountpoint)
    assert got == want, "modes after the changes: kaiofs %r, kernel ext4 %r" % (got, want)
    stop_clean(m, dev)


def test_without_allow_other_other_users_get_eacces(volumes):
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    os.chmod(m.mountpoint, 0o777)
    write_file(os.path.join(m.mountpoint, "f"), b"x")
    os.chmod(os.path.join(m.mountpoint, "f"), 0o666)
    got = run_as(lambda: {
        "stat": errno_of(os.stat, m.mountpoint),
        "list": errno_of(os.listdir, m.mountpoint),
        "read": errno_of(kh.read_file, os.path.join(m.mountpoint, "f")),
        "create": errno_of(write_file, os.path.join(m.mountpoint, "g"), b"g"),
    })
    assert got == {"stat": "EACCES", "list": "EACCES", "read": "EACCES", "create": "EACCES"}
    assert sorted(os.listdir(m.mountpoint)) == ["f", "lost+found"]
    stop_clean(m, dev)


# --------------------------------------------------------------------------
# 7. ext2 and ext3 with Debian's defaults


@pytest.mark.parametrize("fstype", ["ext2", "ext3"])
def test_ext2_ext3_defaults(volumes, workdir, rng, fstype):
    dev = volumes.make(fstype)
    features = dumpe2fs(dev.path)["Filesystem features"].split()
    assert "extent" not in features, features
    assert ("has_journal" in features) == (fstype == "ext3"), features
    m = volumes.mount(dev)
    r = m.mountpoint
    files = {}
    os.makedirs(os.path.join(r, "a", "b"))
    # sizes reaching the single, double indirect blocks of 1 KiB-block volumes
    for i, size in enumerate([0, 1, 1024, 12 * 1024, 13 * 1024 + 7, 300 * 1024, 5 * MiB + 3]):
        name = os.path.join("a" if i % 2 else "a/b", "f%d" % i)
        files[name] = rng.randbytes(size)
        write_file(os.path.join(r, name), files[name])
    # a sparse file and an overwrite in the middle
    sparse = bytearray(3 * MiB)
    sparse[2 * MiB:2 * MiB + 5] = b"hello"
    fd = os.open(os.path.join(r, "sparse"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        kh.pwrite_all(fd, b"hello", 2 * MiB)
        os.ftruncate(fd, 3 * MiB)
    finally:
        os.close(fd)
    files["sparse"] = bytes(sparse)
    big = bytearray(files["a/b/f6"])
    big[1000000:1000000 + 70000] = rng.randbytes(70000)
    fd = os.open(os.path.join(r, "a/b/f6"), os.O_WRONLY)
    try:
        kh.pwrite_all(fd, bytes(big[1000000:1070000]), 1000000)
    finally:
        os.close(fd)
    files["a/b/f6"] = bytes(big)
    os.rename(os.path.join(r, "a/f1"), os.path.join(r, "moved"))
    files["moved"] = files.pop("a/f1")
    os.unlink(os.path.join(r, "a/f3"))
    del files["a/f3"]
    os.symlink("a/b/f0", os.path.join(r, "link"))
    for i in range(150):  # a directory of several blocks
        write_file(os.path.join(r, "a", "many%03d" % i), b"%d" % i)
        files["a/many%03d" % i] = b"%d" % i
    check_files(r, files, "kaiofs " + fstype)
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, files, "kernel " + fstype)
        assert os.readlink(os.path.join(k, "link")) == "a/b/f0"
        assert not os.path.exists(os.path.join(k, "a/f3"))


@pytest.mark.parametrize("fstype", ["ext2", "ext3"])
def test_ext2_ext3_file_past_the_direct_blocks(volumes, workdir, rng, fstype):
    """The 13th block of a block-mapped file needs an indirect block."""
    dev = volumes.make(fstype)
    m = volumes.mount(dev)
    block = os.statvfs(m.mountpoint).f_frsize
    data = rng.randbytes(13 * block)
    path = os.path.join(m.mountpoint, "f")
    err = errno_of(write_file, path, data)
    assert err == 0, "writing %d bytes (13 blocks of %d) to a new file on %s: %s" % (
        len(data), block, fstype, err)
    assert kh.read_file(path) == data
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, {"f": data}, "kernel " + fstype)


# --------------------------------------------------------------------------
# 8. statistics


def test_stats_in_filesystem_mode(volumes, kaiofs_stat_bin, rng):
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("stats",))
    data = rng.randbytes(3 * MiB + 123)
    write_file(os.path.join(m.mountpoint, "f"), data)
    assert kh.read_file(os.path.join(m.mountpoint, "f")) == data
    stats = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
    for key in ("iocbs_per_submit", "aio", "arena", "fuse", "latency"):
        assert key in stats, "kaiofs-stat --json has no %r: %r" % (key, stats)
    assert stats["fuse"]["bytes_written"] >= len(data), stats["fuse"]
    assert stats["fuse"]["bytes_read"] >= len(data), stats["fuse"]
    assert stats["fuse"]["requests"]["write"] >= 1, stats["fuse"]
    assert stats["aio"]["iocbs"] >= 1 and stats["aio"]["errors"] == 0, stats["aio"]
    table = kh.run_stat(kaiofs_stat_bin, m.mountpoint, json_output=False)
    assert table.returncode == 0, table.stderr
    assert "bytes written" in table.stdout, table.stdout
    assert m.stderr == "", "kaiofs printed before unmount: %r" % m.stderr
    stop_clean(m, dev)
    out = m.stderr
    for needle in ("aio engine", "arena", "bytes written", "latency"):
        assert needle in out, "no %r in the -o stats table:\n%s" % (needle, out)
    written = re.search(r"bytes written\s+(\d+)", out)
    assert written and int(written.group(1)) >= len(data), out


def thread_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_fuse_threads_option(volumes):
    """fuse_threads=N runs N receive threads; the default is one per CPU
    kaiofs may run on, 2 to 8."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("fuse_threads=1",))
    os.listdir(m.mountpoint)            # answered: its one receive thread runs
    base = thread_count(m.pid) - 1      # everything but the receive threads
    stop_clean(m, dev)
    default = min(max(len(os.sched_getaffinity(0)), 2), 8)
    for opt, want in (("fuse_threads=5", 5), (None, default)):
        m = volumes.mount(dev, options=(opt,) if opt else ())
        # the receive threads start while the mount is already served
        kh.wait_for(lambda: thread_count(m.pid) == base + want, kh.tmo(10))
        assert thread_count(m.pid) == base + want, (opt, base, want)
        stop_clean(m, dev)


def churn_metadata(root, rng, rounds=3):
    """Directories grown and removed, files written and deleted, so that
    blocks move between metadata and file data; returns the files that
    remain, as {relative path: data}."""
    files = {}
    for r in range(rounds):
        d = os.path.join(root, "churn%d" % r)
        os.mkdir(d)
        for i in range(300):
            # long names: the directory takes several blocks
            os.close(os.open(os.path.join(d, "%03d-%s" % (i, "n" * 60)), os.O_CREAT | os.O_WRONLY))
        for i in range(0, 300, 2):
            os.unlink(os.path.join(d, "%03d-%s" % (i, "n" * 60)))
        if r < rounds - 1:
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
            os.rmdir(d)
        name = "data%d" % r
        files[name] = rng.randbytes(2 * MiB + r)
        write_file(os.path.join(root, name), files[name])
        if r:
            os.unlink(os.path.join(root, "data%d" % (r - 1)))
            del files["data%d" % (r - 1)]
    kept = sorted("%03d-%s" % (i, "n" * 60) for i in range(1, 300, 2))
    for name in kept:
        files[os.path.join("churn%d" % (rounds - 1), name)] = b""
    return files


@pytest.mark.parametrize("cache", ["default", "off"])
def test_metadata_cache(volumes, kaiofs_stat_bin, workdir, rng, cache):
    """Repeated reads of the same metadata blocks come from memory (or, with
    meta_cache=0, from the device each time), and what kaiofs writes through
    the cache is what the kernel's ext4 reads back."""
    dev = volumes.make("ext4")
    opts = ("stats",) if cache == "default" else ("stats", "meta_cache=0")
    m = volumes.mount(dev, options=opts)
    files = churn_metadata(m.mountpoint, rng)
    stop_clean(m, dev)

    # Look every file up twice, in random order (so that libext2fs' own
    # buffer of the last inode block rarely has it); between the passes the
    # kernel forgets its entries, and kaiofs the inodes. The second pass
    # needs no device read with the cache, and one per lookup without.
    m = volumes.mount(dev, options=opts)
    names = sorted(files)
    passes = []
    for _ in range(2):
        rng.shuffle(names)
        for name in names:
            os.stat(os.path.join(m.mountpoint, name))
        passes.append(kh.get_stats(kaiofs_stat_bin, m.mountpoint)["metadata"])
        kh.drop_kernel_caches()
    reads = passes[1]["reads"] - passes[0]["reads"]
    hits = passes[1]["cache_hits"] - passes[0]["cache_hits"]
    if cache == "default":
        assert reads <= 2 and hits >= len(names) * 3 // 4, passes
    else:
        assert hits == 0 and reads >= len(names) * 3 // 4, passes
    check_files(m.mountpoint, files, "kaiofs")
    stop_clean(m, dev)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        check_files(k, files, "kernel ext4")
        assert sorted(os.listdir(os.path.join(k, "churn2"))) == \
            sorted(n.split("/")[1] for n in files if n.startswith("churn2/"))


@pytest.mark.parametrize("poll", ["default", "off"])
def test_request_polling(volumes, kaiofs_stat_bin, poll):
    """While no device I/O is in flight, a receive thread that has answered
    a request polls for the next one (poll_us, 50 microseconds by default)
    before it sleeps: a program that creates and stats files one after
    another has requests found by polling (most of them on an idle
    machine, a few percent with the CPUs busy elsewhere). poll_us=0 never
    polls."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("poll_us=0",) if poll == "off" else ())
    d = os.path.join(m.mountpoint, "d")
    os.mkdir(d)
    before = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]
    for i in range(300):
        os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
    kh.drop_kernel_caches()
    for i in range(300):
        os.stat(os.path.join(d, "f%d" % i))
    after = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]
    polled = after["polled"] - before["polled"]
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    if poll == "off":
        assert polled == 0, (polled, requests)
    else:
        assert polled > 0, (polled, requests)
    stop_clean(m, dev)
