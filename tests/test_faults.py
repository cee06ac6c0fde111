"""kaiofs on a device that fails: power cuts at many points of a workload;
read, write and flush errors; a device that goes away while mounted.

The device is faultdev (tests/faultdev/faultdev.c): a FUSE file that serves
an image, fails requests on command and logs every write and fsync. kaiofs
mounts it as an image file, or through a loop device on it.

Environment:
  KAIOFS_FAULTS_KEEP   a directory: the power-cut test copies the base image,
                       the write log and every cut image that failed a check
                       into it, to reproduce a failure by hand
"""

import contextlib
import errno
import os
import random
import re
import shutil
import stat
import subprocess
import time

import pytest

import faultdev_support as fds
import fs_support
import kaiofs_helpers as kh
from kaiofs_helpers import MiB

KiB = 1024
FS_BLOCK = 4096
VOLUME_SIZE = 32 * MiB

# power-cut sample sizes: in the default suite, and in the slow variant
CUTS_DEFAULT = 40
CUTS_SLOW = 240

# Bytes of files the workload deletes: no other file may ever show them.
VICTIM_TAG = b"KAIOFS-DELETED-DATA "
VICTIM_RE = re.compile(re.escape(VICTIM_TAG) + rb"(\S+) ")


# --------------------------------------------------------------------------
# the rig: faultdev processes, loop devices on them, kaiofs mounts on those


class FaultRig:
    """Starts faultdev devices for one test. Cleanup goes from the top down:
    kaiofs mounts, loop devices, then faultdev."""

    def __init__(self, binary, workdir, mounter, engine):
        self.binary = binary
        self.workdir = workdir
        self.mounter = mounter
        self.engine = engine    # "engine=NAME", given to every kaiofs mount
        self.devices = []
        self.loops = []

    def volume(self, name="vol.img", size=VOLUME_SIZE):
        image = os.path.join(self.workdir, name)
        return fs_support.mkfs(image, "ext4", size=size, args=("-b", str(FS_BLOCK)))

    def device(self, image, log=None):
        mnt = os.path.join(self.workdir, "faultdev%d" % (len(self.devices) + 1))
        dev = fds.Faultdev(self.binary, image, mnt, log=log)
        self.devices.append(dev)
        dev.start()
        return dev

    def target(self, dev, via):
        """What kaiofs is given: the faultdev file itself, or a loop device on it."""
        if via == "file":
            return dev.disk
        loop = kh.losetup_attach(dev.disk)
        self.loops.append(loop)
        return loop

    def kaiofs(self, target, options=()):
        return self.mounter.mount(target, options=tuple(options) + (self.engine,))

    def cleanup(self):
        problems = self.mounter.cleanup()
        for loop in self.loops:
            err = kh.losetup_detach(loop)
            if err:
                problems.append(err)
        self.loops = []
        for dev in self.devices:
            problems += dev.cleanup()
        return problems


@pytest.fixture
def rig(kaiofs_bin, workdir, mounter, engine):
    """Every test of this file runs with each engine."""
    binary = fds.faultdev_binary(kaiofs_bin)
    if not os.access(binary, os.X_OK):
        pytest.fail("%s is missing (it is built with kaiofs; set FAULTDEV_BIN)" % binary,
                    pytrace=False)
    r = FaultRig(binary, workdir, mounter, engine)
    yield r
    problems = r.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# helpers


def victim_data(name, size):
    """Content of a file that will be deleted: 64-byte records naming it."""
    records = []
    for i in range((size + 63) // 64):
        records.append((VICTIM_TAG + b"%s %08d " % (name.encode(), i)).ljust(63, b"~") + b"\n")
    return b"".join(records)[:size]


def errno_of(fn, *args):
    """0 when fn(*args) succeeds, else the errno of its OSError."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def write_file(path, data, sync=True):
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        kh.pwrite_all(fd, data, 0)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_blocks(image, rel):
    """Device block numbers of a file, as debugfs reads them from the image."""
    r = subprocess.run(["debugfs", "-R", "blocks /" + rel, image], capture_output=True,
                       text=True, timeout=kh.tmo(60))
    blocks = [int(b) for b in r.stdout.split()]
    assert blocks, "debugfs found no blocks of %s in %s: %s" % (rel, image, r.stderr)
    return blocks


def superblock_state(image):
    r = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True,
                       timeout=kh.tmo(60))
    for line in r.stdout.splitlines():
        if line.startswith("Filesystem state:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("dumpe2fs -h %s printed no state: %s" % (image, r.stderr))


def crash_copy(image, workdir, name="crash.img"):
    """The device's content now, repaired as after a power cut."""
    copy = os.path.join(workdir, name)
    shutil.copyfile(image, copy)
    rc, out = fs_support.fsck(copy, fix=True)
    assert rc in (0, 1), "e2fsck -fy of a copy taken while mounted: exit %d\n%s" % (rc, out)
    return copy


def debugfs_cat(image, rel):
    r = subprocess.run(["debugfs", "-R", "cat /" + rel, image], capture_output=True,
                       timeout=kh.tmo(60))
    return r.stdout


def stderr_lines(mount):
    return [line for line in mount.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------
# kaiofs works on faultdev


@pytest.mark.parametrize("via", ["file", "loop"])
def test_kaiofs_runs_on_faultdev(rig, via, rng):
    image = rig.volume()
    dev = rig.device(image)
    m = rig.kaiofs(rig.target(dev, via))
    data = rng.randbytes(3 * MiB + 1234)
    write_file(os.path.join(m.mountpoint, "f"), data)
    kh.assert_same_data(kh.read_file(os.path.join(m.mountpoint, "f")), data, "f")
    st = dev.status()
    assert st["reads"] > 0 and st["writes"] > 0 and st["flushes"] > 0, \
        "kaiofs' I/O did not go through faultdev: %r" % st
    assert m.stop() == 0, m.stderr
    fs_support.assert_fsck_clean(image)
    with fs_support.kernel_mount(image, os.path.join(rig.workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, "f")), data, "f (kernel ext4)")


# --------------------------------------------------------------------------
# power cuts


class Workload:
    """Creates, writes, fsyncs, renames, truncates and deletes files on a
    kaiofs mount, and notes in faultdev's log what had returned when:

      "synced REL KEY"  REL's last fsync returned; its content is contents[KEY]
      "change REL"      REL is about to change (renamed, rewritten, deleted)

    Files it deletes ("victims") hold victim_data(); their inode numbers are
    kept in victims[name] = (rel, ino)."""

    DIRS = ("", "d1", "d2")

    def __init__(self, mnt, dev, rng):
        self.mnt = mnt
        self.dev = dev
        self.rng = rng
        self.contents = []
        self.synced = {}
        self.victims = {}
        self.counter = 0
        self.ops = {}

    def path(self, rel):
        return os.path.join(self.mnt, rel)

    def new_rel(self, prefix):
        self.counter += 1
        return os.path.join(self.rng.choice(self.DIRS), "%s%03d" % (prefix, self.counter))

    def note(self, op):
        self.ops[op] = self.ops.get(op, 0) + 1

    def mark_synced(self, rel, data):
        self.contents.append(data)
        self.synced[rel] = data
        self.dev.mark("synced %s %d" % (rel, len(self.contents) - 1))

    def mark_change(self, rel):
        self.synced.pop(rel, None)
        self.dev.mark("change %s" % rel)

    def write_chunks(self, fd, data, offset=0):
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, self.rng.choice((700, 4096, 10000, 65536, 300000)))
            kh.pwrite_all(fd, data[pos:pos + n], offset + pos)
            pos += n

    def fsync_dir(self, rel):
        fsync_path(self.path(os.path.dirname(rel)))

    def setup(self):
        for d in self.DIRS[1:]:
            os.mkdir(self.path(d))
        fsync_path(self.mnt)

    def create(self, size, sync=True):
        rel = self.new_rel("f")
        data = self.rng.randbytes(size)
        fd = os.open(self.path(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            self.write_chunks(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if sync:
            self.mark_synced(rel, data)
        self.note("create" if sync else "create-nosync")

    def create_victim(self, size, sync):
        rel = self.new_rel("v")
        fd = os.open(self.path(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            self.write_chunks(fd, victim_data(os.path.basename(rel), size))
            if sync:
                os.fsync(fd)
            self.victims[os.path.basename(rel)] = (rel, os.fstat(fd).st_ino)
        finally:
            os.close(fd)
        self.note("victim")
        return rel

    def delete(self, rel):
        self.mark_change(rel)
        os.unlink(self.path(rel))
        if self.rng.random() < 0.5:
            self.fsync_dir(rel)
        self.note("unlink")

    def pick_synced(self):
        return self.rng.choice(sorted(self.synced)) if self.synced else None

    def rename_one(self):
        src = self.pick_synced()
        if src is None:
            return
        data = self.synced[src]
        others = [r for r in sorted(self.synced) if r != src]
        dst = self.rng.choice(others) if others and self.rng.random() < 0.4 else self.new_rel("r")
        self.mark_change(src)
        self.mark_change(dst)
        os.rename(self.path(src), self.path(dst))
        self.fsync_dir(src)
        self.fsync_dir(dst)
        self.mark_synced(dst, data)
        self.note("rename")

    def overwrite_one(self):
        rel = self.pick_synced()
        if rel is None:
            return
        data = self.synced[rel]
        off = self.rng.randrange(len(data) + 1)
        new = self.rng.randbytes(self.rng.randrange(1, 100000))
        self.mark_change(rel)
        fd = os.open(self.path(rel), os.O_WRONLY)
        try:
            self.write_chunks(fd, new, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.mark_synced(rel, data[:off] + new + data[off + len(new):])
        self.note("overwrite")

    def truncate_one(self):
        rel = self.pick_synced()
        if rel is None:
            return
        data = self.synced[rel]
        size = self.rng.randrange(len(data) + 1)
        self.mark_change(rel)
        fd = os.open(self.path(rel), os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.mark_synced(rel, data[:size])
        self.note("truncate")

    def fallocate_one(self):
        rel = self.new_rel("a")
        size = self.rng.randrange(16 * KiB, 300 * KiB)
        off = self.rng.randrange(size)
        part = self.rng.randbytes(self.rng.randrange(1, 40000))
        fd = os.open(self.path(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
            kh.pwrite_all(fd, part, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        data = bytes(size)
        self.mark_synced(rel, data[:off] + part + data[off + len(part):])
        self.note("fallocate")

    def unlink_one(self):
        rel = self.pick_synced()
        if rel is not None:
            self.delete(rel)

    def run(self, rounds):
        self.setup()
        changes = (self.rename_one, self.overwrite_one, self.truncate_one,
                   self.fallocate_one, self.unlink_one)
        for _ in range(rounds):
            for _ in range(3):
                self.create(self.rng.randrange(1, 160 * KiB), sync=self.rng.random() < 0.7)
            victims = [self.create_victim(self.rng.randrange(32 * KiB, 256 * KiB),
                                          sync=self.rng.random() < 0.8) for _ in range(2)]
            for rel in victims:
                self.delete(rel)
            # new files right after the deletes take the freed blocks
            for _ in range(2):
                self.create(self.rng.randrange(16 * KiB, 256 * KiB))
            for _ in range(2):
                self.rng.choice(changes)()


def expectations(marks):
    """{rel: content key} of the files whose fsync had returned, from the
    workload's marks."""
    expected = {}
    for text in marks:
        words = text.split()
        if words[0] == "synced":
            expected[words[1]] = int(words[2])
        elif words[0] == "change":
            expected.pop(words[1], None)
    return expected


def victim_reuse(log):
    """How many writes without victim data land on bytes that earlier
    writes filled with victim data: the workload did reuse freed blocks."""
    victim_ranges = []
    reused = 0
    with open(log.data_path, "rb") as f:
        for w in log.writes:
            f.seek(w.dataoff)
            data = f.read(w.length)
            if VICTIM_TAG in data:
                victim_ranges.append((w.offset, w.offset + w.length))
            elif any(w.offset < end and start < w.offset + w.length
                     for start, end in victim_ranges):
                reused += 1
    return reused


@contextlib.contextmanager
def kernel_mount_ro(image, mnt):
    """A read-only mount of the image by the kernel's ext4 (no journal
    replay); yields None when the kernel refuses it."""
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "ext4", "-o", "ro,noload,loop", image, mnt],
                       capture_output=True, text=True, timeout=kh.tmo(60))
    if r.returncode != 0:
        yield "kernel mount failed: %s" % r.stderr.strip()
        return
    try:
        yield None
    finally:
        r = subprocess.run(["umount", mnt], capture_output=True, timeout=kh.tmo(60))
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=kh.tmo(60))
        for loop in kh.loop_devices_for(image):
            kh.losetup_detach(loop)


def victim_leaks(rel, ino, data, victims):
    """Problems: data of deleted files in a file that is not that file."""
    problems = []
    for name in sorted(set(m.group(1).decode() for m in VICTIM_RE.finditer(data))):
        vrel, vino = victims.get(name, (None, None))
        if vino == ino and (rel == vrel or rel.startswith("lost+found/")):
            continue  # the deleted file itself: its deletion had not reached the device
        problems.append("%s (inode %d) holds data of the deleted file %s (inode %s)"
                        % (rel, ino, vrel or name, vino))
    return problems


def check_cut(image, mnt, expected, workload):
    """Repair a cut image with e2fsck -fy and check it: (problems, whether
    e2fsck had to repair it)."""
    rc, out = fs_support.fsck(image, fix=True)
    if rc not in (0, 1):
        return ["e2fsck -fy exited %d:\n%s" % (rc, out[-3000:])], True
    repaired = rc == 1
    rc, out = fs_support.fsck(image)
    problems = [] if rc == 0 else ["e2fsck -fn after e2fsck -fy exited %d:\n%s"
                                   % (rc, out[-3000:])]
    found = {}
    with kernel_mount_ro(image, mnt) as refused:
        if refused:
            return problems + [refused], repaired
        for root, _, files in os.walk(mnt):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, mnt)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                data = kh.read_file(path)
                found[rel] = data
                problems += victim_leaks(rel, st.st_ino, data, workload.victims)
    for rel, key in sorted(expected.items()):
        want = workload.contents[key]
        if rel not in found:
            problems.append("%s: its fsync had returned, but it is missing" % rel)
        elif found[rel] != want:
            problems.append("%s: its fsync had returned, but %s" % (
                rel, kh.describe_difference(found[rel], want)))
    return problems, repaired


def keep_artifacts(keep_dir, files):
    os.makedirs(keep_dir, exist_ok=True)
    for src, name in files:
        shutil.copyfile(src, os.path.join(keep_dir, name))


class PowerCutRun:
    """Runs the workload on kaiofs over a logging faultdev, then builds and
    checks the image of each sampled cut."""

    def __init__(self, rig, rng, seed):
        self.rig = rig
        self.rng = rng
        self.seed = seed
        self.base = os.path.join(rig.workdir, "base.img")
        self.log_path = os.path.join(rig.workdir, "writes.log")
        self.keep = None
        if os.environ.get("KAIOFS_FAULTS_KEEP"):
            self.keep = os.path.join(os.environ["KAIOFS_FAULTS_KEEP"], "seed%d" % seed)

    def record(self, rounds):
        image = self.rig.volume()
        shutil.copyfile(image, self.base)
        dev = self.rig.device(image, log=self.log_path)
        m = self.rig.kaiofs(dev.disk)
        self.workload = Workload(m.mountpoint, dev, self.rng)
        self.workload.run(rounds)
        assert m.stop() == 0, m.stderr
        assert dev.stop() == 0, dev.stderr
        fs_support.assert_fsck_clean(image)
        self.log = fds.WriteLog(self.log_path)
        if self.keep:
            keep_artifacts(self.keep, [(self.base, "base.img"), (self.log_path, "writes.log"),
                                       (self.log.data_path, "writes.log.data")])

    def check(self, ncuts, lose_writes):
        """Check ncuts sampled cuts; with lose_writes, each write after the
        last fsync before a cut is lost with probability 1/2."""
        log = self.log
        nwrites = len(log.writes)
        candidates = range(nwrites + 1)
        if lose_writes:
            # only cuts with writes no fsync covers yet differ from in-order ones
            candidates = [n for n in candidates if log.durable(n) < n]
        cuts = sorted(self.rng.sample(candidates, min(ncuts, len(candidates))))
        cut_image = os.path.join(self.rig.workdir, "cut.img")
        kmnt = os.path.join(self.rig.workdir, "kernel")
        failures = []
        lost = repaired = fsynced = 0
        t0 = time.monotonic()
        with fds.CutImages(self.base, log, self.rig.workdir) as builder:
            for n in cuts:
                drop_rng = random.Random(self.rng.random()) if lose_writes else None
                dropped = builder.build(n, cut_image, rng=drop_rng)
                lost += len(dropped)
                if self.keep:
                    shutil.copyfile(cut_image, os.path.join(self.keep, "cut.img"))
                expected = expectations(log.marks_before(n))
                fsynced += len(expected)
                problems, fixed = check_cut(cut_image, kmnt, expected, self.workload)
                repaired += fixed
                if problems:
                    failures.append((n, dropped, problems))
                    if self.keep:
                        os.rename(os.path.join(self.keep, "cut.img"),
                                  os.path.join(self.keep, "cut%d.img" % n))
        if self.keep and os.path.exists(os.path.join(self.keep, "cut.img")):
            os.unlink(os.path.join(self.keep, "cut.img"))
        print("power cuts: %d writes logged (%d over deleted files' blocks), %d fsyncs, "
              "%d marks; workload %r; %d cuts checked in %.1fs, %d repaired by e2fsck, "
              "%d writes lost in them, %d fsync'ed files compared, %d cuts fail"
              % (nwrites, victim_reuse(log), len(log.flushes), len(log.marks),
                 self.workload.ops, len(cuts), time.monotonic() - t0, repaired, lost,
                 fsynced, len(failures)))
        self.report(failures, len(cuts))

    def report(self, failures, ncuts):
        if not failures:
            return
        nwrites = len(self.log.writes)
        lines = []
        for n, dropped, problems in failures[:6]:
            lines.append("cut after write %d of %d (log seq %s), lost writes %s:"
                         % (n, nwrites, self.log.end_seq(n), dropped[:20]))
            lines += ["    " + p for p in problems[:8]]
        where = ("artifacts in %s" % self.keep if self.keep
                 else "set KAIOFS_FAULTS_KEEP=DIR to keep the images")
        pytest.fail("%d of %d power-cut images fail (seed %d; %s):\n%s"
                    % (len(failures), ncuts, self.seed, where, "\n".join(lines)),
                    pytrace=False)


def power_cuts(rig, rng, seed, ncuts, rounds, lose_writes):
    run = PowerCutRun(rig, rng, seed)
    run.record(rounds)
    assert victim_reuse(run.log) > 0, \
        "the workload never wrote over a deleted file's blocks; it tests nothing"
    run.check(ncuts, lose_writes)


def test_power_cuts(rig, rng, seed):
    """Every write reaches the device in order (no volatile cache)."""
    power_cuts(rig, rng, seed, CUTS_DEFAULT, rounds=8, lose_writes=False)


def test_power_cuts_losing_unflushed_writes(rig, rng, seed):
    """A device with a volatile write cache: writes that no fsync has
    covered yet may be lost at the cut."""
    power_cuts(rig, rng, seed, CUTS_DEFAULT, rounds=8, lose_writes=True)


@pytest.mark.slow
@pytest.mark.parametrize("lose_writes", [False, True], ids=["in-order", "losing"])
def test_power_cuts_many(rig, rng, seed, lose_writes):
    power_cuts(rig, rng, seed, CUTS_SLOW, rounds=12, lose_writes=lose_writes)


# --------------------------------------------------------------------------
# device errors


def mounted_volume(rig, via):
    image = rig.volume()
    dev = rig.device(image)
    return image, dev, rig.kaiofs(rig.target(dev, via))


def finish_clean(rig, m, dev, image):
    """Clear the faults, unmount, and require a clean exit and volume."""
    dev.ctl("clear")
    rc = m.stop()
    assert rc == 0, "kaiofs exited with %r after the fault was cleared; stderr:\n%s" % (
        rc, m.stderr)
    fs_support.assert_fsck_clean(image)
    assert superblock_state(image) == "clean"


@pytest.mark.parametrize("via", ["file", "loop"])
def test_read_error_reaches_the_reader_only(rig, via, rng):
    image, dev, m = mounted_volume(rig, via)
    a, b = rng.randbytes(256 * KiB), rng.randbytes(256 * KiB)
    write_file(os.path.join(m.mountpoint, "a"), a)
    write_file(os.path.join(m.mountpoint, "b"), b)
    first = file_blocks(image, "a")[0]
    dev.ctl("fail read %d-%d" % (first * FS_BLOCK, (first + 1) * FS_BLOCK))
    fd = os.open(os.path.join(m.mountpoint, "a"), os.O_RDONLY)
    try:
        assert errno_of(os.pread, fd, 4096, 0) == errno.EIO
        assert errno_of(os.pread, fd, 256 * KiB, 0) == errno.EIO
        # the rest of the file, and other files, still read
        assert kh.pread_exact(fd, 64 * KiB, 128 * KiB) == a[128 * KiB:192 * KiB]
        kh.assert_same_data(kh.read_file(os.path.join(m.mountpoint, "b")), b, "b")
        assert dev.status()["injected"] >= 2
        dev.ctl("clear")
        kh.assert_same_data(kh.pread_exact(fd, len(a), 0), a, "a after the fault")
    finally:
        os.close(fd)
    finish_clean(rig, m, dev, image)


@pytest.mark.parametrize("via", ["file", "loop"])
def test_write_error_reaches_the_writer(rig, via, rng):
    """A write the device refuses fails the write or the next fsync."""
    image, dev, m = mounted_volume(rig, via)
    a, b = rng.randbytes(256 * KiB), rng.randbytes(64 * KiB)
    write_file(os.path.join(m.mountpoint, "a"), a)
    first = file_blocks(image, "a")[0]
    dev.ctl("fail write %d-%d" % (first * FS_BLOCK, (first + 1) * FS_BLOCK))
    fd = os.open(os.path.join(m.mountpoint, "a"), os.O_WRONLY)
    try:
        err = errno_of(os.pwrite, fd, b"x" * 5000, 100)
        if err == 0:
            err = errno_of(os.fsync, fd)
        assert err == errno.EIO, "a failed device write was reported as %s" % (
            errno.errorcode.get(err, err))
        assert dev.status()["injected"] >= 1
        # the other blocks of the file, and other files, are still written
        kh.pwrite_all(fd, b"y" * 4096, 64 * KiB)
        os.fsync(fd)
        write_file(os.path.join(m.mountpoint, "b"), b)
    finally:
        os.close(fd)
    kh.assert_same_data(kh.read_file(os.path.join(m.mountpoint, "b")), b, "b")
    got = kh.read_file(os.path.join(m.mountpoint, "a"))
    assert got[64 * KiB:68 * KiB] == b"y" * 4096
    assert got[FS_BLOCK:64 * KiB] == a[FS_BLOCK:64 * KiB]
    finish_clean(rig, m, dev, image)


def test_write_error_on_new_blocks_exposes_nothing(rig, rng):
    """A failed write into freshly allocated blocks fails, and the file does
    not then show what those blocks held before (a deleted file's data)."""
    image, dev, m = mounted_volume(rig, "file")
    victim = os.path.join(m.mountpoint, "victim")
    write_file(victim, victim_data("victim", 2 * MiB))
    freed = set(file_blocks(image, "victim"))
    os.unlink(victim)
    fsync_path(m.mountpoint)
    path = os.path.join(m.mountpoint, "new")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        dev.ctl("fail write")
        err = errno_of(os.pwrite, fd, b"n" * (256 * KiB), 0)
        if err == 0:
            err = errno_of(os.fsync, fd)
        assert err == errno.EIO, "a failed device write was reported as %s" % (
            errno.errorcode.get(err, err))
        dev.ctl("clear")
        data = kh.pread_exact(fd, 256 * KiB, 0)
        # written again, the file does take the deleted file's blocks
        kh.pwrite_all(fd, b"n" * (256 * KiB), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert VICTIM_TAG not in data, \
        "after a failed write the file shows a deleted file's data (%d bytes read)" % len(data)
    assert data.strip(b"\0n") == b"", \
        "after a failed write the file holds unexpected bytes: %r..." % data[:64]
    assert freed & set(file_blocks(image, "new")), \
        "the new file did not reuse the deleted file's blocks; the test proves nothing"
    finish_clean(rig, m, dev, image)


@pytest.mark.parametrize("via", ["file", "loop"])
def test_flush_error_fails_fsync(rig, via, rng):
    image, dev, m = mounted_volume(rig, via)
    fd = os.open(os.path.join(m.mountpoint, "a"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        data = rng.randbytes(100 * KiB)
        kh.pwrite_all(fd, data, 0)
        dev.ctl("fail flush")
        assert errno_of(os.fsync, fd) == errno.EIO
        assert errno_of(os.fdatasync, fd) == errno.EIO
        dev.ctl("clear")
        os.fsync(fd)
        dev.ctl("fail flush nth 1")
        kh.pwrite_all(fd, b"z" * 1000, 0)
        assert errno_of(os.fdatasync, fd) == errno.EIO
        os.fdatasync(fd)
        assert dev.status()["injected"] == 3
        copy = crash_copy(image, rig.workdir)
    finally:
        os.close(fd)
    # the retried fsync made it durable
    kh.assert_same_data(debugfs_cat(copy, "a"), b"z" * 1000 + data[1000:],
                        "a after a power cut that followed the retried fdatasync")
    finish_clean(rig, m, dev, image)


def test_metadata_write_error(rig, rng):
    """Every write fails while files are created: the calls fail with EIO,
    and after the fault is cleared kaiofs either leaves a consistent volume
    or records the error on it and says so."""
    image, dev, m = mounted_volume(rig, "file")
    write_file(os.path.join(m.mountpoint, "before"), b"b" * 10000)
    dev.ctl("fail write")
    errors = []
    for name in ("c1", "c2"):
        try:
            write_file(os.path.join(m.mountpoint, name), rng.randbytes(20000))
            errors.append(0)
        except OSError as e:
            errors.append(e.errno)
    errors.append(errno_of(os.mkdir, os.path.join(m.mountpoint, "dir")))
    assert set(errors) <= {0, errno.EIO} and errno.EIO in errors, errors
    injected = dev.status()["injected"]
    assert injected > 0
    dev.ctl("clear")
    assert kh.read_file(os.path.join(m.mountpoint, "before")) == b"b" * 10000
    print("metadata write errors: %r" % errors)
    unmount_after_errors(m, dev, image)


# --------------------------------------------------------------------------
# the device goes away


@pytest.mark.parametrize("how", ["goaway", "exit"])
@pytest.mark.parametrize("via", ["file", "loop"])
def test_device_goes_away(rig, via, how, rng):
    image, dev, m = mounted_volume(rig, via)
    data = rng.randbytes(128 * KiB)
    write_file(os.path.join(m.mountpoint, "a"), data)
    fd = os.open(os.path.join(m.mountpoint, "a"), os.O_RDWR)
    try:
        dev.ctl(how)
        if how == "exit":
            assert dev.wait(20) == 0, "faultdev did not exit: %s" % dev.stderr
        seen = {"read": errno_of(os.pread, fd, 4096, 0),
                "write": errno_of(os.pwrite, fd, b"w" * 4096, 0),
                "fsync": errno_of(os.fsync, fd),
                "create": errno_of(write_file, os.path.join(m.mountpoint, "new"),
                                   b"n" * 5000)}
    finally:
        os.close(fd)
    names = {op: errno.errorcode.get(e, e) for op, e in seen.items()}
    assert m.alive(), "kaiofs died when its device went away: %s" % m.stderr
    t0 = time.monotonic()
    rc = m.stop()
    took = time.monotonic() - t0
    lines = stderr_lines(m)
    print("device gone (%s, %s): errors %r; fusermount3 -u took %.2fs, kaiofs exit %r, "
          "stderr %r" % (how, via, names, took, rc, lines))
    assert rc is not None, "kaiofs did not exit after fusermount3 -u"
    assert rc > 0, "kaiofs exited with %r although it could not close the volume" % rc
    # at unmount: "kaiofs: DEVICE: errors while closing the filesystem
    # (Input/output error); run e2fsck -f"
    device = m.device_path
    assert any(line.startswith("kaiofs: %s: " % device) and re.search(r"\berrors?\b", line)
               for line in lines), "no line naming %s and its errors on stderr: %r" % (
                   device, lines)
    if via == "file" and how == "exit":
        # the image's file system is gone (ENOTCONN), which kaiofs says when
        # it happens; a loop device and "goaway" report plain EIO
        assert sum("the device went away" in line for line in lines) == 1, lines
    # the volume is left as after a crash: marked as needing a check, which
    # repairs it without losing what was fsync'ed
    if how == "goaway":
        dev.ctl("clear")
    assert superblock_state(image) != "clean"
    rc_fsck, out = fs_support.fsck(image, fix=True)
    assert rc_fsck in (0, 1), "e2fsck -fy after the device went away (exit %d):\n%s" % (
        rc_fsck, out)
    print("e2fsck -fy after the device went away: exit %d\n%s" % (rc_fsck, out))
    fs_support.assert_fsck_clean(image)
    with kernel_mount_ro(image, os.path.join(rig.workdir, "kernel")) as refused:
        assert not refused, refused
        kh.assert_same_data(kh.read_file(os.path.join(rig.workdir, "kernel", "a")), data,
                            "a (fsync'ed before the device went away)")
    # the write may succeed if its error is reported by the fsync
    assert seen["read"] == seen["fsync"] == seen["create"] == errno.EIO and \
        seen["write"] in (0, errno.EIO), \
        "with the device gone, the application should see EIO: %r" % names


def test_each_write_of_an_allocating_write_fails_in_turn(rig, rng):
    """A write to a new file makes the device write its data, then the inode
    that reaches it (several times); then fsync flushes. Fail each of those
    device writes in turn (one per file): either the application sees EIO
    from the write or the fsync, or the file is whole on the device once
    the fsync has returned."""
    image, dev, m = mounted_volume(rig, "file")
    outcomes = []
    for nth in range(1, 12):
        name = "f%d" % nth
        data = rng.randbytes(rng.randrange(8 * KiB, 300 * KiB))
        fd = os.open(os.path.join(m.mountpoint, name), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            before = dev.status()["injected"]
            dev.ctl("fail write nth %d" % nth)
            err = errno_of(kh.pwrite_all, fd, data, 0) or errno_of(os.fsync, fd)
            fired = dev.status()["injected"] > before
            dev.ctl("clear")
            assert err in (0, errno.EIO), "%s: error %s" % (name, errno.errorcode.get(err))
            if not fired:
                break  # the write and fsync needed fewer device writes
            outcomes.append((nth, errno.errorcode.get(err, "ok")))
            if err == 0:
                copy = crash_copy(image, rig.workdir)
                kh.assert_same_data(debugfs_cat(copy, name), data,
                                    "%s (device write %d failed, yet write and fsync "
                                    "returned success), after a power cut" % (name, nth))
        finally:
            os.close(fd)
    print("allocating write, device write N fails: %r" % outcomes)
    assert len(outcomes) >= 2 and any(err == "EIO" for _, err in outcomes), outcomes
    unmount_after_errors(m, dev, image)


def unmount_after_errors(m, dev, image):
    """Clear the faults and unmount after errors kaiofs has seen: the volume
    is consistent; kaiofs either leaves it clean and exits 0, or records the
    error on it and exits non-zero with a line saying so."""
    dev.ctl("clear")
    rc = m.stop()
    rc_fsck, out = fs_support.fsck(image)
    state = superblock_state(image)
    print("after the errors: kaiofs exit %r, stderr %r, volume state %r, e2fsck -fn exit %d"
          % (rc, m.stderr.strip(), state, rc_fsck))
    assert rc_fsck == 0, "e2fsck -fn (exit %d):\n%s" % (rc_fsck, out)
    if state == "clean":
        assert rc == 0, m.stderr
    else:
        assert state == "clean with errors", state
        assert rc != 0 and any(line.startswith("kaiofs: ") and "error" in line
                               for line in stderr_lines(m)), (rc, m.stderr)
