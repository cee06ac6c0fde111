"""Filesystem mode: randops (tests/randops/randops.c), the suite's seeded
random-operation tester of one file, on ext2, ext3 and ext4 volumes with
1 KiB and 4 KiB blocks, in both I/O modes, with buffered and with O_DIRECT
I/O through libaio, with mapped reads and writes mixed in. Every read is
checked against randops's model; afterwards
the volume must be clean for e2fsck and the kernel's ext4 must read the same
bytes as the model. The default run does a few thousand operations per
case, the slow variant 100,000."""

import json
import os
import subprocess

import pytest

import fs_support
import kaiofs_helpers as kh

MiB = kh.MiB

# what the kernel's ext4 refuses on files without extents, as kaiofs does
BLOCK_MAPPED_REFUSALS = ["falloc", "falloc_keep", "zero", "zero_keep"]

VOLUMES = {
    "ext2": ("ext2", []),
    "ext3": ("ext3", []),
    "ext4": ("ext4", []),
    # ext4 without extents: block-mapped files on an ext4 volume
    "ext4-noextent": ("ext4", ["-O", "^extent,^64bit"]),
}


@pytest.fixture(scope="module")
def randops_bin(kaiofs_bin):
    return kh.built_tool(kaiofs_bin, "tests", "randops", "randops")


def run_randops(randops_bin, path, seed, nops, access, mapped, good, timeout):
    argv = [randops_bin, "-N", str(nops), "-S", str(seed), "-i", access, "-g", good]
    if mapped:
        argv.append("-m")
    r = subprocess.run(argv + [path], capture_output=True, text=True, timeout=kh.tmo(timeout))
    return argv + [path], r


def check_randops(volumes, workdir, randops_bin, seed, volume, bs, io, access, nops,
                  engine="engine=aio"):
    fstype, args = VOLUMES[volume]
    dev = volumes.make(fstype, size=128 * MiB, args=args + ["-b", str(bs)])
    m = volumes.mount(dev, options=["io=" + io, engine], watchdog=3600)
    good = os.path.join(workdir, "good")
    path = os.path.join(m.mountpoint, "f")
    mapped = io == "cached" or kh.kernel_maps_direct_io_files()
    argv, r = run_randops(randops_bin, path, seed, nops, access, mapped, good,
                          timeout=60 + nops // 20)
    assert r.returncode == 0, "%s failed (exit %d):\n%s%s\nkaiofs stderr:\n%s" % (
        " ".join(argv), r.returncode, r.stdout, r.stderr[-6000:], m.stderr[-3000:])
    summary = json.loads(r.stdout)
    print(summary)
    extents = volume in ("ext4",)
    assert summary["refused"] == ([] if extents else BLOCK_MAPPED_REFUSALS), summary
    for op in ["read", "write", "truncate", "punch", "copy"] + (["zero", "falloc"] if extents else []):
        assert summary["counts"].get(op, 0) > 0, "no %s in %s" % (op, summary)
    if access == "aio":
        assert summary["counts"].get("aio_writes", 0) > 0, summary
    if mapped:
        assert summary["counts"].get("mapwrite", 0) > 0, summary
    fs_support.stop_and_fsck(m, dev.path)
    with open(good, "rb") as f:
        expected = f.read()
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        kh.assert_same_data(kh.read_file(os.path.join(k, "f")), expected, "kernel's ext4")


CASES = [(v, bs, io, acc) for v in ("ext2", "ext3", "ext4", "ext4-noextent")
         for bs in (1024, 4096) for io in ("direct", "cached") for acc in ("buffered", "aio")]


def case_id(c):
    return "%s-%dk-%s-%s" % (c[0], c[1] // 1024, c[2], c[3])


@pytest.mark.parametrize("volume,bs,io,access", CASES, ids=[case_id(c) for c in CASES])
def test_randops(volumes, workdir, randops_bin, seed, volume, bs, io, access):
    check_randops(volumes, workdir, randops_bin, seed, volume, bs, io, access, 3000)


# The io_uring engine on a subset: extent-mapped and block-mapped volumes,
# both block sizes, both I/O modes and both kinds of access.
URING_CASES = [("ext4", 4096, "direct", "aio"), ("ext4", 1024, "cached", "buffered"),
               ("ext3", 1024, "direct", "aio")]


@pytest.mark.parametrize("volume,bs,io,access", URING_CASES, ids=[case_id(c) for c in URING_CASES])
def test_randops_uring(volumes, workdir, randops_bin, seed, volume, bs, io, access):
    check_randops(volumes, workdir, randops_bin, seed, volume, bs, io, access, 3000,
                  engine="engine=uring")


@pytest.mark.slow
@pytest.mark.parametrize("volume,bs,io,access", CASES, ids=[case_id(c) for c in CASES])
def test_randops_100k(volumes, workdir, randops_bin, seed, volume, bs, io, access):
    check_randops(volumes, workdir, randops_bin, seed, volume, bs, io, access, 100000)
