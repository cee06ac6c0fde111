"""Errors before mounting: one "kaiofs: " line on stderr, non-zero exit,
nothing mounted, device unchanged. Also kaiofs-stat on foreign paths."""

import os
import re
import shutil
import subprocess

import pytest

import kaiofs_helpers as kh
from kaiofs_helpers import MiB

NOBODY = 65534


class Setup:
    """A valid 4 MiB image and an empty mountpoint directory in workdir."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.image = os.path.join(workdir, "disk.img")
        kh.make_image(self.image, 4 * MiB, seed=4242)
        self.image_hash = kh.sha256_file(self.image)
        self.mnt = os.path.join(workdir, "mnt")
        os.mkdir(self.mnt)
        self.extra_mounts = []

    def path(self, name):
        return os.path.join(self.workdir, name)

    def mount_fs(self, fstype, target):
        os.makedirs(target, exist_ok=True)
        r = subprocess.run(["mount", "-t", fstype, "none", target], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail("mount -t %s failed: %s" % (fstype, r.stderr.strip()),
                        pytrace=False)
        self.extra_mounts.append(target)

    def cleanup(self):
        for target in reversed(self.extra_mounts):
            kh.force_unmount(target)


@pytest.fixture
def setup(workdir):
    s = Setup(workdir)
    yield s
    s.cleanup()


def _run(argv, mnt, **kwargs):
    return kh.run_expect_exit(argv, mountpoint=mnt, **kwargs)


def assert_refused(res, pattern, setup, mnt=None, allowed_mounts=()):
    """One "kaiofs: " line matching pattern, non-zero exit, nothing mounted,
    image unchanged."""
    kh.assert_refused(res, pattern, setup.image, setup.image_hash, mnt or setup.mnt,
                      allowed_mounts)


# --------------------------------------------------------------------------
# devices


def test_missing_device(kaiofs_bin, setup):
    dev = setup.path("does-not-exist.img")
    res = _run([kaiofs_bin, "-f", "-o", "raw", dev, setup.mnt], setup.mnt)
    assert_refused(res, r"does-not-exist|no such file|not exist", setup)


def test_device_is_directory(kaiofs_bin, setup):
    dev = setup.path("somedir")
    os.mkdir(dev)
    res = _run([kaiofs_bin, "-f", "-o", "raw", dev, setup.mnt], setup.mnt)
    assert_refused(res, r"block device|regular file|directory", setup)


def test_device_is_char_device(kaiofs_bin, setup):
    res = _run([kaiofs_bin, "-f", "-o", "raw", "/dev/null", setup.mnt], setup.mnt)
    assert_refused(res, r"block device|regular file|character|/dev/null", setup)


def test_device_without_permission(kaiofs_bin, setup):
    os.chmod(setup.image, 0o600)
    os.chown(setup.image, 0, 0)
    os.chown(setup.mnt, NOBODY, NOBODY)
    binary = kaiofs_bin
    drop = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    probe = subprocess.run(drop + ["test", "-x", binary], timeout=30)
    if probe.returncode != 0:
        # the build tree is not reachable for nobody: run a copy
        binary = setup.path("kaiofs-copy")
        shutil.copy2(kaiofs_bin, binary)
        os.chmod(binary, 0o755)
    probe = subprocess.run(drop + ["test", "-r", setup.image], timeout=30)
    assert probe.returncode != 0, "nobody can read the 0600 root image?"
    res = _run(drop + [binary, "-f", "-o", "raw", setup.image, setup.mnt], setup.mnt)
    assert_refused(res, r"permission|denied|access", setup)


def test_device_refuses_o_direct(kaiofs_bin, setup):
    ram = setup.path("ram")
    setup.mount_fs("ramfs", ram)
    dev = os.path.join(ram, "ram.img")
    with open(dev, "wb") as f:
        f.write(b"\x5a" * MiB)
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        pass
    else:
        os.close(fd)
        pytest.skip("ramfs accepted O_DIRECT on this kernel")
    res = _run([kaiofs_bin, "-f", "-o", "raw", dev, setup.mnt], setup.mnt)
    assert_refused(res, r"O_DIRECT", setup)
    assert kh.read_file(dev) == b"\x5a" * MiB


# --------------------------------------------------------------------------
# mountpoints


def test_mountpoint_missing(kaiofs_bin, setup):
    mnt = setup.path("no-such-mnt")
    res = _run([kaiofs_bin, "-f", "-o", "raw", setup.image, mnt], mnt)
    assert_refused(res, r"mount ?point|no-such-mnt|no such|not exist", setup, mnt=mnt)
    assert not os.path.exists(mnt)


def test_mountpoint_missing_without_f(kaiofs_bin, setup):
    """The error must come before daemonizing, from the process we started."""
    mnt = setup.path("no-such-mnt")
    res = _run([kaiofs_bin, "-o", "raw", setup.image, mnt], mnt)
    assert_refused(res, r"mount ?point|no-such-mnt|no such|not exist", setup, mnt=mnt)
    assert not os.path.exists(mnt)


def test_mountpoint_not_a_directory(kaiofs_bin, setup):
    mnt = setup.path("plainfile")
    with open(mnt, "w") as f:
        f.write("x")
    res = _run([kaiofs_bin, "-f", "-o", "raw", setup.image, mnt], mnt)
    assert_refused(res, r"not a directory", setup, mnt=mnt)
    assert kh.read_file(mnt) == b"x"


def test_mountpoint_already_mounted(kaiofs_bin, setup):
    setup.mount_fs("tmpfs", setup.mnt)
    res = _run([kaiofs_bin, "-f", "-o", "raw", setup.image, setup.mnt], setup.mnt)
    assert_refused(res, r"already mounted|already a mount|mount ?point", setup,
                   allowed_mounts=("tmpfs",))
    assert kh.mounts_at(setup.mnt) == ["tmpfs"]


def test_mountpoint_already_kaiofs(kaiofs_bin, setup, mounter):
    """A second kaiofs on a live kaiofs mount is refused; the first keeps working."""
    other = setup.path("other.img")
    kh.make_image(other, 4 * MiB, seed=1)
    other_hash = kh.sha256_file(other)
    m = mounter.mount(other, mountpoint=setup.mnt)
    res = _run([kaiofs_bin, "-f", "-o", "raw", setup.image, setup.mnt], setup.mnt)
    assert res.returncode != 0, res
    assert len(res.lines) == 1 and res.lines[0].startswith("kaiofs: "), res
    assert re.search(r"already mounted|already a mount|mount ?point", res.lines[0], re.I), res
    assert kh.sha256_file(setup.image) == setup.image_hash
    types = kh.mounts_at(setup.mnt)
    assert len(types) == 1 and types[0].startswith("fuse"), types
    assert os.listdir(setup.mnt) == ["other.img"]
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(other) == other_hash


# --------------------------------------------------------------------------
# arguments and options


@pytest.mark.parametrize("opt,pattern", [
    ("queue_depth=0", r"queue_depth"),
    ("queue_depth=abc", r"queue_depth"),
    ("queue_depth=-1", r"queue_depth"),
    ("queue_depth=", r"queue_depth"),
    ("arena=abc", r"arena"),
    ("arena=0", r"arena"),
    ("arena=12Q", r"arena"),
    ("arena=-5M", r"arena"),
    ("reapers=0", r"reapers"),
    ("reapers=abc", r"reapers"),
    ("fuse_threads=0", r"fuse_threads=0.*1 to 64"),
    ("fuse_threads=65", r"fuse_threads"),
    ("io=bogus", r"io=bogus.*direct or cached"),
    ("io=", r"io="),
    ("meta_cache=abc", r"meta_cache=abc.*0 turns it off"),
    ("meta_cache=-1M", r"meta_cache"),
    ("meta_cache=5G", r"meta_cache=5G.*at most 4G"),
    ("poll_us=-1", r"poll_us=-1.*0 to 1000"),
    ("poll_us=1001", r"poll_us"),
    ("poll_us=abc", r"poll_us"),
    ("engine=foo", r"engine=foo: want aio or uring"),
    ("engine=", r"engine=: want aio or uring"),
    ("engine=uring,queue_depth=32769", r"queue_depth=32769.*io_uring.*at most 32768"),
    ("bogus_option=1", r"bogus_option"),
])
def test_bad_option_value(kaiofs_bin, setup, opt, pattern):
    res = _run([kaiofs_bin, "-f", "-o", "raw," + opt, setup.image, setup.mnt], setup.mnt)
    assert_refused(res, pattern, setup)


def test_queue_depth_above_aio_max_nr(kaiofs_bin, setup):
    with open("/proc/sys/fs/aio-max-nr") as f:
        aio_max = int(f.read())
    qd = 100000000
    assert qd > aio_max
    res = _run([kaiofs_bin, "-f", "-o", "raw,queue_depth=%d" % qd, setup.image, setup.mnt],
               setup.mnt)
    assert_refused(res, r"queue_depth|aio|io_setup|resource", setup)


@pytest.mark.parametrize("args", [[], ["ONLY_MNT"], ["IMG", "MNT", "extra"]],
                         ids=["no-args", "one-arg", "three-args"])
def test_wrong_number_of_arguments(kaiofs_bin, setup, args):
    subst = {"ONLY_MNT": setup.mnt, "IMG": setup.image, "MNT": setup.mnt}
    argv = [kaiofs_bin, "-f", "-o", "raw"] + [subst.get(a, a) for a in args]
    res = _run(argv, setup.mnt)
    assert_refused(res, r"usage|missing|device|mount ?point|argument", setup)


def _memlock_prefix(limit_kib):
    return ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--",
            "sh", "-c", 'ulimit -l %d && exec "$@"' % limit_kib, "sh"]


def _require_memlock_env(prefix, limit_kib):
    """Skip unless prefix really gives a process without CAP_IPC_LOCK and
    with the memlock limit asked for."""
    probe = subprocess.run(prefix + ["cat", "/proc/self/status", "/proc/self/limits"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("cannot drop CAP_IPC_LOCK here: %s" % probe.stderr.strip())
    caps = {}
    for line in probe.stdout.splitlines():
        if line.startswith("Cap"):
            key, value = line.split(":")
            caps[key] = int(value, 16)
    m = re.search(r"Max locked memory\s+(\d+)\s+(\d+|unlimited)", probe.stdout)
    cap_ipc_lock = 1 << 14
    if (caps.get("CapEff", cap_ipc_lock) & cap_ipc_lock or
            caps.get("CapPrm", cap_ipc_lock) & cap_ipc_lock or
            caps.get("CapAmb", 0) & cap_ipc_lock or not m or
            int(m.group(1)) != limit_kib * 1024):
        pytest.skip("setpriv/ulimit did not produce a process without CAP_IPC_LOCK and "
                    "with a %d KiB memlock limit: %r" % (limit_kib, probe.stdout))


def _require_real_mlock():
    if kh.SANITIZER_BUILD:
        pytest.skip("AddressSanitizer replaces mlock() with a no-op, so the limit "
                    "cannot be hit")


def _write_read_unmount(m, setup):
    """3 MiB written and read back through the raw file, then on the image."""
    data = os.urandom(3 * kh.MiB)
    with open(m.file, "r+b", buffering=0) as f:
        f.write(data)
        f.seek(0)
        assert f.read(len(data)) == data
    assert m.stop() == 0, m.stderr
    assert kh.read_file(setup.image, 0, len(data)) == data


def test_default_arena_fits_the_memlock_limit(setup, mounter, kaiofs_stat_bin):
    """Without arena=, an unprivileged process gets the arena its memlock
    limit allows (here Debian's default 8 MiB, not the default 64 MiB), and
    works."""
    _require_real_mlock()
    prefix = _memlock_prefix(8 * 1024)
    _require_memlock_env(prefix, 8 * 1024)
    m = mounter.mount(setup.image, options=("raw",), mountpoint=setup.mnt, prefix=prefix)
    assert kh.get_stats(kaiofs_stat_bin, m.mountpoint)["arena"]["size"] == 8 * kh.MiB
    _write_read_unmount(m, setup)


@pytest.mark.parametrize("foreground", [True, False], ids=["f", "daemon"])
def test_arena_above_memlock_limit(kaiofs_bin, setup, foreground):
    _require_real_mlock()
    prefix = _memlock_prefix(1024)
    _require_memlock_env(prefix, 1024)
    argv = [kaiofs_bin] + (["-f"] if foreground else []) + ["-o", "raw,arena=256M",
                                                             setup.image, setup.mnt]
    res = _run(prefix + argv, setup.mnt)
    assert_refused(res, r"RLIMIT_MEMLOCK", setup)


def test_default_arena_with_memlock_limit_below_minimum(kaiofs_bin, setup):
    _require_real_mlock()
    prefix = _memlock_prefix(2048)
    _require_memlock_env(prefix, 2048)
    res = _run(prefix + [kaiofs_bin, "-f", "-o", "raw", setup.image, setup.mnt], setup.mnt)
    assert_refused(res, r"RLIMIT_MEMLOCK.*-o arena", setup)


# --------------------------------------------------------------------------
# io_uring refused by the system: one line, and never the other engine


def test_uring_registration_beyond_memlock_limit(kaiofs_bin, setup):
    """Without CAP_IPC_LOCK each ring's registration of the arena counts
    against the memlock limit: two rings of a 4 MiB arena need more than
    8 MiB (Debian's default limit; the rings count too)."""
    prefix = _memlock_prefix(8 * 1024)
    _require_memlock_env(prefix, 8 * 1024)
    argv = [kaiofs_bin, "-f", "-o", "raw,engine=uring,arena=4M,reapers=2", setup.image,
            setup.mnt]
    res = _run(prefix + argv, setup.mnt)
    assert_refused(res, r"registering the 4 MiB arena with io_uring ring 2 of 2 is beyond "
                   r"the memlock limit \(ulimit -l: 8192 KiB", setup)


def test_uring_default_arena_fits_the_memlock_limit(setup, mounter, kaiofs_stat_bin):
    """Without arena=, the arena an unprivileged process gets leaves room in
    its memlock limit for the ring and the ring's registration of the arena:
    7 MiB of Debian's default 8 MiB."""
    _require_real_mlock()
    prefix = _memlock_prefix(8 * 1024)
    _require_memlock_env(prefix, 8 * 1024)
    m = mounter.mount(setup.image, options=("raw", "engine=uring"), mountpoint=setup.mnt,
                      prefix=prefix)
    stats = kh.get_stats(kaiofs_stat_bin, m.mountpoint)
    assert stats["engine"] == "uring", stats
    assert stats["arena"]["size"] == 7 * kh.MiB, stats["arena"]
    assert stats["uring"]["rings"] == 1, stats["uring"]
    assert stats["uring"]["registered_bytes"] == 7 * kh.MiB, stats["uring"]
    _write_read_unmount(m, setup)


def test_uring_ring_beyond_memlock_limit(kaiofs_bin, setup):
    """The rings count against the memlock limit too (on kernels that count
    them): 32768 entries take about 3 MiB."""
    prefix = _memlock_prefix(2048)
    _require_memlock_env(prefix, 2048)
    res = _run(prefix + [kaiofs_bin, "-f", "-o", "raw,engine=uring,queue_depth=32768",
                         setup.image, setup.mnt], setup.mnt)
    assert_refused(res, r"an io_uring ring of queue_depth=32768 entries is beyond the memlock "
                   r"limit \(ulimit -l: 2048 KiB\)", setup)


IO_URING_DISABLED = "/proc/sys/kernel/io_uring_disabled"


def test_io_uring_disabled_by_sysctl(kaiofs_bin, setup, mounter):
    """kernel.io_uring_disabled=1 allows io_uring only to CAP_SYS_ADMIN (or
    the kernel.io_uring_group): a kaiofs without that capability is refused
    with one line naming the sysctl, and never runs the aio engine instead.
    The sysctl is set only while that kaiofs starts, and restored whatever
    happens: root processes elsewhere keep io_uring meanwhile."""
    if not os.path.exists(IO_URING_DISABLED):
        pytest.skip("this kernel has no kernel.io_uring_disabled sysctl (Linux 6.6 on)")
    prefix = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]
    probe = subprocess.run(prefix + ["grep", "^CapEff", "/proc/self/status"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert not int(probe.stdout.split()[1], 16) & (1 << 21), probe.stdout
    with open(IO_URING_DISABLED) as f:
        saved = f.read().strip()
    try:
        with open(IO_URING_DISABLED, "w") as f:
            f.write("1")
        res = _run(prefix + [kaiofs_bin, "-f", "-o", "raw,engine=uring", setup.image,
                             setup.mnt], setup.mnt)
    finally:
        with open(IO_URING_DISABLED, "w") as f:
            f.write(saved)
    with open(IO_URING_DISABLED) as f:
        assert f.read().strip() == saved
    assert_refused(res, r"io_uring is disabled for this process \(kernel\.io_uring_disabled=1"
                   r".*use -o engine=aio", setup)
    if saved == "0":
        # with the sysctl back, the same mount works
        m = mounter.mount(setup.image, options=("raw", "engine=uring"), mountpoint=setup.mnt)
        assert m.stop() == 0, m.stderr


# --------------------------------------------------------------------------
# kaiofs-stat on paths that are not kaiofs mounts


@pytest.mark.parametrize("target", ["plain-dir", "missing", "tmpfs", "regular-file"])
@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "table"])
def test_stat_on_foreign_path(kaiofs_stat_bin, setup, target, json_flag):
    path = setup.path(target)
    if target == "plain-dir":
        os.mkdir(path)
    elif target == "tmpfs":
        setup.mount_fs("tmpfs", path)
    elif target == "regular-file":
        with open(path, "w") as f:
            f.write("hello\n")
    r = kh.run_stat(kaiofs_stat_bin, path, json_output=json_flag)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0, "kaiofs-stat succeeded on %s: %r" % (target, r.stdout)
    assert len(lines) == 1, "expected one line on stderr, got %r" % r.stderr
    assert len(lines[0]) > 10, lines


def test_stat_usage_errors(kaiofs_stat_bin):
    r = subprocess.run([kaiofs_stat_bin], capture_output=True, text=True,
                       timeout=kh.tmo(20))
    assert r.returncode != 0
    assert r.stderr.strip(), "no message without arguments"
