/* kaiofs-stat: print the statistics of a mounted kaiofs. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kaiofs-stat [--json] MOUNTPOINT\n"
		   "Print the I/O statistics of a mounted kaiofs: a table, or with --json one JSON object.\n");
}

static int fetch(const char *mnt, bool json)
{
	char real[PATH_MAX], name[64], buf[65536];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	const char *req = json ? "json\n" : "table\n";
	int fd;
	ssize_t n;

	if (!realpath(mnt, real)) {
		fprintf(stderr, "kaiofs-stat: %s: %s\n", mnt, strerror(errno));
		return 1;
	}
	stat_socket_name(real, name);
	memcpy(sa.sun_path + 1, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) != 0) {
		fprintf(stderr, "kaiofs-stat: %s: not a kaiofs mount (no statistics served for it)\n", real);
		return 1;
	}
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		fprintf(stderr, "kaiofs-stat: %s: %s\n", real, strerror(errno));
		return 1;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	close(fd);
	return n < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	bool json = false;
	const char *mnt = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' || mnt) {
			usage(stderr);
			return 2;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt) {
		usage(stderr);
		return 2;
	}
	return fetch(mnt, json);
}
