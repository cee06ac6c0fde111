/* Serves the statistics of a mount to kaiofs-stat on an abstract unix socket
 * named after the mountpoint. */
#ifndef KAIOFS_STATSRV_H
#define KAIOFS_STATSRV_H

#include <stddef.h>

struct statsrv;

struct statsrv *statsrv_start(const char *mountpoint_realpath, char *err, size_t errlen);
void statsrv_stop(struct statsrv *s);

#endif
