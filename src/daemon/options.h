/* The command line: kaiofs [-f] [-d] [-s] [-o opt,...] DEVICE MOUNTPOINT.
 * kaiofs' own -o options are parsed here with libfuse's option parser; the
 * rest stay in args for the FUSE session. */
#ifndef KAIOFS_OPTIONS_H
#define KAIOFS_OPTIONS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

#define DEFAULT_ARENA (64ull << 20)
#define MIN_ARENA (4ull << 20)
#define DEFAULT_QUEUE_DEPTH 128
#define DEFAULT_REAPERS 1
#define DEFAULT_META_CACHE (16ull << 20)
#define MAX_META_CACHE (4ull << 30)
#define DEFAULT_POLL_US 50
#define MAX_POLL_US 1000

struct options {
	char *device;
	char *mountpoint;       /* canonical path */
	int raw, ro, stats;
	int foreground, debug, single_thread;
	int show_help, show_version;
	char *arena_s, *queue_depth_s, *reapers_s, *io_s, *meta_cache_s, *fuse_threads_s,
	     *poll_us_s, *engine_s;
	bool cached;            /* io=cached: the kernel's page cache in front */
	enum engine_kind engine; /* engine=: kernel AIO (default) or io_uring */
	uint64_t arena, meta_cache;
	unsigned queue_depth, reapers;
	unsigned fuse_threads;   /* 0: chosen from the CPUs */
	unsigned poll_us;        /* receive threads poll this long before sleeping */
	/* parser state */
	char *err;
	size_t errlen;
	int extra_args;
};

/* Parse argv into o and args (args keeps what the FUSE session takes).
 * Returns 0, or -1 with a one-line reason in err. */
int options_parse(int argc, char **argv, struct options *o, struct fuse_args *args,
		  char *err, size_t errlen);
void options_usage(const char *prog);
void options_free(struct options *o);

#endif
