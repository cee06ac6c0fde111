/* Unit tests of the bounce-buffer arena. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "check.h"
#include "stats.h"

#define UNIT 4096

static struct arena *make(size_t pages)
{
	char err[256];
	struct arena *a = arena_create(pages * UNIT, UNIT, err, sizeof(err));

	if (!a)
		fprintf(stderr, "arena_create: %s\n", err);
	CHECK(a != NULL);
	return a;
}

static void test_alignment_and_exhaustion(void)
{
	struct arena *a = make(16);
	void *p[16];

	for (int i = 0; i < 16; i++) {
		p[i] = arena_try_alloc(a, i == 0 ? 1 : UNIT);
		CHECK(p[i] != NULL);
		CHECK((uintptr_t)p[i] % UNIT == 0);
		memset(p[i], i, UNIT);
	}
	CHECK(arena_try_alloc(a, 1) == NULL);
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < UNIT; j++)
			CHECK(((unsigned char *)p[i])[j] == i);
	arena_free(a, p[7], UNIT);
	void *q = arena_try_alloc(a, UNIT);
	CHECK(q == p[7]);
	CHECK(arena_try_alloc(a, 2 * UNIT) == NULL);
	for (int i = 0; i < 16; i++)
		arena_free(a, p[i], UNIT);
	CHECK_EQ(STAT_GET(arena_in_use), 0);
	/* after everything is freed, one allocation can take it all */
	q = arena_try_alloc(a, 16 * UNIT);
	CHECK(q != NULL);
	arena_free(a, q, 16 * UNIT);
	arena_destroy(a);
}

static void test_multi_page_runs_do_not_overlap(void)
{
	struct arena *a = make(64);
	struct { unsigned char *p; size_t len; } held[64];
	int n = 0;
	unsigned seed = 7;

	for (int round = 0; round < 2000; round++) {
		if (n && (rand_r(&seed) % 3 == 0 || n == 64)) {
			int k = (int)(rand_r(&seed) % (unsigned)n);

			for (size_t j = 0; j < held[k].len; j++)
				CHECK(held[k].p[j] == (unsigned char)(uintptr_t)held[k].p);
			arena_free(a, held[k].p, held[k].len);
			held[k] = held[--n];
			continue;
		}
		size_t len = 1 + rand_r(&seed) % (5 * UNIT);
		unsigned char *p = arena_try_alloc(a, len);

		if (!p)
			continue;
		memset(p, (unsigned char)(uintptr_t)p, len);
		held[n].p = p;
		held[n].len = len;
		n++;
	}
	while (n--)
		arena_free(a, held[n].p, held[n].len);
	CHECK_EQ(STAT_GET(arena_in_use), 0);
	arena_destroy(a);
}

/* Threads fight over an arena much smaller than their combined demand:
 * everybody waits instead of failing, nobody's buffer is touched by another. */
struct contender { struct arena *a; unsigned seed; int id; long done; };

static void *contend(void *arg)
{
	struct contender *c = arg;

	for (int i = 0; i < 3000; i++) {
		size_t len = (1 + rand_r(&c->seed) % 6) * UNIT;
		unsigned char *p = arena_alloc(c->a, len);

		CHECK(p != NULL);
		memset(p, c->id, len);
		if (i % 7 == 0)
			sched_yield();
		for (size_t j = 0; j < len; j += 512)
			CHECK(p[j] == c->id);
		arena_free(c->a, p, len);
		c->done++;
	}
	return NULL;
}

static void test_full_arena_under_contention(void)
{
	struct arena *a = make(8);
	struct contender c[6];
	pthread_t t[6];
	uint64_t waits0 = STAT_GET(arena_waits);

	for (int i = 0; i < 6; i++) {
		c[i] = (struct contender){ .a = a, .seed = (unsigned)i + 1, .id = i + 1 };
		CHECK(pthread_create(&t[i], NULL, contend, &c[i]) == 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ(c[i].done, 3000);
	}
	CHECK(STAT_GET(arena_waits) > waits0);
	CHECK_EQ(STAT_GET(arena_in_use), 0);
	arena_destroy(a);
}

/* A waiting large request is served before later small ones. */
struct big { struct arena *a; void *p; int state; pthread_mutex_t mu; pthread_cond_t cv; };

static void *alloc_all(void *arg)
{
	struct big *b = arg;
	void *p = arena_alloc(b->a, 8 * UNIT);

	pthread_mutex_lock(&b->mu);
	b->p = p;
	b->state = 1;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

static void test_waiter_is_not_overtaken(void)
{
	struct arena *a = make(8);
	struct big b = { .a = a, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	pthread_t t;
	uint64_t waits0 = STAT_GET(arena_waits);
	void *mine = arena_alloc(a, UNIT);

	CHECK(pthread_create(&t, NULL, alloc_all, &b) == 0);
	/* wait until the big request is queued */
	while (STAT_GET(arena_waits) == waits0)
		sched_yield();
	/* seven pages are free, but the queued request comes first */
	CHECK(arena_try_alloc(a, UNIT) == NULL);
	arena_free(a, mine, UNIT);
	pthread_mutex_lock(&b.mu);
	while (!b.state)
		pthread_cond_wait(&b.cv, &b.mu);
	pthread_mutex_unlock(&b.mu);
	pthread_join(t, NULL);
	CHECK(b.p != NULL);
	arena_free(a, b.p, 8 * UNIT);
	arena_destroy(a);
}

static void test_bad_geometry(void)
{
	char err[256] = "";

	CHECK(arena_create(1 << 20, 1000, err, sizeof(err)) == NULL);
	CHECK(err[0] != 0);
	CHECK(arena_create(100, UNIT, err, sizeof(err)) == NULL);
}

int main(void)
{
	RUN(test_alignment_and_exhaustion);
	RUN(test_multi_page_runs_do_not_overlap);
	RUN(test_full_arena_under_contention);
	RUN(test_waiter_is_not_overtaken);
	RUN(test_bad_geometry);
	printf("%d checks passed\n", checks_run);
	return 0;
}
