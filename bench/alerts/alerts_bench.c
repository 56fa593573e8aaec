/*
 * alerts_bench: how fast an alert reaches its subscribers. It creates one
 * alert rule of its own (p95 of a metric of its own, aggregation LAST,
 * greater than 100, duration_minutes 0, auto_resolve), follows it with
 * libmonitoring's resuming alerts watcher (the measuring subscriber), opens
 * --idle other WatchAlerts streams that watch a rule that never fires (so
 * they only cost the server memory and filtering), then raises W + N
 * alerts one at a time: RecordMetrics with a point above the threshold,
 * wait until the measuring subscriber has the new alert ACTIVE, then a
 * point below it, wait until it is RESOLVED. The first W are warm-up.
 *
 * Figures:
 *   raise latency: arrival of the ACTIVE alert minus the moment the
 *     RecordMetrics call that crossed the threshold returned (and minus the
 *     moment it was sent), split at the change's changed_at (the
 *     evaluation's commit, wall clock) into evaluation and delivery;
 *     resolve latency likewise, without the split;
 *   memory per idle subscriber: the server's RSS after the idle streams all
 *     had their snapshot, minus before, divided by their number
 *     (--server-pid);
 *   webhook latency (--webhook-integration, --webhook-port): the rule also
 *     notifies that webhook integration, whose URL is a receiver in this
 *     process on 127.0.0.1; latency is the wall-clock arrival of the
 *     "fired" POST minus the change's changed_at (its commit time). The
 *     bench resolves each alert only once its POST arrived (a delivery
 *     still queued when its alert resolves is skipped).
 *
 * The idle streams live on --pollers completion queues driven with gRPC
 * core directly, many streams per queue, spread over connections of at most
 * --streams-per-channel streams each (as bench/watch_health's cq client),
 * so that 10,000 of them cost the client little. Loopback only, by intent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <monitoring/alerts_watcher.h>
#include <monitoring/monitoring.h>

#define CALL_TIMEOUT_MS 10000
#define DELIVERY_TIMEOUT_MS 10000
#define WEBHOOK_WAIT_MS 30000
#define POLLERS_MAX 8
#define ID_MAX 64
#define WATCH_PATH "/monitoring.v1.AlertsService/WatchAlerts"
#define THRESHOLD 100.0

/* One alert raised by the bench. */
struct alert_rec {
	char id[ID_MAX];
	int64_t sent_ns, returned_ns; /* the raising RecordMetrics */
	int64_t returned_wall_ns;     /* wall clock: when it returned */
	int64_t arrive_wall_ns;       /* wall clock: ACTIVE on the measuring stream */
	int64_t arrive_ns;            /* ACTIVE on the measuring stream */
	int64_t changed_at_ns;        /* wall clock: the change's changed_at */
	int64_t resolve_returned_ns;  /* the resolving RecordMetrics */
	int64_t resolve_arrive_ns;    /* RESOLVED on the measuring stream */
};

/* A "fired" webhook POST received. */
struct fired {
	char id[ID_MAX];
	int64_t at_ns; /* wall clock */
};

struct bench {
	const char *target;
	const char *token;
	int idle_n;
	int alerts_n; /* measured */
	int warmup_n;
	int per_channel;
	int pollers_n;
	long server_pid;
	const char *webhook_integration;
	int webhook_port;
	char rule_id[ID_MAX];
	char metric[ID_MAX];

	struct alert_rec *rec; /* warmup_n + alerts_n */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int current;         /* the alert being raised */
	int active_n;        /* alerts seen ACTIVE */
	int resolved_n;      /* alerts seen RESOLVED */
	bool is_watch_ready; /* the measuring stream had its snapshot */
	struct fired *fired; /* fired POSTs received */
	int fired_n, fired_cap;
	uint64_t webhook_other; /* other POSTs (resolved, unparsable) */
	atomic_int idle_ready_n;
	atomic_int idle_failed_n;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits on b->cond until pred(b) or timeout_ms; returns pred(b). */
static bool wait_for(struct bench *b, bool (*pred)(struct bench *), int64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&b->mu);
	while (!pred(b) && pthread_cond_timedwait(&b->cond, &b->mu, &ts) == 0)
		;
	bool ok = pred(b);
	pthread_mutex_unlock(&b->mu);
	return ok;
}

static bool is_watch_ready(struct bench *b)
{
	return b->is_watch_ready;
}

static bool is_current_active(struct bench *b)
{
	return b->active_n > b->current;
}

static bool is_current_resolved(struct bench *b)
{
	return b->resolved_n > b->current;
}

/* Whether the "fired" POST of the current alert arrived. Under b->mu. */
static bool is_current_posted(struct bench *b)
{
	for (int f = b->fired_n - 1; f >= 0; f--)
		if (strcmp(b->fired[f].id, b->rec[b->current].id) == 0)
			return true;
	return false;
}

static bool are_webhooks_in(struct bench *b)
{
	return b->fired_n >= b->warmup_n + b->alerts_n;
}

/* ---- the measuring subscriber: libmonitoring's alerts watcher ---- */

static void on_alert_event(void *data, const mon_alerts_watcher_event *ev)
{
	struct bench *b = data;
	int64_t t = now_ns();
	if (ev->kind == MON_ALERTS_WATCHER_DISCONNECTED || ev->kind == MON_ALERTS_WATCHER_STOPPED) {
		fprintf(stderr, "alerts_bench: measuring stream: %s: %s\n", mon_status_code_name(ev->code),
		        ev->message);
		return;
	}
	if (ev->kind == MON_ALERTS_WATCHER_CONTROL && ev->response->control != NULL &&
	    ev->response->control->kind == MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE) {
		pthread_mutex_lock(&b->mu);
		b->is_watch_ready = true;
		pthread_cond_broadcast(&b->cond);
		pthread_mutex_unlock(&b->mu);
		return;
	}
	if (ev->kind != MON_ALERTS_WATCHER_CHANGE || ev->response->change == NULL ||
	    ev->response->change->alert == NULL)
		return;
	const Monitoring__V1__AlertChange *c = ev->response->change;
	const Monitoring__V1__Alert *a = c->alert;
	pthread_mutex_lock(&b->mu);
	int total = b->warmup_n + b->alerts_n;
	if (a->status == MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACTIVE && b->active_n < total &&
	    b->active_n == b->current) {
		struct alert_rec *r = &b->rec[b->active_n];
		snprintf(r->id, sizeof(r->id), "%s", a->id);
		r->arrive_ns = t;
		r->arrive_wall_ns = wall_ns();
		if (c->changed_at != NULL)
			r->changed_at_ns = c->changed_at->seconds * 1000000000 + c->changed_at->nanos;
		b->active_n++;
		pthread_cond_broadcast(&b->cond);
	} else if (a->status == MONITORING__V1__ALERT_STATUS__ALERT_STATUS_RESOLVED && b->resolved_n < b->active_n &&
	           strcmp(a->id, b->rec[b->resolved_n].id) == 0) {
		b->rec[b->resolved_n].resolve_arrive_ns = t;
		b->resolved_n++;
		pthread_cond_broadcast(&b->cond);
	}
	pthread_mutex_unlock(&b->mu);
}

/* ---- idle subscribers: many streams per completion queue, gRPC core ---- */

enum cq_op { CQ_SEND, CQ_RECV, CQ_STATUS };

struct cq_stream;

struct cq_tag {
	struct cq_stream *s;
	enum cq_op op;
};

struct cq_stream {
	struct bench *b;
	int idx;
	grpc_call *call;
	struct cq_tag t_send, t_recv, t_status;
	grpc_byte_buffer *send_buf;
	grpc_byte_buffer *recv_buf;
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_status_code code;
	grpc_slice details;
	bool is_ready;
	bool is_over;
};

static void cq_stream_fail(struct cq_stream *s, const char *why)
{
	if (s->is_over)
		return;
	s->is_over = true;
	char details[256] = "";
	size_t len = GRPC_SLICE_LENGTH(s->details);
	if (len >= sizeof(details))
		len = sizeof(details) - 1;
	memcpy(details, GRPC_SLICE_START_PTR(s->details), len);
	details[len] = '\0';
	if (atomic_fetch_add(&s->b->idle_failed_n, 1) < 5)
		fprintf(stderr, "alerts_bench: idle stream %d: %s (status %d %s)\n", s->idx, why, (int)s->code,
		        details);
	if (!s->is_ready)
		atomic_fetch_add(&s->b->idle_ready_n, 1);
	pthread_mutex_lock(&s->b->mu);
	pthread_cond_broadcast(&s->b->cond);
	pthread_mutex_unlock(&s->b->mu);
}

static bool cq_stream_recv(struct cq_stream *s, bool is_first)
{
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	if (is_first) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
		n++;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n].data.recv_message.recv_message = &s->recv_buf;
	n++;
	return grpc_call_start_batch(s->call, ops, n, &s->t_recv, NULL) == GRPC_CALL_OK;
}

static void cq_stream_on_recv(struct cq_stream *s, bool ok)
{
	if (!ok || s->recv_buf == NULL) {
		cq_stream_fail(s, "read side ended");
		return;
	}
	grpc_byte_buffer_reader reader;
	Monitoring__V1__WatchAlertsResponse *m = NULL;
	if (grpc_byte_buffer_reader_init(&reader, s->recv_buf)) {
		grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
		m = monitoring__v1__watch_alerts_response__unpack(NULL, GRPC_SLICE_LENGTH(slice),
		                                                  GRPC_SLICE_START_PTR(slice));
		grpc_slice_unref(slice);
	}
	grpc_byte_buffer_destroy(s->recv_buf);
	s->recv_buf = NULL;
	if (m == NULL) {
		cq_stream_fail(s, "undecodable message");
		return;
	}
	if (!s->is_ready && m->event_case == MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CONTROL &&
	    m->control != NULL &&
	    m->control->kind == MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE) {
		s->is_ready = true;
		atomic_fetch_add(&s->b->idle_ready_n, 1);
		pthread_mutex_lock(&s->b->mu);
		pthread_cond_broadcast(&s->b->cond);
		pthread_mutex_unlock(&s->b->mu);
	}
	monitoring__v1__watch_alerts_response__free_unpacked(m, NULL);
	if (!cq_stream_recv(s, false))
		cq_stream_fail(s, "could not start a read");
}

static void *poller_main(void *arg)
{
	grpc_completion_queue *cq = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct cq_tag *tag = ev.tag;
		struct cq_stream *s = tag->s;
		switch (tag->op) {
		case CQ_SEND:
			grpc_byte_buffer_destroy(s->send_buf);
			s->send_buf = NULL;
			if (!ev.success)
				cq_stream_fail(s, "could not send the request");
			break;
		case CQ_RECV: cq_stream_on_recv(s, ev.success != 0); break;
		case CQ_STATUS: cq_stream_fail(s, "the server ended the stream"); break;
		}
	}
	return NULL;
}

static int cq_stream_open(struct cq_stream *s, grpc_channel *ch, grpc_completion_queue *cq, grpc_metadata *md,
                          const grpc_slice *request)
{
	s->t_send = (struct cq_tag){s, CQ_SEND};
	s->t_recv = (struct cq_tag){s, CQ_RECV};
	s->t_status = (struct cq_tag){s, CQ_STATUS};
	s->details = grpc_empty_slice();
	grpc_metadata_array_init(&s->initial_md);
	grpc_metadata_array_init(&s->trailing_md);
	grpc_slice method = grpc_slice_from_static_string(WATCH_PATH);
	s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
	                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (s->call == NULL)
		return -1;
	grpc_op ops[3];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
	ops[0].data.recv_status_on_client.status = &s->code;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	if (grpc_call_start_batch(s->call, ops, 1, &s->t_status, NULL) != GRPC_CALL_OK)
		return -1;
	grpc_slice copy = grpc_slice_ref(*request);
	s->send_buf = grpc_raw_byte_buffer_create(&copy, 1);
	grpc_slice_unref(copy);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = 1;
	ops[0].data.send_initial_metadata.metadata = md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = s->send_buf;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	if (grpc_call_start_batch(s->call, ops, 3, &s->t_send, NULL) != GRPC_CALL_OK)
		return -1;
	return cq_stream_recv(s, true) ? 0 : -1;
}

/* Opens b->idle_n streams watching a rule that never fires. The process exits without closing them. */
static int start_idle(struct bench *b)
{
	static grpc_metadata md;
	static char auth[600];
	static char other_rule[ID_MAX + 8];
	if (b->idle_n == 0)
		return 0;
	int channels_n = (b->idle_n + b->per_channel - 1) / b->per_channel;
	grpc_channel **chans = calloc((size_t)channels_n, sizeof(*chans));
	struct cq_stream *streams = calloc((size_t)b->idle_n, sizeof(*streams));
	grpc_completion_queue **cqs = calloc((size_t)b->pollers_n, sizeof(*cqs));
	if (chans == NULL || streams == NULL || cqs == NULL) {
		fprintf(stderr, "alerts_bench: out of memory\n");
		return -1;
	}
	grpc_init();
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	for (int i = 0; i < channels_n; i++) {
		/* A distinct receive limit per channel: a connection each, under max-concurrent-streams. */
		grpc_arg arg = {.type = GRPC_ARG_INTEGER,
		                .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		                .value.integer = (16 << 20) + 1000 + i};
		grpc_channel_args args = {.num_args = 1, .args = &arg};
		chans[i] = grpc_channel_create(b->target, creds, &args);
		if (chans[i] == NULL) {
			fprintf(stderr, "alerts_bench: could not create a channel to \"%s\"\n", b->target);
			return -1;
		}
	}
	grpc_channel_credentials_release(creds);
	snprintf(auth, sizeof(auth), "Bearer %s", b->token);
	md.key = grpc_slice_from_static_string("authorization");
	md.value = grpc_slice_from_static_string(auth);
	snprintf(other_rule, sizeof(other_rule), "%s-idle", b->rule_id);
	Monitoring__V1__WatchAlertsRequest req = MONITORING__V1__WATCH_ALERTS_REQUEST__INIT;
	char *ids[1] = {other_rule};
	req.alert_rule_ids = ids;
	req.n_alert_rule_ids = 1;
	grpc_slice request = grpc_slice_malloc(protobuf_c_message_get_packed_size(&req.base));
	protobuf_c_message_pack(&req.base, GRPC_SLICE_START_PTR(request));
	for (int i = 0; i < b->pollers_n; i++) {
		pthread_t t;
		cqs[i] = grpc_completion_queue_create_for_next(NULL);
		if (pthread_create(&t, NULL, poller_main, cqs[i]) != 0) {
			fprintf(stderr, "alerts_bench: could not start poller %d\n", i);
			return -1;
		}
	}
	for (int i = 0; i < b->idle_n; i++) {
		streams[i].b = b;
		streams[i].idx = i;
		if (cq_stream_open(&streams[i], chans[i / b->per_channel], cqs[i % b->pollers_n], &md, &request) != 0) {
			fprintf(stderr, "alerts_bench: could not open idle stream %d\n", i);
			return -1;
		}
	}
	grpc_slice_unref(request);
	return 0;
}

static bool are_idle_ready(struct bench *b)
{
	return atomic_load(&b->idle_ready_n) >= b->idle_n;
}

/* ---- the webhook receiver ---- */

/*
 * Records one POST body: the alert id and trigger are the first two parts
 * of its idempotency_key ("<alert>:<trigger>:<level>:<channel>:<to>").
 * "fired" POSTs are kept to be matched with the alerts at the end (one may
 * arrive before the stream's event); the others are counted.
 */
static void webhook_record(struct bench *b, const char *body, int64_t t)
{
	const char *k = strstr(body, "\"idempotency_key\"");
	const char *colon = NULL;
	if (k != NULL && (k = strchr(k + 17, '"')) != NULL) {
		k++;
		colon = strchr(k, ':');
	}
	pthread_mutex_lock(&b->mu);
	if (colon != NULL && (size_t)(colon - k) < ID_MAX && strncmp(colon + 1, "fired:", 6) == 0 &&
	    b->fired_n < b->fired_cap) {
		struct fired *f = &b->fired[b->fired_n++];
		memcpy(f->id, k, (size_t)(colon - k));
		f->id[colon - k] = '\0';
		f->at_ns = t;
		pthread_cond_broadcast(&b->cond);
	} else {
		b->webhook_other++;
	}
	pthread_mutex_unlock(&b->mu);
}

struct conn {
	struct bench *b;
	int fd;
};

/* Serves one keep-alive connection: reads requests, answers 200 to each. */
static void *conn_main(void *arg)
{
	struct conn *c = arg;
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap + 1);
	static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	while (buf != NULL) {
		buf[len] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (end != NULL) {
			size_t body_len = 0;
			for (char *h = buf; h < end; h = strstr(h, "\r\n") + 2) {
				if (strncasecmp(h, "Content-Length:", 15) == 0)
					body_len = (size_t)strtoul(h + 15, NULL, 10);
				if (strstr(h, "\r\n") == NULL)
					break;
			}
			size_t need = (size_t)(end + 4 - buf) + body_len;
			if (need > cap)
				break;
			if (len >= need) {
				int64_t t = wall_ns();
				char saved = buf[need];
				buf[need] = '\0';
				webhook_record(c->b, end + 4, t);
				buf[need] = saved;
				if (write(c->fd, reply, sizeof(reply) - 1) < 0)
					break;
				memmove(buf, buf + need, len - need);
				len -= need;
				continue;
			}
		}
		if (len == cap)
			break;
		ssize_t n = read(c->fd, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	free(buf);
	close(c->fd);
	free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct conn *listener = arg;
	for (;;) {
		int fd = accept(listener->fd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		struct conn *c = malloc(sizeof(*c));
		pthread_t t;
		if (c == NULL) {
			close(fd);
			continue;
		}
		*c = (struct conn){.b = listener->b, .fd = fd};
		if (pthread_create(&t, NULL, conn_main, c) != 0) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

static int start_webhook(struct bench *b)
{
	static struct conn listener;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->webhook_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
		fprintf(stderr, "alerts_bench: could not listen on 127.0.0.1:%d: %s\n", b->webhook_port,
		        strerror(errno));
		return -1;
	}
	listener = (struct conn){.b = b, .fd = fd};
	pthread_t t;
	if (pthread_create(&t, NULL, accept_main, &listener) != 0)
		return -1;
	return 0;
}

/* ---- the run ---- */

static long rss_kb(long pid)
{
	char path[64], line[256];
	long kb = -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static int create_rule(struct bench *b, mon_client *client)
{
	Monitoring__V1__CreateAlertRuleRequest req = MONITORING__V1__CREATE_ALERT_RULE_REQUEST__INIT;
	Monitoring__V1__AlertRule rule = MONITORING__V1__ALERT_RULE__INIT;
	Google__Protobuf__Int32Value zero = GOOGLE__PROTOBUF__INT32_VALUE__INIT,
	                             cap = GOOGLE__PROTOBUF__INT32_VALUE__INIT;
	Google__Protobuf__BoolValue yes = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
	Monitoring__V1__NotificationRecipients to = MONITORING__V1__NOTIFICATION_RECIPIENTS__INIT;
	Monitoring__V1__NotificationChannel channels[1] = {
	        MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_WEBHOOK};
	char name[128];
	char *hooks[1] = {(char *)b->webhook_integration};

	snprintf(name, sizeof(name), "bench %s", b->metric);
	rule.name = name;
	rule.severity = MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL;
	rule.metric_name = b->metric;
	rule.statistic = MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_P95;
	rule.aggregation = MONITORING__V1__AGGREGATION__AGGREGATION_LAST;
	rule.comparison_operator = MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_GT;
	rule.threshold = THRESHOLD;
	rule.duration_minutes = &zero;
	rule.suppress_duration = &zero;
	cap.value = 3600; /* the largest hourly cap */
	rule.max_alerts_per_hour = &cap;
	yes.value = 1;
	rule.auto_resolve = &yes;
	rule.evaluation_interval = 3600; /* the periodic evaluation stays out of the way */
	if (b->webhook_integration != NULL) {
		rule.notification_channels = channels;
		rule.n_notification_channels = 1;
		to.webhook_integration_ids = hooks;
		to.n_webhook_integration_ids = 1;
		rule.notification_recipients = &to;
	}
	req.rule = &rule;
	Monitoring__V1__CreateAlertRuleResponse *resp = NULL;
	mon_status st;
	mon_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
	if (mon_alerts_service_create_alert_rule(client, &req, &resp, &co, &st) != 0) {
		fprintf(stderr, "alerts_bench: CreateAlertRule: %s: %s\n", mon_status_code_name(st.code), st.message);
		return -1;
	}
	snprintf(b->rule_id, sizeof(b->rule_id), "%s", resp->rule->id);
	mon_message_free(&resp->base);
	return 0;
}

/* Records one point of the bench's metric with p95 = value at the wall-clock time at_ms. */
static int record(struct bench *b, mon_client *client, double value, int64_t at_ms)
{
	Monitoring__V1__RecordMetricsRequest req = MONITORING__V1__RECORD_METRICS_REQUEST__INIT;
	Monitoring__V1__MetricPoint p = MONITORING__V1__METRIC_POINT__INIT;
	Monitoring__V1__MetricPoint *points[1] = {&p};
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Google__Protobuf__DoubleValue p95 = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
	ts.seconds = at_ms / 1000;
	ts.nanos = (int32_t)(at_ms % 1000) * 1000000;
	p95.value = value;
	p.time = &ts;
	p.metric_name = b->metric;
	p.endpoint = "/bench/alerts";
	p.method = "GET";
	p.p95 = &p95;
	p.request_count = 1;
	req.points = points;
	req.n_points = 1;
	Monitoring__V1__RecordMetricsResponse *resp = NULL;
	mon_status st;
	mon_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
	if (mon_metrics_service_record_metrics(client, &req, &resp, &co, &st) != 0) {
		fprintf(stderr, "alerts_bench: RecordMetrics: %s: %s\n", mon_status_code_name(st.code), st.message);
		return -1;
	}
	mon_message_free(&resp->base);
	return 0;
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
	return (a > c) - (a < c);
}

static void print_stats(const char *what, int64_t *v, size_t n)
{
	if (n == 0) {
		printf("%-26s n=0\n", what);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_i64);
	size_t p50 = n / 2, p99 = (n * 99) / 100;
	printf("%-26s n=%zu p50=%.3f ms p99=%.3f ms max=%.3f ms\n", what, n, v[p50] / 1e6,
	       v[p99 < n ? p99 : n - 1] / 1e6, v[n - 1] / 1e6);
}

static void usage(void)
{
	fprintf(stderr, "usage: alerts_bench --target HOST:PORT --token API_KEY [--idle N] [--alerts N] [--warmup N]\n"
	                "                    [--streams-per-channel N] [--pollers N] [--server-pid PID]\n"
	                "                    [--webhook-integration ID --webhook-port PORT]\n");
	exit(2);
}

static long parse_count(const char *name, const char *text, long lo, long hi)
{
	char *end = NULL;
	long v = strtol(text, &end, 10);
	if (end == text || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "alerts_bench: %s: must be %ld to %ld\n", name, lo, hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct bench b = {.alerts_n = 1000, .warmup_n = 20, .per_channel = 500, .pollers_n = 1};
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (strcmp(k, "--target") == 0)
			b.target = v;
		else if (strcmp(k, "--token") == 0)
			b.token = v;
		else if (strcmp(k, "--idle") == 0)
			b.idle_n = (int)parse_count(k, v, 0, 100000);
		else if (strcmp(k, "--alerts") == 0)
			b.alerts_n = (int)parse_count(k, v, 1, 3000);
		else if (strcmp(k, "--warmup") == 0)
			b.warmup_n = (int)parse_count(k, v, 0, 500);
		else if (strcmp(k, "--streams-per-channel") == 0)
			b.per_channel = (int)parse_count(k, v, 1, 100000);
		else if (strcmp(k, "--pollers") == 0)
			b.pollers_n = (int)parse_count(k, v, 1, POLLERS_MAX);
		else if (strcmp(k, "--server-pid") == 0)
			b.server_pid = parse_count(k, v, 1, 1L << 30);
		else if (strcmp(k, "--webhook-integration") == 0)
			b.webhook_integration = v;
		else if (strcmp(k, "--webhook-port") == 0)
			b.webhook_port = (int)parse_count(k, v, 1, 65535);
		else
			usage();
	}
	if (b.target == NULL || b.token == NULL || argc % 2 == 0 ||
	    (b.webhook_integration != NULL) != (b.webhook_port != 0))
		usage();
	int total = b.warmup_n + b.alerts_n;
	b.rec = calloc((size_t)total, sizeof(*b.rec));
	b.fired_cap = 2 * total;
	b.fired = calloc((size_t)b.fired_cap, sizeof(*b.fired));
	if (b.rec == NULL || b.fired == NULL)
		return 1;
	pthread_mutex_init(&b.mu, NULL);
	pthread_cond_init(&b.cond, NULL);
	snprintf(b.metric, sizeof(b.metric), "bench.alerts.%ld.%ld", (long)getpid(), (long)time(NULL));

	int rc = 1;
	mon_client *client = NULL, *watch_client = NULL;
	mon_alerts_watcher *w = NULL;
	mon_status st;
	mon_client_options co = {.target = b.target, .api_key = b.token};
	if (mon_client_open(&co, &client, &st) != 0 || mon_client_open(&co, &watch_client, &st) != 0) {
		fprintf(stderr, "alerts_bench: %s\n", st.message);
		goto out;
	}
	if (b.webhook_integration != NULL && start_webhook(&b) != 0)
		goto out;
	if (create_rule(&b, client) != 0)
		goto out;

	Monitoring__V1__WatchAlertsRequest req = MONITORING__V1__WATCH_ALERTS_REQUEST__INIT;
	char *ids[1] = {b.rule_id};
	req.alert_rule_ids = ids;
	req.n_alert_rule_ids = 1;
	mon_alerts_watcher_options wo = {.on_event = on_alert_event, .on_event_data = &b};
	if (mon_alerts_watcher_open(watch_client, &req, &wo, &w, &st) != 0) {
		fprintf(stderr, "alerts_bench: %s\n", st.message);
		goto out;
	}
	if (!wait_for(&b, is_watch_ready, 30000)) {
		fprintf(stderr, "alerts_bench: the measuring stream had no snapshot\n");
		goto out;
	}
	long rss0 = b.server_pid > 0 ? rss_kb(b.server_pid) : -1;
	int64_t idle_t0 = now_ns();
	if (start_idle(&b) != 0)
		goto out;
	if (!wait_for(&b, are_idle_ready, 300000) || atomic_load(&b.idle_failed_n) > 0) {
		fprintf(stderr, "alerts_bench: idle streams: %d ready, %d failed of %d\n", atomic_load(&b.idle_ready_n),
		        atomic_load(&b.idle_failed_n), b.idle_n);
		goto out;
	}
	double idle_open_s = (double)(now_ns() - idle_t0) / 1e9;
	sleep(b.idle_n > 0 ? 2 : 0);
	long rss1 = b.server_pid > 0 ? rss_kb(b.server_pid) : -1;

	int64_t last_ms = 0;
	for (int k = 0; k < total; k++) {
		pthread_mutex_lock(&b.mu);
		b.current = k;
		pthread_mutex_unlock(&b.mu);
		int64_t at_ms = wall_ns() / 1000000;
		at_ms = at_ms > last_ms ? at_ms : last_ms + 1;
		last_ms = at_ms;
		b.rec[k].sent_ns = now_ns();
		if (record(&b, client, THRESHOLD * 2, at_ms) != 0)
			goto out;
		b.rec[k].returned_ns = now_ns();
		b.rec[k].returned_wall_ns = wall_ns();
		if (!wait_for(&b, is_current_active, DELIVERY_TIMEOUT_MS)) {
			fprintf(stderr, "alerts_bench: alert %d did not arrive\n", k);
			goto out;
		}
		/* A "fired" delivery still queued when its alert resolves is skipped: wait for it. */
		if (b.webhook_integration != NULL && !wait_for(&b, is_current_posted, WEBHOOK_WAIT_MS))
			fprintf(stderr, "alerts_bench: no webhook POST for alert %d\n", k);
		at_ms = wall_ns() / 1000000;
		at_ms = at_ms > last_ms ? at_ms : last_ms + 1;
		last_ms = at_ms;
		if (record(&b, client, THRESHOLD / 2, at_ms) != 0)
			goto out;
		b.rec[k].resolve_returned_ns = now_ns();
		if (!wait_for(&b, is_current_resolved, DELIVERY_TIMEOUT_MS)) {
			fprintf(stderr, "alerts_bench: alert %d was not resolved\n", k);
			goto out;
		}
	}
	long rss2 = b.server_pid > 0 ? rss_kb(b.server_pid) : -1;
	if (b.webhook_integration != NULL && !wait_for(&b, are_webhooks_in, WEBHOOK_WAIT_MS))
		fprintf(stderr, "alerts_bench: %d of %d webhook POSTs arrived\n", b.fired_n, total);

	size_t n = (size_t)b.alerts_n, early = 0, hooks_n = 0;
	int64_t *raise_ret = malloc(n * sizeof(int64_t)), *raise_send = malloc(n * sizeof(int64_t));
	int64_t *resolve_ret = malloc(n * sizeof(int64_t)), *hook = malloc(n * sizeof(int64_t));
	int64_t *to_commit = malloc(n * sizeof(int64_t)), *from_commit = malloc(n * sizeof(int64_t));
	if (raise_ret == NULL || raise_send == NULL || resolve_ret == NULL || hook == NULL || to_commit == NULL ||
	    from_commit == NULL)
		goto out;
	pthread_mutex_lock(&b.mu);
	for (size_t j = 0; j < n; j++) {
		struct alert_rec *r = &b.rec[(size_t)b.warmup_n + j];
		raise_send[j] = r->arrive_ns - r->sent_ns;
		raise_ret[j] = r->arrive_ns - r->returned_ns;
		if (raise_ret[j] < 0) {
			raise_ret[j] = 0;
			early++;
		}
		to_commit[j] = r->changed_at_ns - r->returned_wall_ns;
		from_commit[j] = r->arrive_wall_ns - r->changed_at_ns;
		resolve_ret[j] = r->resolve_arrive_ns - r->resolve_returned_ns;
		if (resolve_ret[j] < 0)
			resolve_ret[j] = 0;
		for (int f = 0; f < b.fired_n && r->changed_at_ns != 0; f++)
			if (strcmp(b.fired[f].id, r->id) == 0) {
				hook[hooks_n++] = b.fired[f].at_ns - r->changed_at_ns;
				break;
			}
	}
	int fired_n = b.fired_n;
	uint64_t other = b.webhook_other;
	pthread_mutex_unlock(&b.mu);
	mon_alerts_watcher_stats ws;
	mon_alerts_watcher_stats_get(w, &ws);

	printf("idle=%d channels=%d alerts=%d warmup=%d idle_open=%.1f s measuring_stream: connects=%" PRIu64
	       " duplicates_dropped=%" PRIu64 "\n",
	       b.idle_n, (b.idle_n + b.per_channel - 1) / b.per_channel, b.alerts_n, b.warmup_n, idle_open_s,
	       ws.connects, ws.duplicates_dropped);
	print_stats("raise: from Record return", raise_ret, n);
	printf("%-26s %zu of %zu (counted as 0)\n", "arrived before return", early, n);
	print_stats("raise: from Record send", raise_send, n);
	print_stats("  Record return to commit", to_commit, n);
	print_stats("  commit to arrival", from_commit, n);
	print_stats("resolve: from Record return", resolve_ret, n);
	if (b.server_pid > 0) {
		printf("server RSS: %ld kB before idle streams, %ld kB with them, %ld kB after the alerts\n", rss0,
		       rss1, rss2);
		if (b.idle_n > 0)
			printf("memory per idle subscriber: %.1f kB\n", (double)(rss1 - rss0) / b.idle_n);
	}
	if (b.webhook_integration != NULL) {
		printf("webhook POSTs: %d fired received, %zu matched to measured alerts, %" PRIu64
		       " others (resolved)\n",
		       fired_n, hooks_n, other);
		print_stats("webhook: commit to POST", hook, hooks_n);
	}
	rc = 0;
out:
	/* Streams are still open: exit without tearing gRPC down. */
	fflush(stdout);
	fflush(stderr);
	_exit(rc);
}
