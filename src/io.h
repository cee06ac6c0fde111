/* The data path: byte ranges of the device served through the AIO engine
 * from arena buffers. Unaligned writes read and modify their edge blocks;
 * overlapping writes are ordered by a range lock so that no read-modify-write
 * works on a stale block. Callbacks run on a reaper thread (or the calling
 * thread on an early error) and are where the caller replies. */
#ifndef KAIOFS_IO_H
#define KAIOFS_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rangelock.h"

struct aio_engine;
struct arena;

struct io_dev {
	int fd;
	uint64_t size;          /* bytes served; a multiple of unit */
	size_t unit;            /* I/O alignment and RMW granularity */
	struct aio_engine *aio;
	struct arena *arena;
	struct rangelock wlock; /* orders overlapping writes */
	pthread_mutex_t mu;
	pthread_cond_t idle;
	unsigned long pending;  /* operations started and not yet called back */
};

/* data is valid only during the callback; len may be short at the end. */
typedef void (*io_read_done)(void *ctx, int err, const char *data, size_t len);
typedef void (*io_write_done)(void *ctx, int err, size_t len);

void io_dev_init(struct io_dev *d, int fd, uint64_t size, size_t unit,
		 struct aio_engine *aio, struct arena *arena);
/* Wait until every started operation has called back. */
void io_dev_drain(struct io_dev *d);
void io_dev_destroy(struct io_dev *d);

/* Largest len io_read/io_write accept in one call. */
size_t io_max_len(const struct io_dev *d);

/* Read [off, off+len) with off+len <= size. */
void io_read(struct io_dev *d, uint64_t off, size_t len, io_read_done cb, void *ctx);
/* Write [off, off+len) with off+len <= size; data is copied before return.
 * rw_flags are RWF_* flags for the device write (RWF_DSYNC for O_DSYNC). */
void io_write(struct io_dev *d, uint64_t off, const void *data, size_t len, int rw_flags,
	      io_write_done cb, void *ctx);
/* Flush the device's cache (fsync or fdatasync of the device). */
void io_flush(struct io_dev *d, bool datasync, io_write_done cb, void *ctx);

#endif
