/* The I/O engine: requests on a device descriptor gathered into batched
 * submissions to the kernel, completions signalled on an eventfd and run by a
 * reaper thread per context. Two kinds share this interface and everything
 * but the system calls: `aio` (Linux kernel AIO, io_submit) and `uring`
 * (io_uring through liburing, with the bounce buffers registered as fixed
 * buffers and the device as a fixed file). Knows nothing of FUSE or ext4.
 *
 * Batching rule: whichever thread finds no submission under way becomes the
 * submitter and sends everything queued (up to the free queue slots) in one
 * system call (io_submit, or io_uring_enter), looping while more arrived
 * meanwhile. Nothing waits for a timer. When every slot is taken, requests
 * stay queued and the reaper submits them as completions free slots.
 *
 * A request's buffer belongs to the kernel from its submission until its
 * callback runs; destroying the engine first waits for every callback. */
#ifndef KAIOFS_ENGINE_H
#define KAIOFS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

enum engine_kind { ENGINE_AIO, ENGINE_URING, ENGINE__COUNT };

/* "aio", "uring" */
const char *engine_kind_name(enum engine_kind k);
/* Parse an engine name; false when it is none of them. */
bool engine_kind_parse(const char *s, enum engine_kind *out);

struct engine_config {
	enum engine_kind kind;
	unsigned depth;           /* queue slots of each context */
	unsigned nctx;            /* contexts, each with its own reaper thread */
	/* uring: memory registered once as fixed buffers (the arena) and the
	 * descriptor registered as a fixed file; requests on other memory or
	 * descriptors work too, without those savings. NULL / -1: none. */
	void *fixed_base;
	size_t fixed_len;
	int fixed_fd;
};

struct eng_req;
/* Called once per request, from a reaper thread (or from the submitting
 * thread when the kernel refuses the request at submission): res is the
 * number of bytes transferred (0 for fsync) or a negative errno. */
typedef void (*eng_done_fn)(struct eng_req *r, long res);

enum eng_op { ENG_READ, ENG_WRITE, ENG_FSYNC, ENG_FDATASYNC };

struct eng_req {
	eng_done_fn done;
	void *priv;               /* the owner's */
	/* set by the prep functions; the engine advances buf, len and off
	 * past a short transfer before it sends the rest */
	void *buf;
	size_t len;
	uint64_t off;
	int fd;
	int rw_flags;             /* RWF_* of a write */
	enum eng_op op;
	enum io_kind kind;
	/* the engine's */
	struct eng_req *next;     /* queue link */
	uint64_t t_submit;
	size_t done_bytes;        /* bytes already moved by earlier short transfers */
};

struct engine;

/* Create the engine of cfg->kind. Returns NULL with a one-line reason in
 * err on failure. */
struct engine *engine_create(const struct engine_config *cfg, char *err, size_t errlen);
/* Wait until every submitted request has completed and its callback has
 * returned, then stop the reapers and free everything. */
void engine_destroy(struct engine *e);
/* Check that a context of cfg->kind and cfg->depth can be set up on this
 * system (nothing is registered); 0, or a negative errno with a one-line
 * reason in err. */
int engine_probe(const struct engine_config *cfg, char *err, size_t errlen);
enum engine_kind engine_kind_of(const struct engine *e);

void engine_prep_read(struct eng_req *r, int fd, void *buf, size_t len, uint64_t off);
void engine_prep_write(struct eng_req *r, int fd, const void *buf, size_t len, uint64_t off,
		       int rw_flags);
void engine_prep_fsync(struct eng_req *r, int fd, bool datasync);

/* Queue a prepared request; never fails and never waits for the device. */
void engine_submit(struct engine *e, struct eng_req *r);
/* Queue n requests at once: they go to one context and, queue room
 * permitting, out in one system call. */
void engine_submit_batch(struct engine *e, struct eng_req **rs, unsigned n);
/* Whether no request is queued or in flight at this moment. */
bool engine_idle(struct engine *e);

#endif
