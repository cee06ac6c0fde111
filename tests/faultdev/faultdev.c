/*
 * faultdev: a test device for kaiofs that fails on command.
 *
 * A FUSE filesystem with one image file in it: `faultdev [options] IMAGE MNT`
 * serves IMAGE as MNT/disk (fixed size, direct I/O: every read, write and
 * fsync of the file reaches faultdev, so O_DIRECT opens, Linux AIO and a
 * loop device with --direct-io=on all work on it), and a control file
 * MNT/ctl. It runs in the foreground until unmounted (fusermount3 -u MNT),
 * SIGTERM, or the "exit" command.
 *
 * Options:
 *   --log PATH    record every write and fsync of the disk, in the order they
 *                 are served, to PATH, and the written bytes to PATH.data
 *   --name NAME   name of the disk file (default "disk")
 *   --debug       libfuse debug output
 *
 * faultdev serves one request at a time (a single-threaded loop), so every
 * request and every control command is totally ordered: a command written to
 * MNT/ctl applies to every request served after the write(2) returns.
 *
 * Control file: write one command per line to MNT/ctl; an unknown command
 * fails the write with EINVAL. OP is one of
 *   read    reads of the disk
 *   write   writes of the disk
 *   flush   FUSE fsync requests: fsync(2), fdatasync(2), IOCB_CMD_FSYNC and
 *           IOCB_CMD_FDSYNC on the disk, a loop device's cache flushes
 *   close   FUSE flush requests, which close(2) of the disk sends
 * and the commands are
 *   fail OP              every OP request fails with EIO
 *   fail OP START-END    (read, write) every request that touches a byte in
 *                        [START, END) fails with EIO; decimal or 0x numbers
 *   fail OP nth N        the Nth OP request from now on fails (once, N >= 1)
 *   clear                forget all rules and "goaway": the device works again
 *   goaway               the device is gone: every open, read, write, fsync
 *                        and close flush of the disk fails with EIO
 *   exit                 faultdev unmounts itself (lazily) and exits: the
 *                        FUSE connection ends and open files fail (ENOTCONN)
 *   mark TEXT            write "M SEQ TEXT" to the log (a test's note of
 *                        what had returned to it by then)
 * A failed request changes nothing in the image. Reading MNT/ctl returns
 * "name value" lines: the counts of read, write, flush and close requests
 * seen, of errors injected, of writes logged, the number of rules, and
 * whether the device is gone.
 *
 * Log (with --log): one line per event, SEQ counting all lines from 1:
 *   W SEQ OFFSET LENGTH DATAOFF [FUA]
 *                                 a write that reached the image; its bytes
 *                                 are at DATAOFF in PATH.data; FUA: it came
 *                                 with O_DSYNC (RWF_DSYNC, O_SYNC) and is
 *                                 durable by itself
 *   F SEQ DATASYNC                an fsync (DATASYNC 1: fdatasync) that
 *                                 succeeded: every write logged before it is
 *                                 durable
 *   X SEQ OP OFFSET LENGTH        a request failed by a rule or "goaway"
 *                                 (OP "open" too, under "goaway")
 *   C SEQ COMMAND                 a control command
 *   M SEQ TEXT                    a mark
 * The image with the first N writes applied to a copy of the original is
 * what a power cut after write N leaves when the device has no volatile
 * cache; a write after the last F before the cut may also be lost, unless
 * it is a FUA write.
 * tests/faultdev_support.py builds such images. An F covers the writes
 * served before it, even one that reached faultdev's queue after the fsync
 * was issued: requests are logged in the order they are served.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INO_DISK 2
#define INO_CTL 3
#define MAX_RULES 64
#define STATUS_MAX 512

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_CLOSE, OP__N };
static const char *const op_names[OP__N] = { "read", "write", "flush", "close" };

enum rule_kind { RULE_ALL, RULE_RANGE, RULE_NTH };

struct rule {
	enum op op;
	enum rule_kind kind;
	uint64_t start, end; /* RULE_RANGE: [start, end) */
	uint64_t left;       /* RULE_NTH: requests until the failing one */
};

static struct {
	int img_fd;
	uint64_t size;
	const char *name;
	int log_fd, data_fd;
	uint64_t data_off, seq, logged_writes;
	struct rule rules[MAX_RULES];
	unsigned nrules;
	bool gone;
	uint64_t count[OP__N], injected;
	struct fuse_session *se;
} S = { .img_fd = -1, .log_fd = -1, .data_fd = -1 };

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("faultdev: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* ---- the log ---- */

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("writing the log: %s", n < 0 ? strerror(errno) : "no progress");
		p += n;
		len -= (size_t)n;
	}
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (S.log_fd < 0)
		return;
	S.seq++;
	n = snprintf(line, sizeof(line), "%c %" PRIu64 " ", fmt[0], S.seq);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt + 1, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	write_all(S.log_fd, line, (size_t)n);
}

static void log_write(uint64_t off, const void *data, size_t len, bool fua)
{
	if (S.log_fd < 0)
		return;
	write_all(S.data_fd, data, len);
	log_line("W%" PRIu64 " %zu %" PRIu64 "%s", off, len, S.data_off, fua ? " FUA" : "");
	S.data_off += len;
	S.logged_writes++;
}

/* ---- faults ---- */

/* Whether this request is to fail; counts it (every "nth" rule of its kind
 * counts it, whatever else fails it) and logs the failure. */
static bool inject(enum op op, uint64_t off, uint64_t len)
{
	bool fail = S.gone;

	S.count[op]++;
	for (unsigned i = 0; i < S.nrules; i++) {
		struct rule *r = &S.rules[i];

		if (r->op != op)
			continue;
		switch (r->kind) {
		case RULE_ALL:
			fail = true;
			break;
		case RULE_RANGE:
			fail = fail || (off < r->end && off + len > r->start);
			break;
		case RULE_NTH:
			if (--r->left == 0) {
				fail = true;
				S.rules[i--] = S.rules[--S.nrules];
			}
			break;
		}
	}
	if (fail) {
		S.injected++;
		log_line("X%s %" PRIu64 " %" PRIu64, op_names[op], off, len);
	}
	return fail;
}

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (!*s || *s == '-')
		return false;
	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno == 0 && *end == 0;
}

/* "fail OP [START-END | nth N]" without the "fail": 0 or -EINVAL */
static int parse_fail(char *args)
{
	char *words[4], *save = NULL;
	unsigned n = 0;
	struct rule r = { .kind = RULE_ALL };
	int op;

	for (char *w = strtok_r(args, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		if (n == 4)
			return -EINVAL;
		words[n++] = w;
	}
	if (n == 0)
		return -EINVAL;
	for (op = 0; op < OP__N && strcmp(words[0], op_names[op]); op++)
		;
	if (op == OP__N)
		return -EINVAL;
	r.op = (enum op)op;
	if (n == 3 && !strcmp(words[1], "nth")) {
		if (!parse_u64(words[2], &r.left) || r.left == 0)
			return -EINVAL;
		r.kind = RULE_NTH;
	} else if (n == 2) {
		char *dash = strchr(words[1], '-');

		if (!dash || (r.op != OP_READ && r.op != OP_WRITE))
			return -EINVAL;
		*dash = 0;
		if (!parse_u64(words[1], &r.start) || !parse_u64(dash + 1, &r.end) ||
		    r.end <= r.start)
			return -EINVAL;
		r.kind = RULE_RANGE;
	} else if (n != 1) {
		return -EINVAL;
	}
	if (S.nrules == MAX_RULES)
		return -ENOSPC;
	S.rules[S.nrules++] = r;
	return 0;
}

static int run_command(char *line)
{
	while (*line == ' ' || *line == '\t')
		line++;
	if (!*line)
		return 0;
	if (strncmp(line, "mark ", 5) == 0) {
		log_line("M%s", line + 5);
		return 0;
	}
	log_line("C%s", line);
	if (strncmp(line, "fail ", 5) == 0)
		return parse_fail(line + 5);
	if (!strcmp(line, "clear")) {
		S.nrules = 0;
		S.gone = false;
		return 0;
	}
	if (!strcmp(line, "goaway")) {
		S.gone = true;
		return 0;
	}
	if (!strcmp(line, "exit")) {
		fuse_session_exit(S.se);
		return 0;
	}
	return -EINVAL;
}

static int run_commands(const char *buf, size_t len)
{
	char *text = strndup(buf, len), *save = NULL;
	int r = 0;

	if (!text)
		return -ENOMEM;
	for (char *line = strtok_r(text, "\n", &save); line && !r; line = strtok_r(NULL, "\n", &save))
		r = run_command(line);
	free(text);
	return r;
}

static size_t status_text(char *buf, size_t cap)
{
	return (size_t)snprintf(buf, cap,
		"reads %" PRIu64 "\nwrites %" PRIu64 "\nflushes %" PRIu64 "\ncloses %" PRIu64
		"\ninjected %" PRIu64 "\nlogged_writes %" PRIu64 "\nrules %u\ngone %d\n",
		S.count[OP_READ], S.count[OP_WRITE], S.count[OP_FLUSH], S.count[OP_CLOSE],
		S.injected, S.logged_writes, S.nrules, S.gone ? 1 : 0);
}

/* ---- FUSE operations ---- */

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_blksize = 4096;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == INO_DISK) {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = (off_t)S.size;
		st->st_blocks = (blkcnt_t)(S.size / 512);
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
	}
}

static bool valid_ino(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID || ino == INO_DISK || ino == INO_CTL;
}

static void fd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (!strcmp(name, S.name))
		e.ino = INO_DISK;
	else if (!strcmp(name, "ctl"))
		e.ino = INO_CTL;
	else {
		fuse_reply_err(req, ENOENT);
		return;
	}
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	fill_stat(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void fd_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (!valid_ino(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_stat(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

/* The size is fixed; anything else (times, modes) is accepted and ignored. */
static void fd_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (!valid_ino(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && ino == INO_DISK && (uint64_t)attr->st_size != S.size) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fill_stat(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void fd_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	const char *names[] = { ".", "..", S.name, "ctl" };
	const fuse_ino_t inos[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, INO_DISK, INO_CTL };
	char *buf = malloc(size);
	size_t used = 0;

	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		free(buf);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (off_t i = off; i < 4; i++) {
		struct stat st;
		size_t n;

		fill_stat(inos[i], &st);
		n = fuse_add_direntry(req, buf + used, size - used, names[i], &st, i + 1);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void fd_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino == FUSE_ROOT_ID) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (ino == INO_DISK && S.gone) {
		S.injected++;
		log_line("Xopen 0 0");
		fuse_reply_err(req, EIO);
		return;
	}
	fi->direct_io = 1;
	fi->keep_cache = 0;
	/* close(2) of the control file sends no FUSE flush: it completes
	 * even after "exit" */
	fi->noflush = ino == INO_CTL;
	fuse_reply_open(req, fi);
}

static void fd_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	uint64_t o = (uint64_t)off;
	size_t done = 0;
	char *buf;

	(void)fi;
	if (ino == INO_CTL) {
		char text[STATUS_MAX];
		size_t len = status_text(text, sizeof(text));

		fuse_reply_buf(req, text + (o < len ? o : len), o < len ? (len - o < size ? len - o : size) : 0);
		return;
	}
	if (inject(OP_READ, o, size)) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (o >= S.size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > S.size - o)
		size = (size_t)(S.size - o);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	while (done < size) {
		ssize_t n = pread(S.img_fd, buf + done, size - done, (off_t)(o + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;

			free(buf);
			fuse_reply_err(req, e);
			return;
		}
		done += (size_t)n;
	}
	fuse_reply_buf(req, buf, size);
	free(buf);
}

static void fd_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	uint64_t o = (uint64_t)off;
	size_t done = 0;
	int r;

	if (ino == INO_CTL) {
		r = run_commands(data, size);
		if (r)
			fuse_reply_err(req, -r);
		else
			fuse_reply_write(req, size);
		return;
	}
	if (inject(OP_WRITE, o, size)) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (o > S.size || size > S.size - o) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	while (done < size) {
		ssize_t n = pwrite(S.img_fd, data + done, size - done, (off_t)(o + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fuse_reply_err(req, n < 0 ? errno : EIO);
			return;
		}
		done += (size_t)n;
	}
	/* RWF_DSYNC/O_DSYNC writes arrive with O_DSYNC: like a write with
	 * forced unit access, durable once it completes */
	log_write(o, data, size, (fi->flags & O_DSYNC) != 0);
	fuse_reply_write(req, size);
}

static void fd_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != INO_DISK) {
		fuse_reply_err(req, 0);
		return;
	}
	if (inject(OP_FLUSH, 0, 0)) {
		fuse_reply_err(req, EIO);
		return;
	}
	log_line("F%d", datasync ? 1 : 0);
	fuse_reply_err(req, 0);
}

static void fd_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	fuse_reply_err(req, ino == INO_DISK && inject(OP_CLOSE, 0, 0) ? EIO : 0);
}

static void fd_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void fd_init(void *data, struct fuse_conn_info *conn)
{
	(void)data;
	conn->max_write = 1u << 20;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops ops = {
	.init = fd_init,
	.lookup = fd_lookup,
	.getattr = fd_getattr,
	.setattr = fd_setattr,
	.readdir = fd_readdir,
	.open = fd_open,
	.read = fd_read,
	.write = fd_write,
	.fsync = fd_fsync,
	.flush = fd_flush,
	.release = fd_release,
};

/* ---- main ---- */

static void usage(FILE *to)
{
	fputs("usage: faultdev [--log PATH] [--name NAME] [--debug] IMAGE MOUNTPOINT\n"
	      "serves IMAGE as MOUNTPOINT/NAME (default \"disk\"); commands go to MOUNTPOINT/ctl\n",
	      to);
}

static int open_log(const char *path, const char *suffix)
{
	char name[4096];
	int fd;

	snprintf(name, sizeof(name), "%s%s", path, suffix);
	fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		die("%s: %s", name, strerror(errno));
	return fd;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "log", required_argument, NULL, 'l' },
		{ "name", required_argument, NULL, 'n' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *log_path = NULL;
	bool debug = false;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct stat st;
	int c, ret;

	S.name = "disk";
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l': log_path = optarg; break;
		case 'n': S.name = optarg; break;
		case 'd': debug = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 2 || !*S.name || strchr(S.name, '/') || !strcmp(S.name, "ctl") ||
	    !strcmp(S.name, ".") || !strcmp(S.name, "..")) {
		usage(stderr);
		return 2;
	}
	S.img_fd = open(argv[optind], O_RDWR | O_CLOEXEC);
	if (S.img_fd < 0 || fstat(S.img_fd, &st) != 0)
		die("%s: %s", argv[optind], strerror(errno));
	if (!S_ISREG(st.st_mode))
		die("%s: not a regular file", argv[optind]);
	S.size = (uint64_t)st.st_size;
	if (log_path) {
		S.log_fd = open_log(log_path, "");
		S.data_fd = open_log(log_path, ".data");
	}
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, "fsname=faultdev,subtype=faultdev") ||
	    (debug && fuse_opt_add_arg(&args, "-d")))
		die("out of memory");
	S.se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!S.se)
		die("cannot create the FUSE session");
	if (fuse_set_signal_handlers(S.se) != 0)
		die("cannot set signal handlers");
	if (fuse_session_mount(S.se, argv[optind + 1]) != 0)
		die("cannot mount on %s", argv[optind + 1]);
	ret = fuse_session_loop(S.se);
	fuse_session_unmount(S.se);
	fuse_remove_signal_handlers(S.se);
	fuse_session_destroy(S.se);
	fuse_opt_free_args(&args);
	close(S.img_fd);
	if (S.log_fd >= 0) {
		close(S.log_fd);
		close(S.data_fd);
	}
	return ret < 0 ? 1 : 0;
}
