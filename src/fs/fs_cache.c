/* The metadata block cache: see fs_cache.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs_cache.h"
#include "stats.h"

struct mblock {
	blk64_t blk;
	struct mblock *hnext;
	struct mblock *prev, *next;     /* recency: head is the newest */
	struct mblock *dnext;           /* dirty blocks, in the order of their last write */
	bool dirty;                     /* written while held, not yet on the device */
	char data[];
};

struct mchan {
	struct struct_io_channel ch;    /* what libext2fs sees */
	io_channel lower;               /* the unix_io channel doing the I/O */
	struct mblock **htab;
	size_t hsize, count, max_blocks;
	struct mblock *head, *tail;
	unsigned holds;                 /* > 0: writes wait for mcache_release */
	struct mblock *dirty, *dirty_tail;
};

static struct struct_io_manager manager;
static size_t cache_limit;

static struct mchan *mc_of(io_channel io)
{
	return io->private_data;
}

/* The lower channel, told the alignment fs_volume.c may have set on ours. */
static io_channel lower_of(io_channel io)
{
	struct mchan *m = mc_of(io);

	m->lower->align = io->align;
	return m->lower;
}

/* ---- the table ---- */

static size_t slot(const struct mchan *m, blk64_t blk)
{
	return (size_t)((blk * 0x9E3779B97F4A7C15ull) >> 20) & (m->hsize - 1);
}

static struct mblock *find(struct mchan *m, blk64_t blk)
{
	if (!m->htab)
		return NULL;
	for (struct mblock *b = m->htab[slot(m, blk)]; b; b = b->hnext)
		if (b->blk == blk)
			return b;
	return NULL;
}

static void unlink_recency(struct mchan *m, struct mblock *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		m->head = b->next;
	if (b->next)
		b->next->prev = b->prev;
	else
		m->tail = b->prev;
}

static void push_front(struct mchan *m, struct mblock *b)
{
	b->prev = NULL;
	b->next = m->head;
	if (m->head)
		m->head->prev = b;
	m->head = b;
	if (!m->tail)
		m->tail = b;
}

static void undirty(struct mchan *m, struct mblock *b)
{
	struct mblock **p = &m->dirty, *prev = NULL;

	while (*p != b) {
		prev = *p;
		p = &(*p)->dnext;
	}
	*p = b->dnext;
	if (m->dirty_tail == b)
		m->dirty_tail = prev;
	b->dirty = false;
}

/* Forget a block. A dirty one is forgotten unwritten: only a block freed (or
 * overwritten by other means) is dropped while dirty, and then its old
 * contents must not reach the device. */
static void drop(struct mchan *m, struct mblock *b)
{
	struct mblock **p = &m->htab[slot(m, b->blk)];

	if (b->dirty)
		undirty(m, b);
	while (*p != b)
		p = &(*p)->hnext;
	*p = b->hnext;
	unlink_recency(m, b);
	m->count--;
	free(b);
}

static void drop_all(struct mchan *m)
{
	while (m->head)
		drop(m, m->head);
}

/* Drop the blocks of [blk, blk + n); with keep_dirty, those written since
 * mcache_hold stay. */
static void drop_blocks(struct mchan *m, blk64_t blk, blk64_t n, bool keep_dirty)
{
	if (!m->count)
		return;
	if (n > m->count) {
		/* a large range: walk the cache instead of the range */
		for (struct mblock *b = m->head, *next; b; b = next) {
			next = b->next;
			if (b->blk >= blk && b->blk - blk < n && !(keep_dirty && b->dirty))
				drop(m, b);
		}
		return;
	}
	for (blk64_t i = 0; i < n; i++) {
		struct mblock *b = find(m, blk + i);

		if (b && !(keep_dirty && b->dirty))
			drop(m, b);
	}
}

static void drop_range(struct mchan *m, blk64_t blk, blk64_t n)
{
	drop_blocks(m, blk, n, false);
}

/* The byte range [off, off + len) changed behind the blocks' backs. */
static void drop_bytes(struct mchan *m, int bs, unsigned long long off, unsigned long long len)
{
	if (len)
		drop_range(m, off / (unsigned)bs, (off + len - 1) / (unsigned)bs - off / (unsigned)bs + 1);
}

/* The oldest block that is not dirty, or NULL. */
static struct mblock *oldest_clean(struct mchan *m)
{
	struct mblock *b = m->tail;

	while (b && b->dirty)
		b = b->prev;
	return b;
}

/* Remember one block's contents: the device's, as just read or written,
 * or (dirty) what it is to get at mcache_release. Returns false when the
 * block could not be kept. */
static bool remember(struct mchan *m, blk64_t blk, const void *data, bool dirty)
{
	int bs = m->ch.block_size;
	struct mblock *b = find(m, blk);

	if (!m->max_blocks || !m->htab)
		return false;
	if (!b) {
		if (m->count >= m->max_blocks) {
			b = oldest_clean(m);    /* reuse the oldest */
			if (!b)
				return false;
			drop(m, b);
		}
		b = malloc(sizeof(*b) + (size_t)bs);
		if (!b)
			return false;
		b->blk = blk;
		b->dirty = false;
		b->hnext = m->htab[slot(m, blk)];
		m->htab[slot(m, blk)] = b;
		m->count++;
	} else {
		unlink_recency(m, b);
		if (!dirty && b->dirty)
			undirty(m, b);  /* these contents are the device's now */
	}
	memcpy(b->data, data, (size_t)bs);
	push_front(m, b);
	/* dirty blocks go out in the order of their last write: libext2fs
	 * writes a new extent leaf before the parent that points at it */
	if (dirty && b->dirty)
		undirty(m, b);
	if (dirty) {
		b->dirty = true;
		b->dnext = NULL;
		if (m->dirty_tail)
			m->dirty_tail->dnext = b;
		else
			m->dirty = b;
		m->dirty_tail = b;
	}
	return true;
}

/* Write the dirty blocks to the device, in the order of their last write.
 * Returns the first error; a block that failed is forgotten (what the
 * device holds is unknown). */
static errcode_t write_dirty(struct mchan *m)
{
	errcode_t first = 0;

	while (m->dirty) {
		struct mblock *b = m->dirty;
		errcode_t e;

		STAT_ADD(meta_writes, 1);
		m->lower->align = m->ch.align;
		e = io_channel_write_blk64(m->lower, b->blk, 1, b->data);
		undirty(m, b);
		if (e) {
			first = first ? first : e;
			drop(m, b);
		}
	}
	return first;
}

/* Size the table for the channel's block size; called at open and whenever
 * the block size changes (libext2fs reads the superblock at 1 KiB first). */
static void resize_for_block_size(struct mchan *m)
{
	drop_all(m);
	free(m->htab);
	m->htab = NULL;
	m->hsize = 0;
	m->max_blocks = cache_limit / (size_t)m->ch.block_size;
	if (!m->max_blocks)
		return;
	m->hsize = 64;
	while (m->hsize < m->max_blocks)
		m->hsize *= 2;
	m->htab = calloc(m->hsize, sizeof(*m->htab));
	if (!m->htab)
		m->max_blocks = 0;
}

/* ---- the io_manager ---- */

static errcode_t mc_open(const char *name, int flags, io_channel *out)
{
	struct mchan *m = calloc(1, sizeof(*m));
	errcode_t e;

	if (!m)
		return EXT2_ET_NO_MEMORY;
	e = unix_io_manager->open(name, flags, &m->lower);
	if (e) {
		free(m);
		return e;
	}
	m->ch = *m->lower;
	m->ch.manager = &manager;
	m->ch.name = strdup(m->lower->name);
	m->ch.refcount = 1;
	m->ch.private_data = m;
	m->ch.app_data = NULL;
	if (!m->ch.name) {
		io_channel_close(m->lower);
		free(m);
		return EXT2_ET_NO_MEMORY;
	}
	resize_for_block_size(m);
	*out = &m->ch;
	return 0;
}

static errcode_t mc_close(io_channel io)
{
	struct mchan *m = mc_of(io);
	errcode_t e;

	if (--io->refcount > 0)
		return 0;
	e = write_dirty(m);
	e = io_channel_close(lower_of(io)) ?: e;
	drop_all(m);
	free(m->htab);
	free(io->name);
	free(m);
	return e;
}

static errcode_t mc_set_blksize(io_channel io, int blksize)
{
	struct mchan *m = mc_of(io);
	errcode_t e = write_dirty(m) ?: io_channel_set_blksize(lower_of(io), blksize);

	if (!e && blksize != io->block_size) {
		io->block_size = blksize;
		resize_for_block_size(m);
	}
	return e;
}

static bool all_cached(struct mchan *m, blk64_t blk, int count)
{
	for (int i = 0; i < count; i++)
		if (!find(m, blk + (blk64_t)i))
			return false;
	return true;
}

static errcode_t mc_read64(io_channel io, unsigned long long blk, int count, void *data)
{
	struct mchan *m = mc_of(io);
	size_t bs = (size_t)io->block_size;
	errcode_t e;

	if (count > 0 && m->max_blocks && all_cached(m, blk, count)) {
		for (int i = 0; i < count; i++) {
			struct mblock *b = find(m, blk + (blk64_t)i);

			memcpy((char *)data + (size_t)i * bs, b->data, bs);
			unlink_recency(m, b);
			push_front(m, b);
		}
		STAT_ADD(meta_hits, 1);
		return 0;
	}
	STAT_ADD(meta_reads, 1);
	e = io_channel_read_blk64(lower_of(io), blk, count, data);
	if (!e && count > 0 && (size_t)count <= m->max_blocks)
		for (int i = 0; i < count; i++) {
			struct mblock *b = find(m, blk + (blk64_t)i);
			char *d = (char *)data + (size_t)i * bs;

			if (b && b->dirty)
				memcpy(d, b->data, bs);  /* newer than the device's */
			else
				remember(m, blk + (blk64_t)i, d, false);
		}
	return e;
}

static errcode_t mc_write64(io_channel io, unsigned long long blk, int count, const void *data)
{
	struct mchan *m = mc_of(io);
	size_t bs = (size_t)io->block_size;
	errcode_t e;

	if (count > 0 && m->holds && (size_t)count <= m->max_blocks) {
		int kept = 0;

		while (kept < count &&
		       remember(m, blk + (blk64_t)kept, (const char *)data + (size_t)kept * bs, true))
			kept++;
		if (kept == count)
			return 0;       /* written at mcache_release */
		/* no room to hold them all: the whole range goes out now */
	}
	if (count < 0 && (e = write_dirty(m)))
		return e;
	STAT_ADD(meta_writes, 1);
	e = io_channel_write_blk64(lower_of(io), blk, count, data);
	if (count < 0) {
		drop_bytes(m, io->block_size, blk * bs, (unsigned long long)-count);
	} else if (e || (size_t)count > m->max_blocks) {
		/* what the device holds now is unknown, or too much to keep */
		drop_range(m, blk, (blk64_t)count);
	} else {
		for (int i = 0; i < count; i++)
			remember(m, blk + (blk64_t)i, (const char *)data + (size_t)i * bs, false);
	}
	return e;
}

static errcode_t mc_read(io_channel io, unsigned long blk, int count, void *data)
{
	return mc_read64(io, blk, count, data);
}

static errcode_t mc_write(io_channel io, unsigned long blk, int count, const void *data)
{
	return mc_write64(io, blk, count, data);
}

static errcode_t mc_write_byte(io_channel io, unsigned long off, int count, const void *data)
{
	io_channel lower = lower_of(io);
	errcode_t e;

	if (!lower->manager->write_byte)
		return EXT2_ET_UNIMPLEMENTED;
	e = write_dirty(mc_of(io));
	if (e)
		return e;
	STAT_ADD(meta_writes, 1);
	e = lower->manager->write_byte(lower, off, count, data);
	drop_bytes(mc_of(io), io->block_size, off, count > 0 ? (unsigned long long)count : 0);
	return e;
}

static errcode_t mc_flush(io_channel io)
{
	errcode_t e = write_dirty(mc_of(io));

	return io_channel_flush(lower_of(io)) ?: e;
}

static errcode_t mc_set_option(io_channel io, const char *opt, const char *arg)
{
	io_channel lower = lower_of(io);

	return lower->manager->set_option ? lower->manager->set_option(lower, opt, arg)
					  : EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t mc_get_stats(io_channel io, io_stats *st)
{
	io_channel lower = lower_of(io);

	return lower->manager->get_stats ? lower->manager->get_stats(lower, st)
					 : EXT2_ET_UNIMPLEMENTED;
}

static errcode_t mc_discard(io_channel io, unsigned long long blk, unsigned long long n)
{
	drop_range(mc_of(io), blk, n);
	return io_channel_discard(lower_of(io), blk, n);
}

static errcode_t mc_zeroout(io_channel io, unsigned long long blk, unsigned long long n)
{
	drop_range(mc_of(io), blk, n);
	return io_channel_zeroout(lower_of(io), blk, n);
}

static errcode_t mc_readahead(io_channel io, unsigned long long blk, unsigned long long n)
{
	return io_channel_cache_readahead(lower_of(io), blk, n);
}

static struct struct_io_manager manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "kaiofs metadata cache",
	.open = mc_open,
	.close = mc_close,
	.set_blksize = mc_set_blksize,
	.read_blk = mc_read,
	.write_blk = mc_write,
	.flush = mc_flush,
	.write_byte = mc_write_byte,
	.set_option = mc_set_option,
	.get_stats = mc_get_stats,
	.read_blk64 = mc_read64,
	.write_blk64 = mc_write64,
	.discard = mc_discard,
	.cache_readahead = mc_readahead,
	.zeroout = mc_zeroout,
};

io_manager mcache_manager(size_t limit)
{
	cache_limit = limit;
	return &manager;
}

void mcache_hold(io_channel io)
{
	if (io && io->manager == &manager)
		mc_of(io)->holds++;
}

errcode_t mcache_release(io_channel io)
{
	struct mchan *m;

	if (!io || io->manager != &manager)
		return 0;
	m = mc_of(io);
	if (m->holds && --m->holds)
		return 0;
	return write_dirty(m);
}

void mcache_forget(io_channel io, blk64_t blk, blk64_t n, bool allocated)
{
	if (io && io->manager == &manager)
		drop_blocks(mc_of(io), blk, n, allocated);
}

static void on_block_change(ext2_filsys e2, blk64_t blk, int inuse)
{
	mcache_forget(e2->io, blk, 1, inuse > 0);
}

static void on_range_change(ext2_filsys e2, blk64_t blk, blk_t n, int inuse)
{
	mcache_forget(e2->io, blk, n, inuse > 0);
}

void mcache_follow_allocations(ext2_filsys e2)
{
	void (*old_block)(ext2_filsys, blk64_t, int);
	void (*old_range)(ext2_filsys, blk64_t, blk_t, int);

	ext2fs_set_block_alloc_stats_callback(e2, on_block_change, &old_block);
	ext2fs_set_block_alloc_stats_range_callback(e2, on_range_change, &old_range);
}
