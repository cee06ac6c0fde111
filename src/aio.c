#include "aio.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define REAP_BATCH 256
#define SUBMIT_BATCH 256

struct aio_ctx {
	struct aio_engine *eng;
	io_context_t ctx;
	int efd;
	pthread_t reaper;
	bool reaper_started;
	pthread_mutex_t mu;
	pthread_cond_t idle;         /* signalled when in_flight and queue reach 0 */
	struct aio_req *qhead, *qtail;
	unsigned queued, in_flight;
	bool submitting;             /* a thread is inside the submit loop */
	bool stopping;
};

struct aio_engine {
	unsigned depth, nctx;
	unsigned rr;
	struct aio_ctx *ctxs;
};

static unsigned long aio_max_nr(void)
{
	unsigned long v = 0;
	FILE *f = fopen("/proc/sys/fs/aio-max-nr", "r");

	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

int aio_probe(unsigned depth, char *err, size_t errlen)
{
	io_context_t ctx = 0;
	int r = io_setup((int)depth, &ctx);

	if (r < 0) {
		/* EAGAIN: over the system-wide limit; EINVAL: beyond any limit */
		if (r == -EAGAIN || r == -EINVAL)
			snprintf(err, errlen,
				 "queue_depth=%u is more than this system allows (fs.aio-max-nr is %lu, "
				 "shared by all processes): lower queue_depth or raise /proc/sys/fs/aio-max-nr",
				 depth, aio_max_nr());
		else
			snprintf(err, errlen, "io_setup(queue_depth=%u) failed: %s", depth, strerror(-r));
		return r;
	}
	io_destroy(ctx);
	return 0;
}

void aio_prep_read(struct aio_req *r, int fd, void *buf, size_t len, uint64_t off)
{
	io_prep_pread(&r->iocb, fd, buf, len, (long long)off);
	r->kind = IOK_READ;
	r->done_bytes = 0;
}

void aio_prep_write(struct aio_req *r, int fd, const void *buf, size_t len, uint64_t off,
		    int rw_flags)
{
	io_prep_pwrite(&r->iocb, fd, (void *)buf, len, (long long)off);
	r->iocb.aio_rw_flags = rw_flags;
	r->kind = IOK_WRITE;
	r->done_bytes = 0;
}

void aio_prep_fsync(struct aio_req *r, int fd, bool datasync)
{
	if (datasync)
		io_prep_fdsync(&r->iocb, fd);
	else
		io_prep_fsync(&r->iocb, fd);
	r->kind = IOK_FSYNC;
	r->done_bytes = 0;
}

static void finish(struct aio_req *r, long res)
{
	if (res < 0)
		STAT_ADD(errors, 1);
	else
		res += (long)r->done_bytes;
	r->done(r, res);
}

/* Push requests back at the head of the queue, in order. Called locked. */
static void requeue_front(struct aio_ctx *c, struct aio_req **rs, unsigned n)
{
	for (unsigned i = n; i-- > 0;) {
		rs[i]->next = c->qhead;
		c->qhead = rs[i];
		if (!c->qtail)
			c->qtail = rs[i];
	}
	c->queued += n;
	c->in_flight -= n;
	STAT_ADD(queued, n);
	STAT_SUB(in_flight, n);
}

/* The submit loop. Called with c->mu held and c->submitting set; returns with
 * c->mu held and c->submitting cleared. */
static void submit_loop(struct aio_ctx *c)
{
	struct aio_req *rs[SUBMIT_BATCH];
	struct iocb *iocbs[SUBMIT_BATCH];
	unsigned backoff = 0;

	for (;;) {
		unsigned n = 0, free_slots = c->eng->depth - c->in_flight;

		while (c->qhead && n < free_slots && n < SUBMIT_BATCH) {
			struct aio_req *r = c->qhead;

			c->qhead = r->next;
			if (!c->qhead)
				c->qtail = NULL;
			rs[n] = r;
			iocbs[n] = &r->iocb;
			n++;
		}
		if (n == 0)
			break;
		c->queued -= n;
		c->in_flight += n;
		STAT_SUB(queued, n);
		stat_gauge_add(&kstats.in_flight, &kstats.in_flight_peak, n);
		pthread_mutex_unlock(&c->mu);

		uint64_t t = now_ns();
		for (unsigned i = 0; i < n; i++)
			rs[i]->t_submit = t;
		int ret = io_submit(c->ctx, (long)n, iocbs);

		pthread_mutex_lock(&c->mu);
		if (ret > 0) {
			STAT_ADD(submits, 1);
			STAT_ADD(iocbs, (uint64_t)ret);
			backoff = 0;
			if ((unsigned)ret < n)
				requeue_front(c, rs + ret, n - (unsigned)ret);
			continue;
		}
		if (ret == -EAGAIN || ret == 0) {
			/* Out of kernel resources: retry once completions free some;
			 * with nothing in flight, back off briefly and retry. */
			STAT_ADD(eagain, 1);
			requeue_front(c, rs, n);
			if (c->in_flight > 0)
				break;
			pthread_mutex_unlock(&c->mu);
			struct timespec ts = { 0, 1000L << (backoff < 10 ? backoff++ : 10) };
			nanosleep(&ts, NULL);
			pthread_mutex_lock(&c->mu);
			continue;
		}
		/* The first iocb was refused: fail it, retry the others. */
		requeue_front(c, rs + 1, n - 1);
		c->in_flight--;
		STAT_SUB(in_flight, 1);
		pthread_mutex_unlock(&c->mu);
		finish(rs[0], ret);
		pthread_mutex_lock(&c->mu);
		if (c->in_flight == 0 && c->queued == 0)
			pthread_cond_broadcast(&c->idle);
	}
	c->submitting = false;
	if (c->in_flight == 0 && c->queued == 0)
		pthread_cond_broadcast(&c->idle);
}

static void ctx_kick(struct aio_ctx *c)
{
	if (c->submitting || !c->qhead)
		return;
	c->submitting = true;
	submit_loop(c);
}

bool aio_idle(struct aio_engine *e)
{
	for (unsigned i = 0; i < e->nctx; i++) {
		struct aio_ctx *c = &e->ctxs[i];
		bool idle;

		pthread_mutex_lock(&c->mu);
		idle = c->in_flight == 0 && c->queued == 0;
		pthread_mutex_unlock(&c->mu);
		if (!idle)
			return false;
	}
	return true;
}

void aio_submit_batch(struct aio_engine *e, struct aio_req **rs, unsigned n)
{
	unsigned i = e->nctx > 1 ? __atomic_fetch_add(&e->rr, 1, __ATOMIC_RELAXED) % e->nctx : 0;
	struct aio_ctx *c = &e->ctxs[i];

	if (n == 0)
		return;
	for (unsigned k = 0; k < n; k++) {
		io_set_eventfd(&rs[k]->iocb, c->efd);
		rs[k]->iocb.data = rs[k];
		rs[k]->next = k + 1 < n ? rs[k + 1] : NULL;
	}
	pthread_mutex_lock(&c->mu);
	if (c->qtail)
		c->qtail->next = rs[0];
	else
		c->qhead = rs[0];
	c->qtail = rs[n - 1];
	c->queued += n;
	stat_gauge_add(&kstats.queued, &kstats.queued_peak, n);
	ctx_kick(c);
	pthread_mutex_unlock(&c->mu);
}

void aio_submit(struct aio_engine *e, struct aio_req *r)
{
	aio_submit_batch(e, &r, 1);
}

/* A short read or write: move on past what was transferred and resubmit.
 * Returns false when the request is finished (end of device, or a remainder
 * that O_DIRECT could not take). */
static bool resubmit_rest(struct aio_ctx *c, struct aio_req *r, long res)
{
	struct iocb *io = &r->iocb;

	if (io->aio_lio_opcode != IO_CMD_PREAD && io->aio_lio_opcode != IO_CMD_PWRITE)
		return false;
	if (res <= 0 || (unsigned long)res >= io->u.c.nbytes || res % 512)
		return false;
	STAT_ADD(short_io, 1);
	r->done_bytes += (size_t)res;
	io->u.c.buf = (char *)io->u.c.buf + res;
	io->u.c.nbytes -= (unsigned long)res;
	io->u.c.offset += res;
	aio_submit(c->eng, r);
	return true;
}

static void complete_one(struct aio_ctx *c, struct io_event *ev, uint64_t now)
{
	struct aio_req *r = ev->data;
	long res = (long)ev->res;

	histo_add(&kstats.device_lat[r->kind], now - r->t_submit);
	STAT_ADD(completions, 1);
	if (r->kind != IOK_FSYNC && res >= 0 && (unsigned long)res < r->iocb.u.c.nbytes) {
		if (res == 0 && r->kind == IOK_WRITE && r->done_bytes == 0)
			res = -EIO; /* a write that moved nothing */
		else if (resubmit_rest(c, r, res))
			return;
	}
	finish(r, res);
}

static void *reaper_main(void *arg)
{
	struct aio_ctx *c = arg;
	struct io_event evs[REAP_BATCH];
	struct timespec zero = { 0, 0 };

	for (;;) {
		uint64_t cnt;
		ssize_t rd = read(c->efd, &cnt, sizeof(cnt));

		if (rd < 0 && errno == EINTR)
			continue;
		for (;;) {
			int n = io_getevents(c->ctx, 0, REAP_BATCH, evs, &zero);

			if (n <= 0)
				break;
			uint64_t now = now_ns();

			/* the slots are free before the callbacks run: a reply lets the
			 * application send its next request at once */
			pthread_mutex_lock(&c->mu);
			c->in_flight -= (unsigned)n;
			STAT_SUB(in_flight, (uint64_t)n);
			pthread_mutex_unlock(&c->mu);
			for (int i = 0; i < n; i++)
				complete_one(c, &evs[i], now);
			pthread_mutex_lock(&c->mu);
			ctx_kick(c);
			if (c->in_flight == 0 && c->queued == 0)
				pthread_cond_broadcast(&c->idle);
			pthread_mutex_unlock(&c->mu);
			if (n < REAP_BATCH)
				break;
		}
		pthread_mutex_lock(&c->mu);
		bool done = c->stopping && c->in_flight == 0 && c->queued == 0;
		pthread_mutex_unlock(&c->mu);
		if (done)
			return NULL;
	}
}

static int ctx_init(struct aio_engine *e, struct aio_ctx *c, char *err, size_t errlen)
{
	int r;

	c->eng = e;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->idle, NULL);
	c->efd = eventfd(0, EFD_CLOEXEC);
	if (c->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -errno;
	}
	r = io_setup((int)e->depth, &c->ctx);
	if (r < 0) {
		c->ctx = 0;
		return aio_probe(e->depth, err, errlen) ?: r;
	}
	r = pthread_create(&c->reaper, NULL, reaper_main, c);
	if (r) {
		snprintf(err, errlen, "cannot start a reaper thread: %s", strerror(r));
		return -r;
	}
	c->reaper_started = true;
	return 0;
}

static void ctx_stop(struct aio_ctx *c)
{
	uint64_t one = 1;

	if (c->reaper_started) {
		pthread_mutex_lock(&c->mu);
		while (c->in_flight || c->queued || c->submitting)
			pthread_cond_wait(&c->idle, &c->mu);
		c->stopping = true;
		pthread_mutex_unlock(&c->mu);
		if (write(c->efd, &one, sizeof(one)) < 0)
			abort();
		pthread_join(c->reaper, NULL);
	}
	if (c->ctx)
		io_destroy(c->ctx);
	if (c->efd >= 0)
		close(c->efd);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->idle);
}

struct aio_engine *aio_create(unsigned depth, unsigned nctx, char *err, size_t errlen)
{
	struct aio_engine *e = calloc(1, sizeof(*e));

	if (!e || !depth || !nctx) {
		snprintf(err, errlen, e ? "queue depth and context count must be at least 1"
					: "out of memory");
		free(e);
		return NULL;
	}
	e->depth = depth;
	e->ctxs = calloc(nctx, sizeof(*e->ctxs));
	if (!e->ctxs) {
		snprintf(err, errlen, "out of memory");
		free(e);
		return NULL;
	}
	for (unsigned i = 0; i < nctx; i++) {
		e->ctxs[i].efd = -1;
		e->nctx = i + 1;
		if (ctx_init(e, &e->ctxs[i], err, errlen) < 0) {
			aio_destroy(e);
			return NULL;
		}
	}
	return e;
}

void aio_destroy(struct aio_engine *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->nctx; i++)
		ctx_stop(&e->ctxs[i]);
	free(e->ctxs);
	free(e);
}
