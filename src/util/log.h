/*
 * Logging: one line per event on stderr, logfmt-style key=value pairs after a
 * timestamp and level, so lines can be grepped and parsed. Messages follow
 * PostgreSQL's style: lowercase, no trailing period, quoted values.
 * Thread-safe: each line is written with a single write().
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
void log_vwrite(enum log_level level, const char *fmt, va_list ap);

/*
 * Buffered mode: lines at info and debug level go to an in-memory buffer
 * that a background thread writes out every 50 ms or whenever it holds
 * 64 KiB, so a busy server does not make one write() per call. Warnings
 * and errors flush the buffer and are written at once, in order. A full
 * buffer (1 MiB) makes writers wait: nothing is dropped. log_stop flushes
 * and stops the thread; without log_start every line is written at once.
 */
int log_start(void);
void log_stop(void);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
