#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "engine.h"
#include "log.h"
#include "stats.h"
#include "util.h"

/* One device I/O of an operation. */
struct io_part {
	struct eng_req req;
	struct io_op *op;
};

/* One read, write or flush in flight. */
struct io_op {
	struct io_dev *dev;
	char *buf;                   /* arena buffer: the aligned span, then edge scratch */
	size_t span;                 /* bytes of the aligned span */
	size_t alloc_len;
	uint64_t off, a0;            /* user range start; span start */
	size_t len;
	uint32_t bs;
	int rw_flags;
	const struct io_map *map;
	struct io_map *own_map;      /* raw mode's identity map */
	struct rl_entry lock;        /* raw mode's write lock */
	bool locked;
	unsigned parts_left;
	int err;
	size_t short_bytes;          /* a single-part transfer that came up short */
	bool is_short;
	uint64_t edge_blk[2];        /* file blocks of partial edges to read */
	unsigned nedges;
	io_read_done read_cb;
	io_write_done write_cb;
	void *ctx;
	unsigned nparts;
	struct io_part *parts;
	struct io_part inline_parts[4];
};

/* ---- maps ---- */

struct io_map *io_map_new(uint32_t bs)
{
	struct io_map *m = malloc(sizeof(*m) + 4 * sizeof(struct io_seg));

	if (m) {
		m->n = 0;
		m->cap = 4;
		m->bs = bs;
	}
	return m;
}

static bool seg_continues(const struct io_seg *a, const struct io_seg *b)
{
	if (a->fblk + a->nblk != b->fblk || a->zero != b->zero || a->hole != b->hole ||
	    a->fresh != b->fresh || a->unwritten != b->unwritten)
		return false;
	return a->hole || a->pblk + a->nblk == b->pblk;
}

int io_map_add(struct io_map **mp, const struct io_seg *s)
{
	struct io_map *m = *mp;

	if (m->n && seg_continues(&m->seg[m->n - 1], s) &&
	    (uint64_t)m->seg[m->n - 1].nblk + s->nblk <= UINT32_MAX) {
		m->seg[m->n - 1].nblk += s->nblk;
		return 0;
	}
	if (m->n == m->cap) {
		struct io_map *g = realloc(m, sizeof(*m) + 2 * m->cap * sizeof(struct io_seg));

		if (!g)
			return -ENOMEM;
		g->cap *= 2;
		*mp = m = g;
	}
	m->seg[m->n++] = *s;
	return 0;
}

/* The segment holding file block b. */
static const struct io_seg *seg_of(const struct io_map *m, uint64_t b)
{
	for (unsigned i = 0; i < m->n; i++)
		if (b >= m->seg[i].fblk && b < m->seg[i].fblk + m->seg[i].nblk)
			return &m->seg[i];
	return NULL;
}

/* ---- device ---- */

void io_dev_init(struct io_dev *d, int fd, uint64_t size, size_t unit,
		 struct engine *engine, struct arena *arena)
{
	memset(d, 0, sizeof(*d));
	d->fd = fd;
	d->size = size;
	d->unit = unit;
	d->engine = engine;
	d->arena = arena;
	rangelock_init(&d->wlock);
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->idle, NULL);
}

void io_dev_drain(struct io_dev *d)
{
	pthread_mutex_lock(&d->mu);
	while (d->pending)
		pthread_cond_wait(&d->idle, &d->mu);
	pthread_mutex_unlock(&d->mu);
}

void io_dev_destroy(struct io_dev *d)
{
	io_dev_drain(d);
	rangelock_destroy(&d->wlock);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->idle);
}

size_t io_max_len(const struct io_dev *d)
{
	/* the span plus two edge blocks must fit the arena with room to spare */
	size_t max = arena_size(d->arena) / 2 - 3 * 65536;

	return max < (16u << 20) ? max : (16u << 20);
}

/* Room for n device I/Os; small counts use the op's own array. */
static int op_size_parts(struct io_op *op, unsigned n)
{
	if (n <= op->nparts)
		return 0;
	if (n <= 4) {
		op->parts = op->inline_parts;
	} else {
		struct io_part *p = calloc(n, sizeof(*p));

		if (!p)
			return -ENOMEM;
		if (op->parts != op->inline_parts)
			free(op->parts);
		op->parts = p;
	}
	op->nparts = n;
	for (unsigned i = 0; i < n; i++) {
		op->parts[i].op = op;
		op->parts[i].req.priv = &op->parts[i];
	}
	return 0;
}

static struct io_op *op_new(struct io_dev *d, unsigned nparts, void *ctx)
{
	struct io_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->dev = d;
	op->ctx = ctx;
	op->parts = op->inline_parts;
	if (op_size_parts(op, nparts)) {
		free(op);
		return NULL;
	}
	pthread_mutex_lock(&d->mu);
	d->pending++;
	pthread_mutex_unlock(&d->mu);
	return op;
}

static void op_free(struct io_op *op)
{
	struct io_dev *d = op->dev;

	if (op->buf)
		arena_free(d->arena, op->buf, op->alloc_len);
	free(op->own_map);
	if (op->parts != op->inline_parts)
		free(op->parts);
	free(op);
	pthread_mutex_lock(&d->mu);
	if (--d->pending == 0)
		pthread_cond_broadcast(&d->idle);
	pthread_mutex_unlock(&d->mu);
}

/* What an application sees of a failed device request: the device being
 * full is ENOSPC; anything else (a bad sector, a device that went away) is
 * an I/O error of the file. */
static int device_errno(long res)
{
	static bool gone_said;

	if ((res == -ENODEV || res == -ENXIO || res == -ENOTCONN || res == -ESHUTDOWN) &&
	    !__atomic_exchange_n(&gone_said, true, __ATOMIC_RELAXED))
		say("the device went away (%s): file I/O fails with EIO; unmount and check it",
		    strerror((int)-res));
	return res == -ENOSPC ? ENOSPC : EIO;
}

/* Record one part's result; true when it was the last part. */
static bool part_finished(struct io_part *p, long res)
{
	struct io_op *op = p->op;
	size_t want = p->req.len + p->req.done_bytes;

	if (res < 0)
		__atomic_store_n(&op->err, device_errno(res), __ATOMIC_RELAXED);
	else if ((size_t)res < want) {
		op->is_short = true;
		op->short_bytes = (size_t)res;
	}
	return __atomic_sub_fetch(&op->parts_left, 1, __ATOMIC_ACQ_REL) == 0;
}

/* Prepare one engine request per device segment of the map inside the op's
 * block span, in parts[at...]; zero-reading segments of a read are zeroed in
 * the buffer instead, holes of a write skipped. Returns the next free part. */
static unsigned prep_parts(struct io_op *op, unsigned at, const struct io_map *m, bool write,
			   eng_done_fn done)
{
	uint64_t b0 = op->a0 / op->bs, b1 = b0 + op->span / op->bs;

	for (unsigned i = 0; i < m->n; i++) {
		const struct io_seg *s = &m->seg[i];
		uint64_t f0 = s->fblk > b0 ? s->fblk : b0;
		uint64_t f1 = s->fblk + s->nblk < b1 ? s->fblk + s->nblk : b1;
		char *dst;

		if (f0 >= f1)
			continue;
		dst = op->buf + (f0 - b0) * op->bs;
		if (!write && s->zero) {
			memset(dst, 0, (f1 - f0) * op->bs);
			continue;
		}
		if (write && s->hole)
			continue;
		struct eng_req *r = &op->parts[at++].req;
		uint64_t dev_off = (s->pblk + (f0 - s->fblk)) * op->bs;

		r->done = done;
		if (write)
			engine_prep_write(r, op->dev->fd, dst, (f1 - f0) * op->bs, dev_off, op->rw_flags);
		else
			engine_prep_read(r, op->dev->fd, dst, (f1 - f0) * op->bs, dev_off);
	}
	return at;
}

static void submit_parts(struct io_op *op, unsigned first, unsigned n)
{
	struct eng_req *rs[64];

	op->parts_left = n;
	while (n) {
		unsigned k = n < 64 ? n : 64;

		for (unsigned i = 0; i < k; i++)
			rs[i] = &op->parts[first + i].req;
		engine_submit_batch(op->dev->engine, rs, k);
		first += k;
		n -= k;
	}
}

/* Segments that take device I/O: reads skip what reads as zeros; writes
 * skip only holes (a write map has none). */
static unsigned io_segs(const struct io_map *m, bool write)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->n; i++)
		n += write ? !m->seg[i].hole : !m->seg[i].zero;
	return n;
}

static void set_span(struct io_op *op, uint64_t off, size_t len, uint32_t bs)
{
	op->off = off;
	op->len = len;
	op->bs = bs;
	op->a0 = round_down(off, bs);
	op->span = (size_t)(round_up(off + len, bs) - op->a0);
}

/* ---- reads ---- */

static void read_finish(struct io_op *op)
{
	size_t lead = (size_t)(op->off - op->a0);

	if (op->err) {
		op->read_cb(op->ctx, op->err, NULL, 0);
	} else if (op->is_short) {
		/* only the raw device's single part can end early */
		size_t got = op->short_bytes > lead ? op->short_bytes - lead : 0;

		op->read_cb(op->ctx, 0, op->buf + lead, got < op->len ? got : op->len);
	} else {
		op->read_cb(op->ctx, 0, op->buf + lead, op->len);
	}
	op_free(op);
}

static void read_part_done(struct eng_req *r, long res)
{
	struct io_part *p = r->priv;

	if (part_finished(p, res))
		read_finish(p->op);
}

void io_map_read(struct io_dev *d, const struct io_map *map, uint64_t off, size_t len,
		 io_read_done cb, void *ctx)
{
	struct io_op *op = op_new(d, io_segs(map, false), ctx);
	unsigned n;

	if (!op) {
		cb(ctx, ENOMEM, NULL, 0);
		return;
	}
	op->read_cb = cb;
	set_span(op, off, len, map->bs);
	op->alloc_len = op->span;
	op->buf = arena_alloc(d->arena, op->alloc_len);
	n = prep_parts(op, 0, map, false, read_part_done);
	if (n == 0) {
		read_finish(op); /* all zeros */
		return;
	}
	submit_parts(op, 0, n);
}

static struct io_map *identity_map(uint64_t off, size_t len, size_t unit)
{
	struct io_map *m = io_map_new((uint32_t)unit);
	struct io_seg s = { 0 };

	if (!m)
		return NULL;
	s.fblk = s.pblk = off / unit;
	s.nblk = (uint32_t)((round_up(off + len, unit) - round_down(off, unit)) / unit);
	io_map_add(&m, &s);
	return m;
}

void io_read(struct io_dev *d, uint64_t off, size_t len, io_read_done cb, void *ctx)
{
	struct io_map *m = identity_map(off, len, d->unit);

	if (!m) {
		cb(ctx, ENOMEM, NULL, 0);
		return;
	}
	/* the map is only needed until the parts are prepared */
	io_map_read(d, m, off, len, cb, ctx);
	free(m);
}

/* ---- writes ---- */

/* Below this size a copy costs less than tying up a receive buffer. */
#define ADOPT_MIN (64u << 10)

/* Whole blocks of data already in a suitable arena buffer are written from
 * where they are, when the buffer's owner gives it up. */
static bool adopt_buffer(struct io_dev *d, const void *data, size_t len)
{
	return d->take_buffer && len >= ADOPT_MIN && (uintptr_t)data % d->unit == 0 &&
	       d->take_buffer(data, len);
}

struct io_wop *io_wop_new(struct io_dev *d, uint64_t off, const void *data, size_t len,
			  uint32_t bs)
{
	/* parts: up to two edge reads, then one write per data segment,
	 * sized when the map is known */
	struct io_op *op = op_new(d, 2, NULL);
	bool partial;

	if (!op)
		return NULL;
	set_span(op, off, len, bs);
	partial = off != op->a0 || op->span != len;
	op->alloc_len = op->span + (partial ? 2 * bs : 0);
	if (!partial && adopt_buffer(d, data, len)) {
		STAT_ADD(writes_in_place, 1);
		op->buf = (char *)data;
		return (struct io_wop *)op;
	}
	op->buf = arena_alloc(d->arena, op->alloc_len);
	memcpy(op->buf + (off - op->a0), data, len);
	return (struct io_wop *)op;
}

void io_wop_cancel(struct io_wop *w)
{
	op_free((struct io_op *)w);
}

static void write_finish(struct io_op *op)
{
	size_t lead = (size_t)(op->off - op->a0);
	int err = op->err;
	size_t wrote = op->len;

	if (!err && op->is_short) {
		/* a short device write: report what reached the device whole */
		if (op->map->n == 1 && op->short_bytes > lead)
			wrote = op->short_bytes - lead < op->len ? op->short_bytes - lead : op->len;
		else
			err = EIO;
	}
	if (op->locked)
		rangelock_release(&op->dev->wlock, &op->lock);
	op->write_cb(op->ctx, err, err ? 0 : wrote);
	op_free(op);
}

static void write_part_done(struct eng_req *r, long res)
{
	struct io_part *p = r->priv;

	if (part_finished(p, res))
		write_finish(p->op);
}

/* Everything is in the buffer: write every segment. */
static void write_segments(struct io_op *op)
{
	unsigned n = prep_parts(op, 2, op->map, true, write_part_done) - 2;

	if (n == 0) {
		write_finish(op);
		return;
	}
	submit_parts(op, 2, n);
}

/* Fill the bytes of the span around the user's data from the edge reads. */
static void merge_edges(struct io_op *op)
{
	size_t bs = op->bs, span = op->span;
	size_t head = (size_t)(op->off - op->a0);
	size_t end = head + op->len;
	char *scratch = op->buf + span;

	if (head)
		memcpy(op->buf, scratch, head);
	if (end < span) {
		/* the tail block is the second scratch block, or the first when
		 * the span is a single block */
		const char *tail = op->nedges == 2 ? scratch + bs : scratch;

		memcpy(op->buf + end, tail + (end - (span - bs)), span - end);
	}
}

static void edge_done(struct eng_req *r, long res)
{
	struct io_part *p = r->priv;
	struct io_op *op = p->op;

	if (res >= 0 && (size_t)res < op->bs)
		res = -EIO;
	if (!part_finished(p, res))
		return;
	if (op->err) {
		write_finish(op);
		return;
	}
	merge_edges(op);
	write_segments(op);
}

/* The partial edge blocks: zero the ones that hold no data yet, list the
 * ones to read. Scratch block i receives edge i. */
static unsigned plan_edges(struct io_op *op)
{
	unsigned to_read = 0;
	size_t bs = op->bs;
	uint64_t head = op->a0 / bs, tail = (op->a0 + op->span) / bs - 1;
	bool head_partial = op->off != op->a0;
	bool tail_partial = op->off + op->len != op->a0 + op->span;
	char *scratch = op->buf + op->span;

	op->nedges = 0;
	if (head_partial)
		op->edge_blk[op->nedges++] = head;
	if (tail_partial && (!head_partial || tail != head))
		op->edge_blk[op->nedges++] = tail;
	for (unsigned i = 0; i < op->nedges; i++) {
		const struct io_seg *s = seg_of(op->map, op->edge_blk[i]);

		if (!s || s->zero) {
			memset(scratch + i * bs, 0, bs);
			continue;
		}
		struct eng_req *r = &op->parts[i].req;

		r->done = edge_done;
		engine_prep_read(r, op->dev->fd, scratch + i * bs, bs,
			      (s->pblk + (op->edge_blk[i] - s->fblk)) * bs);
		to_read |= 1u << i;
	}
	return to_read;
}

void io_wop_start(struct io_wop *w, const struct io_map *map, int rw_flags,
		  io_write_done cb, void *ctx)
{
	struct io_op *op = (struct io_op *)w;
	unsigned nreads = 0, nwrite = io_segs(map, true), to_read;
	struct eng_req *rs[2];

	op->map = map;
	op->rw_flags = rw_flags;
	op->write_cb = cb;
	op->ctx = ctx;
	if (op_size_parts(op, 2 + nwrite)) {
		op->err = ENOMEM;
		write_finish(op);
		return;
	}
	to_read = plan_edges(op);
	for (unsigned i = 0; i < op->nedges; i++)
		if (to_read & (1u << i))
			rs[nreads++] = &op->parts[i].req;
	if (nreads == 0) {
		merge_edges(op);
		write_segments(op);
		return;
	}
	/* only the read parts count until the reads are merged */
	op->parts_left = nreads;
	STAT_ADD(rmw_blocks, nreads);
	engine_submit_batch(op->dev->engine, rs, nreads);
}

static void raw_write_locked(struct rl_entry *e)
{
	struct io_op *op = (struct io_op *)((char *)e - offsetof(struct io_op, lock));

	io_wop_start((struct io_wop *)op, op->own_map, op->rw_flags, op->write_cb, op->ctx);
}

void io_write(struct io_dev *d, uint64_t off, const void *data, size_t len, int rw_flags,
	      io_write_done cb, void *ctx)
{
	struct io_op *op = (struct io_op *)io_wop_new(d, off, data, len, (uint32_t)d->unit);

	if (!op || !(op->own_map = identity_map(off, len, d->unit))) {
		if (op)
			op_free(op);
		cb(ctx, ENOMEM, 0);
		return;
	}
	op->rw_flags = rw_flags;
	op->write_cb = cb;
	op->ctx = ctx;
	op->locked = true;
	op->lock.start = op->a0;
	op->lock.end = op->a0 + op->span;
	op->lock.grant = raw_write_locked;
	if (rangelock_acquire(&d->wlock, &op->lock))
		raw_write_locked(&op->lock);
	else
		STAT_ADD(lock_waits, 1);
}

/* ---- flush ---- */

static void flush_done(struct eng_req *r, long res)
{
	struct io_part *p = r->priv;
	struct io_op *op = p->op;

	op->write_cb(op->ctx, res < 0 ? (int)-res : 0, 0);
	op_free(op);
}

void io_flush(struct io_dev *d, bool datasync, io_write_done cb, void *ctx)
{
	struct io_op *op = op_new(d, 1, ctx);

	if (!op) {
		cb(ctx, ENOMEM, 0);
		return;
	}
	op->write_cb = cb;
	op->parts[0].req.done = flush_done;
	engine_prep_fsync(&op->parts[0].req, d->fd, datasync);
	engine_submit(d->engine, &op->parts[0].req);
}
