#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "device.h"
#include "util.h"

enum { KEY_HELP, KEY_VERSION, KEY_FOREGROUND, KEY_DEBUG, KEY_SINGLE };

#define OPT(t, f, v) { t, offsetof(struct options, f), v }

static const struct fuse_opt optspec[] = {
	OPT("raw", raw, 1),
	OPT("ro", ro, 1),
	FUSE_OPT_KEY("ro", FUSE_OPT_KEY_KEEP),
	OPT("stats", stats, 1),
	OPT("arena=%s", arena_s, 0),
	OPT("queue_depth=%s", queue_depth_s, 0),
	OPT("reapers=%s", reapers_s, 0),
	OPT("fuse_threads=%s", fuse_threads_s, 0),
	OPT("io=%s", io_s, 0),
	OPT("engine=%s", engine_s, 0),
	OPT("meta_cache=%s", meta_cache_s, 0),
	OPT("poll_us=%s", poll_us_s, 0),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("--debug", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	/* mount.fuse3 names the program that serves a fuse.kaiofs mount */
	FUSE_OPT_KEY("helper=", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END
};

static int check_mountpoint(struct options *o, const char *arg)
{
	struct stat st;
	char real[PATH_MAX];

	if (stat(arg, &st) != 0) {
		snprintf(o->err, o->errlen, "mountpoint %s: %s", arg,
			 errno == ENOENT ? "does not exist" : strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(o->err, o->errlen, "mountpoint %s: not a directory", arg);
		return -1;
	}
	if (!realpath(arg, real)) {
		snprintf(o->err, o->errlen, "mountpoint %s: %s", arg, strerror(errno));
		return -1;
	}
	if (path_is_mountpoint(real)) {
		snprintf(o->err, o->errlen, "mountpoint %s: already mounted on; unmount it first", real);
		return -1;
	}
	o->mountpoint = strdup(real);
	return 0;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!o->device) {
			o->device = strdup(arg);
			return 0;
		}
		if (!o->mountpoint)
			return check_mountpoint(o, arg);
		o->extra_args++;
		return 0;
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->foreground = o->debug = 1;
		return 1; /* the session takes -d too */
	case KEY_SINGLE:
		o->single_thread = 1;
		return 0;
	default:
		return 1;
	}
}

/* A count option NAME=s from min to max, if given. */
static int count_option(const char *name, const char *s, unsigned long min, unsigned long max,
			unsigned *out, char *err, size_t errlen)
{
	unsigned long v;

	if (!s)
		return 0;
	if (!parse_uint(s, min, max, &v)) {
		if (max == INT32_MAX)
			snprintf(err, errlen, "bad value %s=%s: want a whole number of at least %lu", name, s, min);
		else
			snprintf(err, errlen, "bad value %s=%s: want a whole number from %lu to %lu", name, s, min, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int check_values(struct options *o, char *err, size_t errlen)
{
	o->arena = DEFAULT_ARENA;
	o->queue_depth = DEFAULT_QUEUE_DEPTH;
	o->reapers = DEFAULT_REAPERS;
	o->meta_cache = DEFAULT_META_CACHE;
	o->poll_us = DEFAULT_POLL_US;
	if (o->arena_s && (!parse_size(o->arena_s, &o->arena) || o->arena < MIN_ARENA)) {
		snprintf(err, errlen, "bad value arena=%s: want a size of at least 4M (suffixes K, M, G)",
			 o->arena_s);
		return -1;
	}
	if (o->meta_cache_s && (!parse_size(o->meta_cache_s, &o->meta_cache) || o->meta_cache > MAX_META_CACHE)) {
		snprintf(err, errlen, "bad value meta_cache=%s: want a size of at most 4G (suffixes K, M, G; 0 turns it off)",
			 o->meta_cache_s);
		return -1;
	}
	if (count_option("queue_depth", o->queue_depth_s, 1, INT32_MAX, &o->queue_depth, err, errlen) ||
	    count_option("reapers", o->reapers_s, 1, 64, &o->reapers, err, errlen) ||
	    count_option("fuse_threads", o->fuse_threads_s, 1, 64, &o->fuse_threads, err, errlen) ||
	    count_option("poll_us", o->poll_us_s, 0, MAX_POLL_US, &o->poll_us, err, errlen))
		return -1;
	if (o->io_s) {
		if (strcmp(o->io_s, "cached") != 0 && strcmp(o->io_s, "direct") != 0) {
			snprintf(err, errlen, "bad value io=%s: want direct or cached", o->io_s);
			return -1;
		}
		o->cached = strcmp(o->io_s, "cached") == 0;
	}
	o->engine = ENGINE_AIO;
	if (o->engine_s && !engine_kind_parse(o->engine_s, &o->engine)) {
		snprintf(err, errlen, "bad value engine=%s: want %s or %s", o->engine_s,
			 engine_kind_name(ENGINE_AIO), engine_kind_name(ENGINE_URING));
		return -1;
	}
	return 0;
}

int options_parse(int argc, char **argv, struct options *o, struct fuse_args *args,
		  char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	o->err = err;
	o->errlen = errlen;
	*args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	err[0] = 0;
	if (fuse_opt_parse(args, o, optspec, opt_proc) != 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot parse the command line");
		return -1;
	}
	if (o->show_help || o->show_version)
		return 0;
	if (!o->device || !o->mountpoint || o->extra_args) {
		snprintf(err, errlen, "usage: kaiofs [options] DEVICE MOUNTPOINT (kaiofs --help lists the options)");
		return -1;
	}
	return check_values(o, err, errlen);
}

void options_usage(const char *prog)
{
	printf("usage: %s [options] DEVICE MOUNTPOINT\n\n"
	       "Mount the ext2, ext3 or ext4 filesystem on DEVICE (a block device or an image\n"
	       "file) through FUSE; file data moves by Linux kernel AIO on an O_DIRECT\n"
	       "descriptor of the device (or by io_uring with -o engine=uring).\n\n"
	       "kaiofs options (-o OPT[,OPT...]):\n"
	       "    -o raw                 show the device itself as one file instead of its\n"
	       "                           filesystem (default: off)\n"
	       "    -o ro                  mount read-only (default: read-write)\n"
	       "    -o io=direct|cached    data path: direct I/O (default), or through the\n"
	       "                           kernel's page cache with write-back (shared mmap)\n"
	       "    -o arena=SIZE          locked bounce-buffer arena (default %lluM, at least %lluM;\n"
	       "                           suffixes K, M, G)\n"
	       "    -o engine=aio|uring    how data reaches the device: kernel AIO (default) or\n"
	       "                           io_uring with the arena registered as fixed buffers\n"
	       "    -o queue_depth=N       queue depth per AIO context or io_uring ring (default %d)\n"
	       "    -o reapers=N           AIO contexts or io_uring rings, each with its reaper\n"
	       "                           thread (default %d, at most 64)\n"
	       "    -o fuse_threads=N      threads receiving FUSE requests (default: one per CPU,\n"
	       "                           2 to 8; at most 64)\n"
	       "    -o meta_cache=SIZE     memory for metadata blocks read from the device\n"
	       "                           (default %lluM; 0 reads them every time)\n"
	       "    -o poll_us=N           after a request, while no device I/O is in flight,\n"
	       "                           one receive thread polls for the next request up to\n"
	       "                           N microseconds before it sleeps (default %d, at\n"
	       "                           most %d; 0 never polls)\n"
	       "    -o stats               print the statistics on stderr at unmount (default: off)\n"
	       "    -f                     stay in the foreground (default: detach once mounted)\n"
	       "    -d, --debug            debug output (implies -f)\n"
	       "    -s                     single-threaded FUSE loop (default: multi-threaded)\n"
	       "    -h, --help             this help\n"
	       "    -V, --version          print the version\n\n"
	       "Unmount with umount MOUNTPOINT or fusermount3 -u MOUNTPOINT; for a mount made\n"
	       "by mount -t kaiofs, umount waits until kaiofs has finished (see kaiofs(8)).\n"
	       "Statistics of a mount: kaiofs-stat MOUNTPOINT.\n\n"
	       "FUSE options:\n", prog, DEFAULT_ARENA >> 20, MIN_ARENA >> 20,
	       DEFAULT_QUEUE_DEPTH, DEFAULT_REAPERS, DEFAULT_META_CACHE >> 20,
	       DEFAULT_POLL_US, MAX_POLL_US);
	fuse_lowlevel_help();
}

void options_free(struct options *o)
{
	free(o->device);
	free(o->mountpoint);
	free(o->arena_s);
	free(o->queue_depth_s);
	free(o->reapers_s);
	free(o->poll_us_s);
	free(o->fuse_threads_s);
	free(o->io_s);
	free(o->engine_s);
	free(o->meta_cache_s);
}
