/* The common part of the engines: contexts with their queue, the
 * flat-combining submitter, eventfd-driven reaper threads, short transfers
 * and the drain. The kinds (aio.c, uring.c) make the system calls. */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "util.h"

#define REAP_BATCH 256
#define SUBMIT_BATCH 256

struct eng_ctx {
	struct engine *eng;
	void *kctx;                  /* the kind's context */
	int efd;
	pthread_t reaper;
	bool reaper_started;
	pthread_mutex_t mu;
	pthread_cond_t idle;         /* signalled when in_flight and queue reach 0 */
	struct eng_req *qhead, *qtail;
	unsigned queued, in_flight;
	bool submitting;             /* a thread is inside the submit loop */
	bool stopping;
};

struct engine {
	const struct eng_backend *be;
	enum engine_kind kind;
	unsigned depth, nctx;
	unsigned rr;
	struct eng_ctx *ctxs;
};

static const struct eng_backend *const backends[ENGINE__COUNT] = {
	[ENGINE_AIO] = &aio_backend,
	[ENGINE_URING] = &uring_backend,
};

const char *engine_kind_name(enum engine_kind k)
{
	return k < ENGINE__COUNT ? backends[k]->name : "?";
}

bool engine_kind_parse(const char *s, enum engine_kind *out)
{
	for (unsigned k = 0; k < ENGINE__COUNT; k++) {
		if (strcmp(s, backends[k]->name) == 0) {
			*out = (enum engine_kind)k;
			return true;
		}
	}
	return false;
}

enum engine_kind engine_kind_of(const struct engine *e)
{
	return e->kind;
}

int engine_probe(const struct engine_config *cfg, char *err, size_t errlen)
{
	if (cfg->kind >= ENGINE__COUNT) {
		snprintf(err, errlen, "unknown engine");
		return -EINVAL;
	}
	return backends[cfg->kind]->probe(cfg, err, errlen);
}

static void prep(struct eng_req *r, enum eng_op op, int fd, void *buf, size_t len, uint64_t off)
{
	r->op = op;
	r->fd = fd;
	r->buf = buf;
	r->len = len;
	r->off = off;
	r->rw_flags = 0;
	r->done_bytes = 0;
	r->kind = op == ENG_READ ? IOK_READ : op == ENG_WRITE ? IOK_WRITE : IOK_FSYNC;
}

void engine_prep_read(struct eng_req *r, int fd, void *buf, size_t len, uint64_t off)
{
	prep(r, ENG_READ, fd, buf, len, off);
}

void engine_prep_write(struct eng_req *r, int fd, const void *buf, size_t len, uint64_t off,
		       int rw_flags)
{
	prep(r, ENG_WRITE, fd, (void *)buf, len, off);
	r->rw_flags = rw_flags;
}

void engine_prep_fsync(struct eng_req *r, int fd, bool datasync)
{
	prep(r, datasync ? ENG_FDATASYNC : ENG_FSYNC, fd, NULL, 0, 0);
}

static void finish(struct eng_req *r, long res)
{
	if (res < 0)
		STAT_ADD(errors, 1);
	else
		res += (long)r->done_bytes;
	r->done(r, res);
}

/* Push requests back at the head of the queue, in order. Called locked. */
static void requeue_front(struct eng_ctx *c, struct eng_req **rs, unsigned n)
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
static void submit_loop(struct eng_ctx *c)
{
	struct eng_req *rs[SUBMIT_BATCH];
	unsigned backoff = 0;

	for (;;) {
		unsigned n = 0, free_slots = c->eng->depth - c->in_flight;

		while (c->qhead && n < free_slots && n < SUBMIT_BATCH) {
			struct eng_req *r = c->qhead;

			c->qhead = r->next;
			if (!c->qhead)
				c->qtail = NULL;
			rs[n++] = r;
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
		int ret = c->eng->be->submit(c->kctx, rs, n);

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
		/* The first request was refused: fail it, retry the others. */
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

static void ctx_kick(struct eng_ctx *c)
{
	if (c->submitting || !c->qhead)
		return;
	c->submitting = true;
	submit_loop(c);
}

bool engine_idle(struct engine *e)
{
	for (unsigned i = 0; i < e->nctx; i++) {
		struct eng_ctx *c = &e->ctxs[i];
		bool idle;

		pthread_mutex_lock(&c->mu);
		idle = c->in_flight == 0 && c->queued == 0;
		pthread_mutex_unlock(&c->mu);
		if (!idle)
			return false;
	}
	return true;
}

static void ctx_queue(struct eng_ctx *c, struct eng_req **rs, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		rs[k]->next = k + 1 < n ? rs[k + 1] : NULL;
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

void engine_submit_batch(struct engine *e, struct eng_req **rs, unsigned n)
{
	unsigned i = e->nctx > 1 ? __atomic_fetch_add(&e->rr, 1, __ATOMIC_RELAXED) % e->nctx : 0;

	if (n)
		ctx_queue(&e->ctxs[i], rs, n);
}

void engine_submit(struct engine *e, struct eng_req *r)
{
	engine_submit_batch(e, &r, 1);
}

/* A short read or write: move on past what was transferred and send the
 * rest on the same context. Returns false when the request is finished (end
 * of device, or a remainder that O_DIRECT could not take). */
static bool resubmit_rest(struct eng_ctx *c, struct eng_req *r, long res)
{
	if (r->op != ENG_READ && r->op != ENG_WRITE)
		return false;
	if (res <= 0 || (unsigned long)res >= r->len || res % 512)
		return false;
	STAT_ADD(short_io, 1);
	r->done_bytes += (size_t)res;
	r->buf = (char *)r->buf + res;
	r->len -= (size_t)res;
	r->off += (uint64_t)res;
	ctx_queue(c, &r, 1);
	return true;
}

static void complete_one(struct eng_ctx *c, struct eng_req *r, long res, uint64_t now)
{
	histo_add(&kstats.device_lat[r->kind], now - r->t_submit);
	STAT_ADD(completions, 1);
	if (r->kind != IOK_FSYNC && res >= 0 && (unsigned long)res < r->len) {
		if (res == 0 && r->kind == IOK_WRITE && r->done_bytes == 0)
			res = -EIO; /* a write that moved nothing */
		else if (resubmit_rest(c, r, res))
			return;
	}
	finish(r, res);
}

static void *reaper_main(void *arg)
{
	struct eng_ctx *c = arg;
	struct eng_req *rs[REAP_BATCH];
	long res[REAP_BATCH];

	for (;;) {
		uint64_t cnt;
		ssize_t rd = read(c->efd, &cnt, sizeof(cnt));

		if (rd < 0 && errno == EINTR)
			continue;
		for (;;) {
			int n = c->eng->be->reap(c->kctx, rs, res, REAP_BATCH);

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
				complete_one(c, rs[i], res[i], now);
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

static int ctx_init(struct engine *e, const struct engine_config *cfg, unsigned idx,
		    char *err, size_t errlen)
{
	struct eng_ctx *c = &e->ctxs[idx];
	int r;

	c->eng = e;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->idle, NULL);
	c->efd = eventfd(0, EFD_CLOEXEC);
	if (c->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -errno;
	}
	r = e->be->open(cfg, idx, c->efd, &c->kctx, err, errlen);
	if (r < 0) {
		c->kctx = NULL;
		return r;
	}
	r = pthread_create(&c->reaper, NULL, reaper_main, c);
	if (r) {
		snprintf(err, errlen, "cannot start a reaper thread: %s", strerror(r));
		return -r;
	}
	c->reaper_started = true;
	return 0;
}

static void ctx_stop(struct engine *e, struct eng_ctx *c)
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
	if (c->kctx)
		e->be->close(c->kctx);
	if (c->efd >= 0)
		close(c->efd);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->idle);
}

struct engine *engine_create(const struct engine_config *cfg, char *err, size_t errlen)
{
	struct engine *e;

	if (cfg->kind >= ENGINE__COUNT || !cfg->depth || !cfg->nctx) {
		snprintf(err, errlen, cfg->kind >= ENGINE__COUNT ? "unknown engine"
				      : "queue depth and context count must be at least 1");
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (e)
		e->ctxs = calloc(cfg->nctx, sizeof(*e->ctxs));
	if (!e || !e->ctxs) {
		snprintf(err, errlen, "out of memory");
		free(e);
		return NULL;
	}
	e->be = backends[cfg->kind];
	e->kind = cfg->kind;
	e->depth = cfg->depth;
	kstats.engine = e->be->name;
	for (unsigned i = 0; i < cfg->nctx; i++) {
		e->ctxs[i].efd = -1;
		e->nctx = i + 1;
		if (ctx_init(e, cfg, i, err, errlen) < 0) {
			engine_destroy(e);
			return NULL;
		}
	}
	return e;
}

void engine_destroy(struct engine *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->nctx; i++)
		ctx_stop(e, &e->ctxs[i]);
	free(e->ctxs);
	free(e);
}
