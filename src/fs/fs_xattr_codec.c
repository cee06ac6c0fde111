/* Extended attributes over libext2fs, with Linux xattr syscall semantics.
 *
 * Every call opens a fresh handle, reads the inode's attributes, acts and
 * closes it: the handle caches nothing across calls, so there is nothing to
 * keep coherent with the rest of the filesystem.
 *
 * Handles are switched to raw mode: libext2fs then hands out and takes the
 * stored bytes unchanged. Only a POSIX ACL being stored goes through its
 * Linux -> ext4 conversion (after we validated the value); ACLs are read raw
 * and converted here, because the library's reader neither bounds-checks the
 * on-disk entries nor writes the ids of the short entries the way the
 * kernel does (0xffffffff, not 0). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/xattr.h>

#include "fs_xattr_codec.h"

#define XCODEC_NAME_MAX	255
#define XCODEC_VALUE_MAX	65536	/* XATTR_SIZE_MAX */

enum xcodec_kind {
	XCODEC_PLAIN,
	XCODEC_ACL_ACCESS,
	XCODEC_ACL_DEFAULT,
};

/* Linux xattr format of an ACL: a 4-byte version (2), then 8-byte entries
 * (le16 tag, le16 perm, le32 id). On disk (ext4): version 1, and the entries
 * without a qualifier (USER_OBJ, GROUP_OBJ, MASK, OTHER) lose their id. */
#define ACL_XATTR_VERSION	2
#define ACL_DISK_VERSION	1
#define ACL_HEADER_SIZE		4
#define ACL_ENTRY_SIZE		8
#define ACL_SHORT_ENTRY_SIZE	4

#define ACL_USER_OBJ	0x01
#define ACL_USER	0x02
#define ACL_GROUP_OBJ	0x04
#define ACL_GROUP	0x08
#define ACL_MASK	0x10
#define ACL_OTHER	0x20

#define ACL_PERM_BITS		0x07
#define ACL_UNDEFINED_ID	0xffffffffu

static const char acl_access_name[] = "system.posix_acl_access";
static const char acl_default_name[] = "system.posix_acl_default";

static const char *const plain_prefixes[] = {
	"user.", "trusted.", "security.",
};
#define N_PLAIN_PREFIXES (sizeof(plain_prefixes) / sizeof(plain_prefixes[0]))

/* ---- names ---- */

/* The kind of attribute a name denotes, or a negative errno. */
static int xcodec_kind(const char *name, size_t *prefix_len)
{
	size_t len = strlen(name);

	if (len == 0 || len > XCODEC_NAME_MAX)
		return -ERANGE;
	/* libext2fs stores an ACL under its whole name as the prefix */
	*prefix_len = len;
	if (strcmp(name, acl_access_name) == 0)
		return XCODEC_ACL_ACCESS;
	if (strcmp(name, acl_default_name) == 0)
		return XCODEC_ACL_DEFAULT;
	for (size_t i = 0; i < N_PLAIN_PREFIXES; i++) {
		size_t plen = strlen(plain_prefixes[i]);

		if (strncmp(name, plain_prefixes[i], plen) != 0)
			continue;
		if (len == plen)
			return -EINVAL;
		*prefix_len = plen;
		return XCODEC_PLAIN;
	}
	return -EOPNOTSUPP;
}

/* Largest value an attribute whose name keeps name_len bytes after its
 * prefix can have on this filesystem: without ea_inode it must fit, with
 * its entry, into an otherwise empty attribute block (the in-inode area is
 * always smaller than a block). */
static size_t xcodec_value_max(ext2_filsys fs, size_t name_len)
{
	size_t room;

	if (ext2fs_has_feature_ea_inode(fs->super))
		return XCODEC_VALUE_MAX;
	room = fs->blocksize - sizeof(struct ext2_ext_attr_header) -
	       sizeof(__u32) - EXT2_EXT_ATTR_LEN(name_len);
	return room < XCODEC_VALUE_MAX ? room : XCODEC_VALUE_MAX;
}

/* ---- handles ---- */

static int xcodec_open(ext2_filsys fs, ext2_ino_t ino,
		    struct ext2_xattr_handle **h)
{
	unsigned int flags = XATTR_HANDLE_FLAG_RAW;
	errcode_t err;

	err = ext2fs_xattrs_open(fs, ino, h);
	if (err)
		return fs_errno(err);
	ext2fs_xattrs_flags(*h, &flags, NULL);
	err = ext2fs_xattrs_read(*h);
	if (err) {
		ext2fs_xattrs_close(h);
		return fs_errno(err);
	}
	return 0;
}

static void xcodec_close(struct ext2_xattr_handle **h)
{
	ext2fs_xattrs_close(h);
}

/* 1 if the handle holds name, 0 if not, or a negative errno. */
static int xcodec_exists(struct ext2_xattr_handle *h, const char *name)
{
	void *val = NULL;
	size_t len;
	errcode_t err;

	err = ext2fs_xattr_get(h, name, &val, &len);
	if (err == EXT2_ET_EA_KEY_NOT_FOUND)
		return 0;
	if (err)
		return fs_errno(err);
	ext2fs_free_mem(&val);
	return 1;
}

/* ---- what libext2fs leaves undone when it writes ---- */

/* libext2fs rewrites an attribute block that lost its last entry (removed,
 * or moved into the inode) instead of freeing it: free it, as ext4 does, so
 * that the space comes back. */
static int drop_empty_block(ext2_filsys fs, ext2_ino_t ino)
{
	struct ext2_inode inode;
	char *block;
	blk64_t blk;
	errcode_t err;

	err = ext2fs_read_inode(fs, ino, &inode);
	if (err)
		return fs_errno(err);
	blk = ext2fs_file_acl_block(fs, &inode);
	if (!blk)
		return 0;
	err = ext2fs_get_mem(fs->blocksize, &block);
	if (err)
		return fs_errno(err);
	err = ext2fs_read_ext_attr3(fs, blk, block, ino);
	if (!err && EXT2_EXT_IS_LAST_ENTRY(block +
					   sizeof(struct ext2_ext_attr_header)))
		err = ext2fs_free_ext_attr(fs, ino, NULL);
	ext2fs_free_mem(&block);
	return fs_errno(err);
}

/* Clusters charged for the values kept in EA inodes among the entries
 * stored in [p, end): ext4 (and e2fsck) count each such value's size,
 * rounded up to clusters, in the owner's i_blocks. */
static blk64_t entries_charge(ext2_filsys fs, const char *p, const char *end)
{
	blk64_t csize = (blk64_t)fs->blocksize << fs->cluster_ratio_bits;
	blk64_t clusters = 0;
	struct ext2_ext_attr_entry e;

	while ((size_t)(end - p) >= sizeof(e) && !EXT2_EXT_IS_LAST_ENTRY(p)) {
		memcpy(&e, p, sizeof(e));
		if (EXT2_EXT_ATTR_LEN(e.e_name_len) > (size_t)(end - p))
			break;
		if (e.e_value_inum)
			clusters += (e.e_value_size + csize - 1) / csize;
		p += EXT2_EXT_ATTR_LEN(e.e_name_len);
	}
	return clusters;
}

static blk64_t ibody_charge(ext2_filsys fs,
			    const struct ext2_inode_large *inode)
{
	unsigned int isize = EXT2_INODE_SIZE(fs->super);
	unsigned int offs = EXT2_GOOD_OLD_INODE_SIZE + inode->i_extra_isize;
	const char *start = (const char *)inode + offs;
	__u32 magic;

	if (isize <= EXT2_GOOD_OLD_INODE_SIZE || inode->i_extra_isize & 3 ||
	    offs + sizeof(magic) >= isize)
		return 0;
	memcpy(&magic, start, sizeof(magic));
	if (magic != EXT2_EXT_ATTR_MAGIC)
		return 0;
	return entries_charge(fs, start + sizeof(magic),
			      (const char *)inode + isize);
}

static errcode_t block_charge(ext2_filsys fs, ext2_ino_t ino, blk64_t blk,
			      blk64_t *clusters)
{
	char *block;
	errcode_t err;

	err = ext2fs_get_mem(fs->blocksize, &block);
	if (err)
		return err;
	err = ext2fs_read_ext_attr3(fs, blk, block, ino);
	if (!err)
		*clusters += entries_charge(fs,
				block + sizeof(struct ext2_ext_attr_header),
				block + fs->blocksize);
	ext2fs_free_mem(&block);
	return err;
}

/* What ino's EA inode values are charged, in clusters (0 without the
 * ea_inode feature). */
static int ea_inode_charge(ext2_filsys fs, ext2_ino_t ino, blk64_t *clusters)
{
	unsigned int isize = EXT2_INODE_SIZE(fs->super);
	struct ext2_inode_large *inode;
	size_t bufsize;
	blk64_t blk;
	errcode_t err;

	*clusters = 0;
	if (!ext2fs_has_feature_ea_inode(fs->super))
		return 0;
	/* at least a whole struct, so that i_extra_isize can be looked at */
	bufsize = isize > sizeof(*inode) ? isize : sizeof(*inode);
	err = ext2fs_get_memzero(bufsize, &inode);
	if (err)
		return fs_errno(err);
	err = ext2fs_read_inode_full(fs, ino, EXT2_INODE(inode), isize);
	if (!err) {
		*clusters = ibody_charge(fs, inode);
		blk = ext2fs_file_acl_block(fs, EXT2_INODE(inode));
		if (blk)
			err = block_charge(fs, ino, blk, clusters);
	}
	ext2fs_free_mem(&inode);
	return fs_errno(err);
}

/* libext2fs creates and drops EA inodes without charging or crediting the
 * owner's i_blocks: bring them in line with the charge found on disk. */
static int recharge(ext2_filsys fs, ext2_ino_t ino, blk64_t before)
{
	struct ext2_inode inode;
	blk64_t after;
	errcode_t err;
	int ret;

	ret = ea_inode_charge(fs, ino, &after);
	if (ret || after == before)
		return ret;
	err = ext2fs_read_inode(fs, ino, &inode);
	if (!err && after > before)
		err = ext2fs_iblk_add_blocks(fs, &inode, after - before);
	else if (!err)
		err = ext2fs_iblk_sub_blocks(fs, &inode, before - after);
	if (!err)
		err = ext2fs_write_inode(fs, ino, &inode);
	return fs_errno(err);
}

enum xcodec_op {
	XCODEC_OP_SET,
	XCODEC_OP_REMOVE,
};

/* Set or remove name through h, then complete what libext2fs leaves
 * undone; also after a failure, which may have changed the disk already. */
static int xcodec_update(ext2_filsys fs, ext2_ino_t ino,
		      struct ext2_xattr_handle *h, enum xcodec_op op,
		      const char *name, const void *value, size_t size)
{
	blk64_t charged;
	errcode_t err;
	int ret;

	ret = ea_inode_charge(fs, ino, &charged);
	if (ret)
		return ret;
	if (op == XCODEC_OP_REMOVE)
		err = ext2fs_xattr_remove(h, name);
	else
		err = ext2fs_xattr_set(h, name, value, size);
	ret = drop_empty_block(fs, ino);
	if (!ret)
		ret = recharge(fs, ino, charged);
	return err ? fs_errno(err) : ret;
}

/* ---- ACL format ---- */

static unsigned int get_le16(const unsigned char *p)
{
	return p[0] | (unsigned int)p[1] << 8;
}

static uint32_t get_le32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static int acl_tag_has_id(unsigned int tag)
{
	return tag == ACL_USER || tag == ACL_GROUP;
}

/* Where an ACL's entries must come in: USER_OBJ, USERs, GROUP_OBJ, GROUPs,
 * MASK (required once there is a USER or GROUP), OTHER. */
enum acl_state {
	ACL_WANT_USER_OBJ,
	ACL_IN_USERS,
	ACL_IN_GROUPS,
	ACL_WANT_OTHER,
	ACL_COMPLETE,
};

/* The state after an entry with this tag, or -1 if it may not come now. */
static int acl_step(int state, unsigned int tag, int *named)
{
	switch (tag) {
	case ACL_USER_OBJ:
		return state == ACL_WANT_USER_OBJ ? ACL_IN_USERS : -1;
	case ACL_USER:
		*named = 1;
		return state == ACL_IN_USERS ? ACL_IN_USERS : -1;
	case ACL_GROUP_OBJ:
		return state == ACL_IN_USERS ? ACL_IN_GROUPS : -1;
	case ACL_GROUP:
		*named = 1;
		return state == ACL_IN_GROUPS ? ACL_IN_GROUPS : -1;
	case ACL_MASK:
		return state == ACL_IN_GROUPS ? ACL_WANT_OTHER : -1;
	case ACL_OTHER:
		if (state == ACL_WANT_OTHER ||
		    (state == ACL_IN_GROUPS && !*named))
			return ACL_COMPLETE;
		return -1;
	default:
		return -1;
	}
}

/* Validate an ACL in the Linux xattr format as the kernel does before
 * storing one. Returns its number of entries (0: the header alone, which
 * means "no ACL") and the size it takes on disk, or a negative errno. */
static int acl_check(const void *value, size_t size, size_t *disk_size)
{
	const unsigned char *p = value;
	int state = ACL_WANT_USER_OBJ, named = 0;
	size_t count;

	if (!value || size < ACL_HEADER_SIZE)
		return -EINVAL;
	if (get_le32(p) != ACL_XATTR_VERSION)
		return -EOPNOTSUPP;
	if ((size - ACL_HEADER_SIZE) % ACL_ENTRY_SIZE)
		return -EINVAL;
	count = (size - ACL_HEADER_SIZE) / ACL_ENTRY_SIZE;

	*disk_size = ACL_HEADER_SIZE;
	for (p += ACL_HEADER_SIZE; p < (const unsigned char *)value + size;
	     p += ACL_ENTRY_SIZE) {
		unsigned int tag = get_le16(p), perm = get_le16(p + 2);

		if (perm & ~ACL_PERM_BITS)
			return -EINVAL;
		state = acl_step(state, tag, &named);
		if (state < 0)
			return -EINVAL;
		if (acl_tag_has_id(tag)) {
			if (get_le32(p + 4) == ACL_UNDEFINED_ID)
				return -EINVAL;
			*disk_size += ACL_ENTRY_SIZE;
		} else {
			*disk_size += ACL_SHORT_ENTRY_SIZE;
		}
	}
	if (count && state != ACL_COMPLETE)
		return -EINVAL;
	return (int)count;
}

/* Walk an on-disk ACL, writing its entries in the Linux format to out (when
 * not NULL, room for them being the caller's business). Returns the number
 * of entries, or -EIO when the bytes are not a well-formed ext4 ACL. */
static int acl_disk_walk(const unsigned char *disk, size_t len,
			 unsigned char *out)
{
	const unsigned char *p = disk + ACL_HEADER_SIZE, *end = disk + len;
	int count = 0;

	if (len < ACL_HEADER_SIZE || get_le32(disk) != ACL_DISK_VERSION)
		return -EIO;
	while (p < end) {
		unsigned int tag;
		size_t esize;

		if (end - p < ACL_SHORT_ENTRY_SIZE)
			return -EIO;
		tag = get_le16(p);
		switch (tag) {
		case ACL_USER_OBJ:
		case ACL_GROUP_OBJ:
		case ACL_MASK:
		case ACL_OTHER:
			esize = ACL_SHORT_ENTRY_SIZE;
			break;
		case ACL_USER:
		case ACL_GROUP:
			esize = ACL_ENTRY_SIZE;
			break;
		default:
			return -EIO;
		}
		if ((size_t)(end - p) < esize)
			return -EIO;
		if (out) {
			unsigned char *o = out + ACL_HEADER_SIZE +
					   (size_t)count * ACL_ENTRY_SIZE;

			memcpy(o, p, 4);	/* tag and perm */
			put_le32(o + 4, esize == ACL_ENTRY_SIZE ?
				 get_le32(p + 4) : ACL_UNDEFINED_ID);
		}
		p += esize;
		count++;
	}
	if (out)
		put_le32(out, ACL_XATTR_VERSION);
	return count;
}

/* An on-disk ACL to the Linux format, with getxattr's size rules. */
static ssize_t acl_from_disk(const void *disk, size_t len, void *buf,
			     size_t size)
{
	int count = acl_disk_walk(disk, len, NULL);
	size_t need;

	if (count < 0)
		return count;
	if (count == 0)		/* reads as no ACL, as on ext4 */
		return -ENODATA;
	need = ACL_HEADER_SIZE + (size_t)count * ACL_ENTRY_SIZE;
	if (size == 0)
		return need;
	if (size < need)
		return -ERANGE;
	acl_disk_walk(disk, len, buf);
	return need;
}

/* ---- get ---- */

static ssize_t copy_value(const void *val, size_t len, void *buf, size_t size)
{
	if (size == 0)
		return len;
	if (size < len)
		return -ERANGE;
	memcpy(buf, val, len);
	return len;
}

ssize_t xcodec_get(ext2_filsys fs, ext2_ino_t ino, const char *name,
		void *buf, size_t size)
{
	struct ext2_xattr_handle *h;
	void *val = NULL;
	size_t len = 0, prefix_len;
	int kind = xcodec_kind(name, &prefix_len);
	ssize_t ret;
	errcode_t err;

	if (kind < 0)
		return kind;
	ret = xcodec_open(fs, ino, &h);
	if (ret)
		return ret;
	err = ext2fs_xattr_get(h, name, &val, &len);
	if (err)
		ret = fs_errno(err);
	else if (kind == XCODEC_PLAIN)
		ret = copy_value(val, len, buf, size);
	else
		ret = acl_from_disk(val, len, buf, size);
	ext2fs_free_mem(&val);
	xcodec_close(&h);
	return ret;
}

/* ---- set / remove ---- */

static int check_flags(struct ext2_xattr_handle *h, const char *name,
		       int flags)
{
	int exists = xcodec_exists(h, name);

	if (exists < 0)
		return exists;
	if ((flags & XATTR_CREATE) && exists)
		return -EEXIST;
	if ((flags & XATTR_REPLACE) && !exists)
		return -ENODATA;
	return 0;
}

static int set_plain(ext2_filsys fs, ext2_ino_t ino, const char *name,
		     const void *value, size_t size, int flags)
{
	struct ext2_xattr_handle *h;
	int ret;

	ret = xcodec_open(fs, ino, &h);
	if (ret)
		return ret;
	ret = check_flags(h, name, flags);
	if (!ret)
		ret = xcodec_update(fs, ino, h, XCODEC_OP_SET, name, value, size);
	xcodec_close(&h);
	return ret;
}

/* Whether the inode may carry this ACL, as the kernel decides: 0 if so, 1
 * if there is nothing to do (removing a default ACL of a non-directory), or
 * a negative errno. */
static int acl_target_check(ext2_filsys fs, ext2_ino_t ino, int kind,
			    int count)
{
	struct ext2_inode inode;
	errcode_t err;

	err = ext2fs_read_inode(fs, ino, &inode);
	if (err)
		return fs_errno(err);
	if (LINUX_S_ISLNK(inode.i_mode))
		return -EOPNOTSUPP;
	if (kind == XCODEC_ACL_DEFAULT && !LINUX_S_ISDIR(inode.i_mode))
		return count ? -EACCES : 1;
	return 0;
}

/* Store an already validated ACL of count entries; count 0 removes it, and
 * removing an absent ACL succeeds. */
static int acl_store(ext2_filsys fs, ext2_ino_t ino, int kind,
		     const char *name, const void *value, size_t size,
		     int count)
{
	struct ext2_xattr_handle *h;
	unsigned int flags = 0;
	int ret;

	ret = acl_target_check(fs, ino, kind, count);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = xcodec_open(fs, ino, &h);
	if (ret)
		return ret;
	if (count == 0) {
		ret = xcodec_update(fs, ino, h, XCODEC_OP_REMOVE, name, NULL, 0);
	} else {
		/* leave raw mode so that the library converts the value to
		 * the ext4 on-disk format */
		ext2fs_xattrs_flags(h, &flags, NULL);
		ret = xcodec_update(fs, ino, h, XCODEC_OP_SET, name, value, size);
	}
	xcodec_close(&h);
	return ret;
}

int xcodec_set(ext2_filsys fs, ext2_ino_t ino, const char *name,
	    const void *value, size_t size, int flags)
{
	size_t prefix_len, disk_size;
	int kind = xcodec_kind(name, &prefix_len);
	int count;

	if (kind < 0)
		return kind;
	if (flags & ~(XATTR_CREATE | XATTR_REPLACE))
		return -EINVAL;
	if (size && !value)
		return -EINVAL;
	if (kind == XCODEC_PLAIN) {
		/* too large for any attribute block: ENOSPC, as ext4 says */
		if (size > xcodec_value_max(fs, strlen(name) - prefix_len))
			return -ENOSPC;
		return set_plain(fs, ino, name, value, size, flags);
	}

	/* ext4 ignores the flags for ACLs: they always replace or create */
	count = acl_check(value, size, &disk_size);
	if (count < 0)
		return count;
	if (disk_size > xcodec_value_max(fs, 0))
		return -ENOSPC;
	return acl_store(fs, ino, kind, name, value, size, count);
}

int xcodec_remove(ext2_filsys fs, ext2_ino_t ino, const char *name)
{
	struct ext2_xattr_handle *h;
	size_t prefix_len;
	int kind = xcodec_kind(name, &prefix_len);
	int ret;

	if (kind < 0)
		return kind;
	if (kind != XCODEC_PLAIN)
		return acl_store(fs, ino, kind, name, NULL, 0, 0);

	ret = xcodec_open(fs, ino, &h);
	if (ret)
		return ret;
	ret = xcodec_exists(h, name);
	if (ret == 0)
		ret = -ENODATA;
	else if (ret > 0)
		ret = xcodec_update(fs, ino, h, XCODEC_OP_REMOVE, name, NULL, 0);
	xcodec_close(&h);
	return ret;
}

/* ---- list ---- */

struct list_ctx {
	char *buf;
	size_t size;
	size_t len;
};

static int list_one(char *name, char *value, size_t value_len, void *data)
{
	struct list_ctx *c = data;
	size_t prefix_len, n;

	(void)value;
	(void)value_len;
	/* hides system.data (inline data) and namespaces we do not serve */
	if (xcodec_kind(name, &prefix_len) < 0)
		return 0;
	n = strlen(name) + 1;
	if (c->size && c->len + n <= c->size)
		memcpy(c->buf + c->len, name, n);
	c->len += n;
	return 0;
}

ssize_t xcodec_list(ext2_filsys fs, ext2_ino_t ino, char *buf, size_t size)
{
	struct ext2_xattr_handle *h;
	struct list_ctx c = { .buf = buf, .size = size, .len = 0 };
	errcode_t err;
	int ret;

	ret = xcodec_open(fs, ino, &h);
	if (ret)
		return ret;
	err = ext2fs_xattrs_iterate(h, list_one, &c);
	xcodec_close(&h);
	if (err)
		return fs_errno(err);
	if (size && c.len > size)
		return -ERANGE;
	return c.len;
}
