/* The bounce-buffer arena: one mmap'ed, mlock'ed region cut into aligned
 * buffers. Allocation waits while the arena is full (backpressure, never an
 * error) and is served in arrival order, so a large request is not starved
 * by a stream of small ones. Knows nothing of FUSE or ext4. */
#ifndef KAIOFS_ARENA_H
#define KAIOFS_ARENA_H

#include <stdbool.h>
#include <stddef.h>

struct arena;

/* Create an arena of `size` bytes whose buffers are aligned to (and sized in
 * multiples of) `unit`, a power of two >= 4096. Returns NULL and writes a
 * one-line reason into err when the memory cannot be mapped or locked. */
struct arena *arena_create(size_t size, size_t unit, char *err, size_t errlen);
void arena_destroy(struct arena *a);

/* Lock the arena's pages in memory again (locks do not survive fork). */
int arena_relock(struct arena *a);

/* A buffer of at least len bytes (len <= arena_max_alloc); waits while the
 * arena is full. */
void *arena_alloc(struct arena *a, size_t len);
/* As arena_alloc, but returns NULL instead of waiting. */
void *arena_try_alloc(struct arena *a, size_t len);
void arena_free(struct arena *a, void *buf, size_t len);

size_t arena_unit(const struct arena *a);
/* The first byte of the arena's memory: every buffer lies in
 * [arena_base, arena_base + arena_size). */
void *arena_base(const struct arena *a);
size_t arena_size(const struct arena *a);
/* Largest single allocation the arena serves. */
size_t arena_max_alloc(const struct arena *a);

#endif
