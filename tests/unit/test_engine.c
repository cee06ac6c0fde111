/* Unit tests of the I/O engine, on a scratch file opened with O_DIRECT: the
 * same tests for each kind (test_engine aio, test_engine uring). Request
 * buffers come from an arena that the uring engine registers as fixed
 * buffers, as kaiofs does; the scratch file is its fixed file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "arena.h"
#include "check.h"
#include "engine.h"
#include "stats.h"

#define BS 4096
#define FILE_BLOCKS 1024
#define ARENA_SIZE (48u << 20)

static enum engine_kind kind;
static struct arena *arena;
static int fd_rw, fd_ro;
static char path[] = "/tmp/kaiofs-engine-test-XXXXXX";

/* A request with a completion record. */
struct treq {
	struct eng_req r;
	long res;
	int done;
	char *buf;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int completed;

static void on_done(struct eng_req *r, long res)
{
	struct treq *t = (struct treq *)r;

	pthread_mutex_lock(&mu);
	t->res = res;
	t->done++;
	completed++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void wait_completed(int n)
{
	pthread_mutex_lock(&mu);
	while (completed < n)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static struct engine_config config(unsigned depth, unsigned nctx)
{
	return (struct engine_config){ .kind = kind, .depth = depth, .nctx = nctx,
				       .fixed_base = arena_base(arena),
				       .fixed_len = arena_size(arena), .fixed_fd = fd_rw };
}

static struct engine *engine(unsigned depth, unsigned nctx)
{
	char err[256];
	struct engine_config cfg = config(depth, nctx);
	struct engine *e = engine_create(&cfg, err, sizeof(err));

	if (!e)
		fprintf(stderr, "engine_create(%s): %s\n", engine_kind_name(kind), err);
	CHECK(e != NULL);
	completed = 0;
	return e;
}

/* Memory outside the arena (not registered with a uring engine). */
static char *aligned(size_t len)
{
	void *p = NULL;

	CHECK(posix_memalign(&p, BS, len) == 0);
	return p;
}

static char *arena_buf(size_t len)
{
	char *p = arena_try_alloc(arena, len);

	CHECK(p != NULL);
	return p;
}

static struct treq *reqs(int n)
{
	struct treq *t = calloc((size_t)n, sizeof(*t));

	for (int i = 0; i < n; i++) {
		t[i].buf = arena_buf(BS);
		t[i].r.done = on_done;
	}
	return t;
}

static void free_reqs(struct treq *t, int n)
{
	for (int i = 0; i < n; i++)
		arena_free(arena, t[i].buf, BS);
	free(t);
}

static void test_write_then_read_back(void)
{
	struct engine *e = engine(64, 1);
	struct treq *w = reqs(32), *r = reqs(32);

	for (int i = 0; i < 32; i++) {
		memset(w[i].buf, 'a' + i, BS);
		engine_prep_write(&w[i].r, fd_rw, w[i].buf, BS, (uint64_t)i * BS, 0);
		engine_submit(e, &w[i].r);
	}
	wait_completed(32);
	for (int i = 0; i < 32; i++) {
		CHECK_EQ(w[i].res, BS);
		CHECK_EQ(w[i].done, 1);
		engine_prep_read(&r[i].r, fd_rw, r[i].buf, BS, (uint64_t)i * BS);
		engine_submit(e, &r[i].r);
	}
	wait_completed(64);
	for (int i = 0; i < 32; i++) {
		CHECK_EQ(r[i].res, BS);
		CHECK(memcmp(r[i].buf, w[i].buf, BS) == 0);
	}
	engine_destroy(e);
	free_reqs(w, 32);
	free_reqs(r, 32);
}

static void test_batch_goes_out_in_one_submit(void)
{
	struct engine *e = engine(64, 1);
	struct treq *t = reqs(48);
	struct eng_req *rs[48];
	uint64_t s0 = STAT_GET(submits), i0 = STAT_GET(iocbs);

	for (int i = 0; i < 48; i++) {
		engine_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS);
		rs[i] = &t[i].r;
	}
	engine_submit_batch(e, rs, 48);
	wait_completed(48);
	CHECK_EQ(STAT_GET(submits) - s0, 1);
	CHECK_EQ(STAT_GET(iocbs) - i0, 48);
	engine_destroy(e);
	free_reqs(t, 48);
}

static void test_full_queue_holds_requests_back(void)
{
	struct engine *e = engine(4, 1);
	struct treq *t = reqs(200);
	struct eng_req *rs[200];

	STAT_SET(in_flight_peak, 0);
	STAT_SET(queued_peak, 0);
	for (int i = 0; i < 200; i++) {
		engine_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)(i % FILE_BLOCKS) * BS);
		rs[i] = &t[i].r;
	}
	engine_submit_batch(e, rs, 200);
	wait_completed(200);
	for (int i = 0; i < 200; i++) {
		CHECK_EQ(t[i].res, BS);
		CHECK_EQ(t[i].done, 1);
	}
	CHECK(STAT_GET(in_flight_peak) <= 4);
	CHECK(STAT_GET(queued_peak) >= 196);
	engine_destroy(e);
	CHECK_EQ(STAT_GET(in_flight), 0);
	CHECK_EQ(STAT_GET(queued), 0);
	free_reqs(t, 200);
}

/* Destroying the engine with requests in flight runs every callback first. */
static void test_drain_with_requests_in_flight(void)
{
	for (int round = 0; round < 20; round++) {
		struct engine *e = engine(8, 2);
		struct treq *t = reqs(100);

		for (int i = 0; i < 100; i++) {
			if (i % 2)
				engine_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS);
			else
				engine_prep_write(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS, 0);
			engine_submit(e, &t[i].r);
		}
		engine_destroy(e);
		CHECK_EQ(completed, 100);
		for (int i = 0; i < 100; i++) {
			CHECK_EQ(t[i].done, 1);
			CHECK_EQ(t[i].res, BS);
		}
		free_reqs(t, 100);
	}
}

/* Errors: the kernel refusing one request of a batch (io_submit, or a
 * ring entry that fails at submission) fails that one only; errors reported
 * at completion reach the callback as -errno. */
static void test_errors_reach_their_request(void)
{
	struct engine *e = engine(16, 1);
	struct treq *t = reqs(7);
	struct eng_req *rs[7];
	char *odd = aligned(2 * BS), *odd_fixed = arena_buf(2 * BS);
	uint64_t e0 = STAT_GET(errors);

	engine_prep_read(&t[0].r, fd_rw, t[0].buf, BS, 0);
	engine_prep_write(&t[1].r, fd_ro, t[1].buf, BS, 0, 0);      /* EBADF */
	engine_prep_read(&t[2].r, fd_rw, odd + 1, BS, 0);           /* misaligned: EINVAL */
	engine_prep_read(&t[3].r, fd_rw, t[3].buf, BS, 8 * BS);
	engine_prep_read(&t[4].r, -1, t[4].buf, BS, 0);             /* EBADF */
	engine_prep_read(&t[5].r, fd_rw, odd_fixed + 512, BS, 100); /* misaligned offset */
	engine_prep_write(&t[6].r, fd_rw, t[6].buf, BS, 0, 0x40000000); /* unknown RWF_ */
	for (int i = 0; i < 7; i++)
		rs[i] = &t[i].r;
	engine_submit_batch(e, rs, 7);
	wait_completed(7);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, -EBADF);
	CHECK_EQ(t[2].res, -EINVAL);
	CHECK_EQ(t[3].res, BS);
	CHECK_EQ(t[4].res, -EBADF);
	CHECK_EQ(t[5].res, -EINVAL);
	CHECK(t[6].res == -EOPNOTSUPP || t[6].res == -EINVAL);
	for (int i = 0; i < 7; i++)
		CHECK_EQ(t[i].done, 1);
	CHECK_EQ(STAT_GET(errors) - e0, 5);
	engine_destroy(e);
	free_reqs(t, 7);
	free(odd);
	arena_free(arena, odd_fixed, 2 * BS);
}

/* A read across the end of the file returns what there is; one past it, 0. */
static void test_short_reads_at_end(void)
{
	struct engine *e = engine(16, 1);
	struct treq *t = reqs(2);
	char *big = arena_buf(4 * BS);
	uint64_t end = (uint64_t)FILE_BLOCKS * BS, s0 = STAT_GET(short_io);

	engine_prep_read(&t[0].r, fd_rw, big, 4 * BS, end - BS);
	engine_prep_read(&t[1].r, fd_rw, t[1].buf, BS, end);
	engine_submit(e, &t[0].r);
	engine_submit(e, &t[1].r);
	wait_completed(2);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, 0);
	/* the rest after the short transfer went out again, and found the end */
	CHECK_EQ(STAT_GET(short_io) - s0, 1);
	engine_destroy(e);
	free_reqs(t, 2);
	arena_free(arena, big, 4 * BS);
}

static void test_fsync_and_dsync_writes(void)
{
	struct engine *e = engine(16, 1);
	struct treq *t = reqs(3);

	memset(t[0].buf, 'z', BS);
	engine_prep_write(&t[0].r, fd_rw, t[0].buf, BS, 0, RWF_DSYNC);
	engine_prep_fsync(&t[1].r, fd_rw, true);
	engine_prep_fsync(&t[2].r, fd_rw, false);
	engine_submit(e, &t[0].r);
	wait_completed(1);
	engine_submit(e, &t[1].r);
	engine_submit(e, &t[2].r);
	wait_completed(3);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, 0);
	CHECK_EQ(t[2].res, 0);
	engine_destroy(e);
	free_reqs(t, 3);
}

/* Callbacks may submit follow-up requests from the reaper thread. */
static struct engine *chain_engine;
static int chain_left;

static void chain_done(struct eng_req *r, long res)
{
	CHECK_EQ(res, BS);
	if (__atomic_sub_fetch(&chain_left, 1, __ATOMIC_RELAXED) > 0) {
		engine_submit(chain_engine, r);
		return;
	}
	on_done(r, res);
}

static void test_callbacks_can_resubmit(void)
{
	struct treq *t = reqs(1);

	chain_engine = engine(4, 1);
	chain_left = 500;
	t[0].r.done = chain_done;
	engine_prep_read(&t[0].r, fd_rw, t[0].buf, BS, 0);
	engine_submit(chain_engine, &t[0].r);
	wait_completed(1);
	CHECK_EQ(chain_left, 0);
	engine_destroy(chain_engine);
	free_reqs(t, 1);
}

/* Many threads submitting at once, over several contexts: nothing is lost. */
struct submitter { struct engine *e; struct treq *t; int n; };

static void *submit_many(void *arg)
{
	struct submitter *s = arg;

	for (int i = 0; i < s->n; i++) {
		engine_prep_read(&s->t[i].r, fd_rw, s->t[i].buf, BS, (uint64_t)(i % FILE_BLOCKS) * BS);
		engine_submit(s->e, &s->t[i].r);
	}
	return NULL;
}

static void test_concurrent_submitters(void)
{
	struct engine *e = engine(32, 3);
	struct submitter s[4];
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		s[i] = (struct submitter){ .e = e, .t = reqs(2000), .n = 2000 };
		CHECK(pthread_create(&th[i], NULL, submit_many, &s[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	wait_completed(8000);
	engine_destroy(e);
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 2000; j++) {
			CHECK_EQ(s[i].t[j].done, 1);
			CHECK_EQ(s[i].t[j].res, BS);
		}
		free_reqs(s[i].t, 2000);
	}
}

static void test_probe_rejects_huge_depth(void)
{
	char err[256] = "";
	struct engine_config ok = config(16, 1), huge = config(2000000000u, 1);

	CHECK(engine_probe(&ok, err, sizeof(err)) == 0);
	CHECK(engine_probe(&huge, err, sizeof(err)) < 0);
	CHECK(strchr(err, '\n') == NULL);
	if (kind == ENGINE_AIO) {
		CHECK(strstr(err, "aio-max-nr") != NULL);
	} else {
		CHECK(strstr(err, "at most 32768") != NULL);
		huge = config(32768, 1);
		CHECK(engine_probe(&huge, err, sizeof(err)) == 0);
		huge = config(32769, 1);
		CHECK(engine_probe(&huge, err, sizeof(err)) == -EINVAL);
	}
}

/* The arena full: a thread waiting for buffer space is served when a
 * completion frees a buffer, never before, and its own request then goes
 * out from that buffer. */
struct waiter { struct engine *e; struct treq t; int got_at; };

static void free_on_done(struct eng_req *r, long res)
{
	struct treq *t = (struct treq *)r;
	char *buf = t->buf;

	on_done(r, res);       /* counted before the space is free */
	arena_free(arena, buf, BS);
}

static void *wait_for_space(void *arg)
{
	struct waiter *w = arg;

	w->t.buf = arena_alloc(arena, BS);   /* blocks while the arena is full */
	pthread_mutex_lock(&mu);
	w->got_at = completed;
	pthread_mutex_unlock(&mu);
	w->t.r.done = on_done;
	engine_prep_read(&w->t.r, fd_rw, w->t.buf, BS, 0);
	engine_submit(w->e, &w->t.r);
	return NULL;
}

static void test_full_arena_waits_for_a_completion(void)
{
	size_t n = arena_size(arena) / BS;
	struct engine *e = engine(64, 1);
	struct treq *t = calloc(n, sizeof(*t));
	struct waiter w = { .e = e, .got_at = -1 };
	uint64_t waits0 = STAT_GET(arena_waits);
	pthread_t th;

	for (size_t i = 0; i < n; i++) {
		t[i].buf = arena_buf(BS);
		t[i].r.done = free_on_done;
	}
	CHECK(arena_try_alloc(arena, BS) == NULL);
	CHECK(pthread_create(&th, NULL, wait_for_space, &w) == 0);
	/* the waiter is in line before the first request goes out */
	while (STAT_GET(arena_waits) == waits0)
		sched_yield();
	for (size_t i = 0; i < n; i++) {
		engine_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)(i % FILE_BLOCKS) * BS);
		engine_submit(e, &t[i].r);
	}
	pthread_join(th, NULL);
	wait_completed((int)n + 1);
	CHECK(w.got_at >= 1);
	CHECK_EQ(w.t.res, BS);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(t[i].res, BS);
	engine_destroy(e);
	arena_free(arena, w.t.buf, BS);
	free(t);
	CHECK_EQ(STAT_GET(arena_in_use), 0);
}

/* uring: reads and writes on the arena use its registered buffers, those
 * on other memory plain ones; requests on the registered descriptor use the
 * fixed file. Both work alike. */
static void test_fixed_buffers_and_file(void)
{
	struct engine *e = engine(16, 1);
	struct treq *t = reqs(4);
	char *plain = aligned(BS);
	uint64_t fb0 = STAT_GET(ur_fixed_buffer_ios), ob0 = STAT_GET(ur_other_buffer_ios);
	uint64_t ff0 = STAT_GET(ur_fixed_file_ios);

	memset(t[0].buf, 'f', BS);
	memset(plain, 'p', BS);
	engine_prep_write(&t[0].r, fd_rw, t[0].buf, BS, 3 * BS, 0);
	engine_prep_write(&t[1].r, fd_rw, plain, BS, 4 * BS, 0);
	engine_submit(e, &t[0].r);
	engine_submit(e, &t[1].r);
	wait_completed(2);
	engine_prep_read(&t[2].r, fd_ro, t[2].buf, BS, 4 * BS);   /* not the fixed file */
	engine_prep_read(&t[3].r, fd_rw, t[3].buf, BS, 3 * BS);
	engine_submit(e, &t[2].r);
	engine_submit(e, &t[3].r);
	wait_completed(4);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(t[i].res, BS);
	CHECK(memcmp(t[2].buf, plain, BS) == 0);
	CHECK(memcmp(t[3].buf, t[0].buf, BS) == 0);
	if (kind == ENGINE_URING) {
		CHECK_EQ(STAT_GET(ur_fixed_buffer_ios) - fb0, 3);
		CHECK_EQ(STAT_GET(ur_other_buffer_ios) - ob0, 1);
		CHECK_EQ(STAT_GET(ur_fixed_file_ios) - ff0, 3);
		CHECK_EQ(STAT_GET(ur_rings), 1);
		CHECK_EQ(STAT_GET(ur_registered_bytes), arena_size(arena));
	} else {
		CHECK_EQ(STAT_GET(ur_fixed_buffer_ios) + STAT_GET(ur_fixed_file_ios), 0);
	}
	CHECK(strcmp(kstats.engine, engine_kind_name(kind)) == 0);
	engine_destroy(e);
	CHECK_EQ(STAT_GET(ur_rings), 0);
	free_reqs(t, 4);
	free(plain);
}

int main(int argc, char **argv)
{
	char err[256];
	char *zero;
	int tmp;

	if (argc != 2 || !engine_kind_parse(argv[1], &kind)) {
		fprintf(stderr, "usage: test_engine aio|uring\n");
		return 2;
	}
	arena = arena_create(ARENA_SIZE, BS, err, sizeof(err));
	if (!arena) {
		fprintf(stderr, "arena_create: %s\n", err);
		return 1;
	}
	zero = aligned(BS);
	tmp = mkstemp(path);

	CHECK(tmp >= 0);
	close(tmp);
	fd_rw = open(path, O_RDWR | O_DIRECT);
	fd_ro = open(path, O_RDONLY | O_DIRECT);
	CHECK(fd_rw >= 0 && fd_ro >= 0);
	memset(zero, 0, BS);
	for (int i = 0; i < FILE_BLOCKS; i++)
		CHECK(pwrite(fd_rw, zero, BS, (off_t)i * BS) == BS);
	free(zero);

	RUN(test_write_then_read_back);
	RUN(test_batch_goes_out_in_one_submit);
	RUN(test_full_queue_holds_requests_back);
	RUN(test_drain_with_requests_in_flight);
	RUN(test_errors_reach_their_request);
	RUN(test_short_reads_at_end);
	RUN(test_fsync_and_dsync_writes);
	RUN(test_callbacks_can_resubmit);
	RUN(test_concurrent_submitters);
	RUN(test_probe_rejects_huge_depth);
	RUN(test_full_arena_waits_for_a_completion);
	RUN(test_fixed_buffers_and_file);

	close(fd_rw);
	close(fd_ro);
	unlink(path);
	arena_destroy(arena);
	printf("%s: %d checks passed\n", engine_kind_name(kind), checks_run);
	return 0;
}
