#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "ops.h"
#include "rx.h"
#include "stats.h"
#include "util.h"

#define FILE_INO 2
#define ATTR_TIMEOUT 3600.0

static struct raw_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void count(enum fuse_op op)
{
	STAT_ADD(fuse_requests[op], 1);
}

void raw_fs_init(struct raw_fs *fs, struct io_dev *io, const char *device_path,
		 bool readonly, const struct conn_tuning *tuning)
{
	char *copy = strdup(device_path);
	struct timespec now;

	memset(fs, 0, sizeof(*fs));
	fs->io = io;
	fs->readonly = readonly;
	fs->tuning = *tuning;
	snprintf(fs->name, sizeof(fs->name), "%s", copy ? basename(copy) : "device");
	free(copy);
	pthread_mutex_init(&fs->mu, NULL);
	clock_gettime(CLOCK_REALTIME, &now);

	fs->root.st_ino = FUSE_ROOT_ID;
	fs->root.st_mode = S_IFDIR | 0755;
	fs->root.st_nlink = 2;
	fs->file.st_ino = FILE_INO;
	fs->file.st_mode = S_IFREG | (readonly ? 0444 : 0644);
	fs->file.st_nlink = 1;
	fs->file.st_size = (off_t)io->size;
	fs->file.st_blocks = (blkcnt_t)(io->size / 512);
	for (struct stat *st = &fs->root; st; st = st == &fs->root ? &fs->file : NULL) {
		st->st_uid = getuid();
		st->st_gid = getgid();
		st->st_blksize = (blksize_t)io->unit;
		st->st_atim = st->st_mtim = st->st_ctim = now;
	}
}

void reply_read(fuse_req_t req, int err, const char *data, size_t len)
{
	if (err) {
		fuse_reply_err(req, err);
	} else {
		STAT_ADD(bytes_read, len);
		fuse_reply_buf(req, data, len);
	}
}

void reply_written(fuse_req_t req, int err, size_t len)
{
	if (err) {
		fuse_reply_err(req, err);
	} else {
		STAT_ADD(bytes_written, len);
		fuse_reply_write(req, len);
	}
}

int open_rwf(int open_flags)
{
	/* O_SYNC carries the O_DSYNC bit too */
	if ((open_flags & O_SYNC) == O_SYNC)
		return RWF_SYNC;
	return (open_flags & O_DSYNC) ? RWF_DSYNC : 0;
}

bool odirect_misaligned(const struct conn_tuning *t, int open_flags, uint64_t off, size_t len)
{
	uint64_t align = t->dio_align ? t->dio_align : 512;

	return (open_flags & O_DIRECT) && ((off | len) & (align - 1)) != 0;
}

void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(FOP_FLUSH);
	fuse_reply_err(req, 0);
}

void conn_apply(struct fuse_conn_info *conn, const struct conn_tuning *t)
{
	conn->max_write = t->max_write;
	conn->max_background = t->max_background;
	conn->congestion_threshold = t->max_background * 3 / 4;
	conn->time_gran = 1;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* the kernel turns O_TRUNC into a truncate and clears set-id bits on
	 * chown and truncate itself; writes clear them in fs */
	conn->want &= ~(unsigned)(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_HANDLE_KILLPRIV);
	if (t->cached && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	/* the receive loop grants FUSE_DIRECT_IO_ALLOW_MMAP when offered */
	if (!t->cached && !(rx_kernel_init_flags() & FUSE_DIRECT_IO_ALLOW_MMAP))
		say("this kernel (FUSE 7.%u) cannot map direct-I/O files shared: MAP_SHARED fails "
		    "with ENODEV in io=direct (Linux 6.6 lifts this; -o io=cached maps files)",
		    conn->proto_minor);
}

void open_set_mode(struct fuse_file_info *fi, const struct conn_tuning *t)
{
	/* In io=cached an O_DIRECT open takes the kernel's own direct I/O path:
	 * it writes back and drops the cached pages of the range first, as for
	 * any filesystem, where direct_io would read past pages not yet
	 * written back (and could not be mapped) */
	fi->direct_io = !t->cached;
	/* kaiofs is the volume's only writer: cached pages stay valid */
	fi->keep_cache = !fi->direct_io;
	/* FLUSH does nothing in kaiofs (writes are on the device when they are
	 * answered; with write-back caching the kernel still writes its pages
	 * back at close): spare every close that round trip */
	fi->noflush = 1;
	fi->fh = (uint64_t)open_rwf(fi->flags);
}

static void raw_init(void *userdata, struct fuse_conn_info *conn)
{
	struct raw_fs *fs = userdata;

	conn_apply(conn, &fs->tuning);
}

/* Copy of the inode's attributes, or NULL for an unknown inode. */
static bool get_attr(struct raw_fs *fs, fuse_ino_t ino, struct stat *out)
{
	if (ino != FUSE_ROOT_ID && ino != FILE_INO)
		return false;
	pthread_mutex_lock(&fs->mu);
	*out = ino == FUSE_ROOT_ID ? fs->root : fs->file;
	pthread_mutex_unlock(&fs->mu);
	return true;
}

static void raw_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct raw_fs *fs = fs_of(req);
	struct fuse_entry_param e = { .attr_timeout = ATTR_TIMEOUT, .entry_timeout = ATTR_TIMEOUT };

	count(FOP_LOOKUP);
	if (strlen(name) > 255) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	if (parent != FUSE_ROOT_ID || strcmp(name, fs->name) != 0) {
		/* a negative entry the kernel may cache */
		e.ino = 0;
		fuse_reply_entry(req, &e);
		return;
	}
	e.ino = FILE_INO;
	e.generation = 1;
	get_attr(fs, FILE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void raw_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	count(FOP_FORGET);
	fuse_reply_none(req);
}

static void raw_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	count(FOP_GETATTR);
	if (!get_attr(fs_of(req), ino, &st))
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void set_time(struct timespec *dst, const struct timespec *src, bool now)
{
	if (now)
		clock_gettime(CLOCK_REALTIME, dst);
	else
		*dst = *src;
}

static void raw_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);
	struct stat *st, out;

	(void)fi;
	count(FOP_SETATTR);
	if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (fs->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* the device's size is fixed: only a no-op truncate succeeds */
	if ((to_set & FUSE_SET_ATTR_SIZE) &&
	    (ino != FILE_INO || (uint64_t)attr->st_size != fs->io->size)) {
		fuse_reply_err(req, ino == FILE_INO ? EINVAL : EISDIR);
		return;
	}
	pthread_mutex_lock(&fs->mu);
	st = ino == FUSE_ROOT_ID ? &fs->root : &fs->file;
	if (to_set & FUSE_SET_ATTR_MODE)
		st->st_mode = (st->st_mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_UID)
		st->st_uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		st->st_gid = attr->st_gid;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
		set_time(&st->st_atim, &attr->st_atim, to_set & FUSE_SET_ATTR_ATIME_NOW);
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		set_time(&st->st_mtim, &attr->st_mtim, to_set & FUSE_SET_ATTR_MTIME_NOW);
	clock_gettime(CLOCK_REALTIME, &st->st_ctim);
	out = *st;
	pthread_mutex_unlock(&fs->mu);
	fuse_reply_attr(req, &out, ATTR_TIMEOUT);
}

static void raw_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);

	count(FOP_OPEN);
	if (ino != FILE_INO) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	if (fs->readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	open_set_mode(fi, &fs->tuning);
	fuse_reply_open(req, fi);
}

/* A data request waiting for its completion. */
struct pending {
	fuse_req_t req;
	uint64_t t0;
	enum io_kind kind;
};

static struct pending *pending_new(fuse_req_t req, enum io_kind kind)
{
	struct pending *p = malloc(sizeof(*p));

	if (p) {
		p->req = req;
		p->t0 = now_ns();
		p->kind = kind;
	}
	return p;
}

static void pending_end(struct pending *p)
{
	histo_add(&kstats.request_lat[p->kind], now_ns() - p->t0);
	free(p);
}

static void read_reply(void *ctx, int err, const char *data, size_t len)
{
	struct pending *p = ctx;

	reply_read(p->req, err, data, len);
	pending_end(p);
}

static void raw_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);
	struct pending *p;

	(void)ino;
	(void)fi;
	count(FOP_READ);
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((uint64_t)off >= fs->io->size || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > fs->io->size - (uint64_t)off)
		size = (size_t)(fs->io->size - (uint64_t)off);
	if (size > io_max_len(fs->io))
		size = io_max_len(fs->io);
	p = pending_new(req, IOK_READ);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	io_read(fs->io, (uint64_t)off, size, read_reply, p);
}

static void write_reply(void *ctx, int err, size_t len)
{
	struct pending *p = ctx;

	reply_written(p->req, err, len);
	pending_end(p);
}

static void raw_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);
	struct pending *p;

	(void)ino;
	count(FOP_WRITE);
	if (fs->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	if ((uint64_t)off >= fs->io->size) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (size > fs->io->size - (uint64_t)off)
		size = (size_t)(fs->io->size - (uint64_t)off);
	if (size > io_max_len(fs->io))
		size = io_max_len(fs->io);
	p = pending_new(req, IOK_WRITE);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	io_write(fs->io, (uint64_t)off, buf, size, (int)fi->fh, write_reply, p);
}

static void flush_reply(void *ctx, int err, size_t len)
{
	struct pending *p = ctx;

	(void)len;
	fuse_reply_err(p->req, err);
	pending_end(p);
}

static void raw_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);
	struct pending *p;

	(void)ino;
	(void)fi;
	count(FOP_FSYNC);
	if (fs->readonly) {
		fuse_reply_err(req, 0);
		return;
	}
	p = pending_new(req, IOK_FSYNC);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	io_flush(fs->io, datasync != 0, flush_reply, p);
}

static void raw_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(FOP_RELEASE);
	fuse_reply_err(req, 0);
}

static void raw_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	count(FOP_OPENDIR);
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ino == FILE_INO ? ENOTDIR : ENOENT);
		return;
	}
	fuse_reply_open(req, fi);
}

static void raw_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct raw_fs *fs = fs_of(req);
	const char *names[] = { ".", "..", fs->name };
	const fuse_ino_t inos[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, FILE_INO };
	char *buf = calloc(1, size ? size : 1);
	size_t used = 0;

	(void)ino;
	(void)fi;
	count(FOP_READDIR);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* entry i has offset i+1: the offset of the entry after it */
	for (off_t i = off; i >= 0 && i < 3; i++) {
		struct stat st = { .st_ino = inos[i], .st_mode = i < 2 ? S_IFDIR : S_IFREG };
		size_t n = fuse_add_direntry(req, buf + used, size - used, names[i], &st, i + 1);

		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void raw_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(FOP_RELEASEDIR);
	fuse_reply_err(req, 0);
}

static void raw_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct raw_fs *fs = fs_of(req);
	struct statvfs sv = {
		.f_bsize = fs->io->unit,
		.f_frsize = fs->io->unit,
		.f_blocks = fs->io->size / fs->io->unit,
		.f_files = 2,
		.f_namemax = 255,
	};

	(void)ino;
	count(FOP_STATFS);
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops raw_ops = {
	.init = raw_init,
	.lookup = raw_lookup,
	.forget = raw_forget,
	.getattr = raw_getattr,
	.setattr = raw_setattr,
	.open = raw_open,
	.read = raw_read,
	.write = raw_write,
	.flush = ops_flush,
	.release = raw_release,
	.fsync = raw_fsync,
	.opendir = raw_opendir,
	.readdir = raw_readdir,
	.releasedir = raw_releasedir,
	.statfs = raw_statfs,
};
