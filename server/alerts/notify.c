/* The notification worker (alerts/notify.h): not built yet. */
#include "alerts/notify.h"

#include <stdlib.h>

struct notifier {
	int unused;
};

int notifier_start(const struct notify_config *cfg, struct notifier **out, struct mon_error *err)
{
	(void)cfg;
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return 0;
}

void notifier_stop(struct notifier *n)
{
	free(n);
}
