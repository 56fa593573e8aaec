/*
 * The identity store against a real database: a key created in a
 * transaction authenticates after a reload; a wrong secret, an unknown key
 * id, a revoked key, an expired key and a disabled caller are each
 * UNAUTHENTICATED; a certificate subject maps to its caller; a second
 * store on the same database (a replica) sees a revocation made through
 * the first after NOTIFY; the database holds no key in clear; and calls
 * authenticated while reloads swap the snapshot never see a bad one.
 */
#include "test_db_common.h"

#include <pthread.h>
#include <stdatomic.h>

#include <sodium.h>

#include "access/identity.h"

static struct test_db tdb;
static struct db_pool *pool;

static int group_setup(void **state)
{
	struct mon_error err = {0};
	test_db_create(&tdb, "identity");
	pool = test_db_pool(tdb.conninfo, 4);
	if (db_migrate(pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);
	return 0;
}

static int group_teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

/* ---- transactions the tests make ---- */

struct caller_arg {
	const char *id;
	enum rpc_role role;
	const char *cert_subject;
};

static int create_caller_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	const struct caller_arg *a = arg;
	struct identity_caller c = {.role = a->role};
	snprintf(c.id, sizeof(c.id), "%s", a->id);
	snprintf(c.email, sizeof(c.email), "%s@example.com", a->id);
	snprintf(c.team, sizeof(c.team), "sre");
	snprintf(c.cert_subject, sizeof(c.cert_subject), "%s", a->cert_subject ? a->cert_subject : "");
	return identity_caller_create_tx(conn, &c, err);
}

static void create_caller(const char *id, enum rpc_role role, const char *cert_subject)
{
	struct caller_arg a = {id, role, cert_subject};
	struct mon_error err = {0};
	if (db_tx_run(pool, 10000, create_caller_fn, &a, &err) != 0)
		fail_msg("create caller %s: %s", id, err.msg);
}

struct key_arg {
	const char *caller_id;
	char token[IDENTITY_TOKEN_MAX];
	struct identity_key info;
};

static int create_key_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct key_arg *a = arg;
	return identity_key_create_tx(conn, a->caller_id, "test key", 0, a->token, &a->info, err);
}

static void create_key(const char *caller_id, struct key_arg *out)
{
	struct mon_error err = {0};
	memset(out, 0, sizeof(*out));
	out->caller_id = caller_id;
	if (db_tx_run(pool, 10000, create_key_fn, out, &err) != 0)
		fail_msg("create key for %s: %s", caller_id, err.msg);
}

static int revoke_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	return identity_key_revoke_tx(conn, arg, err);
}

static int expire_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return identity_key_set_expiry_tx(conn, arg, (int64_t)ts.tv_sec * 1000 - 1000, err);
}

static int disable_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	return identity_caller_set_disabled_tx(conn, arg, true, err);
}

static void run_tx(db_tx_fn fn, void *arg)
{
	struct mon_error err = {0};
	if (db_tx_run(pool, 10000, fn, arg, &err) != 0)
		fail_msg("transaction: %s", err.msg);
}

static struct identity_store *new_store(struct db_pool *p, struct db_bus *bus)
{
	struct identity_store *store = NULL;
	struct mon_error err = {0};
	if (identity_store_create(p, bus, &store, &err) != 0)
		fail_msg("identity_store_create: %s", err.msg);
	if (identity_store_reload(store, &err) != 0)
		fail_msg("identity_store_reload: %s", err.msg);
	assert_true(identity_store_is_loaded(store));
	return store;
}

static int auth(struct identity_store *store, const char *token, const char *cert, struct rpc_identity *who,
                struct mon_error *err)
{
	struct rpc_auth_request req = {
	        .method = "/monitoring.v1.HealthService/ListServices",
	        .min_role = RPC_ROLE_VIEWER,
	        .bearer_token = token,
	        .cert_subject = cert,
	        .peer = "ipv4:127.0.0.1:5555",
	        .request_id = "test",
	};
	return identity_authenticate(store, &req, who, err);
}

/* ---- tests ---- */

static void test_identity_key_authenticates(void **state)
{
	create_caller("alice", RPC_ROLE_EDITOR, NULL);
	struct key_arg key;
	create_key("alice", &key);
	assert_int_equal(strlen(key.token), 3 + 16 + 1 + 43);
	assert_memory_equal(key.token, "mk_", 3);
	assert_memory_equal(key.token + 3, key.info.id, 16);

	struct identity_store *store = new_store(pool, NULL);
	struct rpc_identity who;
	struct mon_error err = {0};
	assert_int_equal(auth(store, key.token, NULL, &who, &err), 0);
	assert_string_equal(who.caller_id, "alice");
	assert_string_equal(who.email, "alice@example.com");
	assert_string_equal(who.team, "sre");
	assert_int_equal(who.role, RPC_ROLE_EDITOR);
	assert_string_equal(who.auth_method, "api-key");
	assert_string_equal(who.key_id, key.info.id);
	identity_store_destroy(store);
}

static void test_identity_bad_credentials_refused(void **state)
{
	create_caller("bob", RPC_ROLE_VIEWER, NULL);
	struct key_arg good, revoked, expired;
	create_key("bob", &good);
	create_key("bob", &revoked);
	create_key("bob", &expired);
	run_tx(revoke_fn, revoked.info.id);
	run_tx(expire_fn, expired.info.id);

	struct identity_store *store = new_store(pool, NULL);
	struct rpc_identity who;
	struct mon_error err = {0};

	/* Wrong secret: the last character changed. */
	char wrong[IDENTITY_TOKEN_MAX];
	snprintf(wrong, sizeof(wrong), "%s", good.token);
	size_t last = strlen(wrong) - 1;
	wrong[last] = wrong[last] == 'A' ? 'B' : 'A';
	assert_int_equal(auth(store, wrong, NULL, &who, &err), MON_EUNAUTH);
	assert_string_equal(err.msg, "invalid or expired API key");
	assert_string_equal(who.caller_id, "");

	/* Unknown key id, well-formed. */
	char unknown[IDENTITY_TOKEN_MAX];
	snprintf(unknown, sizeof(unknown), "mk_0000000000000000_%.43s", good.token + 20);
	assert_int_equal(auth(store, unknown, NULL, &who, &err), MON_EUNAUTH);
	assert_string_equal(err.msg, "invalid or expired API key");

	assert_int_equal(auth(store, "garbage", NULL, &who, &err), MON_EUNAUTH);
	assert_int_equal(auth(store, revoked.token, NULL, &who, &err), MON_EUNAUTH);
	assert_int_equal(auth(store, expired.token, NULL, &who, &err), MON_EUNAUTH);

	/* No credentials at all. */
	assert_int_equal(auth(store, NULL, NULL, &who, &err), MON_EUNAUTH);
	assert_string_equal(err.msg,
	                    "missing credentials: send authorization: Bearer <api key> or a client certificate");

	/* The good key still works, until its caller is disabled. */
	assert_int_equal(auth(store, good.token, NULL, &who, &err), 0);
	run_tx(disable_fn, "bob");
	assert_int_equal(identity_store_reload(store, &err), 0);
	assert_int_equal(auth(store, good.token, NULL, &who, &err), MON_EUNAUTH);
	identity_store_destroy(store);
}

/*
 * Before the store has loaded (a database that does not answer yet), a
 * presented key cannot be checked: UNAVAILABLE, which callers retry, not
 * UNAUTHENTICATED, which would refuse a valid key for good.
 */
static void test_identity_not_loaded_is_unavailable(void **state)
{
	(void)state;
	struct db_pool *down = test_db_pool("host=127.0.0.1 port=1 dbname=none connect_timeout=1", 1);
	struct identity_store *store = NULL;
	struct mon_error err = {0};
	assert_int_equal(identity_store_create(down, NULL, &store, &err), 0);
	assert_false(identity_store_is_loaded(store));
	struct rpc_identity who;
	assert_int_equal(auth(store, "mon_abcdefghijklmnop_0123456789abcdef0123456789abcdef", NULL, &who, &err),
	                 MON_EUNAVAIL);
	assert_non_null(strstr(err.msg, "retry"));
	assert_int_equal(auth(store, NULL, NULL, &who, &err), MON_EUNAUTH); /* no credentials at all */
	identity_store_destroy(store);
	db_pool_destroy(down);
}

static void test_identity_cert_subject_maps(void **state)
{
	create_caller("deploy-bot", RPC_ROLE_ADMIN, "deploy-bot.example.com");
	struct identity_store *store = new_store(pool, NULL);
	struct rpc_identity who;
	struct mon_error err = {0};
	assert_int_equal(auth(store, NULL, "deploy-bot.example.com", &who, &err), 0);
	assert_string_equal(who.caller_id, "deploy-bot");
	assert_int_equal(who.role, RPC_ROLE_ADMIN);
	assert_string_equal(who.auth_method, "certificate");
	assert_string_equal(who.key_id, "");
	assert_int_equal(auth(store, NULL, "someone-else.example.com", &who, &err), MON_EUNAUTH);
	/* A bad key is refused even with a good certificate. */
	assert_int_equal(auth(store, "mk_bad", "deploy-bot.example.com", &who, &err), MON_EUNAUTH);
	identity_store_destroy(store);
}

static bool wait_connected(struct db_bus *bus)
{
	for (int waited = 0; waited < 5000; waited += 10) {
		if (db_bus_is_connected(bus))
			return true;
		test_sleep_ms(10);
	}
	return false;
}

static void test_identity_replica_sees_revocation(void **state)
{
	struct mon_error err = {0};
	create_caller("carol", RPC_ROLE_VIEWER, NULL);
	struct key_arg key;
	create_key("carol", &key);

	/* Two replicas: each with its own pool, bus and store. */
	struct db_pool *pool_b = test_db_pool(tdb.conninfo, 2);
	struct db_bus *bus_a = NULL, *bus_b = NULL;
	assert_int_equal(db_bus_create(tdb.conninfo, &bus_a, &err), 0);
	assert_int_equal(db_bus_create(tdb.conninfo, &bus_b, &err), 0);
	struct identity_store *a = new_store(pool, bus_a);
	struct identity_store *b = new_store(pool_b, bus_b);
	assert_int_equal(db_bus_start(bus_a, &err), 0);
	assert_int_equal(db_bus_start(bus_b, &err), 0);
	assert_true(wait_connected(bus_a));
	assert_true(wait_connected(bus_b));

	struct rpc_identity who;
	assert_int_equal(auth(a, key.token, NULL, &who, &err), 0);
	assert_int_equal(auth(b, key.token, NULL, &who, &err), 0);

	run_tx(revoke_fn, key.info.id); /* through replica a's pool */
	int rc = 0;
	for (int waited = 0; waited < 5000; waited += 20) {
		rc = auth(b, key.token, NULL, &who, &err);
		if (rc == MON_EUNAUTH)
			break;
		test_sleep_ms(20);
	}
	assert_int_equal(rc, MON_EUNAUTH);

	db_bus_destroy(bus_a);
	db_bus_destroy(bus_b);
	identity_store_destroy(a);
	identity_store_destroy(b);
	db_pool_destroy(pool_b);
}

static void assert_absent(const char *haystack, const char *needle, const char *what)
{
	if (needle[0] != '\0' && strstr(haystack, needle) != NULL)
		fail_msg("tb_api_key holds the %s in clear", what);
}

static void test_identity_database_holds_no_key_in_clear(void **state)
{
	create_caller("dave", RPC_ROLE_VIEWER, NULL);
	struct key_arg key;
	create_key("dave", &key);

	char key_id[IDENTITY_KEY_ID_LEN + 1];
	unsigned char secret[32];
	struct mon_error err = {0};
	assert_int_equal(identity_token_parse(key.token, key_id, secret, &err), 0);
	char secret_hex[65];
	sodium_bin2hex(secret_hex, sizeof(secret_hex), secret, sizeof(secret));
	const char *secret_b64 = key.token + 20;
	char secret_b64_head[17];
	snprintf(secret_b64_head, sizeof(secret_b64_head), "%.16s", secret_b64);

	/* Every column of every row, as text, and the hash column as hex. */
	struct db_conn *c = NULL;
	struct db_result *res = NULL;
	assert_int_equal(db_pool_acquire(pool, 5000, &c, &err), 0);
	assert_int_equal(
	        db_exec(c,
	                "SELECT row_to_json(k)::text, encode(secret_hash, 'hex'), encode(secret_hash, 'base64') "
	                "FROM tb_api_key k",
	                0, NULL, &res, &err),
	        0);
	assert_true(db_result_rows(res) >= 1);
	for (int r = 0; r < db_result_rows(res); r++) {
		for (int col = 0; col < 3; col++) {
			const char *v = db_result_value(res, r, col);
			assert_absent(v, key.token, "token");
			assert_absent(v, secret_b64, "secret (base64url)");
			assert_absent(v, secret_b64_head, "secret (base64url prefix)");
			assert_absent(v, secret_hex, "secret (hex)");
		}
	}
	db_result_free(res);
	db_pool_release(pool, c);
}

struct hammer {
	struct identity_store *store;
	const char *token;
	atomic_bool *should_stop;
	long ok;
	long refused;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	while (!atomic_load(h->should_stop)) {
		struct rpc_identity who;
		struct mon_error err = {0};
		if (auth(h->store, h->token, NULL, &who, &err) == 0 && strcmp(who.caller_id, "erin") == 0)
			h->ok++;
		else
			h->refused++;
	}
	return NULL;
}

/* Readers never see a freed or half-built snapshot while reloads swap it. */
static void test_identity_reload_under_load(void **state)
{
	create_caller("erin", RPC_ROLE_VIEWER, NULL);
	struct key_arg key;
	create_key("erin", &key);
	struct identity_store *store = new_store(pool, NULL);
	atomic_bool should_stop;
	atomic_init(&should_stop, false);
	struct hammer h[4];
	pthread_t threads[4];
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){.store = store, .token = key.token, .should_stop = &should_stop};
		assert_int_equal(pthread_create(&threads[i], NULL, hammer_main, &h[i]), 0);
	}
	struct mon_error err = {0};
	for (int i = 0; i < 30; i++) {
		assert_int_equal(identity_store_reload(store, &err), 0);
		identity_store_request_reload(store);
	}
	atomic_store(&should_stop, true);
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(h[i].refused, 0);
		assert_true(h[i].ok > 0);
	}
	identity_store_destroy(store);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_identity_key_authenticates),
	        cmocka_unit_test(test_identity_bad_credentials_refused),
	        cmocka_unit_test(test_identity_not_loaded_is_unavailable),
	        cmocka_unit_test(test_identity_cert_subject_maps),
	        cmocka_unit_test(test_identity_replica_sees_revocation),
	        cmocka_unit_test(test_identity_database_holds_no_key_in_clear),
	        cmocka_unit_test(test_identity_reload_under_load),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
