/* Metadata of an ext2/3/4 volume over libext2fs, behind ONE lock. The rest
 * of kaiofs sees inode numbers, struct stat and errno values; only fs*.c
 * include ext2fs.h. File data never passes through here: the data path asks
 * for a map of device blocks (fs_map_read / fs_map_write), moves the bytes
 * itself, and then tells the fs what reached the device (fs_write_commit). */
#ifndef KAIOFS_FS_H
#define KAIOFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "io.h"
#include "rangelock.h"

struct fs;

/* Who is asking: the FUSE request's credentials. */
struct fs_cred {
	uid_t uid;
	gid_t gid;
	mode_t umask;
};

struct fs_mount_opts {
	const char *device;
	bool readonly;
	unsigned dio_align;     /* O_DIRECT alignment of the device */
	size_t meta_cache;      /* bytes of metadata blocks kept in memory */
};

/* Open and check the volume, writing nothing. Returns NULL with a one-line
 * reason (and a hint) in err. */
struct fs *fs_mount(const struct fs_mount_opts *o, bool *readonly_out, char *err, size_t errlen);
/* A read-write mount begins: mark the volume not clean on disk. */
int fs_mark_mounted(struct fs *fs);
/* Write everything back, mark the volume clean, close it. Returns 0 or -errno. */
int fs_unmount(struct fs *fs);

unsigned fs_block_size(const struct fs *fs);
uint64_t fs_device_bytes(const struct fs *fs);
bool fs_readonly(const struct fs *fs);

/* ---- names and attributes (every call returns 0 or a negative errno) ---- */
int fs_lookup(struct fs *fs, ino_t parent, const char *name, struct stat *st);
void fs_forget(struct fs *fs, ino_t ino, uint64_t nlookup);
int fs_getattr(struct fs *fs, ino_t ino, struct stat *st);
/* fs_setattr's to_set: which attributes change. The values are FUSE's
 * FATTR_* bits (the front checks that they match), so a request's mask
 * passes unchanged. */
#define FS_SET_MODE      (1 << 0)
#define FS_SET_UID       (1 << 1)
#define FS_SET_GID       (1 << 2)
#define FS_SET_SIZE      (1 << 3)
#define FS_SET_ATIME     (1 << 4)
#define FS_SET_MTIME     (1 << 5)
#define FS_SET_ATIME_NOW (1 << 7)
#define FS_SET_MTIME_NOW (1 << 8)
#define FS_SET_CTIME     (1 << 10)

/* to_set holds FS_SET_* bits; the size is fs_truncate's. A mode
 * change rewrites an access ACL to match. */
int fs_setattr(struct fs *fs, ino_t ino, const struct stat *attr, int to_set, struct stat *st);
/* Would fs_setattr (or fs_truncate) refuse to_set on this inode (EPERM for
 * an immutable or append-only one)? Checked before a truncate's zeroing. */
int fs_may_setattr(struct fs *fs, ino_t ino, int to_set);
int fs_mknod(struct fs *fs, ino_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct stat *st);
int fs_mkdir(struct fs *fs, ino_t parent, const char *name, mode_t mode,
	     const struct fs_cred *cr, struct stat *st);
int fs_symlink(struct fs *fs, ino_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct stat *st);
int fs_link(struct fs *fs, ino_t ino, ino_t newparent, const char *newname, struct stat *st);
int fs_unlink(struct fs *fs, ino_t parent, const char *name);
int fs_rmdir(struct fs *fs, ino_t parent, const char *name);
/* flags: RENAME_NOREPLACE, RENAME_EXCHANGE */
int fs_rename(struct fs *fs, ino_t parent, const char *name, ino_t newparent,
	      const char *newname, unsigned flags);
/* Returns the target's length, copied NUL-terminated into buf. */
ssize_t fs_readlink(struct fs *fs, ino_t ino, char *buf, size_t size);
int fs_statfs(struct fs *fs, const struct fs_cred *cr, struct statvfs *sv);

/* What statx adds to struct stat: the birth time, where the inode has room
 * for it, and the STATX_ATTR_* attributes its flags imply. */
struct fs_statx {
	struct timespec btime;
	bool has_btime;
	uint64_t attributes, attributes_mask;
};
int fs_statx(struct fs *fs, ino_t ino, struct stat *st, struct fs_statx *x);

/* Inode flags as lsattr/chattr see them (FS_IOC_GETFLAGS/SETFLAGS), with
 * ext4's rules: flags it does not know are refused (EOPNOTSUPP), flags it
 * shows but keeps for itself are left as they are, an immutable inode
 * changes nothing but its immutable and append-only flags (EPERM). The
 * kernel has checked ownership and CAP_LINUX_IMMUTABLE; may_journal says
 * whether the caller may change the data journaling flag (CAP_SYS_RESOURCE). */
int fs_get_flags(struct fs *fs, ino_t ino, uint32_t *flags);
int fs_set_flags(struct fs *fs, ino_t ino, uint32_t flags, bool may_journal);

/* ---- open files ---- */
/* Opening for writing is refused (EPERM) on an immutable file, and on an
 * append-only one without O_APPEND or with O_TRUNC. */
int fs_open(struct fs *fs, ino_t ino, int flags);
/* O_TMPFILE: a regular file without a name, looked up and open once. fs_link
 * can give it one unless flags has O_EXCL; otherwise its last release frees it. */
int fs_tmpfile(struct fs *fs, ino_t parent, mode_t mode, int flags, const struct fs_cred *cr,
	       struct stat *st);
void fs_release(struct fs *fs, ino_t ino);
/* Write the inode and the allocation state it depends on; the caller then
 * flushes the device. */
int fs_sync_inode(struct fs *fs, ino_t ino, bool datasync);
/* The range lock ordering writes, truncates and punches of an open file,
 * and (if max_size) the largest size the file may have. */
struct rangelock *fs_file_lock(struct fs *fs, ino_t ino, uint64_t *max_size);

/* ---- directories ---- */
/* Calls fill for each entry from offset off on; fill returns non-zero to
 * stop (buffer full). `next` is the offset of the entry after this one. */
typedef int (*fs_fill_fn)(void *ctx, const char *name, size_t namelen, ino_t ino,
			  mode_t type, off_t next);
int fs_readdir(struct fs *fs, ino_t ino, off_t off, fs_fill_fn fill, void *ctx);
/* readdirplus: each entry but . and .. comes with its attributes and counts
 * as a lookup, unless fill refuses it (returns non-zero). */
typedef int (*fs_fillplus_fn)(void *ctx, const char *name, size_t namelen, ino_t ino,
			      mode_t type, off_t next, const struct stat *st);
int fs_readdirplus(struct fs *fs, ino_t ino, off_t off, fs_fillplus_fn fill, void *ctx);

/* ---- extended attributes ---- */
ssize_t fs_getxattr(struct fs *fs, ino_t ino, const char *name, void *buf, size_t size);
/* Setting an access ACL sets the mode bits it implies (and stores nothing
 * when it says no more than they do). */
int fs_setxattr(struct fs *fs, ino_t ino, const char *name, const void *value, size_t size,
		int flags, const struct fs_cred *cr);
/* trusted.* names are listed to root only, as on ext4 */
ssize_t fs_listxattr(struct fs *fs, ino_t ino, char *buf, size_t size, const struct fs_cred *cr);
int fs_removexattr(struct fs *fs, ino_t ino, const char *name);

/* ---- the data path ---- */
/* A data operation's view of the file: the block map of [off, off+len). */
struct fs_dio {
	ino_t ino;
	uint64_t off;
	size_t len;              /* clamped to i_size for reads */
	struct io_map *map;
	/* private to fs */
	void *knode;
	bool needs_commit;       /* new blocks, unwritten extents or a new i_size */
	bool sync;               /* writes: the inode has the synchronous-updates flag */
	uint64_t new_size;
};

/* Map a read; len is clamped to i_size (0 at or past it). Registers the read
 * as in flight until fs_read_done. */
int fs_map_read(struct fs *fs, ino_t ino, uint64_t off, size_t len, struct fs_dio *d);
/* Called from the completion path: never takes the metadata lock. */
void fs_read_done(struct fs *fs, struct fs_dio *d);

/* Map a write whose block range the caller holds in fs_file_lock. Holes are
 * given new blocks that stay unreachable on disk until fs_write_commit;
 * times are updated. */
int fs_map_write(struct fs *fs, ino_t ino, uint64_t off, size_t len,
		 const struct fs_cred *cr, unsigned wflags, struct fs_dio *d);
/* fs_map_write's wflags: what the request says of itself */
#define FS_W_APPEND 1u      /* the file is open with O_APPEND */
#define FS_W_WRITEBACK 2u   /* the kernel writes back pages it accepted earlier */
/* After the data is on the device (err == 0): make new blocks reachable,
 * convert unwritten extents, raise i_size. With err != 0: give back the
 * blocks that were never made reachable. Frees the map. */
int fs_write_commit(struct fs *fs, struct fs_dio *d, int err);

/* Set the size of a regular file. The caller holds the file's whole range
 * in fs_file_lock and has zeroed the bytes past the new size in its last
 * block (fs_map_existing + a write of zeros). */
int fs_truncate(struct fs *fs, ino_t ino, uint64_t size);
/* The current map of [off, off+len), not clamped to i_size, allocating
 * nothing: for writing zeros over data that exists. */
int fs_map_existing(struct fs *fs, ino_t ino, uint64_t off, size_t len, struct fs_dio *d);
void fs_dio_free(struct fs_dio *d);

/* fallocate(2) modes (the caller holds the range in fs_file_lock and has
 * zeroed partial blocks at the edges of a punched or zeroed range);
 * lseek SEEK_DATA / SEEK_HOLE. */
int fs_fallocate(struct fs *fs, ino_t ino, int mode, uint64_t off, uint64_t len,
		 const struct fs_cred *cr);
/* Would fs_fallocate refuse this mode and range outright? (Checked before
 * the caller zeroes any edge.) */
int fs_fallocate_check(struct fs *fs, ino_t ino, int mode, uint64_t off, uint64_t len);
int fs_lseek(struct fs *fs, ino_t ino, off_t off, int whence, off_t *out);

#endif
