/*
 * Fuzz target: the URLs monitord takes from callers and later fetches. A
 * service's health_check_url is checked by HealthService
 * (health_check_url, server/health/services_api.c) and probed by the
 * prober (server/health/prober.c): http(s) through libcurl, grpc:// split
 * into a channel target and a service name. What the check accepts the
 * prober must be able to use, and nothing else:
 * - an accepted http(s) URL parses with libcurl's URL parser;
 * - an accepted grpc:// URL splits into the host[:port] the check saw and
 *   the service after the first '/', without query or fragment.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "health/prober.h"
#include "health/service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024)
		return 0;
	char url[1025];
	memcpy(url, data, size);
	url[size] = '\0';
	struct mon_error err;
	if (health_check_url("health_check_url", url, &err) != 0 || url[0] == '\0')
		return 0;
	if (strncmp(url, "grpc://", 7) == 0) {
		char *target = NULL, *service = NULL;
		if (prober_grpc_url_split(url, &target, &service) != 0)
			abort(); /* accepted, but the prober cannot use it */
		const char *rest = url + 7;
		size_t authority_n = strcspn(rest, "/?#");
		if (strlen(target) != authority_n || strncmp(target, rest, authority_n) != 0)
			abort(); /* the prober would dial another target than the one checked */
		const char *path = rest[authority_n] == '/' ? rest + authority_n + 1 : "";
		size_t path_n = strcspn(path, "?#");
		if (strlen(service) != path_n || strncmp(service, path, path_n) != 0)
			abort(); /* the service is the path, without query or fragment */
		free(target);
		free(service);
		return 0;
	}
	CURLU *u = curl_url();
	if (u == NULL)
		return 0;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		abort(); /* accepted, but libcurl will not fetch it */
	curl_url_cleanup(u);
	return 0;
}
