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

#include <jansson.h>
#include <monitoring/client.h>

#include "grpc/health/v1/health.pb-c.h"
#include "json.h"
#include "mon_services.h"
#include "rpc/method.h"

#define EXIT_RPC 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define WATCH_POLL_MS 200
#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
/* monitord's default listen address. */
#define DEFAULT_TARGET "127.0.0.1:50051"

struct cli {
	mon_client_options client_opts;
	int64_t timeout_ms; /* 0: the library's default (unary) or none (streams) */
	const char *request_id;
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
	      "\n"
	      "  Service is the full name (monitoring.v1.AlertsService) or the short one\n"
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
	mon_call_options co = {.timeout_ms = cli->timeout_ms, .request_id = cli->request_id};
	mon_status st;
	if (mon_call_unary(client, md->path, req, md->output, &resp, &co, &st) != 0) {
		rc = rpc_error(&st);
		goto out;
	}
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
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "monctl: unknown command \"%s\"\n(see monctl --help)\n", cmd);
	return EXIT_USAGE;
}
