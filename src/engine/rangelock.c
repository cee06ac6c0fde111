#include "rangelock.h"

#include <stddef.h>

void rangelock_init(struct rangelock *rl)
{
	pthread_mutex_init(&rl->mu, NULL);
	rl->held = rl->wait_head = rl->wait_tail = NULL;
}

void rangelock_destroy(struct rangelock *rl)
{
	pthread_mutex_destroy(&rl->mu);
}

static bool overlaps(const struct rl_entry *a, const struct rl_entry *b)
{
	return a->start < b->end && b->start < a->end;
}

/* Does e overlap any held entry, or any waiting entry queued before `upto`? */
static bool blocked(const struct rangelock *rl, const struct rl_entry *e,
		    const struct rl_entry *upto)
{
	for (const struct rl_entry *h = rl->held; h; h = h->next)
		if (overlaps(h, e))
			return true;
	for (const struct rl_entry *w = rl->wait_head; w && w != upto; w = w->next)
		if (overlaps(w, e))
			return true;
	return false;
}

static void push_held(struct rangelock *rl, struct rl_entry *e)
{
	e->prev = NULL;
	e->next = rl->held;
	if (rl->held)
		rl->held->prev = e;
	rl->held = e;
}

bool rangelock_acquire(struct rangelock *rl, struct rl_entry *e)
{
	bool now;

	pthread_mutex_lock(&rl->mu);
	now = !blocked(rl, e, NULL);
	if (now) {
		push_held(rl, e);
	} else {
		e->next = NULL;
		e->prev = rl->wait_tail;
		if (rl->wait_tail)
			rl->wait_tail->next = e;
		else
			rl->wait_head = e;
		rl->wait_tail = e;
	}
	pthread_mutex_unlock(&rl->mu);
	return now;
}

static void unlink_waiter(struct rangelock *rl, struct rl_entry *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		rl->wait_head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		rl->wait_tail = w->prev;
}

void rangelock_release(struct rangelock *rl, struct rl_entry *e)
{
	struct rl_entry *first = NULL, **last = &first, *w, *next;

	pthread_mutex_lock(&rl->mu);
	if (e->prev)
		e->prev->next = e->next;
	else
		rl->held = e->next;
	if (e->next)
		e->next->prev = e->prev;

	for (w = rl->wait_head; w; w = next) {
		next = w->next;
		if (blocked(rl, w, w))
			continue;
		unlink_waiter(rl, w);
		push_held(rl, w);
		w->gnext = NULL;
		*last = w;
		last = &w->gnext;
	}
	pthread_mutex_unlock(&rl->mu);
	/* grant outside the lock, oldest first; an entry may be released (and
	 * reused) as soon as its grant runs, so read the link before */
	for (w = first; w; w = next) {
		next = w->gnext;
		w->grant(w);
	}
}
