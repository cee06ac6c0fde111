"""Filesystem mode: a first end-to-end check of the basic operations, then
e2fsck and the kernel's ext4 reading back what kaiofs wrote."""

import os

import fs_support
import kaiofs_helpers as kh


def test_write_tree_then_fsck_and_kernel_read(volumes, workdir, rng):
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    root = m.mountpoint
    data = {}
    os.mkdir(os.path.join(root, "d"))
    for i in range(20):
        name = os.path.join("d" if i % 2 else "", "f%d" % i)
        payload = rng.randbytes(rng.randrange(0, 300000))
        with open(os.path.join(root, name), "wb") as f:
            f.write(payload)
        data[name] = payload
    os.symlink("f0", os.path.join(root, "short"))
    os.symlink("x" * 200, os.path.join(root, "long"))
    os.link(os.path.join(root, "f0"), os.path.join(root, "hard"))
    for name, payload in data.items():
        with open(os.path.join(root, name), "rb") as f:
            kh.assert_same_data(f.read(), payload, name)
    assert m.stop() == 0, m.stderr
    fs_support.assert_fsck_clean(dev.path)
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "k")) as k:
        for name, payload in data.items():
            with open(os.path.join(k, name), "rb") as f:
                kh.assert_same_data(f.read(), payload, "kernel: " + name)
        assert os.readlink(os.path.join(k, "short")) == "f0"
        assert os.readlink(os.path.join(k, "long")) == "x" * 200
        assert os.stat(os.path.join(k, "hard")).st_nlink == 2
