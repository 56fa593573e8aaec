/*
 * The health prober: every monitored service with a health_check_url is
 * probed every check_interval seconds, by exactly one replica at a time, and
 * each result is recorded through health_record_check_tx (source "probe").
 * http:// and https:// URLs are fetched with libcurl; grpc://host:port[/name]
 * URLs are asked with the standard grpc.health.v1.Health/Check. The rules
 * that turn an answer into healthy, degraded or down are in
 * docs/operations.md ("Health probes").
 *
 * Claims live in PostgreSQL (tb_service_health.next_probe_at,
 * probe_claimed_by, probe_lease_until): a replica claims due targets with
 * FOR UPDATE SKIP LOCKED and a lease that covers every attempt; a replica
 * that dies stops renewing, its leases expire and the others take over.
 *
 * Also the work of HealthService.RunHealthCheck, which probes one service
 * now with the same rules.
 */
#ifndef MON_SERVER_HEALTH_PROBER_H
#define MON_SERVER_HEALTH_PROBER_H

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"
#include "health/netpolicy.h"
#include "monitoring/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

#define PROBER_CONCURRENCY_DEFAULT 8
#define PROBER_CONCURRENCY_MAX 256
#define PROBER_CLAIM_INTERVAL_MS_DEFAULT 500
#define PROBER_RUN_CONCURRENCY_DEFAULT 4

struct prober;

struct prober_config {
	struct db_pool *pool;       /* required; must outlive the prober */
	const char *replica_id;     /* the claim owner's name; NULL: "<host>/<pid>/<random>" */
	int concurrency;            /* probes in flight at once (worker threads); 0: the default, 1..256 */
	int claim_interval_ms;      /* how often due targets are claimed; 0: the default */
	const char *proxy;          /* proxy for http(s) probes; NULL: none (proxy environment variables are ignored) */
	int run_concurrency;        /* RunHealthCheck probes at once, on threads of their own; 0: the default, 1..256 */
	const char *allow_networks; /* CIDR list (netpolicy.h); NULL or "": any address not denied */
	const char *deny_networks;  /* CIDR list; NULL: NETPOLICY_DENY_DEFAULT (link-local), "": none */
	bool follow_cross_host_redirects; /* follow an http redirect to another host (still policy-checked) */
};

/*
 * Starts the claim thread, the probe workers and the RunHealthCheck
 * threads. Works while the database is down or not yet migrated (claims
 * simply fail and are retried). The caller owns *out, hands it to
 * RunHealthCheck (prober_run_check) and stops it with prober_stop. Returns
 * MON_EINVAL naming a bad field (a network list names its setting:
 * probe-allow-networks, probe-deny-networks), or MON_EINTERNAL when a
 * thread cannot start.
 */
int prober_start(const struct prober_config *cfg, struct prober **out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Stops claiming, aborts http probes in flight (a grpc probe in flight ends
 * within its timeout), gives the unfinished claims back so another replica
 * probes those targets at once, answers every RunHealthCheck it holds
 * (UNAVAILABLE when not yet probing, an interrupted probe's error
 * otherwise), joins the threads and frees the prober.
 * Accepts NULL. Call it before the pool is destroyed.
 */
void prober_stop(struct prober *p);

/* The network policy p applies, immutable while p runs; NULL when p is NULL. */
const struct netpolicy *prober_policy(const struct prober *p);

/*
 * HealthService.RunHealthCheck with prober p: probes req->service_id now (with its
 * timeout and retry_count, retries bounded by the caller's deadline),
 * records the result with its audit event and fills resp with the check,
 * the service after it and the attempts made. The probe runs on the
 * prober's own run threads, never on the caller's worker: the handler
 * returns RPC_REPLY_LATER and a run thread answers (rpc_reply_finish).
 * A target the network policy refuses is recorded as a check with status
 * unknown and a message naming the policy, as a scheduled probe would be.
 * Errors: INVALID_ARGUMENT (service_id empty), NOT_FOUND,
 * FAILED_PRECONDITION (no health_check_url), DEADLINE_EXCEEDED (the
 * caller's deadline is shorter than the service's timeout),
 * RESOURCE_EXHAUSTED naming probe-run-concurrency (with a
 * grpc-retry-pushback-ms trailer) when that many checks are already
 * running, UNAVAILABLE (database down, or p is NULL: no prober started in
 * this process).
 */
int prober_run_check(struct prober *p, struct rpc_ctx *ctx, const Monitoring__V1__RunHealthCheckRequest *req,
                     Monitoring__V1__RunHealthCheckResponse *resp);

/*
 * Splits grpc://host:port[/service] into target (host:port) and service
 * (the path after the first '/'), copies the caller frees; a query or
 * fragment belongs to neither. Returns 0, MON_EINVAL (no host, or
 * credentials in the authority) or MON_ENOMEM. The probe of a grpc:// URL
 * dials exactly these, so health_check_url must accept only what splits.
 */
int prober_grpc_url_split(const char *url, char **target_out, char **service_out) MON_MUST_CHECK;

#endif
