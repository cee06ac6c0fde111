/* Names: lookup, creation, links, removal, rename, readdir and O_TMPFILE
 * inodes, over the directory blocks of fs_dirblock.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#endif

static void link_inc(struct fs *fs, struct knode *k)
{
	/* dir_nlink: past the limit a directory's count stays 1 */
	if (kn_is_dir(k) && (k->inode.i_links_count >= EXT2_LINK_MAX - 1 || k->inode.i_links_count == 1) &&
	    ext2fs_has_feature_dir_nlink(fs->e2->super))
		k->inode.i_links_count = 1;
	else
		k->inode.i_links_count++;
	k->dirty = true;
}

static void link_dec(struct knode *k)
{
	if (kn_is_dir(k) && k->inode.i_links_count == 1)
		return; /* a dir_nlink-saturated count stays 1 */
	if (k->inode.i_links_count)
		k->inode.i_links_count--;
	k->dirty = true;
}

/* What a change of names may alter in a directory's inode besides its times. */
struct dir_shape {
	uint64_t size;
	uint32_t blocks;
	uint16_t links;
};

static struct dir_shape shape_of(const struct knode *dir)
{
	struct dir_shape s = { kn_size(dir), dir->inode.i_blocks, dir->inode.i_links_count };

	return s;
}

/* The directory's inode after a change of names. When only its times moved
 * (the entries changed inside blocks it already had), they wait for fsync,
 * the last reference or unmount: a crash loses nothing else. Anything more
 * is written now. */
static int dir_settle(struct fs *fs, struct knode *dir, struct dir_shape before)
{
	struct dir_shape now = shape_of(dir);

	if (now.size == before.size && now.blocks == before.blocks && now.links == before.links)
		return 0;
	return kn_write(fs, dir);
}

static bool dir_full(struct fs *fs, struct knode *dir)
{
	return dir->inode.i_links_count >= EXT2_LINK_MAX - 1 &&
	       !ext2fs_has_feature_dir_nlink(fs->e2->super);
}

/* ---- lookup ---- */

static int check_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0)
		return -ENOENT;
	if (n > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	return 0;
}

int fs_lookup(struct fs *fs, ino_t parent, const char *name, struct stat *st)
{
	struct knode *dir, *k;
	ext2_ino_t found;
	ext2_ino_t ino;
	int r = check_name(name);

	if (r)
		return r;
	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)parent, &dir);
	if (r)
		goto out;
	if (!kn_is_dir(dir)) {
		r = -ENOTDIR;
	} else if (!strcmp(name, ".") || !strcmp(name, "..")) {
		ino = dir->ino;
		r = strcmp(name, "..") ? 0 : dir_parent(fs, dir, &ino);
		if (!r && !(r = kn_get(fs, ino, &k))) {
			k->nlookup++;
			kn_stat(fs, k, st);
			kn_put(fs, k);
		}
	} else if (!(r = dir_find(fs, dir, name, &found)) && !(r = kn_get(fs, found, &k))) {
		k->nlookup++;
		kn_stat(fs, k, st);
		kn_put(fs, k);
	}
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- creation ---- */

/* A symlink's target: in the inode when short, else in one block. */
static int store_symlink(struct fs *fs, struct knode *k, const char *target)
{
	size_t len = strlen(target);
	blk64_t blk;
	char *block;
	errcode_t e;

	if (len >= fs->bs)
		return -ENAMETOOLONG;
	if (len < sizeof(k->inode.i_block)) {
		memcpy(k->inode.i_block, target, len);
		kn_set_size(fs, k, len);
		return 0;
	}
	e = ext2fs_new_block2(fs->e2, ext2fs_find_inode_goal(fs->e2, k->ino, EI(k), 0), NULL, &blk);
	if (e)
		return fs_errno(e);
	block = calloc(1, fs->bs);
	if (!block)
		return -ENOMEM;
	memcpy(block, target, len);
	e = io_channel_write_blk64(fs->e2->io, blk, 1, block);
	free(block);
	if (e)
		return fs_errno(e);
	ext2fs_block_alloc_stats2(fs->e2, blk, +1);
	if (ext2fs_has_feature_extents(fs->e2->super)) {
		ext2_extent_handle_t h;

		e = ext2fs_extent_open2(fs->e2, k->ino, EI(k), &h);
		if (!e) {
			e = ext2fs_extent_set_bmap(h, 0, blk, 0);
			ext2fs_extent_free(h);
		}
	} else {
		e = ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, BMAP_SET | BMAP_ALLOC, 0, NULL, &blk);
	}
	if (e)
		return fs_errno(e);
	ext2fs_iblk_add_blocks(fs->e2, EI(k), 1);
	kn_set_size(fs, k, len);
	return 0;
}

struct new_node {
	mode_t mode;
	dev_t rdev;
	const char *target;
};

static int create_node(struct fs *fs, ino_t parent, const char *name, const struct new_node *nn,
		       const struct fs_cred *cr, struct stat *st)
{
	struct knode *dir, *k = NULL;
	struct dir_shape before;
	struct acl_inherit inh = { 0 };
	ext2_ino_t found;
	mode_t mode = nn->mode;
	int r = check_name(name);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)parent, &dir);
	if (r)
		goto out;
	r = dir_find(fs, dir, name, &found);
	if (r == 0)
		r = -EEXIST;
	else if (r == -ENOENT)
		r = kn_may_add_name(dir) ?: (S_ISDIR(nn->mode) && dir_full(fs, dir) ? -EMLINK : 0);
	if (!r && dir->inode.i_links_count == 0)
		r = -ENOENT; /* the directory was removed */
	before = shape_of(dir);
	if (!r) {
		xa_inherit_acl(fs, dir, &mode, cr->umask, &inh);
		r = kn_new(fs, dir, mode, cr, &k);
	}
	if (!r && S_ISDIR(nn->mode))
		r = dir_make_first_block(fs, k, dir->ino);
	else if (!r && S_ISLNK(nn->mode))
		r = store_symlink(fs, k, nn->target);
	else if (!r && (S_ISCHR(nn->mode) || S_ISBLK(nn->mode)))
		kn_set_rdev(k, nn->rdev);
	if (!r)
		r = kn_write_if_dirty(fs, k);    /* a plain file is on the disk as kn_new wrote it */
	if (!r)
		r = xa_store_inherited(fs, dir, k, &inh);
	if (!r)
		r = dir_add(fs, dir, name, k->ino, dir_ftype_of(nn->mode));
	if (!r && S_ISDIR(nn->mode))
		link_inc(fs, dir);
	if (!r)
		r = dir_settle(fs, dir, before);
	if (k) {
		if (r) {
			k->inode.i_links_count = 0; /* freed by kn_put */
		} else {
			k->nlookup++;
			kn_stat(fs, k, st);
		}
		kn_put(fs, k);
	}
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	free(inh.acl);
	return r;
}

int fs_mknod(struct fs *fs, ino_t parent, const char *name, mode_t mode, dev_t rdev,
	     const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = mode, .rdev = rdev };

	if (!S_ISREG(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
		return -EINVAL;
	return create_node(fs, parent, name, &nn, cr, st);
}

int fs_mkdir(struct fs *fs, ino_t parent, const char *name, mode_t mode,
	     const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = S_IFDIR | (mode & 07777) };

	return create_node(fs, parent, name, &nn, cr, st);
}

int fs_symlink(struct fs *fs, ino_t parent, const char *name, const char *target,
	       const struct fs_cred *cr, struct stat *st)
{
	struct new_node nn = { .mode = S_IFLNK | 0777, .target = target };

	return create_node(fs, parent, name, &nn, cr, st);
}

ssize_t fs_readlink(struct fs *fs, ino_t ino, char *buf, size_t size)
{
	struct knode *k;
	ssize_t r;

	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)ino, &k);
	if (r)
		goto out;
	uint64_t len = kn_size(k);

	if (!LINUX_S_ISLNK(k->inode.i_mode)) {
		r = -EINVAL;
	} else if (len >= size || len >= fs->bs) {
		r = -ENAMETOOLONG;
	} else if (!ext2fs_inode_data_blocks2(fs->e2, EI(k)) && len < sizeof(k->inode.i_block)) {
		memcpy(buf, k->inode.i_block, len);
		buf[len] = 0;
		r = (ssize_t)len;
	} else {
		blk64_t blk = 0;
		char *block = malloc(fs->bs);
		errcode_t e = block ? ext2fs_bmap2(fs->e2, k->ino, EI(k), NULL, 0, 0, NULL, &blk)
				    : EXT2_ET_NO_MEMORY;

		if (!e)
			e = blk ? io_channel_read_blk64(fs->e2->io, blk, 1, block) : EXT2_ET_BAD_BLOCK_NUM;
		if (!e) {
			memcpy(buf, block, len);
			buf[len] = 0;
		}
		free(block);
		r = e ? fs_errno(e) : (ssize_t)len;
	}
	kn_put(fs, k);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fs_link(struct fs *fs, ino_t ino, ino_t newparent, const char *newname, struct stat *st)
{
	struct knode *dir, *k;
	ext2_ino_t found;
	int r = check_name(newname);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)newparent, &dir)))
		goto out;
	if ((r = kn_get(fs, (ext2_ino_t)ino, &k)))
		goto put_dir;
	r = dir_find(fs, dir, newname, &found);
	if (r == 0)
		r = -EEXIST;
	else if (r == -ENOENT)
		r = kn_may_add_name(dir) ?: kn_may_change(k) ?: kn_is_dir(k) ? -EPERM :
		    k->inode.i_links_count >= EXT2_LINK_MAX ? -EMLINK : 0;
	/* a file without names: only an O_TMPFILE inode gets one back */
	if (!r && (dir->inode.i_links_count == 0 || (k->inode.i_links_count == 0 && !k->linkable)))
		r = -ENOENT;
	if (!r)
		r = dir_add(fs, dir, newname, k->ino, dir_ftype_of(k->inode.i_mode));
	if (!r) {
		if (k->inode.i_links_count == 0)
			k->inode.i_dtime = 0;   /* recorded deleted until now */
		link_inc(fs, k);
		kn_touch(fs, k, false, true, false);
		r = kn_write(fs, k);
		if (!r)
			r = kn_write(fs, dir);
		k->nlookup++;
		kn_stat(fs, k, st);
	}
	kn_put(fs, k);
put_dir:
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* Remove name (pointing at victim) from dir and drop the victim's links. */
static int drop_entry(struct fs *fs, struct knode *dir, const char *name, struct knode *victim)
{
	struct dir_shape before = shape_of(dir);
	int r = dir_remove(fs, dir, name, victim->ino);

	if (r)
		return r;
	if (kn_is_dir(victim)) {
		victim->inode.i_links_count = 0;
		link_dec(dir);
	} else {
		link_dec(victim);
	}
	victim->dirty = true;
	kn_touch(fs, victim, false, true, false);
	r = kn_write(fs, victim);
	return r ? r : dir_settle(fs, dir, before);
}

static int remove_name(struct fs *fs, ino_t parent, const char *name, bool want_dir)
{
	struct knode *dir, *k;
	ext2_ino_t found;
	int r = check_name(name);

	if (r)
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)parent, &dir)))
		goto out;
	if ((r = dir_find(fs, dir, name, &found)) || (r = kn_get(fs, found, &k)))
		goto put_dir;
	r = kn_may_remove_name(dir, k);
	if (!r && want_dir != kn_is_dir(k))
		r = want_dir ? -ENOTDIR : -EISDIR;
	else if (!r && want_dir && (r = dir_is_empty(fs, k)) >= 0)
		r = r ? 0 : -ENOTEMPTY;
	if (!r)
		r = drop_entry(fs, dir, name, k);
	kn_put(fs, k);
put_dir:
	kn_put(fs, dir);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fs_unlink(struct fs *fs, ino_t parent, const char *name)
{
	return remove_name(fs, parent, name, false);
}

int fs_rmdir(struct fs *fs, ino_t parent, const char *name)
{
	return remove_name(fs, parent, name, true);
}

/* ---- rename ---- */

/* Is a an ancestor of (or equal to) d? Walks ".." up to the root. */
static int is_ancestor(struct fs *fs, ext2_ino_t a, struct knode *d)
{
	ext2_ino_t cur = d->ino;
	int depth = 0;

	while (cur != EXT2_ROOT_INO && depth++ < 65536) {
		struct knode *k;
		int r;

		if (cur == a)
			return 1;
		if ((r = kn_get(fs, cur, &k)))
			return r;
		r = dir_parent(fs, k, &cur);
		kn_put(fs, k);
		if (r)
			return r;
	}
	return cur == a;
}

/* A directory moved to another parent: its ".." and both parents' counts. */
static int reparent(struct fs *fs, struct knode *k, struct knode *from, struct knode *to)
{
	int r;

	if (!kn_is_dir(k) || from == to)
		return 0;
	r = dir_retarget(fs, k, "..", to->ino, EXT2_FT_DIR);
	if (r)
		return r;
	link_dec(from);
	link_inc(fs, to);
	return 0;
}

struct rename_ctx {
	struct knode *sd, *dd;      /* source and destination directories */
	struct knode *s, *d;        /* source inode, destination inode (or NULL) */
	const char *sname, *dname;
};

static int do_exchange(struct fs *fs, struct rename_ctx *c)
{
	int r = dir_retarget(fs, c->sd, c->sname, c->d->ino, dir_ftype_of(c->d->inode.i_mode));

	if (!r)
		r = dir_retarget(fs, c->dd, c->dname, c->s->ino, dir_ftype_of(c->s->inode.i_mode));
	if (!r)
		r = reparent(fs, c->s, c->sd, c->dd);
	if (!r)
		r = reparent(fs, c->d, c->dd, c->sd);
	kn_touch(fs, c->s, false, true, false);
	kn_touch(fs, c->d, false, true, false);
	return r;
}

static int do_move(struct fs *fs, struct rename_ctx *c)
{
	int r;

	if (c->d) {
		if (kn_is_dir(c->s) && !kn_is_dir(c->d))
			return -ENOTDIR;
		if (!kn_is_dir(c->s) && kn_is_dir(c->d))
			return -EISDIR;
		if (kn_is_dir(c->d) && (r = dir_is_empty(fs, c->d)) <= 0)
			return r < 0 ? r : -ENOTEMPTY;
		/* the new name first, so a crash never loses the file */
		r = dir_retarget(fs, c->dd, c->dname, c->s->ino, dir_ftype_of(c->s->inode.i_mode));
		if (r)
			return r;
		if (kn_is_dir(c->d)) {
			c->d->inode.i_links_count = 0;
			link_dec(c->dd);
		} else {
			link_dec(c->d);
		}
		kn_touch(fs, c->d, false, true, false);
	} else {
		if (kn_is_dir(c->s) && c->sd != c->dd && dir_full(fs, c->dd))
			return -EMLINK;
		r = dir_add(fs, c->dd, c->dname, c->s->ino, dir_ftype_of(c->s->inode.i_mode));
		if (r)
			return r;
	}
	r = dir_remove(fs, c->sd, c->sname, c->s->ino);
	if (!r)
		r = reparent(fs, c->s, c->sd, c->dd);
	kn_touch(fs, c->s, false, true, false);
	return r;
}

/* The source's name leaves its directory; the destination's is replaced
 * (or swapped) or added. */
static int rename_refusal(const struct rename_ctx *c)
{
	int r = kn_may_remove_name(c->sd, c->s);

	return r ?: c->d ? kn_may_remove_name(c->dd, c->d) : kn_may_add_name(c->dd);
}

static int write_all(struct fs *fs, struct rename_ctx *c)
{
	struct knode *ks[] = { c->s, c->d, c->sd, c->dd };
	int r = 0;

	for (int i = 0; i < 4 && !r; i++)
		if (ks[i] && ks[i]->dirty)
			r = kn_write(fs, ks[i]);
	return r;
}

int fs_rename(struct fs *fs, ino_t parent, const char *name, ino_t newparent,
	      const char *newname, unsigned flags)
{
	struct rename_ctx c = { .sname = name, .dname = newname };
	ext2_ino_t found;
	int r;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE))
		return -EINVAL;
	if ((r = check_name(name)) || (r = check_name(newname)))
		return r;
	if (fs->ro)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	if ((r = kn_get(fs, (ext2_ino_t)parent, &c.sd)))
		goto out;
	if ((r = kn_get(fs, (ext2_ino_t)newparent, &c.dd)))
		goto put_sd;
	if ((r = dir_find(fs, c.sd, name, &found)) || (r = kn_get(fs, found, &c.s)))
		goto put_dd;
	r = dir_find(fs, c.dd, newname, &found);
	if (r == 0)
		r = kn_get(fs, found, &c.d);
	else if (r == -ENOENT)
		r = flags & RENAME_EXCHANGE ? -ENOENT : 0;
	if (r)
		goto put_s;
	if (c.d && flags & RENAME_NOREPLACE)
		r = -EEXIST;
	else if (c.d == c.s)
		r = 0; /* two names of one inode: nothing to do */
	else if (c.dd->inode.i_links_count == 0)
		r = -ENOENT;
	else {
		/* a directory may not move below itself */
		if (kn_is_dir(c.s) && c.sd != c.dd)
			r = is_ancestor(fs, c.s->ino, c.dd);
		if (r == 0 && c.d && kn_is_dir(c.d) && c.sd != c.dd && flags & RENAME_EXCHANGE)
			r = is_ancestor(fs, c.d->ino, c.sd);
		if (r > 0)
			r = -EINVAL;
		if (!r)
			r = rename_refusal(&c);
		if (!r)
			r = flags & RENAME_EXCHANGE ? do_exchange(fs, &c) : do_move(fs, &c);
		if (!r)
			r = write_all(fs, &c);
	}
	if (c.d)
		kn_put(fs, c.d);
put_s:
	kn_put(fs, c.s);
put_dd:
	kn_put(fs, c.dd);
put_sd:
	kn_put(fs, c.sd);
out:
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* ---- readdir ---- */

struct rd {
	struct fs *fs;
	off_t from;
	fs_fill_fn fill;
	fs_fillplus_fn fillplus;
	void *ctx;
	int err;
};

static bool is_dot(const struct ext2_dir_entry *de, int len)
{
	return (len == 1 && de->name[0] == '.') ||
	       (len == 2 && de->name[0] == '.' && de->name[1] == '.');
}

static int readdir_entry(void *ctx, struct ext2_dir_entry *de, uint64_t pos, bool *changed)
{
	struct rd *rd = ctx;
	int len = ext2fs_dirent_name_len(de);

	(void)changed;
	if ((off_t)pos < rd->from)
		return 0;
	/* an entry's cookie is its byte position + 1: stable while others come and go */
	if (!rd->fillplus)
		return rd->fill(rd->ctx, de->name, (size_t)len, de->inode,
				dir_mode_of_ftype(ext2fs_dirent_file_type(de)), (off_t)pos + 1);
	if (is_dot(de, len))
		return rd->fillplus(rd->ctx, de->name, (size_t)len, de->inode,
				    dir_mode_of_ftype(ext2fs_dirent_file_type(de)), (off_t)pos + 1, NULL);

	struct knode *k;
	struct stat st;
	int full;

	if ((rd->err = kn_get(rd->fs, de->inode, &k)))
		return 1;
	kn_stat(rd->fs, k, &st);
	full = rd->fillplus(rd->ctx, de->name, (size_t)len, de->inode, st.st_mode & S_IFMT,
			    (off_t)pos + 1, &st);
	if (!full)
		k->nlookup++;
	kn_put(rd->fs, k);
	return full;
}

static int read_dir(struct fs *fs, ino_t ino, struct rd *rd)
{
	struct knode *k;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = kn_get(fs, (ext2_ino_t)ino, &k);
	if (!r) {
		r = kn_is_dir(k) ? dir_walk(fs, k, readdir_entry, rd) : -ENOTDIR;
		kn_put(fs, k);
	}
	pthread_mutex_unlock(&fs->lock);
	return r ? r : rd->err;
}

int fs_readdir(struct fs *fs, ino_t ino, off_t off, fs_fill_fn fill, void *ctx)
{
	struct rd rd = { .fs = fs, .from = off, .fill = fill, .ctx = ctx };

	return read_dir(fs, ino, &rd);
}

int fs_readdirplus(struct fs *fs, ino_t ino, off_t off, fs_fillplus_fn fill, void *ctx)
{
	struct rd rd = { .fs = fs, .from = off, .fillplus = fill, .ctx = ctx };

	return read_dir(fs, ino, &rd);
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
		xa_inherit_acl(fs, dir, &mode, cr->umask, &inh);
		r = kn_new(fs, dir, mode, cr, &k);
	}
	if (!r) {
		/* no name: recorded deleted, as an unlinked open file */
		k->inode.i_links_count = 0;
		k->linkable = !(flags & O_EXCL);
		r = kn_write(fs, k);
	}
	if (!r)
		r = xa_store_inherited(fs, dir, k, &inh);
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

