"""Filesystem mode: shared mappings in both I/O modes. In io=direct every
open file is a direct-I/O file and kaiofs grants FUSE_DIRECT_IO_ALLOW_MMAP
when the kernel offers it (Linux 6.6 on): a MAP_SHARED mapping then uses the
page cache, which the kernel writes back before (and drops around) each
direct read or write of the same range. In io=cached a file opened with
O_DIRECT takes the kernel's own direct I/O path and can be mapped too.
After each test the volume must be clean for e2fsck and the kernel's ext4
must read what the mappings wrote."""

import errno
import mmap
import os
import platform

import pytest

import fs_support
import kaiofs_helpers as kh

PAGE = mmap.PAGESIZE
NOTICE = "cannot map direct-I/O files shared"
MODES = [pytest.param((), id="direct"), pytest.param(("io=cached",), id="cached")]


def pattern(n, seed):
    return bytes((seed * 31 + i * 7) % 251 for i in range(n))


def check_in_kernel(dev, workdir, name, expected):
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, name)), expected, "kernel's ext4")


@pytest.mark.parametrize("options", MODES)
@pytest.mark.parametrize("direct_fd", [False, True], ids=["plain-fd", "odirect-fd"])
def test_shared_mapping_writes_reach_the_volume(volumes, workdir, options, direct_fd):
    """Writes through a MAP_SHARED mapping (of a plain or an O_DIRECT
    descriptor) are read back by read(2), survive msync and munmap, and
    reach the device: the kernel's ext4 reads them after the unmount."""
    if not options and not kh.kernel_maps_direct_io_files():
        pytest.skip("Linux %s cannot map direct-I/O files shared (6.6 can)" % platform.release())
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=options)
    assert NOTICE not in m.stderr, m.stderr
    path = os.path.join(m.mountpoint, "f")
    model = bytearray(pattern(8 * PAGE + 100, 1))
    with open(path, "wb") as f:
        f.write(model)
    fd = os.open(path, os.O_RDWR | (os.O_DIRECT if direct_fd else 0))
    try:
        mm = mmap.mmap(fd, len(model), mmap.MAP_SHARED)
        try:
            for i, off in enumerate((0, 3 * PAGE + 17, 8 * PAGE)):
                data = pattern(60, 10 + i)
                mm[off:off + len(data)] = data
                model[off:off + len(data)] = data
            mm.flush()
            kh.assert_same_data(kh.read_file(path), bytes(model), "read(2) after msync")
            tail = pattern(40, 20)
            mm[PAGE:PAGE + 40] = tail
            model[PAGE:PAGE + 40] = tail
        finally:
            mm.close()
    finally:
        os.close(fd)
    kh.assert_same_data(kh.read_file(path), bytes(model), "read(2) after munmap")
    fs_support.stop_and_fsck(m, dev.path)
    check_in_kernel(dev, workdir, "f", bytes(model))


@pytest.mark.parametrize("options", MODES)
def test_mapping_coherent_with_direct_io(volumes, workdir, options):
    """A mapping and O_DIRECT I/O of the same range: an O_DIRECT write shows
    in the mapping, and an O_DIRECT read returns what the mapping wrote
    without an msync in between."""
    if not options and not kh.kernel_maps_direct_io_files():
        pytest.skip("Linux %s cannot map direct-I/O files shared (6.6 can)" % platform.release())
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=options)
    path = os.path.join(m.mountpoint, "f")
    size = 16 * PAGE
    model = bytearray(pattern(size, 2))
    with open(path, "wb") as f:
        f.write(model)
    fd = os.open(path, os.O_RDWR)
    dfd = os.open(path, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 2 * PAGE)
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
        try:
            for round_ in range(20):
                page = (round_ * 5) % 15
                buf[:] = pattern(2 * PAGE, 100 + round_)
                assert os.pwrite(dfd, buf, page * PAGE) == 2 * PAGE
                model[page * PAGE:(page + 2) * PAGE] = buf[:]
                assert mm[page * PAGE:(page + 2) * PAGE] == buf[:], \
                    "round %d: the mapping misses an O_DIRECT write" % round_
                other = (page + 7) % 15
                data = pattern(PAGE, 200 + round_)
                mm[other * PAGE:(other + 1) * PAGE] = data
                model[other * PAGE:(other + 1) * PAGE] = data
                assert os.preadv(dfd, [buf], other * PAGE) == 2 * PAGE
                assert buf[:PAGE] == data, "round %d: O_DIRECT read misses a mapped write" % round_
        finally:
            mm.close()
    finally:
        buf.close()
        os.close(dfd)
        os.close(fd)
    kh.assert_same_data(kh.read_file(path), bytes(model), "after the rounds")
    fs_support.stop_and_fsck(m, dev.path)
    check_in_kernel(dev, workdir, "f", bytes(model))


def test_mapping_refused_on_older_kernels_with_notice(volumes):
    """In io=direct on a kernel without FUSE_DIRECT_IO_ALLOW_MMAP the mount
    says in one line that shared mappings fail, and they fail with ENODEV;
    on this kernel neither happens."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    path = os.path.join(m.mountpoint, "f")
    with open(path, "wb") as f:
        f.write(b"x" * PAGE)
    fd = os.open(path, os.O_RDWR)
    try:
        if kh.kernel_maps_direct_io_files():
            assert NOTICE not in m.stderr, m.stderr
            mmap.mmap(fd, PAGE, mmap.MAP_SHARED).close()
        else:
            assert [line for line in m.stderr.splitlines() if NOTICE in line], m.stderr
            with pytest.raises(OSError) as e:
                mmap.mmap(fd, PAGE, mmap.MAP_SHARED)
            assert e.value.errno == errno.ENODEV
    finally:
        os.close(fd)
    fs_support.stop_and_fsck(m, dev.path)
