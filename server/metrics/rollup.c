/* Metric maintenance: not built yet. */
#include "metrics/rollup.h"

#include <stdlib.h>

struct metrics_maintenance {
	int unused;
};

int metrics_maintenance_run(const struct metrics_maintenance_config *cfg, struct metrics_maintenance_stats *stats,
                            struct mon_error *err)
{
	(void)cfg;
	(void)stats;
	return mon_error_set(err, MON_EUNIMPL, "metric maintenance is not built yet");
}

int metrics_maintenance_start(const struct metrics_maintenance_config *cfg, struct metrics_maintenance **out,
                              struct mon_error *err)
{
	(void)cfg;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return 0;
}

void metrics_maintenance_stop(struct metrics_maintenance *job)
{
	free(job);
}
