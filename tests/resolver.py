"""A resolver for the tests: they make no DNS lookups, so a name resolves only as a test says.

`workflows.outbound.resolve` is the one place the service asks DNS; tests/conftest.py puts this in
its place for every test. IP literals resolve to themselves, as getaddrinfo does without asking DNS.
"""

import ipaddress

# The names tests save as webhook or base URLs, on a public address (example.com's) they never call.
PUBLIC_ADDRESS = "93.184.215.14"
KNOWN_NAMES = ("hooks.example.com", "gateway.example", "team.example")


class Resolver:
    def __init__(self):
        self.names: dict[str, list[str]] = dict.fromkeys(KNOWN_NAMES, [PUBLIC_ADDRESS])
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        if host not in self.names:
            raise OSError(f"[tests] no address for {host}: tests make no DNS lookups")
        return list(self.names[host])
