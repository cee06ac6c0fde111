"""fuse-null (tests/bench/fuse_null.c), the benchmarks' FUSE filesystem with
nothing behind it: the names and sizes it keeps, the zeros it reads, its two
request loops and its exit at unmount. The benchmarks compare kaiofs with
it, so it must do what the benchmark jobs ask of a filesystem."""

import errno
import os
import subprocess

import pytest

import kaiofs_helpers as kh


@pytest.fixture(scope="module")
def fuse_null_bin(kaiofs_bin):
    return kh.built_tool(kaiofs_bin, "tests", "bench", "fuse-null")


@pytest.fixture(params=["kaiofs", "libfuse"])
def null_mount(request, fuse_null_bin, workdir):
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    err = os.path.join(workdir, "fuse-null.stderr")
    with open(err, "wb") as f:
        proc = subprocess.Popen([fuse_null_bin, "-f", "-o", "loop=" + request.param, mnt],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True)
    try:
        mounted = kh.wait_for(lambda: kh.fuse_mounted_at(mnt) or proc.poll() is not None,
                              kh.tmo(20))
        assert mounted and proc.poll() is None, "fuse-null did not mount: %s" % open(err).read()
        yield mnt, proc
    finally:
        if kh.fuse_mounted_at(mnt):
            if kh.fusermount(mnt).returncode != 0:
                kh.fusermount(mnt, lazy=True)
        try:
            proc.wait(timeout=kh.tmo(20))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            pytest.fail("fuse-null did not exit after its unmount", pytrace=False)


def test_names_sizes_and_zeros(null_mount):
    mnt, proc = null_mount
    d = os.path.join(mnt, "d")
    os.mkdir(d)
    names = ["f%04d" % i for i in range(200)]
    for n in names:
        os.close(os.open(os.path.join(d, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
    with pytest.raises(FileExistsError):
        os.open(os.path.join(d, names[0]), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert sorted(os.listdir(d)) == names
    st = os.stat(os.path.join(d, names[7]))
    assert st.st_size == 0 and (st.st_mode & 0o7777) == 0o640
    kh.drop_kernel_caches()
    assert all(os.stat(os.path.join(d, n)).st_size == 0 for n in names)

    # O_DIRECT writes are discarded but extend the file; reads are zeros up to EOF
    path = os.path.join(d, names[0])
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        assert kh.direct_pwrite(fd, b"\xa5" * kh.MiB, 3 * kh.MiB) == kh.MiB
        assert os.fstat(fd).st_size == 4 * kh.MiB
        assert kh.direct_pread(fd, 64 * 1024, 3 * kh.MiB + 4096) == bytes(64 * 1024)
        assert kh.direct_pread(fd, 8192, 4 * kh.MiB - 4096) == bytes(4096)
        assert kh.direct_pread(fd, 4096, 4 * kh.MiB) == b""
        os.ftruncate(fd, 12345)
        assert os.fstat(fd).st_size == 12345
    finally:
        os.close(fd)

    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.unlink(d)
    for n in names:
        os.unlink(os.path.join(d, n))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(d, names[3]))
    assert os.listdir(d) == []
    os.rmdir(d)
    assert os.listdir(mnt) == []

    assert kh.fusermount(mnt).returncode == 0
    assert proc.wait(timeout=kh.tmo(20)) == 0


def test_unknown_loop_is_refused(fuse_null_bin, workdir):
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    r = subprocess.run([fuse_null_bin, "-f", "-o", "loop=threads", mnt], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=kh.tmo(20))
    assert r.returncode == 1, r
    assert "loop=threads" in r.stderr and "loop=kaiofs or loop=libfuse" in r.stderr
    assert not kh.fuse_mounted_at(mnt)
