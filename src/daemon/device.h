/* Opening the device (a block device or a regular image file) for direct I/O,
 * with the checks and messages of bad input. */
#ifndef KAIOFS_DEVICE_H
#define KAIOFS_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device {
	int fd;
	char *path;
	bool is_blockdev;
	bool readonly;          /* opened read-only */
	uint64_t size;          /* bytes */
	unsigned logical_block; /* O_DIRECT alignment of the device */
};

/* Open path with O_DIRECT, read-write unless want_ro. A read-only device or
 * file opened read-write falls back to read-only and sets ro_reason. A block
 * device is claimed exclusively when `exclusive` (else its other user, libext2fs,
 * claims it). Returns
 * 0, or -1 with a one-line reason in err. */
int device_open(struct device *dev, const char *path, bool want_ro, bool exclusive,
		const char **ro_reason, char *err, size_t errlen);
void device_close(struct device *dev);

/* Is path (canonical) a mount point already? */
bool path_is_mountpoint(const char *path);

#endif
