/*
 * The identity store: callers and API keys from tb_caller and tb_api_key,
 * held in memory as an immutable snapshot (keys sorted by id, callers by id
 * and by certificate subject) so that authenticating a call is a binary
 * search and a constant-time compare, with no database on the call path.
 * A reload thread builds a new snapshot and swaps the pointer under a
 * rwlock (readers hold the read side only while they look up, so the old
 * snapshot is freed once the write side is taken); it reloads on NOTIFY
 * mon_identity, after the bus reconnects and every 60 s, and writes
 * last_used_at of the keys used meanwhile at most once a minute.
 *
 * It also owns the token format, the secret hashing and the transactional
 * changes to callers and keys. Secrets and hashes live in sodium_malloc
 * memory and are wiped after use; the token is never logged.
 */
#include "access/identity.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/parse.h"
#include "util/clock.h"
#include "util/log.h"

#define TOKEN_PREFIX "mk_"
#define TOKEN_PREFIX_LEN 3
#define KEY_ID_BYTES (IDENTITY_KEY_ID_LEN / 2)
#define SECRET_BYTES 32
#define SECRET_B64_LEN 43 /* 32 bytes in unpadded base64 */
#define HASH_BYTES 32
#define NOTIFY_CHANNEL "mon_identity"

#define RELOAD_INTERVAL_MS 60000
#define RETRY_MIN_MS 250
#define RETRY_MAX_MS 2000
#define LAST_USED_INTERVAL_MS 60000
#define LAST_USED_BATCH 1000
#define LOAD_TIMEOUT_MS 10000
#define STORE_MAX_CALLERS 50000
#define STORE_MAX_KEYS 200000

#define MSG_BAD_KEY "invalid or expired API key"
#define MSG_MISSING "missing credentials: send authorization: Bearer <api key> or a client certificate"
#define MSG_BAD_CERT "client certificate is not mapped to an active caller"

/* Milliseconds since the epoch, as stored (expiry and disabling are wall-clock instants). */
#define SQL_MS(col) "coalesce(floor(extract(epoch FROM " col ") * 1000)::bigint, 0)"

struct snap_caller {
	char id[64];
	char email[256];
	char team[128];
	enum rpc_role role;
	char cert_subject[256];
	int64_t disabled_at_ms;
};

struct snap_key {
	char id[IDENTITY_KEY_ID_LEN + 1];
	unsigned char hash[HASH_BYTES];
	uint32_t caller; /* index into callers */
	int64_t expires_at_ms;
	int64_t revoked_at_ms;
	atomic_bool is_used; /* authenticated since the last last_used_at flush */
};

/* Immutable once published, but for the is_used flags. */
struct snapshot {
	struct snap_caller *callers; /* malloc, sorted by id */
	size_t callers_n;
	uint32_t *by_cert; /* indexes of callers with a subject, sorted by subject */
	size_t by_cert_n;
	struct snap_key *keys; /* sodium_malloc (hashes), sorted by id */
	size_t keys_n;
};

struct identity_store {
	struct db_pool *pool;
	struct db_bus *bus;

	pthread_rwlock_t lock; /* guards current */
	struct snapshot *current;
	atomic_bool is_loaded;

	pthread_mutex_t reload_mu; /* one reload or flush at a time */

	pthread_mutex_t mu; /* guards is_reload_wanted, should_stop */
	pthread_cond_t cond;
	bool is_reload_wanted;
	bool should_stop;
	pthread_t thread;
	bool has_thread;
};

static void copy_str(char *dst, size_t dst_len, const char *src)
{
	snprintf(dst, dst_len, "%s", src != NULL ? src : "");
}

static bool is_lower_hex(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

static bool has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

static const char *role_name(enum rpc_role role)
{
	switch (role) {
	case RPC_ROLE_VIEWER: return "viewer";
	case RPC_ROLE_EDITOR: return "editor";
	case RPC_ROLE_ADMIN: return "admin";
	default: return "none";
	}
}

/* ---- pure helpers ---- */

int identity_role_parse(const char *name, enum rpc_role *out)
{
	if (name == NULL)
		return MON_EINVAL;
	if (strcmp(name, "viewer") == 0)
		*out = RPC_ROLE_VIEWER;
	else if (strcmp(name, "editor") == 0)
		*out = RPC_ROLE_EDITOR;
	else if (strcmp(name, "admin") == 0)
		*out = RPC_ROLE_ADMIN;
	else
		return MON_EINVAL;
	return 0;
}

void identity_secret_hash(const unsigned char secret[32], unsigned char hash_out[32])
{
	crypto_generichash(hash_out, HASH_BYTES, secret, SECRET_BYTES, NULL, 0);
}

int identity_token_parse(const char *token, char key_id[IDENTITY_KEY_ID_LEN + 1], unsigned char secret[32],
                         struct mon_error *err)
{
	key_id[0] = '\0';
	if (token == NULL)
		return mon_error_set(err, MON_EUNAUTH, "malformed API key: missing");
	size_t len = strnlen(token, IDENTITY_TOKEN_MAX);
	const size_t want = TOKEN_PREFIX_LEN + IDENTITY_KEY_ID_LEN + 1 + SECRET_B64_LEN;
	if (strncmp(token, TOKEN_PREFIX, TOKEN_PREFIX_LEN) != 0)
		return mon_error_set(err, MON_EUNAUTH, "malformed API key: no mk_ prefix");
	const char *id = token + TOKEN_PREFIX_LEN;
	if (len < TOKEN_PREFIX_LEN + IDENTITY_KEY_ID_LEN + 1 || id[IDENTITY_KEY_ID_LEN] != '_' ||
	    !is_lower_hex(id, IDENTITY_KEY_ID_LEN))
		return mon_error_set(err, MON_EUNAUTH, "malformed API key: the key id is not 16 lowercase hex digits");
	if (len != want)
		return mon_error_set(err, MON_EUNAUTH, "malformed API key: the secret is not %d characters",
		                     SECRET_B64_LEN);
	const char *b64 = id + IDENTITY_KEY_ID_LEN + 1;
	size_t bin_len = 0;
	const char *b64_end = NULL;
	if (sodium_base642bin(secret, SECRET_BYTES, b64, SECRET_B64_LEN, NULL, &bin_len, &b64_end,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    bin_len != SECRET_BYTES || b64_end != b64 + SECRET_B64_LEN) {
		sodium_memzero(secret, SECRET_BYTES);
		return mon_error_set(err, MON_EUNAUTH, "malformed API key: the secret is not base64url");
	}
	memcpy(key_id, id, IDENTITY_KEY_ID_LEN);
	key_id[IDENTITY_KEY_ID_LEN] = '\0';
	return 0;
}

int identity_token_format(const char *key_id, const unsigned char secret[32], char token_out[IDENTITY_TOKEN_MAX],
                          struct mon_error *err)
{
	char b64[SECRET_B64_LEN + 1];
	int rc = 0;
	token_out[0] = '\0';
	if (key_id == NULL || strlen(key_id) != IDENTITY_KEY_ID_LEN || !is_lower_hex(key_id, IDENTITY_KEY_ID_LEN))
		return mon_error_set(err, MON_EINVAL, "key id: must be 16 lowercase hex digits");
	sodium_bin2base64(b64, sizeof(b64), secret, SECRET_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	int n = snprintf(token_out, IDENTITY_TOKEN_MAX, TOKEN_PREFIX "%s_%s", key_id, b64);
	if (n < 0 || n >= IDENTITY_TOKEN_MAX)
		rc = mon_error_set(err, MON_EINTERNAL, "API key longer than %d bytes", IDENTITY_TOKEN_MAX);
	sodium_memzero(b64, sizeof(b64));
	return rc;
}

/* ---- snapshots ---- */

static void snapshot_free(struct snapshot *snap)
{
	if (snap == NULL)
		return;
	free(snap->callers);
	free(snap->by_cert);
	if (snap->keys != NULL)
		sodium_free(snap->keys); /* wipes the hashes */
	free(snap);
}

static int cmp_caller(const void *a, const void *b)
{
	return strcmp(((const struct snap_caller *)a)->id, ((const struct snap_caller *)b)->id);
}

static int cmp_key(const void *a, const void *b)
{
	return strcmp(((const struct snap_key *)a)->id, ((const struct snap_key *)b)->id);
}

/* qsort has no context argument: by_cert is sorted through this thread-local. */
static _Thread_local const struct snap_caller *sort_callers;

static int cmp_cert(const void *a, const void *b)
{
	return strcmp(sort_callers[*(const uint32_t *)a].cert_subject, sort_callers[*(const uint32_t *)b].cert_subject);
}

static const struct snap_caller *find_caller(const struct snapshot *snap, const char *id)
{
	size_t lo = 0, hi = snap->callers_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(id, snap->callers[mid].id);
		if (c == 0)
			return &snap->callers[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static const struct snap_caller *find_cert(const struct snapshot *snap, const char *subject)
{
	size_t lo = 0, hi = snap->by_cert_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct snap_caller *c = &snap->callers[snap->by_cert[mid]];
		int r = strcmp(subject, c->cert_subject);
		if (r == 0)
			return c;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static struct snap_key *find_key(const struct snapshot *snap, const char *id)
{
	size_t lo = 0, hi = snap->keys_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(id, snap->keys[mid].id);
		if (c == 0)
			return &snap->keys[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static const char *const load_callers_sql = "SELECT id, email, team, role::text, coalesce(cert_subject, ''), " SQL_MS(
        "disabled_at") " FROM tb_caller LIMIT $1";

static const char *const load_keys_sql =
        "SELECT id, encode(secret_hash, 'hex'), caller_id, " SQL_MS("expires_at") ", " SQL_MS(
                "revoked_at") " FROM tb_api_key WHERE revoked_at IS NULL OR revoked_at > now() - interval '7 days' "
                              "LIMIT $1";

struct load_ctx {
	struct snapshot *snap;
};

static int load_callers(struct db_conn *conn, struct snapshot *snap, struct mon_error *err)
{
	struct db_result *res = NULL;
	char limit[32];
	snprintf(limit, sizeof(limit), "%d", STORE_MAX_CALLERS + 1);
	const char *params[] = {limit};
	int rc = db_exec(conn, load_callers_sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	if (rows > STORE_MAX_CALLERS) {
		log_error("msg=\"more callers than the identity store holds\" max=%d", STORE_MAX_CALLERS);
		rc = mon_error_set(err, MON_ELIMIT, "identity store: more than %d callers", STORE_MAX_CALLERS);
		goto out;
	}
	if (rows > 0) {
		snap->callers = calloc((size_t)rows, sizeof(*snap->callers));
		snap->by_cert = calloc((size_t)rows, sizeof(*snap->by_cert));
		if (snap->callers == NULL || snap->by_cert == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory loading callers");
			goto out;
		}
	}
	for (int i = 0; i < rows; i++) {
		struct snap_caller *c = &snap->callers[i];
		copy_str(c->id, sizeof(c->id), db_result_value(res, i, 0));
		copy_str(c->email, sizeof(c->email), db_result_value(res, i, 1));
		copy_str(c->team, sizeof(c->team), db_result_value(res, i, 2));
		if (identity_role_parse(db_result_value(res, i, 3), &c->role) != 0)
			c->role = RPC_ROLE_NONE;
		copy_str(c->cert_subject, sizeof(c->cert_subject), db_result_value(res, i, 4));
		c->disabled_at_ms = svc_parse_i64(db_result_value(res, i, 5));
	}
	snap->callers_n = (size_t)rows;
	if (snap->callers_n > 0)
		qsort(snap->callers, snap->callers_n, sizeof(*snap->callers), cmp_caller);
	for (size_t i = 0; i < snap->callers_n; i++)
		if (snap->callers[i].cert_subject[0] != '\0')
			snap->by_cert[snap->by_cert_n++] = (uint32_t)i;
	sort_callers = snap->callers;
	if (snap->by_cert_n > 0)
		if (snap->by_cert_n > 0)
			qsort(snap->by_cert, snap->by_cert_n, sizeof(*snap->by_cert), cmp_cert);
	sort_callers = NULL;
out:
	db_result_free(res);
	return rc;
}

static int load_keys(struct db_conn *conn, struct snapshot *snap, struct mon_error *err)
{
	struct db_result *res = NULL;
	char limit[32];
	snprintf(limit, sizeof(limit), "%d", STORE_MAX_KEYS + 1);
	const char *params[] = {limit};
	int rc = db_exec(conn, load_keys_sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	if (rows > STORE_MAX_KEYS) {
		log_error("msg=\"more API keys than the identity store holds\" max=%d", STORE_MAX_KEYS);
		rc = mon_error_set(err, MON_ELIMIT, "identity store: more than %d API keys", STORE_MAX_KEYS);
		goto out;
	}
	if (rows > 0) {
		snap->keys = sodium_allocarray((size_t)rows, sizeof(*snap->keys));
		if (snap->keys == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory loading API keys");
			goto out;
		}
	}
	size_t n = 0;
	for (int i = 0; i < rows; i++) {
		struct snap_key *k = &snap->keys[n];
		memset(k, 0, sizeof(*k));
		const char *id = db_result_value(res, i, 0);
		const char *hex = db_result_value(res, i, 1);
		const struct snap_caller *c = find_caller(snap, db_result_value(res, i, 2));
		size_t hash_len = 0;
		if (strlen(id) != IDENTITY_KEY_ID_LEN || c == NULL ||
		    sodium_hex2bin(k->hash, sizeof(k->hash), hex, strlen(hex), NULL, &hash_len, NULL) != 0 ||
		    hash_len != HASH_BYTES)
			continue; /* a caller created after the callers were read: the next reload has it */
		copy_str(k->id, sizeof(k->id), id);
		k->caller = (uint32_t)(c - snap->callers);
		k->expires_at_ms = svc_parse_i64(db_result_value(res, i, 3));
		k->revoked_at_ms = svc_parse_i64(db_result_value(res, i, 4));
		atomic_init(&k->is_used, false);
		n++;
	}
	snap->keys_n = n;
	if (n > 0)
		qsort(snap->keys, snap->keys_n, sizeof(*snap->keys), cmp_key);
out:
	db_result_free(res);
	return rc;
}

/* Reads both tables in one transaction (fn of db_tx_run: re-runnable, so it starts afresh). */
static int load_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct load_ctx *ctx = arg;
	struct db_result *res = NULL;
	snapshot_free(ctx->snap);
	ctx->snap = calloc(1, sizeof(*ctx->snap));
	if (ctx->snap == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory loading identities");
	/* Before the migrations have run there is nothing to load: say so quietly. */
	int rc = db_exec(conn, "SELECT to_regclass('tb_api_key') IS NOT NULL", 0, NULL, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1 || strcmp(db_result_value(res, 0, 0), "t") != 0) {
		rc = mon_error_set(err, MON_EUNAVAIL, "identity tables not created yet (migrations pending)");
		goto out;
	}
	rc = load_callers(conn, ctx->snap, err);
	if (rc == 0)
		rc = load_keys(conn, ctx->snap, err);
out:
	db_result_free(res);
	return rc;
}

/* ---- the store ---- */

/* Marks in snap the keys that were used in old (both are held by the reloader only). */
static void carry_used(const struct snapshot *old, struct snapshot *snap)
{
	if (old == NULL)
		return;
	for (size_t i = 0; i < old->keys_n; i++) {
		if (!atomic_load(&old->keys[i].is_used))
			continue;
		struct snap_key *k = find_key(snap, old->keys[i].id);
		if (k != NULL)
			atomic_store(&k->is_used, true);
	}
}

int identity_store_reload(struct identity_store *store, struct mon_error *err)
{
	struct load_ctx ctx = {0};
	pthread_mutex_lock(&store->reload_mu);
	int rc = db_tx_run(store->pool, LOAD_TIMEOUT_MS, load_tx, &ctx, err);
	if (rc != 0)
		goto out;
	pthread_rwlock_wrlock(&store->lock);
	struct snapshot *old = store->current;
	store->current = ctx.snap;
	pthread_rwlock_unlock(&store->lock);
	/* The write lock waited for every reader: nobody holds old any more. */
	carry_used(old, ctx.snap);
	if (!atomic_exchange(&store->is_loaded, true))
		log_info("msg=\"identity store loaded\" callers=%zu keys=%zu", ctx.snap->callers_n, ctx.snap->keys_n);
	else
		log_debug("msg=\"identity store reloaded\" callers=%zu keys=%zu", ctx.snap->callers_n,
		          ctx.snap->keys_n);
	ctx.snap = NULL;
	snapshot_free(old);
out:
	pthread_mutex_unlock(&store->reload_mu);
	snapshot_free(ctx.snap);
	return rc;
}

/*
 * Writes last_used_at = now() for the keys authenticated since the last
 * flush, in batches. Approximate by design: a failed flush is not retried.
 */
static void flush_last_used(struct identity_store *store)
{
	size_t cap = LAST_USED_BATCH * (IDENTITY_KEY_ID_LEN + 1) + 3;
	char *list = malloc(cap);
	if (list == NULL)
		return;
	pthread_mutex_lock(&store->reload_mu);
	struct snapshot *snap = store->current; /* only reloads swap it, and they hold reload_mu */
	size_t i = 0;
	while (snap != NULL && i < snap->keys_n) {
		size_t len = 0, batch = 0;
		list[len++] = '{';
		for (; i < snap->keys_n && batch < LAST_USED_BATCH; i++) {
			if (!atomic_exchange(&snap->keys[i].is_used, false))
				continue;
			if (batch > 0)
				list[len++] = ',';
			memcpy(list + len, snap->keys[i].id, IDENTITY_KEY_ID_LEN);
			len += IDENTITY_KEY_ID_LEN;
			batch++;
		}
		list[len++] = '}';
		list[len] = '\0';
		if (batch == 0)
			continue;
		struct db_conn *conn = NULL;
		struct mon_error err = {0};
		const char *params[] = {list};
		if (db_pool_acquire(store->pool, LOAD_TIMEOUT_MS, &conn, &err) != 0 ||
		    db_exec(conn, "UPDATE tb_api_key SET last_used_at = now() WHERE id = ANY($1::text[])", 1, params,
		            NULL, &err) != 0)
			log_debug("msg=\"could not record when API keys were last used\" error=\"%s\"", err.msg);
		if (conn != NULL)
			db_pool_release(store->pool, conn);
	}
	pthread_mutex_unlock(&store->reload_mu);
	free(list);
}

static void wait_until(struct identity_store *store, int64_t deadline_mono_ms)
{
	int64_t ms = deadline_mono_ms - mon_now_ms();
	if (ms <= 0)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&store->cond, &store->mu, &ts);
}

static void *reload_main(void *arg)
{
	struct identity_store *store = arg;
	int64_t next_reload = 0; /* at once */
	int64_t next_flush = mon_now_ms() + LAST_USED_INTERVAL_MS;
	int retry_ms = RETRY_MIN_MS;
	bool has_warned = false;
	pthread_mutex_lock(&store->mu);
	for (;;) {
		while (!store->should_stop && !store->is_reload_wanted) {
			int64_t next = next_reload < next_flush ? next_reload : next_flush;
			if (mon_now_ms() >= next)
				break;
			wait_until(store, next);
		}
		if (store->should_stop)
			break;
		bool is_due = store->is_reload_wanted || mon_now_ms() >= next_reload;
		store->is_reload_wanted = false;
		pthread_mutex_unlock(&store->mu);

		if (is_due) {
			struct mon_error err = {0};
			if (identity_store_reload(store, &err) == 0) {
				next_reload = mon_now_ms() + RELOAD_INTERVAL_MS;
				retry_ms = RETRY_MIN_MS;
				has_warned = false;
			} else {
				if (!has_warned && err.code != MON_EUNAVAIL)
					log_warn("msg=\"could not load callers and API keys, retrying\" error=\"%s\"",
					         err.msg);
				else
					log_debug("msg=\"could not load callers and API keys, retrying\" error=\"%s\"",
					          err.msg);
				has_warned = true;
				next_reload = mon_now_ms() + retry_ms;
				retry_ms = retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retry_ms * 2;
			}
		}
		if (mon_now_ms() >= next_flush) {
			flush_last_used(store);
			next_flush = mon_now_ms() + LAST_USED_INTERVAL_MS;
		}
		pthread_mutex_lock(&store->mu);
	}
	pthread_mutex_unlock(&store->mu);
	return NULL;
}

void identity_store_request_reload(struct identity_store *store)
{
	if (store == NULL)
		return;
	pthread_mutex_lock(&store->mu);
	store->is_reload_wanted = true;
	pthread_cond_signal(&store->cond);
	pthread_mutex_unlock(&store->mu);
}

/* Bus callbacks: on the bus thread, so they only wake the reload thread. */
static void on_notify(const char *channel, const char *payload, void *arg)
{
	identity_store_request_reload(arg);
}

static void on_reconnect(void *arg)
{
	identity_store_request_reload(arg);
}

bool identity_store_is_loaded(struct identity_store *store)
{
	return store != NULL && atomic_load(&store->is_loaded);
}

int identity_store_create(struct db_pool *pool, struct db_bus *bus, struct identity_store **out, struct mon_error *err)
{
	*out = NULL;
	int rc = 0;
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
	struct identity_store *store = calloc(1, sizeof(*store));
	if (store == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the identity store");
	store->pool = pool;
	store->bus = bus;
	atomic_init(&store->is_loaded, false);
	/*
	 * Writers first: with glibc's default (readers first) a steady stream of
	 * overlapping calls could hold off a reload forever. A reader then waits
	 * at most for a pointer swap.
	 */
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&store->lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&store->reload_mu, NULL);
	pthread_mutex_init(&store->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&store->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (bus != NULL) {
		rc = db_bus_subscribe(bus, NOTIFY_CHANNEL, on_notify, store, err);
		if (rc != 0)
			goto out;
		db_bus_on_reconnect(bus, on_reconnect, store);
	}
	if (pthread_create(&store->thread, NULL, reload_main, store) != 0) {
		rc = mon_error_set(err, MON_EINTERNAL, "could not start the identity reload thread");
		goto out;
	}
	store->has_thread = true;
	*out = store;
	store = NULL;
out:
	identity_store_destroy(store);
	return rc;
}

void identity_store_destroy(struct identity_store *store)
{
	if (store == NULL)
		return;
	if (store->has_thread) {
		pthread_mutex_lock(&store->mu);
		store->should_stop = true;
		pthread_cond_signal(&store->cond);
		pthread_mutex_unlock(&store->mu);
		pthread_join(store->thread, NULL);
	}
	snapshot_free(store->current);
	pthread_cond_destroy(&store->cond);
	pthread_mutex_destroy(&store->mu);
	pthread_mutex_destroy(&store->reload_mu);
	pthread_rwlock_destroy(&store->lock);
	free(store);
}

/* ---- authentication ---- */

/*
 * Per-thread scratch for the presented secret and its hash: sodium_malloc
 * memory (guarded, locked, wiped on free) allocated once per thread rather
 * than per call, and wiped after every use.
 */
struct auth_scratch {
	unsigned char secret[SECRET_BYTES];
	unsigned char hash[HASH_BYTES];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool has_scratch_key;

static void scratch_free(void *p)
{
	sodium_free(p);
}

static void scratch_init(void)
{
	has_scratch_key = pthread_key_create(&scratch_key, scratch_free) == 0;
}

static struct auth_scratch *scratch_get(void)
{
	pthread_once(&scratch_once, scratch_init);
	if (!has_scratch_key)
		return NULL;
	struct auth_scratch *s = pthread_getspecific(scratch_key);
	if (s != NULL)
		return s;
	s = sodium_malloc(sizeof(*s));
	if (s == NULL)
		return NULL;
	if (pthread_setspecific(scratch_key, s) != 0) {
		sodium_free(s);
		return NULL;
	}
	return s;
}

static void fill_identity(struct rpc_identity *out, const struct snap_caller *c, const char *method, const char *key_id)
{
	copy_str(out->caller_id, sizeof(out->caller_id), c->id);
	copy_str(out->email, sizeof(out->email), c->email);
	copy_str(out->team, sizeof(out->team), c->team);
	out->role = c->role;
	copy_str(out->auth_method, sizeof(out->auth_method), method);
	copy_str(out->key_id, sizeof(out->key_id), key_id);
}

static void log_refusal(const struct rpc_auth_request *req, const char *reason, const char *key_id)
{
	log_info("msg=\"credentials refused\" reason=\"%s\" key_id=\"%s\" method=\"%s\" peer=\"%s\" request_id=\"%s\"",
	         reason, key_id != NULL ? key_id : "", req->method ? req->method : "", req->peer ? req->peer : "",
	         req->request_id ? req->request_id : "");
}

/* The key path; called with the snapshot read-locked. */
static int auth_key(const struct snapshot *snap, const struct rpc_auth_request *req, struct rpc_identity *out,
                    struct mon_error *err)
{
	char key_id[IDENTITY_KEY_ID_LEN + 1];
	struct mon_error parse_err = {0};
	const char *reason = NULL;
	struct auth_scratch *s = scratch_get();
	if (s == NULL) {
		log_error("msg=\"no secure memory to check an API key\"");
		return mon_error_set(err, MON_EUNAUTH, MSG_BAD_KEY);
	}
	if (identity_token_parse(req->bearer_token, key_id, s->secret, &parse_err) != 0) {
		log_refusal(req, parse_err.msg, NULL);
		return mon_error_set(err, MON_EUNAUTH, MSG_BAD_KEY);
	}
	identity_secret_hash(s->secret, s->hash);
	sodium_memzero(s->secret, sizeof(s->secret));
	struct snap_key *k = find_key(snap, key_id);
	int64_t now = mon_wall_ms();
	const struct snap_caller *c = k != NULL ? &snap->callers[k->caller] : NULL;
	if (k == NULL)
		reason = "unknown key id";
	else if (sodium_memcmp(s->hash, k->hash, HASH_BYTES) != 0)
		reason = "wrong secret";
	else if (k->revoked_at_ms != 0)
		reason = "key revoked";
	else if (k->expires_at_ms != 0 && k->expires_at_ms <= now)
		reason = "key expired";
	else if (c->disabled_at_ms != 0 && c->disabled_at_ms <= now)
		reason = "caller disabled";
	else if (c->role == RPC_ROLE_NONE)
		reason = "caller has no role";
	sodium_memzero(s->hash, sizeof(s->hash));
	if (reason != NULL) {
		log_refusal(req, reason, key_id);
		return mon_error_set(err, MON_EUNAUTH, MSG_BAD_KEY);
	}
	atomic_store(&k->is_used, true);
	fill_identity(out, c, "api-key", key_id);
	return 0;
}

static int auth_cert(const struct snapshot *snap, const struct rpc_auth_request *req, struct rpc_identity *out,
                     struct mon_error *err)
{
	const struct snap_caller *c = find_cert(snap, req->cert_subject);
	const char *reason = NULL;
	if (c == NULL)
		reason = "certificate subject not mapped to a caller";
	else if (c->disabled_at_ms != 0 && c->disabled_at_ms <= mon_wall_ms())
		reason = "caller disabled";
	else if (c->role == RPC_ROLE_NONE)
		reason = "caller has no role";
	if (reason != NULL) {
		log_info("msg=\"credentials refused\" reason=\"%s\" method=\"%s\" peer=\"%s\" request_id=\"%s\"",
		         reason, req->method ? req->method : "", req->peer ? req->peer : "",
		         req->request_id ? req->request_id : "");
		return mon_error_set(err, MON_EUNAUTH, MSG_BAD_CERT);
	}
	fill_identity(out, c, "certificate", "");
	return 0;
}

/*
 * A presented API key decides alone (a bad key is refused even when the
 * connection also carries a certificate: fail closed, and the client learns
 * its key is bad); without a key, the certificate subject is looked up.
 */
int identity_authenticate(void *arg, const struct rpc_auth_request *req, struct rpc_identity *out,
                          struct mon_error *err)
{
	struct identity_store *store = arg;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	bool has_key = req->bearer_token != NULL && req->bearer_token[0] != '\0';
	bool has_cert = req->cert_subject != NULL && req->cert_subject[0] != '\0';
	if (!has_key && !has_cert) {
		log_refusal(req, "no credentials", NULL);
		return mon_error_set(err, MON_EUNAUTH, MSG_MISSING);
	}
	pthread_rwlock_rdlock(&store->lock);
	const struct snapshot *snap = store->current;
	if (snap == NULL) {
		/* Not a refusal of these credentials: they cannot be checked yet (retryable). */
		log_refusal(req, "identity store not loaded yet", NULL);
		rc = mon_error_set(err, MON_EUNAVAIL,
		                   "credentials cannot be checked yet: the server is starting; retry");
	} else if (has_key) {
		rc = auth_key(snap, req, out, err);
	} else {
		rc = auth_cert(snap, req, out, err);
	}
	pthread_rwlock_unlock(&store->lock);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

/* ---- changes, in the caller's transaction ---- */

static int check_text(const char *field, const char *value, size_t max, bool is_required, struct mon_error *err)
{
	if (value == NULL || value[0] == '\0') {
		if (is_required)
			return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
		return 0;
	}
	if (strlen(value) > max)
		return mon_error_set(err, MON_EINVAL, "%s: at most %zu bytes", field, max);
	if (has_control(value))
		return mon_error_set(err, MON_EINVAL, "%s: must not contain control characters", field);
	return 0;
}

static int check_caller_id(const char *id, struct mon_error *err)
{
	int rc = check_text("caller id", id, 50, true, err);
	if (rc != 0)
		return rc;
	for (const char *p = id; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-' || c == '@'))
			return mon_error_set(err, MON_EINVAL, "caller id: only letters, digits, '.', '_', '-' and '@'");
	}
	return 0;
}

static int check_key_id(const char *id, struct mon_error *err)
{
	if (id == NULL || strlen(id) != IDENTITY_KEY_ID_LEN || !is_lower_hex(id, IDENTITY_KEY_ID_LEN))
		return mon_error_set(err, MON_EINVAL, "key id: must be 16 lowercase hex digits");
	return 0;
}

static void format_ms(int64_t ms, char *buf, size_t buf_len)
{
	snprintf(buf, buf_len, "%" PRId64, ms);
}

int identity_caller_create_tx(struct db_conn *conn, const struct identity_caller *caller, struct mon_error *err)
{
	int rc = check_caller_id(caller->id, err);
	if (rc == 0)
		rc = check_text("email", caller->email, 255, true, err);
	if (rc == 0 && strchr(caller->email, '@') == NULL)
		rc = mon_error_set(err, MON_EINVAL, "email: must contain '@'");
	if (rc == 0)
		rc = check_text("team", caller->team, 100, false, err);
	if (rc == 0)
		rc = check_text("cert_subject", caller->cert_subject, 255, false, err);
	if (rc == 0 && (caller->role < RPC_ROLE_VIEWER || caller->role > RPC_ROLE_ADMIN))
		rc = mon_error_set(err, MON_EINVAL, "role: must be viewer, editor or admin");
	if (rc != 0)
		return rc;
	char disabled[32];
	format_ms(caller->disabled_at_ms, disabled, sizeof(disabled));
	const char *params[] = {caller->id,
	                        caller->email,
	                        caller->team,
	                        role_name(caller->role),
	                        caller->cert_subject[0] != '\0' ? caller->cert_subject : NULL,
	                        caller->disabled_at_ms != 0 ? disabled : NULL};
	rc = db_exec(conn,
	             "INSERT INTO tb_caller (id, email, team, role, cert_subject, disabled_at) "
	             "VALUES ($1, $2, $3, $4::caller_role, $5, to_timestamp($6::double precision / 1000))",
	             6, params, NULL, err);
	if (rc == MON_EEXIST)
		return mon_error_set(err, MON_EEXIST,
		                     "caller \"%s\": the id or the certificate subject is already taken", caller->id);
	if (rc != 0)
		return rc;
	return db_notify(conn, NOTIFY_CHANNEL, caller->id, err);
}

int identity_caller_get_tx(struct db_conn *conn, const char *caller_id, struct identity_caller *out,
                           struct mon_error *err)
{
	struct db_result *res = NULL;
	memset(out, 0, sizeof(*out));
	int rc = check_caller_id(caller_id, err);
	if (rc != 0)
		return rc;
	const char *params[] = {caller_id};
	rc = db_exec(conn,
	             "SELECT id, email, team, role::text, coalesce(cert_subject, ''), " SQL_MS(
	                     "created_at") ", " SQL_MS("disabled_at") " FROM tb_caller WHERE id = $1",
	             1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "caller \"%s\": not found", caller_id);
		goto out;
	}
	copy_str(out->id, sizeof(out->id), db_result_value(res, 0, 0));
	copy_str(out->email, sizeof(out->email), db_result_value(res, 0, 1));
	copy_str(out->team, sizeof(out->team), db_result_value(res, 0, 2));
	if (identity_role_parse(db_result_value(res, 0, 3), &out->role) != 0)
		out->role = RPC_ROLE_NONE;
	copy_str(out->cert_subject, sizeof(out->cert_subject), db_result_value(res, 0, 4));
	out->created_at_ms = svc_parse_i64(db_result_value(res, 0, 5));
	out->disabled_at_ms = svc_parse_i64(db_result_value(res, 0, 6));
out:
	db_result_free(res);
	return rc;
}

int identity_caller_set_disabled_tx(struct db_conn *conn, const char *caller_id, bool is_disabled,
                                    struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = check_caller_id(caller_id, err);
	if (rc != 0)
		return rc;
	const char *params[] = {caller_id};
	rc = db_exec(conn,
	             is_disabled
	                     ? "UPDATE tb_caller SET disabled_at = coalesce(disabled_at, now()), updated_at = now() "
	                       "WHERE id = $1"
	                     : "UPDATE tb_caller SET disabled_at = NULL, updated_at = now() WHERE id = $1",
	             1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_affected(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "caller \"%s\": not found", caller_id);
		goto out;
	}
	rc = db_notify(conn, NOTIFY_CHANNEL, caller_id, err);
out:
	db_result_free(res);
	return rc;
}

/* Joined at compile time (literal concatenation): no buffer, nothing to truncate. */
#define KEY_COLUMNS_SQL                                                                                                \
	"SELECT id, caller_id, description, " SQL_MS("created_at") ", " SQL_MS("expires_at") ", " SQL_MS(              \
	        "revoked_at") ", " SQL_MS("last_used_at") " FROM tb_api_key "

static void key_from_row(const struct db_result *res, int row, struct identity_key *out)
{
	memset(out, 0, sizeof(*out));
	copy_str(out->id, sizeof(out->id), db_result_value(res, row, 0));
	copy_str(out->caller_id, sizeof(out->caller_id), db_result_value(res, row, 1));
	copy_str(out->description, sizeof(out->description), db_result_value(res, row, 2));
	out->created_at_ms = svc_parse_i64(db_result_value(res, row, 3));
	out->expires_at_ms = svc_parse_i64(db_result_value(res, row, 4));
	out->revoked_at_ms = svc_parse_i64(db_result_value(res, row, 5));
	out->last_used_at_ms = svc_parse_i64(db_result_value(res, row, 6));
}

/* Reads a key, locked FOR UPDATE when is_locking. */
static int key_read(struct db_conn *conn, const char *key_id, bool is_locking, struct identity_key *out,
                    struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = check_key_id(key_id, err);
	if (rc != 0)
		return rc;
	const char *sql = is_locking ? KEY_COLUMNS_SQL "WHERE id = $1 FOR UPDATE" : KEY_COLUMNS_SQL "WHERE id = $1";
	const char *params[] = {key_id};
	rc = db_exec(conn, sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "API key \"%s\": not found", key_id);
		goto out;
	}
	key_from_row(res, 0, out);
out:
	db_result_free(res);
	return rc;
}

int identity_key_get_tx(struct db_conn *conn, const char *key_id, struct identity_key *out, struct mon_error *err)
{
	return key_read(conn, key_id, false, out, err);
}

int identity_key_list_tx(struct db_conn *conn, const char *caller_id, size_t max, struct identity_key **out,
                         size_t *count_out, struct mon_error *err)
{
	struct db_result *res = NULL;
	struct identity_key *keys = NULL;
	char limit[32];
	*out = NULL;
	*count_out = 0;
	if (max == 0 || max > (size_t)INT32_MAX - 1)
		return mon_error_set(err, MON_EINVAL, "max: must be between 1 and %d", INT32_MAX - 1);
	if (caller_id != NULL) {
		int rc = check_caller_id(caller_id, err);
		if (rc != 0)
			return rc;
	}
	snprintf(limit, sizeof(limit), "%zu", max + 1);
	const char *params[] = {limit, caller_id};
	int rc = db_exec(conn,
	                 KEY_COLUMNS_SQL "WHERE ($2::text IS NULL OR caller_id = $2) ORDER BY created_at, id LIMIT $1",
	                 2, params, &res, err);
	if (rc != 0)
		goto out;
	size_t rows = (size_t)db_result_rows(res);
	if (rows > max) {
		rc = mon_error_set(err, MON_ELIMIT, "more than %zu API keys", max);
		goto out;
	}
	if (rows > 0) {
		keys = calloc(rows, sizeof(*keys));
		if (keys == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory listing API keys");
			goto out;
		}
	}
	for (size_t i = 0; i < rows; i++)
		key_from_row(res, (int)i, &keys[i]);
	*out = keys;
	*count_out = rows;
	keys = NULL;
out:
	free(keys);
	db_result_free(res);
	return rc;
}

int identity_key_create_tx(struct db_conn *conn, const char *caller_id, const char *description, int64_t expires_at_ms,
                           char token_out[IDENTITY_TOKEN_MAX], struct identity_key *info_out, struct mon_error *err)
{
	struct db_result *res = NULL;
	unsigned char *secret = NULL; /* SECRET_BYTES, then HASH_BYTES */
	char id_bytes[KEY_ID_BYTES];
	char key_id[IDENTITY_KEY_ID_LEN + 1];
	char hash_hex[HASH_BYTES * 2 + 1];
	char expires[32];
	token_out[0] = '\0';
	memset(info_out, 0, sizeof(*info_out));
	int rc = check_caller_id(caller_id, err);
	if (rc == 0)
		rc = check_text("description", description, sizeof(info_out->description) - 1, false, err);
	if (rc == 0 && expires_at_ms < 0)
		rc = mon_error_set(err, MON_EINVAL, "expires_at: must not be negative");
	if (rc == 0 && expires_at_ms != 0 && expires_at_ms <= mon_wall_ms())
		rc = mon_error_set(err, MON_EINVAL, "expires_at: must be in the future");
	if (rc != 0)
		return rc;

	/* The caller must exist and be active; FOR SHARE keeps it so until commit. */
	const char *caller_params[] = {caller_id};
	rc = db_exec(conn, "SELECT disabled_at IS NOT NULL FROM tb_caller WHERE id = $1 FOR SHARE", 1, caller_params,
	             &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "caller \"%s\": not found", caller_id);
		goto out;
	}
	if (strcmp(db_result_value(res, 0, 0), "t") == 0) {
		rc = mon_error_set(err, MON_EPRECOND, "caller \"%s\" is disabled", caller_id);
		goto out;
	}
	db_result_free(res);
	res = NULL;

	if (sodium_init() < 0) {
		rc = mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
		goto out;
	}
	secret = sodium_malloc(SECRET_BYTES + HASH_BYTES);
	if (secret == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of secure memory creating an API key");
		goto out;
	}
	randombytes_buf(id_bytes, sizeof(id_bytes));
	sodium_bin2hex(key_id, sizeof(key_id), (const unsigned char *)id_bytes, sizeof(id_bytes));
	randombytes_buf(secret, SECRET_BYTES);
	identity_secret_hash(secret, secret + SECRET_BYTES);
	sodium_bin2hex(hash_hex, sizeof(hash_hex), secret + SECRET_BYTES, HASH_BYTES);
	format_ms(expires_at_ms, expires, sizeof(expires));
	const char *params[] = {key_id, caller_id, hash_hex, description != NULL ? description : "",
	                        expires_at_ms != 0 ? expires : NULL};
	rc = db_exec(
	        conn,
	        "INSERT INTO tb_api_key (id, caller_id, secret_hash, description, expires_at) "
	        "VALUES ($1, $2, decode($3, 'hex'), $4, to_timestamp($5::double precision / 1000)) RETURNING " SQL_MS(
	                "created_at") ", " SQL_MS("expires_at"),
	        5, params, &res, err);
	if (rc != 0)
		goto out;
	rc = identity_token_format(key_id, secret, token_out, err);
	if (rc != 0)
		goto out;
	copy_str(info_out->id, sizeof(info_out->id), key_id);
	copy_str(info_out->caller_id, sizeof(info_out->caller_id), caller_id);
	copy_str(info_out->description, sizeof(info_out->description), description);
	info_out->created_at_ms = svc_parse_i64(db_result_value(res, 0, 0));
	info_out->expires_at_ms = svc_parse_i64(db_result_value(res, 0, 1));
	rc = db_notify(conn, NOTIFY_CHANNEL, key_id, err);
out:
	if (rc != 0)
		sodium_memzero(token_out, IDENTITY_TOKEN_MAX);
	sodium_memzero(hash_hex, sizeof(hash_hex));
	sodium_free(secret);
	db_result_free(res);
	return rc;
}

int identity_key_revoke_tx(struct db_conn *conn, const char *key_id, struct mon_error *err)
{
	struct identity_key key;
	int rc = key_read(conn, key_id, true, &key, err);
	if (rc != 0)
		return rc;
	if (key.revoked_at_ms != 0)
		return mon_error_set(err, MON_EPRECOND, "API key \"%s\": already revoked", key_id);
	const char *params[] = {key_id};
	rc = db_exec(conn, "UPDATE tb_api_key SET revoked_at = now() WHERE id = $1", 1, params, NULL, err);
	if (rc != 0)
		return rc;
	return db_notify(conn, NOTIFY_CHANNEL, key_id, err);
}

int identity_key_set_expiry_tx(struct db_conn *conn, const char *key_id, int64_t expires_at_ms, struct mon_error *err)
{
	struct identity_key key;
	char expires[32];
	if (expires_at_ms < 0)
		return mon_error_set(err, MON_EINVAL, "expires_at: must not be negative");
	int rc = key_read(conn, key_id, true, &key, err);
	if (rc != 0)
		return rc;
	format_ms(expires_at_ms, expires, sizeof(expires));
	const char *params[] = {key_id, expires_at_ms != 0 ? expires : NULL};
	rc = db_exec(conn, "UPDATE tb_api_key SET expires_at = to_timestamp($2::double precision / 1000) WHERE id = $1",
	             2, params, NULL, err);
	if (rc != 0)
		return rc;
	return db_notify(conn, NOTIFY_CHANNEL, key_id, err);
}

int identity_bootstrap_tx(struct db_conn *conn, const char *email, char token_out[IDENTITY_TOKEN_MAX],
                          struct identity_key *info_out, struct mon_error *err)
{
	struct db_result *res = NULL;
	token_out[0] = '\0';
	memset(info_out, 0, sizeof(*info_out));
	int rc = db_exec(conn, "SELECT pg_advisory_xact_lock(hashtext('mon_identity_bootstrap'))", 0, NULL, NULL, err);
	if (rc != 0)
		goto out;
	rc = db_exec(conn,
	             "SELECT id FROM tb_caller WHERE role = 'admin' AND disabled_at IS NULL "
	             "UNION ALL SELECT id FROM tb_caller WHERE id = 'admin' ORDER BY 1 LIMIT 1",
	             0, NULL, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) > 0) {
		rc = mon_error_set(err, MON_EEXIST,
		                   "caller \"%s\" exists already: bootstrap only creates the first admin",
		                   db_result_value(res, 0, 0));
		goto out;
	}
	struct identity_caller admin = {.role = RPC_ROLE_ADMIN};
	copy_str(admin.id, sizeof(admin.id), "admin");
	if (email == NULL || strlen(email) >= sizeof(admin.email)) {
		rc = mon_error_set(err, MON_EINVAL, "email: must be set, at most 255 bytes");
		goto out;
	}
	copy_str(admin.email, sizeof(admin.email), email);
	rc = identity_caller_create_tx(conn, &admin, err);
	if (rc == 0)
		rc = identity_key_create_tx(conn, admin.id, "bootstrap", 0, token_out, info_out, err);
out:
	db_result_free(res);
	return rc;
}
