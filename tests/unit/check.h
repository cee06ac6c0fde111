/* Minimal assertions for the unit tests: a failed check names itself and
 * exits non-zero, which meson test reports. */
#ifndef KAIOFS_CHECK_H
#define KAIOFS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int checks_run;

#define CHECK(cond) do { \
	checks_run++; \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		exit(1); \
	} \
} while (0)

#define CHECK_EQ(a, b) do { \
	long long _a = (long long)(a), _b = (long long)(b); \
	checks_run++; \
	if (_a != _b) { \
		fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n", \
			__FILE__, __LINE__, #a, #b, _a, _b); \
		exit(1); \
	} \
} while (0)

#define RUN(test) do { test(); printf("ok %s\n", #test); } while (0)

#endif
