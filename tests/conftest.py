"""pytest fixtures for the kaiofs black-box tests.

Environment:
  KAIOFS_BIN, KAIOFS_STAT_BIN   binaries under test (default: build/src/...)
  KAIOFS_SEED                   base seed for the random tests (default: random)
  KAIOFS_TIMEOUT_SCALE          multiply every timeout (default 1, 4 for ASan builds)
"""

import os
import random
import shutil
import stat
import subprocess
import tempfile
import zlib

import pytest

import kaiofs_helpers as kh

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

IMAGE_SIZE = 64 * kh.MiB

_WORKDIRS = []  # scratch directories of this session, checked at the end


def _binary(env_name, default_rel):
    path = os.environ.get(env_name) or os.path.join(REPO_ROOT, default_rel)
    return os.path.abspath(path)


KAIOFS_BIN = _binary("KAIOFS_BIN", "build/src/kaiofs")
KAIOFS_STAT_BIN = _binary("KAIOFS_STAT_BIN", "build/src/kaiofs-stat")


def _is_sanitizer_build(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"__ubsan_handle" in data


def pytest_addoption(parser):
    parser.addoption("--kaiofs-seed", action="store", default=None,
                     help="base seed for the randomized kaiofs tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long running test (excluded from the "
                            "sanitizer run with -m 'not slow')")
    kh.set_sanitizer_build(_is_sanitizer_build(KAIOFS_BIN))
    if "KAIOFS_TIMEOUT_SCALE" in os.environ:
        kh.set_timeout_scale(os.environ["KAIOFS_TIMEOUT_SCALE"])
    elif kh.SANITIZER_BUILD:
        kh.set_timeout_scale(4)
    seed = config.getoption("--kaiofs-seed") or os.environ.get("KAIOFS_SEED")
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31)
    config._kaiofs_seed = int(seed)


def pytest_report_header(config):
    return ["kaiofs: %s" % KAIOFS_BIN,
            "kaiofs-stat: %s" % KAIOFS_STAT_BIN,
            "kaiofs base seed: %d (rerun with KAIOFS_SEED=%d)"
            % (config._kaiofs_seed, config._kaiofs_seed),
            "timeout scale: %g%s" % (kh.TIMEOUT_SCALE,
                                     " (sanitizer build)" if kh.SANITIZER_BUILD else "")]


# --------------------------------------------------------------------------
# binaries and seeds


def _require_binary(path, env_name):
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail("%s is missing or not executable (set %s or build the project "
                    "first)" % (path, env_name), pytrace=False)
    return path


@pytest.fixture(scope="session")
def kaiofs_bin():
    return _require_binary(KAIOFS_BIN, "KAIOFS_BIN")


@pytest.fixture(scope="session")
def kaiofs_stat_bin():
    return _require_binary(KAIOFS_STAT_BIN, "KAIOFS_STAT_BIN")


@pytest.fixture
def seed(request):
    """Per-test seed derived from the base seed and the test id (printed)."""
    base = request.config._kaiofs_seed
    value = (base ^ zlib.crc32(request.node.nodeid.encode())) & 0x7FFFFFFF
    print("seed %d (base seed %d, KAIOFS_SEED=%d to reproduce)" % (value, base, base))
    return value


@pytest.fixture
def rng(seed):
    return random.Random(seed)


# --------------------------------------------------------------------------
# scratch directory


@pytest.fixture
def workdir():
    """A fresh 0755 directory under /tmp (reachable by other users), removed
    afterwards; anything still mounted below it is unmounted first."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="kaiofs-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    _WORKDIRS.append(path)
    yield path
    leftovers = kh.mounts_under(path)
    for mnt, _ in leftovers:
        kh.force_unmount(mnt)
    still = kh.mounts_under(path)
    if still:
        pytest.fail("could not unmount %r; leaving %s in place" % (still, path),
                    pytrace=False)
    shutil.rmtree(path, ignore_errors=True)
    if leftovers:
        pytest.fail("mounts were left behind below %s: %r" % (path, leftovers),
                    pytrace=False)


# --------------------------------------------------------------------------
# mounts


class Mounter:
    """Starts kaiofs processes for one test and always cleans them up."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.mounts = []
        self._n = 0

    def mountpoint(self, name=None):
        self._n += 1
        path = os.path.join(self.workdir, name or "mnt%d" % self._n)
        os.makedirs(path, exist_ok=True)
        return path

    def new(self, device, options=("raw",), mountpoint=None, **kwargs):
        """A KaiofsMount that is registered for cleanup but not started."""
        mnt = mountpoint or self.mountpoint()
        m = kh.KaiofsMount(self.binary, device, mnt, options=options,
                           logdir=self.workdir, **kwargs)
        self.mounts.append(m)
        return m

    def mount(self, device, options=("raw",), mountpoint=None, timeout=20, **kwargs):
        """Start kaiofs -f and wait until the mount is there."""
        m = self.new(device, options=options, mountpoint=mountpoint, **kwargs)
        try:
            m.start(timeout=timeout)
        except kh.MountFailed as e:
            pytest.fail(str(e), pytrace=False)
        return m

    def cleanup(self):
        problems = []
        for m in self.mounts:
            problems += m.cleanup()
        return problems


@pytest.fixture
def mounter(kaiofs_bin, workdir):
    mt = Mounter(kaiofs_bin, workdir)
    yield mt
    problems = mt.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# devices


class DeviceFactory:
    def __init__(self, workdir, mounter, seed):
        self.workdir = workdir
        self.mounter = mounter
        self.seed = seed
        self.loops = []
        self.images = []
        self._n = 0

    def __call__(self, kind="file", size=IMAGE_SIZE, name=None, fill=None,
                 image_size=None, directory=None):
        """kind "file" or "loop"; size is the exposed size; image_size (file
        only) lets the image be larger than the exposed size."""
        self._n += 1
        directory = directory or self.workdir
        name = name or "disk%d.img" % self._n
        image = os.path.join(directory, name)
        kh.make_image(image, image_size or size, seed=self.seed + self._n, fill=fill)
        self.images.append(image)
        if kind == "file":
            return kh.Device("file", image, image, size)
        if kind == "loop":
            loop = kh.losetup_attach(image)
            self.loops.append(loop)
            mode = os.stat(loop).st_mode
            assert stat.S_ISBLK(mode), loop
            return kh.Device("loop", loop, image, size)
        raise ValueError(kind)

    def cleanup(self):
        problems = self.mounter.cleanup()
        for loop in self.loops:
            err = kh.losetup_detach(loop)
            if err:
                problems.append(err)
        for image in self.images:
            left = kh.loop_devices_for(image)
            if left:
                problems.append("loop devices still attached to %s: %r" % (image, left))
                for dev in left:
                    kh.losetup_detach(dev)
        return problems


@pytest.fixture
def make_device(workdir, mounter, seed):
    factory = DeviceFactory(workdir, mounter, seed)
    yield factory
    problems = factory.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture(params=["file", "loop"])
def device(request, make_device):
    """A 64 MiB seeded random image, given to kaiofs as a file or a loop device."""
    return make_device(request.param)


# The I/O engines of -o engine=: a test that takes the `engine` fixture runs
# once with each.
ENGINES = ("aio", "uring")


@pytest.fixture(params=ENGINES)
def engine(request):
    """The engine option of the mounts of a test, as "engine=NAME"."""
    return "engine=" + request.param


@pytest.fixture
def file_device(make_device):
    return make_device("file")


@pytest.fixture(scope="session")
def fio_bin():
    path = shutil.which("fio")
    if path is None:
        pytest.fail("fio is not installed", pytrace=False)
    return path


def pytest_sessionfinish(session, exitstatus):
    # Report (not fix) anything left mounted by a test run.
    mine = tuple(d + "/" for d in _WORKDIRS)
    if not mine:
        return
    left = [m for m, t, _ in kh.mount_table() if (m + "/").startswith(mine)]
    if left:
        print("\nWARNING: mounts left behind: %r" % left)
    try:
        r = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=30)
        stale = [l for l in r.stdout.splitlines() if any(d in l for d in mine)]
        if stale:
            print("\nWARNING: loop devices left attached: %r" % stale)
    except (OSError, subprocess.SubprocessError):
        pass


# --------------------------------------------------------------------------
# filesystem mode


import fs_support  # noqa: E402


class Volumes:
    """Makes ext2/3/4 images for one test; after the test every image that a
    kaiofs mount wrote to must be left clean for e2fsck -fn."""

    def __init__(self, workdir, mounter):
        self.workdir = workdir
        self.mounter = mounter
        self.images = []
        self._n = 0

    def make(self, fstype="ext4", size=64 * kh.MiB, args=(), name=None):
        self._n += 1
        image = os.path.join(self.workdir, name or "vol%d.img" % self._n)
        fs_support.mkfs(image, fstype=fstype, size=size, args=args)
        self.images.append(image)
        return fs_support.volume_device(image)

    def mount(self, device, options=(), **kwargs):
        """kaiofs -f DEVICE MNT in filesystem mode; waits for the mount."""
        return self.mounter.mount(device, options=options, **kwargs)


@pytest.fixture
def volumes(workdir, mounter):
    v = Volumes(workdir, mounter)
    yield v
    problems = mounter.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def ext4(volumes):
    """A mounted 64 MiB ext4 volume: (mount, device). The test unmounts it
    (mount.stop()) and checks the image with fs_support.assert_fsck_clean."""
    dev = volumes.make("ext4")
    return volumes.mount(dev), dev
