#include "arena.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

struct arena {
	char *map;            /* what mmap returned */
	size_t map_len;
	char *base;           /* first aligned byte */
	size_t size, unit, npages;
	uint64_t *used;       /* one bit per unit-sized page */
	size_t hint;          /* next-fit start */
	size_t free_pages;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t next_ticket, serving; /* FIFO order of allocators */
};

#define HUGE_ALIGN (2u << 20)

static char *align_ptr(char *p, size_t align)
{
	return (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
}

static bool page_used(const struct arena *a, size_t i)
{
	return a->used[i / 64] >> (i % 64) & 1;
}

static void mark_pages(struct arena *a, size_t first, size_t n, bool used)
{
	for (size_t i = first; i < first + n; i++) {
		uint64_t bit = 1ull << (i % 64);

		if (used)
			a->used[i / 64] |= bit;
		else
			a->used[i / 64] &= ~bit;
	}
}

/* First run of n free pages in [from, to); returns SIZE_MAX if none. */
static size_t find_run_in(const struct arena *a, size_t from, size_t to, size_t n)
{
	size_t i = from;

	while (i + n <= to) {
		size_t run = 0;

		if (i % 64 == 0 && a->used[i / 64] == UINT64_MAX) {
			i += 64;
			continue;
		}
		while (run < n && !page_used(a, i + run))
			run++;
		if (run == n)
			return i;
		i += run + 1;
	}
	return SIZE_MAX;
}

static size_t find_run(struct arena *a, size_t n)
{
	size_t at;

	if (a->free_pages < n)
		return SIZE_MAX;
	at = find_run_in(a, a->hint, a->npages, n);
	if (at == SIZE_MAX)
		at = find_run_in(a, 0, a->npages, n);
	if (at != SIZE_MAX)
		a->hint = at + n < a->npages ? at + n : 0;
	return at;
}

static void memlock_reason(size_t size, int err, char *buf, size_t len)
{
	struct rlimit rl;
	char limit[32] = "unlimited";

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		snprintf(limit, sizeof(limit), "%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
	snprintf(buf, len,
		 "cannot lock the %zu MiB I/O arena in memory (%s; RLIMIT_MEMLOCK is %s): "
		 "lower it with -o arena=SIZE or raise the limit (ulimit -l)",
		 size >> 20, strerror(err), limit);
}

struct arena *arena_create(size_t size, size_t unit, char *err, size_t errlen)
{
	struct arena *a;

	if (unit < 4096 || (unit & (unit - 1)) || size < unit) {
		snprintf(err, errlen, "bad arena geometry (size %zu, unit %zu)", size, unit);
		return NULL;
	}
	size = size / unit * unit;
	a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->size = size;
	a->unit = unit;
	a->npages = size / unit;
	a->free_pages = a->npages;
	a->used = calloc((a->npages + 63) / 64, sizeof(uint64_t));
	/* room to start on a huge-page boundary */
	a->map_len = size + (unit > HUGE_ALIGN ? unit : HUGE_ALIGN);
	a->map = mmap(NULL, a->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!a->used || a->map == MAP_FAILED) {
		snprintf(err, errlen, "cannot map a %zu MiB I/O arena: %s", size >> 20, strerror(errno));
		a->map = NULL;
		arena_destroy(a);
		return NULL;
	}
	a->base = align_ptr(a->map, unit > HUGE_ALIGN ? unit : HUGE_ALIGN);
	/* huge pages make pinning the buffers for each direct I/O cheaper;
	 * only a hint (transparent huge pages may be off) */
	madvise(a->base, size, MADV_HUGEPAGE);
	if (mlock(a->base, size) != 0) {
		memlock_reason(size, errno, err, errlen);
		arena_destroy(a);
		return NULL;
	}
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	STAT_SET(arena_size, size);
	return a;
}

int arena_relock(struct arena *a)
{
	return mlock(a->base, a->size) ? -errno : 0;
}

void arena_destroy(struct arena *a)
{
	if (!a)
		return;
	if (a->map) {
		munmap(a->map, a->map_len);
		pthread_mutex_destroy(&a->mu);
		pthread_cond_destroy(&a->cv);
	}
	free(a->used);
	free(a);
}

static size_t pages_for(const struct arena *a, size_t len)
{
	return len ? (len + a->unit - 1) / a->unit : 1;
}

static void *take(struct arena *a, size_t at, size_t n)
{
	mark_pages(a, at, n, true);
	a->free_pages -= n;
	STAT_ADD(arena_allocs, 1);
	stat_gauge_add(&kstats.arena_in_use, &kstats.arena_peak, n * a->unit);
	return a->base + at * a->unit;
}

void *arena_alloc(struct arena *a, size_t len)
{
	size_t n = pages_for(a, len), at;
	uint64_t ticket;
	bool counted = false;

	if (n > a->npages)
		return NULL; /* caller bug: larger than arena_max_alloc */
	pthread_mutex_lock(&a->mu);
	ticket = a->next_ticket++;
	while (ticket != a->serving || (at = find_run(a, n)) == SIZE_MAX) {
		if (!counted) {
			STAT_ADD(arena_waits, 1);
			counted = true;
		}
		pthread_cond_wait(&a->cv, &a->mu);
	}
	a->serving++;
	void *p = take(a, at, n);
	/* the next ticket holder may be able to proceed too */
	if (a->next_ticket != a->serving)
		pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	return p;
}

void *arena_try_alloc(struct arena *a, size_t len)
{
	size_t n = pages_for(a, len), at;
	void *p = NULL;

	pthread_mutex_lock(&a->mu);
	if (a->next_ticket == a->serving && (at = find_run(a, n)) != SIZE_MAX)
		p = take(a, at, n);
	pthread_mutex_unlock(&a->mu);
	return p;
}

void arena_free(struct arena *a, void *buf, size_t len)
{
	size_t n = pages_for(a, len);
	size_t at = (size_t)((char *)buf - a->base) / a->unit;

	pthread_mutex_lock(&a->mu);
	mark_pages(a, at, n, false);
	a->free_pages += n;
	STAT_SUB(arena_in_use, n * a->unit);
	if (a->next_ticket != a->serving)
		pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

size_t arena_unit(const struct arena *a) { return a->unit; }
void *arena_base(const struct arena *a) { return a->base; }
size_t arena_size(const struct arena *a) { return a->size; }
size_t arena_max_alloc(const struct arena *a) { return a->size; }
