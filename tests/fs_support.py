"""Helpers for the filesystem-mode tests: volumes made by mkfs, e2fsck, and
read-only mounts of an image with the kernel's own ext4 driver."""

import contextlib
import errno
import os
import subprocess

import kaiofs_helpers as kh

MiB = kh.MiB


def mkfs(image, fstype="ext4", size=64 * MiB, args=()):
    """A fresh image file of `size` bytes holding a filesystem made by
    Debian's mkfs.<fstype> with its defaults (plus args)."""
    with open(image, "wb") as f:
        f.truncate(size)
    r = subprocess.run(["mkfs." + fstype, "-q", "-F", *args, image],
                       capture_output=True, text=True, timeout=kh.tmo(120))
    assert r.returncode == 0, "mkfs.%s failed: %s" % (fstype, r.stderr)
    return image


def fsck(image, fix=False):
    """Run e2fsck -fn (or -fy); returns (returncode, output)."""
    r = subprocess.run(["e2fsck", "-fy" if fix else "-fn", image],
                       capture_output=True, text=True, timeout=kh.tmo(300))
    return r.returncode, r.stdout + r.stderr


def assert_fsck_clean(image):
    rc, out = fsck(image)
    assert rc == 0, "e2fsck -fn %s is not clean (exit %d):\n%s" % (image, rc, out)


def stop_and_fsck(m, image):
    """Unmount a kaiofs mount, expect exit status 0, and check the image."""
    rc = m.stop()
    assert rc == 0, "kaiofs exited with %r at unmount; stderr:\n%s" % (rc, m.stderr)
    assert_fsck_clean(image)


@contextlib.contextmanager
def kernel_mount(image, mountpoint, readonly=True):
    """Mount an image with the kernel's ext2/3/4 driver (read-only by
    default); always unmounted and its loop device detached afterwards."""
    os.makedirs(mountpoint, exist_ok=True)
    opts = "ro,loop" if readonly else "loop"
    r = subprocess.run(["mount", "-o", opts, image, mountpoint],
                       capture_output=True, text=True, timeout=kh.tmo(60))
    assert r.returncode == 0, "kernel mount of %s failed: %s" % (image, r.stderr)
    try:
        yield mountpoint
    finally:
        r = subprocess.run(["umount", mountpoint], capture_output=True, text=True,
                           timeout=kh.tmo(60))
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True,
                           timeout=kh.tmo(60))
        for dev in kh.loop_devices_for(image):
            kh.losetup_detach(dev)


def volume_device(image):
    return kh.Device("file", image, image, os.path.getsize(image))


def seek_map(fd, size):
    """Data ranges [(start, end)] as SEEK_DATA/SEEK_HOLE report them."""
    ranges = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, end))
        if end <= start:
            ranges.append(("stuck", end))
            break
        pos = end
    return ranges
