/* Names: the per-directory name index, lookup, creation, links, removal,
 * rename and readdir. libext2fs scans directories linearly; the index makes
 * a lookup one hash probe. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#endif

/* ---- the name index ---- */

#define NO_POS UINT64_MAX

struct dent {
	struct dent *next;
	uint64_t pos;            /* byte position in the directory, or NO_POS */
	ext2_ino_t ino;
	uint8_t type;            /* EXT2_FT_* */
	uint8_t len;
	char name[];
};

/* A directory block: where it is and the largest entry it can still take. */
struct dblock {
	blk64_t pblk;            /* 0: a hole */
	unsigned free_max;
};

struct dirindex {
	struct dent **b;
	size_t nb, n;
	struct dblock *blocks;   /* by logical block; linear directories only */
	size_t nblocks, cap;
	size_t hint;             /* first block that may have room */
	bool linear;             /* no htree index: kaiofs edits blocks itself */
	struct fs *fs;
};

static uint64_t name_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

void dirindex_free(struct dirindex *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nb; i++) {
		struct dent *e = d->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(d->b);
	free(d->blocks);
	free(d);
}

static struct dent **di_slot(struct dirindex *d, const char *name, size_t len)
{
	struct dent **p = &d->b[name_hash(name, len) & (d->nb - 1)];

	while (*p && ((*p)->len != len || memcmp((*p)->name, name, len)))
		p = &(*p)->next;
	return p;
}

static void di_grow(struct dirindex *d)
{
	size_t nb = d->nb * 2;
	struct dent **b = calloc(nb, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < d->nb; i++) {
		struct dent *e = d->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[name_hash(e->name, e->len) & (nb - 1)];
			b[name_hash(e->name, e->len) & (nb - 1)] = e;
		}
	}
	free(d->b);
	d->b = b;
	d->nb = nb;
}

static int di_add(struct dirindex *d, const char *name, size_t len, ext2_ino_t ino, int type,
		  uint64_t pos)
{
	struct dent **p = di_slot(d, name, len), *e;

	if (*p) {
		(*p)->ino = ino;
		(*p)->type = (uint8_t)type;
		(*p)->pos = pos;
		return 0;
	}
	e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->pos = pos;
	e->ino = ino;
	e->type = (uint8_t)type;
	e->len = (uint8_t)len;
	memcpy(e->name, name, len);
	e->name[len] = 0;
	*p = e;
	if (++d->n > d->nb * 2)
		di_grow(d);
	return 0;
}

static void di_del(struct dirindex *d, const char *name)
{
	struct dent **p = di_slot(d, name, strlen(name)), *e = *p;

	if (e) {
		*p = e->next;
		free(e);
		d->n--;
	}
}

static struct dent *di_find(struct dirindex *d, const char *name)
{
	return *di_slot(d, name, strlen(name));
}

/* ---- walking directory blocks ---- */

typedef int (*dirent_fn)(void *ctx, struct ext2_dir_entry *de, uint64_t pos,
			 bool *changed);
/* Called for each directory block before its entries, with its contents. */
typedef int (*dblock_fn)(void *ctx, e2_blkcnt_t lblk, blk64_t pblk, const char *buf);

struct walk {
	struct fs *fs;
	ext2_ino_t dir;
	dirent_fn fn;
	dblock_fn block_fn;
	void *ctx;
	char *buf;
	int err;
};

static int walk_block(ext2_filsys e2, blk64_t *blk, e2_blkcnt_t blockcnt, blk64_t ref_blk,
		      int ref_offset, void *priv)
{
	struct walk *w = priv;
	unsigned bs = e2->blocksize, off = 0;
	bool changed = false;
	int stop = 0;
	errcode_t e;

	(void)ref_blk;
	(void)ref_offset;
	if (blockcnt < 0)
		return 0;
	e = ext2fs_read_dir_block4(e2, *blk, w->buf, 0, w->dir);
	if (e) {
		w->err = e == EXT2_ET_DIR_CSUM_INVALID ? -EIO : fs_errno(e);
		return BLOCK_ABORT;
	}
	if (w->block_fn && (w->err = w->block_fn(w->ctx, blockcnt, *blk, w->buf)))
		return BLOCK_ABORT;
	while (off < bs && !stop) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(w->buf + off);
		unsigned rec_len;

		if (ext2fs_get_rec_len(e2, de, &rec_len) || rec_len < 8 || rec_len % 4 ||
		    off + rec_len > bs || (unsigned)ext2fs_dirent_name_len(de) + 8 > rec_len) {
			w->err = -EIO;
			return BLOCK_ABORT;
		}
		if (de->inode)
			stop = w->fn(w->ctx, de, (uint64_t)blockcnt * bs + off, &changed);
		off += rec_len;
	}
	if (changed) {
		e = ext2fs_write_dir_block4(e2, *blk, w->buf, 0, w->dir);
		if (e) {
			w->err = fs_errno(e);
			return BLOCK_ABORT;
		}
	}
	return stop ? BLOCK_ABORT : 0;
}

/* Call fn for each live entry of dir, with its byte position; fn may change
 * the entry in place (setting *changed) and returns non-zero to stop. */
static int walk_dir_blocks(struct fs *fs, struct knode *dir, dirent_fn fn, dblock_fn block_fn,
			   void *ctx)
{
	struct walk w = { .fs = fs, .dir = dir->ino, .fn = fn, .block_fn = block_fn, .ctx = ctx };
	errcode_t e;
	int r = kn_flush(fs, dir);

	if (r)
		return r;
	w.buf = malloc(fs->bs);
	if (!w.buf)
		return -ENOMEM;
	e = ext2fs_block_iterate3(fs->e2, dir->ino, fs->ro ? BLOCK_FLAG_READ_ONLY : 0, NULL,
				  walk_block, &w);
	free(w.buf);
	if (w.err)
		return w.err;
	return fs_errno(e);
}

static int walk_dir(struct fs *fs, struct knode *dir, dirent_fn fn, void *ctx)
{
	return walk_dir_blocks(fs, dir, fn, NULL, ctx);
}

/* ---- editing directory blocks of linear directories ---- */

static unsigned csum_room(struct fs *fs)
{
	return ext2fs_has_feature_metadata_csum(fs->e2->super) ? sizeof(struct ext2_dir_entry_tail) : 0;
}

static unsigned rec_len_of(struct fs *fs, struct ext2_dir_entry *de)
{
	unsigned r = 0;

	ext2fs_get_rec_len(fs->e2, de, &r);
	return r;
}

static unsigned used_len(struct ext2_dir_entry *de)
{
	return de->inode ? (unsigned)EXT2_DIR_REC_LEN(ext2fs_dirent_name_len(de)) : 0;
}

/* The record length of the entry at off, or 0 if the entry is damaged: too
 * short, misaligned, past the block, or shorter than its own name. */
static unsigned sound_rec_len(struct fs *fs, struct ext2_dir_entry *de, unsigned off)
{
	unsigned rl = rec_len_of(fs, de);

	if (rl < 8 || rl % 4 || off + rl > fs->bs ||
	    (unsigned)ext2fs_dirent_name_len(de) + 8 > rl || used_len(de) > rl)
		return 0;
	return rl;
}

/* The largest entry a block can still take. */
static unsigned block_free_max(struct fs *fs, const char *buf)
{
	unsigned off = 0, end = fs->bs - csum_room(fs), best = 0;

	while (off < end) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
		unsigned rl = sound_rec_len(fs, de, off);

		if (!rl)
			return 0;
		if (rl - used_len(de) > best)
			best = rl - used_len(de);
		off += rl;
	}
	return best;
}

static void fill_dirent(struct fs *fs, struct ext2_dir_entry *de, const char *name,
			ext2_ino_t ino, int type)
{
	size_t len = strlen(name);

	de->inode = ino;
	ext2fs_dirent_set_name_len(de, (int)len);
	ext2fs_dirent_set_file_type(de, ext2fs_has_feature_filetype(fs->e2->super) ? type : 0);
	memcpy(de->name, name, len);
}

/* Put an entry into a block with room; returns its offset or -ENOSPC. */
static int block_insert(struct fs *fs, char *buf, const char *name, ext2_ino_t ino, int type)
{
	unsigned need = (unsigned)EXT2_DIR_REC_LEN(strlen(name));
	unsigned off = 0, end = fs->bs - csum_room(fs);

	while (off < end) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
		unsigned rl = sound_rec_len(fs, de, off), used = used_len(de);

		if (!rl)
			return -EIO;
		if (rl - used >= need) {
			if (used) {
				struct ext2_dir_entry *n = (struct ext2_dir_entry *)(buf + off + used);

				ext2fs_set_rec_len(fs->e2, used, de);
				ext2fs_set_rec_len(fs->e2, rl - used, n);
				de = n;
				off += used;
			}
			fill_dirent(fs, de, name, ino, type);
			return (int)off;
		}
		off += rl;
	}
	return -ENOSPC;
}

/* Remove the entry at off, merging its space into the one before it. */
static int block_remove(struct fs *fs, char *buf, unsigned at, const char *name)
{
	unsigned off = 0, prev = UINT_MAX, end = fs->bs - csum_room(fs);

	while (off < end) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
		unsigned rl = sound_rec_len(fs, de, off);

		if (!rl)
			return -EIO;
		if (off == at) {
			if (!de->inode || (size_t)ext2fs_dirent_name_len(de) != strlen(name) ||
			    memcmp(de->name, name, strlen(name)))
				return -ENOENT;
			if (prev == UINT_MAX) {
				de->inode = 0;
			} else {
				struct ext2_dir_entry *p = (struct ext2_dir_entry *)(buf + prev);

				ext2fs_set_rec_len(fs->e2, rec_len_of(fs, p) + rl, p);
			}
			return 0;
		}
		prev = off;
		off += rl;
	}
	return -ENOENT;
}

static int di_note_block(struct dirindex *d, size_t lblk, blk64_t pblk, unsigned free_max)
{
	if (lblk >= d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct dblock *b;

		while (cap <= lblk)
			cap *= 2;
		b = realloc(d->blocks, cap * sizeof(*b));
		if (!b)
			return -ENOMEM;
		memset(b + d->cap, 0, (cap - d->cap) * sizeof(*b));
		d->blocks = b;
		d->cap = cap;
	}
	d->blocks[lblk].pblk = pblk;
	d->blocks[lblk].free_max = free_max;
	if (lblk >= d->nblocks)
		d->nblocks = lblk + 1;
	return 0;
}

static int index_entry(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed)
{
	struct dirindex *d = ctx;
	int len = ext2fs_dirent_name_len(de);

	(void)pos;
	(void)changed;
	if ((len == 1 && de->name[0] == '.') || (len == 2 && de->name[0] == '.' && de->name[1] == '.'))
		return 0;
	return di_add(d, de->name, (size_t)len, de->inode, ext2fs_dirent_file_type(de),
		      d->linear ? pos : NO_POS) ? 1 : 0;
}

static int index_block(void *ctx, e2_blkcnt_t lblk, blk64_t pblk, const char *buf)
{
	struct dirindex *d = ctx;

	return d->linear ? di_note_block(d, (size_t)lblk, pblk, block_free_max(d->fs, buf)) : 0;
}

static int dir_index(struct fs *fs, struct knode *dir, struct dirindex **out)
{
	struct dirindex *d;
	int r;

	if (!kn_is_dir(dir))
		return -ENOTDIR;
	if (dir->dir) {
		*out = dir->dir;
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d || !(d->b = calloc(64, sizeof(*d->b)))) {
		free(d);
		return -ENOMEM;
	}
	d->nb = 64;
	d->linear = !(dir->inode.i_flags & EXT2_INDEX_FL);
	d->fs = fs;
	r = walk_dir_blocks(fs, dir, index_entry, index_block, d);
	if (r) {
		dirindex_free(d);
		return r;
	}
	dir->dir = *out = d;
	return 0;
}

/* ---- changing entries ---- */

static int ftype_of(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return EXT2_FT_REG_FILE;
	case S_IFDIR: return EXT2_FT_DIR;
	case S_IFCHR: return EXT2_FT_CHRDEV;
	case S_IFBLK: return EXT2_FT_BLKDEV;
	case S_IFIFO: return EXT2_FT_FIFO;
	case S_IFSOCK: return EXT2_FT_SOCK;
	case S_IFLNK: return EXT2_FT_SYMLINK;
	default: return EXT2_FT_UNKNOWN;
	}
}

static mode_t mode_of_ftype(int t)
{
	static const mode_t m[] = {
		[EXT2_FT_REG_FILE] = S_IFREG, [EXT2_FT_DIR] = S_IFDIR,
		[EXT2_FT_CHRDEV] = S_IFCHR, [EXT2_FT_BLKDEV] = S_IFBLK,
		[EXT2_FT_FIFO] = S_IFIFO, [EXT2_FT_SOCK] = S_IFSOCK,
		[EXT2_FT_SYMLINK] = S_IFLNK,
	};

	return t > 0 && t < (int)(sizeof(m) / sizeof(m[0])) ? m[t] : 0;
}

/* ---- turning an htree directory into a linear one ---- */

struct unindex {
	ext2_ino_t dir, parent;
	char *buf;
	int err;
};

/* Block 0 (the dx root) becomes a plain "." and ".." block; interior index
 * blocks (one empty entry spanning the block) become empty blocks. Leaf
 * blocks are ordinary directory blocks already. */
static int unindex_block(ext2_filsys e2, blk64_t *blk, e2_blkcnt_t blockcnt, blk64_t ref_blk,
			 int ref_offset, void *priv)
{
	struct unindex *u = priv;
	struct ext2_dir_entry *de = (struct ext2_dir_entry *)u->buf;
	unsigned rl = 0;
	char *fresh = NULL;
	errcode_t e;

	(void)ref_blk;
	(void)ref_offset;
	if (blockcnt < 0)
		return 0;
	e = io_channel_read_blk64(e2->io, *blk, 1, u->buf);
	if (!e && blockcnt > 0) {
		ext2fs_get_rec_len(e2, de, &rl);
		if (de->inode || rl != e2->blocksize)
			return 0;
	}
	if (!e)
		e = ext2fs_new_dir_block(e2, blockcnt == 0 ? u->dir : 0, u->parent, &fresh);
	if (!e)
		e = ext2fs_write_dir_block4(e2, *blk, fresh, 0, u->dir);
	ext2fs_free_mem(&fresh);
	if (e) {
		u->err = fs_errno(e);
		return BLOCK_ABORT;
	}
	return 0;
}

static int parent_of(struct fs *fs, struct knode *dir, ext2_ino_t *out);

/* kaiofs edits only linear directories (whose entries never move, so readdir
 * offsets stay stable); the kernel reads them, e2fsck -D can index them again. */
static int dir_unindex(struct fs *fs, struct knode *dir)
{
	struct unindex u = { .dir = dir->ino };
	errcode_t e;
	int r = parent_of(fs, dir, &u.parent);

	if (r)
		return r;
	dir->inode.i_flags &= ~EXT2_INDEX_FL;
	dir->dirty = true;
	if ((r = kn_write(fs, dir)))
		return r;
	u.buf = malloc(fs->bs);
	if (!u.buf)
		return -ENOMEM;
	e = ext2fs_block_iterate3(fs->e2, dir->ino, 0, NULL, unindex_block, &u);
	free(u.buf);
	r = u.err ? u.err : fs_errno(e);
	if (!r)
		r = kn_reload(fs, dir);
	dirindex_free(dir->dir);
	dir->dir = NULL;
	return r;
}

/* The index of a directory about to change, made linear first. */
static int dir_index_for_change(struct fs *fs, struct knode *dir, struct dirindex **out)
{
	int r = dir_index(fs, dir, out);

	if (r || (*out)->linear)
		return r;
	r = dir_unindex(fs, dir);
	return r ? r : dir_index(fs, dir, out);
}

/* Map a new block at the end of a directory. */
static int map_dir_block(struct fs *fs, struct knode *dir, blk64_t lblk, blk64_t pblk)
{
	errcode_t e;

	if (dir->inode.i_flags & EXT4_EXTENTS_FL) {
		ext2_extent_handle_t h;

		e = ext2fs_extent_open2(fs->e2, dir->ino, EI(dir), &h);
		if (!e) {
			e = ext2fs_extent_set_bmap(h, lblk, pblk, 0);
			ext2fs_extent_free(h);
		}
	} else {
		e = ext2fs_bmap2(fs->e2, dir->ino, EI(dir), NULL, BMAP_SET | BMAP_ALLOC, lblk, NULL, &pblk);
	}
	if (!e)
		e = ext2fs_iblk_add_blocks(fs->e2, EI(dir), 1);
	return fs_errno(e);
}

/* Grow a linear directory by one block holding just this entry. */
static int dir_append(struct fs *fs, struct knode *dir, struct dirindex *d, const char *name,
		      ext2_ino_t ino, int type, uint64_t *pos)
{
	blk64_t lblk = kn_size(dir) / fs->bs, pblk, goal;
	char *buf = NULL;
	errcode_t e;
	int off, r;

	goal = d->nblocks && d->blocks[d->nblocks - 1].pblk ? d->blocks[d->nblocks - 1].pblk + 1
		: ext2fs_find_inode_goal(fs->e2, dir->ino, EI(dir), lblk);
	e = ext2fs_new_block2(fs->e2, goal, NULL, &pblk);
	if (!e)
		e = ext2fs_new_dir_block(fs->e2, 0, 0, &buf);
	if (e)
		return fs_errno(e);
	off = block_insert(fs, buf, name, ino, type);
	/* the block holds its entry before anything points at it */
	e = off < 0 ? 0 : ext2fs_write_dir_block4(fs->e2, pblk, buf, 0, dir->ino);
	r = off < 0 ? off : fs_errno(e);
	if (!r) {
		ext2fs_block_alloc_stats2(fs->e2, pblk, +1);
		r = map_dir_block(fs, dir, lblk, pblk);
		if (r)
			ext2fs_block_alloc_stats2(fs->e2, pblk, -1);
	}
	if (!r) {
		kn_set_size(fs, dir, (lblk + 1) * fs->bs);
		r = di_note_block(d, lblk, pblk, block_free_max(fs, buf));
		*pos = lblk * fs->bs + (unsigned)off;
	}
	ext2fs_free_mem(&buf);
	return r;
}

/* Read, change and write back one block of a linear directory. */
static int edit_block(struct fs *fs, struct knode *dir, struct dirindex *d, size_t lblk,
		      int (*edit)(struct fs *fs, char *buf, void *arg), void *arg)
{
	char *buf = malloc(fs->bs);
	errcode_t e;
	int r;

	if (!buf)
		return -ENOMEM;
	e = ext2fs_read_dir_block4(fs->e2, d->blocks[lblk].pblk, buf, 0, dir->ino);
	r = e == EXT2_ET_DIR_CSUM_INVALID ? -EIO : fs_errno(e);
	if (!r)
		r = edit(fs, buf, arg);
	if (r >= 0) {
		e = ext2fs_write_dir_block4(fs->e2, d->blocks[lblk].pblk, buf, 0, dir->ino);
		if (e)
			r = fs_errno(e);
		d->blocks[lblk].free_max = block_free_max(fs, buf);
	}
	free(buf);
	return r;
}

struct insert_arg {
	const char *name;
	ext2_ino_t ino;
	int type;
};

static int edit_insert(struct fs *fs, char *buf, void *arg)
{
	struct insert_arg *a = arg;

	return block_insert(fs, buf, a->name, a->ino, a->type);
}

/* A linear directory: put the entry in the first block with room. */
static int dir_add_linear(struct fs *fs, struct knode *dir, struct dirindex *d, const char *name,
			  ext2_ino_t ino, int type, uint64_t *pos)
{
	unsigned need = (unsigned)EXT2_DIR_REC_LEN(strlen(name));
	struct insert_arg a = { .name = name, .ino = ino, .type = type };

	while (d->hint < d->nblocks && d->blocks[d->hint].free_max < EXT2_DIR_REC_LEN(1))
		d->hint++;
	for (size_t i = d->hint; i < d->nblocks; i++) {
		int off;

		if (!d->blocks[i].pblk || d->blocks[i].free_max < need)
			continue;
		off = edit_block(fs, dir, d, i, edit_insert, &a);
		if (off < 0)
			return off;
		*pos = i * fs->bs + (unsigned)off;
		return 0;
	}
	return dir_append(fs, dir, d, name, ino, type, pos);
}

/* Add name -> ino to dir, growing the directory when it is full. */
static int dir_add(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino, int type)
{
	struct dirindex *d;
	uint64_t pos = NO_POS;
	int r = dir_index_for_change(fs, dir, &d);

	if (r)
		return r;
	r = dir_add_linear(fs, dir, d, name, ino, type, &pos);
	if (r)
		return r;
	kn_touch(fs, dir, true, true, false);
	return di_add(d, name, strlen(name), ino, type, pos);
}

struct remove_arg {
	unsigned off;
	const char *name;
};

static int edit_remove(struct fs *fs, char *buf, void *arg)
{
	struct remove_arg *a = arg;

	return block_remove(fs, buf, a->off, a->name);
}

static int dir_remove(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino)
{
	struct dirindex *d;
	struct dent *de;
	errcode_t e;
	int r = dir_index_for_change(fs, dir, &d);

	if (r)
		return r;
	de = di_find(d, name);

	if (d && d->linear && de && de->pos != NO_POS) {
		size_t lblk = de->pos / fs->bs;
		struct remove_arg a = { .off = (unsigned)(de->pos % fs->bs), .name = name };

		r = lblk < d->nblocks && d->blocks[lblk].pblk ? edit_block(fs, dir, d, lblk, edit_remove, &a)
							       : -EIO;
		if (r)
			return r;
		if (lblk < d->hint)
			d->hint = lblk;
	} else {
		if ((r = kn_flush(fs, dir)))
			return r;
		e = ext2fs_unlink(fs->e2, dir->ino, name, ino, 0);
		r = kn_reload(fs, dir);
		if (e)
			return fs_errno(e);
		if (r)
			return r;
	}
	if (d)
		di_del(d, name);
	kn_touch(fs, dir, true, true, false);
	return 0;
}

struct retarget {
	const char *name;
	size_t len;
	ext2_ino_t ino;
	int type;
	bool done;
};

static int retarget_entry(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed)
{
	struct retarget *t = ctx;

	(void)pos;
	if ((size_t)ext2fs_dirent_name_len(de) != t->len || memcmp(de->name, t->name, t->len))
		return 0;
	de->inode = t->ino;
	ext2fs_dirent_set_file_type(de, t->type);
	*changed = t->done = true;
	return 1;
}

/* Point an existing entry of dir at another inode. */
static int dir_retarget(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino,
			int type)
{
	struct retarget t = { .name = name, .len = strlen(name), .ino = ino, .type = type };
	int r = walk_dir(fs, dir, retarget_entry, &t);

	if (!r && !t.done)
		r = -ENOENT;
	if (!r && dir->dir && strcmp(name, "..") != 0) {
		struct dent *de = di_find(dir->dir, name);

		r = di_add(dir->dir, name, t.len, ino, type, de ? de->pos : NO_POS);
	}
	/* a moved directory's new ".." changes its ctime only */
	if (!r)
		kn_touch(fs, dir, strcmp(name, "..") != 0, true, false);
	return r;
}

static void link_inc(struct fs *fs, struct knode *k)
{
	/* dir_nlink: past the limit a directory's count stays 1 */
	if (kn_is_dir(k) && (k->inode.i_links_count >= EXT2_LINK_MAX - 1 || k->inode.i_links_count == 1) &&
	    ext2fs_has_feature_dir_nlink(fs->e2->super))
		k->inode.i_links_count = 1;
	else
		k->inode.i_links_count++;
	k->dirty = true;
}

static void link_dec(struct knode *k)
{
	if (kn_is_dir(k) && k->inode.i_links_count == 1)
		return; /* a dir_nlink-saturated count stays 1 */
	if (k->inode.i_links_count)
		k->inode.i_links_count--;
	k->dirty = true;
}

/* What a change of names may alter in a directory's inode besides its times. */
struct dir_shape {
	uint64_t size;
	uint32_t blocks;
	uint16_t links;
};

static struct dir_shape shape_of(const struct knode *dir)
{
	struct dir_shape s = { kn_size(dir), dir->inode.i_blocks, dir->inode.i_links_count };

	return s;
}

/* The directory's inode after a change of names. When only its times moved
 * (the entries changed inside blocks it already had), they wait for fsync,
 * the last reference or unmount: a crash loses nothing else. Anything more
 * is written now. */
static int dir_settle(struct fs *fs, struct knode *dir, struct dir_shape before)
{
	struct dir_shape now = shape_of(dir);

	if (now.size == before.size && now.blocks == before.blocks && now.links == before.links)
		return 0;
	return kn_write(fs, dir);
}

static bool dir_full(struct fs *fs, struct knode *dir)
{
	return dir->inode.i_links_count >= EXT2_LINK_MAX - 1 &&
	       !ext2fs_has_feature_dir_nlink(fs->e2->super);
}

/* ---- lookup ---- */

static int check_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0)
		return -ENOENT;
	if (n > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	return 0;
}

/* The inode a name of dir points to, or -ENOENT. */
static int find(struct fs *fs, struct knode *dir, const char *name, struct dent **out)
{
	struct dirindex *d;
	int r = dir_index(fs, dir, &d);

	if (r)
		return r;
	*out = di_find(d, name);
	return *out ? 0 : -ENOENT;
}

static int parent_of(struct fs *fs, struct knode *dir, ext2_ino_t *out)
{
	errcode_t e;
	int r = kn_flush(fs, dir);

	if (r)
		return r;
	e = ext2fs_lookup(fs->e2, dir->ino, "..", 2, NULL, out);
	return fs_errno(e);
}

int fs_lookup(struct fs *fs, ino_t parent, const char *name, struct stat *st)
{
	struct knode *dir, *k;
	struct dent *de;
	ext2_ino_t ino;
	int r = check_name(name);

	if (r)
		return r;
	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)parent, &dir);
	if (r)
		goto out;
	if (!kn_is_dir(dir)) {
		r = -ENOTDIR;
	} else if (!strcmp(name, ".") || !strcmp(name, "..")) {
		ino = dir->ino;
		r = strcmp(name, "..") ? 0 : parent_of(fs, dir, &ino);
		if (!r && !(r = kn_get(fs, ino, &k))) {
			k->nlookup++;
			kn_stat(fs, k, st);
			kn_put(fs, k);
		}
	} else if (!(r = find(fs, dir, name, &de)) && !(r = kn_get(fs, de->ino, &k))) {
		k->nlookup++;
		kn_stat(fs, k, st);
		kn_put(fs, k);
	}
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- creation ---- */

/* The first block of a new directory, holding "." and "..". */
static int make_dir_block(struct fs *fs, struct knode *k, ext2_ino_t parent)
{
	char *block = NULL;
	blk64_t blk = 0;
	errcode_t e;
	int r;

	e = ext2fs_new_dir_block(fs->e2, k->ino, parent, &block);
	if (!e)
		e = ext2fs_new_block2(fs->e2, ext2fs_find_inode_goal(fs->e2, k->ino, EI(k), 0),
				      NULL, &blk);
	if (!e)
		e = ext2fs_write_dir_block4(fs->e2, blk, block, 0, k->ino);
	ext2fs_free_mem(&block);
	if (e)
		return fs_errno(e);
	ext2fs_block_alloc_stats2(fs->e2, blk, +1);
	if (k->inode.i_flags & EXT4_EXTENTS_FL) {
		ext2_extent_handle_t h;

		e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);
		if (!e) {
			e = ext2fs_extent_set_bmap(h, 0, blk, 0);
			ext2fs_extent_free(h);
		}
	} else {
		e = ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, BMAP_SET | BMAP_ALLOC, 0, NULL, &blk);
	}
	if (e) {
		ext2fs_block_alloc_stats2(fs->e2, blk, -1);
		return fs_errno(e);
	}
	r = ext2fs_iblk_add_blocks(fs->e2, EI(k), 1) ? -EIO : 0;
	kn_set_size(fs, k, fs->bs);
	k->inode.i_links_count = 2;
	k->dirty = true;
	return r;
}

/* A symlink's target: in the inode when short, else in one block. */
static int store_symlink(struct fs *fs, struct knode *k, const char *target)
{
	size_t len = strlen(target);
	blk64_t blk;
	char *block;
	errcode_t e;

	if (len >= fs->bs)
		return -ENAMETOOLONG;
	if (len < sizeof(k->inode.i_block)) {
		memcpy(k->inode.i_block, target, len);
		kn_set_size(fs, k, len);
		return 0;
	}
	e = ext2fs_new_block2(fs->e2, ext2fs_find_inode_goal(fs->e2, k->ino, EI(k), 0), NULL, &blk);
	if (e)
		return fs_errno(e);
	block = calloc(1, fs->bs);
	if (!block)
		return -ENOMEM;
	memcpy(block, target, len);
	e = io_channel_write_blk64(fs->e2->io, blk, 1, block);
	free(block);
	if (e)
		return fs_errno(e);
	ext2fs_block_alloc_stats2(fs->e2, blk, +1);
	if (ext2fs_has_feature_extents(fs->e2->super)) {
		ext2_extent_handle_t h;

		e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);
		if (!e) {
			e = ext2fs_extent_set_bmap(h, 0, blk, 0);
			ext2fs_extent_free(h);
		}
	} else {
		e = ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, BMAP_SET | BMAP_ALLOC, 0, NULL, &blk);
	}
	if (e)
		return fs_errno(e);
	ext2fs_iblk_add_blocks(fs->e2, EI(k), 1);
	kn_set_size(fs, k, len);
	return 0;
}

struct new_node {
	mode_t mode;
	dev_t rdev;
	const char *target;
};

static int create_node(struct fs *fs, ino_t parent, const char *name, const struct new_node *nn,
		       const struct fs_cred *cr, struct stat *st)
{
	struct knode *dir, *k = NULL;
	struct dir_shape before;
	struct acl_inherit inh = { 0 };
	struct dent *de;
	mode_t mode = nn->mode;
	int r = check_name(name);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)parent, &dir);
	if (r)
		goto out;
	r = find(fs, dir, name, &de);
	if (r == 0)
		r = -EEXIST;
	else if (r == -ENOENT)
		r = kn_may_add_name(dir) ?: (S_ISDIR(nn->mode) && dir_full(fs, dir) ? -EMLINK : 0);
	if (!r && dir->inode.i_links_count == 0)
		r = -ENOENT; /* the directory was removed */
	before = shape_of(dir);
	if (!r) {
		kn_inherit_acl(fs, dir, &mode, cr->umask, &inh);
		r = kn_new(fs, dir, mode, cr, &k);
	}
	if (!r && S_ISDIR(nn->mode))
		r = make_dir_block(fs, k, dir->ino);
	else if (!r && S_ISLNK(nn->mode))
		r = store_symlink(fs, k, nn->target);
	else if (!r && (S_ISCHR(nn->mode) || S_ISBLK(nn->mode)))
		kn_set_rdev(k, nn->rdev);
	if (!r)
		r = kn_flush(fs, k);    /* a plain file is on the disk as kn_new wrote it */
	if (!r)
		r = kn_store_inherited(fs, dir, k, &inh);
	if (!r)
		r = dir_add(fs, dir, name, k->ino, ftype_of(nn->mode));
	if (!r && S_ISDIR(nn->mode))
		link_inc(fs, dir);
	if (!r)
		r = dir_settle(fs, dir, before);
	if (k) {
		if (r) {
			k->inode.i_links_count = 0; /* freed by kn_put */
		} else {
			k->nlookup++;
			kn_stat(fs, k, st);
		}
		kn_put(fs, k);
	}
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	free(inh.acl);
	return r;
}

int fs_mknod(struct fs *fs, ino_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = mode, .rdev = rdev };

	if (!S_ISREG(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
		return -EINVAL;
	return create_node(fs, parent, name, &nn, cr, st);
}

int fs_mkdir(struct fs *fs, ino_t parent, const char *name, mode_t mode,
	     const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = S_IFDIR | (mode & 07777) };

	return create_node(fs, parent, name, &nn, cr, st);
}

int fs_symlink(struct fs *fs, ino_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = S_IFLNK | 0777, .target = target };

	return create_node(fs, parent, name, &nn, cr, st);
}

ssize_t fs_readlink(struct fs *fs, ino_t ino, char *buf, size_t size)
{
	struct knode *k;
	ssize_t r;

	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)ino, &k);
	if (r)
		goto out;
	uint64_t len = kn_size(k);

	if (!LINUX_S_ISLNK(k->inode.i_mode)) {
		r = -EINVAL;
	} else if (len >= size || len >= fs->bs) {
		r = -ENAMETOOLONG;
	} else if (!ext2fs_inode_data_blocks2(fs->e2, EI(k)) && len < sizeof(k->inode.i_block)) {
		memcpy(buf, k->inode.i_block, len);
		buf[len] = 0;
		r = (ssize_t)len;
	} else {
		blk64_t blk = 0;
		char *block = malloc(fs->bs);
		errcode_t e = block ? ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, 0, 0, NULL, &blk)
				    : EXT2_ET_NO_MEMORY;

		if (!e)
			e = blk ? io_channel_read_blk64(fs->e2->io, blk, 1, block) : EXT2_ET_BAD_BLOCK_NUM;
		if (!e) {
			memcpy(buf, block, len);
			buf[len] = 0;
		}
		free(block);
		r = e ? fs_errno(e) : (ssize_t)len;
	}
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fs_link(struct fs *fs, ino_t ino, ino_t newparent, const char *newname, struct stat *st)
{
	struct knode *dir, *k;
	struct dent *de;
	int r = check_name(newname);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)newparent, &dir)))
		goto out;
	if ((r = kn_get(fs, (ext2_ino_t)ino, &k)))
		goto put_dir;
	r = find(fs, dir, newname, &de);
	if (r == 0)
		r = -EEXIST;
	else if (r == -ENOENT)
		r = kn_may_add_name(dir) ?: kn_may_change(k) ?: kn_is_dir(k) ? -EPERM :
		    k->inode.i_links_count >= EXT2_LINK_MAX ? -EMLINK : 0;
	/* a file without names: only an O_TMPFILE inode gets one back */
	if (!r && (dir->inode.i_links_count == 0 || (k->inode.i_links_count == 0 && !k->linkable)))
		r = -ENOENT;
	if (!r)
		r = dir_add(fs, dir, newname, k->ino, ftype_of(k->inode.i_mode));
	if (!r) {
		if (k->inode.i_links_count == 0)
			k->inode.i_dtime = 0;   /* recorded deleted until now */
		link_inc(fs, k);
		kn_touch(fs, k, false, true, false);
		r = kn_write(fs, k);
		if (!r)
			r = kn_write(fs, dir);
		k->nlookup++;
		kn_stat(fs, k, st);
	}
	kn_put(fs, k);
put_dir:
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

struct emptiness {
	bool empty;
};

static int check_empty(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed)
{
	struct emptiness *e = ctx;
	int len = ext2fs_dirent_name_len(de);

	(void)pos;
	(void)changed;
	if ((len == 1 && de->name[0] == '.') || (len == 2 && de->name[0] == '.' && de->name[1] == '.'))
		return 0;
	e->empty = false;
	return 1;
}

static int dir_is_empty(struct fs *fs, struct knode *k)
{
	struct emptiness e = { .empty = true };
	int r;

	if (k->dir)
		return k->dir->n == 0;
	r = walk_dir(fs, k, check_empty, &e);
	return r ? r : e.empty;
}

/* Remove name (pointing at victim) from dir and drop the victim's links. */
static int drop_entry(struct fs *fs, struct knode *dir, const char *name, struct knode *victim)
{
	struct dir_shape before = shape_of(dir);
	int r = dir_remove(fs, dir, name, victim->ino);

	if (r)
		return r;
	if (kn_is_dir(victim)) {
		victim->inode.i_links_count = 0;
		link_dec(dir);
	} else {
		link_dec(victim);
	}
	victim->dirty = true;
	kn_touch(fs, victim, false, true, false);
	r = kn_write(fs, victim);
	return r ? r : dir_settle(fs, dir, before);
}

static int remove_name(struct fs *fs, ino_t parent, const char *name, bool want_dir)
{
	struct knode *dir, *k;
	struct dent *de;
	int r = check_name(name);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)parent, &dir)))
		goto out;
	if ((r = find(fs, dir, name, &de)) || (r = kn_get(fs, de->ino, &k)))
		goto put_dir;
	r = kn_may_remove_name(dir, k);
	if (!r && want_dir != kn_is_dir(k))
		r = want_dir ? -ENOTDIR : -EISDIR;
	else if (!r && want_dir && (r = dir_is_empty(fs, k)) >= 0)
		r = r ? 0 : -ENOTEMPTY;
	if (!r)
		r = drop_entry(fs, dir, name, k);
	kn_put(fs, k);
put_dir:
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fs_unlink(struct fs *fs, ino_t parent, const char *name)
{
	return remove_name(fs, parent, name, false);
}

int fs_rmdir(struct fs *fs, ino_t parent, const char *name)
{
	return remove_name(fs, parent, name, true);
}

/* ---- rename ---- */

/* Is a an ancestor of (or equal to) d? Walks ".." up to the root. */
static int is_ancestor(struct fs *fs, ext2_ino_t a, struct knode *d)
{
	ext2_ino_t cur = d->ino;
	int depth = 0;

	while (cur != EXT2_ROOT_INO && depth++ < 65536) {
		struct knode *k;
		int r;

		if (cur == a)
			return 1;
		if ((r = kn_get(fs, cur, &k)))
			return r;
		r = parent_of(fs, k, &cur);
		kn_put(fs, k);
		if (r)
			return r;
	}
	return cur == a;
}

/* A directory moved to another parent: its ".." and both parents' counts. */
static int reparent(struct fs *fs, struct knode *k, struct knode *from, struct knode *to)
{
	int r;

	if (!kn_is_dir(k) || from == to)
		return 0;
	r = dir_retarget(fs, k, "..", to->ino, EXT2_FT_DIR);
	if (r)
		return r;
	link_dec(from);
	link_inc(fs, to);
	return 0;
}

struct rename_ctx {
	struct knode *sd, *dd;      /* source and destination directories */
	struct knode *s, *d;        /* source inode, destination inode (or NULL) */
	const char *sname, *dname;
};

static int do_exchange(struct fs *fs, struct rename_ctx *c)
{
	int r = dir_retarget(fs, c->sd, c->sname, c->d->ino, ftype_of(c->d->inode.i_mode));

	if (!r)
		r = dir_retarget(fs, c->dd, c->dname, c->s->ino, ftype_of(c->s->inode.i_mode));
	if (!r)
		r = reparent(fs, c->s, c->sd, c->dd);
	if (!r)
		r = reparent(fs, c->d, c->dd, c->sd);
	kn_touch(fs, c->s, false, true, false);
	kn_touch(fs, c->d, false, true, false);
	return r;
}

static int do_move(struct fs *fs, struct rename_ctx *c)
{
	int r;

	if (c->d) {
		if (kn_is_dir(c->s) && !kn_is_dir(c->d))
			return -ENOTDIR;
		if (!kn_is_dir(c->s) && kn_is_dir(c->d))
			return -EISDIR;
		if (kn_is_dir(c->d) && (r = dir_is_empty(fs, c->d)) <= 0)
			return r < 0 ? r : -ENOTEMPTY;
		/* the new name first, so a crash never loses the file */
		r = dir_retarget(fs, c->dd, c->dname, c->s->ino, ftype_of(c->s->inode.i_mode));
		if (r)
			return r;
		if (kn_is_dir(c->d)) {
			c->d->inode.i_links_count = 0;
			link_dec(c->dd);
		} else {
			link_dec(c->d);
		}
		kn_touch(fs, c->d, false, true, false);
	} else {
		if (kn_is_dir(c->s) && c->sd != c->dd && dir_full(fs, c->dd))
			return -EMLINK;
		r = dir_add(fs, c->dd, c->dname, c->s->ino, ftype_of(c->s->inode.i_mode));
		if (r)
			return r;
	}
	r = dir_remove(fs, c->sd, c->sname, c->s->ino);
	if (!r)
		r = reparent(fs, c->s, c->sd, c->dd);
	kn_touch(fs, c->s, false, true, false);
	return r;
}

/* The source's name leaves its directory; the destination's is replaced
 * (or swapped) or added. */
static int rename_refusal(const struct rename_ctx *c)
{
	int r = kn_may_remove_name(c->sd, c->s);

	return r ?: c->d ? kn_may_remove_name(c->dd, c->d) : kn_may_add_name(c->dd);
}

static int write_all(struct fs *fs, struct rename_ctx *c)
{
	struct knode *ks[] = { c->s, c->d, c->sd, c->dd };
	int r = 0;

	for (int i = 0; i < 4 && !r; i++)
		if (ks[i] && ks[i]->dirty)
			r = kn_write(fs, ks[i]);
	return r;
}

int fs_rename(struct fs *fs, ino_t parent, const char *name, ino_t newparent,
	      const char *newname, unsigned flags)
{
	struct rename_ctx c = { .sname = name, .dname = newname };
	struct dent *de;
	int r;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE))
		return -EINVAL;
	if ((r = check_name(name)) || (r = check_name(newname)))
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)parent, &c.sd)))
		goto out;
	if ((r = kn_get(fs, (ext2_ino_t)newparent, &c.dd)))
		goto put_sd;
	if ((r = find(fs, c.sd, name, &de)) || (r = kn_get(fs, de->ino, &c.s)))
		goto put_dd;
	r = find(fs, c.dd, newname, &de);
	if (r == 0)
		r = kn_get(fs, de->ino, &c.d);
	else if (r == -ENOENT)
		r = flags & RENAME_EXCHANGE ? -ENOENT : 0;
	if (r)
		goto put_s;
	if (c.d && flags & RENAME_NOREPLACE)
		r = -EEXIST;
	else if (c.d == c.s)
		r = 0; /* two names of one inode: nothing to do */
	else if (c.dd->inode.i_links_count == 0)
		r = -ENOENT;
	else {
		/* a directory may not move below itself */
		if (kn_is_dir(c.s) && c.sd != c.dd)
			r = is_ancestor(fs, c.s->ino, c.dd);
		if (r == 0 && c.d && kn_is_dir(c.d) && c.sd != c.dd && flags & RENAME_EXCHANGE)
			r = is_ancestor(fs, c.d->ino, c.sd);
		if (r > 0)
			r = -EINVAL;
		if (!r)
			r = rename_refusal(&c);
		if (!r)
			r = flags & RENAME_EXCHANGE ? do_exchange(fs, &c) : do_move(fs, &c);
		if (!r)
			r = write_all(fs, &c);
	}
	if (c.d)
		kn_put(fs, c.d);
put_s:
	kn_put(fs, c.s);
put_dd:
	kn_put(fs, c.dd);
put_sd:
	kn_put(fs, c.sd);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- readdir ---- */

struct rd {
	struct fs *fs;
	off_t from;
	fs_fill_fn fill;
	fs_fillplus_fn fillplus;
	void *ctx;
	int err;
};

static bool is_dot(const struct ext2_dir_entry *de, int len)
{
	return (len == 1 && de->name[0] == '.') ||
	       (len == 2 && de->name[0] == '.' && de->name[1] == '.');
}

static int readdir_entry(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed)
{
	struct rd *rd = ctx;
	int len = ext2fs_dirent_name_len(de);

	(void)changed;
	if ((off_t)pos < rd->from)
		return 0;
	/* an entry's cookie is its byte position + 1: stable while others come and go */
	if (!rd->fillplus)
		return rd->fill(rd->ctx, de->name, (size_t)len, de->inode,
				mode_of_ftype(ext2fs_dirent_file_type(de)), (off_t)pos + 1);
	if (is_dot(de, len))
		return rd->fillplus(rd->ctx, de->name, (size_t)len, de->inode,
				    mode_of_ftype(ext2fs_dirent_file_type(de)), (off_t)pos + 1, NULL);

	struct knode *k;
	struct stat st;
	int full;

	if ((rd->err = kn_get(rd->fs, de->inode, &k)))
		return 1;
	kn_stat(rd->fs, k, &st);
	full = rd->fillplus(rd->ctx, de->name, (size_t)len, de->inode, st.st_mode & S_IFMT,
			    (off_t)pos + 1, &st);
	if (!full)
		k->nlookup++;
	kn_put(rd->fs, k);
	return full;
}

static int read_dir(struct fs *fs, ino_t ino, struct rd *rd)
{
	struct knode *k;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)ino, &k);
	if (!r) {
		r = kn_is_dir(k) ? walk_dir(fs, k, readdir_entry, rd) : -ENOTDIR;
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
	return r ? r : rd->err;
}

int fs_readdir(struct fs *fs, ino_t ino, off_t off, fs_fill_fn fill, void *ctx)
{
	struct rd rd = { .fs = fs, .from = off, .fill = fill, .ctx = ctx };

	return read_dir(fs, ino, &rd);
}

int fs_readdirplus(struct fs *fs, ino_t ino, off_t off, fs_fillplus_fn fill, void *ctx)
{
	struct rd rd = { .fs = fs, .from = off, .fillplus = fill, .ctx = ctx };

	return read_dir(fs, ino, &rd);
}
