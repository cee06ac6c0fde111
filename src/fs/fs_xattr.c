/* Extended attributes of inodes (the entry points over the libext2fs codec
 * in fs_xattr_codec.c) and the ACLs a new inode inherits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "fs_int.h"
#include "fs_xattr_codec.h"

/* ---- extended attributes ---- */

ssize_t fs_getxattr(struct fs *fs, ino_t ino, const char *name, void *buf, size_t size)
{
	struct knode *k;
	ssize_t ret = 0;

	WITH_INODE(fs, ino, k, {
		ret = kn_write_if_dirty(fs, k);
		if (!ret)
			ret = xcodec_get(fs->e2, k->ino, name, buf, size);
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
		ret = kn_write_if_dirty(fs, k);
		if (!ret && cr->uid == 0) {
			ret = xcodec_list(fs->e2, k->ino, buf, size);
		} else if (!ret) {
			/* the full list, filtered, then sized for the caller */
			ssize_t all = xcodec_list(fs->e2, k->ino, NULL, 0);
			char *tmp = all > 0 ? malloc((size_t)all) : NULL;

			ret = all;
			if (all > 0 && !tmp)
				ret = -ENOMEM;
			else if (all > 0 && (ret = xcodec_list(fs->e2, k->ino, tmp, (size_t)all)) >= 0)
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
	int r = kn_write_if_dirty(fs, k), r2;

	if (r)
		return r;
	r = remove ? xcodec_remove(fs->e2, k->ino, name)
		   : xcodec_set(fs->e2, k->ino, name, value, size, flags);
	r2 = kn_reload(fs, k);
	if (!strcmp(name, ACL_DEFAULT))
		k->default_acl = -1;
	return r ? r : r2;
}

/* Rewrite an access ACL to match the mode, after a chmod. */
int xa_follow_mode(struct fs *fs, struct knode *k)
{
	ssize_t n;
	char *buf;
	int r;

	if ((r = kn_write_if_dirty(fs, k)))
		return r;
	n = xcodec_get(fs->e2, k->ino, ACL_ACCESS, NULL, 0);
	if (n == -ENODATA || n == -EOPNOTSUPP)
		return 0;
	if (n < 0)
		return (int)n;
	buf = malloc((size_t)n);
	if (!buf)
		return -ENOMEM;
	n = xcodec_get(fs->e2, k->ino, ACL_ACCESS, buf, (size_t)n);
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

	if (dir->default_acl == 0 || kn_write_if_dirty(fs, dir))
		return NULL;
	n = xcodec_get(fs->e2, dir->ino, ACL_DEFAULT, NULL, 0);
	if (n <= 0 || !(buf = malloc((size_t)n))) {
		dir->default_acl = n == -ENODATA ? 0 : -1;
		return NULL;
	}
	n = xcodec_get(fs->e2, dir->ino, ACL_DEFAULT, buf, (size_t)n);
	if (n <= 0 || !acl_valid(buf, (size_t)n)) {
		free(buf);
		return NULL;
	}
	dir->default_acl = 1;
	*size = (size_t)n;
	return buf;
}

void xa_inherit_acl(struct fs *fs, struct knode *dir, mode_t *mode, mode_t umask,
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

int xa_store_inherited(struct fs *fs, struct knode *dir, struct knode *k, struct acl_inherit *p)
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
