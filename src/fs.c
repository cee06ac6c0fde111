/* The volume, the in-memory inode table and attributes. */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "fs_cache.h"
#include "fs_int.h"
#include "fs_xattr.h"

int fs_errno(errcode_t err)
{
	if (err == EXT2_ET_EXTENT_NOT_SUPPORTED)
		return -EFBIG;
	return fsx_errno(err);
}

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

static void set_times(struct fs *fs, struct knode *k, const struct timespec *a,
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
	set_times(fs, k, a ? &now : NULL, m ? &now : NULL, c ? &now : NULL);
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

static bool kn_flagged(const struct knode *k, __u32 fl)
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

static struct knode *table_find(struct fs *fs, ext2_ino_t ino)
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
	struct knode *k = table_find(fs, ino);
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

int kn_flush(struct fs *fs, struct knode *k)
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
		r = kn_flush(fs, k);
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
		kn_flush(fs, k);
	table_remove(fs, k);
	dirindex_free(k->dir);
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
	set_times(fs, k, &now, &now, &now);
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

/* ---- mount and unmount ---- */

struct feature_rule {
	bool (*has)(struct ext2_super_block *sb);
	const char *name;
	bool ro_ok;        /* readable safely */
};

static bool has_inline(struct ext2_super_block *s) { return ext2fs_has_feature_inline_data(s); }
static bool has_bigalloc(struct ext2_super_block *s) { return ext2fs_has_feature_bigalloc(s); }
static bool has_quota(struct ext2_super_block *s) { return ext2fs_has_feature_quota(s) || ext2fs_has_feature_project(s); }
static bool has_encrypt(struct ext2_super_block *s) { return ext2fs_has_feature_encrypt(s); }
static bool has_verity(struct ext2_super_block *s) { return ext2fs_has_feature_verity(s); }
static bool has_casefold(struct ext2_super_block *s) { return ext2fs_has_feature_casefold(s); }
static bool has_shared(struct ext2_super_block *s) { return ext2fs_has_feature_shared_blocks(s); }
static bool has_ea_inode(struct ext2_super_block *s) { return ext2fs_has_feature_ea_inode(s); }
static bool has_mmp(struct ext2_super_block *s) { return ext2fs_has_feature_mmp(s); }

static const struct feature_rule feature_rules[] = {
	{ has_inline, "inline_data", false },
	{ has_bigalloc, "bigalloc", false },
	{ has_encrypt, "encrypt", false },
	{ has_casefold, "casefold", false },
	{ has_quota, "quota", true },
	{ has_verity, "verity", true },
	{ has_shared, "shared_blocks", true },
	{ has_ea_inode, "ea_inode", true },
	{ has_mmp, "mmp", true },
};

/* Refuse what libext2fs cannot handle safely; may turn the mount read-only
 * only when asked for read-only. Returns 0 or -1 with err set. */
static int check_volume(struct fs *fs, const char *dev, char *err, size_t errlen)
{
	struct ext2_super_block *sb = fs->e2->super;

	if (ext2fs_has_feature_journal_needs_recovery(sb)) {
		snprintf(err, errlen, "%s: the journal needs recovery; run e2fsck -f %s first", dev, dev);
		return -1;
	}
	if (ext2fs_has_feature_journal_dev(sb)) {
		snprintf(err, errlen, "%s: is an external journal, not a filesystem", dev);
		return -1;
	}
	if (ext2fs_has_feature_orphan_present(sb) || (!fs->ro && sb->s_last_orphan)) {
		snprintf(err, errlen, "%s: has orphan inodes to clean up; run e2fsck -f %s first", dev, dev);
		return -1;
	}
	for (size_t i = 0; i < sizeof(feature_rules) / sizeof(feature_rules[0]); i++) {
		const struct feature_rule *r = &feature_rules[i];

		if (!r->has(sb) || (fs->ro && r->ro_ok))
			continue;
		snprintf(err, errlen, "%s: the %s feature is not supported%s", dev, r->name,
			 r->ro_ok ? " for writing; mount with -o ro" : "");
		return -1;
	}
	if (!fs->ro && (sb->s_state & EXT2_ERROR_FS)) {
		snprintf(err, errlen, "%s: errors are recorded on this filesystem; run e2fsck -f %s, "
			 "or mount with -o ro", dev, dev);
		return -1;
	}
	if (!fs->ro && !(sb->s_state & EXT2_VALID_FS)) {
		snprintf(err, errlen, "%s: was not cleanly unmounted; run e2fsck -f %s, "
			 "or mount with -o ro", dev, dev);
		return -1;
	}
	if (!fs->ro && (sb->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP)) {
		snprintf(err, errlen, "%s: has read-only-compatible features this version cannot "
			 "write; mount with -o ro", dev);
		return -1;
	}
	return 0;
}

/* What libext2fs trusts when it reads the bitmaps and tables: where the
 * data blocks start, and where each group keeps its bitmaps and inodes.
 * A damaged value would send it past its buffers or the volume. */
static int check_geometry(struct fs *fs, const char *dev, char *err, size_t errlen)
{
	struct ext2_super_block *sb = fs->e2->super;
	uint32_t want_first = fs->e2->blocksize == 1024 ? 1 : 0;
	errcode_t e = 0;

	if (sb->s_first_data_block != want_first)
		e = EXT2_ET_CORRUPT_SUPERBLOCK;
	else
		e = ext2fs_check_desc(fs->e2);
	if (!e)
		return 0;
	snprintf(err, errlen, "%s: the superblock or the group descriptors are damaged (%s); "
		 "run e2fsck -f %s", dev, error_message(e), dev);
	return -1;
}

static void open_error(const char *dev, errcode_t e, char *err, size_t errlen)
{
	switch (e) {
	case EXT2_ET_BAD_MAGIC:
	case EXT2_ET_SB_CSUM_INVALID:
	case EXT2_ET_CORRUPT_SUPERBLOCK:
	case EXT2_ET_SHORT_READ:
		snprintf(err, errlen, "%s: no ext2/ext3/ext4 filesystem found (%s)", dev, error_message(e));
		break;
	case EXT2_ET_UNSUPP_FEATURE:
		snprintf(err, errlen, "%s: uses filesystem features this version does not know", dev);
		break;
	case EXT2_ET_RO_UNSUPP_FEATURE:
		snprintf(err, errlen, "%s: uses features this version cannot write; mount with -o ro", dev);
		break;
	default:
		if (e == EBUSY)
			snprintf(err, errlen, "%s: device is busy (mounted or in use elsewhere)", dev);
		else
			snprintf(err, errlen, "%s: cannot open the filesystem: %s; run e2fsck -f %s",
				 dev, error_message(e), dev);
	}
}

int fs_mark_mounted(struct fs *fs)
{
	if (fs->ro)
		return 0;
	struct ext2_super_block *sb = fs->e2->super;

	sb->s_state &= (__u16)~EXT2_VALID_FS;
	sb->s_mnt_count++;
	sb->s_mtime = (__u32)time(NULL);
	ext2fs_mark_super_dirty(fs->e2);
	return fs_errno(ext2fs_flush2(fs->e2, 0));
}

struct fs *fs_mount(const struct fs_mount_opts *o, bool *readonly_out, char *err, size_t errlen)
{
	struct fs *fs = calloc(1, sizeof(*fs));
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_DIRECT_IO;
	errcode_t e;

	if (!fs) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fs->ro = o->readonly;
	/* exclusive even read-only: nobody may change it under us */
	flags |= EXT2_FLAG_EXCLUSIVE;
	if (!fs->ro)
		flags |= EXT2_FLAG_RW;
	add_error_table(&et_ext2_error_table);
	e = ext2fs_open2(o->device, "cache=off", flags, 0, 0, mcache_manager(o->meta_cache), &fs->e2);
	if (e) {
		open_error(o->device, e, err, errlen);
		free(fs);
		return NULL;
	}
	fs->e2->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	mcache_follow_allocations(fs->e2);
	/* libext2fs would otherwise read-modify-write metadata in page-sized
	 * units on image files, across data blocks the AIO path owns */
	if (o->dio_align && o->dio_align <= fs->e2->blocksize)
		fs->e2->io->align = (int)o->dio_align;
	fs->e2->umask = 0;
	fs->bs = fs->e2->blocksize;
	fs->inode_size = EXT2_INODE_SIZE(fs->e2->super);
	/* ext4 keeps 2% (at most 4096 blocks) back from every user, on
	 * volumes with extents */
	fs->resv = ext2fs_has_feature_extents(fs->e2->super) ? ext2fs_blocks_count(fs->e2->super) / 50 : 0;
	if (fs->resv > 4096)
		fs->resv = 4096;
	if (check_volume(fs, o->device, err, errlen) != 0 ||
	    check_geometry(fs, o->device, err, errlen) != 0)
		goto fail;
	e = ext2fs_read_bitmaps(fs->e2);
	if (e) {
		snprintf(err, errlen, "%s: cannot read the allocation bitmaps: %s; run e2fsck -f %s",
			 o->device, error_message(e), o->device);
		goto fail;
	}
	fs->hsize = 1024;
	fs->htab = calloc(fs->hsize, sizeof(*fs->htab));
	if (getrandom(&fs->generation, sizeof(fs->generation), 0) != sizeof(fs->generation))
		fs->generation = (uint32_t)time(NULL);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->gate_mu, NULL);
	pthread_cond_init(&fs->gate_cv, NULL);
	*readonly_out = fs->ro;
	return fs;
fail:
	ext2fs_close_free(&fs->e2);
	free(fs->htab);
	free(fs);
	return NULL;
}

int fs_unmount(struct fs *fs)
{
	struct ext2_super_block *sb;
	int r = 0, r2;

	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->hsize; i++) {
		struct knode *k = fs->htab[i], *next;

		for (; k; k = next) {
			next = k->hnext;
			/* unlinked inodes still referenced at unmount go now */
			if (!fs->ro && k->inode.i_links_count == 0)
				r2 = kn_free_inode(fs, k);
			else
				r2 = kn_flush(fs, k);
			if (r2 && !r)
				r = r2;
			dirindex_free(k->dir);
			map_forget(k);
			rangelock_destroy(&k->wlock);
			free(k);
		}
	}
	if (!fs->ro) {
		sb = fs->e2->super;
		if (r)
			fs->errors = true;
		sb->s_state |= EXT2_VALID_FS;
		if (fs->errors)
			sb->s_state |= EXT2_ERROR_FS;
		ext2fs_set_gdt_csum(fs->e2);
		ext2fs_mark_super_dirty(fs->e2);
		ext2fs_mark_bb_dirty(fs->e2);
		ext2fs_mark_ib_dirty(fs->e2);
	}
	r2 = fs_errno(ext2fs_close_free(&fs->e2));
	if (r2 && !r)
		r = r2;
	if (!r && fs->errors)
		r = -EIO;
	pthread_mutex_unlock(&fs->lock);
	pthread_mutex_destroy(&fs->lock);
	free(fs->htab);
	free(fs);
	return r;
}

unsigned fs_block_size(const struct fs *fs) { return fs->bs; }
bool fs_readonly(const struct fs *fs) { return fs->ro; }

/* ---- attributes ---- */

/* Run body with the inode pinned under the metadata lock. */
#define WITH_INODE(fs, ino, k, ...) do { \
	int _r; \
	pthread_mutex_lock(&(fs)->lock); \
	_r = kn_get((fs), (ext2_ino_t)(ino), &(k)); \
	if (_r == 0) { \
		__VA_ARGS__; \
		kn_put((fs), (k)); \
	} \
	pthread_mutex_unlock(&(fs)->lock); \
	ret = _r ? _r : ret; \
} while (0)

int fs_getattr(struct fs *fs, ino_t ino, struct stat *st)
{
	struct knode *k;
	int ret = 0;

	WITH_INODE(fs, ino, k, kn_stat(fs, k, st));
	return ret;
}

void fs_forget(struct fs *fs, ino_t ino, uint64_t nlookup)
{
	struct knode *k;

	pthread_mutex_lock(&fs->lock);
	k = table_find(fs, (ext2_ino_t)ino);
	if (k) {
		k->nlookup = k->nlookup > nlookup ? k->nlookup - nlookup : 0;
		k->pins++;
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
}

uint64_t fs_max_size(struct fs *fs, struct knode *k)
{
	uint64_t bs = fs->bs, a = bs / 4, blocks;

	if (k->inode.i_flags & EXT4_EXTENTS_FL)
		return ((1ull << 32) - 1) * bs;
	blocks = EXT2_NDIR_BLOCKS + a + a * a + a * a * a;
	if (!ext2fs_has_feature_huge_file(fs->e2->super) && blocks > (1ull << 32) / (bs / 512))
		blocks = (1ull << 32) / (bs / 512) - 1;
	if (!ext2fs_has_feature_large_file(fs->e2->super) && blocks * bs > 0x7fffffffull)
		return 0x7fffffffull;
	return blocks * bs;
}

int fs_truncate(struct fs *fs, ino_t ino, uint64_t size)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, {
		if (!LINUX_S_ISREG(k->inode.i_mode))
			ret = kn_is_dir(k) ? -EISDIR : -EINVAL;
		else if (size > fs_max_size(fs, k))
			ret = -EFBIG;
		else if (!(ret = kn_may_change(k))) {
			map_quiesce_reads(fs, k);
			ret = map_truncate(fs, k, size);
			if (!ret) {
				kn_touch(fs, k, true, true, false);
				ret = kn_write(fs, k);
			}
		}
	});
	return ret;
}

static void set_owner(struct knode *k, const struct stat *attr, int to_set)
{
	if (to_set & FUSE_SET_ATTR_UID)
		inode_set_uid(&k->inode, attr->st_uid);
	if (to_set & FUSE_SET_ATTR_GID)
		inode_set_gid(&k->inode, attr->st_gid);
}

static int apply_attrs(struct fs *fs, struct knode *k, const struct stat *attr, int to_set)
{
	struct timespec now, a, m;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	if (to_set & FUSE_SET_ATTR_MODE) {
		k->inode.i_mode = (__u16)((k->inode.i_mode & LINUX_S_IFMT) | (attr->st_mode & 07777));
		r = acl_follow_mode(fs, k);
		if (r)
			return r;
	}
	set_owner(k, attr, to_set);
	a = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? now : attr->st_atim;
	m = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : attr->st_mtim;
	set_times(fs, k,
		  (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) ? &a : NULL,
		  (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) ? &m : NULL,
		  (to_set & FUSE_SET_ATTR_CTIME) ? &attr->st_ctim : &now);
	return kn_write(fs, k);
}

/* Times set to now need only that the inode is not immutable; anything
 * else set needs it neither immutable nor append-only, as notify_change
 * has it. */
static int setattr_refusal(const struct knode *k, int to_set)
{
	bool explicit_time = ((to_set & FUSE_SET_ATTR_ATIME) && !(to_set & FUSE_SET_ATTR_ATIME_NOW)) ||
			     ((to_set & FUSE_SET_ATTR_MTIME) && !(to_set & FUSE_SET_ATTR_MTIME_NOW));

	if (explicit_time || (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
					FUSE_SET_ATTR_SIZE)))
		return kn_may_change(k);
	if (to_set & (FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))
		return kn_may_write(k);
	return 0;
}

/* ---- statx and inode flags ---- */

/* statx attributes and the inode flags they come from, as ext4 reports them */
static const struct { __u32 fl; uint64_t attr; } statx_attrs[] = {
	{ EXT2_APPEND_FL, STATX_ATTR_APPEND }, { EXT2_COMPR_FL, STATX_ATTR_COMPRESSED },
	{ EXT4_ENCRYPT_FL, STATX_ATTR_ENCRYPTED }, { EXT2_IMMUTABLE_FL, STATX_ATTR_IMMUTABLE },
	{ EXT2_NODUMP_FL, STATX_ATTR_NODUMP }, { EXT4_VERITY_FL, STATX_ATTR_VERITY },
};

static void kn_statx(struct fs *fs, struct knode *k, struct fs_statx *x)
{
	const struct ext2_inode_large *in = &k->inode;

	memset(x, 0, sizeof(*x));
	x->has_btime = has_extra_times(fs, in);
	if (x->has_btime)
		x->btime = decode_time(in->i_crtime, &in->i_crtime_extra);
	for (size_t i = 0; i < sizeof(statx_attrs) / sizeof(statx_attrs[0]); i++) {
		x->attributes_mask |= statx_attrs[i].attr;
		if (in->i_flags & statx_attrs[i].fl)
			x->attributes |= statx_attrs[i].attr;
	}
}

int fs_statx(struct fs *fs, ino_t ino, struct stat *st, struct fs_statx *x)
{
	struct knode *k;
	int ret = 0;

	WITH_INODE(fs, ino, k, {
		kn_stat(fs, k, st);
		kn_statx(fs, k, x);
	});
	return ret;
}

/* What ext4 shows of i_flags, and what of that SETFLAGS may change. */
#define FL_VISIBLE 0x725BDFFFu
#define FL_MODIFIABLE 0x624BC0FFu
#define FL_JOURNAL_DATA 0x00004000u
/* flags only directories may carry; all that other special files may */
#define FL_DIRS_ONLY (EXT2_DIRSYNC_FL | EXT2_TOPDIR_FL | EXT4_CASEFOLD_FL | EXT4_PROJINHERIT_FL)
#define FL_OTHER (EXT2_NODUMP_FL | EXT2_NOATIME_FL)

int fs_get_flags(struct fs *fs, ino_t ino, uint32_t *flags)
{
	struct knode *k;
	int ret = 0;

	WITH_INODE(fs, ino, k, *flags = k->inode.i_flags & FL_VISIBLE);
	return ret;
}

/* Only an empty file may switch between extents and block maps: moving
 * existing blocks from one to the other is not done. */
static int switch_mapping(struct fs *fs, struct knode *k, bool extents)
{
	ext2_extent_handle_t h;
	errcode_t e;

	if (extents && !ext2fs_has_feature_extents(fs->e2->super))
		return -EINVAL;
	if (ext2fs_inode_data_blocks2(fs->e2, EI(k)) || !LINUX_S_ISREG(k->inode.i_mode) ||
	    ext2fs_file_acl_block(fs->e2, EI(k)) != 0)
		return -EOPNOTSUPP;
	memset(k->inode.i_block, 0, sizeof(k->inode.i_block));
	k->inode.i_flags &= ~EXT4_EXTENTS_FL;
	map_forget(k);
	if (!extents)
		return 0;
	e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);   /* writes an empty tree */
	if (e)
		return fs_errno(e);
	ext2fs_extent_free(h);
	return 0;
}

static int set_flags_refusal(const struct knode *k, uint32_t flags, bool may_journal)
{
	uint32_t old = k->inode.i_flags, mask = FL_MODIFIABLE;

	if (flags & ~FL_VISIBLE)
		return -EOPNOTSUPP;
	if (!LINUX_S_ISDIR(k->inode.i_mode))
		mask = LINUX_S_ISREG(k->inode.i_mode) ? FL_MODIFIABLE & ~FL_DIRS_ONLY : FL_OTHER;
	if ((flags & FL_MODIFIABLE) & ~mask)
		return -EOPNOTSUPP;
	if ((flags ^ old) & EXT4_CASEFOLD_FL)
		return -EOPNOTSUPP;
	/* an immutable inode that stays so changes nothing else */
	if ((old & flags & EXT2_IMMUTABLE_FL) &&
	    ((old ^ flags) & FL_MODIFIABLE & ~EXT2_IMMUTABLE_FL))
		return -EPERM;
	if (((flags ^ old) & FL_JOURNAL_DATA) && !may_journal)
		return -EPERM;
	return 0;
}

int fs_set_flags(struct fs *fs, ino_t ino, uint32_t flags, bool may_journal)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, {
		uint32_t old = k->inode.i_flags;

		ret = set_flags_refusal(k, flags, may_journal);
		if (!ret && ((flags ^ old) & EXT4_EXTENTS_FL))
			ret = switch_mapping(fs, k, flags & EXT4_EXTENTS_FL);
		if (!ret) {
			k->inode.i_flags = (k->inode.i_flags & ~FL_MODIFIABLE) | (flags & FL_MODIFIABLE);
			kn_touch(fs, k, false, true, false);
			ret = kn_write(fs, k);
		}
	});
	return ret;
}

int fs_may_setattr(struct fs *fs, ino_t ino, int to_set)
{
	struct knode *k;
	int ret = 0;

	WITH_INODE(fs, ino, k, ret = setattr_refusal(k, to_set));
	return ret;
}

int fs_setattr(struct fs *fs, ino_t ino, const struct stat *attr, int to_set, struct stat *st)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, {
		ret = setattr_refusal(k, to_set);
		if (!ret)
			ret = apply_attrs(fs, k, attr, to_set);
		kn_stat(fs, k, st);
	});
	return ret;
}

/* ---- open files ---- */

/* may_open's rules for immutable and append-only inodes */
static int open_refusal(const struct knode *k, int flags)
{
	bool writes = (flags & O_ACCMODE) != O_RDONLY;

	if (!writes && !(flags & O_TRUNC))
		return 0;
	if (kn_may_write(k))
		return -EPERM;
	if (kn_flagged(k, EXT2_APPEND_FL) && ((writes && !(flags & O_APPEND)) || (flags & O_TRUNC)))
		return -EPERM;
	return 0;
}

int fs_open(struct fs *fs, ino_t ino, int flags)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro && (flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	WITH_INODE(fs, ino, k, {
		ret = open_refusal(k, flags);
		if (!ret)
			k->opencount++;
	});
	return ret;
}

int fs_tmpfile(struct fs *fs, ino_t parent, mode_t mode, int flags, const struct fs_cred *cr,
	       struct stat *st)
{
	struct acl_inherit inh = { 0 };
	struct knode *dir, *k = NULL;
	int r;

	if (!S_ISREG(mode))
		return -EINVAL;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)parent, &dir);
	if (r)
		goto out;
	r = !kn_is_dir(dir) ? -ENOTDIR : dir->inode.i_links_count == 0 ? -ENOENT : kn_may_add_name(dir);
	if (!r) {
		kn_inherit_acl(fs, dir, &mode, cr->umask, &inh);
		r = kn_new(fs, dir, mode, cr, &k);
	}
	if (!r) {
		/* no name: recorded deleted, as an unlinked open file */
		k->inode.i_links_count = 0;
		k->linkable = !(flags & O_EXCL);
		r = kn_write(fs, k);
	}
	if (!r)
		r = kn_store_inherited(fs, dir, k, &inh);
	if (k) {
		if (!r) {
			k->nlookup++;
			k->opencount++;
			kn_stat(fs, k, st);
		}
		kn_put(fs, k);  /* frees it on failure */
	}
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	free(inh.acl);
	return r;
}

void fs_release(struct fs *fs, ino_t ino)
{
	struct knode *k;

	pthread_mutex_lock(&fs->lock);
	k = table_find(fs, (ext2_ino_t)ino);
	if (k && k->opencount) {
		k->opencount--;
		k->pins++;
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
}

struct rangelock *fs_file_lock(struct fs *fs, ino_t ino, uint64_t *max_size)
{
	struct knode *k;

	pthread_mutex_lock(&fs->lock);
	k = table_find(fs, (ext2_ino_t)ino);
	if (k && max_size)
		*max_size = fs_max_size(fs, k);
	pthread_mutex_unlock(&fs->lock);
	/* valid while the file is open: the caller holds it open */
	return k ? &k->wlock : NULL;
}

int fs_sync_inode(struct fs *fs, ino_t ino, bool datasync)
{
	struct knode *k;
	int ret = 0;

	(void)datasync;
	if (fs->ro)
		return 0;
	/* The inode reaches the file's blocks; the bitmaps do not, and e2fsck
	 * rebuilds them after a crash, so they wait for unmount. Directory
	 * entries were written when they changed. */
	WITH_INODE(fs, ino, k, ret = kn_flush(fs, k));
	return ret;
}

int fs_statfs(struct fs *fs, const struct fs_cred *cr, struct statvfs *sv)
{
	(void)cr;
	struct ext2_super_block *sb = fs->e2->super;
	uint64_t free_blocks, reserved, overhead = 0;

	pthread_mutex_lock(&fs->lock);
	free_blocks = ext2fs_free_blocks_count(sb);
	reserved = ext2fs_r_blocks_count(sb);
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = fs->bs;
	sv->f_frsize = fs->bs;
	overhead = ext2fs_blocks_count(sb) > sb->s_overhead_clusters ? sb->s_overhead_clusters : 0;
	sv->f_blocks = ext2fs_blocks_count(sb) - overhead;
	sv->f_bfree = free_blocks;
	/* as ext4 reports it, to root too */
	sv->f_bavail = free_blocks > reserved + fs->resv ? free_blocks - reserved - fs->resv : 0;
	sv->f_files = sb->s_inodes_count;
	sv->f_ffree = sb->s_free_inodes_count;
	sv->f_favail = sb->s_free_inodes_count;
	sv->f_namemax = EXT2_NAME_LEN;
	sv->f_fsid = *(unsigned long *)sb->s_uuid;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

bool may_use_reserved(struct fs *fs, const struct fs_cred *cr)
{
	struct ext2_super_block *sb = fs->e2->super;

	return cr->uid == 0 || cr->uid == sb->s_def_resuid ||
	       (sb->s_def_resgid && cr->gid == sb->s_def_resgid);
}

/* ---- extended attributes ---- */

ssize_t fs_getxattr(struct fs *fs, ino_t ino, const char *name, void *buf, size_t size)
{
	struct knode *k;
	ssize_t ret = 0;

	WITH_INODE(fs, ino, k, {
		ret = kn_flush(fs, k);
		if (!ret)
			ret = fsx_get(fs->e2, k->ino, name, buf, size);
	});
	return ret;
}

/* Drop trusted.* names from a list (for unprivileged callers). */
static ssize_t drop_trusted(char *buf, ssize_t len)
{
	char *in = buf, *out = buf, *end = buf + len;

	while (in < end) {
		size_t n = strlen(in) + 1;

		if (strncmp(in, "trusted.", 8) != 0) {
			memmove(out, in, n);
			out += n;
		}
		in += n;
	}
	return out - buf;
}

ssize_t fs_listxattr(struct fs *fs, ino_t ino, char *buf, size_t size, const struct fs_cred *cr)
{
	struct knode *k;
	ssize_t ret = 0;

	WITH_INODE(fs, ino, k, {
		ret = kn_flush(fs, k);
		if (!ret && cr->uid == 0) {
			ret = fsx_list(fs->e2, k->ino, buf, size);
		} else if (!ret) {
			/* the full list, filtered, then sized for the caller */
			ssize_t all = fsx_list(fs->e2, k->ino, NULL, 0);
			char *tmp = all > 0 ? malloc((size_t)all) : NULL;

			ret = all;
			if (all > 0 && !tmp)
				ret = -ENOMEM;
			else if (all > 0 && (ret = fsx_list(fs->e2, k->ino, tmp, (size_t)all)) >= 0)
				ret = drop_trusted(tmp, ret);
			if (ret > 0 && size && (size_t)ret > size)
				ret = -ERANGE;
			else if (ret > 0 && size)
				memcpy(buf, tmp, (size_t)ret);
			free(tmp);
		}
	});
	return ret;
}

/* Changing xattrs rewrites the inode: write ours first, read it back after. */
static int xattr_store(struct fs *fs, struct knode *k, const char *name, const void *value,
		       size_t size, int flags, bool remove)
{
	int r = kn_flush(fs, k), r2;

	if (r)
		return r;
	r = remove ? fsx_remove(fs->e2, k->ino, name)
		   : fsx_set(fs->e2, k->ino, name, value, size, flags);
	r2 = kn_reload(fs, k);
	if (!strcmp(name, ACL_DEFAULT))
		k->default_acl = -1;
	return r ? r : r2;
}

/* Rewrite an access ACL to match the mode, after a chmod. */
int acl_follow_mode(struct fs *fs, struct knode *k)
{
	ssize_t n;
	char *buf;
	int r;

	if ((r = kn_flush(fs, k)))
		return r;
	n = fsx_get(fs->e2, k->ino, ACL_ACCESS, NULL, 0);
	if (n == -ENODATA || n == -EOPNOTSUPP)
		return 0;
	if (n < 0)
		return (int)n;
	buf = malloc((size_t)n);
	if (!buf)
		return -ENOMEM;
	n = fsx_get(fs->e2, k->ino, ACL_ACCESS, buf, (size_t)n);
	r = n < 0 ? (int)n : 0;
	if (!r && acl_valid(buf, (size_t)n)) {
		__u16 mode = k->inode.i_mode;

		acl_chmod(buf, (size_t)n, mode);
		r = xattr_store(fs, k, ACL_ACCESS, buf, (size_t)n, 0, false);
		k->inode.i_mode = mode;
		k->dirty = true;
	}
	free(buf);
	return r;
}

static int xattr_change(struct fs *fs, struct knode *k, const char *name, const void *value,
			size_t size, int flags, bool remove, const struct fs_cred *cr)
{
	bool setting_acl = !remove && !strcmp(name, ACL_ACCESS) && acl_valid(value, size);
	mode_t bits = 0;
	bool equivalent = false;
	int r = kn_may_change(k);

	if (r)
		return r;
	if (setting_acl) {
		bits = acl_mode(value, size, &equivalent);
		/* an ACL that says no more than the mode is not stored */
		if (equivalent) {
			r = xattr_store(fs, k, name, NULL, 0, 0, true);
			r = r == -ENODATA ? 0 : r;
		} else {
			r = xattr_store(fs, k, name, value, size, flags, false);
		}
	} else {
		r = xattr_store(fs, k, name, value, size, flags, remove);
	}
	if (r)
		return r;
	if (setting_acl) {
		k->inode.i_mode = (__u16)((k->inode.i_mode & ~0777) | bits);
		/* as chmod: the set-gid bit goes unless the caller may keep it */
		if (cr->uid != 0 && (gid_t)inode_gid(k->inode) != cr->gid)
			k->inode.i_mode &= (__u16)~LINUX_S_ISGID;
	}
	kn_touch(fs, k, false, true, false);
	return kn_write(fs, k);
}

int fs_setxattr(struct fs *fs, ino_t ino, const char *name, const void *value, size_t size,
		int flags, const struct fs_cred *cr)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, ret = xattr_change(fs, k, name, value, size, flags, false, cr));
	return ret;
}

/* ---- ACL inheritance ---- */


/* The parent's default ACL, or NULL (cached as absent per directory). */
static char *default_acl_of(struct fs *fs, struct knode *dir, size_t *size)
{
	ssize_t n;
	char *buf;

	if (dir->default_acl == 0 || kn_flush(fs, dir))
		return NULL;
	n = fsx_get(fs->e2, dir->ino, ACL_DEFAULT, NULL, 0);
	if (n <= 0 || !(buf = malloc((size_t)n))) {
		dir->default_acl = n == -ENODATA ? 0 : -1;
		return NULL;
	}
	n = fsx_get(fs->e2, dir->ino, ACL_DEFAULT, buf, (size_t)n);
	if (n <= 0 || !acl_valid(buf, (size_t)n)) {
		free(buf);
		return NULL;
	}
	dir->default_acl = 1;
	*size = (size_t)n;
	return buf;
}

void kn_inherit_acl(struct fs *fs, struct knode *dir, mode_t *mode, mode_t umask,
		    struct acl_inherit *p)
{
	size_t size = 0;
	char *acl;

	memset(p, 0, sizeof(*p));
	if (LINUX_S_ISLNK(*mode))
		return; /* symlinks are always 0777 */
	acl = default_acl_of(fs, dir, &size);
	if (!acl) {
		*mode &= ~(umask & 0777);
		return;
	}
	p->acl = acl;
	p->size = size;
	p->store_access = acl_create_masq(acl, size, mode);
}

int kn_store_inherited(struct fs *fs, struct knode *dir, struct knode *k, struct acl_inherit *p)
{
	int r = 0;

	if (!p->acl)
		return 0;
	if (p->store_access)
		r = xattr_store(fs, k, ACL_ACCESS, p->acl, p->size, 0, false);
	if (!r && kn_is_dir(k)) {
		/* a directory passes the default on unchanged */
		size_t n = 0;
		char *dflt = default_acl_of(fs, dir, &n);

		r = dflt ? xattr_store(fs, k, ACL_DEFAULT, dflt, n, 0, false) : 0;
		free(dflt);
	}
	free(p->acl);
	p->acl = NULL;
	return r;
}

int fs_removexattr(struct fs *fs, ino_t ino, const char *name)
{
	struct knode *k;
	int ret = 0;

	if (fs->ro)
		return -EROFS;
	WITH_INODE(fs, ino, k, ret = xattr_change(fs, k, name, NULL, 0, 0, true, NULL));
	return ret;
}
