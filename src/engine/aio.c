/* The aio engine: a Linux kernel AIO context per engine context, io_submit
 * for a batch, completions read with io_getevents after the eventfd set in
 * each iocb fires. */
#include <errno.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

#define AIO_BATCH 256   /* the most requests engine.c passes at once */

struct aio_kctx {
	io_context_t ctx;
	int efd;
	/* the iocbs of one io_submit: the kernel copies them in the call, and
	 * one thread at a time submits on a context */
	struct iocb iocbs[AIO_BATCH];
	struct iocb *ptrs[AIO_BATCH];
	struct io_event evs[AIO_BATCH];
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

static int setup_error(unsigned depth, int r, char *err, size_t errlen)
{
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

static int aio_probe(const struct engine_config *cfg, char *err, size_t errlen)
{
	io_context_t ctx = 0;
	int r = io_setup((int)cfg->depth, &ctx);

	if (r < 0)
		return setup_error(cfg->depth, r, err, errlen);
	io_destroy(ctx);
	return 0;
}

static int aio_open(const struct engine_config *cfg, unsigned idx, int efd, void **out,
		    char *err, size_t errlen)
{
	struct aio_kctx *k = calloc(1, sizeof(*k));
	int r;

	(void)idx;
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = io_setup((int)cfg->depth, &k->ctx);
	if (r < 0) {
		free(k);
		return setup_error(cfg->depth, r, err, errlen);
	}
	k->efd = efd;
	for (unsigned i = 0; i < AIO_BATCH; i++)
		k->ptrs[i] = &k->iocbs[i];
	*out = k;
	return 0;
}

static void aio_close(void *ctx)
{
	struct aio_kctx *k = ctx;

	io_destroy(k->ctx);
	free(k);
}

static void to_iocb(struct iocb *io, struct eng_req *r, int efd)
{
	switch (r->op) {
	case ENG_READ:
		io_prep_pread(io, r->fd, r->buf, r->len, (long long)r->off);
		break;
	case ENG_WRITE:
		io_prep_pwrite(io, r->fd, r->buf, r->len, (long long)r->off);
		io->aio_rw_flags = r->rw_flags;
		break;
	case ENG_FSYNC:
		io_prep_fsync(io, r->fd);
		break;
	case ENG_FDATASYNC:
		io_prep_fdsync(io, r->fd);
		break;
	}
	io_set_eventfd(io, efd);
	io->data = r;
}

static int aio_submit(void *ctx, struct eng_req **rs, unsigned n)
{
	struct aio_kctx *k = ctx;

	if (n > AIO_BATCH)
		n = AIO_BATCH;
	for (unsigned i = 0; i < n; i++)
		to_iocb(&k->iocbs[i], rs[i], k->efd);
	return io_submit(k->ctx, (long)n, k->ptrs);
}

static int aio_reap(void *ctx, struct eng_req **rs, long *res, unsigned max)
{
	struct aio_kctx *k = ctx;
	struct timespec zero = { 0, 0 };
	int n = io_getevents(k->ctx, 0, max < AIO_BATCH ? (long)max : AIO_BATCH, k->evs, &zero);

	for (int i = 0; i < n; i++) {
		rs[i] = k->evs[i].data;
		res[i] = (long)k->evs[i].res;
	}
	return n;
}

const struct eng_backend aio_backend = {
	.name = "aio",
	.probe = aio_probe,
	.open = aio_open,
	.close = aio_close,
	.submit = aio_submit,
	.reap = aio_reap,
};
