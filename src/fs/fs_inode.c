/* Inodes in memory: the table of the inodes kaiofs holds, loading, writing
 * back, creating and freeing them, their fields, times and the immutable
 * and append-only rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "fs_cache.h"
#include "fs_int.h"

/* ---- time stamps: seconds with epoch bits and nanoseconds in *_extra ---- */

static bool has_extra_times(const struct fs *fs, const struct ext2_inode_large *in)
{
	return fs->inode_size > EXT2_GOOD_OLD_INODE_SIZE && in->i_extra_isize >= 24;
}

static void encode_time(const struct timespec *ts, __u32 *sec, __u32 *extra)
{
	*sec = (__u32)(int32_t)ts->tv_sec;
	if (extra)
		*extra = (__u32)((((uint64_t)ts->tv_sec - (uint64_t)(int64_t)(int32_t)ts->tv_sec) >> 32) & 3) |
			 (__u32)ts->tv_nsec << 2;
}

static struct timespec decode_time(__u32 sec, const __u32 *extra)
{
	struct timespec ts = { .tv_sec = (int32_t)sec };

	if (extra) {
		ts.tv_sec += (int64_t)(*extra & 3) << 32;
		ts.tv_nsec = *extra >> 2;
	}
	return ts;
}

/* Times outside what the inode can hold are clamped, as the kernel does. */
static struct timespec clamp_time(const struct timespec *t, bool extra)
{
	const int64_t min = INT32_MIN;
	const int64_t max = extra ? (int64_t)INT32_MIN + (1ll << 34) - 1 : INT32_MAX;
	struct timespec r = *t;

	if (r.tv_sec <= min || r.tv_sec >= max) {
		r.tv_sec = r.tv_sec <= min ? min : max;
		r.tv_nsec = 0;
	}
	return r;
}

void kn_set_times(struct fs *fs, struct knode *k, const struct timespec *a,
		      const struct timespec *m, const struct timespec *c)
{
	struct ext2_inode_large *in = &k->inode;
	bool x = has_extra_times(fs, in);
	struct timespec ca, cm, cc;

	if (a)
		a = (ca = clamp_time(a, x), &ca);
	if (m)
		m = (cm = clamp_time(m, x), &cm);
	if (c)
		c = (cc = clamp_time(c, x), &cc);

	if (a)
		encode_time(a, &in->i_atime, x ? &in->i_atime_extra : NULL);
	if (m)
		encode_time(m, &in->i_mtime, x ? &in->i_mtime_extra : NULL);
	if (c)
		encode_time(c, &in->i_ctime, x ? &in->i_ctime_extra : NULL);
	k->dirty = true;
}

void kn_touch(struct fs *fs, struct knode *k, bool m, bool c, bool a)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	kn_set_times(fs, k, a ? &now : NULL, m ? &now : NULL, c ? &now : NULL);
}

/* The inode's creation time, when its on-disk inode is large enough to
 * hold one. */
bool kn_birth_time(struct fs *fs, const struct knode *k, struct timespec *out)
{
	if (!has_extra_times(fs, &k->inode))
		return false;
	*out = decode_time(k->inode.i_crtime, &k->inode.i_crtime_extra);
	return true;
}

/* ---- inode fields ---- */

uint64_t kn_size(const struct knode *k)
{
	return EXT2_I_SIZE(&k->inode);
}

void kn_set_size(struct fs *fs, struct knode *k, uint64_t size)
{
	ext2fs_inode_size_set(fs->e2, EI(k), (ext2_off64_t)size);
	k->dirty = true;
}

bool kn_is_dir(const struct knode *k)
{
	return LINUX_S_ISDIR(k->inode.i_mode);
}

unsigned kn_links(const struct knode *k)
{
	return k->inode.i_links_count;
}

static dev_t decode_rdev(const struct ext2_inode_large *in)
{
	__u32 old = in->i_block[0], new = in->i_block[1];

	if (old)
		return makedev((old >> 8) & 0xff, old & 0xff);
	return makedev((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00));
}

static void encode_rdev(struct ext2_inode_large *in, dev_t rdev)
{
	unsigned ma = major(rdev), mi = minor(rdev);

	if (ma < 256 && mi < 256) {
		in->i_block[0] = (ma << 8) | mi;
		in->i_block[1] = 0;
	} else {
		in->i_block[0] = 0;
		in->i_block[1] = (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
		in->i_block[2] = 0;
	}
}

/* ---- immutable and append-only ---- */

bool kn_flagged(const struct knode *k, __u32 fl)
{
	return (k->inode.i_flags & fl) != 0;
}

int kn_may_change(const struct knode *k)
{
	return kn_flagged(k, EXT2_IMMUTABLE_FL | EXT2_APPEND_FL) ? -EPERM : 0;
}

int kn_may_write(const struct knode *k)
{
	return kn_flagged(k, EXT2_IMMUTABLE_FL) ? -EPERM : 0;
}

int kn_may_add_name(const struct knode *dir)
{
	return kn_may_write(dir);
}

int kn_may_remove_name(const struct knode *dir, const struct knode *victim)
{
	return kn_may_change(dir) ?: kn_may_change(victim);
}

void kn_stat(struct fs *fs, struct knode *k, struct stat *st)
{
	const struct ext2_inode_large *in = &k->inode;
	bool x = has_extra_times(fs, in);

	memset(st, 0, sizeof(*st));
	st->st_ino = k->ino;
	st->st_mode = in->i_mode;
	st->st_nlink = in->i_links_count;
	st->st_uid = inode_uid(*in);
	st->st_gid = inode_gid(*in);
	st->st_size = (off_t)kn_size(k);
	st->st_blksize = fs->bs;
	st->st_blocks = (blkcnt_t)ext2fs_get_stat_i_blocks(fs->e2, EI(k));
	if (LINUX_S_ISCHR(in->i_mode) || LINUX_S_ISBLK(in->i_mode))
		st->st_rdev = decode_rdev(in);
	st->st_atim = decode_time(in->i_atime, x ? &in->i_atime_extra : NULL);
	st->st_mtim = decode_time(in->i_mtime, x ? &in->i_mtime_extra : NULL);
	st->st_ctim = decode_time(in->i_ctime, x ? &in->i_ctime_extra : NULL);
}

/* ---- the inode table ---- */

static size_t hslot(const struct fs *fs, ext2_ino_t ino)
{
	return (ino * 2654435761u) & (fs->hsize - 1);
}

struct knode *kn_find(struct fs *fs, ext2_ino_t ino)
{
	for (struct knode *k = fs->htab[hslot(fs, ino)]; k; k = k->hnext)
		if (k->ino == ino)
			return k;
	return NULL;
}

static void table_grow(struct fs *fs)
{
	size_t old = fs->hsize;
	struct knode **oldtab = fs->htab;
	struct knode **tab = calloc(old * 2, sizeof(*tab));

	if (!tab)
		return; /* keep the longer chains */
	fs->htab = tab;
	fs->hsize = old * 2;
	for (size_t i = 0; i < old; i++) {
		struct knode *k = oldtab[i], *next;

		for (; k; k = next) {
			next = k->hnext;
			k->hnext = tab[hslot(fs, k->ino)];
			tab[hslot(fs, k->ino)] = k;
		}
	}
	free(oldtab);
}

static void table_remove(struct fs *fs, struct knode *k)
{
	struct knode **p = &fs->htab[hslot(fs, k->ino)];

	while (*p != k)
		p = &(*p)->hnext;
	*p = k->hnext;
	fs->count--;
}

/* A loaded knode joins the table, pinned once. */
static void table_insert(struct fs *fs, struct knode *k)
{
	rangelock_init(&k->wlock);
	k->default_acl = -1;
	k->pins = 1;
	k->hnext = fs->htab[hslot(fs, k->ino)];
	fs->htab[hslot(fs, k->ino)] = k;
	if (++fs->count > fs->hsize)
		table_grow(fs);
}

static int read_inode(struct fs *fs, ext2_ino_t ino, struct ext2_inode_large *in)
{
	errcode_t e;

	memset(in, 0, sizeof(*in));
	e = ext2fs_read_inode_full(fs->e2, ino, (struct ext2_inode *)in,
				   fs->inode_size < IBUFSIZE ? (int)fs->inode_size : IBUFSIZE);
	if (e)
		return fs_errno(e);
	if (fs->inode_size <= EXT2_GOOD_OLD_INODE_SIZE)
		in->i_extra_isize = 0;
	return 0;
}

int kn_get(struct fs *fs, ext2_ino_t ino, struct knode **out)
{
	struct knode *k = kn_find(fs, ino);
	int r;

	if (k) {
		k->pins++;
		*out = k;
		return 0;
	}
	if (ino < EXT2_ROOT_INO || ino > fs->e2->super->s_inodes_count)
		return -ENOENT;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->ino = ino;
	r = read_inode(fs, ino, &k->inode);
	if (!r && (k->inode.i_links_count == 0 || k->inode.i_mode == 0))
		r = -ENOENT;
	if (r) {
		free(k);
		return r;
	}
	table_insert(fs, k);
	*out = k;
	return 0;
}

int kn_write(struct fs *fs, struct knode *k)
{
	errcode_t e;

	if (fs->ro)
		return 0;
	/* An inode whose last name is gone is recorded deleted in the same
	 * write (as a crash would leave it: e2fsck frees it either way), so
	 * that freeing it at its last reference needs no write of its own
	 * when it has no blocks to give back. */
	if (k->inode.i_links_count == 0 && !k->inode.i_dtime)
		k->inode.i_dtime = (__u32)time(NULL);
	e = ext2fs_write_inode_full(fs->e2, k->ino, EI(k),
				    fs->inode_size < IBUFSIZE ? (int)fs->inode_size : IBUFSIZE);
	if (e)
		return fs_errno(e);
	k->dirty = false;
	return 0;
}

int kn_write_if_dirty(struct fs *fs, struct knode *k)
{
	return k->dirty ? kn_write(fs, k) : 0;
}

int kn_reload(struct fs *fs, struct knode *k)
{
	k->dirty = false;
	return read_inode(fs, k->ino, &k->inode);
}

int kn_free_inode(struct fs *fs, struct knode *k)
{
	int r = 0;
	errcode_t e;

	if (ext2fs_inode_has_valid_blocks2(fs->e2, EI(k)))
		r = map_truncate(fs, k, 0);
	if (!r && ext2fs_file_acl_block(fs->e2, EI(k))) {
		e = ext2fs_free_ext_attr(fs->e2, k->ino, &k->inode);
		r = fs_errno(e);
		k->dirty = true;        /* its block pointer and count changed */
	}
	if (!k->inode.i_dtime)
		k->dirty = true;        /* kn_write records the deletion time */
	if (!r)
		r = kn_write_if_dirty(fs, k);
	if (!r)
		ext2fs_inode_alloc_stats2(fs->e2, k->ino, -1, kn_is_dir(k));
	return r;
}

void kn_put(struct fs *fs, struct knode *k)
{
	if (--k->pins || k->nlookup || k->opencount || k->ino == EXT2_ROOT_INO)
		return;
	if (k->inode.i_links_count == 0 && !fs->ro)
		kn_free_inode(fs, k);
	else
		kn_write_if_dirty(fs, k);
	table_remove(fs, k);
	dir_index_free(k->dir);
	map_forget(k);
	rangelock_destroy(&k->wlock);
	free(k);
}

int kn_new(struct fs *fs, struct knode *dir, mode_t mode, const struct fs_cred *cr,
	   struct knode **out)
{
	ext2_ino_t ino;
	errcode_t e;
	struct knode *k;
	char *full;
	struct ext2_inode_large *in;
	struct timespec now;

	e = ext2fs_new_inode(fs->e2, dir->ino, (int)mode, NULL, &ino);
	if (e)
		return fs_errno(e);
	full = calloc(1, fs->inode_size);
	k = calloc(1, sizeof(*k));
	if (!full || !k) {
		free(full);
		free(k);
		return -ENOMEM;
	}
	in = &k->inode;
	in->i_mode = (__u16)mode;
	in->i_links_count = 1;
	inode_set_uid(in, cr->uid);
	/* a set-gid directory passes on its group (and, to directories, the bit) */
	if (dir->inode.i_mode & LINUX_S_ISGID) {
		inode_set_gid(in, inode_gid(dir->inode));
		if (LINUX_S_ISDIR(mode))
			in->i_mode |= LINUX_S_ISGID;
	} else {
		inode_set_gid(in, cr->gid);
	}
	if (fs->inode_size > EXT2_GOOD_OLD_INODE_SIZE)
		in->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	in->i_generation = fs->generation++;
	k->ino = ino;
	clock_gettime(CLOCK_REALTIME, &now);
	kn_set_times(fs, k, &now, &now, &now);
	if (has_extra_times(fs, in))
		encode_time(&now, &in->i_crtime, &in->i_crtime_extra);
	if ((LINUX_S_ISREG(mode) || LINUX_S_ISDIR(mode)) &&
	    ext2fs_has_feature_extents(fs->e2->super)) {
		ext2_extent_handle_t h;

		e = ext2fs_extent_open2(fs->e2, ino, EI(k), &h);
		if (e) {
			free(full);
			free(k);
			return fs_errno(e);
		}
		ext2fs_extent_free(h);
	}
	/* the whole on-disk inode, so no stale in-inode xattrs survive */
	memcpy(full, in, fs->inode_size < sizeof(*in) ? fs->inode_size : sizeof(*in));
	e = ext2fs_write_inode_full(fs->e2, ino, (struct ext2_inode *)full, (int)fs->inode_size);
	free(full);
	if (e) {
		free(k);
		return fs_errno(e);
	}
	k->dirty = false;       /* the disk has just what memory has */
	ext2fs_inode_alloc_stats2(fs->e2, ino, +1, LINUX_S_ISDIR(mode));
	table_insert(fs, k);
	*out = k;
	return 0;
}

void kn_set_rdev(struct knode *k, dev_t rdev)
{
	encode_rdev(&k->inode, rdev);
	k->dirty = true;
}

void fs_forget(struct fs *fs, ino_t ino, uint64_t nlookup)
{
	struct knode *k;

	pthread_mutex_lock(&fs->lock);
	k = kn_find(fs, (ext2_ino_t)ino);
	if (k) {
		k->nlookup = k->nlookup > nlookup ? k->nlookup - nlookup : 0;
		k->pins++;
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
}
