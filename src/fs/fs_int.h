/* Private to the fs modules: libext2fs state, the in-memory inode table and
 * what the modules give each other. The modules, as in the kernel's
 * fs/ext4: fs_volume.c (the volume), fs_inode.c (inodes in memory),
 * fs_attr.c (attributes, open and release), fs_namei.c (names),
 * fs_dirblock.c (directory blocks), fs_map.c (block maps), fs_xattr.c
 * (extended attributes and ACL inheritance) over fs_xattr_codec.c (the
 * libext2fs xattr codec), fs_cache.c (the metadata block cache) and
 * fs_errno.c. Everything here runs under fs->lock unless it says
 * otherwise. */
#ifndef KAIOFS_FS_INT_H
#define KAIOFS_FS_INT_H

#include <ext2fs/ext2fs.h>
#include <pthread.h>

#include "fs.h"
#include "fs_errno.h"

struct dirindex;

/* An inode kaiofs holds: looked up by the kernel, open, or in use by an op.
 * Every field is protected by fs->lock unless it says otherwise; the lock
 * order and the threads are in src/CONCURRENCY.md. */
struct knode {
	ext2_ino_t ino;                 /* set once, before the knode is in the table */
	struct knode *hnext;            /* the table's chain */
	struct ext2_inode_large inode;  /* authoritative while loaded */
	bool dirty;                     /* inode differs from the disk */
	uint64_t nlookup;               /* the kernel's references */
	unsigned opencount;             /* open files: the knode stays while > 0 */
	unsigned pins;                  /* ops using it right now */
	/* Orders writes, truncates and punches of ranges of the file. Has its
	 * own mutex; taken before fs->lock, never under it. Used without
	 * fs->lock by holders of an open file (fs_file_lock). */
	struct rangelock wlock;
	/* Reads between map and done. Atomic: incremented under fs->lock,
	 * decremented by the reaper without it (fs_read_done); waited on with
	 * fs->gate_mu. */
	unsigned reads_inflight;
	struct dirindex *dir;           /* name index of a directory */
	struct extent_cache *ext;       /* regular files: the extent tree in memory */
	unsigned quiet_maps;            /* maps since the tree last changed */
	int8_t default_acl;             /* directories: -1 unknown, 0 none, 1 present */
	bool linkable;                  /* an O_TMPFILE inode fs_link may name */
};

/* The volume. Every field is protected by fs->lock unless it says
 * otherwise. */
struct fs {
	ext2_filsys e2;                 /* libext2fs and the metadata cache below it */
	pthread_mutex_t lock;           /* THE metadata lock */
	struct knode **htab;            /* the inode table */
	size_t hsize, count;
	bool ro;                        /* set at mount, read without the lock */
	unsigned bs;                    /* set at mount, read without the lock */
	unsigned inode_size;            /* on-disk inode size; set at mount */
	/* in-flight reads are counted outside the metadata lock: gate_mu and
	 * gate_cv wake map_quiesce_reads when a knode's last read ends (a leaf
	 * lock, taken under fs->lock or alone) */
	pthread_mutex_t gate_mu;
	pthread_cond_t gate_cv;
	bool errors;                    /* record EXT2_ERROR_FS at unmount */
	uint64_t resv;                  /* blocks kept back from everyone, as ext4 does; set at mount */
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

/* ---- inodes in memory (fs_inode.c) ---- */
/* Load (or find) an inode and pin it; -ENOENT for a free inode. */
int kn_get(struct fs *fs, ext2_ino_t ino, struct knode **out);
/* The inode if the table holds it (not pinned, not loaded), else NULL. */
struct knode *kn_find(struct fs *fs, ext2_ino_t ino);
/* Unpin; an unreferenced inode is written back (freed if unlinked) and
 * dropped from memory. */
void kn_put(struct fs *fs, struct knode *k);
int kn_write(struct fs *fs, struct knode *k);
/* Write a dirty copy back before libext2fs touches the inode itself, and
 * read it again afterwards. */
int kn_write_if_dirty(struct fs *fs, struct knode *k);
int kn_reload(struct fs *fs, struct knode *k);
void kn_stat(struct fs *fs, struct knode *k, struct stat *st);
/* Allocate and initialize a new inode (not yet linked anywhere). */
int kn_new(struct fs *fs, struct knode *dir, mode_t mode, const struct fs_cred *cr,
	   struct knode **out);
/* Give an inode with no links and no users back to the volume. */
int kn_free_inode(struct fs *fs, struct knode *k);

uint64_t kn_size(const struct knode *k);
void kn_set_size(struct fs *fs, struct knode *k, uint64_t size);
void kn_set_rdev(struct knode *k, dev_t rdev);
bool kn_is_dir(const struct knode *k);
unsigned kn_links(const struct knode *k);
/* Set now as the times asked for (m: mtime, c: ctime, a: atime). */
void kn_touch(struct fs *fs, struct knode *k, bool m, bool c, bool a);
/* Set the times given (NULL: unchanged), clamped to what the inode holds. */
void kn_set_times(struct fs *fs, struct knode *k, const struct timespec *a,
		  const struct timespec *m, const struct timespec *c);
/* The creation time, when the on-disk inode is large enough to hold one. */
bool kn_birth_time(struct fs *fs, const struct knode *k, struct timespec *out);
bool kn_flagged(const struct knode *k, __u32 fl);

/* Immutable and append-only inodes. The VFS refuses these changes with
 * EPERM for filesystems whose inodes carry the flags; FUSE's inodes do not,
 * so kaiofs refuses them itself. Each returns 0 or -EPERM. */
/* attributes, xattrs, links or existing data change: neither flag */
int kn_may_change(const struct knode *k);
/* data is added, or times set to now: not immutable */
int kn_may_write(const struct knode *k);
/* a name is added to dir: dir not immutable */
int kn_may_add_name(const struct knode *dir);
/* the name of victim leaves dir: neither may be immutable or append-only
 * (an append-only directory keeps its names) */
int kn_may_remove_name(const struct knode *dir, const struct knode *victim);

/* ---- the volume (fs_volume.c) ---- */
/* Is the caller allowed the root-reserved blocks? */
bool vol_may_use_reserved(struct fs *fs, const struct fs_cred *cr);

/* ---- extended attributes and ACL inheritance (fs_xattr.c) ---- */
#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"
struct acl_inherit {
	char *acl;          /* the parent's default ACL, masked for the new inode */
	size_t size;
	bool store_access;  /* it says more than the mode: store it */
};
/* The mode a new inode gets: masked by the parent's default ACL, or by the
 * umask when there is none. Called before the inode is made. */
void xa_inherit_acl(struct fs *fs, struct knode *dir, mode_t *mode, mode_t umask,
		    struct acl_inherit *p);
/* After the new inode is written: store the ACLs xa_inherit_acl prepared. */
int xa_store_inherited(struct fs *fs, struct knode *dir, struct knode *k, struct acl_inherit *p);
/* Rewrite an access ACL to match the mode, after a chmod. */
int xa_follow_mode(struct fs *fs, struct knode *k);

/* ---- directory blocks (fs_dirblock.c) ----
 * Every call takes a directory's knode, pinned, under fs->lock. */
void dir_index_free(struct dirindex *d);
/* The inode a name of dir points to, or -ENOENT. */
int dir_find(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t *ino);
/* The inode ".." of dir points to. */
int dir_parent(struct fs *fs, struct knode *dir, ext2_ino_t *out);
/* Add, remove, or point at another inode one entry of dir (type: EXT2_FT_*). */
int dir_add(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino, int type);
int dir_remove(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino);
int dir_retarget(struct fs *fs, struct knode *dir, const char *name, ext2_ino_t ino, int type);
/* 1 when dir holds nothing but "." and "..", 0 when it does, or -errno. */
int dir_is_empty(struct fs *fs, struct knode *k);
/* The first block of a new directory k, holding "." and ".." (-> parent). */
int dir_make_first_block(struct fs *fs, struct knode *k, ext2_ino_t parent);
/* Call fn for every entry in block order; fn returns 0 to go on, 1 to stop,
 * or -errno; it may change the entry and set *changed to have the block
 * written back. pos is the entry's byte position in the directory. */
typedef int (*dir_entry_fn)(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed);
int dir_walk(struct fs *fs, struct knode *dir, dir_entry_fn fn, void *ctx);
int dir_ftype_of(mode_t mode);
mode_t dir_mode_of_ftype(int t);

/* ---- block maps (fs_map.c) ---- */
/* The file's block map changed: forget the cached extents. */
void map_forget(struct knode *k);
/* The largest size the file's block map can reach. */
uint64_t map_max_size(struct fs *fs, struct knode *k);
/* Free the blocks past size (the caller made the range quiet) and set
 * i_size. */
int map_truncate(struct fs *fs, struct knode *k, uint64_t size);
/* Wait until no read of k is in flight; drops and retakes fs->lock while
 * waiting (k is pinned), returns with it held. */
void map_quiesce_reads(struct fs *fs, struct knode *k);

#endif
