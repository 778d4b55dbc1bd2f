"""MCP servers an operator registered for a team, with headers (an API token, say) encrypted at rest
like provider keys (services/credentials.py).

A workflow names such a server as conductor does (`workflow.runtime.mcp_servers`), with the same
name, transport and URL: its `${VAR}` in a header the registration holds is then accepted at upload
(definition/tools.py), and each listing and call sends the registration's headers in place of the
workflow's. They are read and decrypted by the step that connects, outside any transaction, and
are kept in no step, event, error or checkpoint.
"""

import json
from collections.abc import Mapping

from django.db import transaction

from workflows import outbound
from workflows.definition import (
    REMOTE_TRANSPORTS,
    SERVER_NAME,
    McpServerSpec,
    RegisteredServer,
    header_problem,
    registration_matches,
    url_problem,
)
from workflows.definition.tools import MAX_MCP_ENTRIES
from workflows.errors import ValidationFailed
from workflows.models import TeamToolServer, Team
from workflows.services.credentials import CredentialsUnreadable, decrypt, encrypt, key_hint

_HINT_CHARS = TeamToolServer._meta.get_field("headers_hint").max_length


def check_tool_server(*, name: str, transport: str, url: str, headers: Mapping[str, str] | None) -> None:
    """Refuse a registration a workflow could not name, or whose URL outbound requests may not reach
    (ValidationFailed, OutboundRefused); `headers` None keeps the stored ones. The URL's host is
    looked up: call it outside transactions, or within `outbound.resolved_in_advance`."""
    problems = []
    if not SERVER_NAME.fullmatch(name):
        problems.append({"path": "name", "message": "1 to 48 letters, digits, '-' or '_', as a workflow names it"})
    if transport not in REMOTE_TRANSPORTS:
        problems.append({"path": "transport", "message": f"must be one of {', '.join(REMOTE_TRANSPORTS)}: a stdio server is a workflow's"})
    if problem := url_problem(url):
        problems.append({"path": "url", "message": problem})
    if headers is not None:
        if len(headers) > MAX_MCP_ENTRIES:
            problems.append({"path": "headers", "message": f"at most {MAX_MCP_ENTRIES} headers"})
        for header, value in headers.items():
            if problem := header_problem(header, value):
                # The name only: the value may be the secret.
                problems.append({"path": f"headers.{header}", "message": problem})
    if problems:
        raise ValidationFailed("The MCP server cannot be registered.", details=problems)
    outbound.check_url(url, path="url")


def check_tool_server_update(*, server: TeamToolServer, url: str, headers: Mapping[str, str] | None) -> None:
    """Refuse a new URL without the headers entered again: stored headers go only to the URL they were
    entered for, never to one that somebody who cannot read them typed in later."""
    if url != server.url and server.header_names and not headers:
        raise ValidationFailed(
            "A registered MCP server's URL changes only with its headers entered again.",
            details=[{"path": "headers", "message": "enter the headers again to change the URL"}],
        )


def tool_server_set(
    *, team: Team, name: str, transport: str, url: str, headers: Mapping[str, str]
) -> TeamToolServer:
    """Register (or replace) the team's MCP server `name`, its headers encrypted. Checked first, before
    anything is saved."""
    check_tool_server(name=name, transport=transport, url=url, headers=headers)
    server, _ = TeamToolServer.objects.update_or_create(
        team=team, name=name, defaults={"transport": transport, "url": url, **_sealed(headers)}
    )
    return server


def tool_server_update(
    *, server: TeamToolServer, name: str, transport: str, url: str, headers: Mapping[str, str] | None = None
) -> TeamToolServer:
    """Change a registration; `headers` None (or empty) keeps the stored headers, which a new URL
    needs entered again. Its team never changes: the headers would be sent on another team's calls."""
    check_tool_server(name=name, transport=transport, url=url, headers=headers)
    with transaction.atomic():
        stored = TeamToolServer.objects.select_for_update().get(pk=server.pk)
        if server.team_id != stored.team_id:
            raise ValidationFailed(
                "A registered MCP server's team cannot be changed; register it for the other team instead.",
                details=[{"path": "team", "message": "cannot be changed"}],
            )
        check_tool_server_update(server=stored, url=url, headers=headers)
        stored.name, stored.transport, stored.url = name, transport, url
        changed = ["name", "transport", "url", "updated_at"]
        if headers:
            for field, value in _sealed(headers).items():
                setattr(stored, field, value)
            changed += ["headers_encrypted", "header_names", "headers_hint"]
        stored.save(update_fields=changed)
    return stored


def registered_servers_for(*, team: Team) -> dict[str, RegisteredServer]:
    """What an upload of the team's is told of its registered servers: never a header's value."""
    return {
        name: RegisteredServer(url=url, transport=transport, header_names=frozenset(names))
        for name, transport, url, names in TeamToolServer.objects.filter(team=team).values_list(
            "name", "transport", "url", "header_names"
        )
    }


def registered_headers(*, team_id: int, server: McpServerSpec) -> dict[str, str] | None:
    """The headers registered for the team's server of `server`'s name, transport and URL, decrypted;
    None when no registration matches (any more). Raises CredentialsUnreadable when the keys cannot
    decrypt them. Read each time a step connects: a registration changed since the upload is used
    as it is now."""
    stored = TeamToolServer.objects.filter(team_id=team_id, name=server.name).first()
    if stored is None or stored.transport not in REMOTE_TRANSPORTS:
        return None
    registered = RegisteredServer(url=stored.url, transport=stored.transport)
    if not registration_matches(server=server, registered=registered):
        return None
    try:
        return json.loads(decrypt(stored.headers_encrypted))
    except CredentialsUnreadable:
        raise CredentialsUnreadable(
            f"The headers registered for MCP server '{server.name}' cannot be decrypted with "
            "CREDENTIALS_ENCRYPTION_KEYS; was the key changed without keeping the old one in the list?"
        ) from None


def headers_from_lines(text: str) -> dict[str, str]:
    """Headers written one a line as `Name: value` (as the admin takes them); blank lines are
    skipped. ValidationFailed names the line, never its value."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name:
            raise ValidationFailed(
                f"Line {number} of the headers is not 'Name: value'.",
                details=[{"path": "headers", "message": f"line {number} is not 'Name: value'"}],
            )
        if name.lower() in {each.lower() for each in headers}:
            raise ValidationFailed(
                f"The header '{name}' is written twice.",
                details=[{"path": "headers", "message": f"'{name}' is written twice"}],
            )
        headers[name] = value
    return headers


def _sealed(headers: Mapping[str, str]) -> dict:
    """The stored form of `headers`: encrypted whole; their names and a hint of each in the clear."""
    hint = ", ".join(f"{name}: {key_hint(value)}" for name, value in headers.items())
    return {
        "headers_encrypted": encrypt(json.dumps(dict(headers))),
        "header_names": list(headers),
        "headers_hint": hint if len(hint) <= _HINT_CHARS else hint[: _HINT_CHARS - 1] + "…",
    }
