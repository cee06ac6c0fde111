/* Attributes of inodes: stat, statx, setattr and the inode flags; opening
 * and releasing files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>

#include "fs_int.h"

int fs_getattr(struct fs *fs, ino_t ino, struct stat *st)
{
	struct knode *k;
	int ret = 0;

	WITH_INODE(fs, ino, k, kn_stat(fs, k, st));
	return ret;
}

static void set_owner(struct knode *k, const struct stat *attr, int to_set)
{
	if (to_set & FS_SET_UID)
		inode_set_uid(&k->inode, attr->st_uid);
	if (to_set & FS_SET_GID)
		inode_set_gid(&k->inode, attr->st_gid);
}

static int apply_attrs(struct fs *fs, struct knode *k, const struct stat *attr, int to_set)
{
	struct timespec now, a, m;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	if (to_set & FS_SET_MODE) {
		k->inode.i_mode = (__u16)((k->inode.i_mode & LINUX_S_IFMT) | (attr->st_mode & 07777));
		r = xa_follow_mode(fs, k);
		if (r)
			return r;
	}
	set_owner(k, attr, to_set);
	a = (to_set & FS_SET_ATIME_NOW) ? now : attr->st_atim;
	m = (to_set & FS_SET_MTIME_NOW) ? now : attr->st_mtim;
	kn_set_times(fs, k,
		  (to_set & (FS_SET_ATIME | FS_SET_ATIME_NOW)) ? &a : NULL,
		  (to_set & (FS_SET_MTIME | FS_SET_MTIME_NOW)) ? &m : NULL,
		  (to_set & FS_SET_CTIME) ? &attr->st_ctim : &now);
	return kn_write(fs, k);
}

/* Times set to now need only that the inode is not immutable; anything
 * else set needs it neither immutable nor append-only, as notify_change
 * has it. */
static int setattr_refusal(const struct knode *k, int to_set)
{
	bool explicit_time = ((to_set & FS_SET_ATIME) && !(to_set & FS_SET_ATIME_NOW)) ||
			     ((to_set & FS_SET_MTIME) && !(to_set & FS_SET_MTIME_NOW));

	if (explicit_time || (to_set & (FS_SET_MODE | FS_SET_UID | FS_SET_GID |
					FS_SET_SIZE)))
		return kn_may_change(k);
	if (to_set & (FS_SET_ATIME_NOW | FS_SET_MTIME_NOW))
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
	x->has_btime = kn_birth_time(fs, k, &x->btime);
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
void fs_release(struct fs *fs, ino_t ino)
{
	struct knode *k;

	pthread_mutex_lock(&fs->lock);
	k = kn_find(fs, (ext2_ino_t)ino);
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
	k = kn_find(fs, (ext2_ino_t)ino);
	if (k && max_size)
		*max_size = map_max_size(fs, k);
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
	WITH_INODE(fs, ino, k, ret = kn_write_if_dirty(fs, k));
	return ret;
}

