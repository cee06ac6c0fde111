#include "rx.h"
#include "arena.h"
#include "log.h"
#include "stats.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A WRITE request is a fuse_in_header (40 bytes) and a fuse_write_in
 * (40 bytes, kernel ABI 7.9 on) followed by the data. */
#define WRITE_HDR 80
/* The largest request: max_write (1 MiB) and its headers, with room. */
#define MAX_REQ ((1u << 20) + 4096)

/* One receive buffer: a head page whose last WRITE_HDR bytes take the
 * headers, then the payload, page-aligned. */
struct slot {
	char *base;
	bool taken;             /* the payload pages belong to a write now */
	size_t taken_len;
};

struct rx;

struct rx_thread {
	struct rx *rx;
	pthread_t tid;
	bool started;
	struct slot slot;
};

struct rx {
	struct fuse_session *se;
	struct arena *arena;
	int fd;
	size_t head, slot_len;
	uint64_t poll_ns;
	bool (*quiet)(void *arg);
	void *quiet_arg;
	bool polling;           /* a thread is polling (one at a time) */
	sem_t finished;
	int error;
};

static __thread struct slot *current;

/* ---- INIT flags and opcodes beyond libfuse 3.14 ---- */

static struct {
	struct rx_hooks h;
	int fd;
	uint64_t init_unique;   /* the INIT request being answered */
	uint64_t offered;       /* the kernel's INIT flags */
	uint64_t granted;
} hooks = { .fd = -1 };

/* Called for each request before libfuse sees it: remembers what INIT
 * offered, and lets the extra handler take what libfuse does not know.
 * Returns true when the request was taken. */
static bool intercept(const char *buf, size_t len)
{
	const struct fuse_in_header *in = (const void *)buf;

	if (len < sizeof(*in))
		return false;
	if (in->opcode == FUSE_INIT && len >= sizeof(*in) + offsetof(struct fuse_init_in, flags2) + 4) {
		const struct fuse_init_in *ii = (const void *)(in + 1);

		hooks.init_unique = in->unique;
		hooks.offered = ii->flags;
		if (ii->flags & FUSE_INIT_EXT)
			hooks.offered |= (uint64_t)ii->flags2 << 32;
		return false;
	}
	if (!hooks.h.extra || in->opcode < FUSE_SYNCFS)
		return false;
	struct rx_request r = { .in = in, .arg = in + 1, .arglen = len - sizeof(*in) };

	return hooks.h.extra(hooks.h.extra_ctx, &r);
}

/* libfuse's replies pass here: the INIT reply gains the flags asked for. */
static ssize_t hooked_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	if (hooks.init_unique && count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags2) + 4) {
		struct fuse_out_header *oh = iov[0].iov_base;
		struct fuse_init_out *io = iov[1].iov_base;

		if (oh->unique == hooks.init_unique && oh->error == 0) {
			uint64_t add = hooks.h.init_flags & hooks.offered;

			io->flags |= (uint32_t)add;
			if (add >> 32) {
				io->flags |= FUSE_INIT_EXT;
				io->flags2 |= (uint32_t)(add >> 32);
			}
			hooks.granted = add;
			hooks.init_unique = 0;
		}
	}
	return writev(fd, iov, count);
}

/* libfuse's own loop (-s) reads here. */
static ssize_t hooked_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	for (;;) {
		ssize_t n = read(fd, buf, len);

		if (n <= 0 || !intercept(buf, (size_t)n))
			return n;
	}
}

int rx_hooks_install(struct fuse_session *se, const struct rx_hooks *h)
{
	static const struct fuse_custom_io io = { .writev = hooked_writev, .read = hooked_read };

	hooks.h = *h;
	hooks.fd = fuse_session_fd(se);
	/* the same descriptor, now read and written through the hooks */
	return fuse_session_custom_io(se, &io, hooks.fd);
}

uint64_t rx_kernel_init_flags(void)
{
	return hooks.offered;
}

uint64_t rx_granted_init_flags(void)
{
	return hooks.granted;
}

int rx_reply(const struct rx_request *r, int err, const struct iovec *iov, int n)
{
	struct iovec v[4];
	struct fuse_out_header oh = { .unique = r->in->unique, .error = -err };
	size_t len = sizeof(oh);

	if (n > 3 || (err && n))
		return -EINVAL;
	v[0] = (struct iovec){ .iov_base = &oh, .iov_len = sizeof(oh) };
	for (int i = 0; i < n; i++) {
		v[i + 1] = iov[i];
		len += iov[i].iov_len;
	}
	oh.len = (uint32_t)len;
	return writev(hooks.fd, v, n + 1) < 0 ? -errno : 0;
}

static char *payload_of(const struct rx *rx, const struct slot *s)
{
	return s->base + rx->head;
}

static size_t unit_round(size_t len, size_t unit)
{
	return (len + unit - 1) / unit * unit;
}

static struct rx *the_rx;

bool rx_take_payload(const void *data, size_t len)
{
	struct slot *s = current;

	if (!s || s->taken || !the_rx || data != payload_of(the_rx, s) || len == 0 ||
	    len > MAX_REQ)
		return false;
	s->taken = true;
	s->taken_len = unit_round(len, the_rx->head);
	return true;
}

/* After a write took the payload: give back the head page and the tail. */
static void release_rest(struct rx *rx, struct slot *s)
{
	char *tail = payload_of(rx, s) + s->taken_len;
	char *end = s->base + rx->slot_len;

	STAT_SUB(arena_rx, rx->slot_len);
	arena_free(rx->arena, s->base, rx->head);
	if (tail < end)
		arena_free(rx->arena, tail, (size_t)(end - tail));
	s->base = NULL;
}

static bool may_poll(struct rx *rx)
{
	return rx->poll_ns && (!rx->quiet || rx->quiet(rx->quiet_arg));
}

/* Before a thread sleeps in read: a request that follows the last one
 * within microseconds (a program that stats or creates files one after
 * another) is found without waking a sleeping thread, which takes longer
 * than serving the request. One thread polls at a time, and only while no
 * device I/O is in flight: a polling thread would take the CPU that the
 * I/O's completion needs. Returns whether a request is waiting. */
static bool poll_request(struct rx *rx)
{
	struct pollfd p = { .fd = rx->fd, .events = POLLIN };
	bool found = false;
	uint64_t end;

	if (!may_poll(rx) || __atomic_exchange_n(&rx->polling, true, __ATOMIC_ACQUIRE))
		return false;
	end = now_ns() + rx->poll_ns;
	do {
		if (poll(&p, 1, 0) != 0) {
			found = (p.revents & POLLIN) != 0;
			break;
		}
	} while (now_ns() < end && may_poll(rx));
	__atomic_store_n(&rx->polling, false, __ATOMIC_RELEASE);
	return found;
}

/* Read one request; returns its length, 0 to retry, or -1 to stop. */
static ssize_t receive(struct rx *rx, struct slot *s)
{
	bool polled = poll_request(rx);
	ssize_t n;
	int err;

	n = read(rx->fd, payload_of(rx, s) - WRITE_HDR, WRITE_HDR + MAX_REQ);
	err = errno;
	if (fuse_session_exited(rx->se))
		return -1;
	if (n > 0) {
		if (polled)
			STAT_ADD(polled, 1);
		return n;
	}
	/* ENOENT: the request was interrupted before it was read */
	if (n < 0 && (err == EINTR || err == EAGAIN || err == ENOENT))
		return 0;
	/* ENODEV: unmounted. ECONNABORTED: the kernel tore the connection
	 * down, which an unmount racing with a request being read also
	 * reports; either way no request will come, and teardown drains */
	if (n < 0 && err != ENODEV && err != ECONNABORTED) {
		say("reading /dev/fuse: %s", strerror(err));
		rx->error = err;
	}
	return -1;
}

static void *rx_main(void *arg)
{
	struct rx_thread *t = arg;
	struct rx *rx = t->rx;
	ssize_t n;

	for (;;) {
		if (!t->slot.base) {
			t->slot.base = arena_alloc(rx->arena, rx->slot_len);
			STAT_ADD(arena_rx, rx->slot_len);
		}
		n = receive(rx, &t->slot);
		if (n < 0)
			break;
		if (n == 0)
			continue;
		struct fuse_buf buf = { .size = (size_t)n, .mem = payload_of(rx, &t->slot) - WRITE_HDR };

		t->slot.taken = false;
		if (intercept(buf.mem, buf.size))
			continue;
		current = &t->slot;
		fuse_session_process_buf(rx->se, &buf);
		current = NULL;
		if (t->slot.taken)
			release_rest(rx, &t->slot);
	}
	fuse_session_exit(rx->se);
	sem_post(&rx->finished);
	return NULL;
}

/* Interrupts a receive thread's read at shutdown. */
#define WAKE_SIGNAL (SIGRTMIN + 1)

static void on_wake(int sig)
{
	(void)sig;
}

/* Receive threads take no signals but WAKE_SIGNAL: the others go to the
 * main thread, whose handlers end the session. */
static int start_thread(struct rx_thread *t)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	sigdelset(&all, WAKE_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&t->tid, NULL, rx_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	t->started = r == 0;
	return r;
}

/* Until a receive thread stops or a signal handler ends the session. The
 * timeout only closes the window between the check and the wait, where a
 * signal would not interrupt the wait. */
static void wait_finished(struct rx *rx)
{
	while (!fuse_session_exited(rx->se)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (sem_timedwait(&rx->finished, &ts) == 0)
			break;
	}
}

/* The session has exited: interrupt each thread's read until it returns
 * (a signal that comes just before the read starts is lost, hence the
 * repeats) and join it. A thread busy with a request finishes it first. */
static void stop_threads(struct rx *rx, struct rx_thread *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (!t[i].started)
			continue;
		for (;;) {
			struct timespec ts;

			pthread_kill(t[i].tid, WAKE_SIGNAL);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			if (pthread_timedjoin_np(t[i].tid, NULL, &ts) == 0)
				break;
		}
		if (t[i].slot.base) {
			STAT_SUB(arena_rx, rx->slot_len);
			arena_free(rx->arena, t[i].slot.base, rx->slot_len);
		}
	}
}

int rx_loop(struct fuse_session *se, struct arena *arena, const struct rx_config *cfg)
{
	struct rx rx = { .se = se, .arena = arena, .fd = fuse_session_fd(se),
			 .head = arena_unit(arena), .poll_ns = cfg->poll_us * 1000ull,
			 .quiet = cfg->quiet, .quiet_arg = cfg->quiet_arg };
	unsigned nthreads = cfg->nthreads;
	struct rx_thread *t = calloc(nthreads, sizeof(*t));
	unsigned started = 0;

	if (!t) {
		say("out of memory");
		return -1;
	}
	struct sigaction sa = { .sa_handler = on_wake };  /* no SA_RESTART */

	rx.slot_len = rx.head + unit_round(MAX_REQ, rx.head);
	sigemptyset(&sa.sa_mask);
	sigaction(WAKE_SIGNAL, &sa, NULL);
	sem_init(&rx.finished, 0, 0);
	the_rx = &rx;
	for (; started < nthreads; started++) {
		t[started].rx = &rx;
		if (start_thread(&t[started]) != 0) {
			say("cannot start the FUSE threads");
			fuse_session_exit(se);
			rx.error = EAGAIN;
			break;
		}
	}
	if (started == nthreads)
		wait_finished(&rx);
	stop_threads(&rx, t, started);
	the_rx = NULL;
	sem_destroy(&rx.finished);
	free(t);
	return rx.error ? -1 : 0;
}

/* With more threads than CPUs, each request wakes a sleeping thread instead
 * of being taken by one that has just finished the last (on 2 CPUs, 2
 * threads serve 4k requests 15-20% faster than 8). */
unsigned rx_default_threads(void)
{
	cpu_set_t cpus;
	unsigned n = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? (unsigned)CPU_COUNT(&cpus) : 2;

	return n < 2 ? 2 : n > 8 ? 8 : n;
}

size_t rx_slot_len(size_t unit)
{
	return unit + unit_round(MAX_REQ, unit);
}
