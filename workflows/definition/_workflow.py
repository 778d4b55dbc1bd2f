"""Reading the ``workflow:`` section of a definition."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._call_settings import runtime_context_tier, runtime_effort, runtime_session_seconds
from ._refused import (
    COST_IGNORED,
    RUNTIME_IGNORED,
    RUNTIME_UNSUPPORTED,
    WORKFLOW_IGNORED,
    WORKFLOW_UNSUPPORTED,
    interpolation_in,
    is_environment_reference,
)
from ._section import Section
from ._values import kind_of, non_json_kind, show
from .bounds import MAX_CALL_TOKENS
from .context_modes import CONTEXT_MODES
from .endpoints import (
    AZURE_OPTIONS,
    REFUSED_WIRES,
    WIRE_APIS,
    WIRE_TYPES,
    base_url_problem,
    endpoint_problem,
    wire_api_problem,
    wire_problem,
)
from .errors import Problem
from .inputs import INPUT_TYPES, matches_type
from .limits import check_limits
from .model import InputSpec, LimitsSpec
from .pricing import UnitPrices
from .providers import DEFAULT_PROVIDER, backend_of, provider_problem
from .tools import (
    DEFAULT_MAX_AGENT_ITERATIONS,
    MAX_AGENT_ITERATIONS,
    McpServerSpec,
    RegisteredServer,
    read_mcp_servers,
    read_tool_output_chars,
    tool_names,
)

MAX_TEMPERATURE = 2.0

_WORKFLOW_KEYS = ("name", "description", "version", "entry_point", "input", "limits", "runtime", "cost", "context")
_CONTEXT_TRIMMING = (
    "trimming the context is not implemented: an agent sees in full what its context mode shows it "
    "(bound a prompt with its own template, or use the 'explicit' mode)"
)
_RUNTIME_KEYS = (
    "provider", "default_model", "max_tokens", "temperature", "stream",
    "default_reasoning_effort", "default_context_tier", "max_session_seconds",
    "mcp_servers", "max_agent_iterations", "tool_output",
)  # fmt: skip
# The object form of `runtime.provider`: its name, where its calls go and the wire they speak
# (definition/endpoints.py), and what conductor configures a runtime with.
PROVIDER_PATH = "workflow.runtime.provider"
_CREDENTIALS_UNSUPPORTED = (
    "a workflow holds no credentials: the team's provider credentials do (an API key, which an operator "
    "sets in the admin)"
)
_RUNTIME_UNSUPPORTED = "this service calls model APIs and drives no Copilot runtime: route 'copilot' to a backend instead"
# The keys of the object form that conductor users fill from their environment (`${OPENAI_API_KEY}`):
# here a team's environment is its provider credentials (and its routes), so a key written as one
# such reference names them, and is accepted without effect; written out, it is refused. A
# `base_url` so written is accepted the same way; written out, it names the calls' endpoint.
_FROM_THE_ENVIRONMENT = {
    **dict.fromkeys(("api_key", "bearer_token", "auth_token"), _CREDENTIALS_UNSUPPORTED),
    **dict.fromkeys(("runtime_url", "runtime_token"), _RUNTIME_UNSUPPORTED),
}
_PROVIDER_UNSUPPORTED = {
    "headers": (
        "a workflow does not choose what is sent with the team's keys: the team's provider credentials "
        "are sent as they are (an API key and a base URL, which an operator sets in the admin)"
    ),
    "azure": AZURE_OPTIONS,
    **dict.fromkeys(
        ("hermes_home", "hermes_skip_memory", "hermes_skip_context_files"),
        "a Hermes profile (memory, persona, context files) does not exist here: agents see only their prompts",
    ),
    **dict.fromkeys(
        ("pool_endpoint", "api_version", "inner_provider", "identifier_scope", "egress", "lifecycle", "auth"),
        "it configures the 'aca' sandbox runtime, which is not supported",
    ),
}
_INPUT_KEYS = ("type", "required", "default", "description")
# conductor's names, and `cached_input_per_mtok` (this service's older name for the cache-read rate).
_PRICE_KEYS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok", "cached_input_per_mtok")


@dataclass(frozen=True)
class Header:
    """The ``workflow:`` section; a field is None where it was missing or invalid."""

    name: str | None
    description: str
    version: str | None
    entry_point: str | None
    inputs: dict[str, InputSpec]
    limits: LimitsSpec
    provider: str  # the workflow's, for agents that name none
    provider_path: str
    provider_written: bool  # False: conductor's default
    # What the object form names of the calls through `provider` (definition/endpoints.py): their
    # endpoint (`base_url` written out) and wire (`type`, `wire_api`); None where not named, or refused.
    endpoint: str | None
    wire_type: str | None
    wire_api: str | None
    default_model: str | None
    max_tokens: int | None
    temperature: float | None
    stream: bool
    # The defaults of the agents' own reasoning.effort, context_tier and max_session_seconds.
    reasoning_effort: str | None
    context_tier: str | None
    max_session_seconds: float | None
    pricing: dict[str, UnitPrices]
    priced_models: frozenset[str]  # every model under cost.pricing, even one whose prices are invalid
    context_mode: str
    # Tools (definition/tools.py): the MCP servers, the top-level `tools` list, the agents' default
    # bound on model calls, and how much of a tool's result a model is shown.
    mcp_servers: dict[str, McpServerSpec]
    tools: tuple[str, ...]
    max_agent_iterations: int
    tool_output_chars: int | None


def read_header(
    top: Section, *, stdio_refused: str | None = None, registered_servers: Mapping[str, RegisteredServer] | None = None
) -> Header:
    """The `workflow:` section, and the top-level `tools` list; `stdio_refused` says why the team may
    not start stdio MCP servers, None when it may; `registered_servers` the MCP servers an operator
    registered for the team (definition/tools.py)."""
    workflow = top.section(
        "workflow", keys=_WORKFLOW_KEYS, unsupported=WORKFLOW_UNSUPPORTED, ignored=WORKFLOW_IGNORED, required=True
    )
    runtime = workflow.section("runtime", keys=_RUNTIME_KEYS, unsupported=RUNTIME_UNSUPPORTED, ignored=RUNTIME_IGNORED)
    cost = workflow.section("cost", keys=("pricing",), ignored=COST_IGNORED)
    price_entries = cost.entries("pricing")
    provider = _provider(runtime)
    return Header(
        name=workflow.text("name", required=True),
        description=workflow.text("description") or "",
        version=_version(workflow),
        entry_point=workflow.text("entry_point", required=True),
        inputs=_inputs(workflow),
        limits=_limits(workflow),
        provider=provider.name,
        provider_path=provider.path,
        provider_written=provider.written,
        endpoint=provider.endpoint,
        wire_type=provider.wire_type,
        wire_api=provider.wire_api,
        default_model=runtime.text("default_model"),
        max_tokens=runtime.integer("max_tokens", minimum=1, maximum=MAX_CALL_TOKENS),
        temperature=runtime.number("temperature", minimum=0, maximum=MAX_TEMPERATURE),
        stream=runtime.flag("stream", default=False),
        reasoning_effort=runtime_effort(runtime),
        context_tier=runtime_context_tier(runtime),
        max_session_seconds=runtime_session_seconds(runtime),
        pricing=_pricing(price_entries, workflow.problems),
        priced_models=frozenset(model for model, _, _ in price_entries),
        context_mode=_context_mode(workflow),
        mcp_servers=read_mcp_servers(runtime, stdio_refused=stdio_refused, registered=registered_servers),
        tools=tool_names(top, "tools") or (),
        max_agent_iterations=runtime.integer("max_agent_iterations", minimum=1, maximum=MAX_AGENT_ITERATIONS)
        or DEFAULT_MAX_AGENT_ITERATIONS,
        tool_output_chars=read_tool_output_chars(runtime),
    )


def _context_mode(workflow: Section) -> str:
    """Conductor's `context.mode` (definition/context_modes.py)."""
    unsupported = dict.fromkeys(("max_tokens", "trim_strategy"), _CONTEXT_TRIMMING)
    context = workflow.section("context", keys=("mode",), unsupported=unsupported)
    mode = context.text("mode") or "accumulate"
    if mode not in CONTEXT_MODES:
        context.report("mode", f"must be one of {', '.join(CONTEXT_MODES)}, not {show(mode)}")
        return "accumulate"
    return mode


def _version(workflow: Section) -> str | None:
    value = workflow.data.get("version")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    workflow.report("version", f"must be a string or a number, not {kind_of(value)}")
    return None


def _inputs(workflow: Section) -> dict[str, InputSpec]:
    inputs = {}
    for name, raw, path in workflow.entries("input"):
        spec = Section(raw, path, workflow.problems, keys=_INPUT_KEYS)
        type_name = spec.text("type") or "string"
        if type_name not in INPUT_TYPES:
            spec.report("type", f"must be one of {', '.join(INPUT_TYPES)}, not {show(type_name)}")
        default = spec.data.get("default")
        if default is not None and type_name in INPUT_TYPES and not matches_type(default, type_name):
            spec.report("default", f"must be {INPUT_TYPES[type_name]} like the input, not {kind_of(default)}")
        elif default is not None and (bad := non_json_kind(default)):
            spec.report("default", f"must be plain JSON data, but holds {bad}")
        inputs[name] = InputSpec(
            name=name,
            type=type_name,
            required=spec.flag("required", default=True),  # conductor's default
            default=copy.deepcopy(default),
            has_default=default is not None,
            description=spec.text("description") or "",
        )
    return inputs


def _limits(workflow: Section) -> LimitsSpec:
    raw = workflow.data.get("limits")
    if raw is None:
        return LimitsSpec()
    cleaned, problems = check_limits(raw, path=workflow.at("limits"))
    workflow.problems.extend(problems)
    return LimitsSpec(**cleaned)


@dataclass(frozen=True)
class _Provider:
    name: str
    path: str  # where the name is written
    written: bool  # False: conductor's default
    endpoint: str | None = None
    wire_type: str | None = None
    wire_api: str | None = None


def _provider(runtime: Section) -> _Provider:
    """`runtime.provider`, written as a name or as conductor's object form `{name: ...}`."""
    raw = runtime.data.get("provider")
    if not isinstance(raw, Mapping):
        return _Provider(runtime.text("provider") or DEFAULT_PROVIDER, runtime.at("provider"), raw is not None)
    from_environment = {key: _from_the_environment for key in _FROM_THE_ENVIRONMENT}
    given = runtime.section(
        "provider",
        keys=("name", "hermes_toolsets", "base_url", "type", "wire_api"),
        unsupported=_PROVIDER_UNSUPPORTED,
        ignored=from_environment,
    )
    if given.data.get("hermes_toolsets") not in (None, []):
        # An empty list is what every agent here has: no tools.
        given.report(
            "hermes_toolsets",
            "Hermes toolsets are that runtime's built-in tools, which are not offered here (an agent's tools "
            "are MCP servers', under workflow.runtime.mcp_servers); only an empty list (no toolsets) is",
        )
    return _Provider(
        given.text("name") or DEFAULT_PROVIDER,
        given.at("name"),
        True,
        endpoint=_endpoint(given),
        wire_type=_choice(given, "type", WIRE_TYPES),
        wire_api=_choice(given, "wire_api", WIRE_APIS),
    )


def _endpoint(provider: Section) -> str | None:
    """`base_url` written out: the endpoint the workflow names, checked against the team's
    credentials in `check_endpoint`. As one `${VAR}` it names the credentials, and has no effect;
    a `${VAR}` within it is refused as anywhere (`interpolation_problems`)."""
    if is_environment_reference(provider.data.get("base_url")):
        return None
    url = provider.text("base_url")
    if url is None or interpolation_in(url) is not None:
        return None
    if problem := base_url_problem(url):
        provider.report("base_url", problem)
        return None
    return url


def _choice(provider: Section, key: str, choices: tuple[str, ...]) -> str | None:
    """One of conductor's `choices` for `key`; None, after reporting it, for one refused whatever the
    backend (REFUSED_WIRES)."""
    value = provider.text(key)
    if value is None:
        return None
    if value not in choices:
        provider.report(key, f"must be one of {', '.join(choices)}, not {show(value)}")
        return None
    if value in REFUSED_WIRES[key]:
        provider.report(key, REFUSED_WIRES[key][value])
        return None
    return value


def _from_the_environment(section: Section, key: str) -> None:
    """A key of the object form written as `${VAR}`: the team's credentials are what the environment
    holds here, and they decide; written out, it would hold a secret or name a runtime."""
    if not is_environment_reference(section.data[key]):
        section.report(key, f"'{key}' is not supported: {_FROM_THE_ENVIRONMENT[key]}")


def environment_references(raw: Mapping) -> frozenset[str]:
    """The paths of the provider keys written as one `${VAR}`, which are accepted (`_from_the_environment`,
    `_endpoint`)."""
    provider = raw
    for key in ("workflow", "runtime", "provider"):
        provider = provider.get(key) if isinstance(provider, Mapping) else None
    if not isinstance(provider, Mapping):
        return frozenset()
    return frozenset(
        f"{PROVIDER_PATH}.{key}"
        for key in ("base_url", *_FROM_THE_ENVIRONMENT)
        if key in provider and is_environment_reference(provider[key])
    )


def check_provider(
    problems: list[Problem], path: str, name: str, provider_routes: Mapping[str, str], *, written: bool = True
) -> None:
    """Report at `path` a provider the workflow may not use; `written` is False for conductor's default."""
    if problem := provider_problem(name, provider_routes):
        problems.append(Problem(path, problem if written else f"no provider is named, so conductor's default applies: {problem}"))


def check_endpoint(
    problems: list[Problem], header: Header, provider_routes: Mapping[str, str], endpoints: Mapping[str, str]
) -> None:
    """Report what the object form names of the calls through the workflow's provider (its agents
    use it) that is not so for the team: an endpoint its credentials do not point at, a wire its
    backend does not speak (definition/endpoints.py). A provider that reaches no backend is reported
    by `check_provider`."""
    named = {"base_url": header.endpoint, "type": header.wire_type, "wire_api": header.wire_api}
    named = {key: value for key, value in named.items() if value is not None}
    if not named or provider_problem(header.provider, provider_routes):
        return
    backend = backend_of(header.provider, provider_routes)
    if backend == "fake":
        for key in named:
            problems.append(Problem(f"{PROVIDER_PATH}.{key}", "the fake provider calls no endpoint and speaks no wire: remove it"))
        return
    found = {
        "base_url": header.endpoint
        and endpoint_problem(url=header.endpoint, provider=header.provider, backend=backend, endpoints=endpoints),
        "type": header.wire_type and wire_problem(wire=header.wire_type, provider=header.provider, backend=backend),
        "wire_api": header.wire_api and wire_api_problem(wire_api=header.wire_api, provider=header.provider, backend=backend),
    }
    problems.extend(Problem(f"{PROVIDER_PATH}.{key}", problem) for key, problem in found.items() if problem)


def _pricing(entries: list[tuple[str, Any, str]], problems: list[Problem]) -> dict[str, UnitPrices]:
    pricing = {}
    for model, raw, path in entries:
        prices = Section(raw, path, problems, keys=_PRICE_KEYS, nullable=False)
        input_price = prices.money("input_per_mtok", required=True)
        output_price = prices.money("output_per_mtok", required=True)
        cache_read = prices.money("cache_read_per_mtok")
        if prices.data.get("cached_input_per_mtok") is not None:
            if cache_read is not None:
                prices.report("cached_input_per_mtok", "is another name for cache_read_per_mtok; give only one")
            cache_read = prices.money("cached_input_per_mtok")
        cache_write = prices.money("cache_write_per_mtok")
        if input_price is not None and output_price is not None:
            pricing[model] = UnitPrices(input_price, output_price, cache_read, cache_write)
    return pricing
