/* Extended attributes of one inode, over libext2fs's xattr handles, with the
 * errno semantics of the Linux xattr system calls. POSIX ACLs are taken and
 * returned in the Linux xattr format and stored in ext4's on-disk format.
 *
 * The caller holds the filesystem lock and makes sure the on-disk inode is
 * current before each call; xcodec_set and xcodec_remove rewrite the inode (and
 * may allocate or free an attribute block, or EA inodes), so the caller
 * must re-read any cached copy afterwards, even after a failure, and update
 * ctime and, for an access ACL, the mode itself. Every function returns a
 * NEGATIVE errno on failure. */
#ifndef KAIOFS_FS_XATTR_CODEC_H
#define KAIOFS_FS_XATTR_CODEC_H

#include <sys/types.h>
#include <ext2fs/ext2fs.h>

#include "fs_errno.h"

/* getxattr(2): copies the value into buf and returns its size. size 0 only
 * asks for the size; -ERANGE when buf is too small, -ENODATA when absent,
 * -EOPNOTSUPP for a namespace other than user., trusted., security. and the
 * two POSIX ACL names (so system.data, which holds inline data, is never
 * seen), -EIO for a stored ACL that is not in ext4's format. */
ssize_t xcodec_get(ext2_filsys fs, ext2_ino_t ino, const char *name,
		void *buf, size_t size);

/* setxattr(2): flags is 0, XATTR_CREATE (-EEXIST when present) or
 * XATTR_REPLACE (-ENODATA when absent), anything else -EINVAL; -ENOSPC
 * when there is no room left, -ERANGE for an empty or longer than 255
 * bytes name or for a value no attribute of this filesystem could ever
 * hold (ext4 itself says -ENOSPC then), -EINVAL for an empty name after the
 * namespace prefix.
 *
 * POSIX ACL names behave as on ext4: flags are ignored, a value holding the
 * header only removes the ACL, a malformed value is -EINVAL (-EOPNOTSUPP for
 * an unknown version), a default ACL on a non-directory is -EACCES and any
 * ACL on a symlink -EOPNOTSUPP. */
int xcodec_set(ext2_filsys fs, ext2_ino_t ino, const char *name,
	    const void *value, size_t size, int flags);

/* listxattr(2): the names, each NUL-terminated, of the attributes xcodec_get
 * can read. size 0 only asks for the total size; -ERANGE when too small. */
ssize_t xcodec_list(ext2_filsys fs, ext2_ino_t ino, char *buf, size_t size);

/* removexattr(2): -ENODATA when absent, except for a POSIX ACL name, whose
 * removal succeeds when there is none (as on ext4). */
int xcodec_remove(ext2_filsys fs, ext2_ino_t ino, const char *name);

#endif
