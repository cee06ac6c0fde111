"""mount(8), umount(8) and /etc/fstab with kaiofs: the helpers
/sbin/mount.kaiofs and /sbin/umount.kaiofs (also umount.fuse.kaiofs), and
the type fuse.kaiofs through mount.fuse3.

These run the installed programs (tests/run install, which tests/run test
does after building): mount(8) finds kaiofs in its own PATH, starting
with /usr/local/sbin."""

import contextlib
import filecmp
import os
import re
import signal
import subprocess
import tempfile

import pytest

import fs_support
import kaiofs_helpers as kh
from conftest import KAIOFS_BIN, REPO_ROOT

SBIN = "/sbin"
INSTALLED_KAIOFS = "/usr/local/sbin/kaiofs"
HELPERS = {"mount.kaiofs": "mount.kaiofs", "umount.kaiofs": "umount.kaiofs",
           "umount.fuse.kaiofs": "umount.kaiofs"}


@pytest.fixture(scope="module")
def installed():
    """The helpers and kaiofs installed from this tree, or a skip saying
    what is missing."""
    for name, source in HELPERS.items():
        path = os.path.join(SBIN, name)
        if not os.path.exists(path):
            pytest.skip("%s is not installed (run tests/run install)" % path)
        if not filecmp.cmp(path, os.path.join(REPO_ROOT, "mount-helpers", source),
                           shallow=False):
            pytest.skip("%s differs from mount-helpers/%s (run tests/run install)"
                        % (path, source))
    if not os.path.exists(INSTALLED_KAIOFS):
        pytest.skip("%s is not installed (run tests/run install)" % INSTALLED_KAIOFS)
    if not filecmp.cmp(INSTALLED_KAIOFS, KAIOFS_BIN, shallow=False):
        pytest.skip("%s is not the kaiofs under test (%s); run tests/run install"
                    % (INSTALLED_KAIOFS, KAIOFS_BIN))


# --------------------------------------------------------------------------
# the daemon behind a mount


def mount_entry(mnt):
    """(devno, fstype, source, options) of the topmost mount at mnt, or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if kh._unescape_mountinfo(parts[4]) != mnt:
                continue
            sep = parts.index("-", 6)
            found = (parts[2], parts[sep + 1], kh._unescape_mountinfo(parts[sep + 2]),
                     parts[5].split(",") + parts[sep + 3].split(","))
    return found


def daemon_pids(mnt):
    """Pids holding the /dev/fuse descriptor of the FUSE connection mounted
    at mnt (fdinfo names the connection), else those with mnt on their
    command line."""
    entry = mount_entry(mnt)
    pids = set()
    if entry and entry[0].startswith("0:"):
        conn = entry[0].split(":")[1]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            fd_dir = "/proc/%s/fd" % pid
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) != "/dev/fuse":
                        continue
                    with open("/proc/%s/fdinfo/%s" % (pid, fd)) as f:
                        if re.search(r"(?m)^fuse_connection:\s*%s$" % conn, f.read()):
                            pids.add(int(pid))
                except OSError:
                    continue
    if not pids:
        pids.update(kh.find_pids_by_cmdline(mnt))
    return sorted(pids)


# --------------------------------------------------------------------------
# running mount and umount


def run(argv, timeout=60, env=None, cwd=None):
    """Run mount or umount. Their output goes to files: a kaiofs started by
    mount keeps the stderr it was given, so a pipe would not reach its end
    before the unmount."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=kh.tmo(timeout), env=env, cwd=cwd)
        out.seek(0)
        err.seek(0)
        return kh.FailedRun(proc.returncode, out.read(), err.read(), argv)


class Mounts:
    """Mounts made by mount(8) in one test; whatever is left is unmounted
    and its kaiofs waited for (or killed) afterwards."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.mountpoints = []
        self.pids = set()
        self._n = 0

    def mountpoint(self):
        self._n += 1
        path = os.path.join(self.workdir, "mnt%d" % self._n)
        os.mkdir(path)
        self.mountpoints.append(path)
        return path

    def stderr_file(self, name):
        return open(os.path.join(self.workdir, name), "w+")

    def mount(self, argv, mnt, stderr_name="mount.stderr"):
        """Run a mount command whose kaiofs will serve mnt; returns its result."""
        with self.stderr_file(stderr_name) as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                  timeout=kh.tmo(60))
            err.seek(0)
            res = kh.FailedRun(proc.returncode, "", err.read(), argv)
        self.pids.update(daemon_pids(mnt))
        return res

    def cleanup(self):
        problems = []
        for mnt in self.mountpoints:
            if mount_entry(mnt):
                # a test that failed half way
                self.pids.update(daemon_pids(mnt))
                for pid in self.pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                # umount(8) also drops the mount's line from libmount's utab
                run(["umount", mnt], env=dict(os.environ, KAIOFS_UMOUNT_TIMEOUT="30"))
                if not kh.force_unmount(mnt):
                    problems.append("could not unmount %s" % mnt)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            if not kh.wait_for(lambda: not kh.pid_alive(pid), kh.tmo(30)):
                problems.append("kaiofs pid %d still running after the unmount; killed" % pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kh.wait_for(lambda: not kh.pid_alive(pid), kh.tmo(30))
        return problems


@pytest.fixture
def mounts(workdir, installed):
    m = Mounts(workdir)
    yield m
    problems = m.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


def make_volume(workdir, name="vol.img", size=32 * kh.MiB):
    return fs_support.mkfs(os.path.join(workdir, name), size=size)


def assert_mounted_as_kaiofs(mnt, image):
    entry = mount_entry(mnt)
    assert entry is not None, "nothing mounted on %s" % mnt
    devno, fstype, source, _ = entry
    assert fstype == "fuse.kaiofs", \
        "the mount table shows type %r for %s, not fuse.kaiofs: umount(8) will not run " \
        "umount.fuse.kaiofs for it (kaiofs should default to -o subtype=kaiofs)" % (fstype, mnt)
    assert source == image, "the mount table shows source %r, not %r" % (source, image)
    return entry


def utab_options(mnt):
    """The options libmount keeps for mnt in its utab (None: no line)."""
    try:
        with open("/run/mount/utab") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields.get("TARGET") == mnt:
            return fields.get("OPTS", "").split(",")
    return None


def umount_and_check(mnt, image, pids, relative=False):
    """umount MNT (an absolute path, or relative to its parent); when it
    returns the daemon must be gone and the volume clean."""
    if relative:
        r = run(["umount", os.path.basename(mnt)], cwd=os.path.dirname(mnt))
    else:
        r = run(["umount", mnt])
    assert r.returncode == 0, "umount %s: %r" % (mnt, r)
    assert mount_entry(mnt) is None
    assert utab_options(mnt) is None, "umount left %s in /run/mount/utab" % mnt
    alive = [p for p in pids if kh.pid_alive(p)]
    assert not alive, "kaiofs %r still running when umount returned" % alive
    fs_support.assert_fsck_clean(image)


# --------------------------------------------------------------------------
# mount -t kaiofs


def test_mount_t_kaiofs_passes_options_and_umount_waits(mounts, workdir):
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    r = mounts.mount(["mount", "-t", "kaiofs", "-o", "stats,queue_depth=64,reapers=2,"
                      "noatime,nofail,_netdev,user", image, mnt], mnt)
    assert r.returncode == 0, r
    _, _, _, options = assert_mounted_as_kaiofs(mnt, image)
    # "user" implies noexec,nosuid,nodev; noatime reached the kernel
    assert {"noatime", "noexec", "nosuid", "nodev"} <= set(options), options
    pids = daemon_pids(mnt)
    assert len(pids) == 1, "expected one kaiofs serving %s, found %r" % (mnt, pids)
    # what umount(8) needs to run umount.kaiofs for an absolute path; mount(8)
    # keeps _netdev there too
    assert set(utab_options(mnt) or []) == {"helper=kaiofs", "_netdev"}, utab_options(mnt)
    with open(os.path.join(mnt, "file"), "wb") as f:
        f.write(b"kaiofs through mount(8)\n" * 1000)
    # the kaiofs options reached the daemon; the generic ones did not
    with open("/proc/%d/cmdline" % next(iter(pids)), "rb") as f:
        argv = f.read().decode().split("\0")
    opts = ",".join(argv[argv.index("-o") + 1:argv.index("-o") + 2]).split(",")
    assert {"stats", "queue_depth=64", "reapers=2"} <= set(opts), argv
    assert not {"nofail", "_netdev", "user"} & set(opts), argv
    umount_and_check(mnt, image, pids)
    with fs_support.kernel_mount(image, os.path.join(workdir, "k")) as k:
        with open(os.path.join(k, "file"), "rb") as f:
            assert f.read() == b"kaiofs through mount(8)\n" * 1000


def test_umount_waits_for_the_daemon_to_finish(mounts, workdir):
    """With the daemon stopped, the kernel's unmount completes but umount(8)
    must not return until kaiofs has finished and exited. (umount -c, as
    systemd runs it: without it umount would first stat the mountpoint,
    which a stopped daemon does not answer.)"""
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    assert mounts.mount(["mount", "-t", "kaiofs", image, mnt], mnt).returncode == 0
    assert_mounted_as_kaiofs(mnt, image)
    with open(os.path.join(mnt, "file"), "wb") as f:
        f.write(os.urandom(256 * 1024))
    pids = daemon_pids(mnt)
    assert len(pids) == 1, pids
    pid = pids[0]
    with tempfile.TemporaryFile("w+") as err:
        os.kill(pid, signal.SIGSTOP)
        try:
            proc = subprocess.Popen(["umount", "-c", mnt], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err)
            try:
                assert kh.wait_for(lambda: mount_entry(mnt) is None, kh.tmo(20)), \
                    "the kernel did not unmount %s" % mnt
                returned = kh.wait_for(lambda: proc.poll() is not None, 1.0)
                assert not returned, \
                    "umount returned (%r) while kaiofs (pid %d) was stopped" % (proc.returncode,
                                                                              pid)
            finally:
                os.kill(pid, signal.SIGCONT)
                try:
                    rc = proc.wait(timeout=kh.tmo(60))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        err.seek(0)
        assert rc == 0, "umount exited %d: %s" % (rc, err.read())
    assert not kh.pid_alive(pid), "umount returned before kaiofs exited"
    fs_support.assert_fsck_clean(image)


def test_umount_then_mount_again_at_once(mounts, workdir):
    """An image is locked by its kaiofs until it exits: mounting it again right
    after umount works only if umount waited."""
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    for round_ in range(3):
        r = mounts.mount(["mount", "-t", "kaiofs", image, mnt], mnt,
                         stderr_name="mount%d.stderr" % round_)
        assert r.returncode == 0, "round %d: %r" % (round_, r)
        os.mkdir(os.path.join(mnt, "d%d" % round_))
        umount_and_check(mnt, image, daemon_pids(mnt), relative=round_ == 1)


def test_mount_read_only(mounts, workdir):
    image = make_volume(workdir)
    digest = kh.sha256_file(image)
    mnt = mounts.mountpoint()
    r = mounts.mount(["mount", "-t", "kaiofs", "-o", "ro", image, mnt], mnt)
    assert r.returncode == 0, r
    _, _, _, options = assert_mounted_as_kaiofs(mnt, image)
    assert "ro" in options, options
    with pytest.raises(OSError) as e:
        open(os.path.join(mnt, "new"), "w").close()
    assert e.value.errno == 30, e.value  # EROFS
    umount_and_check(mnt, image, daemon_pids(mnt))
    assert kh.sha256_file(image) == digest, "a read-only mount changed the image"


def test_mount_t_fuse_kaiofs_through_mount_fuse3(mounts, workdir):
    """mount.fuse3 runs kaiofs; helper=kaiofs (kept in utab by mount(8)) makes
    umount wait, and must not reach kaiofs as an option."""
    if not os.path.exists("/sbin/mount.fuse3"):
        pytest.skip("/sbin/mount.fuse3 is not installed (package fuse3)")
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    r = mounts.mount(["mount", "-t", "fuse.kaiofs", "-o", "helper=kaiofs,stats,noauto,"
                      "nofail,_netdev", image, mnt], mnt)
    assert r.returncode == 0, r
    pids = daemon_pids(mnt)
    assert_mounted_as_kaiofs(mnt, image)
    assert "helper=kaiofs" in (utab_options(mnt) or []), utab_options(mnt)
    with open(os.path.join(mnt, "file"), "wb") as f:
        f.write(b"x" * 100000)
    umount_and_check(mnt, image, pids)


def test_kaiofs_run_directly_then_umount(mounts, workdir):
    """kaiofs started by hand names its mount fuse.kaiofs, so umount(8) runs
    umount.fuse.kaiofs whenever it reads the mount table: for a relative path,
    or with -c."""
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    for round_, umount_argv in enumerate((["umount", "-c", mnt],
                                          ["umount", os.path.basename(mnt)])):
        r = mounts.mount([INSTALLED_KAIOFS, image, mnt], mnt,
                         stderr_name="kaiofs%d.stderr" % round_)
        assert r.returncode == 0, r
        assert_mounted_as_kaiofs(mnt, image)
        pids = daemon_pids(mnt)
        assert len(pids) == 1, pids
        with open(os.path.join(mnt, "f%d" % round_), "wb") as f:
            f.write(os.urandom(300000))
        r = run(umount_argv, cwd=workdir)
        assert r.returncode == 0, r
        assert mount_entry(mnt) is None
        assert not kh.pid_alive(pids[0]), \
            "%r returned before kaiofs (pid %d) exited" % (umount_argv, pids[0])
        fs_support.assert_fsck_clean(image)


# --------------------------------------------------------------------------
# fstab


def write_fstab(workdir, lines):
    path = os.path.join(workdir, "fstab")
    with open(path, "w") as f:
        f.write("# kaiofs test\n" + "".join(" ".join(fields) + "\n" for fields in lines))
    return path


def test_fstab_noauto_and_nofail(mounts, workdir):
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    missing_mnt = mounts.mountpoint()
    missing = os.path.join(workdir, "missing.img")
    fstab = write_fstab(workdir, [
        (image, mnt, "kaiofs",
         "noauto,nofail,stats,arena=16M,x-systemd.device-timeout=5s,comment=test,defaults",
         "0", "0"),
        (missing, missing_mnt, "kaiofs", "nofail", "0", "0"),
    ])
    # mount -a: the noauto line is skipped, the missing device with nofail is no error
    r = mounts.mount(["mount", "-a", "-T", fstab], mnt)
    assert r.returncode == 0, r
    assert mount_entry(mnt) is None, "mount -a mounted a noauto line"
    assert mount_entry(missing_mnt) is None
    # mount MOUNTPOINT: the line is found in the fstab given
    r = mounts.mount(["mount", "-T", fstab, mnt], mnt)
    assert r.returncode == 0, r
    assert_mounted_as_kaiofs(mnt, image)
    with open(os.path.join(mnt, "f"), "w") as f:
        f.write("fstab\n")
    umount_and_check(mnt, image, daemon_pids(mnt))
    r = mounts.mount(["mount", "-T", fstab, missing_mnt], missing_mnt)
    assert r.returncode == 0, r
    assert mount_entry(missing_mnt) is None


def test_missing_device_without_nofail_fails(mounts, workdir):
    mnt = mounts.mountpoint()
    missing = os.path.join(workdir, "missing.img")
    fstab = write_fstab(workdir, [(missing, mnt, "kaiofs", "defaults", "0", "0")])
    for argv in (["mount", "-T", fstab, mnt], ["mount", "-t", "kaiofs", missing, mnt]):
        r = mounts.mount(argv, mnt)
        assert r.returncode == 32, r
        assert missing in r.stderr, r
        assert mount_entry(mnt) is None
    r = mounts.mount(["mount", "-t", "kaiofs", "-o", "nofail", missing, mnt], mnt)
    assert r.returncode == 0 and mount_entry(mnt) is None, r


def test_mount_helper_option_filter(installed, workdir):
    """-f (fake) -v shows the kaiofs command without mounting: the options of
    mount(8), fstab and systemd are gone, kaiofs' and the kernel's remain."""
    image = make_volume(workdir, size=8 * kh.MiB)
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    given = ("defaults,auto,noauto,user,nouser,users,owner,group,_netdev,nofail,rw,"
             "comment=a\\,b,x-systemd.automount,x-initrd.mount,"
             "ro,raw,stats,arena=8M,queue_depth=32,reapers=2,io=direct,noatime,nosuid,"
             "allow_other")
    r = run([os.path.join(SBIN, "mount.kaiofs"), image, mnt, "-fv", "-o", given])
    assert r.returncode == 0, r
    assert mount_entry(mnt) is None
    m = re.search(r"^mount\.kaiofs: (\S+) -o (\S+) (\S+) (\S+)$", r.stderr, re.M)
    assert m, r.stderr
    assert m.group(1) == INSTALLED_KAIOFS and m.group(3) == image and m.group(4) == mnt, \
        r.stderr
    assert m.group(2).split(",") == [
        "ro", "raw", "stats", "arena=8M", "queue_depth=32", "reapers=2", "io=direct",
        "noatime", "nosuid", "allow_other", "subtype=kaiofs", "fsname=" + image], r.stderr


def test_umount_helper_lazy_and_errors(mounts, workdir):
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    r = run([os.path.join(SBIN, "umount.fuse.kaiofs"), mnt])
    assert r.returncode != 0, "unmounting what is not mounted succeeded: %r" % r
    assert mounts.mount(["mount", "-t", "kaiofs", image, mnt], mnt).returncode == 0
    pids = daemon_pids(mnt)
    r = run(["umount", "-l", mnt])
    assert r.returncode == 0, r
    assert mount_entry(mnt) is None
    # lazy: no wait, but kaiofs still finishes on its own
    assert kh.wait_for(lambda: not any(kh.pid_alive(p) for p in pids), kh.tmo(30)), pids
    fs_support.assert_fsck_clean(image)


def test_umount_reports_a_daemon_that_does_not_exit(mounts, workdir):
    """KAIOFS_UMOUNT_TIMEOUT bounds the wait; past it umount fails (32) and
    says which kaiofs is still running."""
    image = make_volume(workdir)
    mnt = mounts.mountpoint()
    assert mounts.mount(["mount", "-t", "kaiofs", image, mnt], mnt).returncode == 0
    pids = daemon_pids(mnt)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGSTOP)
    try:
        r = run(["umount", "-c", mnt], env=dict(os.environ, KAIOFS_UMOUNT_TIMEOUT="1"))
    finally:
        os.kill(pids[0], signal.SIGCONT)
    assert r.returncode == 32, r
    assert "kaiofs (pid %d) has not exited" % pids[0] in r.stderr, r
    assert mount_entry(mnt) is None
    assert kh.wait_for(lambda: not kh.pid_alive(pids[0]), kh.tmo(30))
    fs_support.assert_fsck_clean(image)
