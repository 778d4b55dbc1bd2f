"""A workflow that names the endpoint its calls go to: conductor's `runtime.provider` object form with
a written `base_url`, `type` and `wire_api` (`examples/copilot-local-llm.yaml`).

A workflow never picks where the service sends a team's keys: they go where the team's provider
credentials point, which an operator sets. A workflow may still name that endpoint, as conductor's
workflows do, and the name is then checked against the credentials of the backend its calls reach:
accepted when it is their base URL, refused otherwise. `type` and `wire_api` name the wire the calls
speak, which must be the backend's. Both checks run again when a run starts (services/credentials.py),
since credentials and routes may change after an upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from .providers import ROUTABLE

# conductor's `type`, by the backend that speaks it; Azure's wire is not spoken here.
WIRE_TYPES = ("openai", "azure", "anthropic")
# conductor's `wire_api`: the OpenAI wire's variants. Only Chat Completions is spoken here.
WIRE_APIS = ("completions", "responses")
_CREDENTIALS_AT = "an operator sets their base URL in the admin (Provider credentials)"
_AZURE = (
    "there is no Azure wire here: Azure OpenAI's v1 API speaks the OpenAI wire, so write 'type: openai' "
    "and have an operator give the team's openai credentials the resource's base URL "
    "(https://RESOURCE.openai.azure.com/openai/v1/) in the admin (Provider credentials)"
)
AZURE_OPTIONS = f"Azure options configure conductor's Azure wire: {_AZURE}"
# The choices refused whatever the backend, and why.
REFUSED_WIRES = {
    "type": {"azure": f"'type: azure' is not supported: {_AZURE}"},
    "wire_api": {
        "responses": (
            "'wire_api: responses' is not supported: the OpenAI Responses API is not spoken here; calls to "
            "openai use Chat Completions ('wire_api: completions')"
        )
    },
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be a provider's base URL, as far as its text tells."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        return "is not a URL"
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not hold a user name or password: a workflow holds no credentials"
    return None


def same_endpoint(first: str, second: str) -> bool:
    """Whether two base URLs reach the same endpoint: the case of the scheme and the host, a default
    port and a trailing slash make no difference."""
    return _endpoint_key(first) == _endpoint_key(second)


def _endpoint_key(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, parts.fragment))


def endpoint_problem(*, url: str, provider: str, backend: str, endpoints: Mapping[str, str]) -> str | None:
    """Why a workflow whose calls through `provider` reach `backend` may not name `url` as their
    endpoint; None when it is where the team's credentials for `backend` point. `endpoints` holds
    the base URL the team's credentials of each backend call (the provider's own when they set none);
    a backend the team has no credentials for is absent."""
    current = endpoints.get(backend)
    if current is not None and same_endpoint(url, current):
        return None
    reaches = _reaches(provider, backend)
    if current is None:
        now = f"the team has no '{backend}' credentials"
        fix = "an operator adds them, with this base URL, in the admin (Provider credentials)"
    else:
        now = f"the base URL of the team's '{backend}' credentials is '{current}'"
        fix = _CREDENTIALS_AT
    return (
        f"'{url}' is not where the team's calls go: {reaches}, and {now}. A workflow names only the "
        f"endpoint its team's credentials point at: {fix}, or remove base_url to use the credentials as they are"
    )


def wire_problem(*, wire: str, provider: str, backend: str) -> str | None:
    """Why `type: wire` (openai or anthropic) does not fit calls through `provider`, which reach
    `backend`; None when it does."""
    if wire == backend:
        return None
    return (
        f"'type: {wire}' names the {wire} wire, but {_reaches(provider, backend)}, which speaks the {backend} "
        f"wire: write 'type: {backend}', or route '{provider}' to {wire}"
        if provider in ROUTABLE
        else f"'type: {wire}' names the {wire} wire, but {_reaches(provider, backend)}: write 'type: {backend}'"
    )


def wire_api_problem(*, wire_api: str, provider: str, backend: str) -> str | None:
    """Why `wire_api: completions` does not fit calls through `provider`, which reach `backend`; None
    when it does."""
    if backend != "openai":
        return f"'wire_api: {wire_api}' names a variant of the OpenAI wire, but {_reaches(provider, backend)}"
    return None


def _reaches(provider: str, backend: str) -> str:
    if provider in ROUTABLE:
        return f"provider '{provider}' reaches {backend} through the team's route ({provider}={backend})"
    return f"provider '{provider}' calls {backend}"
