/*
 * Logging: one line per event on stderr, logfmt-style key=value pairs after a
 * timestamp and level, so lines can be grepped and parsed. Messages follow
 * PostgreSQL's style: lowercase, no trailing period, quoted values.
 * Thread-safe: a line is written whole, never mixed with another.
 */
#ifndef MON_UTIL_LOG_H
#define MON_UTIL_LOG_H

#include <stdarg.h>

#include "util/error.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "debug", "info", "warn" or "error"; returns -1 when unknown. */
int log_level_parse(const char *name);

/*
 * Writes "ts=... level=... " followed by the formatted text. The text should
 * itself be key=value pairs, for example `msg="could not connect" host=%s`.
 */
void log_write(enum log_level level, const char *fmt, ...) MON_PRINTF(2, 3);
void log_vwrite(enum log_level level, const char *fmt, va_list ap) MON_PRINTF(2, 0);

/*
 * Buffered mode: every line goes to a bounded in-memory buffer (1 MiB) that
 * a writer thread writes out every 50 ms, whenever it holds 64 KiB, and at
 * once after a warning or error (an error is written directly when nothing
 * is queued before it and stderr has room, so it is out before a crash that
 * might follow). A caller never waits for stderr: when the
 * buffer is full (stderr not read, or slower than the logging), the line is
 * dropped and counted, and once the writer catches up it writes one warning
 * saying how many were dropped (`dropped=N`), in its place in the order.
 * log_stop writes out what is buffered, waiting at most about 2 s for
 * stderr to take it, and stops the thread; without log_start (and after
 * log_stop) every line is written at once.
 */
int log_start(void);
void log_stop(void);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
