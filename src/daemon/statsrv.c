#include "statsrv.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "stats.h"
#include "util.h"

struct statsrv {
	int fd;
	pthread_t thread;
};

static void write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void serve_client(int c)
{
	char req[32] = "";
	ssize_t n;
	struct timeval tv = { 2, 0 };

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(c, req, sizeof(req) - 1, 0);
	if (n > 0) {
		char *text = stats_render(strncmp(req, "json", 4) == 0);

		write_all(c, text, strlen(text));
		free(text);
	}
	close(c);
}

static void *statsrv_main(void *arg)
{
	struct statsrv *s = arg;

	for (;;) {
		int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);

		if (c >= 0)
			serve_client(c);
		else if (errno != EINTR && errno != ECONNABORTED)
			return NULL; /* the socket was shut down */
	}
}

struct statsrv *statsrv_start(const char *mnt, char *err, size_t errlen)
{
	struct statsrv *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char name[64];
	socklen_t len;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	stat_socket_name(mnt, name);
	/* abstract namespace: sun_path[0] is NUL */
	memcpy(sa.sun_path + 1, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sa, len) || listen(s->fd, 8)) {
		snprintf(err, errlen, "statistics socket for %s: %s", mnt,
			 errno == EADDRINUSE ? "another kaiofs serves this mountpoint" : strerror(errno));
		if (s->fd >= 0)
			close(s->fd);
		free(s);
		return NULL;
	}
	if (pthread_create(&s->thread, NULL, statsrv_main, s)) {
		snprintf(err, errlen, "cannot start the statistics thread");
		close(s->fd);
		free(s);
		return NULL;
	}
	return s;
}

void statsrv_stop(struct statsrv *s)
{
	if (!s)
		return;
	shutdown(s->fd, SHUT_RDWR);
	pthread_join(s->thread, NULL);
	close(s->fd);
	free(s);
}
