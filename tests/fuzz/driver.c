/*
 * Runs a fuzz target without libFuzzer, so every build exercises it: the
 * inputs given as files or directories (a harness's corpus, every file in
 * it), then a fixed number of deterministic random mutations of them (and
 * of random bytes). Under ASan+UBSan this finds the shallow bugs and keeps
 * the inputs that once found a bug from finding it again; MON_FUZZ=ON
 * builds the real libFuzzer harness for depth.
 *
 *   <harness>_smoke [-runs=N] [FILE | DIR]...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEED_MAX 512
#define INPUT_MAX 4096

struct seed {
	size_t len;
	uint8_t bytes[INPUT_MAX];
};

static struct seed seeds[SEED_MAX];
static size_t seed_count;
static long replayed;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Runs the target on the file at path (whole, however long) and keeps its start as a seed. */
static void replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return;
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		uint8_t *bigger = realloc(buf, cap * 2);
		if (bigger == NULL) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = bigger;
		cap *= 2;
	}
	fclose(f);
	if (buf == NULL) {
		fprintf(stderr, "fuzz driver: out of memory reading %s\n", path);
		exit(2);
	}
	LLVMFuzzerTestOneInput(buf, n);
	replayed++;
	if (seed_count < SEED_MAX) {
		struct seed *s = &seeds[seed_count++];
		s->len = n < INPUT_MAX ? n : INPUT_MAX;
		memcpy(s->bytes, buf, s->len);
	}
	free(buf);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file in dir, in name order (so runs repeat exactly). */
static void replay_dir(const char *dir, DIR *d)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **bigger = realloc(names, cap * sizeof(*names));
			if (bigger == NULL)
				exit(2);
			names = bigger;
		}
		names[n] = strdup(e->d_name);
		if (names[n] == NULL)
			exit(2);
		n++;
	}
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		replay_file(path);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	long iterations = 20000;
	static uint8_t buf[INPUT_MAX];
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "-runs=", 6) == 0) {
			iterations = strtol(argv[i] + 6, NULL, 10);
			continue;
		}
		DIR *d = opendir(argv[i]);
		if (d != NULL) {
			replay_dir(argv[i], d);
			closedir(d);
		} else {
			replay_file(argv[i]);
		}
	}
	for (long it = 0; it < iterations; it++) {
		size_t n;
		if (seed_count > 0 && (it & 1)) {
			const struct seed *s = &seeds[next_rand() % seed_count];
			n = s->len;
			memcpy(buf, s->bytes, n);
			if (n > 0) {
				for (int k = 0; k < 4; k++)
					buf[next_rand() % n] = (uint8_t)next_rand();
			}
			if ((it & 6) == 2 && n > 1)
				n = 1 + next_rand() % n; /* cut short */
		} else {
			n = next_rand() % 256;
			for (size_t k = 0; k < n; k++)
				buf[k] = (uint8_t)next_rand();
			/* Bias towards valid-looking tags and lengths. */
			for (size_t k = 0; k + 1 < n; k += 1 + next_rand() % 8)
				buf[k] = (uint8_t)(((next_rand() % 20) + 1) << 3 | (next_rand() % 3 == 0 ? 2 : 0));
		}
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz driver: %ld corpus files, %ld mutated inputs, no crash\n", replayed, iterations);
	return 0;
}
