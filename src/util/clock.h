/*
 * The two clocks every layer reads, in milliseconds: the monotonic clock
 * for intervals, timeouts and deadlines (never jumps), and the wall clock
 * for times that are stored or shown (may jump when the system time is
 * set). One copy here, for the server, the data layer and the client
 * library alike.
 */
#ifndef MON_UTIL_CLOCK_H
#define MON_UTIL_CLOCK_H

#include <stdint.h>

/* Milliseconds on the monotonic clock (CLOCK_MONOTONIC); only differences mean anything. */
int64_t mon_now_ms(void);

/* Milliseconds since the epoch on the wall clock (CLOCK_REALTIME). */
int64_t mon_wall_ms(void);

#endif
