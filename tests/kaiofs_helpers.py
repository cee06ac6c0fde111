"""Shared helpers for the kaiofs black-box tests.

Everything here talks to kaiofs only through its command line, the mounted
file system, the statistics tool and the device it was given.
"""

import ctypes
import hashlib
import json
import mmap
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback

import pytest

BLOCK = 4096
MiB = 1 << 20

# Multiplier for every timeout; raised automatically for sanitizer builds.
TIMEOUT_SCALE = float(os.environ.get("KAIOFS_TIMEOUT_SCALE", "1"))


# True when the binary under test is built with AddressSanitizer (set by conftest).
SANITIZER_BUILD = False


def set_sanitizer_build(value):
    global SANITIZER_BUILD
    SANITIZER_BUILD = bool(value)


def set_timeout_scale(value):
    global TIMEOUT_SCALE
    TIMEOUT_SCALE = float(value)


def tmo(seconds):
    """A timeout in seconds, scaled for slow builds."""
    return seconds * TIMEOUT_SCALE


# --------------------------------------------------------------------------
# mount table


def _unescape_mountinfo(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table():
    """List of (mount_point, fstype, source) from /proc/self/mountinfo."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            try:
                sep = parts.index("-", 6)
            except ValueError:
                continue
            entries.append((_unescape_mountinfo(parts[4]), parts[sep + 1],
                            _unescape_mountinfo(parts[sep + 2])))
    return entries


def mounts_at(path):
    """File system types mounted exactly at path (innermost last)."""
    path = os.path.realpath(path)
    return [fstype for mnt, fstype, _ in mount_table() if mnt == path]


def fuse_mounted_at(path):
    return any(t.startswith("fuse") for t in mounts_at(path))


def mounts_under(path):
    """Mount points at or below path, deepest first."""
    path = os.path.realpath(path)
    found = [(mnt, fstype) for mnt, fstype, _ in mount_table()
             if mnt == path or mnt.startswith(path + "/")]
    found.sort(key=lambda e: e[0].count("/"), reverse=True)
    return found


def wait_for(cond, timeout, interval=0.02):
    """Poll cond() until it is true or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def fusermount(mnt, lazy=False, timeout=30):
    args = ["fusermount3", "-uz" if lazy else "-u", mnt]
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=tmo(timeout))


def force_unmount(path):
    """Best effort removal of whatever is mounted at path; returns True when clean."""
    for _ in range(8):
        types = mounts_at(path)
        if not types:
            return True
        if types[-1].startswith("fuse"):
            r = fusermount(path)
            if r.returncode != 0:
                fusermount(path, lazy=True)
        else:
            r = subprocess.run(["umount", path], capture_output=True, timeout=60)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", path], capture_output=True, timeout=60)
    return not mounts_at(path)


# --------------------------------------------------------------------------
# data comparison


def first_difference(actual, expected):
    """None when equal, else (offset, description)."""
    if len(actual) == len(expected) and actual == expected:
        return None
    n = min(len(actual), len(expected))
    step = 64 * 1024
    off = 0
    while off < n:
        end = min(off + step, n)
        if actual[off:end] != expected[off:end]:
            i = off
            while actual[i] == expected[i]:
                i += 1
            return i
        off += step
    return n


def describe_difference(actual, expected, base=0):
    if len(actual) == len(expected) and actual == expected:
        return None
    n = min(len(actual), len(expected))
    first = first_difference(actual, expected)
    bad_blocks = 0
    bad_bytes = 0
    last = None
    for off in range(0, n, BLOCK):
        a = actual[off:off + BLOCK]
        e = expected[off:off + BLOCK]
        if a != e:
            bad_blocks += 1
            if bad_blocks <= 256:
                bad_bytes += sum(1 for x, y in zip(a, e) if x != y)
            last = off
    msg = ("data differs: first difference at offset %d (0x%x)"
           % (base + first, base + first))
    if first < n:
        msg += ", got 0x%02x expected 0x%02x" % (actual[first], expected[first])
        lo = max(0, first - 8)
        msg += "; got %s expected %s around it" % (
            bytes(actual[lo:first + 24]).hex(), bytes(expected[lo:first + 24]).hex())
    msg += ("; %d differing 4K blocks, %d differing bytes in the first 256 of them"
            % (bad_blocks, bad_bytes))
    if last is not None:
        msg += ", last differing block at offset %d" % (base + last)
    if len(actual) != len(expected):
        msg += "; lengths %d vs %d" % (len(actual), len(expected))
    return msg


def assert_same_data(actual, expected, what="data", base=0):
    msg = describe_difference(actual, expected, base)
    if msg is not None:
        pytest.fail("%s: %s" % (what, msg), pytrace=False)


def drop_kernel_caches():
    """Have the kernel forget its cached pages, entries and inodes (so a FUSE
    filesystem gets FORGET for each, and its next lookups)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(4 * MiB)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def read_file(path, offset=0, length=None):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read() if length is None else f.read(length)


# --------------------------------------------------------------------------
# aligned buffers for O_DIRECT


def aligned_buffer(length):
    """A page aligned, zeroed writable buffer of at least length bytes."""
    size = max(BLOCK, (length + BLOCK - 1) // BLOCK * BLOCK)
    return mmap.mmap(-1, size)


def direct_pwrite(fd, data, offset):
    buf = aligned_buffer(len(data))
    try:
        buf[:len(data)] = data
        with memoryview(buf) as view:
            return os.pwritev(fd, [view[:len(data)]], offset)
    finally:
        buf.close()


def direct_pread(fd, length, offset):
    buf = aligned_buffer(length)
    try:
        with memoryview(buf) as view:
            n = os.preadv(fd, [view[:length]], offset)
        return bytes(buf[:n])
    finally:
        buf.close()


def pwrite_all(fd, data, offset):
    """pwrite the whole buffer (a regular file write is expected to be complete)."""
    n = os.pwrite(fd, data, offset)
    if n != len(data):
        raise AssertionError("short pwrite at offset %d: %d of %d bytes"
                             % (offset, n, len(data)))
    return n


def pread_exact(fd, length, offset):
    """pread length bytes, looping on short reads (a short read inside the
    file is reported by the caller's comparison)."""
    out = bytearray()
    while len(out) < length:
        chunk = os.pread(fd, length - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


# --------------------------------------------------------------------------
# devices


def kernel_maps_direct_io_files():
    """Can this kernel map direct-I/O FUSE files shared (FUSE_DIRECT_IO_ALLOW_MMAP,
    Linux 6.6)? Without it kaiofs's io=direct refuses MAP_SHARED."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 6)


def link_open_file(fd, path):
    """linkat(2) of an open file (an O_TMPFILE one, say) to a new name, as
    open(2) describes it: through /proc/self/fd with AT_SYMLINK_FOLLOW."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, os.fsencode(path), 0x400) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "linkat of fd %d to %s: %s" % (fd, path, os.strerror(e)))


def built_tool(kaiofs_bin, *parts):
    """A program the build makes beside kaiofs (BUILD/src/kaiofs ->
    BUILD/<parts>); the test fails if it is missing."""
    build = os.path.dirname(os.path.dirname(os.path.abspath(kaiofs_bin)))
    path = os.path.join(build, *parts)
    if not os.access(path, os.X_OK):
        pytest.fail("missing %s (tests/run build builds it)" % path, pytrace=False)
    return path


class Device:
    """What kaiofs is given: a regular image file or a loop device on one."""

    def __init__(self, kind, path, backing, size):
        self.kind = kind          # "file" or "loop"
        self.path = path          # argument passed to kaiofs
        self.backing = backing    # the image file holding the bytes
        self.size = size          # size kaiofs must expose
        self.name = os.path.basename(path)

    def read_all(self):
        """The exposed bytes, read from the backing image file."""
        data = read_file(self.backing, 0, self.size)
        assert len(data) == self.size
        return data

    def read(self, offset, length):
        return read_file(self.backing, offset, length)

    def __repr__(self):
        return "Device(%s %s size=%d)" % (self.kind, self.path, self.size)


def make_image(path, size, seed=None, fill=None):
    """Create an image file: seeded random bytes, or a constant byte."""
    import random
    with open(path, "wb") as f:
        if fill is not None:
            chunk = bytes([fill]) * MiB
            left = size
            while left > 0:
                f.write(chunk[:min(left, MiB)])
                left -= MiB
        else:
            rng = random.Random(seed)
            left = size
            while left > 0:
                n = min(left, 8 * MiB)
                f.write(rng.randbytes(n))
                left -= n
    os.chmod(path, 0o644)
    return path


def losetup_attach(image):
    r = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", image],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail("losetup failed: %s" % r.stderr.strip(), pytrace=False)
    return r.stdout.strip()


def losetup_detach(dev):
    """Detach a loop device; returns an error string or None."""
    r = None
    for _ in range(50):
        r = subprocess.run(["losetup", "-d", dev], capture_output=True, text=True,
                           timeout=60)
        if r.returncode == 0:
            return None
        time.sleep(0.1)
    return "losetup -d %s failed: %s" % (dev, r.stderr.strip())


def loop_devices_for(image):
    r = subprocess.run(["losetup", "-j", image], capture_output=True, text=True,
                       timeout=60)
    return [line.split(":", 1)[0] for line in r.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------
# the daemon


class MountFailed(Exception):
    pass


class KaiofsMount:
    """One kaiofs process started with -f, mounted on a directory.

    Usage: m = KaiofsMount(...); m.start()  (waits for the mount);
    m.stop() unmounts with fusermount3 -u and returns the exit status.
    m.cleanup() always leaves nothing mounted and no process behind and
    returns a list of problems found while doing so.
    """

    def __init__(self, binary, device, mountpoint, options=("raw",), extra_args=(),
                 prefix=(), env=None, logdir=None, watchdog=300):
        self.binary = binary
        self.device = device
        self.device_path = device.path if isinstance(device, Device) else device
        self.mountpoint = os.path.realpath(mountpoint)
        self.options = list(options)
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)
        self.env = env
        self.logdir = logdir or os.path.dirname(self.mountpoint)
        self.proc = None
        self.returncode = None
        self.watchdog_seconds = watchdog
        self._watchdog = None
        self.watchdog_fired = False
        self._stderr_path = None
        self._stdout_path = None
        self._cleaned = False

    # -- process ---------------------------------------------------------

    @property
    def argv(self):
        argv = self.prefix + [self.binary, "-f"]
        if self.options:
            argv += ["-o", ",".join(self.options)]
        return argv + self.extra_args + [self.device_path, self.mountpoint]

    @property
    def pid(self):
        return self.proc.pid

    @property
    def name(self):
        return os.path.basename(self.device_path)

    @property
    def file(self):
        return os.path.join(self.mountpoint, self.name)

    def start(self, timeout=20):
        tag = "kaiofs-%s-%d" % (os.path.basename(self.mountpoint), id(self))
        self._stderr_path = os.path.join(self.logdir, tag + ".stderr")
        self._stdout_path = os.path.join(self.logdir, tag + ".stdout")
        with open(self._stderr_path, "wb") as err, open(self._stdout_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=self.env,
                                         start_new_session=True)
        if self.watchdog_seconds:
            self._watchdog = threading.Timer(tmo(self.watchdog_seconds), self._fire_watchdog)
            self._watchdog.daemon = True
            self._watchdog.start()
        self.wait_mounted(timeout)
        return self

    def _fire_watchdog(self):
        # A hung daemon would leave file system calls of the test blocked
        # forever; killing it aborts the FUSE connection and unblocks them.
        if self.proc is not None and self.proc.poll() is None:
            self.watchdog_fired = True
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_mounted(self, timeout=20):
        deadline = time.monotonic() + tmo(timeout)
        while True:
            if fuse_mounted_at(self.mountpoint):
                return
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise MountFailed("kaiofs exited with status %d before mounting; "
                                  "argv=%r; stderr:\n%s" % (rc, self.argv, self.stderr))
            if time.monotonic() >= deadline:
                raise MountFailed("%s not mounted after %.0fs (kaiofs pid %d still "
                                  "running); stderr:\n%s"
                                  % (self.mountpoint, tmo(timeout), self.proc.pid,
                                     self.stderr))
            time.sleep(0.02)

    @property
    def stderr(self):
        if not self._stderr_path or not os.path.exists(self._stderr_path):
            return ""
        with open(self._stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def stdout(self):
        if not self._stdout_path or not os.path.exists(self._stdout_path):
            return ""
        with open(self._stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def mounted(self):
        return fuse_mounted_at(self.mountpoint)

    def wait(self, timeout=30):
        """Bounded wait for the daemon to exit; returns its status or None."""
        if self.proc is None:
            return None
        try:
            self.returncode = self.proc.wait(timeout=tmo(timeout))
        except subprocess.TimeoutExpired:
            return None
        self._cancel_watchdog()
        return self.returncode

    def signal(self, signum):
        self.proc.send_signal(signum)

    def unmount(self, lazy=False):
        return fusermount(self.mountpoint, lazy=lazy)

    def stop(self, timeout=30):
        """fusermount3 -u, then wait for the exit status (None on timeout)."""
        r = self.unmount()
        if r.returncode != 0:
            raise AssertionError("fusermount3 -u %s failed: %s"
                                 % (self.mountpoint, r.stderr.strip()))
        return self.wait(timeout)

    def _cancel_watchdog(self):
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def cleanup(self):
        """Unmount, reap the process; list of problems (empty when clean)."""
        problems = []
        if self.proc is None or self._cleaned:
            return problems
        self._cleaned = True
        if self.mounted():
            r = self.unmount()
            if self.mounted():
                self.unmount(lazy=True)
            if self.mounted():
                problems.append("could not unmount %s: %s"
                                % (self.mountpoint, r.stderr.strip()))
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=tmo(20))
            except subprocess.TimeoutExpired:
                problems.append("kaiofs pid %d still running 20s after unmount; "
                                "killed it" % self.proc.pid)
                self.proc.kill()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    problems.append("kaiofs pid %d did not die after SIGKILL"
                                    % self.proc.pid)
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self._cancel_watchdog()
        if self.mounted():
            force_unmount(self.mountpoint)
        if self.watchdog_fired:
            problems.append("watchdog killed kaiofs pid %d after %.0fs (hang?)"
                            % (self.proc.pid, tmo(self.watchdog_seconds)))
        return problems


# --------------------------------------------------------------------------
# expected failures


class FailedRun:
    def __init__(self, returncode, stdout, stderr, argv):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.argv = argv

    @property
    def lines(self):
        return [l for l in self.stderr.splitlines() if l.strip()]

    def __repr__(self):
        return "exit %r, argv %r, stderr %r" % (self.returncode, self.argv, self.stderr)


def assert_refused(res, pattern, image, image_hash, mnt, allowed_mounts=()):
    """A refused start: non-zero exit, exactly one "kaiofs: " line matching
    pattern on stderr, nothing mounted on mnt, the image unchanged."""
    problems = []
    if res.returncode == 0:
        problems.append("exit status 0")
    if res.returncode < 0:
        problems.append("killed by signal %d" % -res.returncode)
    lines = res.lines
    if len(lines) != 1:
        problems.append("expected exactly one line on stderr, got %d" % len(lines))
    elif not lines[0].startswith("kaiofs: "):
        problems.append("the line does not start with 'kaiofs: '")
    elif lines[0].count("kaiofs: ") != 1:
        problems.append("the 'kaiofs: ' prefix appears inside the message (garbled)")
    elif not re.search(pattern, lines[0], re.IGNORECASE):
        problems.append("the message does not match /%s/" % pattern)
    if os.path.isdir(mnt) and not os.path.islink(mnt):
        extra = [t for t in mounts_at(mnt) if t not in allowed_mounts]
        if extra:
            problems.append("something is mounted on %s: %r" % (mnt, extra))
            force_unmount(mnt)
    if sha256_file(image) != image_hash:
        problems.append("the image was modified")
    assert not problems, "%s\n  argv: %r\n  exit: %r\n  stderr: %r" % (
        "; ".join(problems), res.argv, res.returncode, res.stderr)


def run_expect_exit(argv, mountpoint=None, timeout=20, env=None):
    """Run a command that must exit on its own (an error before mounting).

    If it is still running after timeout (it mounted and serves), clean up
    and fail the test.
    """
    baseline = mounts_at(mountpoint) if mountpoint and os.path.isdir(mountpoint) else []
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_f,
                                stderr=err_f, env=env, start_new_session=True)
        deadline = time.monotonic() + tmo(timeout)
        why = None
        while proc.poll() is None:
            if mountpoint is not None and os.path.isdir(mountpoint) and \
                    mounts_at(mountpoint) != baseline:
                why = "mounted %s although it should have refused" % mountpoint
                break
            if time.monotonic() >= deadline:
                why = "did not exit within %.0fs" % tmo(timeout)
                break
            time.sleep(0.02)
        if why is not None:
            if mountpoint is not None and mounts_at(mountpoint) != baseline:
                fusermount(mountpoint)
                if mounts_at(mountpoint) != baseline:
                    fusermount(mountpoint, lazy=True)
            try:
                proc.wait(timeout=tmo(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err_f.seek(0)
            pytest.fail("%r %s; stderr: %r" % (argv, why,
                                               err_f.read().decode("utf-8", "replace")),
                        pytrace=False)
        out_f.seek(0)
        err_f.seek(0)
        return FailedRun(proc.returncode, out_f.read().decode("utf-8", "replace"),
                         err_f.read().decode("utf-8", "replace"), argv)


# --------------------------------------------------------------------------
# fallocate(2), which os does not offer with its mode bits

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_MODES = {
    0: "0",
    FALLOC_FL_KEEP_SIZE: "KEEP_SIZE",
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: "PUNCH_HOLE|KEEP_SIZE",
    FALLOC_FL_ZERO_RANGE: "ZERO_RANGE",
    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE: "ZERO_RANGE|KEEP_SIZE",
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd, mode, offset, length):
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "fallocate(%s, %d, %d): %s"
                      % (FALLOC_MODES.get(mode, hex(mode)), offset, length, os.strerror(e)))


def fallocate_model(d, mode, off, length):
    """What fallocate(mode, off, length) does to a file whose bytes are the
    bytearray d: punched and zeroed ranges read as zeros, and the size grows
    unless KEEP_SIZE."""
    end = off + length
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
        zend = min(end, len(d))
        if off < zend:
            d[off:zend] = bytes(zend - off)
    if not mode & FALLOC_FL_KEEP_SIZE and end > len(d):
        d.extend(bytes(end - len(d)))


# --------------------------------------------------------------------------
# threads


def run_threads(fn, count, timeout=120):
    """Run fn(0) .. fn(count - 1) in threads and join them (bounded); fails
    on a thread still running or an exception in any of them."""
    errors = []

    def body(t):
        try:
            fn(t)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=body, args=(t,)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(tmo(timeout))
    assert not any(t.is_alive() for t in threads), "threads still running after %ds" % timeout
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------
# fio


def fio_available():
    return shutil.which("fio") is not None


def fio_argv(args):
    # no verify state files (fio would drop them in the current directory)
    return ["fio", "--verify_state_save=0"] + list(args)


def run_fio(args, timeout=180, cwd=None):
    r = subprocess.run(fio_argv(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=tmo(timeout), cwd=cwd or "/tmp")
    return r


def check_fio(r, what="fio"):
    out = r.stdout + r.stderr
    assert r.returncode == 0, "%s exited with %d:\n%s" % (what, r.returncode, out[-6000:])
    bad = re.findall(r"(?im)^.*(verify: bad|bad magic|crc32c: verify failed|"
                     r"verify failed|io_u error|fio: pid=\d+, err=[1-9]).*$", out)
    assert not bad, "%s reported errors:\n%s\n---\n%s" % (what, "\n".join(bad[:20]),
                                                          out[-6000:])
    errs = re.findall(r"\berr=\s*(\d+)", out)
    assert errs and all(e == "0" for e in errs), \
        "%s: unexpected err= values %r:\n%s" % (what, errs, out[-6000:])
    return out


# --------------------------------------------------------------------------
# statistics tool


def run_stat(stat_bin, mountpoint, json_output=True, timeout=20):
    argv = [stat_bin] + (["--json"] if json_output else []) + [mountpoint]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=tmo(timeout))


def get_stats(stat_bin, mountpoint):
    r = run_stat(stat_bin, mountpoint)
    assert r.returncode == 0, "kaiofs-stat --json failed (%d): %s" % (r.returncode,
                                                                      r.stderr)
    try:
        data = json.loads(r.stdout)
    except ValueError as e:
        pytest.fail("kaiofs-stat --json printed invalid JSON (%s): %r" % (e, r.stdout[:2000]),
                    pytrace=False)
    assert isinstance(data, dict), "kaiofs-stat --json did not print an object: %r" % data
    return data


def find_pids_by_cmdline(*needles):
    """Pids whose command line contains every needle (as separate arguments)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if all(n in args for n in needles):
            found.append(int(entry))
    return found


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False



# --------------------------------------------------------------------------
# Linux native AIO through ctypes (lets one thread keep many writes in
# flight, which buffered or synchronous I/O on one inode cannot)

_AIO_SYSCALLS = {
    # io_setup, io_destroy, io_getevents, io_submit
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
}

IOCB_CMD_PREAD = 0
IOCB_CMD_PWRITE = 1


class _Iocb(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64),
                ("aio_key", ctypes.c_uint32),
                ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16),
                ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64),
                ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64),
                ("aio_reserved2", ctypes.c_uint64),
                ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64),
                ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def native_aio_available():
    return platform.machine() in _AIO_SYSCALLS and ctypes.sizeof(_Iocb) == 64


class NativeAio:
    """Minimal io_setup/io_submit/io_getevents wrapper."""

    def __init__(self, nr_events):
        self._nr = _AIO_SYSCALLS[platform.machine()]
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.ctx = ctypes.c_ulong(0)
        self._call(self._nr[0], ctypes.c_long(nr_events), ctypes.byref(self.ctx))

    def _call(self, nr, *args):
        res = self._libc.syscall(ctypes.c_long(nr), *args)
        if res < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return res

    def close(self):
        if self.ctx.value:
            self._call(self._nr[1], self.ctx)
            self.ctx = ctypes.c_ulong(0)

    def submit(self, requests):
        """requests: list of (tag, opcode, fd, address, nbytes, offset).
        Submits them all (looping on partial submission)."""
        iocbs = (_Iocb * len(requests))()
        for i, (tag, opcode, fd, addr, nbytes, offset) in enumerate(requests):
            iocbs[i].aio_data = tag
            iocbs[i].aio_lio_opcode = opcode
            iocbs[i].aio_fildes = fd
            iocbs[i].aio_buf = addr
            iocbs[i].aio_nbytes = nbytes
            iocbs[i].aio_offset = offset
        ptrs = (ctypes.POINTER(_Iocb) * len(requests))(
            *[ctypes.pointer(iocbs[i]) for i in range(len(requests))])
        done = 0
        while done < len(requests):
            rest = ctypes.cast(ctypes.byref(ptrs, done * ctypes.sizeof(ctypes.c_void_p)),
                               ctypes.c_void_p)
            n = self._call(self._nr[3], self.ctx, ctypes.c_long(len(requests) - done), rest)
            done += n
        return iocbs  # keep alive until completion

    def getevents(self, min_nr, max_nr, timeout):
        events = (_IoEvent * max_nr)()
        ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
        while True:
            try:
                n = self._call(self._nr[2], self.ctx, ctypes.c_long(min_nr),
                               ctypes.c_long(max_nr), events, ctypes.byref(ts))
                break
            except InterruptedError:
                continue
        return [(events[i].data, events[i].res) for i in range(n)]


def buffer_address(mm, offset=0):
    """Address of byte `offset` of an mmap object."""
    return ctypes.addressof(ctypes.c_char.from_buffer(mm, offset))
