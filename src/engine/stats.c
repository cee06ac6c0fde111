#include "stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kstats kstats;

static const char *const fop_names[FOP__COUNT] = {
	"lookup", "forget", "getattr", "setattr", "open", "read", "write",
	"flush", "release", "fsync", "opendir", "readdir", "releasedir",
	"statfs", "other",
};
static const char *const iok_names[IOK__COUNT] = { "read", "write", "fsync" };

void stat_peak(uint64_t *peak, uint64_t v)
{
	uint64_t cur = __atomic_load_n(peak, __ATOMIC_RELAXED);

	while (v > cur && !__atomic_compare_exchange_n(peak, &cur, v, true,
						      __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

uint64_t stat_gauge_add(uint64_t *now, uint64_t *peak, uint64_t v)
{
	uint64_t n = __atomic_add_fetch(now, v, __ATOMIC_RELAXED);

	stat_peak(peak, n);
	return n;
}

void histo_add(struct histo *h, uint64_t ns)
{
	unsigned b = ns ? 63 - (unsigned)__builtin_clzll(ns) : 0;

	if (b >= HISTO_BUCKETS)
		b = HISTO_BUCKETS - 1;
	__atomic_fetch_add(&h->bucket[b], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
	stat_peak(&h->max_ns, ns);
}

uint64_t histo_quantile(const struct histo *h, double q)
{
	uint64_t total = 0, seen = 0, target;

	for (unsigned i = 0; i < HISTO_BUCKETS; i++)
		total += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
	if (!total)
		return 0;
	target = (uint64_t)(q * (double)total);
	if (target >= total)
		target = total - 1;
	for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
		uint64_t n = __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);

		if (seen + n > target) {
			/* interpolate linearly inside [2^i, 2^(i+1)) */
			double lo = (double)(1ull << i), frac = (double)(target - seen + 1) / (double)n;
			uint64_t v = (uint64_t)(lo + lo * frac);
			uint64_t max = __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED);
			return v < max ? v : max;
		}
		seen += n;
	}
	return __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED);
}

/* A growing string buffer. */
struct sbuf { char *s; size_t len, cap; };

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		if (!b->s)
			abort();
	}
}

static double iocbs_per_submit(void)
{
	uint64_t s = STAT_GET(submits);

	return s ? (double)STAT_GET(iocbs) / (double)s : 0.0;
}

#define G(f) (unsigned long long)STAT_GET(f)

static void json_histo(struct sbuf *b, const char *name, const struct histo *h, bool comma)
{
	uint64_t n = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
	uint64_t sum = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);

	sb_printf(b, "\"%s\":{\"count\":%llu,\"sum_ns\":%llu,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"buckets\":[",
		  name, (unsigned long long)n, (unsigned long long)sum,
		  n ? (double)sum / (double)n / 1e3 : 0.0,
		  (double)histo_quantile(h, 0.50) / 1e3, (double)histo_quantile(h, 0.99) / 1e3,
		  (double)__atomic_load_n(&h->max_ns, __ATOMIC_RELAXED) / 1e3);
	for (unsigned i = 0; i < HISTO_BUCKETS; i++)
		sb_printf(b, "%llu%s", (unsigned long long)__atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED),
			  i + 1 < HISTO_BUCKETS ? "," : "");
	sb_printf(b, "]}%s", comma ? "," : "");
}

static const char *engine_name(void)
{
	return kstats.engine ? kstats.engine : "none";
}

static bool is_uring(void)
{
	return strcmp(engine_name(), "uring") == 0;
}

static void render_json(struct sbuf *b)
{
	sb_printf(b, "{\"engine\":\"%s\",\"iocbs_per_submit\":%.3f,", engine_name(),
		  iocbs_per_submit());
	/* the engine's counters keep the key "aio" for both engines */
	sb_printf(b, "\"aio\":{\"engine\":\"%s\",\"submits\":%llu,\"iocbs\":%llu,\"iocbs_per_submit\":%.3f,"
		  "\"completions\":%llu,\"errors\":%llu,\"eagain\":%llu,\"short_io\":%llu,"
		  "\"in_flight\":%llu,\"in_flight_peak\":%llu,\"queued\":%llu,\"queued_peak\":%llu},",
		  engine_name(), G(submits), G(iocbs), iocbs_per_submit(), G(completions), G(errors),
		  G(eagain), G(short_io), G(in_flight), G(in_flight_peak), G(queued), G(queued_peak));
	if (is_uring())
		sb_printf(b, "\"uring\":{\"rings\":%llu,\"sq_entries\":%llu,\"cq_entries\":%llu,"
			  "\"registered_bytes\":%llu,\"fixed_buffer_ios\":%llu,\"other_buffer_ios\":%llu,"
			  "\"fixed_file_ios\":%llu},",
			  G(ur_rings), G(ur_sq_entries), G(ur_cq_entries), G(ur_registered_bytes),
			  G(ur_fixed_buffer_ios), G(ur_other_buffer_ios), G(ur_fixed_file_ios));
	sb_printf(b, "\"arena\":{\"size\":%llu,\"in_use\":%llu,\"peak\":%llu,\"waits\":%llu,\"allocs\":%llu,"
		  "\"rx_buffers\":%llu},",
		  G(arena_size), G(arena_in_use), G(arena_peak), G(arena_waits), G(arena_allocs), G(arena_rx));
	sb_printf(b, "\"fuse\":{\"requests\":{");
	for (unsigned i = 0; i < FOP__COUNT; i++)
		sb_printf(b, "\"%s\":%llu%s", fop_names[i], G(fuse_requests[i]),
			  i + 1 < FOP__COUNT ? "," : "");
	sb_printf(b, "},\"bytes_read\":%llu,\"bytes_written\":%llu,\"rmw_blocks\":%llu,\"lock_waits\":%llu,"
		  "\"writes_in_place\":%llu,\"polled\":%llu},",
		  G(bytes_read), G(bytes_written), G(rmw_blocks), G(lock_waits), G(writes_in_place),
		  G(polled));
	sb_printf(b, "\"metadata\":{\"reads\":%llu,\"cache_hits\":%llu,\"writes\":%llu},",
		  G(meta_reads), G(meta_hits), G(meta_writes));
	sb_printf(b, "\"latency\":{\"device\":{");
	for (unsigned i = 0; i < IOK__COUNT; i++)
		json_histo(b, iok_names[i], &kstats.device_lat[i], i + 1 < IOK__COUNT);
	sb_printf(b, "},\"request\":{");
	for (unsigned i = 0; i < IOK__COUNT; i++)
		json_histo(b, iok_names[i], &kstats.request_lat[i], i + 1 < IOK__COUNT);
	sb_printf(b, "}}}\n");
}

static void table_histo(struct sbuf *b, const char *layer, const char *name, const struct histo *h)
{
	uint64_t n = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
	uint64_t sum = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);

	sb_printf(b, "  %-8s %-6s %12llu %10.1f %10.1f %10.1f %10.1f\n", layer, name,
		  (unsigned long long)n, n ? (double)sum / (double)n / 1e3 : 0.0,
		  (double)histo_quantile(h, 0.50) / 1e3, (double)histo_quantile(h, 0.99) / 1e3,
		  (double)__atomic_load_n(&h->max_ns, __ATOMIC_RELAXED) / 1e3);
}

static void render_table(struct sbuf *b)
{
	bool uring = is_uring();

	sb_printf(b, "%s engine\n", engine_name());
	sb_printf(b, "  %-15s %14llu   iocbs %14llu   iocbs/submit %8.2f\n",
		  uring ? "io_uring_enter" : "io_submit calls", G(submits), G(iocbs), iocbs_per_submit());
	sb_printf(b, "  completions     %14llu   errors %13llu   short %15llu   eagain %llu\n",
		  G(completions), G(errors), G(short_io), G(eagain));
	sb_printf(b, "  in flight now   %14llu   peak %15llu   queued now %10llu   peak %llu\n",
		  G(in_flight), G(in_flight_peak), G(queued), G(queued_peak));
	if (uring) {
		sb_printf(b, "  rings %24llu   entries %12llu   registered %10llu\n", G(ur_rings),
			  G(ur_sq_entries), G(ur_registered_bytes));
		sb_printf(b, "  fixed buffer I/O %13llu   other buffer I/O %3llu   fixed file %llu\n",
			  G(ur_fixed_buffer_ios), G(ur_other_buffer_ios), G(ur_fixed_file_ios));
	}
	sb_printf(b, "arena\n");
	sb_printf(b, "  size %25llu   in use %13llu   peak %15llu\n",
		  G(arena_size), G(arena_in_use), G(arena_peak));
	sb_printf(b, "  allocations %18llu   waits %14llu   receive buffers %llu\n", G(arena_allocs),
		  G(arena_waits), G(arena_rx));
	sb_printf(b, "fuse\n");
	sb_printf(b, "  bytes read %19llu   bytes written %6llu   requests polled %llu\n",
		  G(bytes_read), G(bytes_written), G(polled));
	sb_printf(b, "  rmw edge blocks %14llu   overlap waits %6llu   writes in place %llu\n",
		  G(rmw_blocks), G(lock_waits), G(writes_in_place));
	sb_printf(b, "  requests:");
	for (unsigned i = 0; i < FOP__COUNT; i++)
		if (STAT_GET(fuse_requests[i]))
			sb_printf(b, " %s=%llu", fop_names[i], G(fuse_requests[i]));
	sb_printf(b, "\nmetadata\n");
	sb_printf(b, "  device reads %17llu   cache hits %9llu   device writes %llu\n",
		  G(meta_reads), G(meta_hits), G(meta_writes));
	sb_printf(b, "latency (us)\n  %-8s %-6s %12s %10s %10s %10s %10s\n",
		  "layer", "op", "count", "mean", "p50", "p99", "max");
	for (unsigned i = 0; i < IOK__COUNT; i++)
		table_histo(b, "device", iok_names[i], &kstats.device_lat[i]);
	for (unsigned i = 0; i < IOK__COUNT; i++)
		table_histo(b, "request", iok_names[i], &kstats.request_lat[i]);
}

char *stats_render(bool json)
{
	struct sbuf b = { 0 };

	if (json)
		render_json(&b);
	else
		render_table(&b);
	return b.s;
}
