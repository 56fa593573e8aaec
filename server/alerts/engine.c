/* The alert evaluator (alerts/engine.h): not built yet. */
#include "alerts/engine.h"

#include <stdlib.h>

struct alerts_engine {
	int unused;
};

int alerts_engine_start(const struct alerts_engine_config *cfg, struct alerts_engine **out, struct mon_error *err)
{
	(void)cfg;
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return 0;
}

void alerts_engine_stop(struct alerts_engine *e)
{
	free(e);
}

void alerts_engine_on_metrics(const char *const *metric_names, size_t n)
{
	(void)metric_names;
	(void)n;
}

int alerts_preview_rule(struct rpc_ctx *ctx, const Monitoring__V1__PreviewAlertRuleRequest *req,
                        Monitoring__V1__PreviewAlertRuleResponse *resp)
{
	(void)req;
	(void)resp;
	return rpc_fail(ctx, MON_EUNIMPL, "not implemented yet: PreviewAlertRule");
}
