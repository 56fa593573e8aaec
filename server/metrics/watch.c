/* WatchMetrics: not built yet. */
#include "metrics/watch.h"

#include <stdlib.h>

struct metrics_watch_hub {
	int unused;
};

int metrics_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct metrics_watch_hub **out,
                             struct mon_error *err)
{
	(void)pool;
	(void)bus;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return 0;
}

void metrics_watch_hub_destroy(struct metrics_watch_hub *hub)
{
	free(hub);
}

int metrics_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchMetricsRequest *req, struct rpc_stream *stream)
{
	(void)ctx;
	(void)req;
	(void)stream;
	return MON_EUNIMPL;
}
