/*
 * The prober's network policy (see netpolicy.h): CIDR lists parsed once at
 * start, matched against every address a probe is about to connect to.
 * Addresses are compared as 16-byte IPv6, IPv4 in its mapped form, so one
 * comparison serves both families and the mapped forms of IPv4 ranges.
 */
#include "health/netpolicy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_MAX 64 /* bytes of one list item ("ffff:...:ffff/128" fits) */

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* True when the bits of addr past prefix_len are all zero. */
static bool host_bits_clear(const uint8_t addr[16], int prefix_len)
{
	for (int bit = prefix_len; bit < 128; bit++) {
		if (addr[bit / 8] & (0x80u >> (bit % 8)))
			return false;
	}
	return true;
}

/*
 * Reads an IPv4 or IPv6 address in text form into addr as 16-byte IPv6
 * (IPv4 in its mapped form); returns AF_INET, AF_INET6, or 0 when text is
 * neither.
 */
static int addr_parse(const char *text, uint8_t addr[16])
{
	struct in_addr v4;
	if (inet_pton(AF_INET, text, &v4) == 1) {
		memcpy(addr, v4_mapped_prefix, sizeof(v4_mapped_prefix));
		memcpy(addr + 12, &v4, 4);
		return AF_INET;
	}
	return inet_pton(AF_INET6, text, addr) == 1 ? AF_INET6 : 0;
}

static bool net_contains(const struct netpolicy_net *n, const uint8_t addr[16])
{
	int full = n->prefix_len / 8, rest = n->prefix_len % 8;
	if (memcmp(n->addr, addr, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (n->addr[full] & mask) == (addr[full] & mask);
}

/* Parses one item ("a.b.c.d[/n]" or "x::y[/n]", already trimmed). */
static int parse_item(const char *setting, const char *item, struct netpolicy_net *out, struct mon_error *err)
{
	char text[ITEM_MAX];
	size_t len = strlen(item);
	if (len == 0 || len >= sizeof(text))
		return mon_error_set(err, MON_EINVAL, "%s: \"%.64s\" is not a network (address/prefix)", setting, item);
	memcpy(text, item, len + 1);
	char *slash = strchr(text, '/');
	long prefix = -1;
	if (slash != NULL) {
		*slash = '\0';
		char *end = NULL;
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (errno != 0 || end == slash + 1 || *end != '\0' || prefix < 0)
			return mon_error_set(err, MON_EINVAL, "%s: \"%s\" has a bad prefix length", setting, item);
	}
	memset(out, 0, sizeof(*out));
	switch (addr_parse(text, out->addr)) {
	case AF_INET:
		if (prefix > 32)
			return mon_error_set(err, MON_EINVAL, "%s: \"%s\": an IPv4 prefix is at most 32", setting,
			                     item);
		out->prefix_len = 96 + (int)(prefix < 0 ? 32 : prefix);
		break;
	case AF_INET6:
		if (prefix > 128)
			return mon_error_set(err, MON_EINVAL, "%s: \"%s\": an IPv6 prefix is at most 128", setting,
			                     item);
		out->prefix_len = (int)(prefix < 0 ? 128 : prefix);
		break;
	default: return mon_error_set(err, MON_EINVAL, "%s: \"%s\" is not an IPv4 or IPv6 network", setting, item);
	}
	if (!host_bits_clear(out->addr, out->prefix_len))
		return mon_error_set(err, MON_EINVAL, "%s: \"%s\" has bits set past its prefix length", setting, item);
	return 0;
}

int netpolicy_parse_list(const char *setting, const char *text, struct netpolicy_net *out, size_t *out_n,
                         struct mon_error *err)
{
	*out_n = 0;
	if (text == NULL)
		return 0;
	const char *p = text;
	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		const char *b = p, *e = end;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e > b) {
			char item[ITEM_MAX];
			size_t n = (size_t)(e - b);
			if (n >= sizeof(item))
				return mon_error_set(err, MON_EINVAL, "%s: \"%.64s...\" is not a network", setting, b);
			memcpy(item, b, n);
			item[n] = '\0';
			if (*out_n >= NETPOLICY_NETWORKS_MAX)
				return mon_error_set(err, MON_EINVAL, "%s: at most %d networks", setting,
				                     NETPOLICY_NETWORKS_MAX);
			int rc = parse_item(setting, item, &out[*out_n], err);
			if (rc != 0)
				return rc;
			(*out_n)++;
		} else if (comma != NULL) {
			return mon_error_set(err, MON_EINVAL, "%s: empty item in the list", setting);
		}
		p = comma ? comma + 1 : end;
	}
	return 0;
}

int netpolicy_init(struct netpolicy *p, const char *allow, const char *deny, struct mon_error *err)
{
	memset(p, 0, sizeof(*p));
	int rc = netpolicy_parse_list("probe-allow-networks", allow, p->allow, &p->allow_n, err);
	if (rc == 0)
		rc = netpolicy_parse_list("probe-deny-networks", deny ? deny : NETPOLICY_DENY_DEFAULT, p->deny,
		                          &p->deny_n, err);
	return rc;
}

bool netpolicy_allows_v6(const struct netpolicy *p, const uint8_t addr[16])
{
	for (size_t i = 0; i < p->deny_n; i++) {
		if (net_contains(&p->deny[i], addr))
			return false;
	}
	if (p->allow_n == 0)
		return true;
	for (size_t i = 0; i < p->allow_n; i++) {
		if (net_contains(&p->allow[i], addr))
			return true;
	}
	return false;
}

bool netpolicy_allows_sockaddr(const struct netpolicy *p, const struct sockaddr *sa, size_t sa_len)
{
	uint8_t addr[16];
	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET && sa_len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		memcpy(addr, v4_mapped_prefix, sizeof(v4_mapped_prefix));
		memcpy(addr + 12, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 && sa_len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		memcpy(addr, &in6->sin6_addr, 16);
	} else {
		return false;
	}
	return netpolicy_allows_v6(p, addr);
}

bool netpolicy_allows_host_literal(const struct netpolicy *p, const char *host, bool *is_literal)
{
	char text[ITEM_MAX];
	size_t len = strlen(host);
	*is_literal = false;
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(text))
		return true;
	memcpy(text, host, len);
	text[len] = '\0';
	char *zone = strchr(text, '%'); /* fe80::1%eth0: the zone does not change the address */
	if (zone != NULL)
		*zone = '\0';
	uint8_t addr[16];
	if (addr_parse(text, addr) == 0)
		return true;
	*is_literal = true;
	return netpolicy_allows_v6(p, addr);
}
