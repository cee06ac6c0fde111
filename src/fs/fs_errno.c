/* libext2fs error codes as errno values, for every fs module. */
#include <errno.h>
#include <stdbool.h>

#include "fs_errno.h"

/* errno values that describe the request rather than the device. */
static bool semantic_errno(int e)
{
	switch (e) {
	case EPERM: case ENOENT: case E2BIG: case ENOMEM: case EACCES: case EEXIST:
	case ENOTDIR: case EISDIR: case EINVAL: case EFBIG: case ENOSPC: case EROFS:
	case EMLINK: case ERANGE: case ENAMETOOLONG: case ENOTEMPTY: case ELOOP:
	case ENODATA: case EOVERFLOW: case EOPNOTSUPP: case EDQUOT: case EUCLEAN:
	case EIO:
		return true;
	default:
		return false;
	}
}

int fs_errno(errcode_t err)
{
	if (err == 0)
		return 0;
	/* libext2fs passes errno values (from the I/O layer, or EINVAL and
	 * the like of its own) through unchanged; its own codes are large.
	 * Errors of the device itself (ENOTCONN, ENXIO, ... when it went
	 * away) reach the application as EIO. */
	if (err > 0 && err < 256)
		return semantic_errno((int)err) ? -(int)err : -EIO;

	switch (err) {
	case EXT2_ET_EXTENT_NOT_SUPPORTED:
		return -EFBIG; /* past what a block-mapped file can hold */
	case EXT2_ET_NO_MEMORY:
	case EXT2_ET_TDB_ERR_OOM:
		return -ENOMEM;
	case EXT2_ET_EA_NO_SPACE:
	case EXT2_ET_BLOCK_ALLOC_FAIL:
	case EXT2_ET_INODE_ALLOC_FAIL:
	case EXT2_ET_DIR_NO_SPACE:
	case EXT2_ET_INLINE_DATA_NO_SPACE:
	case EXT2_ET_TOO_MANY_INODES:
		return -ENOSPC;
	case EXT2_ET_EA_KEY_NOT_FOUND:
		return -ENODATA;
	case EXT2_ET_RO_FILSYS:
	case EXT2_ET_RO_UNSUPP_FEATURE:
		return -EROFS;
	case EXT2_ET_FILE_NOT_FOUND:
		return -ENOENT;
	case EXT2_ET_FILE_EXISTS:
	case EXT2_ET_DIR_EXISTS:
		return -EEXIST;
	case EXT2_ET_NO_DIRECTORY:
		return -ENOTDIR;
	case EXT2_ET_TOO_MANY_REFS:
		return -EMLINK;
	case EXT2_ET_FILE_TOO_BIG:
		return -EFBIG;
	case EXT2_ET_SYMLINK_LOOP:
		return -ELOOP;
	case EXT2_ET_INVALID_ARGUMENT:
		return -EINVAL;
	case EXT2_ET_UNIMPLEMENTED:
	case EXT2_ET_OP_NOT_SUPPORTED:
	case EXT2_ET_MISSING_EA_FEATURE:
	case EXT2_ET_UNSUPP_FEATURE:
		return -EOPNOTSUPP;
	default:
		/* checksum failures, corrupted metadata, short reads, ... */
		return -EIO;
	}
}
