#!/usr/bin/env python3
"""The layering of src/, checked on what the compiler actually reads.

For every source file of a layer, the build's own compile command is run
again with -M, and the headers it pulls in (directly or through other
headers) are matched against what the layer must not see. A layer's meson
library already lacks the include paths and libraries of the layers above
it; this also catches system headers, which every file could reach.

usage: check_layers.py BUILD_DIR
"""
import json
import os
import shlex
import subprocess
import sys

FUSE = ("/fuse3/",)
EXT2FS = ("/ext2fs/", "/et/com_err.h")
AIO = ("/libaio.h", "/liburing.h", "/liburing/")

# layer folder -> header paths it must not include
FORBIDDEN = {
    "engine": FUSE + EXT2FS,
    "io": FUSE + EXT2FS + AIO,
    "file": FUSE + EXT2FS + AIO,
    "fs": FUSE + AIO,
    "fuse": EXT2FS + AIO,
}


def layer_of(path, src_root):
    rel = os.path.relpath(path, src_root)
    return rel.split(os.sep)[0] if os.sep in rel else None


def dependency_command(entry):
    """The entry's compile command turned into one that lists its headers."""
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MQ", "-MT"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD"):
            continue
        out.append(a)
    return out + ["-M"]


def headers_of(entry):
    r = subprocess.run(dependency_command(entry), cwd=entry["directory"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("check_layers: %s: %s" % (entry["file"], r.stderr.strip()))
    return r.stdout.replace("\\\n", " ").split()[1:]


def main():
    build = os.path.abspath(sys.argv[1])
    src_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    src_root = os.path.realpath(src_root)
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    bad, checked = [], 0
    for e in entries:
        path = os.path.realpath(os.path.join(e["directory"], e["file"]))
        if not path.startswith(src_root + os.sep):
            continue
        layer = layer_of(path, src_root)
        if layer not in FORBIDDEN:
            continue
        checked += 1
        for h in headers_of(e):
            if any(f in h for f in FORBIDDEN[layer]):
                bad.append("%s (layer %s) includes %s" % (os.path.relpath(path, src_root), layer, h))
    if checked == 0:
        raise SystemExit("check_layers: no source of a layer found in %s" % build)
    for b in bad:
        print(b)
    print("check_layers: %d files checked, %d forbidden includes" % (checked, len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
