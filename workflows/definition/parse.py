"""Parsing and validating a workflow definition."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ._agents import read_agents, read_templates
from ._groups import group_names_written, read_groups
from ._refused import TOP_UNSUPPORTED, interpolation_problems
from ._section import Section
from ._source import MAX_EXPANDED_BYTES, read_source
from ._values import kind_of
from ._workflow import Header, check_endpoint, check_provider, environment_references, read_header
from .errors import DefinitionError, Problem
from .model import AgentSpec, WorkflowDefinition
from .references import check_references
from .subworkflows import attach_subworkflows, forwarded_inputs
from .pricing import FREELY_PRICED_PROVIDERS, UnitPrices, rates_below
from .tools import MCP_SERVERS_PATH, STDIO_SERVERS, RegisteredServer, no_tool_server, registered_header_paths

MAX_DEFINITION_BYTES = 256 * 1024
_NOTHING: Mapping[str, str] = MappingProxyType({})
_NO_SERVERS: Mapping[str, RegisteredServer] = MappingProxyType({})

_TOP_KEYS = ("workflow", "tools", "agents", "parallel", "for_each", "output")


def _nothing_priced(model: str) -> bool:
    return False


def _no_table(model: str) -> UnitPrices | None:
    return None


def _no_workflows(name: str) -> WorkflowDefinition | None:
    return None


def load_definition(
    source: str | bytes | Mapping[str, Any],
    *,
    is_priced: Callable[[str], bool] = _nothing_priced,
    provider_routes: Mapping[str, str] = _NOTHING,
    refused_kinds: Mapping[str, str] = _NOTHING,
    provider_models: Mapping[str, str] = _NOTHING,
    max_bytes: int = MAX_DEFINITION_BYTES,
    table_prices: Callable[[str], UnitPrices | None] = _no_table,
    may_lower_prices: bool = False,
    max_expanded_bytes: int = MAX_EXPANDED_BYTES,
    workflows: Callable[[str], WorkflowDefinition | None] = _no_workflows,
    registered_servers: Mapping[str, RegisteredServer] = _NO_SERVERS,
    provider_endpoints: Mapping[str, str] = _NOTHING,
) -> WorkflowDefinition:
    """A definition from YAML (or JSON) text or an already-parsed mapping, at most ``max_bytes``
    long as sent and ``max_expanded_bytes`` once YAML aliases are expanded.

    `provider_routes` maps the provider names that reach a backend only through a route (conductor's
    copilot, claude-agent-sdk, hermes) to the backend each reaches for the uploading team.
    `refused_kinds` maps the kinds of step the uploading team may not use to why (and STDIO_SERVERS,
    stdio MCP servers, when it may not start them), and
    `provider_models` a routed provider name to the model its agents take when none is named.
    `table_prices` answers the price table's prices of a model; unless `may_lower_prices`, a real
    provider's workflow may not price a model below them.
    `registered_servers` are the MCP servers an operator registered for the team, by name: a
    `${...}` in a header of a workflow's server is accepted only where a registration of the same
    name, transport and URL holds that header (definition/tools.py).
    `provider_endpoints` maps each backend the team has credentials for to the base URL they call:
    a workflow may name its calls' endpoint only where they point (definition/endpoints.py).

    Raises DefinitionError listing every problem found; never any other exception.
    """
    raw = read_source(source, max_bytes=max_bytes, max_expanded_bytes=max_expanded_bytes)
    if not isinstance(raw, Mapping):
        raise DefinitionError(
            [Problem("definition", f"must be a mapping with 'workflow' and 'agents', not {kind_of(raw)}")]
        )
    problems: list[Problem] = []
    top = Section(raw, "", problems, keys=_TOP_KEYS, unsupported=TOP_UNSUPPORTED)
    header = read_header(
        top, stdio_refused=refused_kinds.get(STDIO_SERVERS), registered_servers=registered_servers
    )
    if header.tools and not header.mcp_servers:
        problems.append(Problem("tools", no_tool_server(header.tools)))
    first_use: dict[str, str] = {}  # agents and groups share one namespace
    agents, steps, scope = read_agents(
        top,
        header,
        lacks_price=_price_check(header, is_priced),
        provider_routes=provider_routes,
        refused_kinds=refused_kinds,
        provider_models=provider_models,
        group_names=group_names_written(raw),
        first_use=first_use,
    )
    parallel, for_each = read_groups(top, scope, agents, first_use)
    inline = [group.agent for group in for_each.values() if isinstance(group.agent, AgentSpec)]
    providers = {agent.provider for agent in (*agents.values(), *inline)}
    # The workflow's provider, and the endpoint it names, matter only where its agents use it.
    uses_provider = header.provider in providers
    if uses_provider:
        check_provider(problems, header.provider_path, header.provider, provider_routes, written=header.provider_written)
        check_endpoint(problems, header, provider_routes, provider_endpoints)
    if not may_lower_prices and not providers <= FREELY_PRICED_PROVIDERS:
        _check_price_floor(header, table_prices, problems)
    output = _output(top)
    # Not where another problem is: a key refused for itself needs no second reason.
    reported = {problem.path for problem in problems} | _environment_references(raw)
    accepted = registered_header_paths(header.mcp_servers) | _inline_header_paths(raw)
    problems.extend(problem for problem in interpolation_problems(raw, accepted=accepted) if problem.path not in reported)
    if problems:
        raise DefinitionError(problems)
    # Both are only None when a problem was reported.
    assert header.name is not None and header.entry_point is not None
    definition = WorkflowDefinition(
        name=header.name,
        description=header.description,
        version=header.version,
        entry_point=header.entry_point,
        inputs=header.inputs,
        limits=header.limits,
        provider=header.provider,
        endpoint=header.endpoint if uses_provider else None,
        wire=header.wire_type if uses_provider else None,
        wire_api=header.wire_api if uses_provider else None,
        default_model=header.default_model,
        max_tokens=header.max_tokens,
        temperature=header.temperature,
        pricing=header.pricing,
        agents=agents,
        steps=steps,
        output=output,
        parallel=parallel,
        for_each=for_each,
        context_mode=header.context_mode,
        mcp_servers=header.mcp_servers,
        tool_output_chars=header.tool_output_chars,
    )
    paths = _paths(raw)

    def load_inline(inline: Mapping[str, Any], at: str) -> WorkflowDefinition | None:
        try:
            return load_definition(
                inline,
                is_priced=is_priced,
                provider_routes=provider_routes,
                refused_kinds=refused_kinds,
                provider_models=provider_models,
                max_bytes=max_bytes,
                table_prices=table_prices,
                may_lower_prices=may_lower_prices,
                max_expanded_bytes=max_expanded_bytes,
                workflows=workflows,
                registered_servers=registered_servers,
                provider_endpoints=provider_endpoints,
            )
        except DefinitionError as exc:
            problems.extend(Problem(f"{at}.{problem.path}", problem.message) for problem in exc.problems)
            return None

    subworkflows = attach_subworkflows(
        definition,
        paths,
        resolve=workflows,
        load_inline=load_inline,
        provider_routes=provider_routes,
        refused_kinds=refused_kinds,
        problems=problems,
    )
    if problems:
        raise DefinitionError(problems)
    # Names are resolved once everything they can name is known to be valid.
    definition = replace(definition, subworkflows=subworkflows)
    reference_problems, reads = check_references(definition, paths)
    if reference_problems:
        raise DefinitionError(reference_problems)
    # A run must give what its sub-workflows read of its inputs as well as what it reads itself.
    reads_inputs = set(reads.inputs) | (forwarded_inputs(definition) if not definition.inputs else set())
    definition = replace(
        definition, reads_budget=reads.budget, reads_team_budget=reads.team_budget, reads_inputs=tuple(sorted(reads_inputs))
    )
    if subworkflows:
        _check_expanded_size(definition, max_expanded_bytes)
    return definition


def _environment_references(raw: Mapping[str, Any]) -> frozenset[str]:
    """The provider keys written as one `${VAR}` (accepted, `environment_references`) of the workflow
    and of the workflows written inline in its steps, however deep: each such workflow is read on its
    own, which decides on them."""
    entries = raw.get("agents")
    paths = set(environment_references(raw))
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        inline = entry.get("workflow") if isinstance(entry, Mapping) else None
        if isinstance(inline, Mapping):
            paths.update(f"agents[{index}].workflow.{path}" for path in _environment_references(inline))
    return frozenset(paths)


def _inline_header_paths(raw: Mapping[str, Any]) -> frozenset[str]:
    """The MCP server headers of workflows written inline in steps: each such workflow is read on its
    own, with the team's registered servers, which decide whether a `${...}` in one is accepted."""
    def mapping(value: Any, key: str) -> Mapping[str, Any]:
        found = value.get(key) if isinstance(value, Mapping) else None
        return found if isinstance(found, Mapping) else {}

    entries = raw.get("agents")
    paths = set()
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        runtime = mapping(mapping(mapping(entry, "workflow"), "workflow"), "runtime")
        for name, server in mapping(runtime, "mcp_servers").items():
            for header in mapping(server, "headers"):
                paths.add(f"agents[{index}].workflow.{MCP_SERVERS_PATH}.{name}.headers.{header}")
    return frozenset(paths)


def _check_expanded_size(definition: WorkflowDefinition, max_bytes: int) -> None:
    """Each sub-workflow is kept whole in its caller: together they must fit what one definition may
    be. Measured a sub-workflow at a time, each distinct one once, and refused as soon as the sum is
    past the limit, so that many steps naming one large workflow never build the whole."""
    size = len(json.dumps(replace(definition, subworkflows={}).to_dict()).encode())
    sizes: dict[int, int] = {}
    for child in definition.subworkflows.values():
        if id(child) not in sizes:
            sizes[id(child)] = len(json.dumps(child.to_dict()).encode())
        size += sizes[id(child)]
        if size > max_bytes:
            raise DefinitionError(
                [Problem("agents", f"with its sub-workflows the definition is over {max_bytes:,} bytes, the limit")]
            )


def _paths(raw: Mapping[str, Any]) -> dict[str, str]:
    """Where each agent, step and group of a valid definition is written, by name."""
    return {
        entry["name"]: f"{key}[{index}]"
        for key in ("agents", "parallel", "for_each")
        for index, entry in enumerate(raw.get(key) or ())
    }


def _price_check(header: Header, is_priced: Callable[[str], bool]) -> Callable[[str], bool]:
    """Whether a model lacks the price that an enforced budget needs."""
    enforced = header.limits.budget_mode == "enforce" and header.limits.budget_usd is not None
    return lambda model: enforced and model not in header.priced_models and not is_priced(model)


def _check_price_floor(
    header: Header, table_prices: Callable[[str], UnitPrices | None], problems: list[Problem]
) -> None:
    """The price table wins for a real provider: a workflow may price what the table lacks, or price
    it higher, never lower."""
    for model, listed in header.pricing.items():
        table = table_prices(model)
        if table is None:
            continue
        for key, rate, floor in rates_below(listed=listed, floor=table):
            problems.append(
                Problem(
                    f"workflow.cost.pricing.{model}.{key}",
                    f"{rate} is below the price table's {floor} for '{model}' (provider '{header.provider}'); "
                    "a workflow may not lower a table price unless an operator allowed the team to",
                )
            )


def _output(top: Section) -> dict[str, str]:
    return read_templates(top, "output")
