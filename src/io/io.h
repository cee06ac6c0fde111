/* The data path: byte ranges of files or of the device, moved through the
 * engine from arena buffers. A file range is described by a block map
 * (struct io_map) that the filesystem layer produces; raw mode uses the
 * identity map. Holes and unwritten blocks read as zeros; unaligned writes
 * read and modify their edge blocks (or zero them when the block holds no
 * data yet). Callbacks run on a reaper thread (or the calling thread on an
 * early error) and are where the caller replies. */
#ifndef KAIOFS_IO_H
#define KAIOFS_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rangelock.h"

struct engine;
struct arena;

/* A run of file blocks: on the device at pblk, or reading as zeros. */
struct io_seg {
	uint64_t fblk;      /* first file block */
	uint64_t pblk;      /* first device block (meaningful unless a hole) */
	uint32_t nblk;
	uint8_t zero;       /* reads as zeros: a hole, unwritten or fresh blocks */
	uint8_t hole;       /* no device blocks at all (reads only) */
	uint8_t fresh;      /* allocated for this write, not yet reachable */
	uint8_t unwritten;  /* an unwritten extent, converted after the write */
};

/* Segments in file order, covering a block range without gaps. */
struct io_map {
	unsigned n, cap;
	uint32_t bs;        /* block size of fblk/pblk */
	struct io_seg seg[];
};

struct io_map *io_map_new(uint32_t bs);
/* Append a segment, merging with the last one when contiguous; returns 0 or
 * -ENOMEM. *m may move. */
int io_map_add(struct io_map **m, const struct io_seg *s);

/* Set at init and read-only afterwards, except pending (under mu). */
struct io_dev {
	int fd;
	uint64_t size;          /* raw mode: bytes served, a multiple of unit */
	size_t unit;            /* raw mode: I/O alignment and RMW granularity */
	struct engine *engine;
	struct arena *arena;
	struct rangelock wlock; /* raw mode: orders overlapping writes */
	pthread_mutex_t mu;
	pthread_cond_t idle;
	unsigned long pending;  /* under mu: operations started and not yet called back */
	/* optional: takes ownership of an arena buffer holding a write's data
	 * so that it is written from there instead of a copy (see rx.h) */
	bool (*take_buffer)(const void *data, size_t len);
};

/* data is valid only during the callback; len may be short at the end. */
typedef void (*io_read_done)(void *ctx, int err, const char *data, size_t len);
typedef void (*io_write_done)(void *ctx, int err, size_t len);

void io_dev_init(struct io_dev *d, int fd, uint64_t size, size_t unit,
		 struct engine *engine, struct arena *arena);
/* Wait until every started operation has called back. */
void io_dev_drain(struct io_dev *d);
void io_dev_destroy(struct io_dev *d);

/* Largest len one read or write may have. */
size_t io_max_len(const struct io_dev *d);

/* ---- raw mode: the device itself ---- */
void io_read(struct io_dev *d, uint64_t off, size_t len, io_read_done cb, void *ctx);
/* rw_flags are RWF_* flags for the device write (RWF_DSYNC for O_DSYNC). */
void io_write(struct io_dev *d, uint64_t off, const void *data, size_t len, int rw_flags,
	      io_write_done cb, void *ctx);
/* Flush the device's cache (fsync or fdatasync of the device). */
void io_flush(struct io_dev *d, bool datasync, io_write_done cb, void *ctx);

/* ---- files: through a block map covering the range's blocks ---- */
void io_map_read(struct io_dev *d, const struct io_map *map, uint64_t off, size_t len,
		 io_read_done cb, void *ctx);

/* A write in two steps: take the caller's bytes now (the FUSE buffer dies
 * when the handler returns), start the device I/O once the map is known. */
struct io_wop;
struct io_wop *io_wop_new(struct io_dev *d, uint64_t off, const void *data, size_t len,
			  uint32_t bs);
/* map must stay valid until cb has run; the op frees itself after cb. */
void io_wop_start(struct io_wop *w, const struct io_map *map, int rw_flags,
		  io_write_done cb, void *ctx);
/* Drop a write that will not be started. */
void io_wop_cancel(struct io_wop *w);

#endif
