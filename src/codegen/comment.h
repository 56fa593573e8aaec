/*
 * Turning proto comments into generated text: the one-sentence summary that
 * goes into method tables, C string literals, and doc comments that cannot
 * break out of their block.
 */
#ifndef MON_CODEGEN_COMMENT_H
#define MON_CODEGEN_COMMENT_H

#include "strbuf.h"

/* Longest summary in bytes, before the "..." that marks a cut. */
#define COMMENT_SUMMARY_MAX 200

/*
 * The first sentence of a proto comment, for a method's summary: whitespace
 * runs collapse to one space, and the text ends after the first ". " (the
 * period kept; "e.g." and "i.e." do not end a sentence) or at the end of
 * the comment. Longer than COMMENT_SUMMARY_MAX bytes, it is cut at a word
 * boundary and ends in "...". NULL or blank input gives "". Returns a new
 * string (free with free) or NULL when out of memory.
 */
char *comment_summary(const char *comment);

/*
 * Appends s as a C string literal, quotes included. Quotes, backslashes,
 * control and non-ASCII bytes are escaped (octal, so a following digit
 * cannot extend the escape), and "??" is written "?\?" so that no trigraph
 * forms under -std=c11.
 */
void comment_c_string(struct strbuf *sb, const char *s);

/*
 * Appends the lines of text as the body of a block comment: each line is
 * written as `indent " *" line`, trailing whitespace removed, with "*" "/"
 * and "/" "*" split apart so that the comment cannot end early or nest.
 * Leading and trailing blank lines are dropped. Nothing is appended for
 * NULL or blank text.
 */
void comment_block_lines(struct strbuf *sb, const char *text, const char *indent);

/*
 * The role a method's comment declares with "Role: viewer", "Role: editor"
 * or "Role: admin" (the word "Role:" at the start of a word, any case):
 * 1, 2 or 3; 0 when the comment declares none; -1 when "Role:" is followed
 * by anything else.
 */
int comment_role(const char *comment);

/* True when text is NULL or holds only whitespace. */
int comment_is_blank(const char *text);

#endif
