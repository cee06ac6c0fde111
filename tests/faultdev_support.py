"""The fault-injecting device of the tests (tests/faultdev/faultdev.c) from
Python: start and stop it, send it commands, attach loop devices to its disk,
read its write log, and build the images a power cut would leave.

faultdev serves an image file as MNT/disk and takes commands on MNT/ctl
(see the header of faultdev.c). With --log it records every write and fsync
in the order it served them; CutImages replays the original image plus the
first N logged writes, optionally losing some writes that no fsync had yet
made durable. As a command (it imports the test helpers, so run it with the
python that has pytest):

    /usr/bin/python3 tests/faultdev_support.py BASE LOG N OUT [LOST...]
"""

import bisect
import collections
import os
import shutil
import subprocess
import sys
import time

import kaiofs_helpers as kh

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


def faultdev_binary(kaiofs_bin):
    """FAULTDEV_BIN, or the faultdev of the build that holds kaiofs_bin
    (BUILD/src/kaiofs -> BUILD/tests/faultdev/faultdev)."""
    path = os.environ.get("FAULTDEV_BIN")
    if not path:
        build = os.path.dirname(os.path.dirname(os.path.abspath(kaiofs_bin)))
        path = os.path.join(build, "tests", "faultdev", "faultdev")
    return os.path.abspath(path)


class Faultdev:
    """One faultdev process serving `image` on `mountpoint`."""

    def __init__(self, binary, image, mountpoint, log=None, name="disk"):
        self.binary = binary
        self.image = image
        self.mountpoint = os.path.realpath(mountpoint)
        self.log = log
        self.name = name
        self.proc = None
        self.returncode = None
        self._stderr_path = self.mountpoint + ".faultdev.stderr"

    @property
    def disk(self):
        return os.path.join(self.mountpoint, self.name)

    @property
    def ctl_path(self):
        return os.path.join(self.mountpoint, "ctl")

    @property
    def argv(self):
        argv = [self.binary, "--name", self.name]
        if self.log:
            argv += ["--log", self.log]
        return argv + [self.image, self.mountpoint]

    def mounted(self):
        return any(mnt == self.mountpoint and fstype == "fuse.faultdev"
                   for mnt, fstype, _ in kh.mount_table())

    def start(self, timeout=20):
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + kh.tmo(timeout)
        while not self.mounted():
            if self.proc.poll() is not None:
                raise AssertionError("faultdev exited with %d before mounting: %s"
                                     % (self.proc.returncode, self.stderr))
            if time.monotonic() >= deadline:
                raise AssertionError("faultdev did not mount %s within %.0fs"
                                     % (self.mountpoint, kh.tmo(timeout)))
            time.sleep(0.02)
        return self

    @property
    def stderr(self):
        try:
            with open(self._stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def ctl(self, *commands):
        """Send commands (one write, one command per line)."""
        data = "".join(c + "\n" for c in commands).encode()
        fd = os.open(self.ctl_path, os.O_WRONLY)
        try:
            n = os.write(fd, data)
        finally:
            os.close(fd)
        assert n == len(data), "short write to %s" % self.ctl_path

    def mark(self, text):
        """A note in the write log: everything logged before it had happened
        by the time the caller wrote it."""
        assert "\n" not in text
        self.ctl("mark " + text)

    def status(self):
        with open(self.ctl_path) as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}

    def stop(self, timeout=20):
        """fusermount3 -u and wait: the exit status (None if it did not exit)."""
        r = kh.fusermount(self.mountpoint)
        assert r.returncode == 0, "fusermount3 -u %s: %s" % (self.mountpoint, r.stderr)
        return self.wait(timeout)

    def wait(self, timeout=20):
        try:
            self.returncode = self.proc.wait(timeout=kh.tmo(timeout))
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def cleanup(self):
        """Unmount and reap; a list of problems (empty when clean)."""
        problems = []
        if self.proc is None:
            return problems
        if self.mounted():
            r = kh.fusermount(self.mountpoint)
            if r.returncode != 0:
                kh.fusermount(self.mountpoint, lazy=True)
            if self.mounted():
                problems.append("could not unmount faultdev at %s" % self.mountpoint)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=kh.tmo(20))
            except subprocess.TimeoutExpired:
                problems.append("faultdev pid %d still running after unmount; killed it"
                                % self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.returncode = self.proc.returncode
        self.proc = None
        return problems


# --------------------------------------------------------------------------
# the write log

Write = collections.namedtuple("Write", "seq offset length dataoff fua")


class WriteLog:
    """A faultdev log: the writes in order, the fsyncs and marks between them.

    Cut n ("power cut after write n") is the log up to, not including, write
    n + 1: its first n writes reached the device, and so did every fsync
    and mark that came before write n + 1.
    """

    def __init__(self, path):
        self.path = path
        self.data_path = path + ".data"
        self.writes = []
        self.flushes = []        # seq of every successful fsync
        self.marks = []          # (seq, text)
        self.failures = []       # (seq, op, offset, length)
        with open(path) as f:
            for line in f:
                self._parse(line.rstrip("\n"))
        self._write_seqs = [w.seq for w in self.writes]

    def _parse(self, line):
        kind, seq, rest = (line.split(" ", 2) + [""])[:3]
        seq = int(seq)
        if kind == "W":
            fields = rest.split()
            offset, length, dataoff = (int(x) for x in fields[:3])
            self.writes.append(Write(seq, offset, length, dataoff, fields[3:] == ["FUA"]))
        elif kind == "F":
            self.flushes.append(seq)
        elif kind == "M":
            self.marks.append((seq, rest))
        elif kind == "X":
            op, offset, length = rest.split()
            self.failures.append((seq, op, int(offset), int(length)))
        elif kind != "C":
            raise ValueError("%s: bad log line %r" % (self.path, line))

    def end_seq(self, n):
        """The first seq after cut n."""
        if n < len(self.writes):
            return self.writes[n].seq
        return float("inf")

    def durable(self, n):
        """How many of the first n writes an fsync before cut n covers."""
        i = bisect.bisect_left(self.flushes, self.end_seq(n))
        if i == 0:
            return 0
        return bisect.bisect_left(self._write_seqs, self.flushes[i - 1])

    def marks_before(self, n):
        end = self.end_seq(n)
        return [text for seq, text in self.marks if seq < end]


class CutImages:
    """Builds power-cut images from a base image and a WriteLog. Building
    cuts in increasing order is cheapest: a working copy keeps the durable
    writes applied so far."""

    def __init__(self, base_image, log, workdir):
        self.base = base_image
        self.log = log
        self.state = os.path.join(workdir, "cut-state.img")
        self._applied = None
        self._data_fd = os.open(log.data_path, os.O_RDONLY)

    def close(self):
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        if os.path.exists(self.state):
            os.unlink(self.state)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _apply(self, image, writes):
        fd = os.open(image, os.O_WRONLY)
        try:
            for w in writes:
                data = os.pread(self._data_fd, w.length, w.dataoff)
                assert len(data) == w.length, "short read of %s" % self.log.data_path
                kh.pwrite_all(fd, data, w.offset)
        finally:
            os.close(fd)

    def build(self, n, out, rng=None, drop_probability=0.5, lose=()):
        """Write the image of cut n to out. With rng, each write after the
        last fsync before the cut is lost with drop_probability, except FUA
        writes, which are durable by themselves; `lose` names such writes
        (0-based indexes) to lose for certain. Returns the indexes of the
        lost writes."""
        durable = self.log.durable(n)
        bad = [i for i in lose if not durable <= i < n or self.log.writes[i].fua]
        assert not bad, "writes %r are FUA or not between the last fsync (%d) and the cut (%d)" % (
            bad, durable, n)
        if self._applied is None or self._applied > durable:
            shutil.copyfile(self.base, self.state)
            self._applied = 0
        self._apply(self.state, self.log.writes[self._applied:durable])
        self._applied = durable
        shutil.copyfile(self.state, out)
        dropped = []
        kept = []
        for i in range(durable, n):
            volatile = not self.log.writes[i].fua
            if volatile and (i in lose or (rng is not None and
                                           rng.random() < drop_probability)):
                dropped.append(i)
            else:
                kept.append(self.log.writes[i])
        self._apply(out, kept)
        return dropped


def main(argv):
    """python3 faultdev_support.py BASE LOG N OUT [LOST...]: the image of a
    power cut after write N (writes numbered from 0 in the log; LOST are
    writes after the last fsync before the cut to leave out)."""
    if len(argv) < 5:
        print(main.__doc__, file=sys.stderr)
        return 2
    base, log_path, n, out = argv[1], argv[2], int(argv[3]), argv[4]
    log = WriteLog(log_path)
    with CutImages(base, log, os.path.dirname(os.path.abspath(out))) as builder:
        lost = builder.build(n, out, lose=[int(i) for i in argv[5:]])
    print("%s: base + writes 0..%d of %d, lost %r; durable up to write %d"
          % (out, n - 1, len(log.writes), lost, log.durable(n)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
