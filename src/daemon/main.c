/* kaiofs: command line, device, mount, run, ordered teardown. */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "arena.h"
#include "device.h"
#include "engine.h"
#include "fs.h"
#include "io.h"
#include "log.h"
#include "ops.h"
#include "options.h"
#include "rx.h"
#include "stats.h"
#include "statsrv.h"
#include "util.h"
#include "workq.h"

#define MAX_WRITE (1u << 20)
#define ERRLEN 512

/* libfuse's messages, in kaiofs' voice: one "kaiofs: " per line, even when
 * libfuse writes a line in several calls */
static bool log_debug;

static void fuse_log_to_stderr(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static bool at_line_start = true;
	char msg[1024];
	const char *text = msg;
	size_t n;

	if (level > FUSE_LOG_NOTICE && !log_debug)
		return;
	if (log_is_syslog()) {
		vsyslog(level <= FUSE_LOG_ERR ? LOG_ERR : LOG_NOTICE, fmt, ap);
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (at_line_start && !strncmp(text, "fuse: ", 6))
		text += 6;
	n = strlen(text);
	if (n == 0)
		return;
	fprintf(stderr, "%s%s", at_line_start ? "kaiofs: " : "", text);
	at_line_start = text[n - 1] == '\n';
}

/* ---- daemonizing: the parent waits until the child is mounted (or failed)
 * so that every start-up error reaches the caller's terminal and exit code */

static int ready_fd = -1;

static void daemon_fork(void)
{
	int p[2], status;
	pid_t pid;
	char c;

	if (pipe(p) != 0) {
		say("pipe: %s", strerror(errno));
		exit(1);
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		say("fork: %s", strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &c, 1) == 1)
			_exit(c);
		if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
			_exit(WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
		_exit(1);
	}
	close(p[0]);
	ready_fd = p[1];
	setsid();
}

static void daemon_ready(void)
{
	char ok = 0;
	int null;

	if (ready_fd < 0)
		return;
	if (chdir("/") != 0)
		(void)0;
	/* the caller's terminal or pipe is let go: later messages go to syslog */
	log_to_syslog();
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (write(ready_fd, &ok, 1) != 1)
		(void)0;
	close(ready_fd);
	ready_fd = -1;
}

/* ---- the mount ---- */

struct mount_ctx {
	struct options *o;
	struct device dev;
	struct arena *arena;
	struct engine *engine;
	struct io_dev io;
	bool io_ready;
	struct raw_fs rawfs;
	struct fs *fs;              /* filesystem mode */
	struct workq *wq;
	struct ext4_front front;
	bool front_ready;
	struct fuse_session *se;
	struct statsrv *srv;
};

static size_t io_unit(const struct device *dev)
{
	return dev->logical_block > 4096 ? dev->logical_block : 4096;
}

/* Memory an io_uring ring of `depth` entries counts against the memlock
 * limit of a process without CAP_IPC_LOCK (recent kernels count the rings
 * too): its entries (64 bytes), their index (4) and twice as many
 * completions (16 each), rounded up to a power of two, and the headers. */
static uint64_t uring_ring_bytes(unsigned depth)
{
	uint64_t n = 1;

	while (n < depth)
		n <<= 1;
	return round_up(n * (64 + 4 + 2 * 16) + 2 * 4096, 4096);
}

/* The largest arena the memlock limit lets an unprivileged user lock, in
 * whole MiB, if that is below the default and not below the minimum. With
 * io_uring each ring registers the whole arena, and that counts against the
 * same limit once per ring, beside the rings themselves. */
static uint64_t arena_within_memlock(const struct options *o)
{
	struct rlimit rl;
	uint64_t fit;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	fit = rl.rlim_cur;
	if (o->engine == ENGINE_URING) {
		uint64_t rings = o->reapers * uring_ring_bytes(o->queue_depth);

		fit = fit > rings ? (fit - rings) / o->reapers : 0;
	}
	if (fit >= DEFAULT_ARENA || fit < MIN_ARENA)
		return 0;
	return fit >> 20 << 20;
}

static struct engine_config engine_config(const struct mount_ctx *m)
{
	struct engine_config cfg = { .kind = m->o->engine, .depth = m->o->queue_depth,
				     .nctx = m->o->reapers, .fixed_fd = m->dev.fd };

	if (m->arena) {
		cfg.fixed_base = arena_base(m->arena);
		cfg.fixed_len = arena_size(m->arena);
	}
	return cfg;
}

static int start_engine(struct mount_ctx *m)
{
	char err[ERRLEN];
	struct engine_config cfg;
	uint64_t fit;

	m->arena = arena_create(m->o->arena, io_unit(&m->dev), err, sizeof(err));
	/* no arena= given: an unprivileged user gets what the limit allows */
	if (!m->arena && !m->o->arena_s && (fit = arena_within_memlock(m->o)) != 0)
		m->arena = arena_create(fit, io_unit(&m->dev), err, sizeof(err));
	if (!m->arena) {
		say("%s", err);
		return -1;
	}
	cfg = engine_config(m);
	m->engine = engine_create(&cfg, err, sizeof(err));
	if (!m->engine) {
		say("%s", err);
		return -1;
	}
	return 0;
}

/* The receive threads' buffers take at most a quarter of the arena. */
static unsigned rx_threads(const struct mount_ctx *m)
{
	size_t fit = arena_size(m->arena) / (4 * rx_slot_len(arena_unit(m->arena)));
	unsigned n = m->o->fuse_threads ? m->o->fuse_threads : rx_default_threads();

	if (n > fit)
		n = fit < 1 ? 1 : (unsigned)fit;
	return n;
}

static bool no_device_io(void *engine)
{
	return engine_idle(engine);
}

static int run_loop(struct mount_ctx *m)
{
	struct rx_config cfg = { .nthreads = rx_threads(m), .poll_us = m->o->poll_us,
				 .quiet = no_device_io, .quiet_arg = m->engine };
	/* shared mappings of FOPEN_DIRECT_IO files (io=direct) */
	struct rx_hooks hooks = { .init_flags = FUSE_DIRECT_IO_ALLOW_MMAP };

	if (!m->o->raw) {
		hooks.extra = ext4_extra_request;
		hooks.extra_ctx = &m->front;
	}
	if (rx_hooks_install(m->se, &hooks) != 0) {
		say("cannot hook the FUSE session");
		return -1;
	}
	if (m->o->single_thread)
		return fuse_session_loop(m->se);
	return rx_loop(m->se, m->arena, &cfg);
}

static void print_stats(void)
{
	char *t = stats_render(false);

	if (t)
		say_lines(t);
	free(t);
}

/* Ordered teardown: every reply first, then metadata, the engine, the
 * mount, and last the volume's clean state. */
static int teardown(struct mount_ctx *m, bool mounted)
{
	int ret = 0;

	if (m->front_ready)
		ext4_front_drain(&m->front);
	if (m->io_ready)
		io_dev_drain(&m->io);
	workq_destroy(m->wq);
	m->wq = NULL;
	statsrv_stop(m->srv);
	engine_destroy(m->engine);
	m->engine = NULL;
	if (m->se) {
		if (mounted) {
			fuse_remove_signal_handlers(m->se);
			fuse_session_unmount(m->se);
		}
		fuse_session_destroy(m->se);
	}
	if (m->io_ready)
		io_dev_destroy(&m->io);
	if (m->fs) {
		int r = fs_unmount(m->fs);

		if (r) {
			say("%s: errors while closing the filesystem (%s); run e2fsck -f", m->o->device,
			    strerror(-r));
			ret = 1;
		}
		m->fs = NULL;
	}
	if (mounted && m->o->stats)
		print_stats();
	arena_destroy(m->arena);
	m->arena = NULL;
	device_close(&m->dev);
	return ret;
}

/* Everything up to the mount, writing nothing; returns 0 or 1 (an error has
 * been said). */
static int prepare(struct mount_ctx *m, struct fuse_args *args, const char **ro_reason)
{
	struct options *o = m->o;
	struct engine_config probe_cfg = { .kind = o->engine, .depth = o->queue_depth, .nctx = 1,
					   .fixed_fd = -1 };
	char err[ERRLEN];
	bool ro;

	if (device_open(&m->dev, o->device, o->ro, o->raw, ro_reason, err, sizeof(err)) != 0) {
		say("%s", err);
		return 1;
	}
	if (m->dev.size < io_unit(&m->dev)) {
		say("%s: too small (%llu bytes)", o->device, (unsigned long long)m->dev.size);
		return 1;
	}
	if (!o->raw) {
		struct fs_mount_opts fo = { .device = o->device, .readonly = m->dev.readonly,
					    .dio_align = m->dev.logical_block,
					    .meta_cache = (size_t)o->meta_cache };

		m->fs = fs_mount(&fo, &ro, err, sizeof(err));
		if (!m->fs) {
			say("%s", err);
			return 1;
		}
		if (fs_block_size(m->fs) < m->dev.logical_block) {
			say("%s: the filesystem's %u-byte blocks are smaller than the device's %u-byte sectors",
			    o->device, fs_block_size(m->fs), m->dev.logical_block);
			return 1;
		}
	}
	if ((*ro_reason || o->ro) && fuse_opt_add_arg(args, "-oro") != 0)
		return 1;
	/* everything that can fail for a reason the user can fix is checked
	 * before mounting, in the process that reports back */
	if (engine_probe(&probe_cfg, err, sizeof(err)) != 0) {
		say("%s", err);
		return 1;
	}
	return 0;
}

static bool has_mount_option(const struct fuse_args *args, const char *name)
{
	size_t n = strlen(name);

	for (int i = 1; i < args->argc; i++) {
		const char *p = args->argv[i];

		if (strncmp(p, "-o", 2) == 0)
			p += 2;
		for (; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
			if (strncmp(p, name, n) == 0 && p[n] == '=')
				return true;
	}
	return false;
}

/* The mount table shows DEVICE as the source and fuse.kaiofs as the type, so
 * that df, findmnt and umount helpers know the mount; -o fsname= or subtype=
 * given by the user win. */
static int add_mount_names(struct fuse_args *args, const char *device)
{
	char *name = NULL, *opt = NULL, *full = realpath(device, NULL);
	int r = -1;

	if (!has_mount_option(args, "subtype") && fuse_opt_add_arg(args, "-osubtype=kaiofs") != 0)
		return -1;
	if (has_mount_option(args, "fsname")) {
		free(full);
		return 0;
	}
	/* commas and backslashes in the path are escaped for the option parser */
	if (fuse_opt_add_opt_escaped(&name, full ? full : device) == 0 && asprintf(&opt, "-ofsname=%s", name) > 0)
		r = fuse_opt_add_arg(args, opt);
	free(full);
	free(name);
	free(opt);
	return r;
}

static unsigned max_background(const struct options *o)
{
	unsigned want = o->queue_depth * o->reapers * 2;

	return want < 1024 ? 1024 : want > 65535 ? 65535 : want;
}

static struct fuse_session *new_session(struct mount_ctx *m, struct fuse_args *args)
{
	struct options *o = m->o;
	struct conn_tuning tuning = { .max_write = MAX_WRITE, .max_background = max_background(o),
				     .cached = o->cached, .dio_align = m->dev.logical_block };

	if (add_mount_names(args, o->device) != 0)
		return NULL;
	io_dev_init(&m->io, m->dev.fd, m->dev.size - m->dev.size % io_unit(&m->dev), io_unit(&m->dev),
		    m->engine, m->arena);
	m->io_ready = true;
	if (!o->single_thread)
		m->io.take_buffer = rx_take_payload;
	if (o->raw) {
		raw_fs_init(&m->rawfs, &m->io, o->device, m->dev.readonly, &tuning);
		return fuse_session_new(args, &raw_ops, sizeof(raw_ops), &m->rawfs);
	}
	m->wq = workq_create(2);
	if (!m->wq) {
		say("cannot start worker threads");
		return NULL;
	}
	ext4_front_init(&m->front, m->fs, &m->io, m->wq, &tuning);
	m->front_ready = true;
	/* ext4 permission semantics: the kernel checks modes for every user */
	if (fuse_opt_add_arg(args, "-odefault_permissions") != 0)
		return NULL;
	return fuse_session_new(args, &ext4_ops, sizeof(ext4_ops), &m->front);
}

static int mount_and_run(struct mount_ctx *m, struct fuse_args *args, const char *ro_reason)
{
	struct options *o = m->o;
	char err[ERRLEN];
	int ret;

	if (start_engine(m) != 0 || !(m->se = new_session(m, args)) ||
	    fuse_set_signal_handlers(m->se) != 0) {
		teardown(m, false);
		return 1;
	}
	m->front.se = m->se;
	if (m->fs && fs_mark_mounted(m->fs) != 0) {
		say("%s: cannot write the superblock", o->device);
		teardown(m, false);
		return 1;
	}
	/* said before the mount appears, so whoever sees the mount has the notice */
	if (ro_reason)
		say("%s: %s, mounting read-only", o->device, ro_reason);
	if (fuse_session_mount(m->se, o->mountpoint) != 0) {
		teardown(m, false);
		return 1;
	}
	m->srv = statsrv_start(o->mountpoint, err, sizeof(err));
	if (!m->srv)
		say("warning: %s; kaiofs-stat will not work for this mount", err);
	daemon_ready();
	ret = run_loop(m);
	/* a loop ended by SIGTERM/SIGINT/SIGHUP reports the signal: a clean exit */
	ret = ret < 0 ? 1 : 0;
	return teardown(m, true) ? 1 : ret;
}

int main(int argc, char **argv)
{
	struct options o;
	struct fuse_args args;
	struct mount_ctx m = { .o = &o, .dev = { .fd = -1 } };
	char err[ERRLEN];
	const char *ro_reason = NULL;
	int ret;

	fuse_set_log_func(fuse_log_to_stderr);
	if (options_parse(argc, argv, &o, &args, err, sizeof(err)) != 0) {
		say("%s", err);
		ret = 1;
	} else if (o.show_help) {
		options_usage(argv[0]);
		ret = 0;
	} else if (o.show_version) {
		printf("kaiofs %s (libfuse %s)\n", KAIOFS_VERSION, fuse_pkgversion());
		ret = 0;
	} else {
		log_debug = o.debug;
		ret = prepare(&m, &args, &ro_reason);
		if (ret == 0) {
			if (!o.foreground)
				daemon_fork();
			ret = mount_and_run(&m, &args, ro_reason);
		}
	}
	if (m.fs)
		fs_unmount(m.fs); /* refused before mounting: nothing was written */
	device_close(&m.dev);
	fuse_opt_free_args(&args);
	options_free(&o);
	return ret;
}
