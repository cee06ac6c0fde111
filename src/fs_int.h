/* Private to the fs modules: libext2fs state, the in-memory inode table and
 * helpers shared by fs.c (volume, attributes), fs_dir.c (names) and
 * fs_map.c (block maps and allocation). Everything here runs under fs->lock
 * unless it says otherwise. */
#ifndef KAIOFS_FS_INT_H
#define KAIOFS_FS_INT_H

#include <ext2fs/ext2fs.h>
#include <pthread.h>

#include "fs.h"

struct dirindex;

/* An inode kaiofs holds: looked up by the kernel, open, or in use by an op. */
struct knode {
	ext2_ino_t ino;
	struct knode *hnext;
	struct ext2_inode_large inode;  /* authoritative while loaded */
	bool dirty;                     /* inode differs from the disk */
	uint64_t nlookup;               /* the kernel's references */
	unsigned opencount;
	unsigned pins;                  /* ops using it right now */
	struct rangelock wlock;         /* orders writes, truncates, punches */
	unsigned reads_inflight;        /* atomic: reads between map and done */
	struct dirindex *dir;           /* name index of a directory */
	struct extent_cache *ext;       /* regular files: the extent tree in memory */
	unsigned quiet_maps;            /* maps since the tree last changed */
	int8_t default_acl;             /* directories: -1 unknown, 0 none, 1 present */
	bool linkable;                  /* an O_TMPFILE inode fs_link may name */
};

struct fs {
	ext2_filsys e2;
	pthread_mutex_t lock;           /* THE metadata lock */
	struct knode **htab;
	size_t hsize, count;
	bool ro;
	unsigned bs;
	unsigned inode_size;            /* on-disk inode size */
	/* in-flight reads are counted outside the metadata lock */
	pthread_mutex_t gate_mu;
	pthread_cond_t gate_cv;
	bool errors;                    /* record EXT2_ERROR_FS at unmount */
	uint64_t resv;                  /* blocks kept back from everyone, as ext4 does */
	uint32_t generation;            /* next i_generation */
};

static inline void inode_set_uid(struct ext2_inode_large *in, uid_t uid)
{
	in->i_uid = (__u16)uid;
	ext2fs_set_i_uid_high(*in, uid >> 16);
}

static inline void inode_set_gid(struct ext2_inode_large *in, gid_t gid)
{
	in->i_gid = (__u16)gid;
	ext2fs_set_i_gid_high(*in, gid >> 16);
}

#define IBUFSIZE ((int)sizeof(struct ext2_inode_large))
#define EI(k) ((struct ext2_inode *)&(k)->inode)

/* errno of a libext2fs error code, as a negative number */
int fs_errno(errcode_t err);

/* ---- the inode table (fs.c) ---- */
/* Load (or find) an inode and pin it; -ENOENT for a free inode. */
int kn_get(struct fs *fs, ext2_ino_t ino, struct knode **out);
/* Unpin; an unreferenced inode is written back (freed if unlinked) and
 * dropped from memory. */
void kn_put(struct fs *fs, struct knode *k);
int kn_write(struct fs *fs, struct knode *k);
/* Write a dirty copy back before libext2fs touches the inode itself, and
 * read it again afterwards. */
int kn_flush(struct fs *fs, struct knode *k);
int kn_reload(struct fs *fs, struct knode *k);
void kn_stat(struct fs *fs, struct knode *k, struct stat *st);
/* Allocate and initialize a new inode (not yet linked anywhere). */
int kn_new(struct fs *fs, struct knode *dir, mode_t mode, const struct fs_cred *cr,
	   struct knode **out);
/* Give an inode with no links and no users back to the volume. */
int kn_free_inode(struct fs *fs, struct knode *k);

uint64_t kn_size(const struct knode *k);
void kn_set_size(struct fs *fs, struct knode *k, uint64_t size);
void kn_touch(struct fs *fs, struct knode *k, bool m, bool c, bool a);
bool kn_is_dir(const struct knode *k);
unsigned kn_links(const struct knode *k);

/* ---- immutable and append-only inodes (fs.c) ----
 * The VFS refuses these changes with EPERM for filesystems whose inodes
 * carry the flags; FUSE's inodes do not, so kaiofs refuses them itself.
 * Each returns 0 or -EPERM. */
/* attributes, xattrs, links or existing data change: neither flag */
int kn_may_change(const struct knode *k);
/* data is added, or times set to now: not immutable */
int kn_may_write(const struct knode *k);
/* a name is added to dir: dir not immutable */
int kn_may_add_name(const struct knode *dir);
/* the name of victim leaves dir: neither may be immutable or append-only
 * (an append-only directory keeps its names) */
int kn_may_remove_name(const struct knode *dir, const struct knode *victim);

/* ---- ACLs (fs.c) ---- */
#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"
struct acl_inherit {
	char *acl;          /* the parent's default ACL, masked for the new inode */
	size_t size;
	bool store_access;  /* it says more than the mode: store it */
};
/* The mode a new inode gets: masked by the parent's default ACL, or by the
 * umask when there is none. Called before the inode is made. */
void kn_inherit_acl(struct fs *fs, struct knode *dir, mode_t *mode, mode_t umask,
		    struct acl_inherit *p);
/* After the new inode is written: store the ACLs kn_inherit_acl prepared. */
int kn_store_inherited(struct fs *fs, struct knode *dir, struct knode *k, struct acl_inherit *p);
int acl_follow_mode(struct fs *fs, struct knode *k);

/* ---- names (fs_dir.c) ---- */
void dirindex_free(struct dirindex *d);

/* ---- block maps (fs_map.c) ---- */
/* The file's block map changed: forget the cached extents. */
void map_forget(struct knode *k);
uint64_t fs_max_size(struct fs *fs, struct knode *k);
void kn_set_rdev(struct knode *k, dev_t rdev);
/* Free the blocks past size (the caller made the range quiet) and set
 * i_size. */
int map_truncate(struct fs *fs, struct knode *k, uint64_t size);
/* Wait until no read of k is in flight; drops and retakes fs->lock while
 * waiting (k is pinned), returns with it held. */
void map_quiesce_reads(struct fs *fs, struct knode *k);
/* Is the caller allowed the root-reserved blocks? */
bool may_use_reserved(struct fs *fs, const struct fs_cred *cr);

#endif
