"""-o io=cached: the kernel's page cache (with write-back) in front of kaiofs.

Shared writable mmap works there, O_DIRECT opens take the kernel's own
direct I/O path, and everything written reaches the volume by the time kaiofs
has unmounted. Private mappings in the default direct mode are here too;
shared mappings in both modes are tests/test_mmap.py's.
Every test that writes unmounts, runs e2fsck -fn and reads the result back
through the kernel's ext4."""

import errno
import hashlib
import mmap
import os
import random

import pytest

import fs_support
import kaiofs_helpers as kh

MiB = kh.MiB
PAGE = mmap.PAGESIZE


def kernel_digests(image, workdir, names):
    """sha256 of each named file, read through the kernel's ext4 (read-only)."""
    with fs_support.kernel_mount(image, os.path.join(workdir, "kernel")) as mnt:
        return {n: kh.sha256_file(os.path.join(mnt, n)) for n in names}


def pattern(seed, length):
    return random.Random(seed).randbytes(length)


def test_shared_writable_mmap(volumes, workdir):
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("io=cached",))
    path = os.path.join(m.mountpoint, "mapped")
    size = 3 * MiB + 1234
    data = bytearray(pattern(1, size))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size, mmap.MAP_SHARED) as mm:
            # scattered stores, then one big copy over the middle
            rng = random.Random(2)
            for _ in range(500):
                off = rng.randrange(size - 64)
                mm[off:off + 64] = data[off:off + 64]
            mm[MiB:2 * MiB] = data[MiB:2 * MiB]
            mm[:] = data
            mm.flush()
        # write(2) and the mapping see one page cache
        os.pwrite(fd, b"tail" * 8, size - 32)
        data[size - 32:] = b"tail" * 8
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            assert mm[size - 32:] == b"tail" * 8
        os.fsync(fd)
    finally:
        os.close(fd)
    assert kh.read_file(path) == bytes(data)
    fs_support.stop_and_fsck(m, dev.path)
    expect = hashlib.sha256(data).hexdigest()
    assert kernel_digests(dev.path, workdir, ["mapped"]) == {"mapped": expect}
    m = volumes.mount(dev)
    assert kh.sha256_file(os.path.join(m.mountpoint, "mapped")) == expect
    fs_support.stop_and_fsck(m, dev.path)


def test_direct_mode_private_mapping(ext4):
    """A private mapping in io=direct (what exec and read-only mmap use)
    reads the file, and its writes stay private."""
    m, dev = ext4
    path = os.path.join(m.mountpoint, "f")
    data = pattern(3, 64 * 1024)
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, len(data), mmap.MAP_PRIVATE) as mm:
            assert mm[:] == data
            mm[:4] = b"PRIV"
        assert os.pread(fd, 4, 0) == data[:4]
    finally:
        os.close(fd)
    fs_support.stop_and_fsck(m, dev.path)


def test_buffered_fio_verify_and_remount(volumes, workdir, fio_bin):
    dev = volumes.make("ext4", size=128 * MiB)
    cwd = os.path.join(workdir, "fio-cwd")
    os.mkdir(cwd)
    m = volumes.mount(dev, options=("io=cached",))
    args = ["--name=cached", "--directory=" + m.mountpoint, "--ioengine=psync", "--direct=0",
            "--rw=randwrite", "--bs=4k", "--bsrange=512-64k", "--numjobs=2", "--size=8M",
            "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--randseed=99",
            "--fsync_on_close=1", "--group_reporting"]
    kh.check_fio(kh.run_fio(args, cwd=cwd, timeout=300), "fio buffered randwrite")
    fs_support.stop_and_fsck(m, dev.path)
    # read back in direct mode: what the page cache held is on the volume
    m = volumes.mount(dev)
    args[1] = "--directory=" + m.mountpoint
    kh.check_fio(kh.run_fio(args + ["--verify_only"], cwd=cwd, timeout=300),
                 "fio --verify_only in direct mode")
    fs_support.stop_and_fsck(m, dev.path)


def test_unsynced_writes_reach_the_volume_at_unmount(volumes, workdir):
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("io=cached",))
    files = {"a": pattern(4, 100000), "b": pattern(5, 3 * PAGE), "c": b"short"}
    for name, data in files.items():
        with open(os.path.join(m.mountpoint, name), "wb") as f:
            f.write(data)       # no fsync: dirty pages at unmount
    # shrink and extend while pages are dirty
    with open(os.path.join(m.mountpoint, "a"), "r+b") as f:
        f.truncate(5000)
        f.seek(70000)
        f.write(b"end")
    files["a"] = files["a"][:5000] + bytes(65000) + b"end"
    fs_support.stop_and_fsck(m, dev.path)
    expect = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    assert kernel_digests(dev.path, workdir, list(files)) == expect


def test_o_direct_open_bypasses_the_cache(volumes, kaiofs_stat_bin):
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=("io=cached",))
    path = os.path.join(m.mountpoint, "direct")
    before = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]["requests"]["write"]
    data = pattern(6, 16 * PAGE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        kh.direct_pwrite(fd, data, 0)
        # no fsync, no close: a direct write is a FUSE write request at once
        after = kh.get_stats(kaiofs_stat_bin, m.mountpoint)["fuse"]["requests"]["write"]
        assert after > before
        assert kh.direct_pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    # a cached open of the same file sees the direct write
    assert kh.read_file(path) == data
    fs_support.stop_and_fsck(m, dev.path)


def test_raw_mode_cached(make_device, mounter):
    dev = make_device("file", 16 * MiB)
    image = dev.read_all()
    m = mounter.mount(dev, options=("raw", "io=cached"))
    data = pattern(7, 5 * PAGE + 100)
    with open(m.file, "r+b") as f:
        f.seek(12345)
        f.write(data)
    with open(m.file, "rb") as f:
        f.seek(12345)
        assert f.read(len(data)) == data
    assert m.stop() == 0, m.stderr
    expect = image[:12345] + data + image[12345 + len(data):]
    kh.assert_same_data(dev.read_all(), expect, "raw device after cached writes")


def test_read_only_cached(volumes):
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    with open(os.path.join(m.mountpoint, "f"), "wb") as f:
        f.write(b"x" * 10000)
    fs_support.stop_and_fsck(m, dev.path)
    digest = kh.sha256_file(dev.path)
    m = volumes.mount(dev, options=("io=cached", "ro"))
    path = os.path.join(m.mountpoint, "f")
    assert kh.read_file(path) == b"x" * 10000
    with pytest.raises(OSError) as e:
        open(path, "r+b")
    assert e.value.errno == errno.EROFS
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            mmap.mmap(fd, 10000, mmap.MAP_SHARED)  # read-only fd: no shared write
        with mmap.mmap(fd, 10000, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            assert mm[:] == b"x" * 10000
    finally:
        os.close(fd)
    assert m.stop() == 0, m.stderr
    assert kh.sha256_file(dev.path) == digest
