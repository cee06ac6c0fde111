/* The volume: the feature rules and checks, mount and unmount, statfs and
 * the reserved blocks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include "fs_cache.h"
#include "fs_int.h"

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
				r2 = kn_write_if_dirty(fs, k);
			if (r2 && !r)
				r = r2;
			dir_index_free(k->dir);
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

bool vol_may_use_reserved(struct fs *fs, const struct fs_cred *cr)
{
	struct ext2_super_block *sb = fs->e2->super;

	return cr->uid == 0 || cr->uid == sb->s_def_resuid ||
	       (sb->s_def_resgid && cr->gid == sb->s_def_resgid);
}

