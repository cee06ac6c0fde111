/* What an engine kind provides to the common part (engine.c): a context's
 * kernel side, one submission system call, and taking completions. The
 * common part keeps the queue, the flat-combining submitter, the reaper
 * threads, short transfers, statistics and the drain. */
#ifndef KAIOFS_ENGINE_INT_H
#define KAIOFS_ENGINE_INT_H

#include "engine.h"

struct eng_backend {
	const char *name;
	/* Check that a context of cfg->depth can be made. */
	int (*probe)(const struct engine_config *cfg, char *err, size_t errlen);
	/* Set up context number idx (of cfg->nctx), signalling completions on
	 * efd; *out is the kind's context. */
	int (*open)(const struct engine_config *cfg, unsigned idx, int efd, void **out,
		    char *err, size_t errlen);
	void (*close)(void *ctx);
	/* One system call for rs[0..n): returns how many the kernel took (the
	 * first ones, > 0); 0 or -EAGAIN when it took none for want of
	 * resources; another negative errno when it refused rs[0]. Called by
	 * one thread at a time per context. */
	int (*submit)(void *ctx, struct eng_req **rs, unsigned n);
	/* Up to max completions without waiting: their requests and results. */
	int (*reap)(void *ctx, struct eng_req **rs, long *res, unsigned max);
};

extern const struct eng_backend aio_backend;
extern const struct eng_backend uring_backend;

#endif
