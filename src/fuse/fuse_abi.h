/* The FUSE kernel ABI as far as kaiofs's own receive loop speaks it: the
 * structures of <linux/fuse.h> (protocol 7.38 in Debian 12's headers) and
 * the parts of later protocol versions that kernels since 6.6 send and
 * libfuse 3.14 does not know. Private to the FUSE front (rx.c, ops_*.c). */
#ifndef KAIOFS_FUSE_ABI_H
#define KAIOFS_FUSE_ABI_H

#include <linux/fuse.h>
#include <stdint.h>

/* 7.39: shared mappings of FOPEN_DIRECT_IO files (in fuse_init_out.flags2) */
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif

/* 7.39: statx, for the birth time */
#define KAIOFS_FUSE_STATX 52

struct kaiofs_fuse_statx_in {
	uint32_t getattr_flags;
	uint32_t reserved;
	uint64_t fh;
	uint32_t sx_flags;
	uint32_t sx_mask;
};

struct kaiofs_fuse_sx_time {
	int64_t tv_sec;
	uint32_t tv_nsec;
	int32_t reserved;
};

struct kaiofs_fuse_statx {
	uint32_t mask;
	uint32_t blksize;
	uint64_t attributes;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint16_t mode;
	uint16_t spare0[1];
	uint64_t ino;
	uint64_t size;
	uint64_t blocks;
	uint64_t attributes_mask;
	struct kaiofs_fuse_sx_time atime, btime, ctime, mtime;
	uint32_t rdev_major, rdev_minor;
	uint32_t dev_major, dev_minor;
	uint64_t spare2[14];
};

struct kaiofs_fuse_statx_out {
	uint64_t attr_valid;
	uint32_t attr_valid_nsec;
	uint32_t flags;
	uint64_t spare[2];
	struct kaiofs_fuse_statx stat;
};

#endif
