/* Block maps of files: what the data path reads and writes, allocation of
 * new blocks, making them reachable after their data is on the device,
 * unwritten extents, truncation, fallocate and SEEK_DATA/SEEK_HOLE. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_cache.h"
#include "fs_int.h"

#define INIT_MAX_LEN 32768u
#define UNINIT_MAX_LEN 32767u

static bool is_extent_file(const struct knode *k)
{
	return k->inode.i_flags & EXT4_EXTENTS_FL;
}

static int add_seg(struct io_map **m, uint64_t fblk, uint64_t pblk, uint64_t n,
		   bool hole, bool unwritten)
{
	while (n) {
		uint32_t take = n > (1u << 30) ? (1u << 30) : (uint32_t)n;
		struct io_seg s = {
			.fblk = fblk, .pblk = hole ? 0 : pblk, .nblk = take,
			.zero = hole || unwritten, .hole = hole, .unwritten = unwritten,
		};
		int r = io_map_add(m, &s);

		if (r)
			return r;
		fblk += take;
		pblk += take;
		n -= take;
	}
	return 0;
}

/* Map [b, end) of an extent file into m. */
static int map_extent_file(struct fs *fs, struct knode *k, uint64_t b, uint64_t end,
			   struct io_map **m)
{
	ext2_extent_handle_t h;
	struct ext2fs_extent ex;
	errcode_t e;
	int r = 0;

	e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);
	if (e)
		return fs_errno(e);
	e = ext2fs_extent_goto2(h, 0, b);
	if (e && e != EXT2_ET_EXTENT_NOT_FOUND) {
		ext2fs_extent_free(h);
		return fs_errno(e);
	}
	e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
	while (!r && b < end) {
		if (e) {
			/* no (more) extents: the rest is a hole */
			r = add_seg(m, b, 0, end - b, true, false);
			break;
		}
		if (ex.e_lblk + ex.e_len <= b) {
			e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex);
			continue;
		}
		if (ex.e_lblk > b) {
			uint64_t n = (ex.e_lblk < end ? ex.e_lblk : end) - b;

			r = add_seg(m, b, 0, n, true, false);
			b += n;
			continue;
		}
		uint64_t stop = ex.e_lblk + ex.e_len < end ? ex.e_lblk + ex.e_len : end;

		r = add_seg(m, b, ex.e_pblk + (b - ex.e_lblk), stop - b, false,
			    ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT);
		b = stop;
	}
	ext2fs_extent_free(h);
	return r;
}

/* Map [b, end) of a block-mapped (ext2/ext3) file into m. */
static int map_indirect_file(struct fs *fs, struct knode *k, uint64_t b, uint64_t end,
			     struct io_map **m)
{
	for (; b < end; b++) {
		blk64_t p = 0;
		errcode_t e = ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, 0, b, NULL, &p);
		int r;

		if (e)
			return fs_errno(e);
		r = add_seg(m, b, p, 1, p == 0, false);
		if (r)
			return r;
	}
	return 0;
}

/* ---- the extent cache ----
 * Reading a leaf of the extent tree is a device read under the metadata
 * lock; a file whose map stops changing keeps its extents in memory. */

#define CACHE_AFTER 8   /* maps without a change before the tree is cached */

struct extent_cache {
	size_t n;
	struct ext2fs_extent ex[];
};

void map_forget(struct knode *k)
{
	free(k->ext);
	k->ext = NULL;
	k->quiet_maps = 0;
}

static void cache_extents(struct fs *fs, struct knode *k)
{
	ext2_extent_handle_t h;
	struct extent_cache *c = NULL;
	struct ext2fs_extent ex;
	size_t cap = 0;
	errcode_t e;

	if (ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h))
		return;
	for (e = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex); !e;
	     e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex)) {
		if (!(ex.e_flags & EXT2_EXTENT_FLAGS_LEAF))
			continue;
		if (!c || c->n == cap) {
			struct extent_cache *g;

			cap = cap ? cap * 2 : 16;
			g = realloc(c, sizeof(*c) + cap * sizeof(ex));
			if (!g)
				goto fail;
			if (!c)
				g->n = 0;
			c = g;
		}
		c->ex[c->n++] = ex;
	}
	if (e != EXT2_ET_EXTENT_NO_NEXT && e != EXT2_ET_EXTENT_NO_DOWN)
		goto fail;
	ext2fs_extent_free(h);
	if (!c && !(c = calloc(1, sizeof(*c))))
		return;
	k->ext = c;
	return;
fail:
	ext2fs_extent_free(h);
	free(c);
}

/* Map [b, end) from the cached extents. */
static int map_from_cache(const struct extent_cache *c, uint64_t b, uint64_t end,
			  struct io_map **m)
{
	size_t lo = 0, hi = c->n;
	int r = 0;

	/* the first extent that ends after b */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (c->ex[mid].e_lblk + c->ex[mid].e_len <= b)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; !r && b < end; i++) {
		const struct ext2fs_extent *ex = i < c->n ? &c->ex[i] : NULL;

		if (!ex || ex->e_lblk >= end) {
			r = add_seg(m, b, 0, end - b, true, false);
			break;
		}
		if (ex->e_lblk > b) {
			r = add_seg(m, b, 0, ex->e_lblk - b, true, false);
			b = ex->e_lblk;
		}
		uint64_t stop = ex->e_lblk + ex->e_len < end ? ex->e_lblk + ex->e_len : end;

		if (!r)
			r = add_seg(m, b, ex->e_pblk + (b - ex->e_lblk), stop - b, false,
				    ex->e_flags & EXT2_EXTENT_FLAGS_UNINIT);
		b = stop;
	}
	return r;
}

/* Every block a damaged inode may name must still lie inside the volume:
 * AIO would otherwise read or write whatever follows it on the disk. */
static int check_map_bounds(struct fs *fs, const struct io_map *m)
{
	uint64_t first = fs->e2->super->s_first_data_block;
	uint64_t count = ext2fs_blocks_count(fs->e2->super);

	for (unsigned i = 0; i < m->n; i++) {
		const struct io_seg *s = &m->seg[i];

		if (!s->hole && (s->pblk < first || s->pblk > count || s->nblk > count - s->pblk)) {
			fs->errors = true;
			return -EUCLEAN;
		}
	}
	return 0;
}

static int map_blocks(struct fs *fs, struct knode *k, uint64_t b, uint64_t end,
		      struct io_map **out)
{
	struct io_map *m = io_map_new(fs->bs);
	int r;

	if (!m)
		return -ENOMEM;
	if (is_extent_file(k) && !k->ext && ++k->quiet_maps >= CACHE_AFTER)
		cache_extents(fs, k);
	if (k->ext)
		r = map_from_cache(k->ext, b, end, &m);
	else
		r = is_extent_file(k) ? map_extent_file(fs, k, b, end, &m)
				      : map_indirect_file(fs, k, b, end, &m);
	if (!r)
		r = check_map_bounds(fs, m);
	if (r) {
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void fs_dio_free(struct fs_dio *d)
{
	free(d->map);
	d->map = NULL;
}

static int get_regular(struct fs *fs, ino_t ino, struct knode **k)
{
	int r = kn_get(fs, (ext2_ino_t)ino, k);

	if (r)
		return r;
	if (!LINUX_S_ISREG((*k)->inode.i_mode)) {
		r = kn_is_dir(*k) ? -EISDIR : -EINVAL;
		kn_put(fs, *k);
	}
	return r;
}

/* ---- reads ---- */

int fs_map_read(struct fs *fs, ino_t ino, uint64_t off, size_t len, struct fs_dio *d)
{
	struct knode *k;
	uint64_t size;
	int r;

	memset(d, 0, sizeof(*d));
	d->ino = ino;
	d->off = off;
	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (r)
		goto out;
	size = kn_size(k);
	d->len = off >= size ? 0 : (size - off < len ? (size_t)(size - off) : len);
	if (d->len) {
		r = map_blocks(fs, k, off / fs->bs, (off + d->len + fs->bs - 1) / fs->bs, &d->map);
		if (!r) {
			/* held open by the reader: the knode outlives the read */
			__atomic_add_fetch(&k->reads_inflight, 1, __ATOMIC_ACQ_REL);
			d->knode = k;
		}
	}
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

void fs_read_done(struct fs *fs, struct fs_dio *d)
{
	struct knode *k = d->knode;

	fs_dio_free(d);
	if (!k)
		return;
	if (__atomic_sub_fetch(&k->reads_inflight, 1, __ATOMIC_ACQ_REL) == 0) {
		pthread_mutex_lock(&fs->gate_mu);
		pthread_cond_broadcast(&fs->gate_cv);
		pthread_mutex_unlock(&fs->gate_mu);
	}
}

void map_quiesce_reads(struct fs *fs, struct knode *k)
{
	while (__atomic_load_n(&k->reads_inflight, __ATOMIC_ACQUIRE)) {
		k->pins++;
		pthread_mutex_unlock(&fs->lock);
		pthread_mutex_lock(&fs->gate_mu);
		while (__atomic_load_n(&k->reads_inflight, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&fs->gate_cv, &fs->gate_mu);
		pthread_mutex_unlock(&fs->gate_mu);
		pthread_mutex_lock(&fs->lock);
		k->pins--;
	}
}

int fs_map_existing(struct fs *fs, ino_t ino, uint64_t off, size_t len, struct fs_dio *d)
{
	struct knode *k;
	int r;

	memset(d, 0, sizeof(*d));
	d->ino = ino;
	d->off = off;
	d->len = len;
	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (!r) {
		r = map_blocks(fs, k, off / fs->bs, (off + len + fs->bs - 1) / fs->bs, &d->map);
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- allocation ---- */

static uint64_t free_blocks_for(struct fs *fs, const struct fs_cred *cr)
{
	struct ext2_super_block *sb = fs->e2->super;
	uint64_t free_blocks = ext2fs_free_blocks_count(sb), reserved = fs->resv;

	if (!vol_may_use_reserved(fs, cr))
		reserved += ext2fs_r_blocks_count(sb);
	return free_blocks > reserved ? free_blocks - reserved : 0;
}

/* Give a hole of n blocks at fblk fresh device blocks, appended to out as
 * fresh segments. goal is where the previous data lies. */
static int allocate_hole(struct fs *fs, struct knode *k, uint64_t fblk, uint64_t n,
			 blk64_t *goal, struct io_map **out)
{
	while (n) {
		blk64_t pblk, plen;
		errcode_t e = ext2fs_new_range(fs->e2, 0, *goal, n, NULL, &pblk, &plen);
		int r;

		if (e == EXT2_ET_BLOCK_ALLOC_FAIL)
			return -ENOSPC;
		if (e)
			return fs_errno(e);
		if (plen > n)
			plen = n;
		ext2fs_block_alloc_stats_range(fs->e2, pblk, (blk_t)plen, +1);
		/* libext2fs 1.47.0 passes its range callback an empty range */
		mcache_forget(fs->e2->io, pblk, plen, true);
		struct io_seg s = { .fblk = fblk, .pblk = pblk, .nblk = (uint32_t)plen,
				    .zero = 1, .fresh = 1 };
		r = io_map_add(out, &s);
		if (r) {
			ext2fs_block_alloc_stats_range(fs->e2, pblk, (blk_t)plen, -1);
			mcache_forget(fs->e2->io, pblk, plen, false);
			return r;
		}
		fblk += plen;
		n -= plen;
		*goal = pblk + plen;
	}
	(void)k;
	return 0;
}

static void release_fresh_from(struct fs *fs, const struct io_map *m, unsigned from, uint32_t skip);

static void release_fresh(struct fs *fs, const struct io_map *m)
{
	release_fresh_from(fs, m, 0, 0);
}

/* Replace the holes of `cur` by fresh blocks; the result goes to *out. */
static int fill_holes(struct fs *fs, struct knode *k, const struct io_map *cur,
		      const struct fs_cred *cr, struct io_map **out)
{
	uint64_t need = 0;
	blk64_t goal = 0;
	int r = 0;

	for (unsigned i = 0; i < cur->n; i++)
		need += cur->seg[i].hole ? cur->seg[i].nblk : 0;
	if (need > free_blocks_for(fs, cr))
		return -ENOSPC;
	*out = io_map_new(fs->bs);
	if (!*out)
		return -ENOMEM;
	for (unsigned i = 0; i < cur->n && !r; i++) {
		const struct io_seg *s = &cur->seg[i];

		if (!s->hole) {
			r = io_map_add(out, s);
			goal = s->pblk + s->nblk;
			continue;
		}
		if (!goal)
			goal = ext2fs_find_inode_goal(fs->e2, k->ino, EI(k), s->fblk);
		r = allocate_hole(fs, k, s->fblk, s->nblk, &goal, out);
	}
	if (r) {
		release_fresh(fs, *out);
		free(*out);
		*out = NULL;
	}
	return r;
}

/* A write by an unprivileged user drops set-uid, and set-gid where it
 * means set-gid (group-executable), as the kernel does. */
static void kill_suid(struct knode *k, const struct fs_cred *cr)
{
	__u16 mode = k->inode.i_mode;

	if (cr->uid == 0)
		return;
	if (mode & LINUX_S_ISUID)
		mode &= (__u16)~LINUX_S_ISUID;
	/* set-gid means set-gid when group-executable; otherwise it goes only
	 * for a writer outside the file's group */
	if ((mode & (LINUX_S_ISGID | LINUX_S_IXGRP)) == (LINUX_S_ISGID | LINUX_S_IXGRP) ||
	    ((mode & LINUX_S_ISGID) && cr->gid != (gid_t)inode_gid(k->inode)))
		mode &= (__u16)~LINUX_S_ISGID;
	if (mode != k->inode.i_mode) {
		k->inode.i_mode = mode;
		k->dirty = true;
	}
}

/* Writes to an immutable file, and to an append-only one other than through
 * O_APPEND, are refused; pages the kernel accepted earlier still go out. */
static int write_refusal(const struct knode *k, unsigned wflags)
{
	if (wflags & FS_W_WRITEBACK)
		return 0;
	if (kn_may_write(k))
		return -EPERM;
	return (k->inode.i_flags & EXT2_APPEND_FL) && !(wflags & FS_W_APPEND) ? -EPERM : 0;
}

int fs_map_write(struct fs *fs, ino_t ino, uint64_t off, size_t len,
		 const struct fs_cred *cr, unsigned wflags, struct fs_dio *d)
{
	struct knode *k;
	struct io_map *cur = NULL;
	int r;

	memset(d, 0, sizeof(*d));
	d->ino = ino;
	d->off = off;
	d->len = len;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (r)
		goto out;
	r = write_refusal(k, wflags);
	if (!r && off + len > map_max_size(fs, k))
		r = -EFBIG;
	if (!r)
		r = map_blocks(fs, k, off / fs->bs, (off + len + fs->bs - 1) / fs->bs, &cur);
	if (!r)
		r = fill_holes(fs, k, cur, cr, &d->map);
	if (!r) {
		d->knode = k;
		d->new_size = off + len > kn_size(k) ? off + len : kn_size(k);
		d->needs_commit = d->new_size != kn_size(k);
		d->sync = (k->inode.i_flags & EXT2_SYNC_FL) != 0;
		for (unsigned i = 0; i < d->map->n; i++)
			d->needs_commit |= d->map->seg[i].fresh || d->map->seg[i].unwritten;
		kill_suid(k, cr);
		kn_touch(fs, k, true, true, false);
	}
	free(cur);
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- making blocks reachable ---- */

/* Insert a mapping of a hole: [lblk, lblk+len) -> pblk, merging with the
 * extent before it when contiguous. */
static errcode_t extent_insert_range(ext2_extent_handle_t h, blk64_t lblk, blk64_t pblk,
				     blk64_t len, bool uninit)
{
	unsigned max = uninit ? UNINIT_MAX_LEN : INIT_MAX_LEN;
	int uflag = uninit ? EXT2_EXTENT_FLAGS_UNINIT : 0;

	while (len) {
		struct ext2fs_extent ex = { .e_pblk = pblk, .e_lblk = lblk, .e_flags = uflag };
		struct ext2fs_extent cur;
		errcode_t e;

		ex.e_len = (__u32)(len < max ? len : max);
		e = ext2fs_extent_goto2(h, 0, lblk);
		if (!e)
			return EXT2_ET_INVALID_ARGUMENT; /* already mapped */
		if (e != EXT2_ET_EXTENT_NOT_FOUND)
			return e;
		if (ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &cur)) {
			e = ext2fs_extent_insert(h, 0, &ex); /* an empty tree */
		} else if (cur.e_lblk + cur.e_len == lblk && cur.e_pblk + cur.e_len == pblk &&
			   (cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT) == (unsigned)uflag &&
			   cur.e_len + ex.e_len <= max) {
			cur.e_len += ex.e_len;
			e = ext2fs_extent_replace(h, 0, &cur);
		} else {
			e = ext2fs_extent_insert(h, cur.e_lblk > lblk ? 0 : EXT2_EXTENT_INSERT_AFTER, &ex);
		}
		if (!e)
			e = ext2fs_extent_fix_parents(h);
		if (e)
			return e;
		lblk += ex.e_len;
		pblk += ex.e_len;
		len -= ex.e_len;
	}
	return 0;
}

static bool joinable(const struct ext2fs_extent *a, const struct ext2fs_extent *b)
{
	return !(a->e_flags & EXT2_EXTENT_FLAGS_UNINIT) && !(b->e_flags & EXT2_EXTENT_FLAGS_UNINIT) &&
	       a->e_lblk + a->e_len == b->e_lblk && a->e_pblk + a->e_len == b->e_pblk &&
	       a->e_len + b->e_len <= INIT_MAX_LEN;
}

/* The extent holding lblk, or an error. */
static errcode_t extent_at(ext2_extent_handle_t h, blk64_t lblk, struct ext2fs_extent *ex)
{
	errcode_t e = ext2fs_extent_goto2(h, 0, lblk);

	return e ? e : ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, ex);
}

/* Fold b into a (a before b, both written and contiguous). */
static errcode_t join(ext2_extent_handle_t h, struct ext2fs_extent *a, const struct ext2fs_extent *b)
{
	errcode_t e = ext2fs_extent_goto2(h, 0, b->e_lblk);

	if (!e)
		e = ext2fs_extent_delete(h, 0);
	/* b may have been the first of its leaf: its parents' keys move on */
	if (!e && ext2fs_extent_goto2(h, 0, b->e_lblk + b->e_len) == 0)
		e = ext2fs_extent_fix_parents(h);
	if (!e)
		e = ext2fs_extent_goto2(h, 0, a->e_lblk);
	if (e)
		return e;
	a->e_len += b->e_len;
	e = ext2fs_extent_replace(h, 0, a);
	return e ? e : ext2fs_extent_fix_parents(h);
}

/* Merge the written extent at lblk with written neighbours that continue it
 * on the device, so that converting and appending do not fragment the tree. */
static errcode_t extent_merge_around(ext2_extent_handle_t h, blk64_t lblk)
{
	struct ext2fs_extent cur, other;
	errcode_t e = extent_at(h, lblk, &cur);

	if (e || (cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT))
		return e;
	if (cur.e_lblk > 0 && !extent_at(h, cur.e_lblk - 1, &other) && joinable(&other, &cur)) {
		e = join(h, &other, &cur);
		if (e)
			return e;
		cur = other;
	}
	if (!extent_at(h, cur.e_lblk + cur.e_len, &other) && joinable(&cur, &other))
		e = join(h, &cur, &other);
	return e;
}

/* Mark [lblk, lblk+len) written, splitting unwritten extents around it. */
static errcode_t extent_mark_written(ext2_extent_handle_t h, blk64_t lblk, blk64_t len)
{
	blk64_t end = lblk + len;

	while (lblk < end) {
		struct ext2fs_extent cur, piece;
		errcode_t e = ext2fs_extent_goto2(h, 0, lblk);
		blk64_t cend, stop;

		if (!e)
			e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &cur);
		if (e)
			return e;
		cend = cur.e_lblk + cur.e_len;
		stop = cend < end ? cend : end;
		if (!(cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT)) {
			lblk = stop;
			continue;
		}
		if (cur.e_lblk < lblk) {
			/* keep the unwritten head, then the written middle after it */
			piece = cur;
			piece.e_len = (__u32)(lblk - cur.e_lblk);
			e = ext2fs_extent_replace(h, 0, &piece);
			piece.e_pblk = cur.e_pblk + (lblk - cur.e_lblk);
			piece.e_lblk = lblk;
			piece.e_len = (__u32)(stop - lblk);
			piece.e_flags = 0;
			if (!e)
				e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &piece);
		} else {
			piece = cur;
			piece.e_len = (__u32)(stop - cur.e_lblk);
			piece.e_flags = 0;
			e = ext2fs_extent_replace(h, 0, &piece);
		}
		if (!e && stop < cend) {
			piece.e_pblk = cur.e_pblk + (stop - cur.e_lblk);
			piece.e_lblk = stop;
			piece.e_len = (__u32)(cend - stop);
			piece.e_flags = EXT2_EXTENT_FLAGS_UNINIT;
			e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &piece);
		}
		if (!e)
			e = ext2fs_extent_fix_parents(h);
		if (!e)
			e = extent_merge_around(h, lblk);
		if (e)
			return e;
		lblk = stop;
	}
	return 0;
}

/* Make the fresh blocks of a write reachable and convert its unwritten
 * ones. On failure, *stop is the first segment not (wholly) committed. */
static errcode_t commit_extents(struct fs *fs, struct knode *k, const struct io_map *m,
				unsigned *stop)
{
	ext2_extent_handle_t h;
	errcode_t e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);
	unsigned i;

	for (i = 0; i < m->n && !e; i++) {
		const struct io_seg *s = &m->seg[i];

		if (s->fresh) {
			e = extent_insert_range(h, s->fblk, s->pblk, s->nblk, false);
			if (e)
				break;
			e = ext2fs_iblk_add_blocks(fs->e2, EI(k), s->nblk);
			if (!e)
				e = extent_merge_around(h, s->fblk + s->nblk - 1);
		} else if (s->unwritten) {
			e = extent_mark_written(h, s->fblk, s->nblk);
		}
	}
	*stop = e ? i : m->n;
	if (h)
		ext2fs_extent_free(h);
	return e;
}

/* Block-mapped (ext2/ext3) files: point the (indirect) map at each block;
 * libext2fs allocates the indirect blocks that are missing. */
static errcode_t commit_indirect(struct fs *fs, struct knode *k, const struct io_map *m,
				 unsigned *stop, uint32_t *stop_blk)
{
	for (unsigned i = 0; i < m->n; i++) {
		const struct io_seg *s = &m->seg[i];

		for (uint32_t j = 0; s->fresh && j < s->nblk; j++) {
			blk64_t p = s->pblk + j;
			errcode_t e = ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, BMAP_SET | BMAP_ALLOC,
						   s->fblk + j, NULL, &p);

			if (!e)
				e = ext2fs_iblk_add_blocks(fs->e2, EI(k), 1);
			if (e) {
				*stop = i;
				*stop_blk = j;
				return e;
			}
		}
	}
	*stop = m->n;
	return 0;
}

/* Give back fresh blocks that never became reachable: from segment `from`
 * (its first `skip` blocks excepted) on. */
static void release_fresh_from(struct fs *fs, const struct io_map *m, unsigned from, uint32_t skip)
{
	for (unsigned i = from; i < m->n; i++, skip = 0)
		if (m->seg[i].fresh && m->seg[i].nblk > skip) {
			ext2fs_block_alloc_stats_range(fs->e2, m->seg[i].pblk + skip,
						       m->seg[i].nblk - skip, -1);
			mcache_forget(fs->e2->io, m->seg[i].pblk + skip, m->seg[i].nblk - skip, false);
		}
}

int fs_write_commit(struct fs *fs, struct fs_dio *d, int err)
{
	struct knode *k = d->knode;
	errcode_t e = 0;
	int r = 0;

	pthread_mutex_lock(&fs->lock);
	/* the extent edits and the inode write below change few blocks, each
	 * several times: they reach the device once each, at the release */
	mcache_hold(fs->e2->io);
	if (err) {
		release_fresh(fs, d->map);
	} else if (d->needs_commit) {
		map_forget(k);
		unsigned stop = 0;
		uint32_t stop_blk = 0;

		/* the data is on the device: now it may become reachable */
		e = is_extent_file(k) ? commit_extents(fs, k, d->map, &stop)
				      : commit_indirect(fs, k, d->map, &stop, &stop_blk);
		if (e) {
			r = fs_errno(e);
			release_fresh_from(fs, d->map, stop, stop_blk);
			fs->errors = fs->errors || r == -EIO;
		}
		if (!r && d->new_size > kn_size(k))
			kn_set_size(fs, k, d->new_size);
		k->dirty = true;
		if (!r)
			r = kn_write(fs, k);
	}
	e = mcache_release(fs->e2->io);
	if (e && !r) {
		r = fs_errno(e);
		fs->errors = true;
	}
	pthread_mutex_unlock(&fs->lock);
	fs_dio_free(d);
	return r;
}

/* ---- truncate, fallocate, seek ---- */

/* ---- punching extent-mapped files ----
 * libext2fs 1.47.0's ext2fs_punch fails on valid trees ("extent not found",
 * seen truncating a two-level tree inside a leaf's last extent) and leaves
 * them half changed; kaiofs edits the tree itself, one extent at a time. */

/* The first extent that ends after b, or EXT2_ET_EXTENT_NO_NEXT. */
static errcode_t extent_from(ext2_extent_handle_t h, blk64_t b, struct ext2fs_extent *ex)
{
	errcode_t e = ext2fs_extent_goto2(h, 0, b);

	if (e && e != EXT2_ET_EXTENT_NOT_FOUND)
		return e;
	/* in a hole: the current extent is the one before b, or the first of
	 * its leaf when none is; an empty tree has none */
	e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, ex);
	if (e == EXT2_ET_NO_CURRENT_NODE)
		return EXT2_ET_EXTENT_NO_NEXT;
	while (!e && (!(ex->e_flags & EXT2_EXTENT_FLAGS_LEAF) || ex->e_lblk + ex->e_len <= b))
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, ex);
	return e;
}

/* Cut [a, b] out of the extent ex (the handle's current one): keep its head
 * and tail, splitting it when both remain. */
static errcode_t extent_cut(ext2_extent_handle_t h, const struct ext2fs_extent *ex,
			    blk64_t a, blk64_t b)
{
	blk64_t end = ex->e_lblk + ex->e_len - 1;
	struct ext2fs_extent head = *ex, tail = *ex;
	errcode_t e;

	head.e_len = (__u32)(a - ex->e_lblk);
	tail.e_lblk = b + 1;
	tail.e_pblk = ex->e_pblk + (b + 1 - ex->e_lblk);
	tail.e_len = (__u32)(end - b);
	if (!head.e_len && !tail.e_len) {
		struct ext2fs_extent next;

		/* an emptied leaf goes with it (and libext2fs's fix_parents then
		 * fails on what is left above); the keys above the next extent
		 * are what may have changed: its leaf's, if it now comes first,
		 * and its parents', if an emptied leaf came before it */
		e = ext2fs_extent_delete(h, 0);
		if (!e)
			e = extent_from(h, b + 1, &next);
		if (e == EXT2_ET_EXTENT_NO_NEXT)
			return 0;
		return e ? e : ext2fs_extent_fix_parents(h);
	}
	e = ext2fs_extent_replace(h, 0, head.e_len ? &head : &tail);
	if (!e && head.e_len && tail.e_len)
		e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &tail);
	return e ? e : ext2fs_extent_fix_parents(h);
}

static errcode_t punch_extents(struct fs *fs, struct knode *k, blk64_t start, blk64_t end)
{
	ext2_extent_handle_t h;
	struct ext2fs_extent ex;
	uint64_t freed = 0;
	errcode_t e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);

	while (!e && start <= end) {
		e = extent_from(h, start, &ex);
		if (e == EXT2_ET_EXTENT_NO_NEXT || (!e && ex.e_lblk > end)) {
			e = 0;
			break;
		}
		blk64_t a = start > ex.e_lblk ? start : ex.e_lblk;
		blk64_t last = ex.e_lblk + ex.e_len - 1, b = end < last ? end : last;

		if (!e && (ex.e_pblk < fs->e2->super->s_first_data_block ||
			   ex.e_pblk + ex.e_len > ext2fs_blocks_count(fs->e2->super)))
			e = EXT2_ET_BAD_BLOCK_NUM;
		if (!e)
			e = extent_cut(h, &ex, a, b);
		if (!e) {
			blk64_t p = ex.e_pblk + (a - ex.e_lblk), n = b - a + 1;

			ext2fs_block_alloc_stats_range(fs->e2, p, (blk_t)n, -1);
			/* libext2fs 1.47.0 passes its range callback an empty range */
			mcache_forget(fs->e2->io, p, n, false);
			freed += n;
		}
		if (b == ~0ULL)
			break;
		start = b + 1;
	}
	if (h)
		ext2fs_extent_free(h);
	if (freed) {
		ext2fs_iblk_sub_blocks(fs->e2, EI(k), freed);
		k->dirty = true;
	}
	return e;
}

/* ---- punching block-mapped files ----
 * libext2fs 1.47.0's ext2fs_punch is wrong on block-mapped files twice over:
 * a range that crosses from one level of the map into the next (direct
 * blocks into the indirect block, say) keeps the part past the boundary
 * mapped, and inside a double-indirect block a range is widened to the end
 * of that block. kaiofs walks the map itself. */

struct ind_punch {
	struct fs *fs;
	uint64_t first, last;   /* file blocks to free, inclusive */
	uint64_t apb;           /* block numbers per indirect block */
	__u32 *level_buf[3];    /* the indirect block being edited at each level */
	unsigned freed;         /* blocks freed, data and indirect */
};

/* File blocks one slot of the given level maps: 1 for a data block. */
static uint64_t slot_span(const struct ind_punch *p, int level)
{
	uint64_t span = 1;

	while (level--)
		span *= p->apb;
	return span;
}

static errcode_t punch_slot(struct ind_punch *p, __u32 *slot, int level, uint64_t base);

/* Punch inside the indirect block *slot; true in *empty when it maps
 * nothing any more. */
static errcode_t punch_below(struct ind_punch *p, __u32 blk, int level, uint64_t base,
			     bool *empty)
{
	__u32 *e = p->level_buf[level - 1];
	uint64_t span = slot_span(p, level - 1);
	bool changed = false;
	errcode_t err = ext2fs_read_ind_block(p->fs->e2, blk, e);

	*empty = true;
	for (uint64_t i = 0; !err && i < p->apb; i++) {
		__u32 before = e[i];

		err = punch_slot(p, &e[i], level - 1, base + i * span);
		changed |= e[i] != before;
		*empty &= e[i] == 0;
	}
	if (!err && changed && !*empty)
		err = ext2fs_write_ind_block(p->fs->e2, blk, e);
	return err;
}

/* Free what *slot maps of [first, last]; it maps file blocks from base on,
 * a data block at level 0 and an indirect block of level - 1 slots above.
 * The slot is cleared once nothing under it stays mapped. */
static errcode_t punch_slot(struct ind_punch *p, __u32 *slot, int level, uint64_t base)
{
	struct ext2_super_block *sb = p->fs->e2->super;
	bool empty = true;
	errcode_t err = 0;

	if (!*slot || base > p->last || base + slot_span(p, level) <= p->first)
		return 0;
	if (*slot < sb->s_first_data_block || *slot >= ext2fs_blocks_count(sb))
		return EXT2_ET_BAD_BLOCK_NUM;
	if (level)
		err = punch_below(p, *slot, level, base, &empty);
	if (err || !empty)
		return err;
	ext2fs_block_alloc_stats2(p->fs->e2, *slot, -1);
	*slot = 0;
	p->freed++;
	return 0;
}

static errcode_t punch_indirect(struct fs *fs, struct knode *k, blk64_t first, blk64_t last)
{
	struct ind_punch p = { .fs = fs, .first = first, .last = last, .apb = fs->bs / 4 };
	__u32 *blocks = EI(k)->i_block;
	uint64_t base = EXT2_NDIR_BLOCKS;
	errcode_t err = 0;
	char *buf = malloc(3 * (size_t)fs->bs);

	if (!buf)
		return EXT2_ET_NO_MEMORY;
	for (int l = 0; l < 3; l++)
		p.level_buf[l] = (__u32 *)(buf + (size_t)l * fs->bs);
	for (uint64_t i = 0; !err && i < EXT2_NDIR_BLOCKS; i++)
		err = punch_slot(&p, &blocks[i], 0, i);
	/* the indirect, double- and triple-indirect block */
	for (int level = 1; !err && level <= 3; level++) {
		err = punch_slot(&p, &blocks[EXT2_NDIR_BLOCKS + level - 1], level, base);
		base += slot_span(&p, level);
	}
	free(buf);
	if (p.freed) {
		ext2fs_iblk_sub_blocks(fs->e2, EI(k), p.freed);
		k->dirty = true;
	}
	return err;
}

/* Free the blocks of [start, end] (inclusive). A failure still leaves the
 * inode as it was changed, written, and the volume marked for e2fsck. */
static int punch(struct fs *fs, struct knode *k, blk64_t start, blk64_t end)
{
	errcode_t e;

	map_forget(k);
	e = is_extent_file(k) ? punch_extents(fs, k, start, end) : punch_indirect(fs, k, start, end);
	if (e) {
		fs->errors = true;
		k->dirty = true;
		kn_write(fs, k);
	}
	return e == EXT2_ET_BAD_BLOCK_NUM ? -EUCLEAN : fs_errno(e);
}

uint64_t map_max_size(struct fs *fs, struct knode *k)
{
	uint64_t bs = fs->bs, a = bs / 4, blocks;

	if (k->inode.i_flags & EXT4_EXTENTS_FL)
		return ((1ull << 32) - 1) * bs;
	blocks = EXT2_NDIR_BLOCKS + a + a * a + a * a * a;
	if (!ext2fs_has_feature_huge_file(fs->e2->super) && blocks > (1ull << 32) / (bs / 512))
		blocks = (1ull << 32) / (bs / 512) - 1;
	if (!ext2fs_has_feature_large_file(fs->e2->super) && blocks * bs > 0x7fffffffull)
		return 0x7fffffffull;
	return blocks * bs;
}

int fs_truncate(struct fs *fs, ino_t ino, uint64_t size)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, {
		if (!LINUX_S_ISREG(k->inode.i_mode))
			ret = kn_is_dir(k) ? -EISDIR : -EINVAL;
		else if (size > map_max_size(fs, k))
			ret = -EFBIG;
		else if (!(ret = kn_may_change(k))) {
			map_quiesce_reads(fs, k);
			ret = map_truncate(fs, k, size);
			if (!ret) {
				kn_touch(fs, k, true, true, false);
				ret = kn_write(fs, k);
			}
		}
	});
	return ret;
}

int map_truncate(struct fs *fs, struct knode *k, uint64_t size)
{
	uint64_t first_free = (size + fs->bs - 1) / fs->bs;
	int r = 0;

	if (ext2fs_inode_has_valid_blocks2(fs->e2, EI(k)) && size <= kn_size(k))
		r = punch(fs, k, first_free, ~0ULL);
	if (r)
		return r;
	if (size != kn_size(k))
		kn_set_size(fs, k, size);
	return 0;
}

static int punch_blocks(struct fs *fs, struct knode *k, uint64_t b0, uint64_t b1)
{

	if (b0 >= b1)
		return 0;
	map_quiesce_reads(fs, k);
	return punch(fs, k, b0, b1 - 1);
}

static int preallocate(struct fs *fs, struct knode *k, uint64_t b0, uint64_t b1,
		       const struct fs_cred *cr)
{
	struct io_map *m;
	uint64_t holes = 0;
	errcode_t e;
	int r;

	if (b0 >= b1)
		return 0;
	r = map_blocks(fs, k, b0, b1, &m);
	if (r)
		return r;
	for (unsigned i = 0; i < m->n; i++)
		holes += m->seg[i].hole ? m->seg[i].nblk : 0;
	free(m);
	if (holes > free_blocks_for(fs, cr))
		return -ENOSPC;
	map_forget(k);
	e = ext2fs_fallocate(fs->e2, EXT2_FALLOCATE_FORCE_UNINIT, k->ino, EI(k), ~0ULL, b0, b1 - b0);
	return e == EXT2_ET_BLOCK_ALLOC_FAIL ? -ENOSPC : fs_errno(e);
}

/* Why fallocate(mode) over [.., end) cannot be done on k, or 0. */
static int fallocate_refusal(struct fs *fs, struct knode *k, int mode, uint64_t end)
{
	const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;

	if (mode & ~known)
		return -EOPNOTSUPP;
	if ((mode & FALLOC_FL_PUNCH_HOLE) && (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & FALLOC_FL_ZERO_RANGE)))
		return -EOPNOTSUPP;
	/* as vfs_fallocate: nothing on an immutable file, and on an append-only
	 * one only allocation */
	if (kn_may_write(k) || ((mode & ~FALLOC_FL_KEEP_SIZE) && kn_may_change(k)))
		return -EPERM;
	if (fs->ro)
		return -EROFS;
	/* block-mapped files can only have holes punched, as on ext4 */
	if (!is_extent_file(k) && !(mode & FALLOC_FL_PUNCH_HOLE))
		return -EOPNOTSUPP;
	if (end > map_max_size(fs, k))
		return -EFBIG;
	return 0;
}

int fs_fallocate_check(struct fs *fs, ino_t ino, int mode, uint64_t off, uint64_t len)
{
	struct knode *k;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (!r) {
		r = fallocate_refusal(fs, k, mode, off + len);
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fs_fallocate(struct fs *fs, ino_t ino, int mode, uint64_t off, uint64_t len,
		 const struct fs_cred *cr)
{
	uint64_t bs = fs->bs, end = off + len;
	struct knode *k;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (r)
		goto out;
	if ((r = fallocate_refusal(fs, k, mode, end)))
		;
	else if (mode & FALLOC_FL_PUNCH_HOLE)
		r = punch_blocks(fs, k, (off + bs - 1) / bs, end / bs);
	else if (mode & FALLOC_FL_ZERO_RANGE) {
		/* whole blocks become unwritten, the caller zeroed data at the
		 * edges, and edge blocks that were holes are allocated too */
		r = punch_blocks(fs, k, (off + bs - 1) / bs, end / bs);
		if (!r)
			r = preallocate(fs, k, off / bs, (end + bs - 1) / bs, cr);
	} else {
		r = preallocate(fs, k, off / bs, (end + bs - 1) / bs, cr);
	}
	if (!r && !(mode & FALLOC_FL_KEEP_SIZE) && end > kn_size(k))
		kn_set_size(fs, k, end);
	if (!r) {
		kn_touch(fs, k, true, true, false);
		r = kn_write(fs, k);
	}
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* SEEK_DATA/SEEK_HOLE in a block-mapped file: its data blocks come in
 * file order from the block iterator, which skips holes whole (mapping
 * block by block would take minutes on a large sparse file). */
struct seek_walk {
	struct fs *fs;
	uint64_t start;     /* first block asked about */
	uint64_t next;      /* SEEK_HOLE: the next block that would be data */
	bool data;          /* looking for data (else a hole) */
	bool found;
	int err;
};

static int seek_block(ext2_filsys e2, blk64_t *blk, e2_blkcnt_t blockcnt, blk64_t ref_blk,
		      int ref_offset, void *priv)
{
	struct seek_walk *w = priv;
	uint64_t b = (uint64_t)blockcnt;

	(void)e2;
	(void)ref_blk;
	(void)ref_offset;
	if (blockcnt < 0 || b < w->start)
		return 0;
	if (*blk < w->fs->e2->super->s_first_data_block ||
	    *blk >= ext2fs_blocks_count(w->fs->e2->super)) {
		w->fs->errors = true;
		w->err = -EUCLEAN;
		return BLOCK_ABORT;
	}
	if (w->data || b > w->next) {
		w->next = w->data ? b : w->next;
		w->found = true;
		return BLOCK_ABORT;
	}
	w->next = b + 1;
	return 0;
}

static int seek_indirect(struct fs *fs, struct knode *k, uint64_t start, bool data,
			 uint64_t *at)
{
	struct seek_walk w = { .fs = fs, .start = start, .next = start, .data = data };
	errcode_t e = ext2fs_block_iterate3(fs->e2, k->ino, BLOCK_FLAG_DATA_ONLY | BLOCK_FLAG_READ_ONLY,
					    NULL, seek_block, &w);

	if (w.err)
		return w.err;
	if (e)
		return fs_errno(e);
	if (data && !w.found)
		return -ENXIO;
	*at = w.next;  /* SEEK_HOLE without a gap: right after the last data block */
	return 0;
}

/* The first data (or hole) block at or after b in the file's map. */
static int seek_mapped(struct fs *fs, struct knode *k, uint64_t b, uint64_t end, bool data,
		       uint64_t *at)
{
	struct io_map *m = NULL;
	int r = map_blocks(fs, k, b, end, &m);

	if (r)
		return r;
	r = data ? -ENXIO : 0;
	*at = end;
	for (unsigned i = 0; i < m->n; i++) {
		/* unwritten extents read as zeros: holes, as the kernel reports them */
		if (!m->seg[i].zero == data) {
			*at = m->seg[i].fblk > b ? m->seg[i].fblk : b;
			r = 0;
			break;
		}
	}
	free(m);
	return r;
}

int fs_lseek(struct fs *fs, ino_t ino, off_t off, int whence, off_t *out)
{
	struct knode *k;
	uint64_t size, bs = fs->bs, at = 0;
	bool data = whence == SEEK_DATA;
	int r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	pthread_mutex_lock(&fs->lock);
	r = get_regular(fs, ino, &k);
	if (r)
		goto out;
	size = kn_size(k);
	if (off < 0 || (uint64_t)off >= size) {
		r = -ENXIO;
	} else {
		uint64_t b = (uint64_t)off / bs, end = (size + bs - 1) / bs;

		r = is_extent_file(k) ? seek_mapped(fs, k, b, end, data, &at)
				      : seek_indirect(fs, k, b, data, &at);
		if (!r) {
			/* within the block that holds off, off itself is the answer */
			uint64_t pos = at * bs > (uint64_t)off ? at * bs : (uint64_t)off;

			if (pos >= size && data)
				r = -ENXIO;
			*out = (off_t)(pos < size ? pos : size);
		}
	}
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}
