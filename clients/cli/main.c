/*
 * monctl: the operator's command line for monitord, built on libmonitoring.
 * It calls any unary RPC and follows any server-streaming RPC generically,
 * finding methods in the generated service index (mon_all_services) and
 * transcoding JSON to and from protobuf with their descriptors (json.c).
 *
 * Exit codes: 0 success, 1 the RPC failed (or the health check did not say
 * SERVING), 2 usage errors (bad flags, unknown method, bad JSON), 130 when a
 * watch was interrupted.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <monitoring/alerts_watcher.h>
#include <monitoring/client.h>
#include <monitoring/metrics_writer.h>

#include "grpc/health/v1/health.pb-c.h"
#include "json.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "mon_services.h"
#include "rpc/idem.h"
#include "rpc/method.h"

#define EXIT_RPC 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define WATCH_POLL_MS 200
#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define WATCH_METRICS_PATH "/monitoring.v1.MetricsService/WatchMetrics"
#define ALERTS_SERVICE "monitoring.v1.AlertsService"
/* Longest JSON line monctl metrics send reads (a point is far smaller). */
#define MAX_LINE_BYTES ((size_t)1 << 20)
/* How long metrics send waits at the end for the last points, by default. */
#define SEND_CLOSE_TIMEOUT_MS 120000
#define FOLLOW_RETRY_MAX_MS 10000
/* monitord's default listen address. */
#define DEFAULT_TARGET "127.0.0.1:50051"

struct cli {
	mon_client_options client_opts;
	int64_t timeout_ms; /* 0: the library's default (unary) or none (streams) */
	const char *request_id;
	const char *idempotency_key; /* --idempotency-key: set in the request's key field */
	unsigned print_flags;
};

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	g_interrupted = 1;
}

static void usage(FILE *out)
{
	fputs("usage: monctl [options] <command> [arguments]\n"
	      "\n"
	      "Talks to monitord over gRPC. Requests and replies are JSON in the proto3\n"
	      "JSON mapping (field names in lowerCamelCase or as in the .proto, enums by\n"
	      "name, 64-bit integers as strings, bytes in base64, Timestamp as RFC 3339,\n"
	      "Duration as \"1.5s\", FieldMask as \"a.b,c\", Struct as any JSON object).\n"
	      "\n"
	      "commands:\n"
	      "  list                            list the services and methods monctl knows\n"
	      "  call <Service>/<Method> [JSON]  call a unary RPC and print the reply as JSON;\n"
	      "                                  JSON is the request ({} when omitted, - reads\n"
	      "                                  it from standard input)\n"
	      "  watch <Service>/<Method> [JSON] follow a server-streaming RPC: one JSON object\n"
	      "                                  per line until the stream ends or Ctrl-C\n"
	      "  health [SERVICE]                grpc.health.v1.Health/Check: prints the\n"
	      "                                  status; exits 0 only when SERVING\n"
	      "  metrics send [FILE|-] [--batch-points N] [--max-delay MS] [--atomic]\n"
	      "                                  record metric points read as JSON lines (one\n"
	      "                                  MetricPoint per line) from FILE or standard\n"
	      "                                  input, in batches through RecordMetrics,\n"
	      "                                  retrying while the server is unavailable;\n"
	      "                                  prints a summary; exits 1 if any point was\n"
	      "                                  not recorded\n"
	      "  metrics follow [JSON]           follow WatchMetrics (JSON is the\n"
	      "                                  WatchMetricsRequest): one JSON object per\n"
	      "                                  line; reconnects after UNAVAILABLE, resuming\n"
	      "                                  after the last sequence received\n",
	      out);
	fputs("  alerts rules list [JSON]        ListAlertRules (JSON: ListAlertRulesRequest)\n"
	      "  alerts rules get RULE_ID        GetAlertRule\n"
	      "  alerts rules create JSON|- [--status ENABLED|DISABLED|TESTING]\n"
	      "                                  CreateAlertRule; JSON is the AlertRule\n"
	      "  alerts rules delete RULE_ID [--force]\n"
	      "                                  DeleteAlertRule (--force: also with\n"
	      "                                  unresolved alerts)\n"
	      "  alerts list [JSON]              ListAlerts (JSON: ListAlertsRequest)\n"
	      "  alerts ack ALERT_ID [--note TEXT]\n"
	      "                                  AcknowledgeAlert\n"
	      "  alerts resolve ALERT_ID [--note TEXT]\n"
	      "                                  ResolveAlert\n"
	      "  alerts follow [JSON] [--cursor N]\n"
	      "                                  follow WatchAlerts (JSON is the\n"
	      "                                  WatchAlertsRequest; --cursor resumes after\n"
	      "                                  sequence N): one WatchAlertsResponse per\n"
	      "                                  line; reconnects by itself and resumes after\n"
	      "                                  the last sequence, so no change is missed or\n"
	      "                                  repeated; prints the cursor on exit\n"
	      "\n",
	      out);
	fputs("  Service is the full name (monitoring.v1.AlertsService) or the short one\n"
	      "  (AlertsService); a leading '/' is accepted, as in a gRPC path.\n"
	      "\n"
	      "options (flags override the environment):\n"
	      "  --target HOST:PORT   server address, or unix:/path     [MONITORD_TARGET]\n"
	      "                       (default 127.0.0.1:50051)\n"
	      "  --api-key KEY        sent as \"authorization: Bearer KEY\" [MONITORD_API_KEY]\n"
	      "  --tls-ca FILE        use TLS, trusting this CA (PEM)   [MONITORD_TLS_CA]\n"
	      "  --tls-cert FILE      client certificate for mutual TLS [MONITORD_TLS_CERT]\n"
	      "  --tls-key FILE       its private key                   [MONITORD_TLS_KEY]\n"
	      "  --authority NAME     :authority and TLS server name, when connecting by\n"
	      "                       address to a certificate issued for NAME\n"
	      "  --timeout MS         deadline in milliseconds: per call for call and health\n"
	      "                       (default 30000), for the whole stream for watch\n"
	      "                       (default none)\n"
	      "  --request-id ID      sent as x-request-id, to find the call in server logs\n"
	      "  --idempotency-key K  the idempotency key of a state-changing call (its\n"
	      "                       request_id field): run the command again with the\n"
	      "                       same K to retry it safely; without it the library\n"
	      "                       sets a fresh key and keeps it on its own retries\n"
	      "  --emit-defaults      also print fields that hold their default value\n"
	      "  -h, --help           this text\n"
	      "\n"
	      "exit status: 0 success; 1 the RPC failed (or health is not SERVING);\n"
	      "2 usage error; 130 watch interrupted. Errors are printed on stderr as\n"
	      "\"monctl: STATUS_NAME: message\".\n"
	      "\n"
	      "examples:\n"
	      "  monctl list\n"
	      "  monctl --target monitord.internal:50051 --tls-ca ca.pem health\n"
	      "  monctl call AlertsService/ListAlerts '{\"pageSize\": 10}'\n"
	      "  echo '{\"service\": {\"name\": \"api\"}}' | monctl call HealthService/CreateService -\n"
	      "  monctl watch AlertsService/WatchAlerts '{}'\n"
	      "  monctl metrics send points.jsonl\n"
	      "  monctl metrics follow '{\"filter\": {\"metricNames\": [\"http.latency\"]}}'\n"
	      "  monctl alerts rules create '{\"name\": \"slow api\", \"metricName\": \"http.latency\",\n"
	      "      \"statistic\": \"METRIC_STATISTIC_P95\", \"comparisonOperator\": \"COMPARISON_OPERATOR_GT\",\n"
	      "      \"threshold\": 500}'\n"
	      "  monctl alerts ack alt_123 --note 'looking into it'\n"
	      "  monctl alerts follow '{\"severities\": [\"SEVERITY_LEVEL_CRITICAL\"]}'\n"
	      "  monctl health\n",
	      out);
}

/* Prints "monctl: STATUS: message" and returns code. */
static int report(int code, const char *status_name, const char *message)
{
	fprintf(stderr, "monctl: %s: %s\n", status_name, message);
	return code;
}

static int usage_error(const char *message)
{
	fprintf(stderr, "monctl: %s\n(see monctl --help)\n", message);
	return EXIT_USAGE;
}

static int rpc_error(const mon_status *st)
{
	return report(EXIT_RPC, mon_status_code_name(st->code), st->message[0] != '\0' ? st->message : "(no message)");
}

static const char *kind_name(enum rpc_kind k)
{
	switch (k) {
	case RPC_UNARY: return "unary";
	case RPC_SERVER_STREAMING: return "server streaming";
	case RPC_CLIENT_STREAMING: return "client streaming";
	case RPC_BIDI_STREAMING: return "bidi streaming";
	}
	return "?";
}

static int cmd_list(void)
{
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *svc = mon_all_services[i];
		printf("%s\n", svc->name);
		for (size_t m = 0; m < svc->method_count; m++) {
			const struct rpc_method *md = &svc->methods[m];
			printf("  %-32s %-17s %s -> %s\n", md->name, kind_name(md->kind), md->input->name,
			       md->output->name);
			if (md->summary != NULL && md->summary[0] != '\0')
				printf("  %-32s %s\n", "", md->summary);
		}
	}
	return 0;
}

/* The short name of a service: what follows the last '.'. */
static const char *short_name(const char *full)
{
	const char *dot = strrchr(full, '.');
	return dot != NULL ? dot + 1 : full;
}

/*
 * Finds "Service/Method" (full or short service name, optional leading
 * '/'). Returns NULL after printing why.
 */
static const struct rpc_method *method_find(const char *spec)
{
	char svc_name[256];
	if (spec[0] == '/')
		spec++;
	const char *slash = strchr(spec, '/');
	if (slash == NULL || slash == spec || slash[1] == '\0' || (size_t)(slash - spec) >= sizeof(svc_name)) {
		fprintf(stderr, "monctl: \"%s\": expected <Service>/<Method>\n", spec);
		return NULL;
	}
	memcpy(svc_name, spec, (size_t)(slash - spec));
	svc_name[slash - spec] = '\0';
	const char *method = slash + 1;

	const struct rpc_service_desc *found = NULL;
	int matches = 0;
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *svc = mon_all_services[i];
		if (strcmp(svc->name, svc_name) == 0) {
			found = svc;
			matches = 1;
			break;
		}
		if (strcmp(short_name(svc->name), svc_name) == 0) {
			found = svc;
			matches++;
		}
	}
	if (matches == 0) {
		fprintf(stderr, "monctl: unknown service \"%s\" (monctl list shows them)\n", svc_name);
		return NULL;
	}
	if (matches > 1) {
		fprintf(stderr, "monctl: service name \"%s\" is ambiguous: give the full name\n", svc_name);
		return NULL;
	}
	for (size_t m = 0; m < found->method_count; m++) {
		if (strcmp(found->methods[m].name, method) == 0)
			return &found->methods[m];
	}
	fprintf(stderr, "monctl: service %s has no method \"%s\" (monctl list shows them)\n", found->name, method);
	return NULL;
}

/*
 * Builds the request from the JSON argument ("-" reads standard input; NULL
 * means {}). Returns 0 and *out (caller frees with mon_message_free) or an
 * exit code after printing why.
 */
static int request_build(const char *arg, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
	json_error_t jerr;
	json_t *j;
	const size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY;

	*out = NULL;
	if (arg == NULL)
		j = json_object();
	else if (strcmp(arg, "-") == 0)
		j = json_loadf(stdin, flags, &jerr);
	else
		j = json_loads(arg, flags, &jerr);
	if (j == NULL) {
		char msg[300];
		snprintf(msg, sizeof(msg), "request: invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
		         jerr.text);
		return report(EXIT_USAGE, "INVALID_ARGUMENT", msg);
	}
	struct mon_error err = {.code = MON_OK};
	int rc = json_to_message(j, desc, out, &err);
	json_decref(j);
	if (rc != MON_OK) {
		char msg[600];
		snprintf(msg, sizeof(msg), "request (%s): %s", desc->name, err.msg);
		return report(EXIT_USAGE, rc == MON_ENOMEM ? "RESOURCE_EXHAUSTED" : "INVALID_ARGUMENT", msg);
	}
	return 0;
}

/* Prints msg as JSON on stdout: indented, or on one line. Returns 0 or an exit code. */
static int print_message(const ProtobufCMessage *msg, unsigned print_flags, int one_line)
{
	json_t *j = NULL;
	struct mon_error err = {.code = MON_OK};
	if (json_from_message(msg, print_flags, &j, &err) != MON_OK)
		return report(EXIT_RPC, "INTERNAL", err.msg);
	size_t flags = JSON_ENCODE_ANY | JSON_DUMP_NUMBERS | (one_line ? JSON_COMPACT : JSON_INDENT(2));
	int rc = json_dumpf(j, stdout, flags);
	json_decref(j);
	if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
		return EXIT_RPC;
	return 0;
}

static int client_open(const struct cli *cli, mon_client **out)
{
	mon_status st;
	mon_client_options opts = cli->client_opts;
	if (opts.target == NULL || opts.target[0] == '\0')
		opts.target = DEFAULT_TARGET;
	if (mon_client_open(&opts, out, &st) != 0)
		return report(EXIT_USAGE, mon_status_code_name(st.code), st.message);
	return 0;
}

/*
 * A unary call of md with req; with --idempotency-key, on a shallow copy of
 * req whose key field holds it (a usage error when md changes nothing, so
 * has no key field). Returns 0, or the exit status with the error printed.
 */
static int unary_call(const struct cli *cli, mon_client *client, const struct rpc_method *md,
                      const ProtobufCMessage *req, ProtobufCMessage **resp)
{
	ProtobufCMessage *keyed = NULL;
	if (cli->idempotency_key != NULL) {
		const ProtobufCFieldDescriptor *f = rpc_idem_key_field(md->input);
		if (f == NULL) {
			fprintf(stderr, "monctl: --idempotency-key: %s changes nothing and takes no key\n", md->path);
			return EXIT_USAGE;
		}
		keyed = malloc(md->input->sizeof_message);
		if (keyed == NULL) {
			fprintf(stderr, "monctl: out of memory\n");
			return EXIT_FAILURE;
		}
		rpc_idem_copy_with_key(keyed, req, f, cli->idempotency_key);
		req = keyed;
	}
	mon_call_options co = {.timeout_ms = cli->timeout_ms, .request_id = cli->request_id};
	mon_status st;
	int rc = 0;
	if (mon_call_unary(client, md->path, req, md->output, resp, &co, &st) != 0)
		rc = rpc_error(&st);
	free(keyed);
	return rc;
}

static int cmd_call(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	ProtobufCMessage *req = NULL, *resp = NULL;

	if (argc < 1 || argc > 2) {
		rc = usage_error("usage: monctl call <Service>/<Method> [JSON|-]");
		goto out;
	}
	const struct rpc_method *md = method_find(argv[0]);
	if (md == NULL) {
		rc = EXIT_USAGE;
		goto out;
	}
	if (md->kind != RPC_UNARY) {
		fprintf(stderr, "monctl: %s is %s: %s\n", md->path, kind_name(md->kind),
		        md->kind == RPC_SERVER_STREAMING ? "use monctl watch" : "monctl cannot stream requests");
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = request_build(argc > 1 ? argv[1] : NULL, md->input, &req)) != 0)
		goto out;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	if ((rc = unary_call(cli, client, md, req, &resp)) != 0)
		goto out;
	rc = print_message(resp, cli->print_flags, 0);
out:
	mon_message_free(resp);
	mon_message_free(req);
	mon_client_close(client);
	return rc;
}

static int cmd_watch(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	mon_stream *stream = NULL;
	ProtobufCMessage *req = NULL;

	if (argc < 1 || argc > 2) {
		rc = usage_error("usage: monctl watch <Service>/<Method> [JSON|-]");
		goto out;
	}
	const struct rpc_method *md = method_find(argv[0]);
	if (md == NULL) {
		rc = EXIT_USAGE;
		goto out;
	}
	if (md->kind != RPC_SERVER_STREAMING) {
		fprintf(stderr, "monctl: %s is %s: %s\n", md->path, kind_name(md->kind),
		        md->kind == RPC_UNARY ? "use monctl call" : "monctl cannot stream requests");
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = request_build(argc > 1 ? argv[1] : NULL, md->input, &req)) != 0)
		goto out;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	mon_call_options co = {.timeout_ms = cli->timeout_ms, .request_id = cli->request_id};
	mon_status st;
	if (mon_stream_open(client, md->path, req, md->output, &co, &stream, &st) != 0) {
		rc = rpc_error(&st);
		goto out;
	}
	for (;;) {
		if (g_interrupted) {
			rc = EXIT_INTERRUPTED;
			break;
		}
		ProtobufCMessage *msg = NULL;
		int n = mon_stream_next(stream, &msg, WATCH_POLL_MS, &st);
		if (n == MON_STREAM_TIMEOUT)
			continue;
		if (n == 0) {
			rc = 0;
			break;
		}
		if (n < 0) {
			rc = rpc_error(&st);
			break;
		}
		int prc = print_message(msg, cli->print_flags, 1);
		mon_message_free(msg);
		if (prc != 0) {
			/* stdout is gone (a closed pipe): stop quietly. */
			rc = errno == EPIPE ? 0 : prc;
			break;
		}
	}
out:
	mon_stream_close(stream);
	mon_message_free(req);
	mon_client_close(client);
	return rc;
}

static int cmd_health(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	ProtobufCMessage *resp = NULL;

	if (argc > 1) {
		rc = usage_error("usage: monctl health [SERVICE]");
		goto out;
	}
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = argc == 1 ? argv[0] : "";
	mon_call_options co = {.timeout_ms = cli->timeout_ms, .request_id = cli->request_id};
	mon_status st;
	if (mon_call_unary(client, HEALTH_CHECK_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                   &resp, &co, &st) != 0) {
		rc = rpc_error(&st);
		goto out;
	}
	const Grpc__Health__V1__HealthCheckResponse *r = (const Grpc__Health__V1__HealthCheckResponse *)resp;
	const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
	        &grpc__health__v1__health_check_response__serving_status__descriptor, (int)r->status);
	printf("%s\n", ev != NULL ? ev->name : "UNKNOWN");
	rc = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : EXIT_RPC;
out:
	mon_message_free(resp);
	mon_client_close(client);
	return rc;
}

/* Strict decimal milliseconds, > 0. */
static int parse_timeout(const char *s, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno == ERANGE || v <= 0)
		return -1;
	*out = v;
	return 0;
}

/* --- metrics send / follow ------------------------------------------------ */

static void signals_catch(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* RFC 3339 of a Timestamp (UTC, seconds), or "-" when absent. */
static void time_format(const Google__Protobuf__Timestamp *ts, char *buf, size_t size)
{
	struct tm tm;
	time_t t = ts != NULL ? (time_t)ts->seconds : 0;
	if (ts == NULL || gmtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "-");
}

/* Prints the points the writer could not record, one line per error (at most 20 per failure). */
static void on_send_error(void *data, const mon_metrics_writer_failure *f)
{
	(void)data;
	const size_t max_lines = 20;
	char when[40];
	size_t lines = 0;
	for (size_t i = 0; i < f->errors_n && lines < max_lines; i++, lines++) {
		const Monitoring__V1__PointError *e = f->errors[i];
		const Monitoring__V1__MetricPoint *p =
		        e->index >= 0 && (size_t)e->index < f->points_n ? f->points[e->index] : NULL;
		time_format(p != NULL ? p->time : NULL, when, sizeof(when));
		fprintf(stderr, "monctl: %s: point (metric \"%s\", endpoint \"%s\", time %s): %s: %s\n",
		        mon_status_code_name(f->code), p != NULL ? p->metric_name : "?", p != NULL ? p->endpoint : "?",
		        when, e->field, e->message);
	}
	if (f->errors_n == 0)
		fprintf(stderr, "monctl: %s: %zu points not recorded: %s\n", mon_status_code_name(f->code), f->points_n,
		        f->message);
	else if (f->errors_n > max_lines)
		fprintf(stderr, "monctl: ... and %zu more errors\n", f->errors_n - max_lines);
}

/* Whether line holds only white space. */
static int is_blank(const char *line)
{
	for (; *line != '\0'; line++)
		if (*line != ' ' && *line != '\t' && *line != '\r' && *line != '\n')
			return 0;
	return 1;
}

static int cmd_metrics_send(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	mon_metrics_writer *w = NULL;
	FILE *in = stdin;
	const char *path = NULL;
	char *line = NULL;
	size_t line_cap = 0;
	unsigned long line_no = 0, read_n = 0, bad_n = 0;
	mon_metrics_writer_options o = {.on_error = on_send_error};
	mon_status st;

	for (int i = 0; i < argc; i++) {
		int64_t v = 0;
		if (strcmp(argv[i], "--batch-points") == 0 && i + 1 < argc) {
			if (parse_timeout(argv[++i], &v) != 0 || v > MON_METRICS_WRITER_MAX_BATCH_POINTS)
				return usage_error("--batch-points: expected 1 to 5000");
			o.max_batch_points = (int)v;
		} else if (strcmp(argv[i], "--max-delay") == 0 && i + 1 < argc) {
			if (parse_timeout(argv[++i], &v) != 0)
				return usage_error("--max-delay: expected a positive number of milliseconds");
			o.max_delay_ms = v;
		} else if (strcmp(argv[i], "--atomic") == 0) {
			o.is_atomic = 1;
		} else if (path == NULL && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)) {
			path = argv[i];
		} else {
			return usage_error(
			        "usage: monctl metrics send [FILE|-] [--batch-points N] [--max-delay MS] [--atomic]");
		}
	}
	if (path != NULL && strcmp(path, "-") != 0) {
		in = fopen(path, "r");
		if (in == NULL) {
			char msg[600];
			snprintf(msg, sizeof(msg), "could not open \"%s\": %s", path, strerror(errno));
			return report(EXIT_USAGE, "INVALID_ARGUMENT", msg);
		}
	}
	o.call_timeout_ms = cli->timeout_ms;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	if (mon_metrics_writer_create(client, &o, &w, &st) != 0) {
		rc = report(EXIT_USAGE, mon_status_code_name(st.code), st.message);
		goto out;
	}
	signals_catch();
	for (;;) {
		errno = 0;
		ssize_t n = getline(&line, &line_cap, in);
		if (n < 0)
			break;
		line_no++;
		if ((size_t)n > MAX_LINE_BYTES) {
			fprintf(stderr, "monctl: INVALID_ARGUMENT: line %lu: longer than 1 MiB\n", line_no);
			bad_n++;
			continue;
		}
		if (is_blank(line))
			continue;
		json_error_t jerr;
		json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
		ProtobufCMessage *point = NULL;
		struct mon_error err = {.code = MON_OK};
		if (j == NULL) {
			fprintf(stderr, "monctl: INVALID_ARGUMENT: line %lu: invalid JSON at column %d: %s\n", line_no,
			        jerr.column, jerr.text);
			bad_n++;
			continue;
		}
		int jrc = json_to_message(j, &monitoring__v1__metric_point__descriptor, &point, &err);
		json_decref(j);
		if (jrc != MON_OK) {
			fprintf(stderr, "monctl: INVALID_ARGUMENT: line %lu: %s\n", line_no, err.msg);
			bad_n++;
			continue;
		}
		int arc = mon_metrics_writer_add(w, (const Monitoring__V1__MetricPoint *)point, &st);
		mon_message_free(point);
		if (arc != 0) {
			fprintf(stderr, "monctl: %s: line %lu: %s\n", mon_status_code_name(st.code), line_no,
			        st.message);
			bad_n++;
			continue;
		}
		read_n++;
		if (g_interrupted)
			break;
	}
	if (ferror(in) && !g_interrupted) {
		fprintf(stderr, "monctl: INVALID_ARGUMENT: reading %s: %s\n", path != NULL ? path : "standard input",
		        strerror(errno));
		bad_n++;
	}
	/* Interrupted: a short grace for what is buffered, then give up. */
	(void)mon_metrics_writer_flush(w, g_interrupted ? 5000 : SEND_CLOSE_TIMEOUT_MS, NULL);
	mon_metrics_writer_stats s;
	mon_metrics_writer_stats_get(w, &s);
	(void)mon_metrics_writer_close(w, 0, NULL); /* anything left is reported as CANCELLED */
	w = NULL;
	uint64_t not_recorded = s.points_added - s.points_sent;
	printf("{\"points\": %lu, \"inserted\": %llu, \"updated\": %llu, \"duplicate\": %llu, "
	       "\"notRecorded\": %llu, \"retries\": %llu, \"invalidLines\": %lu}\n",
	       read_n, (unsigned long long)s.points_inserted, (unsigned long long)s.points_updated,
	       (unsigned long long)s.points_duplicate, (unsigned long long)not_recorded, (unsigned long long)s.retries,
	       bad_n);
	fflush(stdout);
	if (g_interrupted)
		rc = EXIT_INTERRUPTED;
	else
		rc = not_recorded > 0 || bad_n > 0 ? EXIT_RPC : 0;
out:
	mon_metrics_writer_close(w, 0, NULL);
	mon_client_close(client);
	free(line);
	if (in != NULL && in != stdin)
		fclose(in);
	return rc;
}

static void sleep_interruptible_ms(int64_t ms)
{
	while (ms > 0 && !g_interrupted) {
		int64_t step = ms < WATCH_POLL_MS ? ms : WATCH_POLL_MS;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000};
		nanosleep(&ts, NULL);
		ms -= step;
	}
}

/*
 * WatchMetrics, printed as monctl watch does, but a stream that fails with
 * UNAVAILABLE (a restarted server, a broken connection) is opened again
 * with resume_after_sequence set to the last batch or gap received, so the
 * server replays what was missed or reports it as a gap.
 */
static int cmd_metrics_follow(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	mon_stream *stream = NULL;
	ProtobufCMessage *req = NULL;
	int64_t backoff_ms = WATCH_POLL_MS;

	if (argc > 1)
		return usage_error("usage: monctl metrics follow [JSON|-]");
	if ((rc = request_build(argc > 0 ? argv[0] : NULL, &monitoring__v1__watch_metrics_request__descriptor, &req)) !=
	    0)
		goto out;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	signals_catch();
	Monitoring__V1__WatchMetricsRequest *wreq = (Monitoring__V1__WatchMetricsRequest *)req;
	mon_call_options co = {.timeout_ms = cli->timeout_ms, .request_id = cli->request_id};
	for (;;) {
		mon_status st;
		if (g_interrupted) {
			rc = EXIT_INTERRUPTED;
			break;
		}
		if (stream == NULL) {
			if (mon_stream_open(client, WATCH_METRICS_PATH, req,
			                    &monitoring__v1__watch_metrics_response__descriptor, &co, &stream,
			                    &st) != 0) {
				if (st.code != 14 /* UNAVAILABLE */) {
					rc = rpc_error(&st);
					break;
				}
				fprintf(stderr, "monctl: UNAVAILABLE: %s (retrying in %lld ms)\n", st.message,
				        (long long)backoff_ms);
				sleep_interruptible_ms(backoff_ms);
				backoff_ms =
				        backoff_ms * 2 < FOLLOW_RETRY_MAX_MS ? backoff_ms * 2 : FOLLOW_RETRY_MAX_MS;
				continue;
			}
		}
		ProtobufCMessage *msg = NULL;
		int n = mon_stream_next(stream, &msg, WATCH_POLL_MS, &st);
		if (n == MON_STREAM_TIMEOUT)
			continue;
		if (n == 0) {
			rc = 0;
			break;
		}
		if (n < 0) {
			mon_stream_close(stream);
			stream = NULL;
			if (st.code != 14 /* UNAVAILABLE */) {
				rc = rpc_error(&st);
				break;
			}
			fprintf(stderr, "monctl: UNAVAILABLE: %s (resuming after sequence %lld)\n", st.message,
			        (long long)wreq->resume_after_sequence);
			sleep_interruptible_ms(backoff_ms);
			backoff_ms = backoff_ms * 2 < FOLLOW_RETRY_MAX_MS ? backoff_ms * 2 : FOLLOW_RETRY_MAX_MS;
			continue;
		}
		backoff_ms = WATCH_POLL_MS;
		const Monitoring__V1__WatchMetricsResponse *ev = (const Monitoring__V1__WatchMetricsResponse *)msg;
		if ((ev->event_case == MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_BATCH ||
		     ev->event_case == MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_GAP) &&
		    ev->sequence > wreq->resume_after_sequence)
			wreq->resume_after_sequence = ev->sequence;
		int prc = print_message(msg, cli->print_flags, 1);
		mon_message_free(msg);
		if (prc != 0) {
			rc = errno == EPIPE ? 0 : prc;
			break;
		}
	}
out:
	mon_stream_close(stream);
	mon_message_free(req);
	mon_client_close(client);
	return rc;
}

static int cmd_metrics(const struct cli *cli, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "send") == 0)
		return cmd_metrics_send(cli, argc - 1, argv + 1);
	if (argc >= 1 && strcmp(argv[0], "follow") == 0)
		return cmd_metrics_follow(cli, argc - 1, argv + 1);
	return usage_error("usage: monctl metrics send [FILE|-] [options] | monctl metrics follow [JSON|-]");
}

/* --- alerts ------------------------------------------------------------------ */

/*
 * Calls AlertsService/method with req and prints the reply indented.
 * Returns 0 or an exit code after printing why.
 */
static int alerts_call(const struct cli *cli, const char *method, const ProtobufCMessage *req)
{
	int rc = 0;
	mon_client *client = NULL;
	ProtobufCMessage *resp = NULL;
	char spec[128];

	snprintf(spec, sizeof(spec), "%s/%s", ALERTS_SERVICE, method);
	const struct rpc_method *md = method_find(spec);
	if (md == NULL)
		return EXIT_USAGE;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	if ((rc = unary_call(cli, client, md, req, &resp)) != 0)
		goto out;
	rc = print_message(resp, cli->print_flags, 0);
out:
	mon_message_free(resp);
	mon_client_close(client);
	return rc;
}

/* Calls AlertsService/method with the request built from the optional JSON argument. */
static int alerts_call_json(const struct cli *cli, const char *method, const ProtobufCMessageDescriptor *desc, int argc,
                            char **argv, const char *usage_line)
{
	ProtobufCMessage *req = NULL;
	if (argc > 1)
		return usage_error(usage_line);
	int rc = request_build(argc > 0 ? argv[0] : NULL, desc, &req);
	if (rc == 0)
		rc = alerts_call(cli, method, req);
	mon_message_free(req);
	return rc;
}

/* Parses "TESTING" or "ALERT_RULE_STATUS_TESTING". Returns -1 when unknown. */
static int rule_status_parse(const char *s, int *out)
{
	char full[80];
	snprintf(full, sizeof(full), "%s%s", strncmp(s, "ALERT_RULE_STATUS_", 18) == 0 ? "" : "ALERT_RULE_STATUS_", s);
	const ProtobufCEnumValue *v =
	        protobuf_c_enum_descriptor_get_value_by_name(&monitoring__v1__alert_rule_status__descriptor, full);
	if (v == NULL || v->value == 0)
		return -1;
	*out = v->value;
	return 0;
}

static int cmd_alerts_rules(const struct cli *cli, int argc, char **argv)
{
	const char *sub = argc > 0 ? argv[0] : "";
	argc--;
	argv++;
	if (strcmp(sub, "list") == 0)
		return alerts_call_json(cli, "ListAlertRules", &monitoring__v1__list_alert_rules_request__descriptor,
		                        argc, argv, "usage: monctl alerts rules list [JSON|-]");
	if (strcmp(sub, "get") == 0) {
		if (argc != 1)
			return usage_error("usage: monctl alerts rules get RULE_ID");
		Monitoring__V1__GetAlertRuleRequest req = MONITORING__V1__GET_ALERT_RULE_REQUEST__INIT;
		req.rule_id = argv[0];
		return alerts_call(cli, "GetAlertRule", &req.base);
	}
	if (strcmp(sub, "delete") == 0) {
		Monitoring__V1__DeleteAlertRuleRequest req = MONITORING__V1__DELETE_ALERT_RULE_REQUEST__INIT;
		for (int i = 0; i < argc; i++) {
			if (strcmp(argv[i], "--force") == 0)
				req.force = 1;
			else if (argv[i][0] != '-' && req.rule_id[0] == '\0')
				req.rule_id = argv[i];
			else
				req.rule_id = "";
		}
		if (req.rule_id[0] == '\0')
			return usage_error("usage: monctl alerts rules delete RULE_ID [--force]");
		return alerts_call(cli, "DeleteAlertRule", &req.base);
	}
	if (strcmp(sub, "create") == 0) {
		const char *json = NULL;
		int status = 0;
		for (int i = 0; i < argc; i++) {
			if (strcmp(argv[i], "--status") == 0 && i + 1 < argc) {
				if (rule_status_parse(argv[++i], &status) != 0)
					return usage_error("--status: expected ENABLED, DISABLED or TESTING");
			} else if (json == NULL && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)) {
				json = argv[i];
			} else {
				json = NULL;
				break;
			}
		}
		if (json == NULL)
			return usage_error(
			        "usage: monctl alerts rules create JSON|- [--status ENABLED|DISABLED|TESTING]");
		ProtobufCMessage *rule = NULL;
		int rc = request_build(json, &monitoring__v1__alert_rule__descriptor, &rule);
		if (rc != 0)
			return rc;
		Monitoring__V1__CreateAlertRuleRequest req = MONITORING__V1__CREATE_ALERT_RULE_REQUEST__INIT;
		req.rule = (Monitoring__V1__AlertRule *)rule;
		req.initial_status = (Monitoring__V1__AlertRuleStatus)status;
		rc = alerts_call(cli, "CreateAlertRule", &req.base);
		mon_message_free(rule);
		return rc;
	}
	return usage_error("usage: monctl alerts rules list|get|create|delete ...");
}

/* ack and resolve: ALERT_ID [--note TEXT]. */
static int cmd_alerts_transition(const struct cli *cli, const char *method, int argc, char **argv)
{
	const char *id = NULL, *note = "";
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--note") == 0 && i + 1 < argc)
			note = argv[++i];
		else if (id == NULL && argv[i][0] != '-')
			id = argv[i];
		else
			id = "";
	}
	if (id == NULL || id[0] == '\0') {
		char msg[120];
		snprintf(msg, sizeof(msg), "usage: monctl alerts %s ALERT_ID [--note TEXT]",
		         strcmp(method, "AcknowledgeAlert") == 0 ? "ack" : "resolve");
		return usage_error(msg);
	}
	/* AcknowledgeAlertRequest and ResolveAlertRequest have the same fields. */
	if (strcmp(method, "AcknowledgeAlert") == 0) {
		Monitoring__V1__AcknowledgeAlertRequest req = MONITORING__V1__ACKNOWLEDGE_ALERT_REQUEST__INIT;
		req.alert_id = (char *)id;
		req.note = (char *)note;
		return alerts_call(cli, method, &req.base);
	}
	Monitoring__V1__ResolveAlertRequest req = MONITORING__V1__RESOLVE_ALERT_REQUEST__INIT;
	req.alert_id = (char *)id;
	req.note = (char *)note;
	return alerts_call(cli, method, &req.base);
}

struct follow_state {
	const struct cli *cli;
	volatile sig_atomic_t is_output_gone; /* stdout failed: stop */
};

/* The watcher's callback: events as JSON lines on stdout, connection news on stderr. */
static void on_alert_event(void *data, const mon_alerts_watcher_event *ev)
{
	struct follow_state *fs = data;
	switch (ev->kind) {
	case MON_ALERTS_WATCHER_SNAPSHOT:
	case MON_ALERTS_WATCHER_CHANGE:
	case MON_ALERTS_WATCHER_CONTROL:
		if (!fs->is_output_gone && print_message(&ev->response->base, fs->cli->print_flags, 1) != 0)
			fs->is_output_gone = 1;
		break;
	case MON_ALERTS_WATCHER_CONNECTED:
		if (ev->resume_after_sequence > 0)
			fprintf(stderr, "monctl: watching alerts after sequence %lld\n",
			        (long long)ev->resume_after_sequence);
		break;
	case MON_ALERTS_WATCHER_DISCONNECTED:
		fprintf(stderr, "monctl: %s: %s (resuming after sequence %lld in %lld ms)\n",
		        mon_status_code_name(ev->code), ev->message, (long long)ev->cursor, (long long)ev->retry_in_ms);
		break;
	case MON_ALERTS_WATCHER_STOPPED: break; /* reported by cmd_alerts_follow */
	}
}

/*
 * WatchAlerts through the library's resuming watcher, until Ctrl-C, a
 * failure that resuming cannot repair, or stdout closing. The cursor is
 * printed on stderr at the end, so that a later run can continue from it.
 */
static int cmd_alerts_follow(const struct cli *cli, int argc, char **argv)
{
	int rc = 0;
	mon_client *client = NULL;
	mon_alerts_watcher *w = NULL;
	ProtobufCMessage *req = NULL;
	const char *json = NULL;
	int64_t cursor = -1;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--cursor") == 0 && i + 1 < argc) {
			if (parse_timeout(argv[++i], &cursor) != 0)
				return usage_error("--cursor: expected a positive sequence number");
		} else if (json == NULL && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)) {
			json = argv[i];
		} else {
			return usage_error("usage: monctl alerts follow [JSON|-] [--cursor N]");
		}
	}
	if ((rc = request_build(json, &monitoring__v1__watch_alerts_request__descriptor, &req)) != 0)
		goto out;
	Monitoring__V1__WatchAlertsRequest *wreq = (Monitoring__V1__WatchAlertsRequest *)req;
	if (cursor > 0)
		wreq->resume_after_sequence = cursor;
	if ((rc = client_open(cli, &client)) != 0)
		goto out;
	signals_catch();
	struct follow_state fs = {.cli = cli};
	mon_alerts_watcher_options o = {
	        .on_event = on_alert_event, .on_event_data = &fs, .request_id = cli->request_id};
	mon_status st;
	if (mon_alerts_watcher_open(client, wreq, &o, &w, &st) != 0) {
		rc = report(EXIT_USAGE, mon_status_code_name(st.code), st.message);
		goto out;
	}
	for (;;) {
		if (g_interrupted) {
			rc = EXIT_INTERRUPTED;
			break;
		}
		if (fs.is_output_gone) {
			rc = errno == EPIPE ? 0 : EXIT_RPC;
			break;
		}
		if (mon_alerts_watcher_wait(w, WATCH_POLL_MS, &st) == 1) {
			rc = rpc_error(&st);
			break;
		}
	}
	fprintf(stderr, "monctl: alerts cursor %lld\n", (long long)mon_alerts_watcher_cursor(w));
out:
	mon_alerts_watcher_close(w);
	mon_message_free(req);
	mon_client_close(client);
	return rc;
}

static int cmd_alerts(const struct cli *cli, int argc, char **argv)
{
	const char *sub = argc > 0 ? argv[0] : "";
	if (strcmp(sub, "rules") == 0)
		return cmd_alerts_rules(cli, argc - 1, argv + 1);
	if (strcmp(sub, "list") == 0)
		return alerts_call_json(cli, "ListAlerts", &monitoring__v1__list_alerts_request__descriptor, argc - 1,
		                        argv + 1, "usage: monctl alerts list [JSON|-]");
	if (strcmp(sub, "ack") == 0)
		return cmd_alerts_transition(cli, "AcknowledgeAlert", argc - 1, argv + 1);
	if (strcmp(sub, "resolve") == 0)
		return cmd_alerts_transition(cli, "ResolveAlert", argc - 1, argv + 1);
	if (strcmp(sub, "follow") == 0)
		return cmd_alerts_follow(cli, argc - 1, argv + 1);
	return usage_error("usage: monctl alerts rules|list|ack|resolve|follow ...");
}

int main(int argc, char **argv)
{
	enum {
		OPT_TARGET = 256,
		OPT_API_KEY,
		OPT_TLS_CA,
		OPT_TLS_CERT,
		OPT_TLS_KEY,
		OPT_AUTHORITY,
		OPT_TIMEOUT,
		OPT_REQUEST_ID,
		OPT_IDEMPOTENCY_KEY,
		OPT_EMIT_DEFAULTS
	};
	static const struct option long_opts[] = {
	        {"target", required_argument, NULL, OPT_TARGET},
	        {"api-key", required_argument, NULL, OPT_API_KEY},
	        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
	        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
	        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
	        {"authority", required_argument, NULL, OPT_AUTHORITY},
	        {"timeout", required_argument, NULL, OPT_TIMEOUT},
	        {"request-id", required_argument, NULL, OPT_REQUEST_ID},
	        {"idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY},
	        {"emit-defaults", no_argument, NULL, OPT_EMIT_DEFAULTS},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct cli cli;
	memset(&cli, 0, sizeof(cli));
	mon_client_options_from_env(&cli.client_opts);
	signal(SIGPIPE, SIG_IGN);

	int c;
	/* '+': options end at the command, so JSON starting with '-' is not taken for one. */
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TARGET: cli.client_opts.target = optarg; break;
		case OPT_API_KEY: cli.client_opts.api_key = optarg; break;
		case OPT_TLS_CA: cli.client_opts.tls_ca_file = optarg; break;
		case OPT_TLS_CERT: cli.client_opts.tls_cert_file = optarg; break;
		case OPT_TLS_KEY: cli.client_opts.tls_key_file = optarg; break;
		case OPT_AUTHORITY: cli.client_opts.authority = optarg; break;
		case OPT_TIMEOUT:
			if (parse_timeout(optarg, &cli.timeout_ms) != 0)
				return usage_error("--timeout: expected a positive number of milliseconds");
			break;
		case OPT_REQUEST_ID: cli.request_id = optarg; break;
		case OPT_IDEMPOTENCY_KEY:
			if (optarg[0] == '\0')
				return usage_error("--idempotency-key: must not be empty");
			cli.idempotency_key = optarg;
			break;
		case OPT_EMIT_DEFAULTS: cli.print_flags |= JSON_PRINT_DEFAULTS; break;
		case 'h': usage(stdout); return 0;
		default: return usage_error("unknown option");
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[optind];
	int rest_argc = argc - optind - 1;
	char **rest = argv + optind + 1;
	if (strcmp(cmd, "list") == 0)
		return rest_argc == 0 ? cmd_list() : usage_error("usage: monctl list");
	if (strcmp(cmd, "call") == 0)
		return cmd_call(&cli, rest_argc, rest);
	if (strcmp(cmd, "watch") == 0)
		return cmd_watch(&cli, rest_argc, rest);
	if (strcmp(cmd, "health") == 0)
		return cmd_health(&cli, rest_argc, rest);
	if (strcmp(cmd, "metrics") == 0)
		return cmd_metrics(&cli, rest_argc, rest);
	if (strcmp(cmd, "alerts") == 0)
		return cmd_alerts(&cli, rest_argc, rest);
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "monctl: unknown command \"%s\"\n(see monctl --help)\n", cmd);
	return EXIT_USAGE;
}
