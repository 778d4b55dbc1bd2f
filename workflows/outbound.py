"""Where the service may connect: every outbound request (team webhooks, provider calls, MCP servers)
goes through `http_client` or, from async code, `AsyncCheckedTransport`, whose transport resolves the host once, checks every address it resolves to, and
connects to a checked address, so a name that changes its answer after it was checked (DNS
rebinding) cannot reach anything the check refuses. `check_url` is the same check at save time.

Refused: loopback, private, link-local, shared (CGNAT), multicast, reserved, unspecified and any
other non-global addresses, and cloud metadata endpoints, in IPv4 and IPv6 (IPv4 inside IPv6
included: mapped, 6to4, Teredo, NAT64), unless the operator allows the host
(OUTBOUND_ALLOWED_HOSTS) or the network (OUTBOUND_ALLOWED_NETWORKS). Redirects are never followed.
See docs/operations.md#outbound-requests.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from http import HTTPStatus
from urllib.parse import urlsplit

import anyio.to_thread
import httpx2
from django.conf import settings

from workflows.errors import OutboundRefused, OutboundUnresolved

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud instance metadata and platform endpoints; most are in a refused range anyway, named here so
# that the refusal says what they are (and Azure's wire server, which is a public address).
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2/32",  # AWS ECS task metadata
        "fd00:ec2::254/128",  # AWS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
        "168.63.129.16/32",  # Azure wire server
        "192.0.0.192/32",  # Oracle Cloud
    )
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # CGNAT, RFC 6598
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
# Answers looked up by `resolved_in_advance`, by (host, port): a list of addresses, or the OSError.
_ANSWERS: ContextVar[dict[tuple[str, int], list[str] | OSError] | None] = ContextVar("outbound_answers", default=None)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order of preference. The one place that
    asks DNS (tests replace it to play a resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@contextmanager
def resolved_in_advance(urls: Iterable[str]) -> Iterator[None]:
    """Look up the hosts of `urls` now, and answer the checks made inside the block from these
    answers: a check made inside a transaction (the admin's; on SQLite it holds the write lock) then
    waits for no resolver."""
    answers = {}
    for url in urls:
        try:
            host, port = _host_and_port_of(url)
        except OutboundRefused:
            continue  # the check inside the block says why
        try:
            answers[(host, port)] = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            answers[(host, port)] = OSError(str(exc))
    token = _ANSWERS.set(answers)
    try:
        yield
    finally:
        _ANSWERS.reset(token)


def check_url(url: str, *, path: str) -> None:
    """Raise OutboundRefused (naming the input at `path`) unless `url` is http(s) and its host
    resolves only to allowed addresses."""
    try:
        host, port = _host_and_port_of(url)
        checked_addresses(host=host, port=port)
    except OutboundRefused as exc:
        raise type(exc)(exc.message, details=[{"path": path, "message": exc.message}]) from None


def _host_and_port_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise OutboundRefused("The URL must start with http:// or https://.")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise OutboundRefused("The URL's port is not a number from 0 to 65535.") from None
    if not host:
        raise OutboundRefused("The URL has no host.")
    return host, port or _DEFAULT_PORTS[scheme]


def checked_addresses(*, host: str, port: int) -> list[str]:
    """Resolve `host` once and return its addresses, all of them allowed; OutboundRefused otherwise.
    One refused address refuses the host: which one a connection would use is not ours to choose."""
    host = host.strip("[]").lower()
    try:
        addresses = (_ANSWERS.get() or {}).get((host, port)) or resolve(host, port)
        if isinstance(addresses, OSError):
            raise addresses
    except (OSError, UnicodeError):
        raise OutboundUnresolved(f"The host {host} could not be resolved.") from None
    if not addresses:
        raise OutboundUnresolved(f"The host {host} could not be resolved.")
    if _host_allowed(host=host, port=port):
        return addresses
    for address in addresses:
        reason = refusal(ipaddress.ip_address(address))
        if reason is not None:
            # The address itself goes to the operator's log only: told to a team, it would map the
            # internal network one name at a time.
            logger.warning("Outbound connection to %s:%s refused: it resolves to %s, %s.", host, port, address, reason)
            what = f"The address {host} is" if _is_address(host) else f"The host {host} resolves to"
            raise OutboundRefused(
                f"{what} {reason}, which outbound requests may not reach; an operator can allow it with "
                "OUTBOUND_ALLOWED_HOSTS or OUTBOUND_ALLOWED_NETWORKS."
            )
    return addresses


def refusal(address: Address) -> str | None:
    """Why the service may not connect to `address`, or None when it may."""
    if any(address in network for network in _allowed_networks()):
        return None
    if any(address in network for network in METADATA_NETWORKS):
        return "a cloud metadata address"
    translated = _translated_ipv4(address)
    if translated is not None:
        return refusal(translated)
    tunnelled = _tunnelled_ipv4(address)
    if tunnelled is not None and refusal(tunnelled) is not None:
        return refusal(tunnelled)
    for kind, test in (
        ("a loopback address", lambda a: a.is_loopback),
        ("a link-local address", lambda a: a.is_link_local),
        ("a multicast address", lambda a: a.is_multicast),
        ("an unspecified address", lambda a: a.is_unspecified),
        ("a shared (CGNAT) address", lambda a: a in _SHARED_ADDRESS_SPACE),
        ("a reserved address", lambda a: a.is_reserved),
        ("a private address", lambda a: a.is_private),  # IANA's special-purpose registry, RFC 1918 and ULA among them
        ("an address that is not public", lambda a: not a.is_global),
    ):
        if test(address):
            return kind
    return None


def _translated_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to an IPv4-mapped or NAT64 (DNS64) IPv6 address reaches: that
    address alone decides."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or Teredo address carries; refused, it refuses the IPv6 address too."""
    if address.version != 6:
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_allowed(*, host: str, port: int) -> bool:
    for entry in settings.OUTBOUND_ALLOWED_HOSTS:
        allowed_host, allowed_port = _allowed_host_entry(entry)
        if allowed_host == host and allowed_port in (None, port):
            return True
    return False


def _allowed_host_entry(entry: str) -> tuple[str, int | None]:
    """An OUTBOUND_ALLOWED_HOSTS entry: "host", "host:port", "[::1]:port" or "::1"."""
    entry = entry.strip().lower()
    head, _, tail = entry.rpartition(":")
    if head and tail.isdigit() and (head.endswith("]") or ":" not in head):
        return head.strip("[]"), int(tail)
    return entry.strip("[]"), None


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(network.strip(), strict=False) for network in settings.OUTBOUND_ALLOWED_NETWORKS]


def _target(request: httpx2.Request) -> tuple[str, int]:
    """The host and port a request names; OutboundRefused unless it is http(s)."""
    scheme = request.url.scheme
    if scheme not in SCHEMES:
        raise OutboundRefused("The URL must start with http:// or https://.")
    return request.url.raw_host.decode("ascii"), request.url.port or _DEFAULT_PORTS[scheme]


def _pinned(request: httpx2.Request, *, host: str, address: str) -> httpx2.Request:
    """The request sent to `address` itself, with the name kept for the Host header and TLS."""
    return httpx2.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,  # the Host header still names the host
        stream=request.stream,
        extensions={**request.extensions, "sni_hostname": host},
    )


class CheckedTransport(httpx2.BaseTransport):
    """Connects only to addresses `checked_addresses` allowed, resolved once per request: the request
    goes to the checked address itself, with the name kept for the Host header and TLS (SNI and
    certificate), so a second lookup that answers differently is never made."""

    def __init__(self):
        # The environment's CA bundle (SSL_CERT_FILE) still counts; its proxies never do (see http_client).
        self._transport = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host, port = _target(request)
        failure = None
        for address in checked_addresses(host=host, port=port):
            try:
                return self._transport.handle_request(_pinned(request, host=host, address=address))
            except httpx2.ConnectError as exc:  # the next address, as socket.create_connection would
                failure = exc
        raise failure

    def close(self) -> None:
        self._transport.close()


class AsyncCheckedTransport(httpx2.AsyncBaseTransport):
    """CheckedTransport for an async client (the MCP SDK's): the same check, its lookup run in a
    worker thread so that a slow resolver does not stall the event loop."""

    def __init__(self):
        self._transport = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host, port = _target(request)
        addresses = await anyio.to_thread.run_sync(partial(checked_addresses, host=host, port=port))
        failure = None
        for address in addresses:
            try:
                return await self._transport.handle_async_request(_pinned(request, host=host, address=address))
            except httpx2.ConnectError as exc:
                failure = exc
        raise failure

    async def aclose(self) -> None:
        await self._transport.aclose()


def http_client(*, timeout: float) -> httpx2.Client:
    """An HTTP client for one outbound call: checked addresses, no redirects. No proxy from the
    environment (it would resolve the name itself, after the check) and no .netrc credentials (they
    would go to whatever host a team names)."""
    return httpx2.Client(transport=CheckedTransport(), follow_redirects=False, trust_env=False, timeout=timeout)


def status_phrase(status_code: int) -> str:
    """The standard phrase of a status, never the server's own: a status line can carry any text."""
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Unknown Status"
