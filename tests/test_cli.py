"""The command line: kaiofs --help and --version, the man pages, and
kaiofs-stat (once, and --watch with its per-interval lines)."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

import kaiofs_helpers as kh
from conftest import REPO_ROOT

MAN_DIR = os.path.join(REPO_ROOT, "src", "man")
KAIOFS_MAN = os.path.join(MAN_DIR, "kaiofs.8")
KAIOFS_STAT_MAN = os.path.join(MAN_DIR, "kaiofs-stat.8")

WATCH_COLUMNS = ["time", "r/s", "w/s", "rMiB/s", "wMiB/s", "iocb/sub", "inflight",
                 "p50_us", "p99_us", "engine"]


def run(argv, timeout=30, **kwargs):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=kh.tmo(timeout), **kwargs)


def kaiofs_help(kaiofs_bin):
    r = run([kaiofs_bin, "--help"])
    assert r.returncode == 0, "kaiofs --help exited %d: %s" % (r.returncode, r.stderr)
    return r.stdout


def kaiofs_section(help_text):
    """The part of --help about kaiofs itself (libfuse's list follows)."""
    assert "FUSE options:" in help_text, help_text
    return help_text.split("FUSE options:")[0]


def help_entries(section):
    """{option: its help text, continuation lines included} for the lines
    '    -o name ...' and '    -x[, --long] ...'."""
    entries = []
    for line in section.splitlines():
        m = re.match(r"^ {4}(?:-o (\S+)|(-\w)(?:, (--[\w-]+))?)(?:\s|$)", line)
        if m:
            keys = [k for k in m.groups() if k]
            entries.append((keys, line))
        elif entries and re.match(r"^ {20,}\S", line):
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
    return {key: text for keys, text in entries for key in keys}


def optspec_names():
    """kaiofs' own -o options as src/daemon/options.c declares them for the parser."""
    with open(os.path.join(REPO_ROOT, "src", "daemon", "options.c")) as f:
        source = f.read()
    names = re.findall(r'\bOPT\("([a-z_]+=?)(?:%s)?"', source)
    assert names, "no OPT(...) entries found in src/daemon/options.c"
    return sorted(set(names))


def render_man(path):
    """The man page as plain text, without hyphenation or line breaks
    inside words, so that options can be searched in it."""
    if shutil.which("groff") is None:
        pytest.fail("groff is not installed (package groff-base)", pytrace=False)
    r = run(["groff", "-man", "-Tutf8", "-rHY=0", "-rLL=250n", "-P-cbou", path])
    assert r.returncode == 0, r.stderr
    return r.stdout.replace("\u2010", "-").replace("\u2212", "-")


# --------------------------------------------------------------------------
# kaiofs --help, --version


def test_help_lists_every_option_with_its_default(kaiofs_bin):
    section = kaiofs_section(kaiofs_help(kaiofs_bin))
    entries = help_entries(section)
    for name in optspec_names():
        key = next((k for k in entries
                    if k == name or (name.endswith("=") and k.startswith(name))), None)
        assert key is not None, "-o %s (parsed in src/daemon/options.c) is missing from --help:\n%s" \
            % (name, section)
        assert "default" in entries[key], "--help gives no default for -o %s: %r" \
            % (name, entries[key])
    expected = {
        "raw": r"default: off",
        "ro": r"default: read-write",
        "stats": r"default: off",
        "arena=SIZE": r"default 64M\b",
        "queue_depth=N": r"default 128\b",
        "reapers=N": r"default 1\b",
        "io=direct|cached": r"direct I/O \(default\).*page\s+cache",
        "engine=aio|uring": r"kernel AIO \(default\).*io_uring",
    }
    for key, pattern in expected.items():
        assert key in entries, "--help does not list -o %s:\n%s" % (key, section)
        assert re.search(pattern, entries[key]), \
            "--help line of -o %s does not match /%s/: %r" % (key, pattern, entries[key])
    for flag in ["-f", "-d", "--debug", "-s", "-h", "--help", "-V", "--version"]:
        assert flag in entries, "--help does not list %s:\n%s" % (flag, section)


def test_every_help_option_is_in_the_man_page(kaiofs_bin):
    entries = help_entries(kaiofs_section(kaiofs_help(kaiofs_bin)))
    text = render_man(KAIOFS_MAN)
    missing = []
    for key in entries:
        # "arena=SIZE" is "arena=size" in the man page: compare up to the "="
        word = key.split("=")[0] + "=" if "=" in key and "|" not in key else key
        if not re.search(r"(?<![\w-])%s" % re.escape(word), text):
            missing.append(word)
    assert not missing, "in kaiofs --help but not in kaiofs(8): %r" % missing
    for section in ["SYNOPSIS", "OPTIONS", "MODES", "UNMOUNTING", "STATISTICS",
                    "EXIT STATUS", "EXAMPLES", "FILES", "SEE ALSO"]:
        assert re.search(r"(?m)^%s" % section, text), "kaiofs(8) has no %s section" % section
    for path in ["/sbin/mount.kaiofs", "/sbin/umount.fuse.kaiofs"]:
        assert path in text, "kaiofs(8) does not name %s" % path


def test_every_kaiofs_stat_option_is_in_its_man_page(kaiofs_stat_bin):
    r = run([kaiofs_stat_bin, "--help"])
    assert r.returncode == 0, r.stderr
    options = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", r.stdout))
    assert {"--json", "--watch", "-w", "--count", "-c", "--help"} <= options, r.stdout
    text = render_man(KAIOFS_STAT_MAN)
    missing = [o for o in sorted(options)
               if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), text)]
    assert not missing, "in kaiofs-stat --help but not in kaiofs-stat(8): %r" % missing
    for column in WATCH_COLUMNS:
        assert column in text, "kaiofs-stat(8) does not explain the column %s" % column


@pytest.mark.parametrize("page", [KAIOFS_MAN, KAIOFS_STAT_MAN], ids=os.path.basename)
def test_man_page_renders_without_warnings(page):
    if shutil.which("groff") is None:
        pytest.fail("groff is not installed (package groff-base)", pytrace=False)
    r = run(["groff", "-man", "-ww", "-z", page])
    assert r.returncode == 0 and not r.stderr.strip(), \
        "groff -man -ww reports problems in %s:\n%s" % (page, r.stderr)
    if shutil.which("man") is None:
        pytest.fail("man is not installed (package man-db)", pytrace=False)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    r = run(["man", "--warnings", "-l", page], env=env)
    assert r.returncode == 0 and not r.stderr.strip(), \
        "man --warnings reports problems in %s:\n%s" % (page, r.stderr)
    assert "NAME" in r.stdout and "SYNOPSIS" in r.stdout


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(kaiofs_bin, flag):
    with open(os.path.join(REPO_ROOT, "meson.build")) as f:
        version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
    r = run([kaiofs_bin, flag])
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"kaiofs %s \(libfuse 3\.\d+\.\d+\)\n" % re.escape(version), r.stdout), \
        "kaiofs %s printed %r" % (flag, r.stdout)


# --------------------------------------------------------------------------
# kaiofs-stat --watch


def parse_watch(stdout):
    """Header check, then one dict per line (None for '-')."""
    lines = stdout.splitlines()
    assert lines, "kaiofs-stat --watch printed nothing"
    assert lines[0].split() == WATCH_COLUMNS, "unexpected header %r" % lines[0]
    rows = []
    for line in lines[1:]:
        fields = line.split()
        assert len(fields) == len(WATCH_COLUMNS), "malformed line %r" % line
        assert re.fullmatch(r"\d\d:\d\d:\d\d", fields[0]), line
        row = {"time": fields[0], "engine": fields[-1]}
        for name, value in zip(WATCH_COLUMNS[1:-1], fields[1:-1]):
            row[name] = None if value == "-" else float(value)
        rows.append(row)
    return rows


class Load:
    """Reads and writes of 64 KiB blocks on one file in a thread, until stopped."""

    def __init__(self, path, size=8 * kh.MiB):
        self.path = path
        self.size = size
        self.stop_event = threading.Event()
        self.error = None
        self.ops = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        block = os.urandom(64 * 1024)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                off = 0
                while not self.stop_event.is_set():
                    kh.pwrite_all(fd, block, off)
                    kh.pread_exact(fd, len(block), off)
                    self.ops += 2
                    off = (off + len(block)) % self.size
            finally:
                os.close(fd)
        except OSError as e:
            self.error = e

    def __enter__(self):
        self.thread.start()
        assert kh.wait_for(lambda: self.ops > 0 or self.error, kh.tmo(10)), \
            "the load thread did not get going"
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(kh.tmo(30))
        assert not self.thread.is_alive(), "the load thread hangs"
        assert self.error is None, "load failed: %r" % self.error


def test_watch_counts_lines_and_sees_the_load(ext4, kaiofs_stat_bin):
    m, dev = ext4
    with Load(os.path.join(m.mountpoint, "load")):
        r = run([kaiofs_stat_bin, "--watch", "0.2", "--count", "4", m.mountpoint])
    assert r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr)
    rows = parse_watch(r.stdout)
    assert len(rows) == 4, r.stdout
    busy = [row for row in rows if row["r/s"] > 0 and row["w/s"] > 0]
    assert busy, "no interval shows reads and writes under load:\n%s" % r.stdout
    for row in busy:
        assert row["rMiB/s"] > 0 and row["wMiB/s"] > 0, r.stdout
        assert row["iocb/sub"] is not None and row["iocb/sub"] >= 1, r.stdout
        # 64 KiB per request: the byte rate follows the request rate
        assert abs(row["wMiB/s"] * 16 - row["w/s"]) <= 0.2 * row["w/s"] + 16, r.stdout
    assert m.stop() == 0, m.stderr
    import fs_support
    fs_support.assert_fsck_clean(dev.path)


def test_watch_latency_percentiles_per_interval(ext4, kaiofs_stat_bin):
    """p50/p99 of the interval need the histogram buckets in the JSON
    (latency.request.read.buckets, ...), which the server must send."""
    m, _ = ext4
    with Load(os.path.join(m.mountpoint, "load")):
        r = run([kaiofs_stat_bin, "-w", "0.2", "-c", "3", m.mountpoint])
    assert r.returncode == 0, r.stderr
    rows = [row for row in parse_watch(r.stdout) if row["r/s"] > 0]
    assert rows, r.stdout
    for row in rows:
        assert row["p50_us"] is not None and row["p99_us"] is not None, \
            "no per-interval latency under load (does kaiofs-stat --json carry " \
            "histogram buckets?):\n%s" % r.stdout
        assert 0 < row["p50_us"] <= row["p99_us"], r.stdout
    assert m.stop() == 0, m.stderr


def test_watch_idle_mount_shows_zero(mounter, make_device, kaiofs_stat_bin):
    m = mounter.mount(make_device("file", size=4 * kh.MiB), options=("raw",))
    r = run([kaiofs_stat_bin, "--watch=0.05", "--count=3", m.mountpoint])
    assert r.returncode == 0, r.stderr
    rows = parse_watch(r.stdout)
    assert len(rows) == 3
    for row in rows:
        assert row["r/s"] == 0 and row["w/s"] == 0 and row["iocb/sub"] is None, r.stdout
    assert m.stop() == 0, m.stderr


def start_watch(kaiofs_stat_bin, mnt, out, err, interval="0.1"):
    return subprocess.Popen([kaiofs_stat_bin, "-w", interval, mnt], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err)


def test_watch_ends_when_the_mount_goes_away(mounter, make_device, kaiofs_stat_bin):
    m = mounter.mount(make_device("file", size=4 * kh.MiB), options=("raw",))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = start_watch(kaiofs_stat_bin, m.mountpoint, out, err)
        try:
            out.flush()
            assert kh.wait_for(lambda: os.fstat(out.fileno()).st_size > 0, kh.tmo(10)), \
                "no header from kaiofs-stat --watch"
            assert m.stop() == 0, m.stderr
            rc = proc.wait(timeout=kh.tmo(15))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert rc == 1, "exit %d after the unmount; stdout %r stderr %r" % (rc, stdout, stderr)
    assert re.search(r"went away", stderr), stderr
    parse_watch(stdout)


def test_watch_exits_0_on_sigint(mounter, make_device, kaiofs_stat_bin):
    m = mounter.mount(make_device("file", size=4 * kh.MiB), options=("raw",))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = start_watch(kaiofs_stat_bin, m.mountpoint, out, err, interval="30")
        try:
            assert kh.wait_for(lambda: os.fstat(out.fileno()).st_size > 0, kh.tmo(10)), \
                "no header from kaiofs-stat --watch"
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=kh.tmo(10))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        assert rc == 0, "exit %d on SIGINT: %s" % (rc, err.read())
    assert m.stop() == 0, m.stderr


@pytest.mark.parametrize("args, pattern", [
    (["--watch", "0", "MNT"], r"bad interval 0"),
    (["--watch", "-1", "MNT"], r"unknown option -1|bad interval"),
    (["--count", "3", "MNT"], r"--count works with --watch only"),
    (["--watch", "--count", "0", "MNT"], r"bad count 0"),
    (["--json", "--watch", "MNT"], r"do not go together"),
    (["--frobnicate", "MNT"], r"unknown option --frobnicate"),
    ([], r"usage"),
], ids=["zero-interval", "negative-interval", "count-alone", "zero-count",
        "json-watch", "unknown", "no-mountpoint"])
def test_stat_bad_usage(kaiofs_stat_bin, workdir, args, pattern):
    argv = [kaiofs_stat_bin] + [workdir if a == "MNT" else a for a in args]
    r = run(argv)
    assert r.returncode == 2, "%r exited %d: %s" % (argv, r.returncode, r.stderr)
    assert re.search(pattern, r.stderr), r.stderr


def test_stat_not_a_kaiofs_mount(kaiofs_stat_bin, workdir):
    for argv in ([kaiofs_stat_bin, workdir], [kaiofs_stat_bin, "-w", "0.1", "-c", "1", workdir]):
        r = run(argv)
        assert r.returncode == 1, r
        assert "not a kaiofs mount" in r.stderr, r.stderr
        assert r.stdout == "", r.stdout
