/* The errno a libext2fs error code stands for. */
#ifndef KAIOFS_FS_ERRNO_H
#define KAIOFS_FS_ERRNO_H

#include <ext2fs/ext2fs.h>

/* A negative errno: 0 stays 0, the errno values libext2fs passes through
 * are negated (those of the device itself become -EIO), a block-mapped
 * file's size limit is -EFBIG, corruption and checksum errors and anything
 * unknown become -EIO. */
int fs_errno(errcode_t err);

#endif
