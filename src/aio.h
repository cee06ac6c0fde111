/* The AIO engine: kernel AIO contexts of a chosen depth, requests gathered
 * into batched io_submit calls, completions signalled on an eventfd and run by
 * a reaper thread per context. Knows nothing of FUSE or ext4.
 *
 * Batching rule: whichever thread finds no submission under way becomes the
 * submitter and sends everything queued (up to the free queue slots) in one
 * io_submit, looping while more arrived meanwhile. Nothing waits for a timer.
 * When every slot is taken, requests stay queued and the reaper submits them
 * as completions free slots. */
#ifndef KAIOFS_AIO_H
#define KAIOFS_AIO_H

#include <libaio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

struct aio_req;
/* Called once per request, from a reaper thread (or from the submitting
 * thread when io_submit rejects the request): res is the number of bytes
 * transferred (0 for fsync) or a negative errno. */
typedef void (*aio_done_fn)(struct aio_req *r, long res);

struct aio_req {
	struct iocb iocb;
	aio_done_fn done;
	void *priv;               /* the owner's */
	struct aio_req *next;     /* engine queue link */
	uint64_t t_submit;
	size_t done_bytes;        /* bytes already moved by earlier short transfers */
	enum io_kind kind;
};

struct aio_engine;

/* Create nctx contexts of `depth` slots each, with one reaper thread each.
 * Returns NULL with a one-line reason in err on failure. */
struct aio_engine *aio_create(unsigned depth, unsigned nctx, char *err, size_t errlen);
/* Wait until every submitted request has completed and its callback has
 * returned, then stop the reapers and free everything. */
void aio_destroy(struct aio_engine *e);

/* Check that a context of this depth can be set up on this system. */
int aio_probe(unsigned depth, char *err, size_t errlen);

void aio_prep_read(struct aio_req *r, int fd, void *buf, size_t len, uint64_t off);
void aio_prep_write(struct aio_req *r, int fd, const void *buf, size_t len, uint64_t off,
		    int rw_flags);
void aio_prep_fsync(struct aio_req *r, int fd, bool datasync);

/* Queue a prepared request; never fails and never waits for the device. */
void aio_submit(struct aio_engine *e, struct aio_req *r);
/* Queue n requests at once: they go to one context and, queue room
 * permitting, out in one io_submit call. */
void aio_submit_batch(struct aio_engine *e, struct aio_req **rs, unsigned n);
/* Whether no request is queued or in flight at this moment. */
bool aio_idle(struct aio_engine *e);

#endif
