/* The FUSE front: low-level op tables. Handlers decode a request, start the
 * work and return; data replies are sent from the I/O completion path. */
#ifndef KAIOFS_OPS_H
#define KAIOFS_OPS_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <stdint.h>

struct io_dev;

/* Settings of the FUSE connection, applied in init. */
struct conn_tuning {
	unsigned max_write;
	unsigned max_background;
	bool cached;            /* io=cached: page cache with write-back */
	unsigned dio_align;     /* O_DIRECT alignment the device asks for */
};

/* Raw mode: the root directory holds one file, the device itself. */
struct raw_fs {
	struct io_dev *io;
	char name[256];
	bool readonly;
	struct conn_tuning tuning;
	pthread_mutex_t mu;     /* guards the attributes below */
	struct stat root, file;
};

void raw_fs_init(struct raw_fs *fs, struct io_dev *io, const char *device_path,
		 bool readonly, const struct conn_tuning *tuning);
extern const struct fuse_lowlevel_ops raw_ops;

/* Replies of data requests, counted in the statistics. */
void reply_read(fuse_req_t req, int err, const char *data, size_t len);
void reply_written(fuse_req_t req, int err, size_t len);

/* How an opened file's data moves: straight to kaiofs (direct I/O), or
 * through the kernel's page cache in io=cached mode unless the application
 * asked for O_DIRECT. Also sets the RWF_* flags its writes carry. */
void open_set_mode(struct fuse_file_info *fi, const struct conn_tuning *t);

/* The RWF_* flags a file's writes carry, from its open flags. */
int open_rwf(int open_flags);
/* flush(2) of a file: nothing is buffered, so there is nothing to do. */
void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* Apply the connection settings both modes share. */
void conn_apply(struct fuse_conn_info *conn, const struct conn_tuning *t);

/* Filesystem mode: an ext2/3/4 volume. */
struct fs;
struct workq;

struct ext4_front {
	struct fs *fs;
	struct io_dev *io;
	struct workq *wq;
	struct conn_tuning tuning;
	unsigned bs;
	pthread_mutex_t mu;       /* guards busy */
	pthread_cond_t idle;
	unsigned long busy;       /* data requests not yet replied to */
	struct fuse_session *se;  /* for notifications to the kernel; set once mounted */
};

void ext4_front_init(struct ext4_front *f, struct fs *fs, struct io_dev *io, struct workq *wq,
		     const struct conn_tuning *tuning);

/* The kernel calls the root 1; ext2/3/4 calls it 2 (1 holds bad blocks). */
#define FS_ROOT_INO 2

static inline fuse_ino_t to_fs(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? FS_ROOT_INO : ino;
}

static inline fuse_ino_t to_fuse(ino_t ino)
{
	return ino == FS_ROOT_INO ? FUSE_ROOT_ID : (fuse_ino_t)ino;
}

/* Attribute and entry timeouts: kaiofs is the volume's only writer. */
#define ENTRY_TIMEOUT 86400.0

/* A read or write of a file opened with O_DIRECT whose offset or length
 * the device could not take directly: EINVAL, as ext4 refuses it. */
bool odirect_misaligned(const struct conn_tuning *t, int open_flags, uint64_t off, size_t len);

/* Opcodes libfuse 3.14 does not know (FUSE_TMPFILE, FUSE_STATX), answered
 * for filesystem mode; an rx_extra_fn with the ext4_front as ctx. */
struct rx_request;
bool ext4_extra_request(void *front, const struct rx_request *r);
/* Wait until every data request has been replied to. */
void ext4_front_drain(struct ext4_front *f);
extern const struct fuse_lowlevel_ops ext4_ops;

#endif
