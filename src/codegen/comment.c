/*
 * Summaries, C string literals and doc comments made from proto comments
 * (see comment.h).
 */
#include "comment.h"

#include <stdbool.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int comment_is_blank(const char *text)
{
	if (text == NULL)
		return 1;
	for (const char *p = text; *p; p++)
		if (!is_space(*p))
			return 0;
	return 1;
}

/* True when the period at s[i] closes an abbreviation such as "e.g." or "i.e.". */
static bool is_abbreviation(const char *s, size_t i)
{
	static const char *const abbrevs[] = {"e.g", "i.e", "E.g", "I.e"};

	for (size_t k = 0; k < sizeof(abbrevs) / sizeof(abbrevs[0]); k++) {
		size_t n = strlen(abbrevs[k]);
		if (i < n || memcmp(s + i - n, abbrevs[k], n) != 0)
			continue;
		if (i == n || is_space(s[i - n - 1]) || s[i - n - 1] == '(')
			return true;
	}
	return false;
}

char *comment_summary(const char *comment)
{
	struct strbuf flat = STRBUF_INIT;
	struct strbuf out = STRBUF_INIT;
	bool pending_space = false;
	char *result = NULL;

	/* Collapse whitespace runs; drop leading and trailing whitespace. */
	sb_append(&flat, "");
	for (const char *p = comment ? comment : ""; *p; p++) {
		if (is_space(*p)) {
			pending_space = flat.len > 0;
			continue;
		}
		if (pending_space)
			sb_append_c(&flat, ' ');
		pending_space = false;
		sb_append_c(&flat, *p);
	}
	if (sb_failed(&flat))
		goto out;

	const char *s = sb_str(&flat);
	size_t n = flat.len;
	for (size_t i = 0; i + 1 < n; i++) {
		if (s[i] == '.' && s[i + 1] == ' ' && !is_abbreviation(s, i)) {
			n = i + 1;
			break;
		}
	}
	if (n > COMMENT_SUMMARY_MAX) {
		/* Cut at the last space that fits, else at a UTF-8 boundary. */
		size_t cut = COMMENT_SUMMARY_MAX;
		while (cut > 0 && s[cut] != ' ')
			cut--;
		if (cut == 0) {
			cut = COMMENT_SUMMARY_MAX;
			while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
				cut--;
		}
		while (cut > 0 && (s[cut - 1] == ' ' || s[cut - 1] == ',' || s[cut - 1] == ';'))
			cut--;
		sb_append_n(&out, s, cut);
		sb_append(&out, "...");
	} else {
		sb_append(&out, "");
		sb_append_n(&out, s, n);
	}
	result = sb_take(&out);
out:
	sb_release(&flat);
	sb_release(&out);
	return result;
}

void comment_c_string(struct strbuf *sb, const char *s)
{
	sb_append_c(sb, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': sb_append(sb, "\\\""); break;
		case '\\': sb_append(sb, "\\\\"); break;
		case '\n': sb_append(sb, "\\n"); break;
		case '\t': sb_append(sb, "\\t"); break;
		case '?': sb_append(sb, p[1] == '?' ? "?\\" : "?"); break;
		default:
			if (*p < 0x20 || *p >= 0x7F)
				sb_printf(sb, "\\%03o", (unsigned)*p);
			else
				sb_append_c(sb, (char)*p);
		}
	}
	sb_append_c(sb, '"');
}

void comment_block_lines(struct strbuf *sb, const char *text, const char *indent)
{
	if (comment_is_blank(text))
		return;

	/* Skip leading blank lines; find where trailing ones start. */
	const char *p = text;
	for (;;) {
		const char *eol = strchr(p, '\n');
		const char *q = p;
		while (q < (eol ? eol : p + strlen(p)) && is_space(*q))
			q++;
		if (eol == NULL || q < eol)
			break;
		p = eol + 1;
	}
	const char *end = text + strlen(text);
	while (end > p && is_space(end[-1]))
		end--;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end;
		const char *e = line_end;
		while (e > p && is_space(e[-1]))
			e--;
		char prev = '*';
		sb_append(sb, indent);
		sb_append(sb, " *");
		for (const char *c = p; c < e; c++) {
			/* Split "*" "/" and "/" "*" with a space. */
			if ((prev == '*' && *c == '/') || (prev == '/' && *c == '*'))
				sb_append_c(sb, ' ');
			sb_append_c(sb, *c);
			prev = *c;
		}
		sb_append_c(sb, '\n');
		p = eol ? eol + 1 : end;
	}
}

int comment_role(const char *comment)
{
	static const char *const names[] = {"viewer", "editor", "admin"};
	if (comment == NULL)
		return 0;
	for (const char *p = comment; *p; p++) {
		if (strncasecmp(p, "role:", 5) != 0 || (p > comment && isalnum((unsigned char)p[-1])))
			continue;
		const char *w = p + 5;
		while (*w == ' ' || *w == '\t' || *w == '\n')
			w++;
		for (int i = 0; i < 3; i++) {
			size_t n = strlen(names[i]);
			if (strncasecmp(w, names[i], n) == 0 && !isalnum((unsigned char)w[n]))
				return i + 1;
		}
		return -1;
	}
	return 0;
}
