/* A write-through cache of the metadata blocks libext2fs reads: an io_manager
 * over unix_io. libext2fs opened with "cache=off" reads every inode table,
 * directory and extent block from the device each time it needs one; this
 * keeps the recent ones in memory. Writes go to the device at once, as before,
 * and update the cached copy; only between mcache_hold and mcache_release
 * are they gathered, to be written at the release.
 *
 * File data never passes through it, but the AIO path writes blocks that may
 * once have been metadata: every change of a block's allocation state drops
 * that block (mcache_forget, from libext2fs' allocation callbacks), so a
 * cached copy always belongs to a block that has stayed metadata since it was
 * read or written. Private to the fs modules; runs under fs->lock. */
#ifndef KAIOFS_FS_CACHE_H
#define KAIOFS_FS_CACHE_H

#include <ext2fs/ext2fs.h>
#include <stdbool.h>
#include <stddef.h>

/* The manager to pass to ext2fs_open2. A channel opened through it keeps up
 * to `limit` bytes of blocks (0: it caches nothing and only forwards). */
io_manager mcache_manager(size_t limit);

/* Gather the block writes of one metadata operation: until the matching
 * mcache_release, a block written again replaces its earlier copy in memory
 * (libext2fs writes an inode's block several times while it edits an extent
 * tree), and reads see the newest. Release writes each changed block once,
 * in the order of each block's last write (a child before the parent that points at it, as libext2fs wrote them), and returns the first error. Holds
 * nest; with the cache off they change nothing. */
void mcache_hold(io_channel io);
errcode_t mcache_release(io_channel io);

/* Blocks [blk, blk + n) were freed, or (allocated) taken into use: drop them
 * from a channel of mcache_manager (other channels are left alone). A freed
 * block is dropped even if written since mcache_hold: its contents must not
 * reach the device. A block being allocated keeps what was written since
 * mcache_hold: libext2fs writes a new metadata block (zeros) before it
 * counts it allocated, and may read it back afterwards. */
void mcache_forget(io_channel io, blk64_t blk, blk64_t n, bool allocated);

/* Have every block allocation change of e2 drop the blocks it touches. */
void mcache_follow_allocations(ext2_filsys e2);

#endif
