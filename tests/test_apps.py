"""Filesystem mode: real applications on a kaiofs mount.

git, tar, make with gcc, and SQLite each work on an ext4 volume mounted by
kaiofs (in the default direct I/O mode unless a test says otherwise). Then
the volume is unmounted, must be clean for e2fsck -fn, is mounted by kaiofs
again and the application checks what it left; where that is cheap the
kernel's ext4 (read-only) reads it too."""

import hashlib
import os
import pickle
import re
import sqlite3
import stat
import subprocess
import sys

import pytest

import fs_support
import kaiofs_helpers as kh

MiB = kh.MiB

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo "
         "lima mike november oscar papa quebec romeo sierra tango uniform victor "
         "whiskey xray yankee zulu").split()


# --------------------------------------------------------------------------
# common steps


def run(argv, cwd, env=None, timeout=120, check=True):
    """Run a command to completion; with check, it must exit 0."""
    r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=kh.tmo(timeout))
    if check:
        assert r.returncode == 0, "%r in %s exited with %d:\nstdout:\n%s\nstderr:\n%s" % (
            argv, cwd, r.returncode, r.stdout[-4000:], r.stderr[-4000:])
    return r


def unmount_and_check(mount, dev):
    """Unmount (kaiofs must exit 0) and require a clean e2fsck -fn."""
    rc = mount.stop()
    assert rc == 0, "kaiofs exited with %r; stderr:\n%s" % (rc, mount.stderr)
    fs_support.assert_fsck_clean(dev.path)


def remount(volumes, mount, dev, options=()):
    """Unmount, check the volume, mount it with kaiofs again."""
    unmount_and_check(mount, dev)
    return volumes.mount(dev, options=options)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_digests(root, skip=()):
    """{relative path: sha256} of every regular file below root (names in
    skip are not entered at the top level)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = kh.sha256_file(path)
    return out


def compare_digests(actual, expected, what):
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(p for p in set(actual) & set(expected) if actual[p] != expected[p])
    assert not (missing or extra or changed), (
        "%s: %d missing %r, %d unexpected %r, %d with other content %r"
        % (what, len(missing), missing[:10], len(extra), extra[:10],
           len(changed), changed[:10]))


# --------------------------------------------------------------------------
# git


GIT_DIRS = ("src", "src/core", "src/util", "docs", "data/raw", "data/processed",
            "tests", "assets/img")


def git_env(home):
    """An environment where only these settings apply: no global or system
    configuration, a fixed identity, no automatic (background) gc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    settings = {"user.name": "kaiofs test", "user.email": "test@kaiofs.invalid",
                "init.defaultBranch": "main", "gc.auto": "0",
                "gc.autoDetach": "false", "maintenance.auto": "false"}
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", HOME=home,
               LC_ALL="C", GIT_CONFIG_COUNT=str(len(settings)))
    for i, (key, value) in enumerate(settings.items()):
        env["GIT_CONFIG_KEY_%d" % i] = key
        env["GIT_CONFIG_VALUE_%d" % i] = value
    return env


def git(repo, env, *args, timeout=120):
    return run(["git", *args], cwd=repo, env=env, timeout=timeout).stdout


def random_content(rng):
    """Empty, text, binary or (rarely) a larger binary file."""
    kind = rng.random()
    if kind < 0.05:
        return b""
    if kind < 0.6:
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 12)))
                 for _ in range(rng.randrange(1, 80))]
        return ("\n".join(lines) + "\n").encode()
    if kind < 0.99:
        return rng.randbytes(rng.randrange(1, 12000))
    return rng.randbytes(rng.randrange(64 * 1024, 256 * 1024))


def write_tree(root, files):
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def expected_digests(files):
    return {rel: sha256(data) for rel, data in files.items()}


def git_fsck(repo, env):
    r = run(["git", "fsck", "--full", "--strict", "--no-dangling"], cwd=repo, env=env,
            timeout=300)
    assert not re.search(r"(?im)^(error|fatal|missing|broken|bad)", r.stdout + r.stderr), \
        "git fsck reported problems:\n%s%s" % (r.stdout, r.stderr)


def git_check(repo, env, commits, files=None):
    """The repository is sound, the work tree clean (and holds files)."""
    git_fsck(repo, env)
    status = git(repo, env, "status", "--porcelain", "--untracked-files=all")
    assert status == "", "git status --porcelain is not empty:\n%s" % status
    assert git(repo, env, "rev-list", "--count", "HEAD").strip() == str(commits)
    if files is not None:
        compare_digests(file_digests(repo, skip=(".git",)), expected_digests(files),
                        "work tree")


def git_history(rng, repo, env, files, n_files):
    """Five commits: many new files; edits and additions; renames; deletes;
    renames with edits. Returns the files of each commit, oldest first."""
    for i in range(n_files):
        files["%s/f%04d.%s" % (rng.choice(GIT_DIRS), i, rng.choice(("c", "txt", "bin")))] = \
            random_content(rng)
    write_tree(repo, files)
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "initial: %d files" % len(files))
    history = [dict(files)]

    changed = {rel: random_content(rng) for rel in rng.sample(sorted(files), 60)}
    changed.update({"src/extra/new%02d.txt" % i: random_content(rng) for i in range(25)})
    files.update(changed)
    write_tree(repo, changed)
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "edits and additions")
    history.append(dict(files))

    # Empty files are never taken for renamed ones; move only others.
    movable = sorted(f for f in files if files[f])
    moved = rng.sample([f for f in movable if f.startswith(("docs/", "tests/"))], 30)
    os.makedirs(os.path.join(repo, "moved"))
    git(repo, env, "mv", *moved, "moved/")
    for rel in moved:
        files["moved/" + os.path.basename(rel)] = files.pop(rel)
    for rel in rng.sample([f for f in movable if f.startswith("src/core/")], 10):
        new = rel[:-len(os.path.splitext(rel)[1])] + ".renamed"
        git(repo, env, "mv", rel, new)
        files[new] = files.pop(rel)
    git(repo, env, "commit", "-q", "-m", "renames")
    history.append(dict(files))

    gone = rng.sample(sorted(f for f in files if not f.startswith("data/processed/")), 50)
    git(repo, env, "rm", "-q", *gone)
    git(repo, env, "rm", "-q", "-r", "data/processed")
    for rel in gone + [f for f in files if f.startswith("data/processed/")]:
        del files[rel]
    git(repo, env, "commit", "-q", "-m", "deletes")
    history.append(dict(files))

    texts = sorted(f for f in files if f.endswith(".txt") and len(files[f]) > 200)
    for rel in rng.sample(texts, 10):
        new = os.path.join(os.path.dirname(rel), "edited-" + os.path.basename(rel))
        data = files.pop(rel) + b"one more line\n"
        os.rename(os.path.join(repo, rel), os.path.join(repo, new))
        with open(os.path.join(repo, new), "wb") as f:
            f.write(data)
        files[new] = data
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "renames with edits")
    history.append(dict(files))
    return history


@pytest.mark.parametrize("n_files,back", [
    pytest.param(1000, 1, id="1000"),
    pytest.param(5000, 4, id="5000", marks=pytest.mark.slow)])
def test_git_repository(volumes, workdir, rng, n_files, back):
    """Files in five commits with edits, renames and deletes, git gc and
    fsck, a checkout of an older commit (from the pack) and back; after a
    remount and in the kernel's ext4 the repository is sound and clean."""
    dev = volumes.make("ext4", size=max(128, n_files // 16) * MiB)
    m = volumes.mount(dev)
    env = git_env(workdir)
    repo = os.path.join(m.mountpoint, "repo")
    os.mkdir(repo)
    git(repo, env, "init", "-q")
    files = {}
    history = git_history(rng, repo, env, files, n_files)

    renames = git(repo, env, "show", "--name-status", "-M", "--format=", "HEAD~2")
    assert len(re.findall(r"(?m)^R100\t", renames)) == 40, renames
    git(repo, env, "gc", "-q", timeout=300)
    counts = dict(line.split(": ", 1) for line in
                  git(repo, env, "count-objects", "-v").splitlines())
    assert counts["count"] == "0" and int(counts["in-pack"]) > len(files), counts
    git_fsck(repo, env)

    git(repo, env, "checkout", "-q", "HEAD~%d" % back)
    compare_digests(file_digests(repo, skip=(".git",)), expected_digests(history[-1 - back]),
                    "work tree of HEAD~%d" % back)
    git(repo, env, "checkout", "-q", "main")
    git_check(repo, env, 5, files)
    log = git(repo, env, "log", "--format=%H %T")

    m = remount(volumes, m, dev)
    repo = os.path.join(m.mountpoint, "repo")
    git_check(repo, env, 5)
    assert git(repo, env, "log", "--format=%H %T") == log
    unmount_and_check(m, dev)

    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        repo = os.path.join(k, "repo")
        env["GIT_OPTIONAL_LOCKS"] = "0"
        git_fsck(repo, env)
        assert git(repo, env, "log", "--format=%H %T") == log
        compare_digests(file_digests(repo, skip=(".git",)), expected_digests(files),
                        "work tree read by the kernel")


# --------------------------------------------------------------------------
# tar


def make_source_tree(root, rng):
    """Directories with various modes, files of random sizes (empty, sparse,
    a few MiB), symlinks, hard links, a fifo, a device node, user xattrs,
    owners other than root and nanosecond times. Returns the sparse files."""
    dirs = {"a": 0o755, "a/b": 0o700, "a/b/c": 0o750, "ro": 0o555,
            "sticky": 0o1777, "setgid": 0o2775, "empty": 0o711}
    for rel in dirs:
        os.makedirs(os.path.join(root, rel))
    file_modes = (0o644, 0o600, 0o755, 0o444, 0o640, 0o4755, 0o2750, 0o000)
    owners = ((0, 0), (1000, 1000), (65534, 65534), (1234, 0))
    files = []
    for i in range(120):
        rel = os.path.join(rng.choice(["", *dirs]), "file%03d" % i)
        size = rng.choice((0, rng.randrange(1, 4096), rng.randrange(4096, 200000),
                           rng.randrange(1, 100)))
        if i < 3:
            size = rng.randrange(1 * MiB, 3 * MiB)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(rng.randbytes(size))
        files.append(rel)
    sparse = ["sparse-middle", "a/sparse-hole-only", "sparse-tail"]
    with open(os.path.join(root, sparse[0]), "wb") as f:
        for off in (0, 3 * MiB, 7 * MiB):
            f.seek(off)
            f.write(rng.randbytes(20000))
        f.truncate(8 * MiB)
    with open(os.path.join(root, sparse[1]), "wb") as f:
        f.truncate(4 * MiB)
    with open(os.path.join(root, sparse[2]), "wb") as f:
        f.write(rng.randbytes(5000))
        f.truncate(6 * MiB + 123)
    files += sparse

    links = {"link-short": files[5], "a/b/link-up": "../../" + files[7],
             "link-dangling": "/nonexistent/target",
             "link-long": "/" + "/".join("component%03d" % i for i in range(40)),
             "link-dir": "a/b", "ro/link-self": "link-self"}
    for rel, target in links.items():
        os.symlink(target, os.path.join(root, rel))
    hard = [(files[0], "a/hard-to-large"), (files[10], "a/b/c/hard1"),
            (files[10], "sticky/hard2"), ("sparse-middle", "setgid/hard-sparse")]
    for existing, new in hard:
        os.link(os.path.join(root, existing), os.path.join(root, new))
    empty = os.path.join(root, "a/empty-file")
    open(empty, "wb").close()
    os.link(empty, os.path.join(root, "empty/hard-empty"))
    os.mkfifo(os.path.join(root, "a/fifo"), 0o640)
    os.mknod(os.path.join(root, "a/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    for rel in files[::7]:
        os.setxattr(os.path.join(root, rel), "user.origin", rng.randbytes(rng.randrange(1, 200)))
    os.setxattr(os.path.join(root, "a/b"), "user.dir", b"directory attribute")

    for rel in files + list(links) + ["a/empty-file", "a/fifo", "a/null"]:
        path = os.path.join(root, rel)
        uid, gid = rng.choice(owners)
        os.chown(path, uid, gid, follow_symlinks=False)
        if not os.path.islink(path):
            os.chmod(path, rng.choice(file_modes) if os.path.isfile(path) else 0o640)
    for rel, mode in sorted(dirs.items(), key=lambda e: -e[0].count("/")):
        os.chown(os.path.join(root, rel), *rng.choice(owners))
        os.chmod(os.path.join(root, rel), mode)
    # Times last, deepest first, so that nothing changes them afterwards.
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            t = rng.randrange(10**17, 17 * 10**17)
            os.utime(path, ns=(t + 12345, t), follow_symlinks=False)
    os.utime(root, ns=(1600000000123456789, 1500000000987654321))
    return sparse


def tree_snapshot(root):
    """{relative path: metadata and content} of a whole tree, and its
    hard-link groups."""
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = [""] if dirpath == root else []
        names += [os.path.relpath(os.path.join(dirpath, n), root) for n in dirnames + filenames]
        for rel in names:
            path = os.path.join(root, rel)
            st = os.lstat(path)
            rec = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                   "owner": (st.st_uid, st.st_gid)}
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(path)
            else:
                rec["mtime_ns"] = st.st_mtime_ns
                rec["xattrs"] = {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))
                                 if n.startswith("user.")}
            if stat.S_ISREG(st.st_mode):
                rec.update(size=st.st_size, nlink=st.st_nlink, sha256=kh.sha256_file(path))
                inodes.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            entries[rel or "."] = rec
    groups = sorted(tuple(sorted(g)) for g in inodes.values() if len(g) > 1)
    return entries, groups


def compare_snapshots(actual, expected, what):
    (a_entries, a_groups), (e_entries, e_groups) = actual, expected
    diffs = []
    for rel in sorted(set(a_entries) | set(e_entries)):
        a, e = a_entries.get(rel), e_entries.get(rel)
        if a != e:
            if a is None or e is None:
                diffs.append("%s: %s" % (rel, "missing" if a is None else "unexpected"))
            else:
                diffs.append("%s: %s" % (rel, ", ".join(
                    "%s %r (expected %r)" % (k, a.get(k), e.get(k))
                    for k in sorted(set(a) | set(e)) if a.get(k) != e.get(k))))
    assert not diffs, "%s: %d entries differ:\n  %s" % (what, len(diffs),
                                                        "\n  ".join(diffs[:30]))
    assert a_groups == e_groups, "%s: hard-link groups %r, expected %r" % (
        what, a_groups, e_groups)


def assert_sparse(root, sparse):
    for rel in sparse:
        st = os.stat(os.path.join(root, rel))
        assert st.st_blocks * 512 <= st.st_size // 2, \
            "%s: %d bytes allocated for a sparse file of %d bytes" % (
                rel, st.st_blocks * 512, st.st_size)


def test_tar_extract(volumes, workdir, rng):
    """A tree archived on the host and extracted through kaiofs keeps every
    byte, mode, owner, time, link target, hard link, xattr and hole; after a
    remount and in the kernel's ext4 too, and tar --diff agrees."""
    src = os.path.join(workdir, "src")
    os.mkdir(src)
    sparse = make_source_tree(src, rng)
    expected = tree_snapshot(src)
    archive = os.path.join(workdir, "tree.tar")
    run(["tar", "--format=posix", "--xattrs", "--sparse", "--numeric-owner",
         "-cf", archive, "-C", src, "."], cwd=workdir)

    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    dest = os.path.join(m.mountpoint, "x")
    os.mkdir(dest)
    extract = ["tar", "--xattrs", "--xattrs-include=user.*", "--numeric-owner",
               "--same-owner", "-xpf", archive, "-C", dest]
    run(extract, cwd=workdir)
    compare_snapshots(tree_snapshot(dest), expected, "extracted tree")
    assert_sparse(dest, sparse)

    m = remount(volumes, m, dev)
    dest = os.path.join(m.mountpoint, "x")
    compare_snapshots(tree_snapshot(dest), expected, "extracted tree after remount")
    assert_sparse(dest, sparse)
    run(["tar", "--xattrs", "--numeric-owner", "-df", archive, "-C", dest], cwd=workdir)
    unmount_and_check(m, dev)

    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        compare_snapshots(tree_snapshot(os.path.join(k, "x")), expected,
                          "extracted tree read by the kernel")


# --------------------------------------------------------------------------
# make and gcc


MAKEFILE = """\
CC = gcc
CFLAGS = -O2 -Wall -Wextra -Werror
OBJS = main.o util.o text.o

prog: $(OBJS)
\t@echo "BUILD $@"
\t$(CC) -o $@ $(OBJS)

main.o: main.c util.h version.h
util.o: util.c util.h
text.o: text.c util.h

%.o: %.c
\t@echo "BUILD $@"
\t$(CC) $(CFLAGS) -c -o $@ $<

version.h: VERSION
\t@echo "BUILD $@"
\tprintf '#define VERSION "%s"\\n' "$$(cat VERSION)" > $@
"""

SOURCES = {
    "util.h": """\
long sum_squares(int n);
int read_numbers(const char *path, long *total);
const char *greeting(void);
""",
    "util.c": """\
#include <stdio.h>
#include "util.h"

long sum_squares(int n)
{
\tlong s = 0;
\tfor (int i = 1; i <= n; i++)
\t\ts += (long)i * i;
\treturn s;
}

int read_numbers(const char *path, long *total)
{
\tFILE *f = fopen(path, "r");
\tlong v;
\tint n = 0;
\tif (!f)
\t\treturn -1;
\twhile (fscanf(f, "%ld", &v) == 1) {
\t\t*total += v;
\t\tn++;
\t}
\tfclose(f);
\treturn n;
}
""",
    "text.c": """\
#include "util.h"

const char *greeting(void)
{
\treturn "kaiofs builds";
}
""",
    "main.c": """\
#include <stdio.h>
#include "util.h"
#include "version.h"

int main(void)
{
\tlong total = 0;
\tint n = read_numbers("numbers.txt", &total);
\tif (n < 0) {
\t\tperror("numbers.txt");
\t\treturn 1;
\t}
\tprintf("%s %s: %d numbers, sum %ld, squares %ld\\n", greeting(), VERSION, n, total,
\t       sum_squares(100));
\treturn 0;
}
""",
    "VERSION": "1.0\n",
}

ALL_TARGETS = {"prog", "main.o", "util.o", "text.o", "version.h"}


def make_env():
    """No make settings inherited from a make that runs the tests."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES")}
    env["LC_ALL"] = "C"
    return env


def make(src, *args):
    """Run make; returns the set of targets it built (from the BUILD lines)."""
    r = run(["make", *args], cwd=src, env=make_env())
    return set(re.findall(r"(?m)^BUILD (\S+)$", r.stdout)), r.stdout


def run_prog(src, expected):
    r = run([os.path.join(src, "prog")], cwd=src)
    assert r.stdout == expected, "prog printed %r, expected %r" % (r.stdout, expected)


def make_up_to_date(src):
    r = run(["make", "-q"], cwd=src, env=make_env(), check=False)
    assert r.returncode == 0, "make -q: not up to date (exit %d): %s%s" % (
        r.returncode, r.stdout, r.stderr)


def mtimes(src, names):
    return {n: os.stat(os.path.join(src, n)).st_mtime_ns for n in names}


def test_make_and_run(volumes, workdir, rng):
    """make -j2 builds a small C program on the mount, which then runs from
    it; make again does nothing; touching one source rebuilds only that
    object and the program; the build stays up to date after a remount and
    for the kernel's ext4, which runs the program too."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    src = os.path.join(m.mountpoint, "src")
    os.mkdir(src)
    numbers = [rng.randrange(-10**6, 10**6) for _ in range(500)]
    files = dict(SOURCES, Makefile=MAKEFILE,
                 **{"numbers.txt": "\n".join(map(str, numbers)) + "\n"})
    write_tree(src, {name: text.encode() for name, text in files.items()})
    expected = "kaiofs builds %%s: 500 numbers, sum %d, squares 338350\n" % sum(numbers)

    built, out = make(src, "-j2")
    assert built == ALL_TARGETS, out
    run_prog(src, expected % "1.0")

    built, out = make(src)
    assert built == set() and "'prog' is up to date" in out, out
    make_up_to_date(src)

    before = mtimes(src, ["main.o", "text.o", "version.h"])
    run(["touch", "util.c"], cwd=src)
    built, out = make(src)
    assert built == {"util.o", "prog"}, out
    assert mtimes(src, before) == before
    run_prog(src, expected % "1.0")

    with open(os.path.join(src, "VERSION"), "w") as f:
        f.write("1.1\n")
    built, out = make(src)
    assert built == {"version.h", "main.o", "prog"}, out
    run_prog(src, expected % "1.1")
    digests = file_digests(src)

    m = remount(volumes, m, dev)
    src = os.path.join(m.mountpoint, "src")
    make_up_to_date(src)
    built, out = make(src)
    assert built == set(), out
    run_prog(src, expected % "1.1")
    compare_digests(file_digests(src), digests, "build tree after remount")
    unmount_and_check(m, dev)

    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        src = os.path.join(k, "src")
        make_up_to_date(src)
        run_prog(src, expected % "1.1")
        compare_digests(file_digests(src), digests, "build tree read by the kernel")


# --------------------------------------------------------------------------
# SQLite

SCHEMA = """
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL,
                   payload BLOB NOT NULL);
CREATE INDEX items_name ON items(name);
CREATE TABLE log(seq INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL);
"""


class SqlModel:
    """What the database must hold: the items by id and the log in order."""

    def __init__(self):
        self.items = {}
        self.log = []
        self.next_id = 1

    def apply(self, op):
        kind = op[0]
        if kind == "put":
            assert op[1] not in self.items
            self.items[op[1]] = op[2:]
        elif kind == "upd":
            name = self.items[op[1]][0]
            self.items[op[1]] = (name, op[2], op[3])
        elif kind == "del":
            self.items.pop(op[1], None)
        elif kind == "log":
            self.log.append(op[1])

    def digest(self):
        h = hashlib.sha256()
        for item_id in sorted(self.items):
            h.update(repr((item_id, *self.items[item_id])).encode())
        for what in self.log:
            h.update(repr((what,)).encode())
        return h.hexdigest()


def op_sql(op):
    kind = op[0]
    if kind == "put":
        return "INSERT INTO items(id, name, qty, payload) VALUES (?, ?, ?, ?)", op[1:]
    if kind == "upd":
        return "UPDATE items SET qty = ?, payload = ? WHERE id = ?", (op[2], op[3], op[1])
    if kind == "del":
        return "DELETE FROM items WHERE id = ?", (op[1],)
    return "INSERT INTO log(what) VALUES (?)", (op[1],)


def random_payload(rng):
    """Mostly small rows, some spanning pages, a few in overflow chains."""
    r = rng.random()
    if r < 0.9:
        return rng.randbytes(rng.randrange(0, 300))
    if r < 0.98:
        return rng.randbytes(rng.randrange(1000, 4000))
    return rng.randbytes(rng.randrange(8000, 20000))


def insert_ops(rng, model, n):
    ops = []
    for _ in range(n):
        ops.append(("put", model.next_id, "item-%06d-%s" % (model.next_id, rng.choice(WORDS)),
                    rng.randrange(-1000, 10**6), random_payload(rng)))
        model.next_id += 1
    return ops + [("log", "insert %d" % n)]


def update_ops(rng, model, n):
    ids = rng.sample(sorted(model.items), n)
    return [("upd", i, rng.randrange(-1000, 10**6), random_payload(rng)) for i in ids] + \
        [("log", "update %d" % n)]


def delete_ops(rng, model, n):
    ids = sorted(model.items)
    start = rng.randrange(len(ids) - n // 2)
    doomed = set(ids[start:start + n // 2]) | set(rng.sample(ids, n - n // 2))
    return [("del", i) for i in sorted(doomed)] + [("log", "delete %d" % len(doomed))]


def connect(path, *pragmas):
    con = sqlite3.connect(path, isolation_level=None, timeout=kh.tmo(30))
    for p in pragmas:
        con.execute(p)
    return con


def commit(con, model, ops):
    con.execute("BEGIN")
    for op in ops:
        con.execute(*op_sql(op))
    con.execute("COMMIT")
    for op in ops:
        model.apply(op)


def db_digest(con):
    h = hashlib.sha256()
    for row in con.execute("SELECT id, name, qty, payload FROM items ORDER BY id"):
        h.update(repr(row).encode())
    for row in con.execute("SELECT what FROM log ORDER BY seq"):
        h.update(repr(row).encode())
    return h.hexdigest()


def check_db(con, model, what):
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], what
    count = con.execute("SELECT count(*) FROM items").fetchone()[0]
    assert count == len(model.items), "%s: %d rows, expected %d" % (what, count,
                                                                   len(model.items))
    assert db_digest(con) == model.digest(), "%s: content differs from the model" % what


def sql_workload(con, model, rng, rows=2000):
    """Inserts in transactions of 500, updates, deletes, and a large
    transaction rolled back."""
    con.executescript(SCHEMA)
    for _ in range(rows // 500):
        commit(con, model, insert_ops(rng, model, 500))
    commit(con, model, update_ops(rng, model, 200))
    commit(con, model, delete_ops(rng, model, 150))
    commit(con, model, insert_ops(rng, model, 100) + update_ops(rng, model, 50))

    scratch = SqlModel()
    scratch.next_id = model.next_id
    con.execute("BEGIN")
    con.execute("DELETE FROM items WHERE id % 2 = 0")
    for op in insert_ops(rng, scratch, 150) + update_ops(rng, model, 100):
        con.execute(*op_sql(op))
    con.execute("INSERT INTO log(what) VALUES ('never')")
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] != len(model.items)
    con.execute("ROLLBACK")
    check_db(con, model, "after the workload and a rollback")


# A process that commits some transactions, then dies in the middle of
# another one without committing it: it leaves a hot journal or a WAL
# with committed and uncommitted frames behind.
CRASH_CHILD = r"""
import os, pickle, sqlite3, sys
with open(sys.argv[2], "rb") as f:
    pragmas, committed, pending = pickle.load(f)
con = sqlite3.connect(sys.argv[1], isolation_level=None)
for p in pragmas:
    con.execute(p)
for txn in committed:
    con.execute("BEGIN")
    for sql, args in txn:
        con.execute(sql, args)
    con.execute("COMMIT")
con.execute("BEGIN")
for sql, args in pending:
    con.execute(sql, args)
os._exit(0)
"""

# Enough changes, with a tiny page cache, that SQLite must write pages of
# the open transaction to the database (rollback journal) or WAL.
PENDING = [("UPDATE items SET qty = -1", ()),
           ("DELETE FROM items WHERE id % 3 = 0", ()),
           ("INSERT INTO log(what) VALUES ('uncommitted')", ())]


def crash_in_transaction(workdir, db, model, rng, pragmas, commit_first):
    """Run CRASH_CHILD; with commit_first it commits two transactions
    (applied to the model) before the one it never finishes."""
    committed = []
    if commit_first:
        committed = [insert_ops(rng, model, 100), update_ops(rng, model, 50)]
    plan = os.path.join(workdir, "crash-plan.pickle")
    with open(plan, "wb") as f:
        pickle.dump((list(pragmas) + ["PRAGMA cache_size=10"],
                     [[op_sql(op) for op in txn] for txn in committed], PENDING), f)
    run([sys.executable, "-c", CRASH_CHILD, db, plan], cwd=workdir)
    for txn in committed:
        for op in txn:
            model.apply(op)


def read_only_digest(db):
    """Open a database on a read-only file system (immutable: no locks, no
    journal) and return its integrity check and content digest."""
    con = sqlite3.connect("file:%s?immutable=1" % db, uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchall(), db_digest(con)
    finally:
        con.close()


def check_in_kernel(dev, workdir, model):
    with fs_support.kernel_mount(dev.path, os.path.join(workdir, "kernel")) as k:
        db = os.path.join(k, "test.db")
        assert read_only_digest(db) == ([("ok",)], model.digest())


def test_sqlite_rollback_journal(volumes, workdir, rng):
    """SQLite with journal_mode=DELETE in direct mode: thousands of rows in
    transactions, updates, deletes, a rollback, VACUUM; a process dies in a
    transaction whose pages already reached the database, and after a
    remount SQLite rolls the hot journal back."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev)
    db = os.path.join(m.mountpoint, "test.db")
    model = SqlModel()
    con = connect(db, "PRAGMA journal_mode=DELETE", "PRAGMA synchronous=FULL")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        sql_workload(con, model, rng)
        con.execute("VACUUM")
        check_db(con, model, "after VACUUM")
    finally:
        con.close()

    before = kh.sha256_file(db)
    crash_in_transaction(workdir, db, model, rng, ["PRAGMA journal_mode=DELETE"], False)
    journal = db + "-journal"
    assert os.path.getsize(journal) > 0, "no hot journal left behind"
    assert kh.sha256_file(db) != before, "the transaction never reached the database"

    m = remount(volumes, m, dev)
    db = os.path.join(m.mountpoint, "test.db")
    con = connect(db)
    try:
        check_db(con, model, "after the hot journal was rolled back")
        assert not os.path.exists(db + "-journal")
        commit(con, model, update_ops(rng, model, 100))
    finally:
        con.close()
    m = remount(volumes, m, dev)
    con = connect(os.path.join(m.mountpoint, "test.db"))
    try:
        check_db(con, model, "after a second remount")
    finally:
        con.close()
    unmount_and_check(m, dev)
    check_in_kernel(dev, workdir, model)


def wal_recovery(volumes, workdir, rng, options, pragmas):
    """The workload in WAL mode, a checkpoint, a crash with committed and
    uncommitted frames in the WAL, recovery after a remount. pragmas come
    first on every connection."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=options)
    db = os.path.join(m.mountpoint, "test.db")
    model = SqlModel()
    con = connect(db, *pragmas, "PRAGMA journal_mode=WAL")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sql_workload(con, model, rng)
        busy, frames, done = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0 and frames == done, (busy, frames, done)
        assert os.path.getsize(db + "-wal") == 0
        commit(con, model, update_ops(rng, model, 150))
        check_db(con, model, "after a checkpoint and another transaction")
    finally:
        con.close()
    assert not os.path.exists(db + "-wal"), "the last connection left its WAL behind"

    crash_in_transaction(workdir, db, model, rng,
                         list(pragmas) + ["PRAGMA wal_autocheckpoint=0"], True)
    assert os.path.getsize(db + "-wal") > 0, "no WAL left behind"

    m = remount(volumes, m, dev, options=options)
    db = os.path.join(m.mountpoint, "test.db")
    con = connect(db, *pragmas)
    try:
        check_db(con, model, "after WAL recovery")
        commit(con, model, delete_ops(rng, model, 100))
        check_db(con, model, "after one more transaction")
    finally:
        con.close()
    assert not os.path.exists(db + "-wal")
    unmount_and_check(m, dev)
    check_in_kernel(dev, workdir, model)


IO_MODES = [pytest.param((), id="direct"), pytest.param(("io=cached",), id="cached")]


@pytest.mark.parametrize("options", IO_MODES)
def test_sqlite_wal(volumes, workdir, rng, options):
    """SQLite in WAL mode, its -shm index mapped shared (in io=direct too:
    the kernel lets kaiofs allow shared mappings of direct-I/O files): the
    workload, checkpoints, and a process that dies with committed and
    uncommitted frames in the WAL; after a remount SQLite recovers exactly
    the committed ones."""
    wal_recovery(volumes, workdir, rng, options, [])


@pytest.mark.parametrize("options", IO_MODES)
def test_sqlite_wal_snapshot_reader(volumes, rng, options):
    """Two connections share the WAL index through the shared mapping of
    the -shm file: a reader's transaction keeps its snapshot while a writer
    commits, and sees the commits once it ends its transaction."""
    dev = volumes.make("ext4")
    m = volumes.mount(dev, options=options)
    db = os.path.join(m.mountpoint, "test.db")
    model = SqlModel()
    writer = connect(db, "PRAGMA journal_mode=WAL")
    reader = connect(db)
    try:
        writer.executescript(SCHEMA)
        commit(writer, model, insert_ops(rng, model, 500))
        reader.execute("BEGIN")
        snapshot = db_digest(reader)
        assert snapshot == model.digest()
        for _ in range(4):
            commit(writer, model, insert_ops(rng, model, 250) + update_ops(rng, model, 50))
        assert db_digest(reader) == snapshot, "the reader's snapshot changed"
        reader.execute("COMMIT")
        check_db(reader, model, "the reader after its transaction")
    finally:
        reader.close()
        writer.close()
    m = remount(volumes, m, dev, options=options)
    con = connect(os.path.join(m.mountpoint, "test.db"))
    try:
        check_db(con, model, "after remount")
    finally:
        con.close()
    unmount_and_check(m, dev)


def test_sqlite_wal_exclusive_direct(volumes, workdir, rng):
    """SQLite in WAL mode in direct mode with locking_mode=EXCLUSIVE, which
    keeps the WAL index in private memory instead of a shared mapping of
    the -shm file; checkpoints and recovery of a WAL after a crash work."""
    wal_recovery(volumes, workdir, rng, (), ["PRAGMA locking_mode=EXCLUSIVE"])
