/* The uring engine: an io_uring ring per engine context (liburing), with
 * the arena registered once as fixed buffers and the device as a fixed
 * file, so that reads and writes from the arena neither pin its pages nor
 * look the file up again; one io_uring_enter sends a batch, and the ring's
 * registered eventfd wakes the context's reaper, which takes the
 * completions from the completion queue. */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include "engine_int.h"

#define URING_MAX_ENTRIES 32768u          /* IORING_MAX_ENTRIES */
#define FIXED_CHUNK (1ull << 30)          /* the largest registered buffer */
#define URING_BATCH 256                   /* the most requests engine.c passes at once */

struct uring_kctx {
	struct io_uring ring;
	char *fixed_base;                 /* registered: [fixed_base, +fixed_len) */
	size_t fixed_len;
	int fixed_fd;                     /* registered as file 0, or -1 */
};

static long read_sysctl(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void memlock_text(char *buf, size_t len)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		snprintf(buf, len, "unknown");
	else if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(buf, len, "unlimited");
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)rl.rlim_cur >> 10);
}

/* Why io_uring_setup failed, in one line. */
static int setup_error(unsigned depth, int r, char *err, size_t errlen)
{
	long disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
	char lim[32];

	switch (-r) {
	case EPERM:
	case EACCES:
		if (disabled == 2)
			snprintf(err, errlen, "io_uring is disabled on this system "
				 "(kernel.io_uring_disabled=2): use -o engine=aio, or allow it with "
				 "sysctl kernel.io_uring_disabled=0");
		else if (disabled == 1)
			snprintf(err, errlen, "io_uring is disabled for this process "
				 "(kernel.io_uring_disabled=1 allows it only with CAP_SYS_ADMIN or in "
				 "the group kernel.io_uring_group): use -o engine=aio");
		else
			snprintf(err, errlen, "io_uring_setup is not permitted (%s; a seccomp filter "
				 "or security module forbids io_uring): use -o engine=aio", strerror(-r));
		break;
	case ENOSYS:
		snprintf(err, errlen, "this kernel has no io_uring (io_uring_setup: %s): "
			 "use -o engine=aio", strerror(-r));
		break;
	case ENOMEM:
		memlock_text(lim, sizeof(lim));
		snprintf(err, errlen, "an io_uring ring of queue_depth=%u entries is beyond the "
			 "memlock limit (ulimit -l: %s) or the memory available: lower queue_depth "
			 "or raise the limit", depth, lim);
		break;
	default:
		snprintf(err, errlen, "io_uring_setup(queue_depth=%u) failed: %s", depth,
			 strerror(-r));
	}
	return r;
}

static int ring_init(struct io_uring *ring, unsigned depth, char *err, size_t errlen)
{
	/* every entry of a batch is taken even when one fails at submission
	 * (its completion says why) */
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL };
	int r;

	if (depth > URING_MAX_ENTRIES) {
		snprintf(err, errlen, "queue_depth=%u is more than io_uring allows "
			 "(at most %u entries per ring): lower queue_depth", depth, URING_MAX_ENTRIES);
		return -EINVAL;
	}
	r = io_uring_queue_init_params(depth, ring, &p);
	return r < 0 ? setup_error(depth, r, err, errlen) : 0;
}

static int uring_probe(const struct engine_config *cfg, char *err, size_t errlen)
{
	struct io_uring ring;
	int r = ring_init(&ring, cfg->depth, err, errlen);

	if (r == 0)
		io_uring_queue_exit(&ring);
	return r;
}

/* Register [base, base+len) as fixed buffers of at most FIXED_CHUNK each. */
static int register_buffers(struct uring_kctx *k, const struct engine_config *cfg, unsigned idx,
			    char *err, size_t errlen)
{
	size_t n = (cfg->fixed_len + FIXED_CHUNK - 1) / FIXED_CHUNK;
	struct iovec *iov = calloc(n, sizeof(*iov));
	char lim[32];
	int r;

	if (!iov) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		size_t at = i * FIXED_CHUNK;

		iov[i].iov_base = (char *)cfg->fixed_base + at;
		iov[i].iov_len = cfg->fixed_len - at < FIXED_CHUNK ? cfg->fixed_len - at : FIXED_CHUNK;
	}
	r = io_uring_register_buffers(&k->ring, iov, (unsigned)n);
	free(iov);
	if (r == -ENOMEM) {
		memlock_text(lim, sizeof(lim));
		snprintf(err, errlen, "registering the %zu MiB arena with io_uring ring %u of %u is "
			 "beyond the memlock limit (ulimit -l: %s; each ring registers the whole "
			 "arena): lower arena= or reapers=, or raise the limit",
			 cfg->fixed_len >> 20, idx + 1, cfg->nctx, lim);
	} else if (r < 0) {
		snprintf(err, errlen, "io_uring refused to register the arena as fixed buffers: %s",
			 strerror(-r));
	} else {
		k->fixed_base = cfg->fixed_base;
		k->fixed_len = cfg->fixed_len;
	}
	return r;
}

static int uring_open(const struct engine_config *cfg, unsigned idx, int efd, void **out,
		      char *err, size_t errlen)
{
	struct uring_kctx *k = calloc(1, sizeof(*k));
	int r;

	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	k->fixed_fd = -1;
	r = ring_init(&k->ring, cfg->depth, err, errlen);
	if (r < 0) {
		free(k);
		return r;
	}
	r = io_uring_register_eventfd(&k->ring, efd);
	if (r < 0) {
		snprintf(err, errlen, "io_uring refused to register the completion eventfd: %s",
			 strerror(-r));
		goto fail;
	}
	if (cfg->fixed_base && cfg->fixed_len) {
		r = register_buffers(k, cfg, idx, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (cfg->fixed_fd >= 0) {
		r = io_uring_register_files(&k->ring, &cfg->fixed_fd, 1);
		if (r < 0) {
			snprintf(err, errlen, "io_uring refused to register the device as a fixed "
				 "file: %s", strerror(-r));
			goto fail;
		}
		k->fixed_fd = cfg->fixed_fd;
	}
	if (idx == 0) {
		STAT_SET(ur_sq_entries, k->ring.sq.ring_entries);
		STAT_SET(ur_cq_entries, k->ring.cq.ring_entries);
	}
	STAT_ADD(ur_rings, 1);
	STAT_ADD(ur_registered_bytes, k->fixed_len);
	*out = k;
	return 0;
fail:
	if (k->fixed_len)
		io_uring_unregister_buffers(&k->ring);
	io_uring_queue_exit(&k->ring);
	free(k);
	return r;
}

static void uring_close(void *ctx)
{
	struct uring_kctx *k = ctx;

	STAT_SUB(ur_rings, 1);
	STAT_SUB(ur_registered_bytes, k->fixed_len);
	/* The kernel tears a closed ring down in the background: drop the
	 * registrations first, so that the device file (and its lock) and the
	 * arena's pages are let go before this returns, not after the exit. */
	if (k->fixed_fd >= 0)
		io_uring_unregister_files(&k->ring);
	if (k->fixed_len)
		io_uring_unregister_buffers(&k->ring);
	io_uring_queue_exit(&k->ring);
	free(k);
}

/* The index of the registered buffer holding [buf, buf+len), or -1. */
static int fixed_index(const struct uring_kctx *k, const void *buf, size_t len)
{
	const char *p = buf;
	size_t at, idx;

	if (!k->fixed_len || p < k->fixed_base || p > k->fixed_base + k->fixed_len ||
	    len > (size_t)(k->fixed_base + k->fixed_len - p))
		return -1;
	at = (size_t)(p - k->fixed_base);
	idx = at / FIXED_CHUNK;
	if (at + len > (idx + 1) * FIXED_CHUNK)
		return -1; /* across two registered buffers */
	return (int)idx;
}

/* What an entry uses, noted before it is submitted (once submitted, its
 * request may complete and be gone at any moment). */
enum { USES_FIXED_BUF = 1, USES_OTHER_BUF = 2, USES_FIXED_FILE = 4 };

/* Fill sqe for r; returns what it uses (USES_*). */
static uint8_t to_sqe(struct uring_kctx *k, struct io_uring_sqe *sqe, struct eng_req *r)
{
	bool fixed_file = r->fd >= 0 && r->fd == k->fixed_fd;
	uint8_t uses = 0;
	int fd = fixed_file ? 0 : r->fd;
	int bi = -1;

	switch (r->op) {
	case ENG_READ:
	case ENG_WRITE:
		bi = fixed_index(k, r->buf, r->len);
		if (r->op == ENG_READ && bi >= 0)
			io_uring_prep_read_fixed(sqe, fd, r->buf, (unsigned)r->len, r->off, bi);
		else if (r->op == ENG_READ)
			io_uring_prep_read(sqe, fd, r->buf, (unsigned)r->len, r->off);
		else if (bi >= 0)
			io_uring_prep_write_fixed(sqe, fd, r->buf, (unsigned)r->len, r->off, bi);
		else
			io_uring_prep_write(sqe, fd, r->buf, (unsigned)r->len, r->off);
		if (r->op == ENG_WRITE)
			sqe->rw_flags = r->rw_flags;
		uses |= bi >= 0 ? USES_FIXED_BUF : USES_OTHER_BUF;
		break;
	case ENG_FSYNC:
	case ENG_FDATASYNC:
		io_uring_prep_fsync(sqe, fd, r->op == ENG_FDATASYNC ? IORING_FSYNC_DATASYNC : 0);
		break;
	}
	if (fixed_file) {
		sqe->flags |= IOSQE_FIXED_FILE;
		uses |= USES_FIXED_FILE;
	}
	io_uring_sqe_set_data(sqe, r);
	return uses;
}

/* Add what the first n entries of a batch used to the statistics, once. */
static void count_batch(const uint8_t *uses, unsigned n)
{
	uint64_t fixed_buf = 0, other_buf = 0, fixed_file = 0;

	for (unsigned i = 0; i < n; i++) {
		fixed_buf += !!(uses[i] & USES_FIXED_BUF);
		other_buf += !!(uses[i] & USES_OTHER_BUF);
		fixed_file += !!(uses[i] & USES_FIXED_FILE);
	}
	STAT_ADD(ur_fixed_buffer_ios, fixed_buf);
	STAT_ADD(ur_other_buffer_ios, other_buf);
	STAT_ADD(ur_fixed_file_ios, fixed_file);
}

static int uring_submit(void *ctx, struct eng_req **rs, unsigned n)
{
	struct uring_kctx *k = ctx;
	struct io_uring_sq *sq = &k->ring.sq;
	unsigned head0 = io_uring_smp_load_acquire(sq->khead), took, m = 0;
	uint8_t uses[URING_BATCH];
	int ret;

	/* the submission queue is empty here: engine.c never has more than
	 * queue_depth requests in flight, and each call takes everything */
	for (; m < n && m < URING_BATCH; m++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&k->ring);

		if (!sqe)
			break;
		uses[m] = to_sqe(k, sqe, rs[m]);
	}
	ret = io_uring_submit(&k->ring);
	took = io_uring_smp_load_acquire(sq->khead) - head0;
	if (took < m) {
		/* The kernel stopped early (it could not allocate a request):
		 * take back the entries it left, so that engine.c queues them
		 * again and nothing is submitted twice. One thread at a time
		 * submits and no kernel thread polls this ring, so the tail is
		 * ours to move. */
		unsigned head = head0 + took;

		sq->sqe_head = sq->sqe_tail = head;
		IO_URING_WRITE_ONCE(*sq->ktail, head);
	}
	if (took > 0) {
		count_batch(uses, took);
		return (int)took;
	}
	return ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR ? ret : -EAGAIN;
}

static int uring_reap(void *ctx, struct eng_req **rs, long *res, unsigned max)
{
	struct uring_kctx *k = ctx;
	struct io_uring_cqe *cqes[URING_BATCH];
	unsigned n = io_uring_peek_batch_cqe(&k->ring, cqes, max < URING_BATCH ? max : URING_BATCH);

	for (unsigned i = 0; i < n; i++) {
		rs[i] = io_uring_cqe_get_data(cqes[i]);
		res[i] = cqes[i]->res;
	}
	io_uring_cq_advance(&k->ring, n);
	return (int)n;
}

const struct eng_backend uring_backend = {
	.name = "uring",
	.probe = uring_probe,
	.open = uring_open,
	.close = uring_close,
	.submit = uring_submit,
	.reap = uring_reap,
};
