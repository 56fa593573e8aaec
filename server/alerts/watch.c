/* WatchAlerts (alerts/watch.h): not built yet. */
#include "alerts/watch.h"

#include <stdlib.h>

struct alerts_watch_hub {
	int unused;
};

int alerts_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct alerts_watch_hub **out,
                            struct mon_error *err)
{
	(void)pool;
	(void)bus;
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return 0;
}

void alerts_watch_hub_destroy(struct alerts_watch_hub *hub)
{
	free(hub);
}

int alerts_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req, struct rpc_stream *stream)
{
	(void)req;
	(void)stream;
	return rpc_fail(ctx, MON_EUNIMPL, "not implemented yet: WatchAlerts");
}
