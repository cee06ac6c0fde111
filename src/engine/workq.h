/* A small pool of worker threads for what completion paths must not do
 * themselves: metadata follow-up of writes (the reaper never takes the
 * metadata lock) and the continuation of writes whose range lock was granted
 * on a reaper thread. */
#ifndef KAIOFS_WORKQ_H
#define KAIOFS_WORKQ_H

struct workq;

struct work {
	void (*fn)(struct work *w);
	struct work *next;
};

struct workq *workq_create(unsigned threads);
void workq_push(struct workq *q, struct work *w);
/* Run everything queued, then stop the threads. */
void workq_destroy(struct workq *q);

#endif
