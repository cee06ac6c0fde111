/* Filesystem mode: the requests libfuse 3.14 has no handler for, taken from
 * kaiofs's receive loop (rx_hooks) and answered here in the kernel's own
 * format: FUSE_TMPFILE (open(2) with O_TMPFILE, Linux 6.1) and FUSE_STATX
 * (statx(2) asking for the birth time, Linux 6.6). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fs.h"
#include "ops.h"
#include "rx.h"
#include "stats.h"

static uint64_t whole_seconds(double t)
{
	return (uint64_t)t;
}

static void attr_of(const struct stat *st, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = st->st_ino;
	a->size = (uint64_t)st->st_size;
	a->blocks = (uint64_t)st->st_blocks;
	a->atime = (uint64_t)st->st_atim.tv_sec;
	a->mtime = (uint64_t)st->st_mtim.tv_sec;
	a->ctime = (uint64_t)st->st_ctim.tv_sec;
	a->atimensec = (uint32_t)st->st_atim.tv_nsec;
	a->mtimensec = (uint32_t)st->st_mtim.tv_nsec;
	a->ctimensec = (uint32_t)st->st_ctim.tv_nsec;
	a->mode = st->st_mode;
	a->nlink = (uint32_t)st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = (uint32_t)st->st_rdev;
	a->blksize = (uint32_t)st->st_blksize;
}

/* The open flags of a fuse_file_info as FUSE_OPEN's reply carries them. */
static uint32_t open_out_flags(const struct fuse_file_info *fi)
{
	return (fi->direct_io ? FOPEN_DIRECT_IO : 0) | (fi->keep_cache ? FOPEN_KEEP_CACHE : 0) |
	       (fi->noflush ? FOPEN_NOFLUSH : 0);
}

/* Answered as FUSE_CREATE is: the new inode's entry, then the open file. */
static void do_tmpfile(struct ext4_front *f, const struct rx_request *r)
{
	const struct fuse_create_in *in = r->arg;
	struct fuse_file_info fi = { 0 };
	struct fuse_entry_out e = { 0 };
	struct fuse_open_out o = { 0 };
	struct stat st;
	int err;

	STAT_ADD(fuse_requests[FOP_OPEN], 1);
	if (r->arglen < sizeof(*in)) {
		rx_reply(r, EINVAL, NULL, 0);
		return;
	}
	struct fs_cred cr = { .uid = r->in->uid, .gid = r->in->gid, .umask = in->umask };

	err = fs_tmpfile(f->fs, to_fs(r->in->nodeid), in->mode, (int)in->flags, &cr, &st);
	if (err) {
		rx_reply(r, -err, NULL, 0);
		return;
	}
	fi.flags = (int)in->flags;
	open_set_mode(&fi, &f->tuning);
	e.nodeid = to_fuse(st.st_ino);
	e.entry_valid = e.attr_valid = whole_seconds(ENTRY_TIMEOUT);
	attr_of(&st, &e.attr);
	o.fh = fi.fh;
	o.open_flags = open_out_flags(&fi);
	struct iovec iov[2] = { { &e, sizeof(e) }, { &o, sizeof(o) } };

	if (rx_reply(r, 0, iov, 2) != 0) {
		/* the request is gone: nobody holds the file */
		fs_release(f->fs, st.st_ino);
		fs_forget(f->fs, st.st_ino, 1);
	}
}

static void sx_time(struct kaiofs_fuse_sx_time *t, const struct timespec *ts)
{
	t->tv_sec = ts->tv_sec;
	t->tv_nsec = (uint32_t)ts->tv_nsec;
}

static void do_statx(struct ext4_front *f, const struct rx_request *r)
{
	struct kaiofs_fuse_statx_out out = { 0 };
	struct kaiofs_fuse_statx *sx = &out.stat;
	struct fs_statx x;
	struct stat st;
	int err;

	STAT_ADD(fuse_requests[FOP_GETATTR], 1);
	err = fs_statx(f->fs, to_fs(r->in->nodeid), &st, &x);
	if (err) {
		rx_reply(r, -err, NULL, 0);
		return;
	}
	out.attr_valid = whole_seconds(ENTRY_TIMEOUT);
	sx->mask = STATX_BASIC_STATS | (x.has_btime ? STATX_BTIME : 0);
	sx->blksize = (uint32_t)st.st_blksize;
	sx->attributes = x.attributes;
	sx->attributes_mask = x.attributes_mask;
	sx->nlink = (uint32_t)st.st_nlink;
	sx->uid = st.st_uid;
	sx->gid = st.st_gid;
	sx->mode = (uint16_t)st.st_mode;
	sx->ino = st.st_ino;
	sx->size = (uint64_t)st.st_size;
	sx->blocks = (uint64_t)st.st_blocks;
	sx_time(&sx->atime, &st.st_atim);
	sx_time(&sx->mtime, &st.st_mtim);
	sx_time(&sx->ctime, &st.st_ctim);
	if (x.has_btime)
		sx_time(&sx->btime, &x.btime);
	sx->rdev_major = major(st.st_rdev);
	sx->rdev_minor = minor(st.st_rdev);
	struct iovec iov = { &out, sizeof(out) };

	rx_reply(r, 0, &iov, 1);
}

bool ext4_extra_request(void *front, const struct rx_request *r)
{
	switch (r->in->opcode) {
	case FUSE_TMPFILE:
		do_tmpfile(front, r);
		return true;
	case KAIOFS_FUSE_STATX:
		do_statx(front, r);
		return true;
	default:
		return false;
	}
}
