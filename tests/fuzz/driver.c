/*
 * Runs a fuzz target without libFuzzer, so every build exercises it: the
 * seed inputs given as files, then a fixed number of deterministic random
 * mutations of them (and of random bytes). Under ASan+UBSan this finds the
 * shallow bugs; MON_FUZZ=ON builds the real libFuzzer harness for depth.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	long iterations = 20000;
	uint8_t buf[4096];
	size_t seed_len = 0;
	uint8_t seed[4096];
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "-runs=", 6) == 0) {
			iterations = strtol(argv[i] + 6, NULL, 10);
			continue;
		}
		FILE *f = fopen(argv[i], "rb");
		if (f == NULL)
			continue;
		size_t n = fread(seed, 1, sizeof(seed), f);
		fclose(f);
		LLVMFuzzerTestOneInput(seed, n);
		seed_len = n;
	}
	for (long it = 0; it < iterations; it++) {
		size_t n;
		if (seed_len > 0 && (it & 1)) {
			n = seed_len;
			memcpy(buf, seed, n);
			for (int k = 0; k < 4; k++)
				buf[next_rand() % n] = (uint8_t)next_rand();
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
	printf("fuzz driver: %ld inputs, no crash\n", iterations);
	return 0;
}
