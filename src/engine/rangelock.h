/* Asynchronous byte-range lock: a holder of [start, end) excludes every
 * overlapping holder. A request that cannot be granted at once is queued and
 * granted later, in arrival order among overlapping requests, by calling its
 * grant function from the thread that released the conflicting range. Nobody
 * ever blocks on it. */
#ifndef KAIOFS_RANGELOCK_H
#define KAIOFS_RANGELOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct rl_entry {
	uint64_t start, end;                 /* [start, end) */
	void (*grant)(struct rl_entry *e);   /* called when a queued entry is granted */
	struct rl_entry *prev, *next;
	struct rl_entry *gnext;              /* private: list of entries being granted */
};

struct rangelock {
	pthread_mutex_t mu;
	struct rl_entry *held;               /* unordered list of granted entries */
	struct rl_entry *wait_head, *wait_tail; /* FIFO of waiting entries */
};

void rangelock_init(struct rangelock *rl);
void rangelock_destroy(struct rangelock *rl);

/* Returns true if granted now (grant is not called); false if queued. */
bool rangelock_acquire(struct rangelock *rl, struct rl_entry *e);
/* Release a granted entry; grants waiters that no longer conflict. */
void rangelock_release(struct rangelock *rl, struct rl_entry *e);

#endif
