#include "log.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>

static bool to_syslog;

void vsay(const char *fmt, va_list ap)
{
	if (to_syslog) {
		vsyslog(LOG_ERR, fmt, ap);
		return;
	}
	fputs("kaiofs: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

void say_lines(const char *text)
{
	if (!to_syslog) {
		fputs(text, stderr);
		return;
	}
	while (*text) {
		size_t n = strcspn(text, "\n");

		syslog(LOG_INFO, "%.*s", (int)n, text);
		text += n + (text[n] == '\n');
	}
}

void log_to_syslog(void)
{
	openlog("kaiofs", LOG_PID, LOG_DAEMON);
	to_syslog = true;
}

bool log_is_syslog(void)
{
	return to_syslog;
}
