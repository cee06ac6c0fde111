/* Unit tests of the metadata block cache (src/fs/fs_cache.c) on a plain file:
 * what reaches the file and when, what reads return, and what allocation
 * changes drop. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fs_cache.h"
#include "stats.h"

#define BS 4096
#define BLOCKS 64

static char path[] = "/tmp/kaiofs-test-fs-cache-XXXXXX";

static io_channel open_cache(size_t limit)
{
	io_channel io = NULL;

	CHECK(mcache_manager(limit)->open(path, IO_FLAG_RW, &io) == 0);
	/* as fs_volume.c opens it: unix_io's own write-back cache off */
	CHECK(io_channel_set_options(io, "cache=off") == 0);
	CHECK(io_channel_set_blksize(io, BS) == 0);
	return io;
}

static void fill(char *buf, int c)
{
	memset(buf, c, BS);
}

/* The file's block blk is all c (what the device holds, whatever is cached). */
static int on_file(blk64_t blk, int c)
{
	static char buf[BS];
	FILE *f = fopen(path, "rb");
	int same = 1;

	CHECK(f != NULL);
	CHECK(fseek(f, (long)(blk * BS), SEEK_SET) == 0);
	CHECK(fread(buf, 1, BS, f) == BS);
	fclose(f);
	for (int i = 0; i < BS; i++)
		same &= buf[i] == (char)c;
	return same;
}

static int read_is(io_channel io, blk64_t blk, int c)
{
	static char buf[BS];
	int same = 1;

	CHECK(io_channel_read_blk64(io, blk, 1, buf) == 0);
	for (int i = 0; i < BS; i++)
		same &= buf[i] == (char)c;
	return same;
}

static void write_block(io_channel io, blk64_t blk, int c)
{
	static char buf[BS];

	fill(buf, c);
	CHECK(io_channel_write_blk64(io, blk, 1, buf) == 0);
}

static void test_writes_go_through_and_reads_come_from_memory(void)
{
	io_channel io = open_cache(1 << 20);
	uint64_t hits = STAT_GET(meta_hits), reads = STAT_GET(meta_reads);

	write_block(io, 3, 'A');
	CHECK(on_file(3, 'A'));
	CHECK(read_is(io, 3, 'A'));
	CHECK(read_is(io, 4, 0));     /* a miss: read from the file */
	CHECK(read_is(io, 4, 0));
	CHECK_EQ(STAT_GET(meta_hits) - hits, 2);
	CHECK_EQ(STAT_GET(meta_reads) - reads, 1);
	CHECK(io_channel_close(io) == 0);
}

static void test_held_writes_reach_the_file_once_at_release(void)
{
	io_channel io = open_cache(1 << 20);
	uint64_t writes;

	mcache_hold(io);
	write_block(io, 5, 'B');
	write_block(io, 5, 'C');
	write_block(io, 6, 'D');
	CHECK(on_file(5, 0) && on_file(6, 0));
	CHECK(read_is(io, 5, 'C'));   /* reads see the newest */
	writes = STAT_GET(meta_writes);
	CHECK(mcache_release(io) == 0);
	CHECK_EQ(STAT_GET(meta_writes) - writes, 2);
	CHECK(on_file(5, 'C') && on_file(6, 'D'));
	CHECK(io_channel_close(io) == 0);
}

static void test_holds_nest(void)
{
	io_channel io = open_cache(1 << 20);

	mcache_hold(io);
	mcache_hold(io);
	write_block(io, 7, 'E');
	CHECK(mcache_release(io) == 0);
	CHECK(on_file(7, 0));
	CHECK(mcache_release(io) == 0);
	CHECK(on_file(7, 'E'));
	CHECK(io_channel_close(io) == 0);
}

static void test_freed_block_never_reaches_the_file(void)
{
	io_channel io = open_cache(1 << 20);

	mcache_hold(io);
	write_block(io, 8, 'F');
	mcache_forget(io, 8, 1, false);
	CHECK(read_is(io, 8, 0));
	CHECK(mcache_release(io) == 0);
	CHECK(on_file(8, 0));
	CHECK(io_channel_close(io) == 0);
}

static void test_allocated_block_keeps_what_was_written(void)
{
	io_channel io = open_cache(1 << 20);

	write_block(io, 9, 'x');      /* an old, clean copy */
	mcache_forget(io, 9, 1, true);
	mcache_hold(io);
	write_block(io, 10, 'G');     /* written, then counted allocated */
	mcache_forget(io, 10, 1, true);
	CHECK(read_is(io, 10, 'G'));
	CHECK(mcache_release(io) == 0);
	CHECK(on_file(10, 'G'));
	CHECK(io_channel_close(io) == 0);
}

static void test_multi_block_read_sees_held_blocks(void)
{
	io_channel io = open_cache(1 << 20);
	char *buf = malloc(3 * BS);

	CHECK(buf != NULL);
	mcache_hold(io);
	write_block(io, 12, 'H');
	CHECK(io_channel_read_blk64(io, 11, 3, buf) == 0);
	CHECK(buf[0] == 0 && buf[BS] == 'H' && buf[2 * BS - 1] == 'H' && buf[2 * BS] == 0);
	CHECK(mcache_release(io) == 0);
	CHECK(on_file(12, 'H'));
	free(buf);
	CHECK(io_channel_close(io) == 0);
}

static void test_byte_write_sends_held_blocks_first(void)
{
	io_channel io = open_cache(1 << 20);
	char bytes[16];

	memset(bytes, 'y', sizeof(bytes));
	mcache_hold(io);
	write_block(io, 14, 'I');
	CHECK(io_channel_write_byte(io, 15 * BS, sizeof(bytes), bytes) == 0);
	CHECK(on_file(14, 'I'));
	CHECK(mcache_release(io) == 0);
	CHECK(read_is(io, 14, 'I'));
	CHECK(io_channel_close(io) == 0);
}

static void test_without_cache_writes_are_immediate(void)
{
	io_channel io = open_cache(0);

	mcache_hold(io);
	write_block(io, 16, 'J');
	CHECK(on_file(16, 'J'));
	CHECK(mcache_release(io) == 0);
	CHECK(io_channel_close(io) == 0);
}

static void test_full_cache_writes_through(void)
{
	io_channel io = open_cache(4 * BS);   /* room for four blocks */

	mcache_hold(io);
	for (int i = 0; i < 6; i++)
		write_block(io, 20 + (blk64_t)i, 'K' + i);
	/* the fifth and sixth found no room: on the file already */
	CHECK(on_file(20, 0) && on_file(23, 0));
	CHECK(on_file(24, 'K' + 4) && on_file(25, 'K' + 5));
	CHECK(mcache_release(io) == 0);
	for (int i = 0; i < 6; i++)
		CHECK(on_file(20 + (blk64_t)i, 'K' + i));
	CHECK(io_channel_close(io) == 0);
}

static void test_close_writes_held_blocks(void)
{
	io_channel io = open_cache(1 << 20);

	mcache_hold(io);
	write_block(io, 30, 'L');
	CHECK(io_channel_close(io) == 0);
	CHECK(on_file(30, 'L'));
}

int main(void)
{
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK(ftruncate(fd, BLOCKS * BS) == 0);
	close(fd);
	RUN(test_writes_go_through_and_reads_come_from_memory);
	RUN(test_held_writes_reach_the_file_once_at_release);
	RUN(test_holds_nest);
	RUN(test_freed_block_never_reaches_the_file);
	RUN(test_allocated_block_keeps_what_was_written);
	RUN(test_multi_block_read_sees_held_blocks);
	RUN(test_byte_write_sends_held_blocks_first);
	RUN(test_without_cache_writes_are_immediate);
	RUN(test_full_cache_writes_through);
	RUN(test_close_writes_held_blocks);
	unlink(path);
	printf("%d checks passed\n", checks_run);
	return 0;
}
