/* Small helpers shared by the daemon, the statistics command and the tests. */
#ifndef KAIOFS_UTIL_H
#define KAIOFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Parse "64M", "4096", "1G", "512k" into bytes. Returns false on garbage or overflow. */
bool parse_size(const char *s, uint64_t *out);
/* Parse a decimal unsigned integer in [min, max]. */
bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Name of the abstract unix socket on which a mount serves its statistics;
 * derived from the mountpoint's canonical path. out must hold 64 bytes. */
void stat_socket_name(const char *mountpoint_realpath, char out[64]);

static inline uint64_t round_down(uint64_t x, uint64_t a) { return x - x % a; }
static inline uint64_t round_up(uint64_t x, uint64_t a) { return round_down(x + a - 1, a); }

#endif
