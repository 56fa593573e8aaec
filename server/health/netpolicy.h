/*
 * Which network addresses the health prober may connect to: an allow list
 * and a deny list of CIDR networks (IPv4 and IPv6), from the settings
 * probe-allow-networks and probe-deny-networks. An address passes when the
 * allow list is empty or holds it, and the deny list does not: deny wins.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4
 * address it carries, so "169.254.0.0/16" also covers ::ffff:169.254.0.0/112
 * and an IPv6 listing of a mapped range covers the plain IPv4 form.
 *
 * Pure and immutable once parsed: a policy is shared by every probe thread
 * without a lock.
 */
#ifndef MON_SERVER_HEALTH_NETPOLICY_H
#define MON_SERVER_HEALTH_NETPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/error.h"

/* The deny list when probe-deny-networks is not set: link-local, IPv4 and IPv6. */
#define NETPOLICY_DENY_DEFAULT "169.254.0.0/16,fe80::/10"

#define NETPOLICY_NETWORKS_MAX 64 /* networks in one list */

/* One network; IPv4 networks are stored as IPv4-mapped IPv6 (prefix + 96). */
struct netpolicy_net {
	uint8_t addr[16];
	int prefix_len; /* 0..128 */
};

struct netpolicy {
	struct netpolicy_net allow[NETPOLICY_NETWORKS_MAX];
	size_t allow_n;
	struct netpolicy_net deny[NETPOLICY_NETWORKS_MAX];
	size_t deny_n;
};

/*
 * Parses a comma-separated list of networks ("10.0.0.0/8, fd00::/8,
 * 192.0.2.7"; a bare address is a single host; spaces around items are
 * ignored; NULL or "" is an empty list) into out (at most
 * NETPOLICY_NETWORKS_MAX). Host bits set below the prefix are an error, so
 * a typo such as 10.1.0.0/8 is caught. Returns 0 or MON_EINVAL with a
 * message that starts with setting and quotes the bad item.
 */
int netpolicy_parse_list(const char *setting, const char *text, struct netpolicy_net *out, size_t *out_n,
                         struct mon_error *err) MON_MUST_CHECK;

/*
 * Fills p from the two lists' text; deny NULL means NETPOLICY_DENY_DEFAULT
 * ("" means no deny list). Errors as netpolicy_parse_list, naming
 * probe-allow-networks or probe-deny-networks.
 */
int netpolicy_init(struct netpolicy *p, const char *allow, const char *deny, struct mon_error *err) MON_MUST_CHECK;

/* True when the 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d) passes p. */
bool netpolicy_allows_v6(const struct netpolicy *p, const uint8_t addr[16]);

/* True when sa (AF_INET or AF_INET6) passes p; any other family is refused. */
bool netpolicy_allows_sockaddr(const struct netpolicy *p, const struct sockaddr *sa, size_t sa_len);

/*
 * When host (a URL's host part, IPv6 possibly in brackets) is an IP literal,
 * sets *is_literal and returns whether p allows it; a host name gives
 * *is_literal false and true (it is judged when it is resolved).
 */
bool netpolicy_allows_host_literal(const struct netpolicy *p, const char *host, bool *is_literal);

#endif
