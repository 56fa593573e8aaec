/*
 * The LISTEN/NOTIFY bus: one dedicated connection and one thread per bus.
 * The thread LISTENs on every subscribed channel, waits on the socket with
 * poll() in short slices (so destroy is prompt), and hands each
 * notification to the callbacks of its channel. A lost connection is
 * reopened with exponential backoff; after it is back and the channels are
 * LISTENed again, the reconnect callback runs, because notifications sent
 * meanwhile are gone and subscribers must catch up from the tables.
 *
 * The bus owns its connection, thread and subscription list. Subscriptions
 * are append-only; one made after start is LISTENed within one poll slice.
 */
#include "db/db_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define BUS_POLL_MS 100
#define BUS_BACKOFF_MIN_MS 100
#define BUS_BACKOFF_MAX_MS 5000
#define BUS_CONNECT_TIMEOUT_MS 5000
#define BUS_CALLBACKS_MAX 64

struct bus_sub {
	char *channel;
	db_bus_fn fn;
	void *arg;
};

struct db_bus {
	char *conninfo;
	pthread_mutex_t mu; /* guards subs, subs_n, subs_cap, on_reconnect* */
	struct bus_sub *subs;
	size_t subs_n;
	size_t subs_cap;
	void (*on_reconnect)(void *arg);
	void *on_reconnect_arg;

	pthread_t thread;
	bool is_started;
	atomic_bool should_stop;
	atomic_bool is_connected;

	/* owned by the bus thread */
	PGconn *pg;
	size_t listened_n;
	bool has_connected_before;
};

int db_bus_create(const char *conninfo, struct db_bus **out, struct mon_error *err)
{
	*out = NULL;
	if (conninfo == NULL)
		return mon_error_set(err, MON_EINVAL, "database conninfo: must be set");
	struct db_bus *bus = calloc(1, sizeof(*bus));
	if (bus == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the notification bus");
	bus->conninfo = strdup(conninfo);
	if (bus->conninfo == NULL) {
		free(bus);
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the notification bus");
	}
	pthread_mutex_init(&bus->mu, NULL);
	atomic_init(&bus->should_stop, false);
	atomic_init(&bus->is_connected, false);
	*out = bus;
	return 0;
}

int db_bus_subscribe(struct db_bus *bus, const char *channel, db_bus_fn fn, void *arg, struct mon_error *err)
{
	int rc = 0;
	if (channel == NULL || channel[0] == '\0' || strlen(channel) > 63)
		return mon_error_set(err, MON_EINVAL, "bus channel: must be 1 to 63 bytes");
	if (fn == NULL)
		return mon_error_set(err, MON_EINVAL, "bus callback: must be set");
	char *copy = strdup(channel);
	if (copy == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory subscribing to a channel");
	pthread_mutex_lock(&bus->mu);
	if (bus->subs_n == bus->subs_cap) {
		size_t cap = bus->subs_cap ? bus->subs_cap * 2 : 8;
		struct bus_sub *s = realloc(bus->subs, cap * sizeof(*s));
		if (s == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory subscribing to a channel");
			goto out;
		}
		bus->subs = s;
		bus->subs_cap = cap;
	}
	bus->subs[bus->subs_n++] = (struct bus_sub){.channel = copy, .fn = fn, .arg = arg};
	copy = NULL;
out:
	pthread_mutex_unlock(&bus->mu);
	free(copy);
	return rc;
}

void db_bus_on_reconnect(struct db_bus *bus, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&bus->mu);
	bus->on_reconnect = fn;
	bus->on_reconnect_arg = arg;
	pthread_mutex_unlock(&bus->mu);
}

bool db_bus_is_connected(struct db_bus *bus)
{
	return bus != NULL && atomic_load(&bus->is_connected);
}

static void bus_disconnect(struct db_bus *bus)
{
	if (bus->pg != NULL)
		PQfinish(bus->pg);
	bus->pg = NULL;
	bus->listened_n = 0;
	atomic_store(&bus->is_connected, false);
}

/* Sleeps ms in poll-sized slices; false when asked to stop meanwhile. */
static bool bus_sleep(struct db_bus *bus, int ms)
{
	while (ms > 0 && !atomic_load(&bus->should_stop)) {
		int slice = ms < BUS_POLL_MS ? ms : BUS_POLL_MS;
		poll(NULL, 0, slice);
		ms -= slice;
	}
	return !atomic_load(&bus->should_stop);
}

/* LISTENs on the channels subscribed since the last call; false when the connection failed. */
static bool bus_listen_pending(struct db_bus *bus)
{
	for (;;) {
		char *channel = NULL;
		pthread_mutex_lock(&bus->mu);
		if (bus->listened_n < bus->subs_n)
			channel = bus->subs[bus->listened_n].channel;
		pthread_mutex_unlock(&bus->mu);
		if (channel == NULL)
			return true;
		char *ident = PQescapeIdentifier(bus->pg, channel, strlen(channel));
		if (ident == NULL)
			return false;
		char sql[256];
		int sql_n = snprintf(sql, sizeof(sql), "LISTEN %s", ident);
		PQfreemem(ident);
		if (sql_n < 0 || (size_t)sql_n >= sizeof(sql)) {
			log_warn("msg=\"could not listen: channel name too long\" channel=\"%s\"", channel);
			return false;
		}
		PGresult *res = PQexec(bus->pg, sql);
		bool is_ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!is_ok) {
			char text[512];
			log_warn("msg=\"could not listen\" channel=\"%s\" reason=\"%s\"", channel,
			         db_log_text(PQerrorMessage(bus->pg), text, sizeof(text)));
		}
		PQclear(res);
		if (!is_ok)
			return false;
		bus->listened_n++;
	}
}

static void bus_dispatch(struct db_bus *bus, const PGnotify *n)
{
	struct bus_sub calls[BUS_CALLBACKS_MAX];
	size_t calls_n = 0;
	pthread_mutex_lock(&bus->mu);
	for (size_t i = 0; i < bus->subs_n && calls_n < BUS_CALLBACKS_MAX; i++)
		if (strcmp(bus->subs[i].channel, n->relname) == 0)
			calls[calls_n++] = bus->subs[i];
	pthread_mutex_unlock(&bus->mu);
	for (size_t i = 0; i < calls_n; i++)
		calls[i].fn(n->relname, n->extra ? n->extra : "", calls[i].arg);
}

/* Opens the connection and LISTENs; false (after logging) when it failed. */
static bool bus_connect(struct db_bus *bus)
{
	struct mon_error err = {0};
	static const char *const keys[] = {"application_name", "keepalives", "keepalives_idle", NULL};
	static const char *const values[] = {"monitord-bus", "1", "30", NULL};
	bus->pg = db_connect(bus->conninfo, keys, values, mon_now_ms() + BUS_CONNECT_TIMEOUT_MS, &err);
	if (bus->pg == NULL)
		return false;
	bus->listened_n = 0;
	if (!bus_listen_pending(bus)) {
		bus_disconnect(bus);
		return false;
	}
	atomic_store(&bus->is_connected, true);
	if (bus->has_connected_before) {
		log_info("msg=\"notification bus reconnected\"");
		pthread_mutex_lock(&bus->mu);
		void (*fn)(void *) = bus->on_reconnect;
		void *arg = bus->on_reconnect_arg;
		pthread_mutex_unlock(&bus->mu);
		if (fn != NULL)
			fn(arg);
	}
	bus->has_connected_before = true;
	return true;
}

static void *bus_main(void *arg)
{
	struct db_bus *bus = arg;
	int backoff_ms = BUS_BACKOFF_MIN_MS;
	while (!atomic_load(&bus->should_stop)) {
		if (bus->pg == NULL) {
			if (!bus_connect(bus)) {
				bus_sleep(bus, backoff_ms);
				backoff_ms = backoff_ms * 2 > BUS_BACKOFF_MAX_MS ? BUS_BACKOFF_MAX_MS : backoff_ms * 2;
				continue;
			}
			backoff_ms = BUS_BACKOFF_MIN_MS;
		}
		if (!bus_listen_pending(bus)) {
			bus_disconnect(bus);
			continue;
		}
		struct pollfd pfd = {.fd = PQsocket(bus->pg), .events = POLLIN};
		int r = poll(&pfd, 1, BUS_POLL_MS);
		if (r < 0 && errno != EINTR) {
			bus_disconnect(bus);
			continue;
		}
		if (r <= 0)
			continue;
		if (PQconsumeInput(bus->pg) == 0 || PQstatus(bus->pg) != CONNECTION_OK) {
			char text[512];
			log_warn("msg=\"notification bus lost its connection\" reason=\"%s\"",
			         db_log_text(PQerrorMessage(bus->pg), text, sizeof(text)));
			bus_disconnect(bus);
			continue;
		}
		PGnotify *n;
		while ((n = PQnotifies(bus->pg)) != NULL) {
			bus_dispatch(bus, n);
			PQfreemem(n);
		}
	}
	bus_disconnect(bus);
	return NULL;
}

int db_bus_start(struct db_bus *bus, struct mon_error *err)
{
	if (bus->is_started)
		return mon_error_set(err, MON_EINTERNAL, "notification bus: already started");
	int e = pthread_create(&bus->thread, NULL, bus_main, bus);
	if (e != 0)
		return mon_error_set(err, MON_ENOMEM, "could not start the notification bus thread: %s", strerror(e));
	bus->is_started = true;
	return 0;
}

void db_bus_destroy(struct db_bus *bus)
{
	if (bus == NULL)
		return;
	atomic_store(&bus->should_stop, true);
	if (bus->is_started)
		pthread_join(bus->thread, NULL);
	bus_disconnect(bus);
	for (size_t i = 0; i < bus->subs_n; i++)
		free(bus->subs[i].channel);
	free(bus->subs);
	pthread_mutex_destroy(&bus->mu);
	free(bus->conninfo);
	free(bus);
}
