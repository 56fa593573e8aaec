/*
 * Unit tests of how the code generator turns proto comments into text
 * (src/codegen/comment.c): method summaries, C string literals and doc
 * comment bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "comment.h"

static void check_summary(const char *comment, const char *want)
{
	char *got = comment_summary(comment);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_codegen_summary_first_sentence(void **state)
{
	(void)state;
	check_summary(" Lists alerts. Newest first.\n", "Lists alerts.");
	check_summary(" Lists alerts, newest\n first. Paged.\n", "Lists alerts, newest first.");
	check_summary(" Ends with a period.", "Ends with a period.");
	check_summary(" No period at all\n", "No period at all");
	check_summary("Version 1.2 is not a sentence end. Next.", "Version 1.2 is not a sentence end.");
	check_summary("A period at the line end.\nNext line.", "A period at the line end.");
}

static void test_codegen_summary_whitespace(void **state)
{
	(void)state;
	check_summary("  \t Spaced \t\n\n  out   words.  \n", "Spaced out words.");
	check_summary(NULL, "");
	check_summary("", "");
	check_summary(" \n\t \n", "");
}

static void test_codegen_summary_abbreviations(void **state)
{
	(void)state;
	check_summary(" Filters, e.g. by team. Then more.", "Filters, e.g. by team.");
	check_summary(" Same key (i.e. the fingerprint). More.", "Same key (i.e. the fingerprint).");
	/* Only whole words: "Apple.g. " is not "e.g.". */
	check_summary("Seethe.g. Two.", "Seethe.g.");
}

static void test_codegen_summary_long(void **state)
{
	char text[400];
	(void)state;

	/* 60 five-letter words: cut at a word boundary, marked with "...". */
	for (size_t i = 0; i < 60; i++)
		memcpy(text + 5 * i, "word ", 5);
	text[300] = '\0';
	char *got = comment_summary(text);
	assert_non_null(got);
	assert_true(strlen(got) <= COMMENT_SUMMARY_MAX + 3);
	assert_true(strlen(got) > COMMENT_SUMMARY_MAX - 10);
	assert_string_equal(got + strlen(got) - 7, "word...");
	free(got);

	/* One long word: cut at a UTF-8 boundary, never inside a character. */
	size_t n = 0;
	while (n + 2 < sizeof(text) - 1) {
		text[n++] = (char)0xC3; /* "é" */
		text[n++] = (char)0xA9;
	}
	text[n] = '\0';
	got = comment_summary(text);
	assert_non_null(got);
	size_t len = strlen(got) - 3;
	assert_string_equal(got + len, "...");
	assert_int_equal(len % 2, 0);
	free(got);
}

static void check_c_string(const char *s, const char *want)
{
	struct strbuf sb = STRBUF_INIT;

	comment_c_string(&sb, s);
	assert_false(sb_failed(&sb));
	assert_string_equal(sb_str(&sb), want);
	sb_release(&sb);
}

static void test_codegen_role_from_comment(void **state)
{
	(void)state;
	assert_int_equal(comment_role("Lists alerts.\n\nRole: viewer. Errors: NOT_FOUND."), 1);
	assert_int_equal(comment_role("Creates a rule. Role: editor"), 2);
	assert_int_equal(comment_role("Rotates the key.\nrole:\tADMIN."), 3);
	assert_int_equal(comment_role("No role here."), 0);
	assert_int_equal(comment_role(NULL), 0);
	assert_int_equal(comment_role("Role: superuser."), -1);
	assert_int_equal(comment_role("Role: viewers only"), -1);  /* a whole word, not a prefix */
	assert_int_equal(comment_role("The controle: viewer"), 0); /* "Role:" must start a word */
}

static void test_codegen_c_string(void **state)
{
	(void)state;
	check_c_string("plain", "\"plain\"");
	check_c_string("", "\"\"");
	check_c_string("say \"hi\" \\ now", "\"say \\\"hi\\\" \\\\ now\"");
	check_c_string("tab\tnl\n", "\"tab\\tnl\\n\"");
	/* No trigraph can form: "??/" would otherwise become a backslash. */
	check_c_string("what?"
	               "?/",
	               "\"what?\\?/\"");
	check_c_string("?"
	               "?"
	               "?",
	               "\"?\\?\\?\"");
	/* Octal escapes: a following digit cannot extend them. */
	check_c_string("\x01"
	               "7",
	               "\"\\0017\"");
	check_c_string("caf\xC3\xA9", "\"caf\\303\\251\"");
}

static void check_block(const char *text, const char *want)
{
	struct strbuf sb = STRBUF_INIT;

	comment_block_lines(&sb, text, "");
	assert_false(sb_failed(&sb));
	assert_string_equal(sb_str(&sb), want);
	sb_release(&sb);
}

static void test_codegen_doc_comment(void **state)
{
	(void)state;
	check_block(" Line one.\n Line two.\n", " * Line one.\n * Line two.\n");
	check_block("\n\n Text.  \n\n", " * Text.\n");
	check_block(" A\n\n B\n", " * A\n *\n * B\n");
	/* The comment cannot be closed or nested from inside. */
	check_block(" ends */ here /* opens\n", " * ends * / here / * opens\n");
	check_block("/ starts with a slash\n", " * / starts with a slash\n");
	check_block(NULL, "");
	check_block("  \n ", "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_codegen_summary_first_sentence),
	        cmocka_unit_test(test_codegen_summary_whitespace),
	        cmocka_unit_test(test_codegen_summary_abbreviations),
	        cmocka_unit_test(test_codegen_summary_long),
	        cmocka_unit_test(test_codegen_role_from_comment),
	        cmocka_unit_test(test_codegen_c_string),
	        cmocka_unit_test(test_codegen_doc_comment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
