/* The FUSE receive loop: a fixed set of threads read requests from
 * /dev/fuse straight into buffers of the I/O arena, laid out so that the
 * payload of a WRITE request starts on a page boundary. A large aligned
 * write can then be sent to the device from the very buffer the kernel
 * copied it into, instead of being copied once more (rx_take_payload). */
#ifndef KAIOFS_RX_H
#define KAIOFS_RX_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>

struct arena;

struct rx_config {
	unsigned nthreads;
	/* After serving a request, one thread at a time polls for the next
	 * one up to poll_us microseconds before it sleeps in read, as long as
	 * quiet(quiet_arg) says so (NULL: always). 0: never poll. */
	unsigned poll_us;
	bool (*quiet)(void *quiet_arg);
	void *quiet_arg;
};

/* Serve se with cfg->nthreads receive threads until the session exits
 * (unmount or a signal). Returns 0, or -1 after a read error other than
 * unmount. */
int rx_loop(struct fuse_session *se, struct arena *arena, const struct rx_config *cfg);

/* The number of receive threads to run when none is asked for: one per
 * CPU this process may run on, 2 to 8. */
unsigned rx_default_threads(void);

/* Arena bytes one receive thread keeps for its buffer. */
size_t rx_slot_len(size_t arena_unit);

/* Called while the calling thread processes a request: if data is the
 * page-aligned WRITE payload of that request, the caller becomes the owner
 * of its pages, [data, data + len rounded up to the arena unit), to be
 * freed with arena_free; returns false (and gives nothing) otherwise. */
bool rx_take_payload(const void *data, size_t len);

#endif
