/* randops: a seeded random sequence of operations on one file, each read
 * checked against a model of what the file must hold.
 *
 *   randops [options] FILE
 *
 * With -i direct or aio, reads, writes and copies go through an O_DIRECT
 * descriptor (as fsx -Z does); truncate, fallocate and mapped I/O through a
 * second, buffered one. With -i mixed each read, write and copy picks one.
 *
 * Operations: read and write (buffered, O_DIRECT, or O_DIRECT through
 * libaio, several at a time), mapped reads and writes (MAP_SHARED), truncate
 * up and down, fallocate (allocate, keep size, punch hole, zero range with
 * and without keep size), copy_file_range within the file, fsync, fdatasync,
 * and closing and reopening the file. Every read, mapped or not, is compared
 * with the model; so is the size after every operation and the whole file
 * every 1000 operations and at the end. A fallocate mode or copy_file_range
 * that the filesystem refuses with EOPNOTSUPP is left out from then on, and
 * the summary says so.
 *
 * Bytes written by operation N at file offset P are ((N * 131 + P) % 255) + 1,
 * never zero, so a stale byte names the operation that wrote it. On a
 * mismatch randops prints the operation, the first differing bytes, the last
 * operations, and those that touched the first bad byte, then exits 1. On
 * success it prints one line of JSON: the seed, the operation counts and the
 * operations left out; with -g it writes what the file must hold to a file
 * of its own, for a second look at the file by other means. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libaio.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum op {
	OP_READ, OP_WRITE, OP_MAPREAD, OP_MAPWRITE, OP_TRUNCATE, OP_FALLOC, OP_FALLOC_KEEP,
	OP_PUNCH, OP_ZERO, OP_ZERO_KEEP, OP_COPY, OP_FSYNC, OP_FDATASYNC, OP_REOPEN,
	OP_AIO_WRITES, OP_AIO_READS, OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
	"read", "write", "mapread", "mapwrite", "truncate", "falloc", "falloc_keep",
	"punch", "zero", "zero_keep", "copy", "fsync", "fdatasync", "reopen",
	"aio_writes", "aio_reads",
};

static const unsigned op_weight[OP_COUNT] = {
	[OP_READ] = 20, [OP_WRITE] = 20, [OP_MAPREAD] = 6, [OP_MAPWRITE] = 6,
	[OP_TRUNCATE] = 6, [OP_FALLOC] = 3, [OP_FALLOC_KEEP] = 3, [OP_PUNCH] = 7,
	[OP_ZERO] = 3, [OP_ZERO_KEEP] = 3, [OP_COPY] = 3, [OP_FSYNC] = 1,
	[OP_FDATASYNC] = 1, [OP_REOPEN] = 2, [OP_AIO_WRITES] = 5, [OP_AIO_READS] = 4,
};

enum access { ACC_BUFFERED, ACC_DIRECT, ACC_AIO, ACC_MIXED };

#define MAX_BATCH 8
#define HISTORY 30
#define NO_BYTE UINT64_MAX

/* One operation as the log keeps it. */
struct logent {
	uint32_t n;
	uint8_t op;
	uint8_t direct;
	uint64_t off, len, arg;   /* arg: the new size, or the copy's source */
};

static struct {
	const char *path;
	const char *good_path;    /* -g: where the model goes at the end */
	uint64_t seed;
	unsigned long nops;
	uint64_t maxsize, maxlen;
	unsigned align;
	enum access access;
	bool mapped;
	bool disabled[OP_COUNT];
	bool refused[OP_COUNT];   /* left out because the filesystem said EOPNOTSUPP */
	unsigned long count[OP_COUNT];

	int fd, dfd;              /* buffered and O_DIRECT descriptors */
	io_context_t aio;
	uint64_t rng;
	unsigned char *good;      /* the model: what the file holds */
	uint64_t size;
	unsigned char *buf;       /* aligned I/O buffer */
	uint32_t opno;
	struct logent *log;
	unsigned long nlog;
} g;

static uint64_t rnd(void)
{
	/* splitmix64: every seed gives a full-period sequence */
	uint64_t z = (g.rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static bool chance(unsigned percent)
{
	return below(100) < percent;
}

static unsigned char pattern(uint32_t opno, uint64_t pos)
{
	return (unsigned char)(((uint64_t)opno * 131 + pos) % 255 + 1);
}

static void print_ent(FILE *f, const struct logent *e)
{
	fprintf(f, "  #%" PRIu32 " %s%s", e->n, op_names[e->op], e->direct ? " (O_DIRECT)" : "");
	switch (e->op) {
	case OP_TRUNCATE:
		fprintf(f, " to %" PRIu64 " (0x%" PRIx64 ")", e->arg, e->arg);
		break;
	case OP_FSYNC:
	case OP_FDATASYNC:
	case OP_REOPEN:
		break;
	case OP_COPY:
		fprintf(f, " from 0x%" PRIx64 " to 0x%" PRIx64 " len 0x%" PRIx64, e->arg, e->off, e->len);
		break;
	default:
		fprintf(f, " 0x%" PRIx64 " thru 0x%" PRIx64 " (0x%" PRIx64 " bytes)", e->off,
			e->off + e->len - 1, e->len);
	}
	fputc('\n', f);
}

static bool touches(const struct logent *e, uint64_t pos)
{
	switch (e->op) {
	case OP_TRUNCATE:
		return true;
	case OP_READ: case OP_MAPREAD: case OP_AIO_READS:
	case OP_FSYNC: case OP_FDATASYNC: case OP_REOPEN:
		return false;
	default:
		return pos >= e->off && pos < e->off + e->len;
	}
}

static void report_history(uint64_t bad)
{
	unsigned long from = g.nlog > HISTORY ? g.nlog - HISTORY : 0, shown = 0;

	fprintf(stderr, "last operations (seed %" PRIu64 "):\n", g.seed);
	for (unsigned long i = from; i < g.nlog; i++)
		print_ent(stderr, &g.log[i]);
	if (bad == NO_BYTE)
		return;
	fprintf(stderr, "the last operations that changed byte 0x%" PRIx64 ":\n", bad);
	for (unsigned long i = g.nlog; i-- > 0 && shown < 10;)
		if (touches(&g.log[i], bad)) {
			print_ent(stderr, &g.log[i]);
			shown++;
		}
}

static void __attribute__((noreturn, format(printf, 2, 3))) fail(uint64_t bad, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "randops: %s: operation #%" PRIu32 ": ", g.path, g.opno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	report_history(bad);
	exit(1);
}

#define check(cond, ...) do { if (!(cond)) fail(NO_BYTE, __VA_ARGS__); } while (0)

static struct logent *note(enum op op, bool direct, uint64_t off, uint64_t len, uint64_t arg)
{
	struct logent *e = &g.log[g.nlog++];

	*e = (struct logent){ .n = g.opno, .op = (uint8_t)op, .direct = direct,
			      .off = off, .len = len, .arg = arg };
	g.count[op]++;
	return e;
}

/* ---- the model ---- */

static void model_resize(uint64_t size)
{
	if (size > g.size)
		memset(g.good + g.size, 0, size - g.size);
	g.size = size;
}

static void model_write(uint64_t off, const unsigned char *data, uint64_t len)
{
	if (off + len > g.size)
		model_resize(off + len);
	memcpy(g.good + off, data, len);
}

static void model_zero(uint64_t off, uint64_t len, bool keep)
{
	uint64_t end = off + len;

	if (!keep && end > g.size)
		model_resize(end);
	if (off < g.size)
		memset(g.good + off, 0, (end < g.size ? end : g.size) - off);
}

static void compare(const unsigned char *got, uint64_t off, uint64_t len, const char *what)
{
	if (!memcmp(got, g.good + off, len))
		return;
	uint64_t i = 0;

	while (got[i] == g.good[off + i])
		i++;
	char exp[64] = "", found[64] = "";

	for (uint64_t j = i; j < len && j < i + 16; j++) {
		snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), "%02x", g.good[off + j]);
		snprintf(found + strlen(found), sizeof(found) - strlen(found), "%02x", got[j]);
	}
	fail(off + i, "%s of 0x%" PRIx64 " bytes at 0x%" PRIx64 ": bad data at 0x%" PRIx64
	     " (file size 0x%" PRIx64 "): expected %s, found %s", what, len, off, off + i,
	     g.size, exp, found);
}

/* ---- choosing ranges ---- */

static bool use_direct(void)
{
	switch (g.access) {
	case ACC_BUFFERED:
		return false;
	case ACC_MIXED:
		return chance(50);
	default:
		return true;
	}
}

static uint64_t align_down(uint64_t v, bool direct)
{
	return direct ? v - v % g.align : v;
}

/* An offset near the end of the file, at it, in its first 128 KiB (where a
 * block map turns from direct to indirect blocks), or anywhere below
 * maxsize. */
static uint64_t pick_offset(bool direct, uint64_t len)
{
	uint64_t off, r = below(100), lim = g.maxsize - len;

	if (r < 10)
		off = below(128 << 10);
	else if (r < 40)
		off = g.size > 65536 ? g.size - 65536 + below(131072) : below(g.size + 65536);
	else if (r < 50)
		off = g.size;
	else
		off = below(g.maxsize);
	off = off > lim ? lim : off;
	return align_down(off, direct);
}

static uint64_t pick_length(bool direct)
{
	uint64_t len, r = below(100);

	if (r < 25)
		len = 1 + below(200);
	else if (r < 45)
		len = g.align * (1 + below(8)) + (direct ? 0 : below(3)) - (direct ? 0 : 1);
	else
		len = 1 + below(g.maxlen);
	if (direct) {
		len = align_down(len, true);
		if (!len)
			len = g.align;
	}
	return len > g.maxlen ? align_down(g.maxlen, direct) : len;
}

static void fill(unsigned char *buf, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		buf[i] = pattern(g.opno, off + i);
}

/* ---- descriptors ---- */

static void open_files(void)
{
	g.fd = open(g.path, O_RDWR);
	check(g.fd >= 0, "open: %s", strerror(errno));
	g.dfd = -1;
	if (g.access != ACC_BUFFERED) {
		g.dfd = open(g.path, O_RDWR | O_DIRECT);
		check(g.dfd >= 0, "open O_DIRECT: %s", strerror(errno));
	}
}

static void close_files(void)
{
	check(close(g.fd) == 0, "close: %s", strerror(errno));
	if (g.dfd >= 0)
		check(close(g.dfd) == 0, "close O_DIRECT: %s", strerror(errno));
}

static void check_size(void)
{
	struct stat st;

	check(fstat(g.fd, &st) == 0, "fstat: %s", strerror(errno));
	check((uint64_t)st.st_size == g.size, "size is 0x%" PRIx64 ", expected 0x%" PRIx64,
	      (uint64_t)st.st_size, g.size);
}

/* ---- reads and writes ---- */

static ssize_t aio_one(bool write, void *buf, uint64_t len, uint64_t off)
{
	struct iocb cb, *cbp = &cb;
	struct io_event ev;
	int r;

	if (write)
		io_prep_pwrite(&cb, g.dfd, buf, len, (long long)off);
	else
		io_prep_pread(&cb, g.dfd, buf, len, (long long)off);
	r = io_submit(g.aio, 1, &cbp);
	check(r == 1, "io_submit: %s", strerror(-r));
	r = io_getevents(g.aio, 1, 1, &ev, NULL);
	check(r == 1, "io_getevents: %s", strerror(-r));
	return (ssize_t)ev.res;
}

static ssize_t do_io(bool write, bool direct, void *buf, uint64_t len, uint64_t off)
{
	if (direct && g.access != ACC_DIRECT)
		return aio_one(write, buf, len, off);
	if (write)
		return pwrite(direct ? g.dfd : g.fd, buf, len, (off_t)off);
	return pread(direct ? g.dfd : g.fd, buf, len, (off_t)off);
}

static void op_read(void)
{
	bool direct = use_direct();
	uint64_t len = pick_length(direct), off;

	if (g.size && chance(80))
		off = align_down(below(g.size), direct);
	else
		off = pick_offset(direct, len);
	note(OP_READ, direct, off, len, 0);
	ssize_t got = do_io(false, direct, g.buf, len, off);
	uint64_t want = off >= g.size ? 0 : (g.size - off < len ? g.size - off : len);

	check(got >= 0, "read of 0x%" PRIx64 " at 0x%" PRIx64 ": %s", len, off, strerror(errno));
	check((uint64_t)got == want, "read of 0x%" PRIx64 " at 0x%" PRIx64 " returned 0x%zx, expected 0x%" PRIx64,
	      len, off, got, want);
	compare(g.buf, off, want, direct ? "O_DIRECT read" : "read");
}

static void op_write(void)
{
	bool direct = use_direct();
	uint64_t len = pick_length(direct), off = pick_offset(direct, len);

	note(OP_WRITE, direct, off, len, 0);
	fill(g.buf, off, len);
	ssize_t got = do_io(true, direct, g.buf, len, off);

	check(got >= 0, "write of 0x%" PRIx64 " at 0x%" PRIx64 ": %s", len, off, strerror(errno));
	check((uint64_t)got == len, "short write: 0x%zx of 0x%" PRIx64 " at 0x%" PRIx64, got, len, off);
	model_write(off, g.buf, len);
}

/* Up to MAX_BATCH O_DIRECT requests in one io_submit: writes to ranges that
 * do not overlap (their order is not defined), or reads anywhere. */
static void op_aio_batch(bool write)
{
	struct iocb cb[MAX_BATCH], *cbp[MAX_BATCH];
	struct io_event ev[MAX_BATCH];
	uint64_t off[MAX_BATCH], len[MAX_BATCH];
	unsigned n = 2 + (unsigned)below(MAX_BATCH - 1), got = 0;
	uint64_t slice = align_down(g.maxlen / MAX_BATCH, true);

	for (unsigned i = 0; i < n; i++) {
		len[i] = g.align * (1 + below(slice / g.align));
		if (write) {
			/* slot i of n equal parts of [0, maxsize): no overlaps */
			uint64_t part = align_down(g.maxsize / n, true);

			off[i] = part * i + align_down(below(part - len[i] + 1), true);
		} else {
			off[i] = align_down(below(g.size + g.align), true);
		}
		note(write ? OP_AIO_WRITES : OP_AIO_READS, true, off[i], len[i], 0);
		unsigned char *b = g.buf + (size_t)i * slice;

		if (write) {
			fill(b, off[i], len[i]);
			io_prep_pwrite(&cb[i], g.dfd, b, len[i], (long long)off[i]);
		} else {
			io_prep_pread(&cb[i], g.dfd, b, len[i], (long long)off[i]);
		}
		cb[i].data = (void *)(uintptr_t)i;
		cbp[i] = &cb[i];
	}
	int r = io_submit(g.aio, (long)n, cbp);

	check(r == (int)n, "io_submit of %u: %s", n, r < 0 ? strerror(-r) : "short");
	while (got < n) {
		r = io_getevents(g.aio, 1, n - got, ev + got, NULL);
		check(r > 0, "io_getevents: %s", strerror(-r));
		got += (unsigned)r;
	}
	if (write)
		for (unsigned j = 0; j < n; j++) {
			unsigned i = (unsigned)(uintptr_t)ev[j].data;

			check(ev[j].res == len[i], "AIO write of 0x%" PRIx64 " at 0x%" PRIx64 " returned %ld",
			      len[i], off[i], (long)ev[j].res);
			model_write(off[i], g.buf + (size_t)i * slice, len[i]);
		}
	else
		for (unsigned j = 0; j < n; j++) {
			unsigned i = (unsigned)(uintptr_t)ev[j].data;
			uint64_t want = off[i] >= g.size ? 0 : (g.size - off[i] < len[i] ? g.size - off[i] : len[i]);

			check(ev[j].res == want, "AIO read of 0x%" PRIx64 " at 0x%" PRIx64
			      " returned %ld, expected 0x%" PRIx64, len[i], off[i], (long)ev[j].res, want);
			compare(g.buf + (size_t)i * slice, off[i], want, "AIO read");
		}
}

/* ---- mapped reads and writes ---- */

static long page_size;

static void *map_range(uint64_t off, uint64_t len, int prot, uint64_t *delta)
{
	uint64_t start = off - off % (uint64_t)page_size;
	void *p = mmap(NULL, len + (off - start), prot, MAP_SHARED, g.fd, (off_t)start);

	check(p != MAP_FAILED, "mmap of 0x%" PRIx64 " at 0x%" PRIx64 ": %s", len, off, strerror(errno));
	*delta = off - start;
	return p;
}

static void op_mapread(void)
{
	if (!g.size)
		return;
	uint64_t off = below(g.size), len = pick_length(false), delta;

	if (len > g.size - off)
		len = g.size - off;
	note(OP_MAPREAD, false, off, len, 0);
	unsigned char *p = map_range(off, len, PROT_READ, &delta);

	compare(p + delta, off, len, "mapped read");
	check(munmap(p, len + delta) == 0, "munmap: %s", strerror(errno));
}

static void op_mapwrite(void)
{
	uint64_t len = pick_length(false), off = pick_offset(false, len), delta;

	note(OP_MAPWRITE, false, off, len, 0);
	if (off + len > g.size) {
		check(ftruncate(g.fd, (off_t)(off + len)) == 0, "ftruncate before a mapped write: %s",
		      strerror(errno));
		model_resize(off + len);
	}
	unsigned char *p = map_range(off, len, PROT_READ | PROT_WRITE, &delta);

	fill(p + delta, off, len);
	model_write(off, p + delta, len);
	if (chance(50))
		check(msync(p, len + delta, MS_SYNC) == 0, "msync: %s", strerror(errno));
	check(munmap(p, len + delta) == 0, "munmap: %s", strerror(errno));
}

/* ---- size and allocation ---- */

static void op_truncate(void)
{
	uint64_t size, r = below(100);

	if (r < 10)
		size = 0;
	else if (r < 60)
		size = g.size > 65536 ? g.size - 65536 + below(131072) : below(g.size + 65536);
	else
		size = below(g.maxsize + 1);
	if (size > g.maxsize)
		size = g.maxsize;
	if (g.access != ACC_BUFFERED && chance(50))
		size = align_down(size, true);
	note(OP_TRUNCATE, false, 0, 0, size);
	check(ftruncate(g.fd, (off_t)size) == 0, "ftruncate to 0x%" PRIx64 ": %s", size, strerror(errno));
	model_resize(size);
}

static void refuse(enum op op)
{
	g.refused[op] = g.disabled[op] = true;
	g.nlog--;
	g.count[op]--;
}

static void op_fallocate(enum op op)
{
	static const int modes[OP_COUNT] = {
		[OP_FALLOC] = 0, [OP_FALLOC_KEEP] = FALLOC_FL_KEEP_SIZE,
		[OP_PUNCH] = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		[OP_ZERO] = FALLOC_FL_ZERO_RANGE,
		[OP_ZERO_KEEP] = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
	};
	uint64_t len = pick_length(false), off;

	/* punches and zeroes more often where the data is */
	if (op != OP_FALLOC && op != OP_FALLOC_KEEP && g.size && chance(50))
		off = below(g.size);
	else
		off = pick_offset(false, len);
	if (off + len > g.maxsize)
		len = g.maxsize - off;
	if (!len)
		return;
	note(op, false, off, len, 0);
	if (fallocate(g.fd, modes[op], (off_t)off, (off_t)len) != 0) {
		if (errno == EOPNOTSUPP) {
			refuse(op);
			return;
		}
		fail(off, "fallocate(%s) of 0x%" PRIx64 " at 0x%" PRIx64 ": %s", op_names[op], len,
		     off, strerror(errno));
	}
	if (op == OP_FALLOC && off + len > g.size)
		model_resize(off + len);     /* allocating keeps the bytes there are */
	else if (op != OP_FALLOC && op != OP_FALLOC_KEEP)
		model_zero(off, len, op != OP_ZERO);
}

static void op_copy(void)
{
	/* through the descriptor reads and writes use, as fsx does: aligned
	 * for O_DIRECT */
	bool direct = use_direct();
	int fd = direct ? g.dfd : g.fd;
	uint64_t src = align_down(below(g.size), direct), len = pick_length(direct), dst;

	if (src >= g.size)
		return;
	if (len > g.size - src)
		len = align_down(g.size - src, direct);
	if (!len)
		return;
	dst = pick_offset(direct, len);
	/* overlapping ranges within one file are refused with EINVAL */
	if (dst < src + len && src < dst + len)
		return;

	note(OP_COPY, direct, dst, len, src);
	loff_t in = (loff_t)src, out = (loff_t)dst;
	uint64_t done = 0;

	while (done < len) {
		ssize_t n = copy_file_range(fd, &in, fd, &out, len - done, 0);

		if (n < 0 && (errno == EOPNOTSUPP || errno == EXDEV || errno == ENOSYS) && !done) {
			refuse(OP_COPY);
			return;
		}
		check(n > 0, "copy_file_range of 0x%" PRIx64 " from 0x%" PRIx64 " to 0x%" PRIx64 ": %s",
		      len, src, dst, n < 0 ? strerror(errno) : "no progress");
		done += (uint64_t)n;
	}
	memmove(g.buf, g.good + src, len);
	model_write(dst, g.buf, len);
}

static void op_sync(enum op op)
{
	note(op, false, 0, 0, 0);
	check((op == OP_FSYNC ? fsync(g.fd) : fdatasync(g.fd)) == 0, "%s: %s", op_names[op],
	      strerror(errno));
}

static void op_reopen(void)
{
	note(OP_REOPEN, false, 0, 0, 0);
	close_files();
	open_files();
}

/* ---- the run ---- */

static void verify_whole(const char *when)
{
	uint64_t done = 0;

	while (done < g.size) {
		uint64_t chunk = g.size - done < g.maxlen ? g.size - done : g.maxlen;
		ssize_t n = pread(g.fd, g.buf, chunk, (off_t)done);

		check(n == (ssize_t)chunk, "reading the whole file (%s) at 0x%" PRIx64 ": %s", when,
		      done, n < 0 ? strerror(errno) : "short read");
		compare(g.buf, done, chunk, when);
		done += chunk;
	}
	check(pread(g.fd, g.buf, 1, (off_t)g.size) == 0, "a read at the end of the file (%s) found data",
	      when);
}

static enum op pick_op(void)
{
	unsigned total = 0;

	for (int i = 0; i < OP_COUNT; i++)
		total += g.disabled[i] ? 0 : op_weight[i];
	uint64_t r = below(total);

	for (int i = 0; i < OP_COUNT; i++) {
		if (g.disabled[i])
			continue;
		if (r < op_weight[i])
			return (enum op)i;
		r -= op_weight[i];
	}
	return OP_READ;
}

static void run_one(enum op op)
{
	switch (op) {
	case OP_READ: op_read(); break;
	case OP_WRITE: op_write(); break;
	case OP_MAPREAD: op_mapread(); break;
	case OP_MAPWRITE: op_mapwrite(); break;
	case OP_TRUNCATE: op_truncate(); break;
	case OP_FALLOC: case OP_FALLOC_KEEP: case OP_PUNCH: case OP_ZERO: case OP_ZERO_KEEP:
		op_fallocate(op);
		break;
	case OP_COPY: op_copy(); break;
	case OP_FSYNC: case OP_FDATASYNC: op_sync(op); break;
	case OP_REOPEN: op_reopen(); break;
	case OP_AIO_WRITES: op_aio_batch(true); break;
	case OP_AIO_READS: op_aio_batch(false); break;
	case OP_COUNT: break;
	}
}

static void save_model(void)
{
	FILE *f = fopen(g.good_path, "w");

	check(f && fwrite(g.good, 1, g.size, f) == g.size && fclose(f) == 0, "writing %s: %s",
	      g.good_path, strerror(errno));
}

static void print_summary(void)
{
	bool first = true;

	printf("{\"seed\": %" PRIu64 ", \"ops\": %lu, \"counts\": {", g.seed, g.nops);
	for (int i = 0; i < OP_COUNT; i++)
		if (g.count[i]) {
			printf("%s\"%s\": %lu", first ? "" : ", ", op_names[i], g.count[i]);
			first = false;
		}
	printf("}, \"refused\": [");
	first = true;
	for (int i = 0; i < OP_COUNT; i++)
		if (g.refused[i]) {
			printf("%s\"%s\"", first ? "" : ", ", op_names[i]);
			first = false;
		}
	printf("], \"size\": %" PRIu64 "}\n", g.size);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: randops [-N ops] [-S seed] [-l maxsize] [-o maxlen] [-a align]\n"
		"               [-i buffered|direct|aio|mixed] [-m] [-x op,op...] [-g GOOD] FILE\n"
		"  -i  how reads and writes are made: buffered (default); direct: O_DIRECT\n"
		"      pread/pwrite; aio: O_DIRECT through libaio, also batches of requests;\n"
		"      mixed: buffered or O_DIRECT through libaio, chosen per operation\n"
		"  -m  mapped reads and writes too\n"
		"  -x  leave these operations out\n"
		"  -g  at the end, write what FILE must hold to GOOD\n");
	exit(2);
}

static void exclude(char *list)
{
	for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
		int i = 0;

		while (i < OP_COUNT && strcmp(op_names[i], name))
			i++;
		if (i == OP_COUNT) {
			fprintf(stderr, "randops: unknown operation '%s'\n", name);
			exit(2);
		}
		g.disabled[i] = true;
	}
}

static void parse(int argc, char **argv)
{
	int c;

	g.nops = 10000;
	g.maxsize = 8 << 20;
	g.maxlen = 256 << 10;
	g.align = 4096;
	while ((c = getopt(argc, argv, "N:S:l:o:a:i:mx:g:")) != -1) {
		switch (c) {
		case 'N': g.nops = strtoul(optarg, NULL, 0); break;
		case 'S': g.seed = strtoull(optarg, NULL, 0); break;
		case 'l': g.maxsize = strtoull(optarg, NULL, 0); break;
		case 'o': g.maxlen = strtoull(optarg, NULL, 0); break;
		case 'a': g.align = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'm': g.mapped = true; break;
		case 'x': exclude(optarg); break;
		case 'g': g.good_path = optarg; break;
		case 'i':
			if (!strcmp(optarg, "buffered")) g.access = ACC_BUFFERED;
			else if (!strcmp(optarg, "direct")) g.access = ACC_DIRECT;
			else if (!strcmp(optarg, "aio")) g.access = ACC_AIO;
			else if (!strcmp(optarg, "mixed")) g.access = ACC_MIXED;
			else usage();
			break;
		default: usage();
		}
	}
	if (optind != argc - 1 || !g.align || g.align & (g.align - 1) ||
	    g.maxlen < (uint64_t)MAX_BATCH * g.align || g.maxsize < 4 * g.maxlen)
		usage();
	g.path = argv[optind];
	g.disabled[OP_MAPREAD] |= !g.mapped;
	g.disabled[OP_MAPWRITE] |= !g.mapped;
	/* batches are libaio's; the others carry their own direct choice */
	g.disabled[OP_AIO_WRITES] |= g.access != ACC_AIO && g.access != ACC_MIXED;
	g.disabled[OP_AIO_READS] |= g.access != ACC_AIO && g.access != ACC_MIXED;
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	page_size = sysconf(_SC_PAGESIZE);
	g.rng = g.seed;
	g.good = calloc(1, g.maxsize + g.maxlen);
	g.log = calloc(g.nops * MAX_BATCH + 1, sizeof(*g.log));
	check(g.good && g.log, "out of memory");
	check(posix_memalign((void **)&g.buf, 4096, g.maxlen + 4096) == 0, "out of memory");
	int fd = open(g.path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	check(fd >= 0, "create: %s", strerror(errno));
	close(fd);
	open_files();
	if (g.access == ACC_AIO || g.access == ACC_MIXED) {
		int r = io_setup(MAX_BATCH, &g.aio);

		check(r == 0, "io_setup: %s", strerror(-r));
	}
	for (g.opno = 1; g.opno <= g.nops; g.opno++) {
		run_one(pick_op());
		check_size();
		if (g.opno % 1000 == 0)
			verify_whole("whole-file check");
	}
	verify_whole("final check");
	close_files();
	if (g.aio)
		io_destroy(g.aio);
	if (g.good_path)
		save_model();
	print_summary();
	free(g.buf);
	free(g.good);
	free(g.log);
	return 0;
}
