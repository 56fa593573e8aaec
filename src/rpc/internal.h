/*
 * Private to src/rpc/: the call and stream structures shared by the server
 * core (server.c), the standard health service (health.c) and reflection
 * (reflection.c). Nothing outside src/rpc/ includes this header.
 */
#ifndef MON_RPC_INTERNAL_H
#define MON_RPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "rpc/method.h"
#include "rpc/rpc.h"
#include "rpc/server.h"

struct rpc_call;
struct rpc_health;
struct rpc_reflection;

enum tag_kind { TAG_REQUEST, TAG_CLOSE, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_INITIAL };

/*
 * What a completion-queue event points to. On a callback queue gRPC runs
 * fn when the batch completes, so fn comes first: the tag is the functor.
 */
struct rpc_tag {
	grpc_completion_queue_functor fn;
	enum tag_kind kind;
	struct rpc_call *call;
};

struct bound_method {
	const struct rpc_method *method;
	rpc_any_fn fn;
	void *user;
	unsigned flags;
	void *registered; /* gRPC's handle: calls arrive with their request message */
};

struct rpc_ctx {
	struct rpc_call *call;
	struct arena *arena;      /* scratch: the call arena, or a per-message one for bidi */
	struct arena *call_arena; /* lives as long as the call */
	struct mon_error err;
	gpr_timespec deadline; /* GPR_CLOCK_MONOTONIC, or inf future */
	char *peer;            /* gpr_malloc'd by gRPC */
	char request_id[64];
	const char *method;
	void *user;
	grpc_metadata *trailers; /* RPC_MAX_TRAILERS of them in the call arena, on the first one */
	size_t trailer_count;
	struct rpc_identity identity;
	bool has_identity;
	const ProtobufCMessage *request; /* the decoded request, while the handler runs */
	ProtobufCMessage *response;      /* unary: the response the handler fills, sent by rpc_reply_finish too */
};

/* Per-caller state for the rate limit and the stream cap. */
struct caller_limit {
	struct caller_limit *next;
	char caller_id[64];
	double tokens;
	double refilled_at_s; /* monotonic seconds */
	int open_streams;
};

/* One queued outgoing stream message. */
struct send_node {
	struct send_node *next;
	grpc_slice bytes;
};

struct cq_thread {
	struct rpc_server *server;
	grpc_completion_queue *cq;
	pthread_t thread;
	bool has_thread;
};

/* The queues that hand calls to threads of the runtime, each with its link in the call. */
enum { QUEUE_WORK, QUEUE_CALLBACKS, CALL_QUEUES };

struct call_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rpc_call *head, *tail;
	size_t len;
	size_t max; /* 0: no limit */
	bool stop;  /* its threads drain it, then leave */
	int link;   /* QUEUE_WORK or QUEUE_CALLBACKS */
};

/*
 * A call from accept to free. Reference counted: the runtime holds one
 * reference until the call is over on the wire (close received and no batch
 * outstanding), a running handler holds one, and so does each
 * rpc_stream_retain. grpc_call is unreferenced when the struct is freed.
 */
struct rpc_call {
	/*
	 * What every stream message touches first, together: a fan-out goes
	 * through thousands of calls, and fields spread over the struct cost a
	 * cache miss each.
	 */
	struct rpc_server *server;
	grpc_call *call;
	pthread_mutex_t lock;
	int refs;
	int pending;         /* batches started and not completed */
	bool close_received; /* RECV_CLOSE_ON_SERVER completed */
	bool status_started; /* SEND_STATUS batch started */
	bool finish_requested;
	bool send_in_flight;
	bool initial_md_sent;
	bool recv_deferred; /* bidi: next RECV_MESSAGE waits until the send queue drains */
	bool close_due;     /* the owner's close callback is due (see writable_due) */
	bool in_cb_queue;
	grpc_byte_buffer *send_buf; /* the message in flight */
	struct send_node *q_head, *q_tail;
	size_t q_len;
	size_t q_bytes;
	void (*on_writable)(struct rpc_stream *s, void *arg); /* armed once by rpc_stream_on_writable */
	void *on_writable_arg;
	/* Owner callbacks due, run by the callbacks thread (never where a batch completed). */
	void (*writable_due)(struct rpc_stream *s, void *arg);
	void *writable_due_arg;
	struct rpc_tag t_send;
	pthread_cond_t drained; /* signalled when the send queue shrinks or the stream closes */

	struct cq_thread *cqt;
	grpc_call_details details;
	grpc_metadata_array request_md;
	struct rpc_tag t_request, t_close, t_recv, t_status, t_initial;
	const struct bound_method *bm;  /* NULL: unknown method */
	const struct bound_method *reg; /* set: requested as this registered method */
	gpr_timespec reg_deadline;

	bool on_close_ran;
	bool close_in_status; /* RECV_CLOSE_ON_SERVER rides with the status batch */
	atomic_bool cancelled;
	int close_cancelled; /* filled by RECV_CLOSE_ON_SERVER */

	int fin_code;  /* status requested by rpc_stream_finish (under lock) */
	char *fin_msg; /* malloc'd by rpc_stream_finish; NULL: no message */

	grpc_byte_buffer *recv_buf;

	int final_code; /* gRPC status sent (or CANCELLED) */
	grpc_slice status_details;
	bool has_status_details;
	grpc_metadata initial_md[1];
	grpc_slice request_id_slice;

	struct caller_limit *counted_stream; /* holds one of its caller's stream slots */

	void (*on_close)(struct rpc_stream *s, void *arg);
	void *on_close_arg;

	struct rpc_ctx ctx;
	struct timespec started;

	struct rpc_call *queue_next[CALL_QUEUES]; /* links of the call queues (one each: a call may be in both) */
	struct rpc_call *live_prev, *live_next;   /* open streams, for shutdown */
	bool in_live_list;
};

/* A stream is its call: the public type is an alias for the call struct. */
static inline struct rpc_call *stream_call(struct rpc_stream *s)
{
	return (struct rpc_call *)(void *)s;
}

static inline struct rpc_stream *call_stream(struct rpc_call *c)
{
	return (struct rpc_stream *)(void *)c;
}

struct rpc_server {
	struct rpc_server_config cfg;
	char *listen_addr;
	grpc_server *server;
	int cq_count;
	struct cq_thread *cqs;
	grpc_completion_queue *shutdown_cq;
	/* Unary and server-streaming calls' callback queues: completions run where they happen. */
	grpc_completion_queue **cb_cqs;
	int cb_cq_count;
	atomic_uint cb_cq_next;
	struct cb_cq_shutdown {
		grpc_completion_queue_functor fn; /* first: the queue's shutdown functor */
		pthread_mutex_t lock;
		pthread_cond_t cond;
		int done;
	} cb_cq_shutdown;
	bool started;
	atomic_bool shutting_down;

	struct bound_method *methods; /* sorted by path after start */
	size_t method_count, method_cap;

	/* worker pool */
	struct call_queue work;
	pthread_t *workers;
	int worker_count;

	/* the callbacks thread: runs owner callbacks (close, writable) of streams */
	struct call_queue callbacks;
	pthread_t cb_thread;
	bool has_cb_thread;

	/* open server streams */
	pthread_mutex_t live_lock;
	struct rpc_call *live_head;
	bool live_closed; /* shutdown ended the streams: refuse new ones */

	struct rpc_health *health;
	struct rpc_reflection *reflection;

	/* rpc_server_on_shutdown: run in order at the start of rpc_server_shutdown */
	struct shutdown_hook {
		void (*fn)(void *arg);
		void *arg;
	} shutdown_hooks[RPC_SHUTDOWN_HOOKS_MAX];
	int shutdown_hook_count;

	bool has_auth;
	struct rpc_auth_config auth;
	pthread_mutex_t limits_lock;
	struct caller_limit *limits[256];
};

/* Standard services, bound by rpc_server_create. */
int rpc_health_init(struct rpc_server *server, struct mon_error *err);
void rpc_health_free(struct rpc_server *server);
int rpc_reflection_init(struct rpc_server *server, const unsigned char *set, size_t set_len, struct mon_error *err);
void rpc_reflection_free(struct rpc_server *server);

#endif
