/* kaiofs-stat: print the statistics of a mounted kaiofs, once (a table or
 * JSON) or, with --watch, one line per interval computed from the
 * difference of two samples. */
#include <errno.h>
#include <limits.h>
#include <math.h> /* NAN, isnan: no libm needed */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define HISTO_BUCKETS 48      /* bucket i: latencies in [2^i, 2^(i+1)) ns */
#define REPLY_TIMEOUT_S 10    /* a mount that does not answer in this time is reported */
#define HEADER_EVERY 24       /* on a terminal, repeat the header every this many lines */

static void usage(FILE *f)
{
	fprintf(f, "usage: kaiofs-stat [--json] MOUNTPOINT\n"
		   "       kaiofs-stat --watch [INTERVAL] [--count N] MOUNTPOINT\n"
		   "Print the I/O statistics of a mounted kaiofs: a table, or with --json one JSON object.\n"
		   "\n"
		   "  --json              print one JSON object instead of the table\n"
		   "  -w, --watch [SECS]  print one line every SECS seconds (default 1, fractions allowed)\n"
		   "                      until interrupted or the mount goes away\n"
		   "  -c, --count N       with --watch: stop after N lines\n"
		   "  -h, --help          this help\n");
}

/* ---- talking to the mount ---- */

enum fetch_result { FETCH_OK, FETCH_NOT_SERVED, FETCH_ERROR, FETCH_INTERRUPTED };

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Send req to the statistics socket of the mount at real (a canonical path)
 * and collect the whole reply, NUL-terminated, in *out (malloc'ed). */
static enum fetch_result fetch(const char *real, const char *req, char **out, size_t *outlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { REPLY_TIMEOUT_S, 0 };
	char name[64], *buf = NULL;
	size_t len = 0, cap = 0;
	socklen_t salen;
	enum fetch_result res = FETCH_OK;
	int fd;

	stat_socket_name(real, name);
	memcpy(sa.sun_path + 1, name, strlen(name));
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "kaiofs-stat: socket: %s\n", strerror(errno));
		return FETCH_ERROR;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
		res = errno == EINTR ? FETCH_INTERRUPTED : FETCH_NOT_SERVED;
		close(fd);
		return res;
	}
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		res = errno == EINTR ? FETCH_INTERRUPTED : FETCH_NOT_SERVED;
		close(fd);
		return res;
	}
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb) {
				fprintf(stderr, "kaiofs-stat: out of memory\n");
				res = FETCH_ERROR;
				break;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (n < 0) {
			if (errno == EINTR)
				res = FETCH_INTERRUPTED;
			else if (errno == EAGAIN || errno == EWOULDBLOCK) {
				fprintf(stderr, "kaiofs-stat: %s: no answer within %d s\n", real,
					REPLY_TIMEOUT_S);
				res = FETCH_ERROR;
			} else {
				res = FETCH_NOT_SERVED;
			}
		}
		break;
	}
	close(fd);
	if (res == FETCH_OK && len == 0)
		res = FETCH_NOT_SERVED; /* the server went away before answering */
	if (res != FETCH_OK) {
		free(buf);
		return res;
	}
	buf[len] = 0;
	*out = buf;
	*outlen = len;
	return FETCH_OK;
}

static void say_not_served(const char *real)
{
	fprintf(stderr, "kaiofs-stat: %s: not a kaiofs mount (no statistics served for it)\n", real);
}

static int print_once(const char *real, bool json)
{
	char *text;
	size_t len;

	switch (fetch(real, json ? "json\n" : "table\n", &text, &len)) {
	case FETCH_OK:
		fwrite(text, 1, len, stdout);
		free(text);
		return fflush(stdout) == 0 ? 0 : 1;
	case FETCH_NOT_SERVED:
		say_not_served(real);
		return 1;
	case FETCH_INTERRUPTED:
		return 0;
	default:
		return 1;
	}
}

/* ---- the JSON reply, flattened: every number under its dotted path
 * ("aio.iocbs", "latency.request.read.buckets.3") ---- */

struct field {
	char *path;
	double value;
};

struct sample {
	struct field *f;
	size_t n, cap;
	double t;                  /* CLOCK_MONOTONIC seconds when taken */
	char engine[16];           /* the string at "engine", or empty */
};

struct parser {
	const char *p;
	struct sample *s;
	char path[256];
};

static void sample_free(struct sample *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->f[i].path);
	free(s->f);
	memset(s, 0, sizeof(*s));
}

static bool sample_add(struct sample *s, const char *path, double v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		struct field *nf = realloc(s->f, cap * sizeof(*nf));

		if (!nf)
			return false;
		s->f = nf;
		s->cap = cap;
	}
	s->f[s->n].path = strdup(path);
	if (!s->f[s->n].path)
		return false;
	s->f[s->n++].value = v;
	return true;
}

/* The value at path, or NAN when the reply has no such number. */
static double sample_get(const struct sample *s, const char *path)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->f[i].path, path))
			return s->f[i].value;
	return NAN;
}

static void skip_ws(struct parser *ps)
{
	while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r')
		ps->p++;
}

/* A string token: its contents (escapes kept as written) copied to out
 * when out is given. */
static bool parse_string(struct parser *ps, char *out, size_t outlen)
{
	size_t n = 0;

	if (*ps->p != '"')
		return false;
	ps->p++;
	while (*ps->p && *ps->p != '"') {
		if (*ps->p == '\\' && ps->p[1])
			ps->p++;
		if (out) {
			if (n + 1 >= outlen)
				return false;
			out[n++] = *ps->p;
		}
		ps->p++;
	}
	if (*ps->p != '"')
		return false;
	ps->p++;
	if (out)
		out[n] = 0;
	return true;
}

/* Append ".name" (or "name" at the top) to the path at plen; returns the new length. */
static size_t path_push(struct parser *ps, size_t plen, const char *name)
{
	int n = snprintf(ps->path + plen, sizeof(ps->path) - plen, "%s%s", plen ? "." : "", name);

	if (n < 0 || (size_t)n >= sizeof(ps->path) - plen)
		return 0;
	return plen + (size_t)n;
}

static bool parse_value(struct parser *ps, size_t plen, int depth)
{
	char key[128];
	size_t klen;
	unsigned idx = 0;

	if (depth > 16)
		return false;
	skip_ws(ps);
	switch (*ps->p) {
	case '{':
		ps->p++;
		skip_ws(ps);
		if (*ps->p == '}') {
			ps->p++;
			return true;
		}
		for (;;) {
			skip_ws(ps);
			if (!parse_string(ps, key, sizeof(key)))
				return false;
			skip_ws(ps);
			if (*ps->p++ != ':')
				return false;
			klen = path_push(ps, plen, key);
			if (!klen || !parse_value(ps, klen, depth + 1))
				return false;
			ps->path[plen] = 0;
			skip_ws(ps);
			if (*ps->p == '}') {
				ps->p++;
				return true;
			}
			if (*ps->p++ != ',')
				return false;
		}
	case '[':
		ps->p++;
		skip_ws(ps);
		if (*ps->p == ']') {
			ps->p++;
			return true;
		}
		for (;;) {
			snprintf(key, sizeof(key), "%u", idx++);
			klen = path_push(ps, plen, key);
			if (!klen || !parse_value(ps, klen, depth + 1))
				return false;
			ps->path[plen] = 0;
			skip_ws(ps);
			if (*ps->p == ']') {
				ps->p++;
				return true;
			}
			if (*ps->p++ != ',')
				return false;
		}
	case '"':
		if (!strcmp(ps->path, "engine"))
			return parse_string(ps, ps->s->engine, sizeof(ps->s->engine));
		return parse_string(ps, NULL, 0);
	case 't':
	case 'f':
	case 'n':
		while (*ps->p >= 'a' && *ps->p <= 'z')
			ps->p++;
		return true;
	default: {
		char *end;
		double v = strtod(ps->p, &end);

		if (end == ps->p)
			return false;
		ps->p = end;
		return sample_add(ps->s, ps->path, v);
	}
	}
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static enum fetch_result take_sample(const char *real, struct sample *s)
{
	struct parser ps = { 0 };
	enum fetch_result r;
	char *text;
	size_t len;

	sample_free(s);
	s->t = mono_now();
	r = fetch(real, "json\n", &text, &len);
	if (r != FETCH_OK)
		return r;
	ps.p = text;
	ps.s = s;
	if (!parse_value(&ps, 0, 0)) {
		fprintf(stderr, "kaiofs-stat: %s: cannot parse the statistics\n", real);
		r = FETCH_ERROR;
	}
	free(text);
	return r;
}

/* ---- one line per interval ---- */

static double delta(const struct sample *a, const struct sample *b, const char *path)
{
	return sample_get(b, path) - sample_get(a, path);
}

/* Latency (ns) below which fraction q of the interval's samples fall, from
 * the difference of the cumulative bucket counts of the read and write
 * request histograms; NAN when the server does not report buckets or
 * nothing completed. Interpolates linearly inside a bucket. */
static double interval_quantile(const struct sample *a, const struct sample *b, double q)
{
	static const char *const kinds[] = { "read", "write" };
	double n[HISTO_BUCKETS] = { 0 }, total = 0, seen = 0, target;
	char path[96];

	for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
		for (unsigned k = 0; k < 2; k++) {
			double d;

			snprintf(path, sizeof(path), "latency.request.%s.buckets.%u", kinds[k], i);
			d = delta(a, b, path);
			if (isnan(d))
				return NAN;
			n[i] += d > 0 ? d : 0;
		}
		total += n[i];
	}
	if (total <= 0)
		return NAN;
	target = (double)(uint64_t)(q * total);
	if (target >= total)
		target = total - 1;
	for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
		if (seen + n[i] > target) {
			double lo = (double)(1ull << i);

			return lo + lo * (target - seen + 1) / n[i];
		}
		seen += n[i];
	}
	return NAN;
}

static void print_header(void)
{
	printf("%-8s %9s %9s %8s %8s %8s %8s %9s %9s %-6s\n", "time", "r/s", "w/s", "rMiB/s",
	       "wMiB/s", "iocb/sub", "inflight", "p50_us", "p99_us", "engine");
}

static void print_num(const char *fmt, int width, double v)
{
	if (isnan(v) || isinf(v))
		printf(" %*s", width, "-");
	else
		printf(fmt, width, v);
}

static void print_line(const struct sample *a, const struct sample *b)
{
	double dt = b->t - a->t, submits = delta(a, b, "aio.submits");
	char when[16];
	time_t now = time(NULL);
	struct tm tm;

	if (dt <= 0)
		dt = 1e-9;
	localtime_r(&now, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	printf("%-8s", when);
	print_num(" %*.0f", 9, delta(a, b, "fuse.requests.read") / dt);
	print_num(" %*.0f", 9, delta(a, b, "fuse.requests.write") / dt);
	print_num(" %*.2f", 8, delta(a, b, "fuse.bytes_read") / dt / 1048576.0);
	print_num(" %*.2f", 8, delta(a, b, "fuse.bytes_written") / dt / 1048576.0);
	print_num(" %*.2f", 8, submits > 0 ? delta(a, b, "aio.iocbs") / submits : NAN);
	print_num(" %*.0f", 8, sample_get(b, "aio.in_flight"));
	print_num(" %*.1f", 9, interval_quantile(a, b, 0.50) / 1e3);
	print_num(" %*.1f", 9, interval_quantile(a, b, 0.99) / 1e3);
	printf(" %-6s\n", b->engine[0] ? b->engine : "-");
}

static bool counters_went_back(const struct sample *a, const struct sample *b)
{
	static const char *const counters[] = { "aio.submits", "aio.iocbs", "fuse.bytes_read",
						"fuse.bytes_written" };

	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		if (delta(a, b, counters[i]) < 0)
			return true;
	return false;
}

/* Sleep until the monotonic time `until` (seconds); false when a signal
 * asked to stop. */
static bool sleep_until(double until)
{
	struct timespec ts = { .tv_sec = (time_t)until };

	ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	while (!interrupted) {
		int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);

		if (r == 0)
			return !interrupted;
		if (r != EINTR)
			return false;
	}
	return false;
}

static int watch(const char *real, double interval, long count)
{
	struct sample prev = { 0 }, cur = { 0 }, tmp;
	struct sigaction sa = { .sa_handler = on_signal };
	bool tty = isatty(STDOUT_FILENO);
	double start;
	int ret = 0;
	long lines = 0, ticks = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);  /* no SA_RESTART: waits end at once */
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	switch (take_sample(real, &prev)) {
	case FETCH_OK:
		break;
	case FETCH_NOT_SERVED:
		say_not_served(real);
		return 1;
	case FETCH_INTERRUPTED:
		return 0;
	default:
		return 1;
	}
	start = prev.t;
	print_header();
	while (count < 0 || lines < count) {
		enum fetch_result r;

		double next = start + interval * (double)++ticks, now = mono_now();

		if (next < now) { /* a slow answer: keep to the grid, skip what was missed */
			ticks = (long)((now - start) / interval) + 1;
			next = start + interval * (double)ticks;
		}
		if (!sleep_until(next))
			break;
		r = take_sample(real, &cur);
		if (r == FETCH_INTERRUPTED)
			break;
		if (r == FETCH_NOT_SERVED) {
			fprintf(stderr, "kaiofs-stat: %s: the mount went away\n", real);
			ret = 1;
			break;
		}
		if (r != FETCH_OK) {
			ret = 1;
			break;
		}
		/* counters that went back: another kaiofs now serves the
		 * mountpoint, and this sample starts over */
		if (!counters_went_back(&prev, &cur)) {
			if (tty && lines && lines % HEADER_EVERY == 0)
				print_header();
			print_line(&prev, &cur);
			lines++;
		}
		tmp = prev;
		prev = cur;
		cur = tmp;
	}
	sample_free(&prev);
	sample_free(&cur);
	if (fflush(stdout) != 0)
		ret = 1;
	return ret;
}

/* ---- command line ---- */

static bool parse_interval(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0.01 || v > 86400)
		return false;
	*out = v;
	return true;
}

static bool is_number(const char *s)
{
	char *end;

	strtod(s, &end);
	return end != s && !*end;
}

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kaiofs-stat: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	usage(stderr);
	return 2;
}

int main(int argc, char **argv)
{
	bool json = false, watching = false;
	double interval = 1.0;
	long count = -1;
	const char *mnt = NULL, *count_s = NULL;
	char real[PATH_MAX];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-w") || !strcmp(a, "--watch")) {
			watching = true;
			/* an optional interval: a number after which the mountpoint
			 * still follows, or that follows the mountpoint */
			if (i + 1 < argc && is_number(argv[i + 1]) && (mnt || i + 1 < argc - 1)) {
				if (!parse_interval(argv[++i], &interval))
					return bad_usage("bad interval %s: want seconds from 0.01 to 86400",
							 argv[i]);
			}
		} else if (!strncmp(a, "--watch=", 8)) {
			watching = true;
			if (!parse_interval(a + 8, &interval))
				return bad_usage("bad interval %s: want seconds from 0.01 to 86400", a + 8);
		} else if (!strcmp(a, "-c") || !strcmp(a, "--count")) {
			if (i + 1 >= argc)
				return bad_usage("%s needs a number", a);
			count_s = argv[++i];
		} else if (!strncmp(a, "--count=", 8)) {
			count_s = a + 8;
		} else if (a[0] == '-' && a[1]) {
			return bad_usage("unknown option %s", a);
		} else if (mnt) {
			return bad_usage("unexpected argument %s", a);
		} else {
			mnt = a;
		}
	}
	if (!mnt) {
		usage(stderr);
		return 2;
	}
	if (count_s) {
		unsigned long v;

		if (!watching)
			return bad_usage("%s", "--count works with --watch only");
		if (!parse_uint(count_s, 1, LONG_MAX, &v))
			return bad_usage("bad count %s: want a whole number of at least 1", count_s);
		count = (long)v;
	}
	if (json && watching)
		return bad_usage("%s", "--json and --watch do not go together");
	if (!realpath(mnt, real)) {
		fprintf(stderr, "kaiofs-stat: %s: %s\n", mnt, strerror(errno));
		return 1;
	}
	return watching ? watch(real, interval, count) : print_once(real, json);
}
