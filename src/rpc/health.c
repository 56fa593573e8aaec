/*
 * The standard grpc.health.v1.Health service: Check and Watch over a table
 * of declared service names ("" is the whole server). The application sets
 * statuses (for example NOT_SERVING while the database is unreachable);
 * Watch subscribers receive every change. Handlers never block: they run
 * inline on the queue threads.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.mon-server.h"
#include "rpc/internal.h"
#include "util/log.h"

struct health_entry {
	char *name;
	enum rpc_health_status status;
};

struct health_watcher {
	struct health_watcher *next;
	struct rpc_stream *stream;
	char *name;
	int last_sent; /* wire value last sent, -1 none */
};

struct rpc_health {
	pthread_mutex_t lock;
	struct health_entry *entries;
	size_t count, cap;
	struct health_watcher *watchers;
};

enum {
	WIRE_UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN,
	WIRE_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
	WIRE_NOT_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
	WIRE_SERVICE_UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
};

static int to_wire(enum rpc_health_status s)
{
	switch (s) {
	case RPC_HEALTH_SERVING: return WIRE_SERVING;
	case RPC_HEALTH_NOT_SERVING: return WIRE_NOT_SERVING;
	default: return WIRE_UNKNOWN;
	}
}

/* Lock held. */
static struct health_entry *entry_find(struct rpc_health *h, const char *name)
{
	for (size_t i = 0; i < h->count; i++)
		if (strcmp(h->entries[i].name, name) == 0)
			return &h->entries[i];
	return NULL;
}

/* Lock held: the status a watcher of name should see now. */
static int watch_status(struct rpc_health *h, const char *name)
{
	struct health_entry *e = entry_find(h, name);
	return e ? to_wire(e->status) : WIRE_SERVICE_UNKNOWN;
}

/* Lock held: sends the current status to every watcher whose view changed. */
static void notify_locked(struct rpc_health *h)
{
	for (struct health_watcher *w = h->watchers; w; w = w->next) {
		int now = watch_status(h, w->name);
		if (now == w->last_sent)
			continue;
		Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
		resp.status = now;
		int rc = rpc_stream_send(w->stream, &resp.base);
		if (rc == 0)
			w->last_sent = now;
		else if (rc == MON_ELIMIT) /* not reading: end it rather than let it believe a stale status */
			rpc_stream_finish(w->stream, MON_ELIMIT, "watcher is not reading its stream; watch again");
	}
}

void rpc_health_set(struct rpc_server *server, const char *service, enum rpc_health_status status)
{
	struct rpc_health *h = server->health;
	if (h == NULL || service == NULL)
		return;
	/* Shutdown has set everything NOT_SERVING: no late flip back to SERVING. */
	if (atomic_load(&server->shutting_down))
		return;
	pthread_mutex_lock(&h->lock);
	struct health_entry *e = entry_find(h, service);
	if (e == NULL) {
		if (h->count == h->cap) {
			size_t cap = h->cap ? h->cap * 2 : 16;
			struct health_entry *n = realloc(h->entries, cap * sizeof(*n));
			if (n == NULL) {
				pthread_mutex_unlock(&h->lock);
				log_error("msg=\"out of memory declaring health service\" service=\"%s\"", service);
				return;
			}
			h->entries = n;
			h->cap = cap;
		}
		char *name = strdup(service);
		if (name == NULL) {
			pthread_mutex_unlock(&h->lock);
			return;
		}
		e = &h->entries[h->count++];
		e->name = name;
		e->status = RPC_HEALTH_UNKNOWN;
	}
	if (e->status != status)
		log_debug("msg=\"health status changed\" service=\"%s\" status=%s", service,
		          status == RPC_HEALTH_SERVING       ? "SERVING"
		          : status == RPC_HEALTH_NOT_SERVING ? "NOT_SERVING"
		                                             : "UNKNOWN");
	e->status = status;
	notify_locked(h);
	pthread_mutex_unlock(&h->lock);
}

void rpc_health_set_all(struct rpc_server *server, enum rpc_health_status status)
{
	struct rpc_health *h = server->health;
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	bool changed = false;
	for (size_t i = 0; i < h->count; i++) {
		changed |= h->entries[i].status != status;
		h->entries[i].status = status;
	}
	if (changed)
		log_info("msg=\"health status of every service changed\" status=%s",
		         status == RPC_HEALTH_SERVING       ? "SERVING"
		         : status == RPC_HEALTH_NOT_SERVING ? "NOT_SERVING"
		                                            : "UNKNOWN");
	notify_locked(h);
	pthread_mutex_unlock(&h->lock);
}

static int health_check(struct rpc_ctx *ctx, const Grpc__Health__V1__HealthCheckRequest *req,
                        Grpc__Health__V1__HealthCheckResponse *resp)
{
	struct rpc_health *h = ((struct rpc_server *)rpc_ctx_user(ctx))->health;
	const char *name = req->service ? req->service : "";
	pthread_mutex_lock(&h->lock);
	struct health_entry *e = entry_find(h, name);
	int status = e ? to_wire(e->status) : -1;
	pthread_mutex_unlock(&h->lock);
	if (status < 0)
		return rpc_fail(ctx, MON_ENOTFOUND, "service: unknown service \"%s\"", name);
	resp->status = status;
	return 0;
}

static void watcher_closed(struct rpc_stream *s, void *arg)
{
	struct rpc_server *server = arg;
	struct rpc_health *h = server->health;
	struct health_watcher *found = NULL;
	pthread_mutex_lock(&h->lock);
	for (struct health_watcher **pp = &h->watchers; *pp; pp = &(*pp)->next) {
		if ((*pp)->stream == s) {
			found = *pp;
			*pp = found->next;
			break;
		}
	}
	pthread_mutex_unlock(&h->lock);
	if (found) {
		free(found->name);
		free(found);
		rpc_stream_release(s);
	}
}

static int health_watch(struct rpc_ctx *ctx, const Grpc__Health__V1__HealthCheckRequest *req, struct rpc_stream *stream)
{
	struct rpc_server *server = rpc_ctx_user(ctx);
	struct rpc_health *h = server->health;
	struct health_watcher *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	w->name = strdup(req->service ? req->service : "");
	if (w->name == NULL) {
		free(w);
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	}
	w->stream = stream;
	w->last_sent = -1;
	rpc_stream_retain(stream);
	pthread_mutex_lock(&h->lock);
	w->next = h->watchers;
	h->watchers = w;
	notify_locked(h);
	pthread_mutex_unlock(&h->lock);
	/* If the stream already ended, this runs the callback at once. */
	rpc_stream_on_close(stream, watcher_closed, server);
	return 0;
}

int rpc_health_init(struct rpc_server *server, struct mon_error *err)
{
	struct rpc_health *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	pthread_mutex_init(&h->lock, NULL);
	server->health = h;
	struct grpc_health_v1_health_handlers handlers = {
	        .check = health_check,
	        .watch = health_watch,
	};
	return grpc_health_v1_health_bind(server, &handlers, server, RPC_BIND_INLINE, err);
}

void rpc_health_free(struct rpc_server *server)
{
	struct rpc_health *h = server->health;
	if (h == NULL)
		return;
	while (h->watchers) {
		struct health_watcher *w = h->watchers;
		h->watchers = w->next;
		free(w->name);
		free(w);
	}
	for (size_t i = 0; i < h->count; i++)
		free(h->entries[i].name);
	free(h->entries);
	pthread_mutex_destroy(&h->lock);
	free(h);
	server->health = NULL;
}
