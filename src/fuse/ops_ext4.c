/* The FUSE front of filesystem mode: decode, call fs and io, reply. Data
 * requests never wait for the device: reads reply from the completion path;
 * writes take their block range in the file's range lock, map (allocating
 * holes), write, and hand the metadata follow-up to a worker. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs.h"
#include "io.h"
#include "ops.h"
#include "stats.h"
#include "util.h"
#include "workq.h"

#define TIMEOUT ENTRY_TIMEOUT

/* setattr's mask goes to the fs layer unchanged */
_Static_assert(FS_SET_MODE == FUSE_SET_ATTR_MODE && FS_SET_UID == FUSE_SET_ATTR_UID &&
	       FS_SET_GID == FUSE_SET_ATTR_GID && FS_SET_SIZE == FUSE_SET_ATTR_SIZE &&
	       FS_SET_ATIME == FUSE_SET_ATTR_ATIME && FS_SET_MTIME == FUSE_SET_ATTR_MTIME &&
	       FS_SET_ATIME_NOW == FUSE_SET_ATTR_ATIME_NOW &&
	       FS_SET_MTIME_NOW == FUSE_SET_ATTR_MTIME_NOW && FS_SET_CTIME == FUSE_SET_ATTR_CTIME,
	       "FS_SET_* bits are FUSE's");

static struct ext4_front *front(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_cred cred_of(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	struct fs_cred cr = { .uid = c->uid, .gid = c->gid, .umask = c->umask };

	return cr;
}

static void count(enum fuse_op op)
{
	STAT_ADD(fuse_requests[op], 1);
}

void ext4_front_init(struct ext4_front *f, struct fs *fs, struct io_dev *io, struct workq *wq,
		     const struct conn_tuning *tuning)
{
	memset(f, 0, sizeof(*f));
	f->fs = fs;
	f->io = io;
	f->wq = wq;
	f->tuning = *tuning;
	f->bs = fs_block_size(fs);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->idle, NULL);
}

static void busy_inc(struct ext4_front *f)
{
	pthread_mutex_lock(&f->mu);
	f->busy++;
	pthread_mutex_unlock(&f->mu);
}

static void busy_dec(struct ext4_front *f)
{
	pthread_mutex_lock(&f->mu);
	if (--f->busy == 0)
		pthread_cond_broadcast(&f->idle);
	pthread_mutex_unlock(&f->mu);
}

void ext4_front_drain(struct ext4_front *f)
{
	pthread_mutex_lock(&f->mu);
	while (f->busy)
		pthread_cond_wait(&f->idle, &f->mu);
	pthread_mutex_unlock(&f->mu);
}

static void e4_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ext4_front *f = userdata;

	conn_apply(conn, &f->tuning);
	/* ACLs as ext4 has them: the kernel checks them; kaiofs applies the
	 * umask itself, or the parent's default ACL instead of it */
	if (conn->capable & FUSE_CAP_POSIX_ACL)
		conn->want |= FUSE_CAP_POSIX_ACL;
	if (conn->capable & FUSE_CAP_DONT_MASK)
		conn->want |= FUSE_CAP_DONT_MASK;
}

static void reply_entry(fuse_req_t req, int r, const struct stat *st)
{
	struct fuse_entry_param e = {
		.attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT,
	};

	if (r == -ENOENT) {
		/* a negative entry the kernel may cache */
		fuse_reply_entry(req, &e);
		return;
	}
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = to_fuse(st->st_ino);
	e.attr = *st;
	fuse_reply_entry(req, &e);
}

static void reply_attr(fuse_req_t req, int r, const struct stat *st)
{
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, st, TIMEOUT);
}

/* ---- names ---- */

static void e4_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct stat st;

	count(FOP_LOOKUP);
	reply_entry(req, fs_lookup(front(req)->fs, to_fs(parent), name, &st), &st);
}

static void e4_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	count(FOP_FORGET);
	fs_forget(front(req)->fs, to_fs(ino), nlookup);
	fuse_reply_none(req);
}

static void e4_forget_multi(fuse_req_t req, size_t count_, struct fuse_forget_data *list)
{
	count(FOP_FORGET);
	for (size_t i = 0; i < count_; i++)
		fs_forget(front(req)->fs, to_fs(list[i].ino), list[i].nlookup);
	fuse_reply_none(req);
}

static void e4_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	count(FOP_GETATTR);
	reply_attr(req, fs_getattr(front(req)->fs, to_fs(ino), &st), &st);
}

static void e4_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct fs_cred cr = cred_of(req);
	struct stat st;

	count(FOP_OTHER);
	reply_entry(req, fs_mknod(front(req)->fs, to_fs(parent), name, mode, rdev, &cr, &st) ?: 0, &st);
}

static void reply_created(fuse_req_t req, int r, const struct stat *st)
{
	/* ENOENT from a creation is an error, not a negative entry */
	if (r == -ENOENT)
		fuse_reply_err(req, ENOENT);
	else
		reply_entry(req, r, st);
}

static void e4_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs_cred cr = cred_of(req);
	struct stat st;

	count(FOP_OTHER);
	reply_created(req, fs_mkdir(front(req)->fs, to_fs(parent), name, mode, &cr, &st), &st);
}

static void e4_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct fs_cred cr = cred_of(req);
	struct stat st;

	count(FOP_OTHER);
	reply_created(req, fs_symlink(front(req)->fs, to_fs(parent), name, target, &cr, &st), &st);
}

static void e4_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct stat st;

	count(FOP_OTHER);
	reply_created(req, fs_link(front(req)->fs, to_fs(ino), to_fs(newparent), newname, &st), &st);
}

static void e4_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	count(FOP_OTHER);
	fuse_reply_err(req, -fs_unlink(front(req)->fs, to_fs(parent), name));
}

static void e4_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	count(FOP_OTHER);
	fuse_reply_err(req, -fs_rmdir(front(req)->fs, to_fs(parent), name));
}

static void e4_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	count(FOP_OTHER);
	fuse_reply_err(req, -fs_rename(front(req)->fs, to_fs(parent), name, to_fs(newparent), newname, flags));
}

static void e4_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t r;

	count(FOP_OTHER);
	r = fs_readlink(front(req)->fs, to_fs(ino), buf, sizeof(buf));
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_readlink(req, buf);
}

static void e4_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_cred cr = cred_of(req);
	struct statvfs sv;

	(void)ino;
	count(FOP_STATFS);
	fs_statfs(front(req)->fs, &cr, &sv);
	fuse_reply_statfs(req, &sv);
}

/* ---- waiting for a range, and writing zeros, for truncate and fallocate ---- */

struct waiter {
	struct rl_entry lock;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int err;
};

static void waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
}

static void waiter_signal(struct waiter *w, int err)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	w->err = err;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static int waiter_wait(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->mu);
	w->done = false;
	pthread_mutex_unlock(&w->mu);
	return w->err;
}

static void waiter_granted(struct rl_entry *e)
{
	waiter_signal((struct waiter *)((char *)e - offsetof(struct waiter, lock)), 0);
}

/* Block until [start, end) of the file's range lock is ours. */
static void lock_range(struct rangelock *rl, struct waiter *w, uint64_t start, uint64_t end)
{
	w->lock.start = start;
	w->lock.end = end;
	w->lock.grant = waiter_granted;
	if (!rangelock_acquire(rl, &w->lock))
		waiter_wait(w);
}

static void zero_written(void *ctx, int err, size_t len)
{
	(void)len;
	waiter_signal(ctx, err);
}

/* Write zeros over [off, off+len) where the file has data blocks (holes and
 * unwritten blocks already read as zeros); waits for the device. */
static int zero_existing(struct ext4_front *f, fuse_ino_t ino, uint64_t off, size_t len,
			 struct waiter *w)
{
	struct fs_dio d;
	struct io_wop *op;
	char *zeros;
	bool any = false;
	int r;

	if (len == 0)
		return 0;
	r = fs_map_existing(f->fs, to_fs(ino), off, len, &d);
	if (r)
		return r;
	for (unsigned i = 0; i < d.map->n; i++)
		any |= !d.map->seg[i].zero;
	if (!any) {
		fs_dio_free(&d);
		return 0;
	}
	zeros = calloc(1, len);
	op = zeros ? io_wop_new(f->io, off, zeros, len, f->bs) : NULL;
	free(zeros);
	if (!op) {
		fs_dio_free(&d);
		return -ENOMEM;
	}
	io_wop_start(op, d.map, 0, zero_written, w);
	r = -waiter_wait(w);
	fs_dio_free(&d);
	return r;
}

/* Zero the partial blocks at the edges of [off, end). */
static int zero_edges(struct ext4_front *f, fuse_ino_t ino, uint64_t off, uint64_t end,
		      struct waiter *w)
{
	uint64_t bs = f->bs, head_end = round_up(off, bs), tail_start = round_down(end, bs);
	int r = 0;

	if (head_end >= end && off > round_down(off, bs)) /* inside one block */
		return zero_existing(f, ino, off, (size_t)(end - off), w);
	/* the partial block at each end; whole blocks in between are punched */
	if (head_end > off)
		r = zero_existing(f, ino, off, (size_t)(head_end - off), w);
	if (!r && tail_start < end && tail_start >= head_end)
		r = zero_existing(f, ino, tail_start, (size_t)(end - tail_start), w);
	return r;
}

static int do_truncate(struct ext4_front *f, fuse_ino_t ino, uint64_t size)
{
	struct rangelock *rl = fs_file_lock(f->fs, to_fs(ino), NULL);
	struct waiter w;
	struct stat st;
	int r;

	if (!rl)
		return -ENOENT;
	waiter_init(&w);
	lock_range(rl, &w, 0, UINT64_MAX);
	r = fs_getattr(f->fs, to_fs(ino), &st);
	/* bytes past the new end in its last block must read as zeros later */
	if (!r && S_ISREG(st.st_mode) && size < (uint64_t)st.st_size && size % f->bs)
		r = zero_existing(f, ino, size,
				  (size_t)(round_up(size, f->bs) < (uint64_t)st.st_size
					   ? round_up(size, f->bs) - size : (uint64_t)st.st_size - size), &w);
	if (!r)
		r = fs_truncate(f->fs, to_fs(ino), size);
	rangelock_release(rl, &w.lock);
	return r;
}

static void e4_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ext4_front *f = front(req);
	struct stat st;
	int r = 0;

	(void)fi;
	count(FOP_SETATTR);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (attr->st_size < 0)
			r = -EINVAL;
		else
			r = fs_may_setattr(f->fs, to_fs(ino), to_set) ?: do_truncate(f, ino, (uint64_t)attr->st_size);
	}
	if (!r)
		r = fs_setattr(f->fs, to_fs(ino), attr, to_set & ~FUSE_SET_ATTR_SIZE, &st);
	reply_attr(req, r, &st);
}

static void e4_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct ext4_front *f = front(req);
	struct fs_cred cr = cred_of(req);
	struct rangelock *rl;
	struct waiter w;
	uint64_t end;
	int r = 0;

	(void)fi;
	count(FOP_OTHER);
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	rl = fs_file_lock(f->fs, to_fs(ino), NULL);
	if (!rl) {
		fuse_reply_err(req, EBADF);
		return;
	}
	waiter_init(&w);
	lock_range(rl, &w, round_down((uint64_t)off, f->bs), round_up(end, f->bs));
	r = fs_fallocate_check(f->fs, to_fs(ino), mode, (uint64_t)off, (uint64_t)len);
	if (!r && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
		struct stat st;

		/* only bytes inside the file need zeroing */
		r = fs_getattr(f->fs, to_fs(ino), &st);
		if (!r && (uint64_t)off < (uint64_t)st.st_size)
			r = zero_edges(f, to_fs(ino), (uint64_t)off,
				       end < (uint64_t)st.st_size ? end : (uint64_t)st.st_size, &w);
	}
	if (!r)
		r = fs_fallocate(f->fs, to_fs(ino), mode, (uint64_t)off, (uint64_t)len, &cr);
	rangelock_release(rl, &w.lock);
	fuse_reply_err(req, -r);
}

static void e4_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t out;
	int r;

	(void)fi;
	count(FOP_OTHER);
	r = fs_lseek(front(req)->fs, to_fs(ino), off, whence, &out);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lseek(req, out);
}

/* ---- open files ---- */

static void e4_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int r;

	count(FOP_OPEN);
	r = fs_open(front(req)->fs, to_fs(ino), fi->flags);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	open_set_mode(fi, &front(req)->tuning);
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_release(front(req)->fs, to_fs(ino)); /* the open was interrupted */
}

static void e4_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ext4_front *f = front(req);
	struct fs_cred cr = cred_of(req);
	struct fuse_entry_param e = { .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	int r;

	count(FOP_OPEN);
	r = fs_mknod(f->fs, to_fs(parent), name, S_IFREG | (mode & 07777), 0, &cr, &e.attr);
	if (r == -EEXIST && !(fi->flags & O_EXCL))
		r = fs_lookup(f->fs, to_fs(parent), name, &e.attr);
	if (!r && S_ISDIR(e.attr.st_mode)) {
		fs_forget(f->fs, e.attr.st_ino, 1);
		r = -EISDIR;
	}
	if (!r) {
		r = fs_open(f->fs, e.attr.st_ino, fi->flags);
		if (r)
			fs_forget(f->fs, e.attr.st_ino, 1);
	}
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = to_fuse(e.attr.st_ino);
	open_set_mode(fi, &f->tuning);
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		fs_release(f->fs, e.attr.st_ino);
}

static void e4_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	count(FOP_RELEASE);
	fs_release(front(req)->fs, to_fs(ino));
	fuse_reply_err(req, 0);
}

/* A data request waiting for its completion. */
struct pending {
	fuse_req_t req;
	struct ext4_front *f;
	uint64_t t0;
	enum io_kind kind;
	struct fs_dio dio;
};

static struct pending *pending_new(fuse_req_t req, enum io_kind kind)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (p) {
		p->req = req;
		p->f = front(req);
		p->t0 = now_ns();
		p->kind = kind;
		busy_inc(p->f);
	}
	return p;
}

static void pending_end(struct pending *p)
{
	histo_add(&kstats.request_lat[p->kind], now_ns() - p->t0);
	busy_dec(p->f);
	free(p);
}

static void flush_done(void *ctx, int err, size_t len)
{
	struct pending *p = ctx;

	(void)len;
	fuse_reply_err(p->req, err);
	pending_end(p);
}

static void sync_and_flush(fuse_req_t req, fuse_ino_t ino, int datasync)
{
	struct ext4_front *f = front(req);
	struct pending *p;
	int r = fs_sync_inode(f->fs, to_fs(ino), datasync != 0);

	if (r || fs_readonly(f->fs)) {
		fuse_reply_err(req, -r);
		return;
	}
	p = pending_new(req, IOK_FSYNC);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	io_flush(f->io, datasync != 0, flush_done, p);
}

static void e4_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi;
	count(FOP_FSYNC);
	sync_and_flush(req, ino, datasync);
}

static void e4_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi;
	count(FOP_FSYNC);
	sync_and_flush(req, ino, datasync);
}

/* ---- read ---- */

static void read_reply(void *ctx, int err, const char *data, size_t len)
{
	struct pending *p = ctx;

	fs_read_done(p->f->fs, &p->dio);
	reply_read(p->req, err, data, len);
	pending_end(p);
}

static void e4_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ext4_front *f = front(req);
	struct pending *p;
	int r;

	count(FOP_READ);
	if (off < 0 || odirect_misaligned(&f->tuning, fi->flags, (uint64_t)off, size)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (size > io_max_len(f->io))
		size = io_max_len(f->io);
	p = pending_new(req, IOK_READ);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fs_map_read(f->fs, to_fs(ino), (uint64_t)off, size, &p->dio);
	if (r || p->dio.len == 0) {
		if (r)
			fuse_reply_err(req, -r);
		else
			fuse_reply_buf(req, NULL, 0);
		fs_read_done(f->fs, &p->dio);
		pending_end(p);
		return;
	}
	io_map_read(f->io, p->dio.map, (uint64_t)off, p->dio.len, read_reply, p);
}

/* ---- write ---- */

struct wreq {
	struct pending p;           /* first: pending_end frees the wreq */
	struct work work;
	struct rl_entry lock;
	struct rangelock *rl;
	struct io_wop *wop;
	struct fs_cred cr;
	fuse_ino_t ino;
	uint64_t off;
	size_t len;
	int rw_flags;
	unsigned wflags;            /* FS_W_* */
	int err;
	size_t wrote;
};

static void write_finish(struct wreq *w)
{
	rangelock_release(w->rl, &w->lock);
	reply_written(w->p.req, w->err, w->wrote);
	pending_end(&w->p);
}

static void write_commit(struct work *wk)
{
	struct wreq *w = (struct wreq *)((char *)wk - offsetof(struct wreq, work));
	int r = fs_write_commit(w->p.f->fs, &w->p.dio, w->err);

	if (!w->err && r)
		w->err = -r;
	write_finish(w);
}

/* Called when the device writes are done (a reaper thread). */
static void write_written(void *ctx, int err, size_t len)
{
	struct wreq *w = ctx;

	w->err = err;
	w->wrote = len;
	if (w->p.dio.needs_commit) {
		/* metadata follow-up belongs to a worker, never the reaper */
		w->work.fn = write_commit;
		workq_push(w->p.f->wq, &w->work);
		return;
	}
	fs_dio_free(&w->p.dio);
	write_finish(w);
}

static bool makes_reachable(const struct io_map *m)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->seg[i].fresh || m->seg[i].unwritten)
			return true;
	return false;
}

/* The block range is ours: map it, allocating holes, and write. */
static void write_locked(struct wreq *w)
{
	struct ext4_front *f = w->p.f;
	int r = fs_map_write(f->fs, w->ino, w->off, w->len, &w->cr, w->wflags, &w->p.dio);
	int rwf = w->rw_flags | (!r && w->p.dio.sync ? RWF_DSYNC : 0);

	if (r) {
		io_wop_cancel(w->wop);
		w->err = -r;
		write_finish(w);
		return;
	}
	/* ordered data: blocks about to become reachable get their data onto
	 * stable storage first (FUA), so a crash never shows stale contents */
	io_wop_start(w->wop, w->p.dio.map, rwf | (makes_reachable(w->p.dio.map) ? RWF_DSYNC : 0),
		     write_written, w);
}

static void write_locked_work(struct work *wk)
{
	write_locked((struct wreq *)((char *)wk - offsetof(struct wreq, work)));
}

/* A grant may come on a reaper thread: continue on a worker. */
static void write_granted(struct rl_entry *e)
{
	struct wreq *w = (struct wreq *)((char *)e - offsetof(struct wreq, lock));

	w->work.fn = write_locked_work;
	workq_push(w->p.f->wq, &w->work);
}

static void e4_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ext4_front *f = front(req);
	struct wreq *w;
	uint64_t max = 0;

	count(FOP_WRITE);
	if (off < 0 || (!fi->writepage && odirect_misaligned(&f->tuning, fi->flags, (uint64_t)off, size))) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	if (size > io_max_len(f->io))
		size = io_max_len(f->io);
	w = calloc(1, sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->p.req = req;
	w->p.f = f;
	w->p.t0 = now_ns();
	w->p.kind = IOK_WRITE;
	busy_inc(f);
	w->ino = to_fs(ino);
	w->off = (uint64_t)off;
	w->len = size;
	w->cr = cred_of(req);
	w->rw_flags = (int)fi->fh;
	w->wflags = (fi->flags & O_APPEND ? FS_W_APPEND : 0) | (fi->writepage ? FS_W_WRITEBACK : 0);
	w->rl = fs_file_lock(f->fs, to_fs(ino), &max);
	/* past the largest file size: EFBIG; across it: a short write */
	if (w->rl && w->off >= max) {
		fuse_reply_err(req, EFBIG);
		pending_end(&w->p);
		return;
	}
	if (w->rl && size > max - w->off)
		w->len = size = (size_t)(max - w->off);
	w->wop = w->rl ? io_wop_new(f->io, w->off, buf, size, f->bs) : NULL;
	if (!w->wop) {
		fuse_reply_err(req, w->rl ? ENOMEM : EBADF);
		pending_end(&w->p);
		return;
	}
	w->lock.start = round_down(w->off, f->bs);
	w->lock.end = round_up(w->off + size, f->bs);
	w->lock.grant = write_granted;
	if (rangelock_acquire(w->rl, &w->lock))
		write_locked(w);
	else
		STAT_ADD(lock_waits, 1);
}

/* ---- directories ---- */

struct dirbuf {
	fuse_req_t req;
	char *buf;
	size_t size, used;
};

static int fill_entry(void *ctx, const char *name, size_t namelen, ino_t ino, mode_t type,
		      off_t next)
{
	struct dirbuf *d = ctx;
	struct stat st = { .st_ino = ino, .st_mode = type };
	char nm[256];
	size_t n;

	memcpy(nm, name, namelen);
	nm[namelen] = 0;
	n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, nm, &st, next);
	if (n > d->size - d->used)
		return 1;
	d->used += n;
	return 0;
}

static int fill_entry_plus(void *ctx, const char *name, size_t namelen, ino_t ino,
			   mode_t type, off_t next, const struct stat *st)
{
	struct dirbuf *d = ctx;
	struct fuse_entry_param e = { .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	char nm[256];
	size_t n;

	memcpy(nm, name, namelen);
	nm[namelen] = 0;
	if (st) {
		e.attr = *st;
		e.ino = to_fuse(ino);
	} else {
		/* . and ..: no lookup is counted for them */
		e.attr.st_ino = ino;
		e.attr.st_mode = type;
	}
	n = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, nm, &e, next);
	if (n > d->size - d->used)
		return 1;
	d->used += n;
	return 0;
}

/* readdir and readdirplus: fill one reply buffer from an offset on. */
static void read_directory(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct dirbuf d = { .req = req, .size = size };
	int r;

	count(FOP_READDIR);
	d.buf = malloc(size ? size : 1);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = plus ? fs_readdirplus(front(req)->fs, to_fs(ino), off, fill_entry_plus, &d)
		 : fs_readdir(front(req)->fs, to_fs(ino), off, fill_entry, &d);
	/* entries already counted as looked up must reach the kernel */
	if (r && d.used == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

static void e4_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	read_directory(req, ino, size, off, true);
}

static void e4_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r;

	count(FOP_OPENDIR);
	r = fs_getattr(front(req)->fs, to_fs(ino), &st);
	if (!r && !S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

static void e4_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	read_directory(req, ino, size, off, false);
}

static void e4_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	count(FOP_RELEASEDIR);
	fuse_reply_err(req, 0);
}

/* ---- inode flags: lsattr and chattr ---- */

/* Does the process have the capability in its effective set? */
static bool caller_capable(pid_t pid, int cap)
{
	char path[64], line[256];
	unsigned long long eff;
	bool yes = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			yes = (eff >> cap) & 1;
			break;
		}
	fclose(f);
	return yes;
}

/* The FS_IOC_FSGETXATTR flags and the inode flags they stand for. */
static const struct { uint32_t xflag, flag; } xflags_map[] = {
	{ FS_XFLAG_SYNC, FS_SYNC_FL }, { FS_XFLAG_IMMUTABLE, FS_IMMUTABLE_FL },
	{ FS_XFLAG_APPEND, FS_APPEND_FL }, { FS_XFLAG_NODUMP, FS_NODUMP_FL },
	{ FS_XFLAG_NOATIME, FS_NOATIME_FL }, { FS_XFLAG_DAX, FS_DAX_FL },
	{ FS_XFLAG_PROJINHERIT, FS_PROJINHERIT_FL },
};

static uint32_t xflags_translate(uint32_t v, bool to_xflags)
{
	uint32_t out = 0;

	for (size_t i = 0; i < sizeof(xflags_map) / sizeof(xflags_map[0]); i++)
		if (v & (to_xflags ? xflags_map[i].flag : xflags_map[i].xflag))
			out |= to_xflags ? xflags_map[i].xflag : xflags_map[i].flag;
	return out;
}

#define COMMON_FLAGS xflags_translate(~0u, false)

static int set_flags_of(fuse_req_t req, fuse_ino_t ino, uint32_t fl)
{
	struct ext4_front *f = front(req);
	int r = fs_set_flags(f->fs, to_fs(ino), fl,
			     caller_capable(fuse_req_ctx(req)->pid, CAP_SYS_RESOURCE));

	/* the kernel keeps the attributes it has (the ctime changed) */
	if (!r && f->se)
		fuse_lowlevel_notify_inval_inode(f->se, ino, -1, 0);
	return r;
}

/* The kernel sends these (and no other ioctl of files) with the sizes of
 * their arguments; it has checked ownership and CAP_LINUX_IMMUTABLE. */
static void e4_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf, size_t in_bufsz,
		     size_t out_bufsz)
{
	struct fs *fs = front(req)->fs;
	struct fsxattr x = { 0 };
	uint32_t fl = 0;
	int r;

	(void)arg;
	(void)fi;
	(void)flags;
	count(FOP_OTHER);
	switch (cmd) {
	case FS_IOC_GETFLAGS:
	case FS_IOC32_GETFLAGS:
		r = out_bufsz < sizeof(fl) ? -EINVAL : fs_get_flags(fs, to_fs(ino), &fl);
		if (!r)
			fuse_reply_ioctl(req, 0, &fl, sizeof(fl));
		break;
	case FS_IOC_SETFLAGS:
	case FS_IOC32_SETFLAGS:
		if (in_bufsz < sizeof(fl)) {
			r = -EINVAL;
			break;
		}
		memcpy(&fl, in_buf, sizeof(fl));
		r = set_flags_of(req, ino, fl);
		if (!r)
			fuse_reply_ioctl(req, 0, NULL, 0);
		break;
	case FS_IOC_FSGETXATTR:
		r = out_bufsz < sizeof(x) ? -EINVAL : fs_get_flags(fs, to_fs(ino), &fl);
		x.fsx_xflags = xflags_translate(fl, true);
		if (!r)
			fuse_reply_ioctl(req, 0, &x, sizeof(x));
		break;
	case FS_IOC_FSSETXATTR:
		if (in_bufsz < sizeof(x)) {
			r = -EINVAL;
			break;
		}
		memcpy(&x, in_buf, sizeof(x));
		/* the flags the xflags do not stand for stay as they are */
		r = fs_get_flags(fs, to_fs(ino), &fl);
		if (!r)
			r = set_flags_of(req, ino, (fl & ~COMMON_FLAGS) | xflags_translate(x.fsx_xflags, false));
		/* as ext4 without the project feature: the flags are set, a project is not */
		if (!r && x.fsx_projid)
			r = -EOPNOTSUPP;
		if (!r)
			fuse_reply_ioctl(req, 0, NULL, 0);
		break;
	default:
		r = -ENOTTY;
	}
	if (r)
		fuse_reply_err(req, -r);
}

/* ---- extended attributes ---- */

static void reply_sized(fuse_req_t req, ssize_t r, size_t size, const void *buf)
{
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
}

static void e4_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	ssize_t r;

	count(FOP_OTHER);
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fs_getxattr(front(req)->fs, to_fs(ino), name, buf, size);
	reply_sized(req, r, size, buf);
	free(buf);
}

static void e4_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	ssize_t r;

	count(FOP_OTHER);
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	{
		struct fs_cred cr = cred_of(req);

		r = fs_listxattr(front(req)->fs, to_fs(ino), buf, size, &cr);
	}
	reply_sized(req, r, size, buf);
	free(buf);
}

static void e4_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct fs_cred cr = cred_of(req);

	count(FOP_OTHER);
	fuse_reply_err(req, -fs_setxattr(front(req)->fs, to_fs(ino), name, value, size, flags, &cr));
}

static void e4_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	count(FOP_OTHER);
	fuse_reply_err(req, -fs_removexattr(front(req)->fs, to_fs(ino), name));
}

const struct fuse_lowlevel_ops ext4_ops = {
	.init = e4_init,
	.lookup = e4_lookup,
	.forget = e4_forget,
	.forget_multi = e4_forget_multi,
	.getattr = e4_getattr,
	.setattr = e4_setattr,
	.readlink = e4_readlink,
	.mknod = e4_mknod,
	.mkdir = e4_mkdir,
	.unlink = e4_unlink,
	.rmdir = e4_rmdir,
	.symlink = e4_symlink,
	.rename = e4_rename,
	.link = e4_link,
	.open = e4_open,
	.read = e4_read,
	.write = e4_write,
	.flush = ops_flush,
	.release = e4_release,
	.fsync = e4_fsync,
	.opendir = e4_opendir,
	.readdir = e4_readdir,
	.readdirplus = e4_readdirplus,
	.releasedir = e4_releasedir,
	.fsyncdir = e4_fsyncdir,
	.statfs = e4_statfs,
	.setxattr = e4_setxattr,
	.getxattr = e4_getxattr,
	.listxattr = e4_listxattr,
	.removexattr = e4_removexattr,
	.create = e4_create,
	.fallocate = e4_fallocate,
	.lseek = e4_lseek,
	.ioctl = e4_ioctl,
};
