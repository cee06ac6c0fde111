#include "device.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

static int open_direct(const char *path, bool ro, bool excl)
{
	int flags = (ro ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC;

	/* O_EXCL on a block device refuses it while mounted or held elsewhere */
	if (excl)
		flags |= O_EXCL;
	return open(path, flags);
}

static bool blockdev_is_readonly(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ro = 0;

	if (fd < 0)
		return false;
	if (ioctl(fd, BLKROGET, &ro) != 0)
		ro = 0;
	close(fd);
	return ro != 0;
}

/* Why open(O_DIRECT) failed with EINVAL: usually a filesystem without
 * direct I/O. */
static void explain_einval(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct statfs sfs;

	if (fd >= 0 && fstatfs(fd, &sfs) == 0)
		snprintf(err, errlen,
			 "%s: the filesystem holding it (type 0x%lx) does not support O_DIRECT; "
			 "copy the image to a filesystem that does (ext4, xfs, tmpfs) or use a block device",
			 path, (unsigned long)sfs.f_type);
	else
		snprintf(err, errlen, "%s: cannot be opened with O_DIRECT: %s", path, strerror(EINVAL));
	if (fd >= 0)
		close(fd);
}

/* The file offset alignment O_DIRECT needs on this file (statx DIOALIGN,
 * which this glibc's struct statx does not name yet: it is the u32 at byte
 * 0x9c). Where the filesystem does not say (tmpfs), try a 512-byte read. */
static unsigned file_dio_alignment(int fd)
{
	struct statx stx;
	uint32_t align = 0;
	void *buf;

	memset(&stx, 0, sizeof(stx));
	if (statx(fd, "", AT_EMPTY_PATH, 0x2000 /* STATX_DIOALIGN */, &stx) == 0 &&
	    (stx.stx_mask & 0x2000))
		memcpy(&align, (char *)&stx + 0x9c, sizeof(align));
	if (align >= 512 && align <= 65536)
		return align;
	if (posix_memalign(&buf, 4096, 512) != 0)
		return 4096;
	align = pread(fd, buf, 512, 512) >= 0 ? 512 : 4096;
	free(buf);
	return align;
}

static int read_geometry(struct device *dev, const struct stat *st, char *err, size_t errlen)
{
	if (dev->is_blockdev) {
		uint64_t bytes;
		int lbs;

		if (ioctl(dev->fd, BLKGETSIZE64, &bytes) || ioctl(dev->fd, BLKSSZGET, &lbs)) {
			snprintf(err, errlen, "%s: cannot read the device size: %s",
				 dev->path, strerror(errno));
			return -1;
		}
		dev->size = bytes;
		dev->logical_block = (unsigned)lbs;
	} else {
		dev->size = (uint64_t)st->st_size;
		dev->logical_block = file_dio_alignment(dev->fd);
	}
	return 0;
}

int device_open(struct device *dev, const char *path, bool want_ro, bool exclusive,
		const char **ro_reason, char *err, size_t errlen)
{
	struct stat st;

	memset(dev, 0, sizeof(*dev));
	dev->fd = -1;
	*ro_reason = NULL;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path,
			 errno == ENOENT ? "no such device or image file" : strerror(errno));
		return -1;
	}
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a block device or a regular image file", path);
		return -1;
	}
	dev->is_blockdev = S_ISBLK(st.st_mode);
	dev->readonly = want_ro;
	/* a read-only block device may still open O_RDWR: ask it */
	if (dev->is_blockdev && !want_ro && blockdev_is_readonly(path)) {
		want_ro = dev->readonly = true;
		*ro_reason = "the device is read-only";
	}
	dev->fd = open_direct(path, want_ro, dev->is_blockdev && exclusive);
	if (dev->fd < 0 && !want_ro && (errno == EROFS || errno == EACCES || errno == EPERM)) {
		int saved = errno;

		dev->fd = open_direct(path, true, dev->is_blockdev && exclusive);
		if (dev->fd >= 0) {
			dev->readonly = true;
			*ro_reason = saved == EROFS ? "the device is read-only"
						    : "no write permission on the device";
		} else {
			errno = saved;
		}
	}
	if (dev->fd < 0) {
		if (errno == EINVAL)
			explain_einval(path, err, errlen);
		else if (errno == EBUSY)
			snprintf(err, errlen, "%s: device is busy (mounted or in use elsewhere)", path);
		else if (errno == EACCES || errno == EPERM)
			snprintf(err, errlen, "%s: permission denied", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	dev->path = strdup(path);
	/* one kaiofs per image: block devices are held by O_EXCL, files by a lock */
	if (!dev->is_blockdev &&
	    flock(dev->fd, (dev->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
		snprintf(err, errlen, "%s: in use by another process (locked)", path);
		device_close(dev);
		return -1;
	}
	if (read_geometry(dev, &st, err, errlen)) {
		device_close(dev);
		return -1;
	}
	return 0;
}

void device_close(struct device *dev)
{
	if (dev->fd >= 0)
		close(dev->fd);
	dev->fd = -1;
	free(dev->path);
	dev->path = NULL;
}

/* Undo the octal escapes of /proc/self/mountinfo in place. */
static void unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = 0;
}

bool path_is_mountpoint(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char mnt[4096];

		/* id parent major:minor root mountpoint ... */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1) {
			unescape(mnt);
			found = strcmp(mnt, path) == 0;
		}
	}
	free(line);
	fclose(f);
	return found;
}
