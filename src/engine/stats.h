/* Counters and latency histograms of every layer. Updated with relaxed
 * atomics from any thread; read by the statistics server and at unmount. */
#ifndef KAIOFS_STATS_H
#define KAIOFS_STATS_H

#include <stdbool.h>
#include <stdint.h>

/* Kinds of device I/O, also used for the whole-request latency of data ops. */
enum io_kind { IOK_READ, IOK_WRITE, IOK_FSYNC, IOK__COUNT };

/* FUSE requests counted by type. */
enum fuse_op {
	FOP_LOOKUP, FOP_FORGET, FOP_GETATTR, FOP_SETATTR, FOP_OPEN, FOP_READ,
	FOP_WRITE, FOP_FLUSH, FOP_RELEASE, FOP_FSYNC, FOP_OPENDIR, FOP_READDIR,
	FOP_RELEASEDIR, FOP_STATFS, FOP_OTHER, FOP__COUNT
};

#define HISTO_BUCKETS 48 /* bucket i holds latencies in [2^i, 2^(i+1)) ns */

struct histo {
	uint64_t bucket[HISTO_BUCKETS];
	uint64_t count, sum_ns, max_ns;
};

struct kstats {
	/* the engine (aio or uring); the counters below are the same for both */
	const char *engine;      /* its name, set when it starts */
	uint64_t submits;        /* io_submit (io_uring_enter) calls that submitted something */
	uint64_t iocbs;          /* requests (iocbs, ring entries) they carried */
	uint64_t completions;
	uint64_t errors;         /* completions with a negative result */
	uint64_t eagain;         /* submissions retried for want of kernel resources */
	uint64_t short_io;       /* short transfers resubmitted */
	uint64_t in_flight, in_flight_peak;
	uint64_t queued, queued_peak; /* waiting for a free queue slot */
	/* uring engine only */
	uint64_t ur_rings, ur_sq_entries, ur_cq_entries;
	uint64_t ur_registered_bytes;  /* fixed buffers, summed over the rings */
	uint64_t ur_fixed_buffer_ios;  /* reads and writes on registered buffers */
	uint64_t ur_other_buffer_ios;  /* reads and writes on other memory */
	uint64_t ur_fixed_file_ios;    /* requests on the registered descriptor */
	/* arena */
	uint64_t arena_size, arena_in_use, arena_peak, arena_waits, arena_allocs;
	uint64_t arena_rx;         /* of in_use: FUSE receive buffers */
	uint64_t writes_in_place;  /* writes sent from their receive buffer */
	/* FUSE front */
	uint64_t fuse_requests[FOP__COUNT];
	uint64_t bytes_read, bytes_written;
	uint64_t rmw_blocks;     /* edge blocks read for read-modify-write */
	uint64_t lock_waits;     /* writes queued behind an overlapping write */
	uint64_t polled;         /* requests found by a receive thread polling */
	/* metadata I/O of libext2fs */
	uint64_t meta_reads;     /* reads that went to the device */
	uint64_t meta_hits;      /* reads served from the metadata cache */
	uint64_t meta_writes;
	struct histo device_lat[IOK__COUNT];  /* io_submit -> completion */
	struct histo request_lat[IOK__COUNT]; /* FUSE request -> reply */
};

extern struct kstats kstats;

#define STAT_ADD(field, n) __atomic_fetch_add(&kstats.field, (n), __ATOMIC_RELAXED)
#define STAT_SUB(field, n) __atomic_fetch_sub(&kstats.field, (n), __ATOMIC_RELAXED)
#define STAT_SET(field, v) __atomic_store_n(&kstats.field, (v), __ATOMIC_RELAXED)
#define STAT_GET(field) __atomic_load_n(&kstats.field, __ATOMIC_RELAXED)

/* Raise *peak to at least v. */
void stat_peak(uint64_t *peak, uint64_t v);
/* Add v to `now`, raising `peak`; returns the new value. */
uint64_t stat_gauge_add(uint64_t *now, uint64_t *peak, uint64_t v);
void histo_add(struct histo *h, uint64_t ns);
/* Latency below which fraction q (0..1) of the samples fall, in ns. */
uint64_t histo_quantile(const struct histo *h, double q);

/* Render all statistics; returns a malloc'ed string. */
char *stats_render(bool json);

#endif
