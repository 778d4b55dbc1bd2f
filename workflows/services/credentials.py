"""Teams' provider credentials: encrypted at rest with Fernet, with the environment as the fallback.

The keys come from CREDENTIALS_ENCRYPTION_KEYS (newest first, so a key can be rotated in: the first
encrypts, all decrypt). Unset, one key is derived from SECRET_KEY, plus one from each of its fallbacks
to decrypt, so a rotated SECRET_KEY still reads what the old one wrote. On the embedded default (no
DJANGO_SECRET_KEY either), the key generated for the install (CREDENTIALS_INSTALL_KEY) encrypts.
"""

import base64
import hashlib
from collections.abc import Iterable, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from workflows import outbound
from workflows.definition import WorkflowDefinition, endpoint_problem, wire_api_problem, wire_problem
from workflows.errors import EndpointMismatch, MissingCredentials, ValidationFailed
from workflows.models import ProviderCredential, Team, TeamToolServer
from workflows.providers import Credentials, ProviderError, get_provider
from workflows.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_OWN_BASE_URL
from workflows.providers.openai import DEFAULT_BASE_URL as OPENAI_OWN_BASE_URL

HINT_LENGTH = 4
# The secret keys that earlier releases shipped as examples or defaults (settings.py, .env.example,
# docker/compose.yml). Anyone can derive the key from them, so they never encrypt. They still
# decrypt while CREDENTIALS_ENCRYPTION_KEYS is unset, so that an install that ran with one of them
# keeps its teams' keys. `manage.py rotate_credentials` then re-encrypts those keys.
PUBLISHED_SECRET_KEYS = ("insecure-development-key-change-me", "change-me-in-production", "change-me")
# The settings each provider falls back to: (API key, base URL).
_ENVIRONMENT = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}
# Where a team's credentials with no base URL call: the provider's own endpoint.
_OWN_ENDPOINTS = {"openai": OPENAI_OWN_BASE_URL, "anthropic": ANTHROPIC_OWN_BASE_URL}


class CredentialsUnreadable(ProviderError):
    """Stored credentials that the configured keys cannot decrypt: the step cannot call its provider."""


def credential_set(*, team: Team, provider: str, api_key: str, base_url: str = "") -> ProviderCredential:
    """Store (or replace) the team's key for `provider`, encrypted. A base URL must pass the
    outbound check (OutboundRefused otherwise, before anything is saved)."""
    check_base_url(url=base_url)
    credential, _ = ProviderCredential.objects.update_or_create(
        team=team,
        provider=provider,
        defaults={
            "api_key_encrypted": encrypt(api_key),
            "api_key_hint": key_hint(api_key),
            "base_url": base_url,
        },
    )
    return credential


def check_base_url(*, url: str) -> None:
    """Refuse a provider base URL that is not http(s) or whose host resolves to an address outbound
    requests may not reach; checked again whenever a call connects. Empty: the provider's own."""
    if url:
        outbound.check_url(url, path="base_url")


def check_credential_update(*, credential: ProviderCredential, base_url: str, api_key: str) -> None:
    """Refuse a new base URL without the key entered again: a stored key goes only to the host it was
    entered for, never to one that somebody who cannot read the key typed in later."""
    if base_url != credential.base_url and not api_key:
        raise ValidationFailed(
            "A credential's base URL changes only with its API key entered again.",
            details=[{"path": "api_key", "message": "enter the key again to change the base URL"}],
        )


def credential_update(*, credential: ProviderCredential, base_url: str, api_key: str = "") -> ProviderCredential:
    """Change a stored credential's base URL, its key, or both; an empty `api_key` keeps the stored key.
    Its team and provider never change: the key would be sent on another team's or provider's calls.
    The base URL passes the outbound check first, outside the transaction: it looks the host up."""
    check_base_url(url=base_url)
    with transaction.atomic():
        stored = ProviderCredential.objects.select_for_update().get(pk=credential.pk)
        if (credential.team_id, credential.provider) != (stored.team_id, stored.provider):
            raise ValidationFailed(
                "A credential's team and provider cannot be changed; add a credential for the other instead.",
                details=[{"path": "team", "message": "cannot be changed"}],
            )
        check_credential_update(credential=stored, base_url=base_url, api_key=api_key)
        stored.base_url = base_url
        changed = ["base_url", "updated_at"]
        if api_key:
            stored.api_key_encrypted, stored.api_key_hint = encrypt(api_key), key_hint(api_key)
            changed += ["api_key_encrypted", "api_key_hint"]
        stored.save(update_fields=changed)
    return stored


def credentials_rotate() -> int:
    """Re-encrypt every stored key, and the headers of every registered MCP server
    (services/tool_servers.py), with the first of CREDENTIALS_ENCRYPTION_KEYS, so older keys can be
    dropped from the list; returns how many. Raises CredentialsUnreadable if one cannot be read."""
    fernet = _fernet()
    rotated = 0
    with transaction.atomic():
        for credential in ProviderCredential.objects.select_for_update().order_by("pk"):
            credential.api_key_encrypted = _rotated(
                fernet, credential.api_key_encrypted, f"The {credential.provider} key of team {credential.team_id}"
            )
            credential.save(update_fields=["api_key_encrypted", "updated_at"])
            rotated += 1
        for server in TeamToolServer.objects.select_for_update().order_by("pk"):
            server.headers_encrypted = _rotated(
                fernet, server.headers_encrypted, f"The headers of MCP server '{server.name}' of team {server.team_id}"
            )
            server.save(update_fields=["headers_encrypted", "updated_at"])
            rotated += 1
    return rotated


def _rotated(fernet: MultiFernet, token: str, what: str) -> str:
    try:
        return fernet.rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable(
            f"{what} cannot be decrypted with CREDENTIALS_ENCRYPTION_KEYS; nothing was rotated."
        ) from None


def credentials_for(*, team_id: int, provider: str) -> Credentials | None:
    """The team's own credentials for `provider`, else the environment's; None when neither has a key
    or the provider needs none."""
    if not get_provider(provider).needs_credentials:
        return None
    stored = ProviderCredential.objects.filter(team_id=team_id, provider=provider).first()
    if stored is not None:
        # A team's credentials are used whole: its base URL, or the provider's own endpoint.
        return Credentials(api_key=decrypt(stored.api_key_encrypted), base_url=stored.base_url)
    key_setting, url_setting = _ENVIRONMENT[provider]
    api_key = getattr(settings, key_setting)
    return Credentials(api_key=api_key, base_url=getattr(settings, url_setting)) if api_key else None


def check_credentials(*, team: Team, providers: Iterable[str]) -> None:
    """Refuse a run whose providers have no credentials, before any of its steps is sent."""
    missing = sorted(
        provider
        for provider in set(providers)
        if get_provider(provider).needs_credentials and not _has_credentials(team=team, provider=provider)
    )
    if missing:
        names = ", ".join(f"'{provider}'" for provider in missing)
        settings_named = " or ".join(_ENVIRONMENT[provider][0] for provider in missing)
        raise MissingCredentials(
            f"No credentials for provider {names}: add the team's API key in the admin, or set {settings_named}.",
            details={"providers": missing},
        )


def credential_endpoints(*, team: Team) -> dict[str, str]:
    """The base URL the team's own credentials of each provider call, by provider: what a workflow
    of the team's may name as its endpoint (definition/endpoints.py). The environment's credentials
    are the operator's, for every team, and no workflow names them."""
    return {
        provider: base_url or _OWN_ENDPOINTS[provider]
        for provider, base_url in ProviderCredential.objects.filter(team=team).values_list("provider", "base_url")
    }


def check_endpoints(*, team: Team, definition: WorkflowDefinition, backends: Mapping[str, str]) -> None:
    """Refuse a run of a workflow (or of a sub-workflow it runs) that names an endpoint the team's
    credentials no longer point at, or a wire (`type`, `wire_api`) the backend its calls now reach
    does not speak, as its upload would be refused now, before any step is sent; `backends` are the
    run's, by provider name."""
    endpoints = credential_endpoints(team=team)
    refused = [
        (workflow, backends[workflow.provider], problem)
        for workflow in definition.nested()
        if workflow.endpoint is not None
        and (
            problem := endpoint_problem(
                url=workflow.endpoint, provider=workflow.provider, backend=backends[workflow.provider], endpoints=endpoints
            )
        )
    ]
    if refused:
        raise EndpointMismatch(
            f"The workflow names an endpoint its team's credentials no longer point at: {refused[0][2]}.",
            details={
                "endpoints": [
                    {
                        "workflow": workflow.name,
                        "provider": workflow.provider,
                        "backend": backend,
                        "base_url": workflow.endpoint,
                        "credentials_base_url": endpoints.get(backend),
                    }
                    for workflow, backend, _ in refused
                ]
            },
        )
    # Named only where the workflow's agents use its provider, which `backends` then has.
    rewired = [
        (workflow, backends[workflow.provider], problem)
        for workflow in definition.nested()
        if (workflow.wire is not None or workflow.wire_api is not None)
        and (problem := _wire_problem(workflow, backend=backends[workflow.provider]))
    ]
    if rewired:
        raise EndpointMismatch(
            f"The workflow names a wire its calls no longer speak, since the team's routes changed: {rewired[0][2]}.",
            details={
                "wires": [
                    {
                        "workflow": workflow.name,
                        "provider": workflow.provider,
                        "backend": backend,
                        "type": workflow.wire,
                        "wire_api": workflow.wire_api,
                    }
                    for workflow, backend, _ in rewired
                ]
            },
        )


def _wire_problem(workflow: WorkflowDefinition, *, backend: str) -> str | None:
    if workflow.wire is not None and (problem := wire_problem(wire=workflow.wire, provider=workflow.provider, backend=backend)):
        return problem
    if workflow.wire_api is not None:
        return wire_api_problem(wire_api=workflow.wire_api, provider=workflow.provider, backend=backend)
    return None


def _has_credentials(*, team: Team, provider: str) -> bool:
    if ProviderCredential.objects.filter(team=team, provider=provider).exists():
        return True
    return bool(getattr(settings, _ENVIRONMENT[provider][0]))


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable(
            "Stored provider credentials cannot be decrypted with CREDENTIALS_ENCRYPTION_KEYS; "
            "was the key changed without keeping the old one in the list?"
        ) from None


def key_hint(secret: str) -> str:
    """Enough of a key to tell two apart, never enough to use: its last characters, if it is long."""
    return f"…{secret[-HINT_LENGTH:]}" if len(secret) >= 4 * HINT_LENGTH else "…"


def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in _keys()])
    except ValueError:
        raise ImproperlyConfigured(
            "CREDENTIALS_ENCRYPTION_KEYS must list Fernet keys (32 url-safe base64-encoded bytes each); "
            'make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        ) from None


def _keys() -> list[str | bytes]:
    """Newest first: the first encrypts, every one decrypts."""
    if settings.CREDENTIALS_ENCRYPTION_KEYS:
        return list(settings.CREDENTIALS_ENCRYPTION_KEYS)
    if settings.CREDENTIALS_INSTALL_KEY:
        encrypting, older_secret_keys = settings.CREDENTIALS_INSTALL_KEY, PUBLISHED_SECRET_KEYS
    else:
        encrypting, older_secret_keys = _derived_key(settings.SECRET_KEY), (*settings.SECRET_KEY_FALLBACKS, *PUBLISHED_SECRET_KEYS)
    return [encrypting, *(_derived_key(secret_key) for secret_key in older_secret_keys), *_install_key_left_behind()]


def _install_key_left_behind() -> list[str]:
    """The key an install generated while it ran on the embedded default, once DJANGO_SECRET_KEY is
    set: it still decrypts what was stored then, until `rotate_credentials` moves it to the new key."""
    if settings.CREDENTIALS_INSTALL_KEY:
        return []
    path = settings.CREDENTIALS_INSTALL_KEY_FILE
    return [path.read_text().strip()] if path.is_file() else []


def _derived_key(secret_key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(f"budgetsvc credentials:{secret_key}".encode()).digest())
