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
#include <stdint.h>
#include <sys/uio.h>

#include "fuse_abi.h"

struct arena;

/* ---- what libfuse 3.14 does not know ----
 * Both loops (kaiofs's threads and libfuse's single-threaded one) let a
 * handler answer opcodes libfuse 3.14 lacks, and add INIT flags of newer
 * kernels to libfuse's INIT reply. */

/* A request as the kernel sent it, valid only during the handler call. */
struct rx_request {
	const struct fuse_in_header *in;
	const void *arg;        /* the body after the header */
	size_t arglen;
};

/* Takes the request (returns true, and answers it with rx_reply) or leaves
 * it to libfuse (false). */
typedef bool (*rx_extra_fn)(void *ctx, const struct rx_request *r);

struct rx_hooks {
	rx_extra_fn extra;
	void *extra_ctx;
	uint64_t init_flags;    /* FUSE_* INIT flags to grant where the kernel offers them */
};

/* Install on a mounted session before its loop runs. Returns 0 or -errno. */
int rx_hooks_install(struct fuse_session *se, const struct rx_hooks *h);

/* The INIT flags the kernel offered (both words; 0 before INIT), and those
 * of rx_hooks.init_flags that the INIT reply granted. */
uint64_t rx_kernel_init_flags(void);
uint64_t rx_granted_init_flags(void);

/* Answer a request taken by an extra handler: err (a positive errno) or the
 * reply's body in iov[0..n). Returns 0 or -errno (-ENOENT: the request was
 * interrupted and is gone). */
int rx_reply(const struct rx_request *r, int err, const struct iovec *iov, int n);

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
