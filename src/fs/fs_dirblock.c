/* Directory blocks: the per-directory name index, walking a directory's
 * blocks, and the edits of linear directories (insert, remove, retarget an
 * entry; an htree directory is made linear the first time it changes).
 * libext2fs scans directories linearly; the index makes a lookup one hash
 * probe. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

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

void dir_index_free(struct dirindex *d)
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

/* Called for each directory block before its entries, with its contents. */
typedef int (*dblock_fn)(void *ctx, e2_blkcnt_t lblk, blk64_t pblk, const char *buf);

struct walk {
	struct fs *fs;
	ext2_ino_t dir;
	dir_entry_fn fn;
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
static int walk_dir_blocks(struct fs *fs, struct knode *dir, dir_entry_fn fn, dblock_fn block_fn,
			   void *ctx)
{
	struct walk w = { .fs = fs, .dir = dir->ino, .fn = fn, .block_fn = block_fn, .ctx = ctx };
	errcode_t e;
	int r = kn_write_if_dirty(fs, dir);

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

int dir_walk(struct fs *fs, struct knode *dir, dir_entry_fn fn, void *ctx)
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
		dir_index_free(d);
		return r;
	}
	dir->dir = *out = d;
	return 0;
}

/* ---- changing entries ---- */

int dir_ftype_of(mode_t mode)
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

mode_t dir_mode_of_ftype(int t)
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

/* kaiofs edits only linear directories (whose entries never move, so readdir
 * offsets stay stable); the kernel reads them, e2fsck -D can index them again. */
static int dir_unindex(struct fs *fs, struct knode *dir)
{
	struct unindex u = { .dir = dir->ino };
	errcode_t e;
	int r = dir_parent(fs, dir, &u.parent);

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
	dir_index_free(dir->dir);
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
int dir_add(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino, int type)
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

int dir_remove(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino)
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
		if ((r = kn_write_if_dirty(fs, dir)))
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
int dir_retarget(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino,
			int type)
{
	struct retarget t = { .name = name, .len = strlen(name), .ino = ino, .type = type };
	int r = dir_walk(fs, dir, retarget_entry, &t);

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

int dir_find(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t *ino)
{
	struct dirindex *d;
	struct dent *de;
	int r = dir_index(fs, dir, &d);

	if (r)
		return r;
	de = di_find(d, name);
	if (!de)
		return -ENOENT;
	*ino = de->ino;
	return 0;
}

int dir_parent(struct fs *fs, struct knode *dir, ext2_ino_t *out)
{
	errcode_t e;
	int r = kn_write_if_dirty(fs, dir);

	if (r)
		return r;
	e = ext2fs_lookup(fs->e2, dir->ino, "..", 2, NULL, out);
	return fs_errno(e);
}

/* The first block of a new directory, holding "." and "..". */
int dir_make_first_block(struct fs *fs, struct knode *k, ext2_ino_t parent)
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

int dir_is_empty(struct fs *fs, struct knode *k)
{
	struct emptiness e = { .empty = true };
	int r;

	if (k->dir)
		return k->dir->n == 0;
	r = dir_walk(fs, k, check_empty, &e);
	return r ? r : e.empty;
}
