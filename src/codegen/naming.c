/*
 * protoc-c's naming rules and ours (see naming.h). The rules work on ASCII
 * bytes only, as protoc-c's do in the "C" locale, so they never depend on
 * the generator's locale.
 */
#include "naming.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static bool is_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_alnum(char c)
{
	return is_upper(c) || is_lower(c) || (c >= '0' && c <= '9');
}

static char to_lower(char c)
{
	return is_upper(c) ? (char)(c - 'A' + 'a') : c;
}

static char to_upper(char c)
{
	return is_lower(c) ? (char)(c - 'a' + 'A') : c;
}

static void camel_to_case(struct strbuf *sb, const char *name, bool upper)
{
	bool was_upper = true; /* no '_' before a leading capital */

	for (const char *p = name; *p; p++) {
		bool up = is_upper(*p);
		if (up && !was_upper)
			sb_append_c(sb, '_');
		sb_append_c(sb, upper ? to_upper(*p) : to_lower(*p));
		was_upper = up;
	}
}

static void to_camel(struct strbuf *sb, const char *name, size_t n)
{
	bool next_upper = true;

	for (size_t i = 0; i < n; i++) {
		if (name[i] == '_') {
			next_upper = true;
		} else if (next_upper) {
			sb_append_c(sb, to_upper(name[i]));
			next_upper = false;
		} else {
			sb_append_c(sb, name[i]);
		}
	}
}

enum piece_rule { PIECE_LOWER, PIECE_UPPER, PIECE_CAMEL };

/* Splits on '.', skips empty pieces, converts each and joins with "__". */
static char *full_name(const char *name, enum piece_rule rule)
{
	struct strbuf sb = STRBUF_INIT;
	struct strbuf piece = STRBUF_INIT;
	bool first = true;
	const char *p = name;

	sb_append(&sb, "");
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		if (n > 0) {
			if (!first)
				sb_append(&sb, "__");
			first = false;
			if (rule == PIECE_CAMEL) {
				to_camel(&sb, p, n);
			} else {
				sb_release(&piece);
				sb_append_n(&piece, p, n);
				camel_to_case(&sb, sb_str(&piece), rule == PIECE_UPPER);
				if (sb_failed(&piece))
					sb.failed = true;
			}
		}
		p += n;
		if (*p == '.')
			p++;
	}
	sb_release(&piece);
	return sb_take(&sb);
}

char *naming_camel_to_lower(const char *name)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "");
	camel_to_case(&sb, name, false);
	return sb_take(&sb);
}

char *naming_camel_to_upper(const char *name)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "");
	camel_to_case(&sb, name, true);
	return sb_take(&sb);
}

char *naming_to_camel(const char *name)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "");
	to_camel(&sb, name, strlen(name));
	return sb_take(&sb);
}

char *naming_full_name_to_c(const char *name)
{
	return full_name(name, PIECE_CAMEL);
}

char *naming_full_name_to_lower(const char *name)
{
	return full_name(name, PIECE_LOWER);
}

char *naming_full_name_to_upper(const char *name)
{
	return full_name(name, PIECE_UPPER);
}

char *naming_message_descriptor(const char *name)
{
	struct strbuf sb = STRBUF_INIT;
	char *lower = naming_full_name_to_lower(name);

	if (lower == NULL)
		return NULL;
	sb_append(&sb, lower);
	sb_append(&sb, "__descriptor");
	free(lower);
	return sb_take(&sb);
}

char *naming_c_full_name(const char *name, const char *package, const char *c_package)
{
	struct strbuf sb = STRBUF_INIT;
	size_t pkg_n = package ? strlen(package) : 0;

	if (*name == '.')
		name++;
	if (c_package == NULL) {
		sb_append(&sb, name);
		return sb_take(&sb);
	}
	/* Strip "package." and put "c_package." in its place. */
	if (pkg_n > 0 && strncmp(name, package, pkg_n) == 0 && name[pkg_n] == '.')
		name += pkg_n + 1;
	if (*c_package) {
		sb_append(&sb, c_package);
		sb_append_c(&sb, '.');
	}
	sb_append(&sb, name);
	return sb_take(&sb);
}

static bool has_suffix(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

char *naming_strip_proto(const char *file_name)
{
	struct strbuf sb = STRBUF_INIT;
	size_t n = strlen(file_name);

	if (has_suffix(file_name, n, ".protodevel"))
		n -= strlen(".protodevel");
	else if (has_suffix(file_name, n, ".proto"))
		n -= strlen(".proto");
	sb_append(&sb, "");
	sb_append_n(&sb, file_name, n);
	return sb_take(&sb);
}

char *naming_server_prefix(const char *package, const char *service)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "");
	if (package != NULL && *package) {
		for (const char *p = package; *p; p++)
			sb_append_c(&sb, *p == '.' ? '_' : *p);
		sb_append_c(&sb, '_');
	}
	camel_to_case(&sb, service, false);
	return sb_take(&sb);
}

char *naming_client_prefix(const char *service)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "mon_");
	camel_to_case(&sb, service, false);
	return sb_take(&sb);
}

char *naming_include_guard(const char *file_name)
{
	struct strbuf sb = STRBUF_INIT;

	sb_append(&sb, "MON_GEN_");
	for (const char *p = file_name; *p; p++)
		sb_append_c(&sb, is_alnum(*p) ? to_upper(*p) : '_');
	return sb_take(&sb);
}
