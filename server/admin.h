/*
 * `monitord admin ...`: managing callers and API keys from the server host,
 * straight in the database (there is no network path to create the first
 * admin). It reads the same configuration as the server (config file,
 * environment, flags), starts the embedded cluster when no database is
 * configured and it is not running (and stops it again afterwards),
 * applies the migrations, makes the change and its audit event in one
 * transaction, and prints a created API key once, alone on stdout.
 */
#ifndef MON_SERVER_ADMIN_H
#define MON_SERVER_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/*
 * Runs `monitord admin SUBCOMMAND ...` (argv[0] is the program, argv[1]
 * "admin"). Returns the process exit status: 0 on success, 1 when the
 * action failed, 2 on a usage error.
 */
int admin_main(int argc, char **argv);

/*
 * Parses an instant: "now" (now_ms), or RFC 3339 "YYYY-MM-DDTHH:MM:SS"
 * with optional fraction and a "Z" or "+HH:MM"/"-HH:MM" offset (the "T"
 * and "Z" may be lowercase). *out_ms is milliseconds since the epoch,
 * after 1970. MON_EINVAL with a message naming the expected form otherwise.
 */
int admin_parse_time(const char *text, int64_t now_ms, int64_t *out_ms, struct mon_error *err) MON_MUST_CHECK;

/* Writes ms since the epoch as "YYYY-MM-DDTHH:MM:SSZ" (UTC), or "-" when ms is 0. */
void admin_format_time(int64_t ms, char *buf, size_t buf_len);

#endif
