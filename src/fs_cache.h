/* A write-through cache of the metadata blocks libext2fs reads: an io_manager
 * over unix_io. libext2fs opened with "cache=off" reads every inode table,
 * directory and extent block from the device each time it needs one; this
 * keeps the recent ones in memory. Writes go to the device at once, as before
 * (nothing is ever written later from here), and update the cached copy.
 *
 * File data never passes through it, but the AIO path writes blocks that may
 * once have been metadata: every change of a block's allocation state drops
 * that block (mcache_forget, from libext2fs' allocation callbacks), so a
 * cached copy always belongs to a block that has stayed metadata since it was
 * read or written. Private to the fs modules; runs under fs->lock. */
#ifndef KAIOFS_FS_CACHE_H
#define KAIOFS_FS_CACHE_H

#include <ext2fs/ext2fs.h>
#include <stddef.h>

/* The manager to pass to ext2fs_open2. A channel opened through it keeps up
 * to `limit` bytes of blocks (0: it caches nothing and only forwards). */
io_manager mcache_manager(size_t limit);

/* Drop blocks [blk, blk + n) of a channel of mcache_manager (other channels
 * are left alone). */
void mcache_forget(io_channel io, blk64_t blk, blk64_t n);

/* Have every block allocation change of e2 drop the blocks it touches. */
void mcache_follow_allocations(ext2_filsys e2);

#endif
