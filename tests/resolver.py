"""A resolver for the tests: they make no DNS lookups, so a name resolves only as a test says.

`workflows.outbound.resolve` is the one place the service asks DNS; tests/conftest.py puts this in
its place for every test. IP literals resolve to themselves, as getaddrinfo does without asking DNS;
the example domains (RFC 2606) to a public address that tests never call; a test sets any other
name in `names`, and every name it does not know fails to resolve, like a `.invalid` one.
"""

import ipaddress

PUBLIC_ADDRESS = "93.184.215.14"  # example.com's
EXAMPLE_DOMAINS = ("example", "example.com", "example.net", "example.org")


class Resolver:
    def __init__(self):
        self.names: dict[str, list[str]] = {}

    def __call__(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        if host in self.names:
            return list(self.names[host])
        if any(host == domain or host.endswith(f".{domain}") for domain in EXAMPLE_DOMAINS):
            return [PUBLIC_ADDRESS]
        raise OSError(f"[tests] no address for {host}: tests make no DNS lookups")
