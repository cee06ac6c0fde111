#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "arena.h"
#include "stats.h"
#include "util.h"

/* One operation in flight. */
struct io_op {
	struct io_dev *dev;
	struct aio_req main;         /* the read, the write or the flush */
	struct aio_req edge[2];      /* read-modify-write reads of edge blocks */
	struct rl_entry lock;
	char *buf;                   /* arena buffer: the aligned span, then edge scratch */
	size_t buf_len;              /* the span */
	size_t alloc_len;
	uint64_t off, a0, a1;        /* user range start; aligned span [a0, a1) */
	size_t len;
	int rw_flags;
	unsigned nedges;
	unsigned edges_left;         /* edge reads not yet completed */
	int edge_err;
	io_read_done read_cb;
	io_write_done write_cb;
	void *ctx;
};


void io_dev_init(struct io_dev *d, int fd, uint64_t size, size_t unit,
		 struct aio_engine *aio, struct arena *arena)
{
	memset(d, 0, sizeof(*d));
	d->fd = fd;
	d->size = size;
	d->unit = unit;
	d->aio = aio;
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
	size_t max = arena_size(d->arena) / 2 - 3 * d->unit;

	return max < (16u << 20) ? max : (16u << 20);
}

static struct io_op *op_new(struct io_dev *d, void *ctx)
{
	struct io_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->dev = d;
	op->ctx = ctx;
	op->main.priv = op->edge[0].priv = op->edge[1].priv = op;
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
	free(op);
	pthread_mutex_lock(&d->mu);
	if (--d->pending == 0)
		pthread_cond_broadcast(&d->idle);
	pthread_mutex_unlock(&d->mu);
}

static void op_span(struct io_op *op, uint64_t off, size_t len)
{
	op->off = off;
	op->len = len;
	op->a0 = round_down(off, op->dev->unit);
	op->a1 = round_up(off + len, op->dev->unit);
}

/* ---- read ---- */

static void read_done(struct aio_req *r, long res)
{
	struct io_op *op = r->priv;
	size_t lead = (size_t)(op->off - op->a0);

	if (res < 0) {
		op->read_cb(op->ctx, (int)-res, NULL, 0);
	} else {
		size_t got = (size_t)res > lead ? (size_t)res - lead : 0;

		op->read_cb(op->ctx, 0, op->buf + lead, got < op->len ? got : op->len);
	}
	op_free(op);
}

void io_read(struct io_dev *d, uint64_t off, size_t len, io_read_done cb, void *ctx)
{
	struct io_op *op = op_new(d, ctx);

	if (!op) {
		cb(ctx, ENOMEM, NULL, 0);
		return;
	}
	op->read_cb = cb;
	op_span(op, off, len);
	op->buf_len = op->alloc_len = (size_t)(op->a1 - op->a0);
	op->buf = arena_alloc(d->arena, op->alloc_len);
	op->main.done = read_done;
	aio_prep_read(&op->main, d->fd, op->buf, op->buf_len, op->a0);
	aio_submit(d->aio, &op->main);
}

/* ---- write ---- */

static void write_done(struct aio_req *r, long res)
{
	struct io_op *op = r->priv;
	size_t lead = (size_t)(op->off - op->a0);
	int err = 0;
	size_t wrote = 0;

	if (res < 0)
		err = (int)-res;
	else if ((size_t)res < op->buf_len)
		/* a short device write: report what reached the device whole */
		wrote = (size_t)res > lead ? (size_t)res - lead : 0;
	else
		wrote = op->len;
	if (!err && !wrote)
		err = EIO;
	rangelock_release(&op->dev->wlock, &op->lock);
	op->write_cb(op->ctx, err, wrote);
	op_free(op);
}

static void submit_span_write(struct io_op *op)
{
	op->main.done = write_done;
	aio_prep_write(&op->main, op->dev->fd, op->buf, op->buf_len, op->a0, op->rw_flags);
	aio_submit(op->dev->aio, &op->main);
}

/* Both edge blocks are in scratch: fill the bytes around the user's data. */
static void merge_edges(struct io_op *op)
{
	size_t unit = op->dev->unit, span = op->buf_len;
	size_t head = (size_t)(op->off - op->a0);
	size_t end = head + op->len;             /* user data ends here in buf */
	char *scratch = op->buf + span;

	if (head)
		memcpy(op->buf, scratch, head);
	if (end < span) {
		/* the tail block is the second scratch block, or the first when
		 * the span is a single block */
		const char *tail = op->nedges == 2 ? scratch + unit : scratch;
		size_t tail_block = span - unit;

		memcpy(op->buf + end, tail + (end - tail_block), span - end);
	}
}

static void edge_done(struct aio_req *r, long res)
{
	struct io_op *op = r->priv;

	if (res < 0)
		__atomic_store_n(&op->edge_err, (int)-res, __ATOMIC_RELAXED);
	else if ((size_t)res < op->dev->unit)
		__atomic_store_n(&op->edge_err, EIO, __ATOMIC_RELAXED);
	if (__atomic_sub_fetch(&op->edges_left, 1, __ATOMIC_ACQ_REL))
		return;
	if (op->edge_err) {
		rangelock_release(&op->dev->wlock, &op->lock);
		op->write_cb(op->ctx, op->edge_err, 0);
		op_free(op);
		return;
	}
	merge_edges(op);
	submit_span_write(op);
}

/* The span is ours: read the partial edge blocks, or write right away. */
static void write_locked(struct rl_entry *e)
{
	struct io_op *op = (struct io_op *)((char *)e - offsetof(struct io_op, lock));
	size_t unit = op->dev->unit, span = op->buf_len;
	uint64_t edge_off[2];
	unsigned n = 0;

	if (op->off != op->a0)
		edge_off[n++] = op->a0;
	if (op->off + op->len != op->a1 && (n == 0 || op->a1 - unit != op->a0))
		edge_off[n++] = op->a1 - unit;
	if (n == 0) {
		submit_span_write(op);
		return;
	}
	op->nedges = n;
	op->edges_left = n;
	STAT_ADD(rmw_blocks, n);
	struct aio_req *reqs[2];
	for (unsigned i = 0; i < n; i++) {
		op->edge[i].done = edge_done;
		aio_prep_read(&op->edge[i], op->dev->fd, op->buf + span + i * unit, unit, edge_off[i]);
		reqs[i] = &op->edge[i];
	}
	aio_submit_batch(op->dev->aio, reqs, n);
}

void io_write(struct io_dev *d, uint64_t off, const void *data, size_t len, int rw_flags,
	      io_write_done cb, void *ctx)
{
	struct io_op *op = op_new(d, ctx);
	size_t span;
	bool partial;

	if (!op) {
		cb(ctx, ENOMEM, 0);
		return;
	}
	op->write_cb = cb;
	op->rw_flags = rw_flags;
	op_span(op, off, len);
	span = (size_t)(op->a1 - op->a0);
	partial = off != op->a0 || off + len != op->a1;
	op->buf_len = span;
	/* scratch room for up to two edge blocks behind the span */
	op->alloc_len = span + (partial ? 2 * d->unit : 0);
	op->buf = arena_alloc(d->arena, op->alloc_len);
	memcpy(op->buf + (off - op->a0), data, len);
	op->lock.start = op->a0;
	op->lock.end = op->a1;
	op->lock.grant = write_locked;
	if (rangelock_acquire(&d->wlock, &op->lock))
		write_locked(&op->lock);
	else
		STAT_ADD(lock_waits, 1);
}

/* ---- flush ---- */

static void flush_done(struct aio_req *r, long res)
{
	struct io_op *op = r->priv;

	op->write_cb(op->ctx, res < 0 ? (int)-res : 0, 0);
	op_free(op);
}

void io_flush(struct io_dev *d, bool datasync, io_write_done cb, void *ctx)
{
	struct io_op *op = op_new(d, ctx);

	if (!op) {
		cb(ctx, ENOMEM, 0);
		return;
	}
	op->write_cb = cb;
	op->main.done = flush_done;
	aio_prep_fsync(&op->main, d->fd, datasync);
	aio_submit(d->aio, &op->main);
}
