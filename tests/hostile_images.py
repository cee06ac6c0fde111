"""Hostile ext2/3/4 volumes for the kaiofs robustness tests.

A corpus image is a small, populated volume of one of VARIANTS whose
metadata was damaged on purpose, deterministically from its seed: fields of
the superblock, group descriptors, bitmaps, inodes (sizes, block counts,
flags, extent headers and entries, block maps, in-inode attributes), extent
and indirect blocks, directory blocks (rec_len, name_len, htree roots),
attribute blocks and the journal superblock. On volumes with checksums some
images have their checksums recomputed afterwards, so that the damage gets
past the checksum tests and reaches the code that parses the structures.

The image file is larger than the filesystem: a guard region with a known
pattern follows the last block, and must never change.

Command line (the reproductions printed by the tests use it):

  hostile_images.py make SEED OUT.img      write corpus image SEED and describe it
                                           (SEED -1 - i: variant i undamaged)
  hostile_images.py walk [--rw] MNT LOG    walk a mounted volume (what the tests run)
  hostile_images.py run [--first N] [--count M] [KAIOFS_BIN]
                                           check a range of the corpus, print counts
"""

import collections
import errno
import json
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
GUARD_SIZE = MiB
CORPUS_SIZE = 520
FAKE_TIME = "1700000000"
FS_UUID = "6b61696f-6673-4000-8000-686f7374696c"
HASH_SEED = "6b61696f-6673-4000-8000-686173687365"


class Variant:
    def __init__(self, name, fstype, block_size, size_mib, args=()):
        self.name = name
        self.fstype = fstype
        self.block_size = block_size
        self.size = size_mib * MiB
        self.args = tuple(args)

    def __repr__(self):
        return self.name


VARIANTS = (
    Variant("ext4-4k", "ext4", 4096, 16, ("-g", "1024")),
    Variant("ext4-1k", "ext4", 1024, 8),
    Variant("ext4-nocsum-4k", "ext4", 4096, 16, ("-O", "^metadata_csum", "-g", "2048")),
    Variant("ext4-nocsum-noflex-1k", "ext4", 1024, 6,
            ("-O", "^metadata_csum,^flex_bg", "-g", "2048")),
    Variant("ext4-noextent-4k", "ext4", 4096, 16, ("-O", "^extent,^64bit", "-g", "2048")),
    Variant("ext4-noextent-uninit-1k", "ext4", 1024, 4,
            ("-O", "^extent,^metadata_csum,^flex_bg,^64bit,uninit_bg", "-J", "size=1")),
    Variant("ext3-4k", "ext3", 4096, 16, ("-g", "2048")),
    Variant("ext3-1k", "ext3", 1024, 8),
    Variant("ext2-4k", "ext2", 4096, 8, ("-g", "1024")),
    Variant("ext2-1k-128", "ext2", 1024, 4, ("-I", "128")),
)


def variant_of(seed):
    return VARIANTS[seed % len(VARIANTS)]


# --------------------------------------------------------------------------
# checksums (the ext4 conventions: crc32c without the final inversion, and
# the crc16 of the old group descriptor checksum)


def _crc_table(poly):
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc_table(0x82F63B78)
_CRC16 = _crc_table(0xA001)


def crc32c(crc, data):
    table = _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def crc16(crc, data):
    table = _CRC16
    for b in data:
        crc = (table[(crc ^ b) & 0xFF] ^ (crc >> 8)) & 0xFFFF
    return crc


def le32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


# --------------------------------------------------------------------------
# the populated template of each variant


def _write_sparse(path, pieces, size):
    with open(path, "wb") as f:
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def build_source_tree(root):
    """The tree every template holds: files of many sizes (one sparse with
    many extents and pieces deep in the indirect tree), a directory large
    enough to be indexed, fast and slow symlinks, a fifo, a hard link,
    extended attributes and ACLs."""
    rng = random.Random("kaiofs-hostile-tree")
    os.makedirs(os.path.join(root, "a", "b", "c"))
    os.makedirs(os.path.join(root, "bigdir"))
    os.makedirs(os.path.join(root, "dir2"))

    def put(rel, data):
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)

    put("empty", b"")
    put("tiny", b"x")
    put("small", rng.randbytes(100))
    put("medium", rng.randbytes(70 * 1024))
    put("big", rng.randbytes(300 * 1024))
    put("a/b/c/f", b"hi\n")
    pieces = [(i * 65536, rng.randbytes(4096)) for i in range(16)]
    pieces.append((40 * MiB, rng.randbytes(4096)))
    pieces.append((5 << 30, rng.randbytes(4096)))
    _write_sparse(os.path.join(root, "sparse"), pieces, (5 << 30) + 8192)
    for i in range(300):
        put("bigdir/entry_with_a_long_name_%04d" % i, b"%d\n" % i if i % 10 == 0 else b"")
    for i in range(20):
        put("dir2/f%02d" % i, rng.randbytes(rng.choice((1, 500, 1024, 3000, 4096, 9000))))
    os.symlink("a/b/c/f", os.path.join(root, "fastlink"))
    os.symlink("a/" + "./" * 60 + "b/c/f", os.path.join(root, "slowlink"))
    os.mkfifo(os.path.join(root, "fifo"))
    os.link(os.path.join(root, "medium"), os.path.join(root, "hardlink"))
    os.setxattr(os.path.join(root, "small"), "user.small", b"v" * 20)
    os.setxattr(os.path.join(root, "big"), "user.note", b"n" * 40)
    os.setxattr(os.path.join(root, "a/b/c/f"), "user.big", b"w" * 700)
    os.setxattr(os.path.join(root, "dir2"), "user.dir", b"d" * 300)
    subprocess.run(["setfacl", "-m", "u:1234:rw,g:55:r", os.path.join(root, "big")],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["setfacl", "-d", "-m", "g:55:rx", os.path.join(root, "a")],
                   check=True, capture_output=True, timeout=60)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (1700000000, 1700000000),
                     follow_symlinks=False)
    os.utime(root, (1700000000, 1700000000))


TREE_PATHS = ("/", "/a", "/a/b", "/a/b/c", "/a/b/c/f", "/empty", "/tiny", "/small",
              "/medium", "/big", "/sparse", "/bigdir", "/bigdir/entry_with_a_long_name_0000",
              "/dir2", "/dir2/f00", "/dir2/f07", "/fastlink", "/slowlink", "/fifo")


def _run(argv, env=None, timeout=120):
    full_env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME)
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL)


def make_template(variant, directory):
    """Make the populated, clean volume of a variant in directory; returns
    (image path, layout)."""
    image = os.path.join(directory, variant.name + ".img")
    src = os.path.join(directory, "tree")
    if not os.path.isdir(src):
        build_source_tree(src)
    with open(image, "wb") as f:
        f.truncate(variant.size)
    r = _run(["mkfs." + variant.fstype, "-q", "-F", "-b", str(variant.block_size),
              "-N", "1024", "-U", FS_UUID, "-E", "hash_seed=" + HASH_SEED,
              *variant.args, "-d", src, image])
    if r.returncode != 0:
        raise RuntimeError("mkfs for %s failed: %s" % (variant, r.stderr))
    # index the large directory
    r = _run(["e2fsck", "-fyD", image])
    if r.returncode not in (0, 1):
        raise RuntimeError("e2fsck -fyD for %s failed (%d): %s"
                           % (variant, r.returncode, r.stdout + r.stderr))
    fix_inode_times(image)
    fix_superblock_times(image)
    r = _run(["e2fsck", "-fn", image])
    if r.returncode != 0:
        raise RuntimeError("template %s is not clean: %s" % (variant, r.stdout))
    layout = read_layout(image)
    return image, layout


def used_inodes(image):
    r = _run(["dumpe2fs", image])
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", r.stdout, re.M).group(1))
    block_size = int(re.search(r"^Block size:\s+(\d+)", r.stdout, re.M).group(1))
    used = []
    with open(image, "rb") as f:
        for group, m in enumerate(re.finditer(r"Inode bitmap at (\d+)", r.stdout)):
            f.seek(int(m.group(1)) * block_size)
            bits = f.read(per_group // 8)
            used += [group * per_group + i + 1 for i in range(per_group)
                     if bits[i // 8] >> (i % 8) & 1]
    return used


def fix_inode_times(image):
    """mkfs -d copies the change times of the source tree, and e2fsck -D
    changes directories: make all times the same in every template."""
    cmds = ["sif <%d> %s @%s" % (ino, field, FAKE_TIME) for ino in used_inodes(image)
            if ino >= 11 or ino == 2 for field in ("atime", "ctime", "mtime")]
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(cmds) + "\n")
        f.flush()
        r = _run(["debugfs", "-w", "-f", f.name, image])
    if r.returncode != 0:
        raise RuntimeError("debugfs on %s failed: %s" % (image, r.stderr))


def fix_superblock_times(image):
    """The same write and check times in every template, so that an image
    is the same bytes on every run."""
    with open(image, "r+b") as f:
        f.seek(1024)
        sb = bytearray(f.read(1024))
        for off in (44, 48, 64):                # s_mtime, s_wtime, s_lastcheck
            sb[off:off + 4] = le32(int(FAKE_TIME))
        sb[0x274:0x278] = bytes(4)              # their high bytes
        if int.from_bytes(sb[100:104], "little") & 0x400:      # metadata_csum
            sb[1020:1024] = le32(crc32c(0xFFFFFFFF, sb[:1020]))
        f.seek(1024)
        f.write(sb)


_HEADER_FIELDS = {
    "Block size": "block_size", "Inode size": "inode_size",
    "Inodes per group": "inodes_per_group", "Blocks per group": "blocks_per_group",
    "Block count": "blocks_count", "First block": "first_block",
    "Group descriptor size": "desc_size", "Inode count": "inodes_count",
}


def read_layout(image):
    """Where the metadata of a template is, from dumpe2fs and debugfs."""
    r = _run(["dumpe2fs", image])
    if r.returncode != 0:
        raise RuntimeError("dumpe2fs %s failed: %s" % (image, r.stderr))
    lay = {"desc_size": 32, "groups": [], "inodes": {}}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _HEADER_FIELDS:
            lay[_HEADER_FIELDS[key.strip()]] = int(value.split()[0])
        elif key.strip() == "Filesystem features":
            lay["features"] = value.split()
        m = re.match(r"Group (\d+): \(Blocks (\d+)-(\d+)\)", line)
        if m:
            lay["groups"].append({"first": int(m.group(2)), "last": int(m.group(3))})
            continue
        g = lay["groups"][-1] if lay["groups"] else None
        for name, pat in (("gdt", r"Group descriptors at (\d+)-(\d+)"),
                          ("block_bitmap", r"Block bitmap at (\d+)"),
                          ("inode_bitmap", r"Inode bitmap at (\d+)"),
                          ("inode_table", r"Inode table at (\d+)-(\d+)")):
            m = re.search(pat, line)
            if m and g is not None:
                g[name] = [int(x) for x in m.groups()]
    if "64bit" not in lay["features"]:
        lay["desc_size"] = 32
    specials = ["<2>", "<7>", "<8>"] if "has_journal" in lay["features"] else ["<2>", "<7>"]
    if "resize_inode" not in lay["features"]:
        specials.remove("<7>")
    cmds = []
    for path in list(TREE_PATHS) + specials:
        cmds += ["stat " + path, "imap " + path]
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(cmds) + "\n")
        f.flush()
        r = _run(["debugfs", "-f", f.name, image])
    sections = re.split(r"^debugfs: ", r.stdout, flags=re.M)
    current = None
    for sec in sections:
        head, _, body = sec.partition("\n")
        if head.startswith("stat "):
            current = _parse_stat(head[5:].strip(), body)
            if current:
                lay["inodes"][str(current["ino"])] = current
        elif head.startswith("imap ") and current:
            m = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)", body)
            if m:
                current["offset"] = (int(m.group(1)) * lay["block_size"]
                                     + int(m.group(2), 16))
    return lay


def _parse_stat(path, text):
    m = re.search(r"Inode: (\d+)\s+Type: (\S+)", text)
    if not m:
        return None
    info = {"ino": int(m.group(1)), "type": m.group(2), "path": path,
            "flags": int(re.search(r"Flags: (0x[0-9a-f]+)", text).group(1), 16),
            "acl": int(re.search(r"File ACL: (\d+)", text).group(1)),
            "meta": [], "data": []}
    m = re.search(r"^(EXTENTS|BLOCKS):\n(.*)", text, re.M)
    if m:
        for tok in m.group(2).split(", "):
            mm = re.match(r"\(([^)]*)\):(\d+)(?:-(\d+))?", tok.strip())
            if not mm:
                continue
            first = int(mm.group(2))
            last = int(mm.group(3) or first)
            if mm.group(1)[0].isdigit():
                info["data"].append([first, last])
            else:
                info["meta"].append([mm.group(1), first])
    return info


class TemplateCache:
    """Templates made once per variant in a directory (one per process)."""

    def __init__(self, directory):
        self.directory = directory
        self._made = {}

    def get(self, variant):
        if variant.name not in self._made:
            image, layout = make_template(variant, self.directory)
            with open(image, "rb") as f:
                data = f.read()
            self._made[variant.name] = (data, layout)
        return self._made[variant.name]


# --------------------------------------------------------------------------
# damage


# superblock fields: (name, offset, size)
SB_FIELDS = (
    ("s_inodes_count", 0, 4), ("s_blocks_count_lo", 4, 4), ("s_r_blocks_count_lo", 8, 4),
    ("s_free_blocks_count_lo", 12, 4), ("s_free_inodes_count", 16, 4),
    ("s_first_data_block", 20, 4), ("s_log_block_size", 24, 4),
    ("s_log_cluster_size", 28, 4), ("s_blocks_per_group", 32, 4),
    ("s_clusters_per_group", 36, 4), ("s_inodes_per_group", 40, 4),
    ("s_magic", 56, 2), ("s_state", 58, 2), ("s_errors", 60, 2), ("s_rev_level", 76, 4),
    ("s_first_ino", 84, 4), ("s_inode_size", 88, 2), ("s_block_group_nr", 90, 2),
    ("s_feature_compat", 92, 4), ("s_feature_incompat", 96, 4),
    ("s_feature_ro_compat", 100, 4), ("s_reserved_gdt_blocks", 206, 2),
    ("s_journal_inum", 224, 4), ("s_last_orphan", 232, 4), ("s_hash_seed", 236, 4),
    ("s_def_hash_version", 252, 1), ("s_desc_size", 254, 2), ("s_first_meta_bg", 260, 4),
    ("s_blocks_count_hi", 336, 4), ("s_min_extra_isize", 348, 2),
    ("s_want_extra_isize", 350, 2), ("s_flags", 352, 4), ("s_log_groups_per_flex", 372, 1),
    ("s_checksum_type", 373, 1), ("s_checksum", 1020, 4),
)

# group descriptor fields
GD_FIELDS = (
    ("bg_block_bitmap_lo", 0, 4, "block"), ("bg_inode_bitmap_lo", 4, 4, "block"),
    ("bg_inode_table_lo", 8, 4, "block"), ("bg_free_blocks_count_lo", 12, 2, "count"),
    ("bg_free_inodes_count_lo", 14, 2, "count"), ("bg_used_dirs_count_lo", 16, 2, "count"),
    ("bg_flags", 18, 2, "flags"), ("bg_block_bitmap_csum_lo", 24, 2, "count"),
    ("bg_itable_unused_lo", 28, 2, "count"), ("bg_checksum", 30, 2, "count"),
)
GD_FIELDS_64 = (
    ("bg_block_bitmap_hi", 32, 4, "hi"), ("bg_inode_bitmap_hi", 36, 4, "hi"),
    ("bg_inode_table_hi", 40, 4, "hi"),
)

# inode fields common to all inodes
INODE_FIELDS = (
    ("i_mode", 0, 2), ("i_size_lo", 4, 4), ("i_links_count", 26, 2), ("i_blocks_lo", 28, 4),
    ("i_flags", 32, 4), ("i_file_acl_lo", 104, 4), ("i_size_high", 108, 4),
    ("i_blocks_hi", 116, 2), ("i_file_acl_high", 118, 2),
)
INODE_FIELDS_LARGE = (("i_extra_isize", 128, 2),)

EXTENT_MAGIC = 0xF30A
XATTR_MAGIC = 0xEA020000


class Image:
    """One corpus image: the bytes, the variant, what was done to it."""

    def __init__(self, seed, variant, data, layout):
        self.seed = seed
        self.variant = variant
        self.data = bytearray(data)
        self.lay = layout
        self.bs = layout["block_size"]
        self.fs_size = len(data)
        self.damage = []        # descriptions
        self.touched = []       # structures whose checksums may be recomputed
        self.fix_checksums = False
        self.readonly = False

    # -- raw access -------------------------------------------------------

    def get(self, off, size):
        return int.from_bytes(self.data[off:off + size], "little")

    def put(self, off, size, value, what):
        old = self.get(off, size)
        value &= (1 << (8 * size)) - 1
        self.data[off:off + size] = value.to_bytes(size, "little")
        self.damage.append("%s @%d: 0x%x -> 0x%x" % (what, off, old, value))

    def flip_bytes(self, start, length, rng, what, count=None):
        count = count or rng.randint(1, 8)
        for _ in range(count):
            off = start + rng.randrange(length)
            old = self.data[off]
            new = old ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
            self.data[off] = new
            self.damage.append("%s byte @%d: 0x%02x -> 0x%02x" % (what, off, old, new))

    @property
    def blocks_count(self):
        return self.lay["blocks_count"]

    def has(self, feature):
        return feature in self.lay["features"]

    def metadata_blocks(self):
        blocks = [1 if self.bs == 1024 else 0]
        for g in self.lay["groups"]:
            for key in ("gdt", "block_bitmap", "inode_bitmap", "inode_table"):
                if key in g:
                    blocks.append(g[key][0])
        for info in self.lay["inodes"].values():
            blocks += [b for _, b in info["meta"]]
            if info["acl"]:
                blocks.append(info["acl"])
        return blocks

    # -- values -------------------------------------------------------------

    def block_value(self, rng, current):
        """A damaging block number: past the end (into the guard region or
        far beyond), zero, a metadata block, or near the current one."""
        guard_blocks = GUARD_SIZE // self.bs
        choice = rng.randrange(8)
        if choice == 0:
            return self.blocks_count + rng.randrange(guard_blocks)
        if choice == 1:
            return self.blocks_count
        if choice == 2:
            return rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000))
        if choice == 3:
            return rng.choice(self.metadata_blocks())
        if choice == 4:
            return current + rng.choice((-1, 1, 2, 1000, self.blocks_count))
        if choice == 5:
            return rng.getrandbits(32)
        if choice == 6:
            return self.blocks_count - rng.randint(1, 4)
        return current ^ (1 << rng.randrange(32))

    def int_value(self, rng, current, size):
        bits = 8 * size
        top = (1 << bits) - 1
        choice = rng.randrange(9)
        if choice == 0:
            return current ^ (1 << rng.randrange(bits))
        if choice == 1:
            return rng.getrandbits(bits)
        if choice == 2:
            return rng.choice((0, 1, top, top - 1, 1 << (bits - 1)))
        if choice == 3:
            return current + rng.choice((-1, 1, 2))
        if choice == 4:
            return current * 2 + 1
        if choice == 5:
            return self.blocks_count + rng.randrange(GUARD_SIZE // self.bs)
        if choice == 6:
            return current ^ rng.getrandbits(min(bits, 8))
        if choice == 7:
            return current >> 1
        return current | (1 << rng.randrange(bits))


# --- superblock, group descriptors, bitmaps


def damage_superblock(img, rng):
    name, off, size = rng.choice(SB_FIELDS)
    base = 1024
    current = img.get(base + off, size)
    if name in ("s_feature_compat", "s_feature_incompat", "s_feature_ro_compat", "s_flags"):
        value = current ^ (1 << rng.randrange(8 * size))
    elif name in ("s_blocks_count_lo", "s_first_data_block") or "bitmap" in name:
        value = img.block_value(rng, current)
    else:
        value = img.int_value(rng, current, size)
    img.put(base + off, size, value, "superblock " + name)
    img.touched.append(("sb",))


def gd_offset(img, group):
    gdt = img.lay["groups"][0]["gdt"][0]
    return gdt * img.bs + group * img.lay["desc_size"]


def damage_group_desc(img, rng):
    group = rng.randrange(len(img.lay["groups"]))
    fields = GD_FIELDS + (GD_FIELDS_64 if img.lay["desc_size"] >= 64 else ())
    name, off, size, kind = rng.choice(fields)
    base = gd_offset(img, group)
    current = img.get(base + off, size)
    if kind == "block":
        value = img.block_value(rng, current)
    elif kind == "hi":
        value = rng.choice((1, 0xFFFFFFFF, 1 << rng.randrange(32)))
    elif kind == "flags":
        value = current ^ (1 << rng.randrange(3))
    else:
        value = img.int_value(rng, current, size)
    img.put(base + off, size, value, "group %d descriptor %s" % (group, name))
    img.touched.append(("gd", group))


def damage_bitmap(img, rng):
    group = rng.randrange(len(img.lay["groups"]))
    kind = rng.choice(("block_bitmap", "inode_bitmap"))
    block = img.lay["groups"][group][kind][0]
    if kind == "block_bitmap":
        length = img.lay["blocks_per_group"] // 8
    else:
        length = img.lay["inodes_per_group"] // 8
    start = block * img.bs
    if rng.random() < 0.3:
        # clear a run: blocks or inodes in use look free
        run_start = rng.randrange(length)
        run = min(length - run_start, rng.randint(1, 64))
        img.data[start + run_start:start + run_start + run] = bytes(run)
        img.damage.append("group %d %s cleared bytes %d..%d" % (group, kind, run_start,
                                                                 run_start + run))
    else:
        img.flip_bytes(start, length, rng, "group %d %s" % (group, kind), rng.randint(1, 16))
    img.touched.append(("bitmap", group, kind))
    img.touched.append(("gd", group))


# --- inodes and their block maps


def pick_inode(img, rng, want=None):
    infos = list(img.lay["inodes"].values())
    if want:
        infos = [i for i in infos if want(i)] or infos
    return rng.choice(infos)


def is_extent_mapped(img, info):
    return bool(info["flags"] & 0x80000)


def damage_extent_node(img, rng, base, what, room):
    """Damage an extent header or entry at byte base (room entries fit)."""
    entries = img.get(base + 2, 2)
    depth = img.get(base + 6, 2)
    choice = rng.randrange(10)
    if choice == 0:
        img.put(base, 2, img.int_value(rng, EXTENT_MAGIC, 2), what + " eh_magic")
    elif choice == 1:
        img.put(base + 2, 2, rng.choice((0, entries + 1, room, room + 1, 0xFFFF)),
                what + " eh_entries")
    elif choice == 2:
        img.put(base + 4, 2, rng.choice((0, 1, room + 1, 0xFFFF, entries - 1)),
                what + " eh_max")
    elif choice == 3:
        img.put(base + 6, 2, rng.choice((0, 1, 2, 5, 0xFFFF, depth + 1)), what + " eh_depth")
    else:
        idx = rng.randrange(max(1, min(room, entries + 1)))
        ent = base + 12 + 12 * idx
        if depth == 0:
            field = rng.choice(("ee_block", "ee_len", "ee_start_hi", "ee_start_lo"))
            off, size = {"ee_block": (0, 4), "ee_len": (4, 2), "ee_start_hi": (6, 2),
                         "ee_start_lo": (8, 4)}[field]
        else:
            field = rng.choice(("ei_block", "ei_leaf_lo", "ei_leaf_hi"))
            off, size = {"ei_block": (0, 4), "ei_leaf_lo": (4, 4), "ei_leaf_hi": (8, 2)}[field]
        current = img.get(ent + off, size)
        if field in ("ee_start_lo", "ei_leaf_lo"):
            value = img.block_value(rng, current)
        elif field == "ee_len":
            value = rng.choice((0, current + 1, 32768, 32769, 0xFFFF, current * 100,
                                img.int_value(rng, current, 2)))
        elif field in ("ee_start_hi", "ei_leaf_hi"):
            value = rng.choice((1, 0xFFFF, 1 << rng.randrange(16)))
        else:
            value = rng.choice((0, current + 1, current - 1, 0xFFFFFFFF, 0x7FFFFFFF,
                                img.int_value(rng, current, 4)))
        img.put(ent + off, size, value, "%s entry %d %s" % (what, idx, field))


def damage_block_map(img, rng, base, count, what):
    """Damage one of count block numbers stored at byte base."""
    idx = rng.randrange(count)
    current = img.get(base + 4 * idx, 4)
    img.put(base + 4 * idx, 4, img.block_value(rng, current), "%s [%d]" % (what, idx))


def damage_inode(img, rng):
    info = pick_inode(img, rng)
    base = info["offset"]
    what = "inode %d (%s)" % (info["ino"], info["path"])
    choice = rng.randrange(10)
    isize = img.lay["inode_size"]
    if choice < 4:
        fields = INODE_FIELDS + (INODE_FIELDS_LARGE if isize > 128 else ())
        name, off, size = rng.choice(fields)
        current = img.get(base + off, size)
        if name == "i_mode":
            value = current ^ (rng.choice((0o170000, 0o010000, 0o020000, 0o040000, 0o100000,
                                           0o7777)) & rng.getrandbits(16))
        elif name == "i_flags":
            value = current ^ (1 << rng.choice((10, 12, 18, 19, 21, 28, 29, 4, 5, 7)))
        elif name == "i_file_acl_lo":
            value = img.block_value(rng, current)
        else:
            value = img.int_value(rng, current, size)
        img.put(base + off, size, value, what + " " + name)
    elif choice < 8 and info["type"] != "symlink" or choice < 6:
        if is_extent_mapped(img, info):
            damage_extent_node(img, rng, base + 40, what + " i_block extent", 4)
        else:
            damage_block_map(img, rng, base + 40, 15, what + " i_block")
    elif choice == 8 and isize > 128:
        extra = img.get(base + 128, 2)
        start = base + 128 + extra
        end = base + isize
        if start + 4 < end and img.get(start, 4) == XATTR_MAGIC and rng.random() < 0.7:
            damage_xattr_entries(img, rng, start + 4, end - (start + 4), what + " in-inode xattr")
        elif start < end:
            img.flip_bytes(start, end - start, rng, what + " extra")
        else:
            img.flip_bytes(base, isize, rng, what)
    else:
        img.flip_bytes(base, isize, rng, what)
    img.touched.append(("inode", info["ino"]))


def damage_tree_block(img, rng):
    """An extent tree block or an indirect block of some file."""
    cands = [(info, kind, blk) for info in img.lay["inodes"].values()
             for kind, blk in info["meta"] if info["ino"] != 7]
    if not cands:
        return damage_inode(img, rng)
    info, kind, blk = rng.choice(cands)
    base = blk * img.bs
    what = "%s block %d of inode %d (%s)" % (kind, blk, info["ino"], info["path"])
    if kind.startswith("ETB"):
        damage_extent_node(img, rng, base, what, (img.bs - 12) // 12)
        img.touched.append(("extent", blk, info["ino"]))
    else:
        if rng.random() < 0.85:
            damage_block_map(img, rng, base, img.bs // 4, what)
        else:
            img.flip_bytes(base, img.bs, rng, what)


# --- directories


def dir_entries(img, blk):
    """(offset, inode, rec_len, name_len) of the entries of a directory block."""
    base = blk * img.bs
    out = []
    off = 0
    while off + 8 <= img.bs:
        ino = img.get(base + off, 4)
        rec_len = img.get(base + off + 4, 2)
        if img.bs >= 65536 and rec_len in (0, 65535):
            rec_len = img.bs
        name_len = img.data[base + off + 6]
        out.append((base + off, ino, rec_len, name_len))
        if rec_len < 8 or off + rec_len > img.bs:
            break
        off += rec_len
    return out


def is_htree_root(img, info, blk_index):
    return info["type"] == "directory" and info["flags"] & 0x1000 and blk_index == 0


def damage_directory(img, rng):
    info = pick_inode(img, rng, lambda i: i["type"] == "directory" and i["data"])
    if info["type"] != "directory" or not info["data"]:
        return damage_inode(img, rng)
    blocks = [b for first, last in info["data"] for b in range(first, last + 1)]
    index = rng.randrange(len(blocks))
    if info["flags"] & 0x1000 and rng.random() < 0.4:
        index = 0
    blk = blocks[index]
    what = "directory block %d (#%d of inode %d %s)" % (blk, index, info["ino"], info["path"])
    if is_htree_root(img, info, index) and rng.random() < 0.8:
        damage_htree_root(img, rng, blk, what)
        img.touched.append(("dx", blk, info["ino"], True))
        return
    entries = dir_entries(img, blk)
    off, ino, rec_len, name_len = rng.choice(entries)
    choice = rng.randrange(6)
    if choice == 0:
        img.put(off, 4, rng.choice((0, 1, 7, 8, img.lay["inodes_count"],
                                    img.lay["inodes_count"] + 1, 0xFFFFFFFF,
                                    ino ^ (1 << rng.randrange(32)), 2, info["ino"])),
                what + " entry inode")
    elif choice in (1, 2):
        img.put(off + 4, 2, rng.choice((0, 4, 8, 9, 12, rec_len + 4, rec_len - 4, rec_len + 1,
                                        img.bs, img.bs + 4, 0xFFFC, 0xFFFF)),
                what + " rec_len")
    elif choice == 3:
        img.put(off + 6, 1, rng.choice((0, 255, rec_len, rec_len - 7, name_len + 1)),
                what + " name_len")
    elif choice == 4:
        img.put(off + 7, 1, rng.choice((0, 2, 3, 7, 8, 0xDE, 0xFF)), what + " file_type")
    else:
        if name_len and rng.random() < 0.5:
            pos = off + 8 + rng.randrange(name_len)
            img.put(pos, 1, rng.choice((0, ord("/"), ord("."), 0xFF)), what + " name byte")
        else:
            img.flip_bytes(blk * img.bs, img.bs, rng, what)
    img.touched.append(("dir", blk, info["ino"]))


def damage_htree_root(img, rng, blk, what):
    base = blk * img.bs
    # '.' (12 bytes), '..' (rec_len bs-12), dx_root_info at 24, limit/count at 32
    fields = (("dotdot rec_len", 16, 2), ("dot rec_len", 4, 2), ("reserved_zero", 24, 4),
              ("hash_version", 28, 1), ("info_length", 29, 1), ("indirect_levels", 30, 1),
              ("unused_flags", 31, 1), ("limit", 32, 2), ("count", 34, 2), ("block0", 36, 4))
    name, off, size = rng.choice(fields)
    current = img.get(base + off, size)
    if rng.random() < 0.3:
        # one of the hash/block pairs after the header
        count = max(1, img.get(base + 34, 2))
        idx = rng.randrange(1, count + 1)
        pos = base + 32 + 8 * idx
        if pos + 8 <= base + img.bs:
            if rng.random() < 0.5:
                img.put(pos, 4, img.int_value(rng, img.get(pos, 4), 4),
                        "%s dx entry %d hash" % (what, idx))
            else:
                img.put(pos + 4, 4, rng.choice((0, 1, 1000, 0xFFFFFFFF, img.blocks_count,
                                                img.get(pos + 4, 4) + 1)),
                        "%s dx entry %d block" % (what, idx))
            return
    if name == "indirect_levels":
        value = rng.choice((1, 2, 3, 8, 255))
    elif name in ("limit", "count"):
        value = rng.choice((0, 1, current + 1, current - 1, 0xFFFF, 508, 1000))
    elif name == "hash_version":
        value = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 255))
    else:
        value = img.int_value(rng, current, size)
    img.put(base + off, size, value, what + " htree " + name)


# --- extended attribute blocks, in-inode attributes


def damage_xattr_entries(img, rng, start, length, what):
    """Damage an entry of an attribute list starting at byte start."""
    fields = (("e_name_len", 0, 1), ("e_name_index", 1, 1), ("e_value_offs", 2, 2),
              ("e_value_inum", 4, 4), ("e_value_size", 8, 4), ("e_hash", 12, 4))
    # walk to a random entry
    pos = start
    entries = []
    while pos + 16 <= start + length and img.get(pos, 4) != 0 and len(entries) < 32:
        entries.append(pos)
        name_len = img.data[pos]
        pos += (16 + name_len + 3) & ~3
    if not entries or rng.random() < 0.15:
        img.flip_bytes(start, length, rng, what)
        return
    ent = rng.choice(entries)
    name, off, size = rng.choice(fields)
    current = img.get(ent + off, size)
    if name == "e_value_size":
        value = rng.choice((0, current + 1, img.bs, img.bs + 1, 0xFFFFFFFF, 0x7FFFFFFF,
                            65536, current * 4))
    elif name == "e_value_offs":
        value = rng.choice((0, current + 1, current - 1, img.bs - 1, img.bs, 0xFFFF, 3))
    elif name == "e_name_len":
        value = rng.choice((0, 255, current + 1, current + 40))
    else:
        value = img.int_value(rng, current, size)
    img.put(ent + off, size, value, "%s entry %s" % (what, name))


def damage_xattr_block(img, rng):
    cands = sorted({i["acl"] for i in img.lay["inodes"].values() if i["acl"]})
    if not cands:
        return damage_inode(img, rng)
    blk = rng.choice(cands)
    base = blk * img.bs
    what = "xattr block %d" % blk
    if rng.random() < 0.3:
        name, off = rng.choice((("h_magic", 0), ("h_refcount", 4), ("h_blocks", 8),
                                ("h_hash", 12)))
        img.put(base + off, 4, img.int_value(rng, img.get(base + off, 4), 4),
                "%s %s" % (what, name))
    else:
        damage_xattr_entries(img, rng, base + 32, img.bs - 32, what)
    img.touched.append(("xattr", blk))


def damage_journal_sb(img, rng):
    info = img.lay["inodes"].get("8")
    if not info or not info["data"]:
        return damage_superblock(img, rng)
    blk = info["data"][0][0]
    base = blk * img.bs
    fields = (("h_magic", 0), ("h_blocktype", 4), ("s_blocksize", 12), ("s_maxlen", 16),
              ("s_first", 20), ("s_sequence", 24), ("s_start", 28), ("s_errno", 32),
              ("s_feature_compat", 36), ("s_feature_incompat", 40), ("s_nr_users", 64))
    name, off = rng.choice(fields)
    current = int.from_bytes(img.data[base + off:base + off + 4], "big")
    value = img.int_value(rng, current, 4) & 0xFFFFFFFF
    img.data[base + off:base + off + 4] = value.to_bytes(4, "big")
    img.damage.append("journal superblock (block %d) %s: 0x%x -> 0x%x"
                      % (blk, name, current, value))


def damage_any_block(img, rng):
    blk = rng.choice(img.metadata_blocks())
    img.flip_bytes(blk * img.bs, img.bs, rng, "metadata block %d" % blk, rng.randint(1, 24))


DAMAGE = (
    (damage_superblock, 9), (damage_group_desc, 10), (damage_bitmap, 6),
    (damage_inode, 30), (damage_tree_block, 12), (damage_directory, 20),
    (damage_xattr_block, 8), (damage_journal_sb, 3), (damage_any_block, 6),
)


# --------------------------------------------------------------------------
# checksums after the damage


def fs_csum_seed(img):
    sb = 1024
    if img.get(sb + 96, 4) & 0x2000:        # INCOMPAT_CSUM_SEED
        return img.get(sb + 0x270, 4)
    return crc32c(0xFFFFFFFF, img.data[sb + 0x68:sb + 0x78])


def inode_seed(img, ino):
    base = img.lay["inodes"][str(ino)]["offset"]
    gen = img.data[base + 100:base + 104]
    return crc32c(crc32c(fs_csum_seed(img), le32(ino)), gen)


def fix_inode_csum(img, ino):
    info = img.lay["inodes"][str(ino)]
    base = info["offset"]
    isize = img.lay["inode_size"]
    raw = bytearray(img.data[base:base + isize])
    has_hi = isize > 128 and int.from_bytes(raw[128:130], "little") >= 4
    raw[0x7C:0x7E] = b"\0\0"
    if has_hi:
        raw[0x82:0x84] = b"\0\0"
    crc = crc32c(inode_seed(img, ino), raw)
    img.data[base + 0x7C:base + 0x7E] = struct.pack("<H", crc & 0xFFFF)
    if has_hi:
        img.data[base + 0x82:base + 0x84] = struct.pack("<H", crc >> 16)


def fix_gd_csum(img, group):
    base = gd_offset(img, group)
    size = img.lay["desc_size"]
    desc = bytearray(img.data[base:base + size])
    desc[30:32] = b"\0\0"
    if img.has("metadata_csum"):
        crc = crc32c(crc32c(fs_csum_seed(img), le32(group)), desc) & 0xFFFF
    else:
        crc = crc16(0xFFFF, img.data[1024 + 0x68:1024 + 0x78])
        crc = crc16(crc, le32(group))
        crc = crc16(crc, desc[:30])
        if size > 32:
            crc = crc16(crc, desc[32:])
    img.data[base + 30:base + 32] = struct.pack("<H", crc)


def fix_bitmap_csum(img, group, kind):
    g = img.lay["groups"][group]
    blk = g[kind][0] * img.bs
    base = gd_offset(img, group)
    if img.get(base + 18, 2) & (2 if kind == "block_bitmap" else 1):
        return      # not initialized: never read
    if kind == "block_bitmap":
        n, lo, hi = img.lay["blocks_per_group"] // 8, 24, 0x38
    else:
        n, lo, hi = img.lay["inodes_per_group"] // 8, 26, 0x3A
    crc = crc32c(fs_csum_seed(img), img.data[blk:blk + n])
    img.data[base + lo:base + lo + 2] = struct.pack("<H", crc & 0xFFFF)
    if img.lay["desc_size"] >= 64:
        img.data[base + hi:base + hi + 2] = struct.pack("<H", crc >> 16)


def fix_extent_csum(img, blk, ino):
    base = blk * img.bs
    tail = 12 + 12 * img.get(base + 4, 2)
    if tail + 4 <= img.bs:
        crc = crc32c(inode_seed(img, ino), img.data[base:base + tail])
        img.data[base + tail:base + tail + 4] = le32(crc)


def fix_dir_csum(img, blk, ino):
    base = blk * img.bs
    tail = base + img.bs - 12
    if img.get(tail, 4) == 0 and img.get(tail + 4, 2) == 12 and img.data[tail + 7] == 0xDE:
        crc = crc32c(inode_seed(img, ino), img.data[base:tail])
        img.data[tail + 8:tail + 12] = le32(crc)


def fix_dx_csum(img, blk, ino, root):
    base = blk * img.bs
    count_off = 32 if root else 8
    limit = img.get(base + count_off, 2)
    count = img.get(base + count_off + 2, 2)
    tail = base + count_off + 8 * limit
    if count_off + 8 * count > img.bs or tail + 8 > base + img.bs:
        return
    crc = crc32c(inode_seed(img, ino), img.data[base:base + count_off + 8 * count])
    crc = crc32c(crc, img.data[tail:tail + 4])
    crc = crc32c(crc, bytes(4))
    img.data[tail + 4:tail + 8] = le32(crc)


def fix_xattr_csum(img, blk):
    base = blk * img.bs
    img.data[base + 16:base + 20] = b"\0\0\0\0"
    crc = crc32c(crc32c(fs_csum_seed(img), struct.pack("<Q", blk)),
                 img.data[base:base + img.bs])
    img.data[base + 16:base + 20] = le32(crc)


def fix_sb_csum(img):
    crc = crc32c(0xFFFFFFFF, img.data[1024:1024 + 1020])
    img.data[1024 + 1020:1024 + 1024] = le32(crc)


def fix_checksums(img):
    """Recompute the checksums of what was damaged, so that the damage is
    seen by the code behind the checksum tests."""
    csum = img.has("metadata_csum")
    order = {"bitmap": 0, "gd": 1, "inode": 2, "extent": 3, "dir": 3, "dx": 3,
             "xattr": 3, "sb": 4}
    todo = sorted(set(img.touched), key=lambda t: order[t[0]])
    if csum and not any(t[0] == "sb" for t in todo):
        todo.append(("sb",))
    for t in todo:
        kind = t[0]
        if kind == "gd":
            fix_gd_csum(img, t[1])
        elif not csum:
            continue
        elif kind == "bitmap":
            fix_bitmap_csum(img, t[1], t[2])
        elif kind == "inode":
            fix_inode_csum(img, t[1])
        elif kind == "extent":
            fix_extent_csum(img, t[1], t[2])
        elif kind == "dir":
            fix_dir_csum(img, t[1], t[2])
        elif kind == "dx":
            fix_dx_csum(img, t[1], t[2], t[3])
        elif kind == "xattr":
            fix_xattr_csum(img, t[1])
        elif kind == "sb":
            fix_sb_csum(img)


GUARD_MARK = b"kaiofs guard region of hostile image "


def guard_bytes(seed):
    unit = GUARD_MARK + b"%d\n" % seed
    return (unit * (GUARD_SIZE // len(unit) + 1))[:GUARD_SIZE]


def make_image(seed, cache):
    """Corpus image SEED from a TemplateCache; returns an Image."""
    variant = variant_of(seed)
    data, layout = cache.get(variant)
    img = Image(seed, variant, data, layout)
    rng = random.Random("kaiofs-hostile-%d" % seed)
    funcs = [f for f, _ in DAMAGE]
    weights = [w for _, w in DAMAGE]
    count = 1 + (rng.random() < 0.5) + (rng.random() < 0.25)
    for f in rng.choices(funcs, weights, k=count):
        f(img, rng)
    checksummed = img.has("metadata_csum") or img.has("uninit_bg")
    img.fix_checksums = checksummed and rng.random() < 0.6
    if img.fix_checksums:
        fix_checksums(img)
    img.readonly = rng.random() < 0.15
    return img


def undamaged_image(variant, cache):
    """The template of a variant as it is, as an Image (seed -1 - index)."""
    data, layout = cache.get(variant)
    return Image(-1 - VARIANTS.index(variant), variant, data, layout)


def write_image(img, path):
    with open(path, "wb") as f:
        f.write(img.data)
        f.write(guard_bytes(img.seed))
    return path


def describe(img):
    lines = ["seed %d: %s%s%s" % (img.seed, img.variant.name,
                                  ", checksums recomputed" if img.fix_checksums else "",
                                  ", mounted read-only" if img.readonly else "")]
    lines += ["  " + d for d in img.damage]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the walk (runs in its own process; every step is logged before it starts,
# so the step a hang is stuck in is the last line of the log)


READ_CAP = 4 * MiB
# SEEK_DATA/SEEK_HOLE only on files up to this size: test_hostile.py checks
# the cost of seeking through a large sparse file on its own
SEEK_CAP = 64 * MiB
MAX_ENTRIES = 3000
MAX_DEPTH = 12


class Walker:
    def __init__(self, mnt, log):
        self.mnt = mnt
        self.log = log
        self.errors = collections.Counter()
        self.ops = 0
        self.regular = []
        self.sizes = {}
        self.outside = []       # reads that returned bytes from the guard region
        self.dirs = []
        self.seen = 0

    def op(self, name, path, fn, *args, **kwargs):
        self.ops += 1
        self.log.write("%s %s\n" % (name, path))
        self.log.flush()
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            if e.errno == errno.ENXIO and name.startswith("seek_"):
                return None     # no more data: the normal end of the loop
            code = errno.errorcode.get(e.errno, str(e.errno))
            self.errors[code] += 1
            self.log.write("  -> %s\n" % code)
            return None

    def read_file(self, path):
        fd = self.op("open", path, os.open, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if fd is None:
            return
        try:
            st = self.op("fstat", path, os.fstat, fd)
            done = 0
            while done < READ_CAP:
                chunk = self.op("read", "%s@%d" % (path, done), os.pread, fd, 256 * 1024, done)
                if not chunk:
                    break
                self.check_data(path, done, chunk)
                done += len(chunk)
            if st is not None and st.st_size > 0:
                for off in (st.st_size - 1, max(0, st.st_size - 70000), st.st_size // 2):
                    chunk = self.op("pread", "%s@%d" % (path, off), os.pread, fd, 65536, off)
                    self.check_data(path, off, chunk)
                pos = 0
                for _ in range(32 if st.st_size <= SEEK_CAP else 0):
                    data = self.op("seek_data", "%s@%d" % (path, pos), os.lseek, fd, pos,
                                   os.SEEK_DATA)
                    if data is None:
                        break
                    hole = self.op("seek_hole", "%s@%d" % (path, data), os.lseek, fd, data,
                                   os.SEEK_HOLE)
                    if hole is None or hole <= pos:
                        break
                    pos = hole
        finally:
            self.op("close", path, os.close, fd)

    def check_data(self, path, offset, data):
        """Data from past the end of the filesystem carries the guard pattern."""
        at = data.find(GUARD_MARK[:24]) if data else -1
        if at >= 0:
            self.outside.append("%s@%d" % (path, offset + at))
            self.log.write("  -> data from past the end of the filesystem\n")

    def xattrs(self, path):
        names = self.op("listxattr", path, os.listxattr, path, follow_symlinks=False)
        for name in names or ():
            self.op("getxattr", "%s:%s" % (path, name), os.getxattr, path, name,
                    follow_symlinks=False)

    def visit(self, path, depth):
        if self.seen >= MAX_ENTRIES:
            return
        self.seen += 1
        st = self.op("lstat", path, os.lstat, path)
        if st is None:
            return
        self.xattrs(path)
        if stat.S_ISLNK(st.st_mode):
            self.op("readlink", path, os.readlink, path)
            self.op("stat", path, os.stat, path)
        elif stat.S_ISREG(st.st_mode):
            self.regular.append(path)
            self.sizes[path] = st.st_size
            self.read_file(path)
        elif stat.S_ISDIR(st.st_mode):
            self.dirs.append(path)
            if depth >= MAX_DEPTH:
                return
            names = self.op("readdir", path, os.listdir, path)
            self.op("statvfs", path, os.statvfs, path)
            for name in sorted(names or ()):
                self.visit(os.path.join(path, name), depth + 1)

    def write_file(self, path, data, flags):
        fd = self.op("open", path, os.open, path, flags, 0o644)
        if fd is None:
            return
        try:
            done = 0
            while done < len(data):
                n = self.op("write", "%s+%d" % (path, done), os.write, fd, data[done:])
                if not n:
                    break
                done += n
            self.op("fsync", path, os.fsync, fd)
        finally:
            self.op("close", path, os.close, fd)

    def overwrite(self, path, data):
        fd = self.op("open", path, os.open, path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if fd is None:
            return
        try:
            st = self.op("fstat", path, os.fstat, fd)
            size = min(st.st_size if st else 0, 1 << 40)
            for off in sorted({0, size // 2, max(0, size - 100)}):
                self.op("pwrite", "%s@%d" % (path, off), os.pwrite, fd, data, off)
            self.op("fdatasync", path, os.fdatasync, fd)
        finally:
            self.op("close", path, os.close, fd)

    def writes(self):
        m = self.mnt
        j = os.path.join
        pattern = bytes(range(256)) * 256
        self.write_file(j(m, "hostile-new"), pattern, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.op("read_back", j(m, "hostile-new"), self.read_file, j(m, "hostile-new"))
        existing = [p for p in (j(m, "big"), j(m, "sparse"), j(m, "medium")) if p in self.regular]
        others = [p for p in self.regular if p not in existing and "hostile" not in p]
        targets = existing + others[:2]
        for path in targets[:2]:
            self.write_file(path, pattern[:5000], os.O_WRONLY | os.O_APPEND)
        # overwrite blocks in place, through whatever map the damage left
        # the files whose inodes the damage aims at, then the largest others
        known = [m + p for p in TREE_PATHS if m + p in self.sizes]
        largest = sorted((p for p in self.regular if "hostile" not in p),
                         key=lambda p: -self.sizes[p])
        for path in list(dict.fromkeys(known + largest))[:16]:
            self.overwrite(path, pattern[:4096])
        for path in targets[2:3] + others[2:3]:
            self.op("truncate", path, os.truncate, path, 1000)
        self.op("truncate_up", j(m, "small"), os.truncate, j(m, "small"), 200000)
        self.op("mkdir", j(m, "hostile-dir"), os.mkdir, j(m, "hostile-dir"))
        self.op("rename", j(m, "hostile-new"), os.rename, j(m, "hostile-new"),
                j(m, "hostile-dir", "moved"))
        self.op("rename", j(m, "tiny"), os.rename, j(m, "tiny"), j(m, "a", "b", "tiny2"))
        for d in self.dirs[:6]:
            self.write_file(j(d, "hostile-created"), b"c" * 100, os.O_WRONLY | os.O_CREAT)
        self.op("unlink", j(m, "dir2/f03"), os.unlink, j(m, "dir2", "f03"))
        self.op("unlink", j(m, "bigdir/e5"), os.unlink,
                j(m, "bigdir", "entry_with_a_long_name_0005"))
        self.op("mkdir", j(m, "hostile-dir/sub"), os.mkdir, j(m, "hostile-dir", "sub"))
        self.op("rmdir", j(m, "hostile-dir/sub"), os.rmdir, j(m, "hostile-dir", "sub"))
        self.op("symlink", j(m, "hostile-link"), os.symlink, "a/" + "./" * 70 + "b",
                j(m, "hostile-link"))
        self.op("setxattr", j(m, "dir2"), os.setxattr, j(m, "dir2"), "user.hostile", b"h" * 300)
        self.op("removexattr", j(m, "small"), os.removexattr, j(m, "small"), "user.small")
        self.op("link", j(m, "hostile-hard"), os.link, j(m, "medium"), j(m, "hostile-hard"))
        self.op("readdir", m, os.listdir, m)
        self.op("readdir", j(m, "bigdir"), os.listdir, j(m, "bigdir"))
        self.op("sync", m, os.sync)


def walk_main(argv):
    writable = "--rw" in argv
    mnt, logpath = [a for a in argv if a != "--rw"]
    with open(logpath, "w", errors="backslashreplace") as log:
        w = Walker(mnt, log)
        w.visit(mnt, 0)
        if writable:
            w.writes()
            w.visit(mnt, 0)
        log.write("DONE %s\n" % json.dumps({"ops": w.ops, "errors": w.errors,
                                             "outside": w.outside}))
    return 0


# --------------------------------------------------------------------------
# checking one image


SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                          r"SUMMARY: UndefinedBehaviorSanitizer|Sanitizer:DEADLYSIGNAL")


class Outcome:
    def __init__(self, img):
        self.seed = img.seed
        self.description = describe(img)
        self.readonly = img.readonly
        self.result = None          # "refused" or "mounted"
        self.errors = collections.Counter()
        self.ops = 0
        self.bugs = []              # (kind, text)
        self.stderr = ""
        self.exit_status = None
        self.killed = False         # the walk hung and kaiofs was killed to end it
        self.seconds = 0.0

    def bug(self, kind, text):
        self.bugs.append((kind, text))

    def report(self, kaiofs_bin):
        lines = [self.description,
                 "  result: %s, exit status %r, %d walk steps, errors %s"
                 % (self.result, self.exit_status, self.ops, dict(self.errors))]
        for kind, text in self.bugs:
            lines.append("  BUG (%s): %s" % (kind, text))
        script = os.path.join(HERE, "hostile_images.py")
        image = "/tmp/hostile-%d.img" % self.seed
        lines.append("  reproduce: %s %s make %d %s && %s -f%s %s MNT, then (in another "
                     "shell) %s %s walk%s MNT walk.log"
                     % (sys.executable, script, self.seed, image, kaiofs_bin,
                        " -o ro" if self.readonly else "", image, sys.executable, script,
                        "" if self.readonly else " --rw"))
        if self.stderr.strip():
            lines.append("  kaiofs stderr:\n" + _indent(self.stderr[-12000:]))
        return "\n".join(lines)


def _indent(text):
    return "\n".join("    " + l for l in text.splitlines())


def kaiofs_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    return env


def guard_damage(path, img):
    """None when the image file still ends with its intact guard region,
    else what changed past the end of the filesystem."""
    size = os.path.getsize(path)
    expected = img.fs_size + GUARD_SIZE
    problems = []
    if size != expected:
        problems.append("the image file is %d bytes instead of %d (written at or near "
                        "byte %d, block %d)" % (size, expected, size, (size - 1) // img.bs))
    with open(path, "rb") as f:
        f.seek(img.fs_size)
        tail = f.read(GUARD_SIZE)
    want = guard_bytes(img.seed)
    if tail != want:
        diff = [i for i in range(0, GUARD_SIZE, 512) if tail[i:i + 512] != want[i:i + 512]]
        first = img.fs_size + diff[0] if diff else img.fs_size + len(tail)
        problems.append("the guard region after the filesystem changed: first changed "
                        "512-byte sector at byte %d (block %d of %d), %d sectors changed"
                        % (first, first // img.bs, img.blocks_count, len(diff)))
    return "; ".join(problems) or None


def _sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def check_refusal(out, stderr, status):
    if status < 0:
        out.bug("crash", "killed by signal %d before mounting" % -status)
    elif status == 0:
        out.bug("refusal", "exit status 0 without mounting")
    lines = [l for l in stderr.splitlines() if l.strip()]
    if SANITIZER_RE.search(stderr):
        out.bug("sanitizer", "sanitizer report before mounting")
    elif len(lines) != 1 or not lines[0].startswith("kaiofs: ") or \
            lines[0].count("kaiofs: ") != 1:
        out.bug("refusal", "expected one 'kaiofs: ' line on stderr, got %r" % lines[:6])


def check_image(img, kaiofs_bin, workdir, keep=False):
    """Write img into workdir, give it to kaiofs, walk it; an Outcome.
    Leaves nothing mounted and no process behind; the image file stays
    (as workdir/hostile-SEED.img) when something went wrong or keep is set."""
    import kaiofs_helpers as kh

    # seconds; a walk takes one or two (a few more under the sanitizers)
    mount_timeout = 10                      # scaled by KaiofsMount
    walk_timeout = int(kh.tmo(10) + 20)
    exit_timeout = int(kh.tmo(15))

    start = time.monotonic()
    out = Outcome(img)
    image = write_image(img, os.path.join(workdir, "hostile-%d.img" % img.seed))
    before = _sha256(image)
    mnt = os.path.join(workdir, "mnt-%d" % img.seed)
    os.mkdir(mnt)
    m = kh.KaiofsMount(kaiofs_bin, image, mnt, options=("ro",) if img.readonly else (),
                       env=kaiofs_env(), logdir=workdir,
                       watchdog=mount_timeout + walk_timeout + exit_timeout)
    try:
        try:
            m.start(timeout=mount_timeout)
        except kh.MountFailed:
            if m.proc.poll() is None:
                out.result = "hang"
                out.bug("hang", "not mounted after %.0fs and still running"
                        % kh.tmo(mount_timeout))
            else:
                out.result = "refused"
                out.exit_status = m.proc.returncode
                check_refusal(out, m.stderr, m.proc.returncode)
                if _sha256(image) != before:
                    out.bug("refused-but-wrote", "the image changed although kaiofs "
                            "refused to mount it")
            return out
        out.result = "mounted"
        run_walk(out, m, img, walk_timeout)
        if m.mounted():
            r = m.unmount()
            if r.returncode != 0 and m.mounted():
                out.bug("unmount", "fusermount3 -u failed: %s" % r.stderr.strip())
        try:
            status = m.proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            status = None
            out.bug("hang", "kaiofs still running %ds after unmount" % exit_timeout)
        out.exit_status = status
        stderr = m.stderr
        if status is not None and status < 0 and not out.killed:
            out.bug("crash", "kaiofs killed by signal %d" % -status)
        if SANITIZER_RE.search(stderr):
            out.bug("sanitizer", "sanitizer report")
        if status is not None and status > 0 and not re.search(r"^kaiofs: ", stderr, re.M):
            out.bug("exit", "exit status %d without a 'kaiofs: ' message" % status)
    finally:
        problems = m.cleanup()
        for p in problems:
            if "watchdog" in p or "still running" in p:
                out.bug("hang", p)
            else:
                out.bug("cleanup", p)
        out.stderr = m.stderr
        damage = guard_damage(image, img)
        if damage:
            out.bug("guard", "written past the end of the filesystem: " + damage)
        out.seconds = time.monotonic() - start
        if not out.bugs:
            for path in ((None if keep else image), m._stderr_path, m._stdout_path):
                if path and os.path.exists(path):
                    os.unlink(path)
        try:
            os.rmdir(mnt)
        except OSError:
            pass
    return out


def run_walk(out, m, img, timeout):
    log = os.path.join(os.path.dirname(m.mountpoint), "walk-%d.log" % img.seed)
    argv = [sys.executable, os.path.abspath(__file__), "walk"]
    argv += ([] if img.readonly else ["--rw"]) + [m.mountpoint, log]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # stuck in a request the daemon will never answer: abort the connection
            out.killed = True
            m.proc.kill()
            output, _ = proc.communicate()
        out.bug("hang", "the walk did not finish within %ds; last steps:\n%s"
                % (timeout, _indent(_tail(log, 6))))
        return
    with open(log) as f:
        lines = f.read().splitlines()
    done = [l for l in lines if l.startswith("DONE ")]
    out.ops = sum(1 for l in lines if not l.startswith((" ", "DONE ")))
    if proc.returncode != 0 or not done:
        out.bug("walk", "the walk failed (status %d):\n%s\nlast steps:\n%s"
                % (proc.returncode, _indent(output.decode("utf-8", "replace")[-3000:]),
                   _indent("\n".join(lines[-6:]))))
        return
    summary = json.loads(done[0][5:])
    out.errors.update(summary["errors"])
    if summary.get("outside"):
        out.bug("read-outside", "reads returned bytes from past the end of the filesystem "
                "(the guard region): %s"
                % ", ".join(list(dict.fromkeys(summary["outside"]))[:8]))
    if not m.alive():
        out.bug("crash", "kaiofs exited during the walk (status %r); last steps:\n%s"
                % (m.proc.returncode, _indent("\n".join(lines[-6:]))))
    os.unlink(log)


def _tail(path, n):
    try:
        with open(path) as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# command line


def run_main(args):
    """Check a range of the corpus outside pytest and print the counts."""
    first, count, kaiofs_bin = 0, CORPUS_SIZE, None
    rest = list(args)
    while rest:
        a = rest.pop(0)
        if a == "--first":
            first = int(rest.pop(0))
        elif a == "--count":
            count = int(rest.pop(0))
        else:
            kaiofs_bin = a
    kaiofs_bin = os.path.abspath(kaiofs_bin or os.environ.get("KAIOFS_BIN") or
                                 os.path.join(HERE, "..", "build-asan", "src", "kaiofs"))
    sys.path.insert(0, HERE)
    import kaiofs_helpers as kh
    scale = float(os.environ.get("KAIOFS_TIMEOUT_SCALE", "4"))
    kh.set_timeout_scale(scale)
    totals = collections.Counter()
    errors = collections.Counter()
    bugs = []
    workdir = tempfile.mkdtemp(prefix="kaiofs-hostile-", dir="/tmp")
    os.chmod(workdir, 0o755)
    cache = TemplateCache(tempfile.mkdtemp(prefix="templates-", dir=workdir))
    started = time.monotonic()
    try:
        for seed in range(first, first + count):
            out = check_image(make_image(seed, cache), kaiofs_bin, workdir)
            totals[out.result] += 1
            errors.update(out.errors)
            if out.errors:
                totals["mounted with errors"] += 1
            for kind, _ in out.bugs:
                totals["bug: " + kind] += 1
            if out.bugs:
                bugs.append(out)
                print(out.report(kaiofs_bin), flush=True)
            print("seed %d: %s %.1fs %s%s" % (seed, out.result, out.seconds, dict(out.errors),
                                             " BUGS" if out.bugs else ""), flush=True)
    finally:
        shutil.rmtree(cache.directory, ignore_errors=True)
    print("\n%d images in %.0fs: %s" % (count, time.monotonic() - started, dict(totals)))
    print("errors seen by the walks: %s" % dict(errors))
    print("images with bugs: %s" % [o.seed for o in bugs])
    print("images of failing seeds are kept in %s" % workdir)
    return 1 if bugs else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "walk":
        return walk_main(argv[2:])
    if len(argv) == 4 and argv[1] == "make":
        seed = int(argv[2])
        with tempfile.TemporaryDirectory(prefix="kaiofs-hostile-") as tmp:
            cache = TemplateCache(tmp)
            if seed < 0:
                img = undamaged_image(VARIANTS[-1 - seed], cache)
            else:
                img = make_image(seed, cache)
            write_image(img, argv[3])
        print(describe(img))
        print("filesystem: %d bytes, then a %d byte guard region" % (img.fs_size, GUARD_SIZE))
        return 0
    if len(argv) >= 2 and argv[1] == "run":
        return run_main(argv[2:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
