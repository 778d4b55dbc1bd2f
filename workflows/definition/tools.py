"""Conductor's tools, as pure rules: the MCP servers a workflow names (`workflow.runtime.mcp_servers`),
which of their tools an agent sees (the top-level `tools` list and an agent's `tools`), how many
model calls an agent's tool loop may make (`max_agent_iterations`), and how much of a tool's result
the model is shown (`runtime.tool_output`).

An agent that sees tools runs a tool loop: its own step lists the tools (ROLE "" in the run's
steps), then each model call (MODEL_CALL_ROLE) and each tool call (TOOL_CALL_ROLE) is a step of its
own, gated and charged, until a model call answers. What follows each of those steps is
`after_step`'s (validation.py); how a loop step's call is put together is here.

As in conductor, an agent's `tools` omitted means every tool the workflow's top-level `tools`
lists (every tool of its MCP servers, when it lists none), `[]` means none, and a list names a
subset of the top-level list. A name matches an MCP tool by the tool's own name or by
`<server>__<tool>`, the name the model is shown; a name that matches no tool is reported in the
run's events when the tools are listed, as conductor drops it with a warning.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._refused import interpolation_in, interpolation_message
from ._section import Section
from .errors import Problem

MODEL_CALL_ROLE = "model_call"
TOOL_CALL_ROLE = "tool_call"

MCP_TRANSPORTS = ("stdio", "http", "sse")
REMOTE_TRANSPORTS = ("http", "sse")
# Where a workflow names its servers: a header's path is `MCP_SERVERS_PATH.<server>.headers.<name>`.
MCP_SERVERS_PATH = "workflow.runtime.mcp_servers"
# The key of `load_definition`'s refused_kinds that refuses stdio servers, and says why.
STDIO_SERVERS = "mcp_stdio"
# Conductor's bounds on an agent's model calls; with none given, its Claude provider's default.
MAX_AGENT_ITERATIONS = 500
DEFAULT_MAX_AGENT_ITERATIONS = 50
# Conductor's tool_output.max_chars: its default and its least.
DEFAULT_TOOL_OUTPUT_CHARS = 50_000
MIN_TOOL_OUTPUT_CHARS = 1_000
_CUT_MARKER = "\n…[tool output truncated: {kept:,} of {total:,} characters shown]"

# What a definition may hold, bounded like everything a team sends.
MAX_MCP_SERVERS = 16
MAX_MCP_ARGS = 64
MAX_MCP_ENTRIES = 32  # env variables, headers, a server's tool filter
MAX_MCP_TEXT_CHARS = 4_096  # a command, an argument, an env or header value, a URL
MAX_MCP_TIMEOUT_MS = 3_600_000
MAX_TOOL_NAMES = 128
SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What confines a command on a worker is the service's to set: its search path, its scratch
# directory, and what the dynamic loader would run before its limits apply.
RESERVED_ENV = re.compile(r"PATH|HOME|TMPDIR|LD_\w*|PYTHON\w*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_UNSAFE_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# The name a model is shown for a server's tool: both providers accept these characters, this long.
_MODEL_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MODEL_TOOL_NAME_CHARS = 64


@dataclass(frozen=True)
class McpServerSpec:
    """One of conductor's `mcp_servers`. `timeout_ms` is conductor's, in milliseconds (None: the
    operator's MCP_TIMEOUT_SECONDS, which also caps it); `tools` the names of the server's tools it
    offers, None for all (conductor's ["*"])."""

    name: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_ms: int | None = None
    tools: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
            "url": self.url,
            "headers": dict(self.headers),
            "timeout_ms": self.timeout_ms,
            "tools": None if self.tools is None else list(self.tools),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> McpServerSpec:
        tools = data["tools"]
        return cls(**{**data, "args": tuple(data["args"]), "tools": None if tools is None else tuple(tools)})


@dataclass(frozen=True)
class RegisteredServer:
    """What an upload is told of an MCP server that an operator registered for the team: where it
    is, and the names of the headers the registration holds. Their values are the service's, sent
    on each call to that server (`headers_to_send`); a definition never sees them."""

    url: str
    transport: str
    header_names: frozenset[str] = frozenset()

    def holds(self, header: str) -> bool:
        # HTTP header names are case-insensitive.
        return header.lower() in {name.lower() for name in self.header_names}


def registration_matches(*, server: McpServerSpec, registered: RegisteredServer) -> bool:
    """Whether a workflow's server (of the same name) is the registered one: the same transport and
    URL. A registration's headers go to its own URL only, never to one that a workflow wrote."""
    return server.transport == registered.transport and server.url == registered.url


def headers_to_send(*, written: Mapping[str, str], registered: Mapping[str, str] | None) -> dict[str, str]:
    """The headers a listing or call sends to a server: those the workflow wrote, but any holding
    `${...}` (the service fills in no environment), with a matching registration's headers (None:
    none matches) in place of the workflow's of the same name."""
    registered = registered or {}
    replaced = {name.lower() for name in registered}
    kept = {
        name: value
        for name, value in written.items()
        if name.lower() not in replaced and interpolation_in(value) is None
    }
    return kept | dict(registered)


def registered_header_paths(servers: Mapping[str, McpServerSpec]) -> frozenset[str]:
    """Where the definition's `${...}` in a header was accepted for a registered server: only such a
    header is kept holding one (`read_mcp_servers`)."""
    return frozenset(
        f"{MCP_SERVERS_PATH}.{server.name}.headers.{header}"
        for server in servers.values()
        for header, value in server.headers.items()
        if interpolation_in(value) is not None
    )


def read_mcp_servers(
    runtime: Section,
    *,
    stdio_refused: str | None,
    registered: Mapping[str, RegisteredServer] | None = None,
) -> dict[str, McpServerSpec]:
    """`runtime.mcp_servers`, checked as conductor checks it and bounded; a stdio server is refused
    with `stdio_refused`, why, where the team may not run commands on the service's workers.

    `registered` are the MCP servers an operator registered for the team, by name: a `${...}` in a
    header of a server with a registration's name, transport and URL is accepted where the
    registration holds that header (its value is sent instead); anywhere else it is refused."""
    registered = registered or {}
    entries = runtime.entries("mcp_servers")
    if len(entries) > MAX_MCP_SERVERS:
        runtime.report("mcp_servers", f"names {len(entries)} servers; at most {MAX_MCP_SERVERS} are allowed")
        return {}
    servers = {}
    for name, raw, path in entries:
        keys = ("type", "command", "args", "env", "url", "headers", "timeout", "tools")
        section = Section(raw, path, runtime.problems, keys=keys, nullable=False)
        if not SERVER_NAME.fullmatch(name):
            runtime.problems.append(
                Problem(path, "a server's name is 1 to 48 letters, digits, '-' or '_': its tools are named after it")
            )
        transport = section.text("type") or "stdio"
        if transport not in MCP_TRANSPORTS:
            section.report("type", f"must be one of {', '.join(MCP_TRANSPORTS)}, not '{transport}'")
            continue
        if transport == "stdio":
            spec = _stdio_server(section, name, stdio_refused)
        else:
            spec = _remote_server(section, name, transport, registered.get(name))
        timeout = section.integer("timeout", minimum=1, maximum=MAX_MCP_TIMEOUT_MS)
        tools = _server_tools(section)
        if spec is not None and SERVER_NAME.fullmatch(name):
            servers[name] = McpServerSpec(**spec, timeout_ms=timeout, tools=tools)
    return servers


def _stdio_server(section: Section, name: str, refused: str | None) -> dict[str, Any] | None:
    problems_before = len(section.problems)
    for key in ("url", "headers"):
        if section.data.get(key):
            section.report(key, f"is for 'http' and 'sse' servers; '{name}' is a stdio server (type: stdio, the default)")
    command = _bounded_text(section, "command", required=True)
    if command is not None and refused is not None:
        section.report("command", refused)
    args = section.sequence("args")
    if len(args) > MAX_MCP_ARGS:
        section.report("args", f"has {len(args)} arguments; at most {MAX_MCP_ARGS} are allowed")
    elif any(not isinstance(arg, str) or len(arg) > MAX_MCP_TEXT_CHARS for arg in args):
        section.report("args", f"must be a list of texts of at most {MAX_MCP_TEXT_CHARS:,} characters")
    env = _env(section)
    if command is None or len(section.problems) > problems_before:
        return None
    return {"name": name, "transport": "stdio", "command": command, "args": tuple(args), "env": env}


def _remote_server(section: Section, name: str, transport: str, registered: RegisteredServer | None) -> dict[str, Any] | None:
    for key in ("command", "args", "env"):
        if section.data.get(key):
            section.report(key, f"is for stdio servers; '{name}' is an '{transport}' server")
    url = _bounded_text(section, "url", required=True)
    if url is not None and (problem := url_problem(url)):
        section.report("url", problem)
        url = None
    headers = {}
    entries = section.entries("headers")
    if len(entries) > MAX_MCP_ENTRIES:
        section.report("headers", f"has {len(entries)} headers; at most {MAX_MCP_ENTRIES} are allowed")
    for header, value, path in entries[:MAX_MCP_ENTRIES]:
        if problem := header_problem(header, value):
            section.problems.append(Problem(path, problem))
        elif (text := interpolation_in(value)) is not None:
            target = {"name": name, "transport": transport, "url": url}
            if problem := _interpolated_header_problem(text, header=header, server=target, registered=registered):
                section.problems.append(Problem(path, problem))
            else:
                headers[header] = value
        else:
            headers[header] = value
    if url is None:
        return None
    return {"name": name, "transport": transport, "url": url, "headers": headers}


def header_problem(name: object, value: object) -> str | None:
    """Why `name: value` cannot be a header sent to an MCP server."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        return "is not an HTTP header name"
    if not isinstance(value, str) or len(value) > MAX_MCP_TEXT_CHARS or _UNSAFE_HEADER_VALUE.search(value):
        return f"must be one line of text, at most {MAX_MCP_TEXT_CHARS:,} characters"
    return None


def _interpolated_header_problem(
    text: str, *, header: str, server: Mapping[str, Any], registered: RegisteredServer | None
) -> str | None:
    """Why the `${...}` `text` in a server's `header` is refused; None when the team's registration of
    that server holds the header, whose value is sent in its place."""
    name = server["name"]
    if registered is None:
        return (
            f"{interpolation_message(text)}; or ask an operator to register the MCP server '{name}' for the "
            f"team with its '{header}' header, which is then sent in its place"
        )
    cannot = f"'{text}' cannot be filled in from the MCP server '{name}' registered for the team"
    if server["url"] != registered.url:
        return f"{cannot}: the registration is for another URL, and its headers go only there; write the URL as registered"
    if server["transport"] != registered.transport:
        return f"{cannot}: it is registered as an '{registered.transport}' server, not '{server['transport']}'"
    if not registered.holds(header):
        held = ", ".join(sorted(registered.header_names)) or "none"
        return f"{cannot}: the registration holds no '{header}' header (it holds: {held})"
    return None


def _bounded_text(section: Section, key: str, *, required: bool = False) -> str | None:
    value = section.text(key, required=required)
    if value is not None and len(value) > MAX_MCP_TEXT_CHARS:
        section.report(key, f"is longer than {MAX_MCP_TEXT_CHARS:,} characters")
        return None
    return value


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an MCP server's, as far as its text tells; its host's addresses are
    checked each time it is called (workflows/outbound.py)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        return "is not a URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not hold credentials: send them in 'headers'"
    return None


def tool_server_key(server: str) -> str:
    """What an operator's tool price names a server by (ToolPrice.server), from what a workflow
    reaches it at: an http or sse server's URL, a stdio server's command. A URL is named without
    what does not change the server it reaches: the case of its scheme and host, a default port, a
    trailing slash; and without its query and fragment, so that no token a query may carry is kept
    with a price or in the ledger, and a query added to the URL cannot take a call out of its price."""
    text = server.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return text  # a command
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


def _env(section: Section) -> dict[str, str]:
    env = {}
    entries = section.entries("env")
    if len(entries) > MAX_MCP_ENTRIES:
        section.report("env", f"has {len(entries)} variables; at most {MAX_MCP_ENTRIES} are allowed")
    for name, value, path in entries[:MAX_MCP_ENTRIES]:
        if problem := env_problem(name, value):
            section.problems.append(Problem(path, problem))
        else:
            env[name] = value
    return env


def env_problem(name: str, value: object) -> str | None:
    """Why `name: value` cannot be in the environment of a command the service starts on a worker."""
    if not ENV_NAME.fullmatch(name):
        return "is not an environment variable name"
    if RESERVED_ENV.fullmatch(name):
        return "is set by the service for every command it starts, and cannot be changed"
    if not isinstance(value, str) or len(value) > MAX_MCP_TEXT_CHARS or "\x00" in value:
        return f"must be text of at most {MAX_MCP_TEXT_CHARS:,} characters"
    return None


def _server_tools(section: Section) -> tuple[str, ...] | None:
    """A server's tool filter: its tools' own names, or None for conductor's ["*"] (the default)."""
    names = tool_names(section, "tools")
    if names is None or "*" in names:
        return None
    return names


def tool_names(section: Section, key: str) -> tuple[str, ...] | None:
    """A list of tool names at `key`, None when absent; reported and empty when it is no such list."""
    if section.data.get(key) is None:
        return None
    names = section.sequence(key)
    if len(names) > MAX_TOOL_NAMES:
        section.report(key, f"names {len(names)} tools; at most {MAX_TOOL_NAMES} are allowed")
        return ()
    if any(not isinstance(name, str) or not name or len(name) > 128 for name in names):
        section.report(key, "must be a list of tool names (texts of 1 to 128 characters)")
        return ()
    return tuple(dict.fromkeys(names))


def read_tool_output_chars(runtime: Section) -> int | None:
    """`runtime.tool_output`: how many characters of each tool result the model is shown, None when
    conductor's limit is turned off (`enabled: false`). `spill_to_file` and `spill_dir` name files on
    the machine that runs the workflow, which here no workflow reads: checked, then ignored (a result
    past the limit is cut, as conductor cuts it with spilling off)."""
    keys = ("enabled", "max_chars", "spill_to_file", "spill_dir")
    section = runtime.section("tool_output", keys=keys)
    section.flag("spill_to_file", default=True)
    section.text("spill_dir")
    max_chars = section.integer("max_chars", minimum=MIN_TOOL_OUTPUT_CHARS)
    if not section.flag("enabled", default=True):
        return None
    return max_chars or DEFAULT_TOOL_OUTPUT_CHARS


def agent_tool_problems(
    *, agent_tools: tuple[str, ...] | None, workflow_tools: tuple[str, ...], servers: Mapping[str, McpServerSpec]
) -> list[tuple[str, str]]:
    """(key, message) for each problem with an agent's `tools`: as in conductor, every name must be
    in the top-level list; and here a name must have a server that could offer it."""
    if not agent_tools:
        return []
    unknown = [name for name in agent_tools if name not in workflow_tools]
    if unknown:
        available = ", ".join(sorted(workflow_tools)) or "none (the workflow's top-level 'tools' lists none)"
        return [("tools", f"names tools the workflow's top-level 'tools' does not list: {', '.join(unknown)}; listed: {available}")]
    if not servers:
        return [("tools", no_tool_server(agent_tools))]
    return []


def no_tool_server(names: tuple[str, ...]) -> str:
    return (
        f"names tools ({', '.join(names)}) but the workflow has no MCP server (workflow.runtime.mcp_servers): "
        "tools here are MCP servers' tools; a coding-agent runtime's built-in tools are not offered"
    )


def agent_tool_filter(agent_tools: tuple[str, ...] | None, workflow_tools: tuple[str, ...]) -> tuple[str, ...] | None:
    """The names an agent's tools are chosen by: None for every tool its servers offer."""
    if agent_tools is None:
        return workflow_tools or None
    return agent_tools


# --- running: what the engine asks while an agent's tool loop runs ---------------------------------


def model_tool_name(server: str, tool: str, taken: set[str]) -> str:
    """The name a model is shown for `tool` of `server`: `<server>__<tool>`, made of the characters
    both providers accept and short enough for both, distinct from every name in `taken`."""
    name = _MODEL_TOOL_NAME.sub("_", f"{server}__{tool}")
    if len(name) <= _MODEL_TOOL_NAME_CHARS and name not in taken:
        return name
    # Cut, and told apart by a digest of the tool's own name; a server listing one name twice (or
    # names made to collide) gets a count after it, until the name is free.
    digest = hashlib.sha256(f"{server}\x00{tool}".encode()).hexdigest()[:8]
    for count in itertools.count():
        suffix = f"_{digest}" + (f"_{count}" if count else "")
        candidate = name[: _MODEL_TOOL_NAME_CHARS - len(suffix)] + suffix
        if candidate not in taken:
            return candidate


def tool_chosen(*, server: str, tool: str, model_name: str, names: tuple[str, ...] | None) -> bool:
    """Whether a filter of `names` (None: everything) chooses `tool` of `server`."""
    return names is None or tool in names or model_name in names or f"{server}__{tool}" in names


def cut_tool_output(text: str, max_chars: int | None) -> str:
    """A tool's result as the model is shown it: cut to `max_chars`, saying so, as conductor does."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + _CUT_MARKER.format(kept=max_chars, total=len(text))


def transcript_text(*, tools: list[dict], transcript: list[dict]) -> str:
    """What a loop's model call sends beyond its prompts, as text for the gate's token count: the
    tools' definitions and every earlier turn and result."""
    return json.dumps({"tools": tools, "transcript": transcript}, ensure_ascii=False)
