/* Unit tests of the AIO engine, on a scratch file opened with O_DIRECT. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aio.h"
#include "check.h"
#include "stats.h"

#define BS 4096
#define FILE_BLOCKS 1024

static int fd_rw, fd_ro;
static char path[] = "/tmp/kaiofs-aio-test-XXXXXX";

/* A request with a completion record. */
struct treq {
	struct aio_req r;
	long res;
	int done;
	char *buf;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int completed;

static void on_done(struct aio_req *r, long res)
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

static struct aio_engine *engine(unsigned depth, unsigned nctx)
{
	char err[256];
	struct aio_engine *e = aio_create(depth, nctx, err, sizeof(err));

	if (!e)
		fprintf(stderr, "aio_create: %s\n", err);
	CHECK(e != NULL);
	completed = 0;
	return e;
}

static char *aligned(size_t len)
{
	void *p = NULL;

	CHECK(posix_memalign(&p, BS, len) == 0);
	return p;
}

static struct treq *reqs(int n)
{
	struct treq *t = calloc((size_t)n, sizeof(*t));

	for (int i = 0; i < n; i++) {
		t[i].buf = aligned(BS);
		t[i].r.done = on_done;
	}
	return t;
}

static void free_reqs(struct treq *t, int n)
{
	for (int i = 0; i < n; i++)
		free(t[i].buf);
	free(t);
}

static void test_write_then_read_back(void)
{
	struct aio_engine *e = engine(64, 1);
	struct treq *w = reqs(32), *r = reqs(32);

	for (int i = 0; i < 32; i++) {
		memset(w[i].buf, 'a' + i, BS);
		aio_prep_write(&w[i].r, fd_rw, w[i].buf, BS, (uint64_t)i * BS, 0);
		aio_submit(e, &w[i].r);
	}
	wait_completed(32);
	for (int i = 0; i < 32; i++) {
		CHECK_EQ(w[i].res, BS);
		CHECK_EQ(w[i].done, 1);
		aio_prep_read(&r[i].r, fd_rw, r[i].buf, BS, (uint64_t)i * BS);
		aio_submit(e, &r[i].r);
	}
	wait_completed(64);
	for (int i = 0; i < 32; i++) {
		CHECK_EQ(r[i].res, BS);
		CHECK(memcmp(r[i].buf, w[i].buf, BS) == 0);
	}
	aio_destroy(e);
	free_reqs(w, 32);
	free_reqs(r, 32);
}

static void test_batch_goes_out_in_one_submit(void)
{
	struct aio_engine *e = engine(64, 1);
	struct treq *t = reqs(48);
	struct aio_req *rs[48];
	uint64_t s0 = STAT_GET(submits), i0 = STAT_GET(iocbs);

	for (int i = 0; i < 48; i++) {
		aio_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS);
		rs[i] = &t[i].r;
	}
	aio_submit_batch(e, rs, 48);
	wait_completed(48);
	CHECK_EQ(STAT_GET(submits) - s0, 1);
	CHECK_EQ(STAT_GET(iocbs) - i0, 48);
	aio_destroy(e);
	free_reqs(t, 48);
}

static void test_full_queue_holds_requests_back(void)
{
	struct aio_engine *e = engine(4, 1);
	struct treq *t = reqs(200);
	struct aio_req *rs[200];

	STAT_SET(in_flight_peak, 0);
	STAT_SET(queued_peak, 0);
	for (int i = 0; i < 200; i++) {
		aio_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)(i % FILE_BLOCKS) * BS);
		rs[i] = &t[i].r;
	}
	aio_submit_batch(e, rs, 200);
	wait_completed(200);
	for (int i = 0; i < 200; i++) {
		CHECK_EQ(t[i].res, BS);
		CHECK_EQ(t[i].done, 1);
	}
	CHECK(STAT_GET(in_flight_peak) <= 4);
	CHECK(STAT_GET(queued_peak) >= 196);
	aio_destroy(e);
	CHECK_EQ(STAT_GET(in_flight), 0);
	CHECK_EQ(STAT_GET(queued), 0);
	free_reqs(t, 200);
}

/* Destroying the engine with requests in flight runs every callback first. */
static void test_drain_with_requests_in_flight(void)
{
	for (int round = 0; round < 20; round++) {
		struct aio_engine *e = engine(8, 2);
		struct treq *t = reqs(100);

		for (int i = 0; i < 100; i++) {
			if (i % 2)
				aio_prep_read(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS);
			else
				aio_prep_write(&t[i].r, fd_rw, t[i].buf, BS, (uint64_t)i * BS, 0);
			aio_submit(e, &t[i].r);
		}
		aio_destroy(e);
		CHECK_EQ(completed, 100);
		for (int i = 0; i < 100; i++) {
			CHECK_EQ(t[i].done, 1);
			CHECK_EQ(t[i].res, BS);
		}
		free_reqs(t, 100);
	}
}

/* Errors: io_submit refusing one iocb of a batch fails that one only;
 * errors reported at completion reach the callback as -errno. */
static void test_errors_reach_their_request(void)
{
	struct aio_engine *e = engine(16, 1);
	struct treq *t = reqs(5);
	struct aio_req *rs[5];
	char *odd = aligned(2 * BS);

	aio_prep_read(&t[0].r, fd_rw, t[0].buf, BS, 0);
	aio_prep_write(&t[1].r, fd_ro, t[1].buf, BS, 0, 0);      /* EBADF */
	aio_prep_read(&t[2].r, fd_rw, odd + 1, BS, 0);           /* misaligned: EINVAL */
	aio_prep_read(&t[3].r, fd_rw, t[3].buf, BS, 8 * BS);
	aio_prep_read(&t[4].r, -1, t[4].buf, BS, 0);             /* EBADF */
	for (int i = 0; i < 5; i++)
		rs[i] = &t[i].r;
	aio_submit_batch(e, rs, 5);
	wait_completed(5);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, -EBADF);
	CHECK_EQ(t[2].res, -EINVAL);
	CHECK_EQ(t[3].res, BS);
	CHECK_EQ(t[4].res, -EBADF);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(t[i].done, 1);
	CHECK(STAT_GET(errors) >= 3);
	aio_destroy(e);
	free_reqs(t, 5);
	free(odd);
}

/* A read across the end of the file returns what there is; one past it, 0. */
static void test_short_reads_at_end(void)
{
	struct aio_engine *e = engine(16, 1);
	struct treq *t = reqs(2);
	char *big = aligned(4 * BS);
	uint64_t end = (uint64_t)FILE_BLOCKS * BS;

	aio_prep_read(&t[0].r, fd_rw, big, 4 * BS, end - BS);
	aio_prep_read(&t[1].r, fd_rw, t[1].buf, BS, end);
	aio_submit(e, &t[0].r);
	aio_submit(e, &t[1].r);
	wait_completed(2);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, 0);
	aio_destroy(e);
	free_reqs(t, 2);
	free(big);
}

static void test_fsync_and_dsync_writes(void)
{
	struct aio_engine *e = engine(16, 1);
	struct treq *t = reqs(3);

	memset(t[0].buf, 'z', BS);
	aio_prep_write(&t[0].r, fd_rw, t[0].buf, BS, 0, RWF_DSYNC);
	aio_prep_fsync(&t[1].r, fd_rw, true);
	aio_prep_fsync(&t[2].r, fd_rw, false);
	aio_submit(e, &t[0].r);
	wait_completed(1);
	aio_submit(e, &t[1].r);
	aio_submit(e, &t[2].r);
	wait_completed(3);
	CHECK_EQ(t[0].res, BS);
	CHECK_EQ(t[1].res, 0);
	CHECK_EQ(t[2].res, 0);
	aio_destroy(e);
	free_reqs(t, 3);
}

/* Callbacks may submit follow-up requests from the reaper thread. */
static struct aio_engine *chain_engine;
static int chain_left;

static void chain_done(struct aio_req *r, long res)
{
	CHECK_EQ(res, BS);
	if (__atomic_sub_fetch(&chain_left, 1, __ATOMIC_RELAXED) > 0) {
		aio_submit(chain_engine, r);
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
	aio_prep_read(&t[0].r, fd_rw, t[0].buf, BS, 0);
	aio_submit(chain_engine, &t[0].r);
	wait_completed(1);
	CHECK_EQ(chain_left, 0);
	aio_destroy(chain_engine);
	free_reqs(t, 1);
}

/* Many threads submitting at once, over several contexts: nothing is lost. */
struct submitter { struct aio_engine *e; struct treq *t; int n; };

static void *submit_many(void *arg)
{
	struct submitter *s = arg;

	for (int i = 0; i < s->n; i++) {
		aio_prep_read(&s->t[i].r, fd_rw, s->t[i].buf, BS, (uint64_t)(i % FILE_BLOCKS) * BS);
		aio_submit(s->e, &s->t[i].r);
	}
	return NULL;
}

static void test_concurrent_submitters(void)
{
	struct aio_engine *e = engine(32, 3);
	struct submitter s[4];
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		s[i] = (struct submitter){ .e = e, .t = reqs(2000), .n = 2000 };
		CHECK(pthread_create(&th[i], NULL, submit_many, &s[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	wait_completed(8000);
	aio_destroy(e);
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

	CHECK(aio_probe(16, err, sizeof(err)) == 0);
	CHECK(aio_probe(2000000000u, err, sizeof(err)) < 0);
	CHECK(strstr(err, "aio-max-nr") != NULL);
}

int main(void)
{
	char *zero = aligned(BS);
	int tmp = mkstemp(path);

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

	close(fd_rw);
	close(fd_ro);
	unlink(path);
	printf("%d checks passed\n", checks_run);
	return 0;
}
