/* The daemon's messages: "kaiofs: ..." lines on stderr until it has
 * detached from the caller's terminal, then syslog (daemon facility), so
 * that a detached kaiofs holds no descriptor of whoever started it. */
#ifndef KAIOFS_LOG_H
#define KAIOFS_LOG_H

#include <stdarg.h>
#include <stdbool.h>

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vsay(const char *fmt, va_list ap);
/* Several lines at once (a statistics table). */
void say_lines(const char *text);
/* From now on, messages go to syslog. */
void log_to_syslog(void);
bool log_is_syslog(void);

#endif
