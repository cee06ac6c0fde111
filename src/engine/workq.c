#include "workq.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct workq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct work *head, *tail;
	bool stop;
	unsigned n;
	pthread_t threads[];
};

static void *worker(void *arg)
{
	struct workq *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct work *w = q->head;

		if (!w) {
			if (q->stop)
				break;
			pthread_cond_wait(&q->cv, &q->mu);
			continue;
		}
		q->head = w->next;
		if (!q->head)
			q->tail = NULL;
		pthread_mutex_unlock(&q->mu);
		w->fn(w);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

struct workq *workq_create(unsigned threads)
{
	struct workq *q = calloc(1, sizeof(*q) + threads * sizeof(pthread_t));

	if (!q)
		return NULL;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	for (; q->n < threads; q->n++)
		if (pthread_create(&q->threads[q->n], NULL, worker, q))
			break;
	if (q->n == 0) {
		free(q);
		return NULL;
	}
	return q;
}

void workq_push(struct workq *q, struct work *w)
{
	w->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void workq_destroy(struct workq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = true;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	for (unsigned i = 0; i < q->n; i++)
		pthread_join(q->threads[i], NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}
