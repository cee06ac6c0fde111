"""Hostile volumes: kaiofs given ext2/3/4 images whose metadata was damaged
(see hostile_images.py) either refuses them with one "kaiofs: " line, a
non-zero exit and the image untouched, or mounts them and then answers a
full walk and some writes with data or errors, never a crash, a sanitizer
report or a hang; it unmounts and exits with 0 or a clear error, and never
reads or writes past the end of the filesystem.

The default run checks a fixed subset of the corpus; the rest is marked
slow. The whole corpus alone, under the sanitizers:

  KAIOFS_BIN=build-asan/src/kaiofs ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \\
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \\
      /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/test_hostile.py

(or tests/hostile_images.py run, which prints the counts of the outcomes).
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import fs_support
import hostile_images as hi
import kaiofs_helpers as kh

# the default run: every STRIDE-th image (STRIDE is prime to the number of
# variants, so each variant gets its share)
STRIDE = 9
# images that once found a bug, checked in every run
FOUND_BUGS = [64, 69, 125, 129, 158, 195, 207, 309, 315, 385, 395, 402]
SUBSET = sorted(set(range(0, hi.CORPUS_SIZE, STRIDE)) | set(FOUND_BUGS))
REST = [s for s in range(hi.CORPUS_SIZE) if s not in SUBSET]


@pytest.fixture(scope="module")
def templates():
    directory = tempfile.mkdtemp(prefix="kaiofs-hostile-templates-", dir="/tmp")
    yield hi.TemplateCache(directory)
    shutil.rmtree(directory, ignore_errors=True)


def check(img, kaiofs_bin, workdir, keep=False):
    out = hi.check_image(img, kaiofs_bin, workdir, keep=keep)
    report = out.report(kaiofs_bin)
    print(report)
    assert not out.bugs, report
    return out


@pytest.mark.parametrize("seed", SUBSET)
def test_hostile_image(seed, templates, kaiofs_bin, workdir):
    check(hi.make_image(seed, templates), kaiofs_bin, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", REST)
def test_hostile_image_more(seed, templates, kaiofs_bin, workdir):
    check(hi.make_image(seed, templates), kaiofs_bin, workdir)


@pytest.mark.parametrize("variant", hi.VARIANTS, ids=str)
def test_undamaged_template(variant, templates, kaiofs_bin, workdir):
    """The same walk on each template as it is: mounted, not one error,
    and e2fsck finds the volume clean after the writes."""
    img = hi.undamaged_image(variant, templates)
    out = check(img, kaiofs_bin, workdir, keep=True)
    assert out.result == "mounted" and out.exit_status == 0, out.report(kaiofs_bin)
    assert out.ops > 1000 and not out.errors, out.report(kaiofs_bin)
    fs_support.assert_fsck_clean(os.path.join(workdir, "hostile-%d.img" % img.seed))


SEEK_SCRIPT = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for off, whence in ((1 << 20, os.SEEK_DATA), (40 << 20, os.SEEK_HOLE),
                    ((40 << 20) + 8192, os.SEEK_DATA)):
    print(os.lseek(fd, off, whence), flush=True)
"""


@pytest.mark.parametrize("variant", ["ext2-1k-128", "ext3-4k", "ext4-nocsum-noflex-1k"])
def test_seek_through_large_sparse_file(variant, templates, volumes, workdir):
    """SEEK_DATA and SEEK_HOLE across gigabytes of holes answer at once, on
    block-mapped files as on extent-mapped ones (/sparse: 4 KiB pieces at
    0..960 KiB, 40 MiB and 5 GiB)."""
    img = hi.undamaged_image(next(v for v in hi.VARIANTS if v.name == variant), templates)
    image = hi.write_image(img, os.path.join(workdir, "sparse.img"))
    mount = volumes.mount(fs_support.volume_device(image), options=("ro",))
    path = os.path.join(mount.mountpoint, "sparse")
    proc = subprocess.Popen([sys.executable, "-c", SEEK_SCRIPT, path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=kh.tmo(3))
    except subprocess.TimeoutExpired:
        mount.proc.kill()       # the request may never be answered: abort the connection
        output, _ = proc.communicate(timeout=60)
        pytest.fail("lseek on %s did not answer within %.0fs; answered so far: %r"
                    % (path, kh.tmo(3), output.split()), pytrace=False)
    assert output.split() == [str(40 << 20), str((40 << 20) + 4096), str(5 << 30)], output
    assert mount.stop() == 0, mount.stderr
