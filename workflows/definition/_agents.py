"""Reading the ``agents:`` list of a definition, including every reference between agents."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ._call_settings import agent_context_tier, agent_deadline, agent_effort
from ._refused import AGENT_UNSUPPORTED
from ._refused import fields_of_other_kinds, no_call_unsupported
from ._section import Section
from ._values import kind_of, non_json_kind, show
from ._workflow import MAX_TEMPERATURE, Header, check_provider
from .bounds import MAX_CALL_TOKENS, MAX_NAME_CHARS
from .errors import Problem
from .inputs import INPUT_TYPES
from .outputs import CONSTRAINTS, constraint_problems
from .model import END, AgentSpec, DialogSpec, MockSpec, RouteSpec, StepSpec, ValidatorSpec
from .providers import ROUTABLE
from .reasoning import MIN_REASONING_CAP, MIN_THINKING_TOKENS
from .sessions import session_key_problem
from .step_kinds import COMMON_KEYS, StepReader, step_kind_names, step_reader
from .conditions import condition_check
from .templates import compile_check
from .tools import MAX_AGENT_ITERATIONS, agent_tool_filter, agent_tool_problems, tool_names
from .validation import MAX_RETRIES

AGENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Templates see these names: the workflow, the run's progress, its budget, a route's own output.
RESERVED_NAMES = frozenset({"workflow", "context", "budget", "output"})
_RESERVED_MEANING = {
    "workflow": "workflow's name and inputs",
    "context": "run's progress",
    "budget": "run's budget",
    "output": "routed step's own output",
}
MAX_MOCK_LATENCY_MS = 600_000
MAX_MOCK_CALLS_PER_TURN = 16

_AGENT_KEYS = (
    "name", "description", "type", "model", "provider", "system_prompt", "prompt", "input",
    "output", "routes", "max_tokens", "temperature", "stream", "mock", "validator", "dialog",
    "reasoning", "context_tier", "timeout_seconds", "max_session_seconds", "tools", "max_agent_iterations",
    "session_key",
)  # fmt: skip
_ROUTE_KEYS = ("to", "when", "output")
_VALIDATOR_KEYS = ("criteria", "model", "max_retries", "mock")
_DIALOG_KEYS = ("trigger_prompt", "mock")
_DIALOG_AND_VALIDATOR = (
    "an agent with both a validator and a dialog is not supported: conductor talks with the person "
    "first and grades what the re-run answers, and here the two would each send the agent back; "
    "give the agent one of them, or put the other on an agent of its own"
)
_MOCK_KEYS = ("output", "output_tokens", "input_tokens", "latency_ms")
_AGENT_MOCK_KEYS = (*_MOCK_KEYS, "rerun_output", "tool_calls")
_TOOLS_WITH_REVIEW = (
    "an agent with tools cannot have a {key} yet: its re-run would have to run its whole tool loop "
    "again; put the {key} on an agent of its own that reads this one's output"
)
_SCHEMA_KEYS = ("type", "description", "items", "properties", *CONSTRAINTS)
# "workflow.input.x", "agent.output", "agent.output.field", "group.outputs", "group.outputs.key",
# "group.outputs.key.field" or "group.errors[.key]", each optionally ending in "?".
_INPUT_REFERENCE = re.compile(
    r"(?:workflow\.input\.(?P<input>[^.?]+)"
    r"|(?P<agent>[A-Za-z_][A-Za-z0-9_-]*)\.output(?:\.[^.?]+)?"
    r"|(?P<group>[A-Za-z_][A-Za-z0-9_-]*)\.(?:outputs(?:\.[^.?]+){0,2}|errors(?:\.[^.?]+)?))\??"
)


@dataclass(frozen=True)
class Scope:
    """What every agent and group is checked against."""

    header: Header
    agent_names: frozenset[str]
    group_names: frozenset[str]  # as written, before the groups themselves are checked
    lacks_price: Callable[[str], bool]
    provider_routes: Mapping[str, str]
    step_kinds: Mapping[str, str]  # the kind of each entry of `agents:` that is not an agent
    provider_models: Mapping[str, str]  # the model a routed provider's agents take when they name none

    @property
    def targets(self) -> frozenset[str]:
        """What an entry point or a route may name."""
        return self.agent_names | self.group_names


def read_agents(
    top: Section,
    header: Header,
    *,
    lacks_price: Callable[[str], bool],
    provider_routes: Mapping[str, str],
    refused_kinds: Mapping[str, str],
    provider_models: Mapping[str, str],
    group_names: frozenset[str] = frozenset(),
    first_use: dict[str, str],
) -> tuple[dict[str, AgentSpec], dict[str, StepSpec], Scope]:
    """The valid agents and steps of other kinds, in the order written, and the scope groups are then
    checked in; problems for the rest and for dangling references. ``first_use`` collects each name's path."""
    raw_agents = top.sequence("agents", required=True)
    if top.data.get("agents") == []:
        top.report("agents", "must list at least one agent")
    readers = [step_reader(raw.get("type")) if isinstance(raw, Mapping) else None for raw in raw_agents]
    for index, reader in enumerate(readers):
        if reader is not None and reader.name in refused_kinds:
            top.problems.append(Problem(f"agents[{index}].type", refused_kinds[reader.name]))
    sections = [
        Section(
            raw,
            f"agents[{index}]",
            top.problems,
            keys=_AGENT_KEYS + fields_of_other_kinds(raw),
            unsupported=AGENT_UNSUPPORTED,
            nullable=False,
        )
        if reader is None
        else Section(
            raw,
            f"agents[{index}]",
            top.problems,
            keys=COMMON_KEYS + reader.keys,
            unsupported=no_call_unsupported(reader.name),
            nullable=False,
        )
        for index, (raw, reader) in enumerate(zip(raw_agents, readers, strict=True))
    ]
    names = [name_register(section, first_use, kind="agent") for section in sections]
    step_kinds = {name: reader.name for name, reader in zip(names, readers, strict=True) if name and reader}
    scope = Scope(header, frozenset(name for name in names if name), group_names, lacks_price, provider_routes, step_kinds, provider_models)
    if raw_agents and header.entry_point is not None and header.entry_point not in scope.targets:
        top.problems.append(Problem("workflow.entry_point", no_target(header.entry_point, scope)))
    agents, steps = {}, {}
    for section, name, reader in zip(sections, names, readers, strict=True):
        if reader is not None:
            step = _read_step(section, name, scope, reader)
            if step is not None:
                steps[step.name] = step
        elif (agent := read_agent(section, name, scope)) is not None:
            agents[agent.name] = agent
    return agents, steps, scope


def name_register(section: Section, first_use: dict[str, str], *, kind: str) -> str | None:
    """The section's valid, unique name, recorded in ``first_use``; one namespace holds agents and groups."""
    name = section.text("name", required=True)
    if name is None:
        return None
    if not AGENT_NAME.fullmatch(name):
        problem = f"{show(name)} must start with a letter or '_' and hold only letters, digits, '_' and '-'"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is {len(name)} characters long; a name may have at most {MAX_NAME_CHARS}"
    elif name in RESERVED_NAMES:
        problem = f"'{name}' is reserved: templates see the {_RESERVED_MEANING[name]} under it; choose another {kind} name"
    elif name in first_use:
        problem = f"duplicate {kind} name '{name}' (first used at {first_use[name]})"
    else:
        first_use[name] = section.path
        return name
    section.report("name", problem)
    return None


def read_agent(section: Section, name: str | None, scope: Scope) -> AgentSpec | None:
    agent_type = section.data.get("type")
    if agent_type is not None and agent_type != "agent":
        supported = ", ".join(f"'{kind}'" for kind in ("agent", *step_kind_names()))
        section.report("type", f"agent type {show(agent_type)} is not supported (only {supported})")
        return None
    # Read every field before giving up on the agent, so all of its problems are reported.
    header = scope.header
    provider = _provider(section, scope)
    model = _model(section, scope, provider)
    prompt = _template(section, "prompt", required=True)
    description = section.text("description") or ""
    system_prompt = _template(section, "system_prompt") or ""
    inputs = _inputs(section, scope)
    output = read_output_schema(section)
    routes = read_routes(section, scope)
    # Unset here and in the runtime, the cap comes from the model's price entry when the step runs.
    max_tokens = section.integer("max_tokens", minimum=1, maximum=MAX_CALL_TOKENS) or header.max_tokens
    temperature = _temperature(section, header)
    stream = section.flag("stream", default=header.stream)
    mock = _mock(section, keys=_AGENT_MOCK_KEYS)
    validator = _validator(section, scope, model)
    dialog = _dialog(section)
    if dialog is not None and section.data.get("validator") is not None:
        section.report("dialog", _DIALOG_AND_VALIDATOR)
    reasoning_effort = agent_effort(section, header.reasoning_effort)
    if reasoning_effort is not None and max_tokens is not None and max_tokens < MIN_REASONING_CAP:
        _report_reasoning_cap(section, name, max_tokens)
    tools, tool_servers = _tools(section, header)
    for key in ("validator", "dialog"):
        if tool_servers and section.data.get(key) is not None:
            section.report(key, _TOOLS_WITH_REVIEW.format(key=key))
    max_agent_iterations = section.integer("max_agent_iterations", minimum=1, maximum=MAX_AGENT_ITERATIONS)
    session_key = _session_key(section)
    if name is None or model is None or prompt is None:
        return None
    return AgentSpec(
        name=name,
        description=description,
        model=model,
        provider=provider,
        system_prompt=system_prompt,
        prompt=prompt,
        input=inputs,
        output=output,
        routes=routes,
        max_tokens=max_tokens,
        temperature=temperature,
        mock=mock,
        stream=stream,
        validator=validator,
        reasoning_effort=reasoning_effort,
        context_tier=agent_context_tier(section, header.context_tier),
        timeout_seconds=agent_deadline(section, header.max_session_seconds),
        dialog=dialog,
        tool_servers=tool_servers,
        tools=tools,
        max_agent_iterations=max_agent_iterations or header.max_agent_iterations,
        session_key=session_key,
    )


def _session_key(section: Section) -> str | None:
    """The agent's session_key, stripped as conductor strips it; None without one or after a problem."""
    value = section.data.get("session_key")
    if value is None:
        return None
    if problem := session_key_problem(value):
        section.report("session_key", problem)
        return None
    return value.strip()


def _tools(section: Section, header: Header) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The names the agent's tools are chosen by (None: all) and the MCP servers it may call, as
    conductor resolves an agent's `tools` against the workflow's (definition/tools.py)."""
    agent_tools = tool_names(section, "tools")
    for key, message in agent_tool_problems(
        agent_tools=agent_tools, workflow_tools=header.tools, servers=header.mcp_servers
    ):
        section.report(key, message)
    if agent_tools == ():
        return (), ()
    return agent_tool_filter(agent_tools, header.tools), tuple(header.mcp_servers)


def _report_reasoning_cap(section: Section, name: str | None, max_tokens: int) -> None:
    """An agent that reasons writes its thinking within max_tokens, so a cap too small for the least
    thinking and an answer is refused where it is written: on the agent, or on the runtime."""
    where = section.at("max_tokens") if section.data.get("max_tokens") is not None else "workflow.runtime.max_tokens"
    section.problems.append(
        Problem(
            where,
            f"{max_tokens} is too small for agent '{name}', which reasons: its thinking counts against "
            f"max_tokens, so it needs at least {MIN_REASONING_CAP} ({MIN_THINKING_TOKENS} for the least "
            "thinking Anthropic takes, and as much for the answer)",
        )
    )


def _dialog(agent: Section) -> DialogSpec | None:
    """The agent's `dialog:` block, checked as conductor checks it (None without one; a problem
    reported leaves the definition refused whatever this returns). Its evaluator calls the agent's
    model through the agent's provider, priced as the agent's call is."""
    if agent.data.get("dialog") is None:
        return None
    section = agent.section("dialog", keys=_DIALOG_KEYS)
    if not section.is_mapping:
        return None
    trigger_prompt = section.text("trigger_prompt", required=True)
    mock = _mock(section, keys=_MOCK_KEYS)
    return None if trigger_prompt is None else DialogSpec(trigger_prompt=trigger_prompt, mock=mock)


def _validator(agent: Section, scope: Scope, model: str | None) -> ValidatorSpec | None:
    """The agent's `validator:` block, checked as conductor checks it (None without one; a problem
    reported leaves the definition refused whatever this returns). Its model, its agent's unless it
    names one, is called through the agent's provider and priced as the agent's is."""
    if agent.data.get("validator") is None:
        return None
    section = agent.section("validator", keys=_VALIDATOR_KEYS)
    if not section.is_mapping:
        return None
    criteria = section.text("criteria", required=True)
    own_model = section.text("model", required=True) if section.data.get("model") is not None else None
    if own_model is not None and own_model != model and scope.lacks_price(own_model):
        section.report("model", _unpriced(own_model))
    max_retries = section.integer("max_retries", minimum=0, maximum=MAX_RETRIES)
    mock = _mock(section, keys=_MOCK_KEYS)
    if criteria is None or (own_model or model) is None:
        return None
    return ValidatorSpec(
        criteria=criteria,
        model=own_model or model,
        max_retries=MAX_RETRIES if max_retries is None else max_retries,
        mock=mock,
    )


def _provider(section: Section, scope: Scope) -> str:
    """The agent's own provider, or the workflow's (checked once for all of its agents, in parse)."""
    name = section.text("provider")
    if name is None:
        return scope.header.provider
    check_provider(section.problems, section.at("provider"), name, scope.provider_routes)
    return name


def _read_step(section: Section, name: str | None, scope: Scope, reader: StepReader) -> StepSpec | None:
    """An entry of a registered kind other than 'agent': the common fields, then the kind's own."""
    description = section.text("description") or ""
    routes = read_routes(section, scope)
    params = reader.read(section)
    if name is None or params is None:
        return None
    for key, target in reader.targets(params):
        if target != END and target not in scope.targets:
            section.report(key, no_target(target, scope))
    return StepSpec(name=name, kind=reader.name, description=description, routes=routes, params=dict(params))


def _model(section: Section, scope: Scope, provider: str) -> str | None:
    if section.data.get("model") is None:
        # Conductor's runtimes pick a model of their own; here the team's route for one may name it.
        model = scope.header.default_model or scope.provider_models.get(provider)
        if model is None:
            routed = f", or give the team's route for '{provider}' a default model" if provider in ROUTABLE else ""
            section.report("model", f"no model: set it here or set workflow.runtime.default_model{routed}")
    else:
        model = section.text("model", required=True)
    if model is not None and scope.lacks_price(model):
        section.report("model", _unpriced(model))
    return model


def _unpriced(model: str) -> str:
    return (
        f"model '{model}' has no price; an enforce budget cannot be kept without one "
        "(add it to workflow.cost.pricing or the price table)"
    )


def _temperature(section: Section, header: Header) -> float | None:
    temperature = section.number("temperature", minimum=0, maximum=MAX_TEMPERATURE)
    return header.temperature if temperature is None else temperature


def _template(section: Section, key: str, *, required: bool = False) -> str | None:
    source = section.text(key, required=required)
    if source is not None and (error := compile_check(source)):
        section.report(key, f"template does not compile: {error}")
        return None
    return source


def _inputs(section: Section, scope: Scope) -> tuple[str, ...]:
    references = []
    for index, reference in enumerate(section.sequence("input")):
        problem = _reference_problem(reference, scope)
        if problem:
            section.problems.append(Problem(f"{section.at('input')}[{index}]", problem))
        else:
            references.append(reference)
    return tuple(references)


def _reference_problem(reference: object, scope: Scope) -> str | None:
    if not isinstance(reference, str):
        return f"must be a string, not {kind_of(reference)}"
    match = _INPUT_REFERENCE.fullmatch(reference)
    if match is None:
        return (
            f"{show(reference)} must look like 'workflow.input.NAME', 'AGENT.output', "
            "'AGENT.output.FIELD' or 'GROUP.outputs', optionally ending in '?'"
        )
    if match["input"] is not None and scope.header.inputs and match["input"] not in scope.header.inputs:
        return f"no workflow input named '{match['input']}'"
    if match["agent"] is not None and match["agent"] not in scope.agent_names:
        return _no_agent(match["agent"], scope.agent_names)
    if match["group"] is not None and match["group"] in scope.agent_names:
        return f"'{match['group']}' is an agent, not a group: its output is '{match['group']}.output'"
    if match["group"] is not None and match["group"] not in scope.group_names:
        return f"no group named '{match['group']}'"
    return None


def read_output_schema(section: Section) -> dict[str, Any] | None:
    """The `output` schema of an agent or another kind's step, checked; None when there is none."""
    raw = section.data.get("output")
    if raw is None:
        return None
    _check_fields(section, "output")
    schema: dict[str, Any] = copy.deepcopy(raw)
    return schema


def _check_fields(owner: Section, key: str) -> None:
    for _, raw, path in owner.entries(key):
        _check_schema(raw, path, owner.problems)


def _check_schema(raw: object, path: str, problems: list[Problem]) -> None:
    schema = Section(raw, path, problems, keys=_SCHEMA_KEYS, nullable=False)
    type_name = schema.text("type", required=True)
    if type_name is not None and type_name not in INPUT_TYPES:
        schema.report("type", f"must be one of {', '.join(INPUT_TYPES)}, not {show(type_name)}")
    schema.text("description")
    if type_name in INPUT_TYPES:
        for key, message in constraint_problems(schema.data, type_name):
            schema.report(key, message)
    if schema.data.get("items") is not None:
        _check_schema(schema.data["items"], schema.at("items"), problems)
    _check_fields(schema, "properties")


def read_routes(section: Section, scope: Scope) -> tuple[RouteSpec, ...]:
    routes = []
    for index, raw in enumerate(section.sequence("routes")):
        route = Section(raw, f"{section.at('routes')}[{index}]", section.problems, keys=_ROUTE_KEYS, nullable=False)
        target = route.text("to", required=True)
        if target is not None and target != END and target not in scope.targets:
            route.report("to", no_target(target, scope))
        when = route.data.get("when")
        if isinstance(when, str) and (error := condition_check(when)):
            route.report("when", f"condition does not compile: {error}")
        elif when is not None and not isinstance(when, (str, bool)):
            route.report("when", f"must be a condition string or true/false, not {kind_of(when)}")
        output = _route_output(route)
        if target is not None:
            routes.append(RouteSpec(to=target, when=when, output=output))
    return tuple(routes)


def _route_output(route: Section) -> dict[str, str] | None:
    """A route's ``output``: templates laid over the workflow's output when the route ends the run."""
    return None if route.data.get("output") is None else read_templates(route, "output")


def read_templates(owner: Section, key: str) -> dict[str, str]:
    """The mapping of names to templates at ``key`` (an output, a route's): each must compile."""
    templates = {}
    for name, template, path in owner.entries(key):
        if not isinstance(template, str):
            owner.problems.append(Problem(path, f"must be a template string, not {kind_of(template)}"))
        elif error := compile_check(template):
            owner.problems.append(Problem(path, f"template does not compile: {error}"))
        else:
            templates[name] = template
    return templates


def _mock(section: Section, *, keys: tuple[str, ...]) -> MockSpec | None:
    if section.data.get("mock") is None:
        return None
    mock = section.section("mock", keys=keys)
    outputs = {key: mock.data.get(key) for key in ("output", "rerun_output")}
    for key, output in outputs.items():
        if output is not None and (bad := non_json_kind(output)):
            mock.report(key, f"must be plain JSON data, but holds {bad}")
    return MockSpec(
        output=copy.deepcopy(outputs["output"]),
        output_tokens=mock.integer("output_tokens", minimum=0, maximum=MAX_CALL_TOKENS),
        input_tokens=mock.integer("input_tokens", minimum=0, maximum=MAX_CALL_TOKENS),
        latency_ms=mock.integer("latency_ms", minimum=0, maximum=MAX_MOCK_LATENCY_MS) or 0,
        rerun_output=copy.deepcopy(outputs["rerun_output"]),
        tool_calls=_mock_tool_calls(mock),
    )


def _mock_tool_calls(mock: Section) -> tuple[tuple[dict[str, Any], ...], ...]:
    """`mock.tool_calls`: for each model call of the agent's tool loop, the calls the fake asks for,
    each `{name, arguments}` with `name` the tool's name as the model is shown it."""
    turns = mock.sequence("tool_calls")
    if len(turns) > MAX_AGENT_ITERATIONS:
        mock.report("tool_calls", f"scripts {len(turns)} model calls; an agent makes at most {MAX_AGENT_ITERATIONS}")
        return ()
    scripted = []
    for turn_index, turn in enumerate(turns):
        where = f"tool_calls[{turn_index}]"
        if not isinstance(turn, list) or not turn or len(turn) > MAX_MOCK_CALLS_PER_TURN:
            mock.report(where, f"must be a list of 1 to {MAX_MOCK_CALLS_PER_TURN} calls, each {{name, arguments}}")
            continue
        calls = []
        for index, raw in enumerate(turn):
            call = Section(raw, mock.at(f"{where}[{index}]"), mock.problems, keys=("name", "arguments"), nullable=False)
            name = call.text("name", required=True)
            arguments = call.data.get("arguments", {})
            if not isinstance(arguments, Mapping) or non_json_kind(arguments):
                call.report("arguments", "must be a mapping of plain JSON data")
            elif name is not None:
                calls.append({"name": name, "arguments": copy.deepcopy(dict(arguments))})
        scripted.append(tuple(calls))
    return tuple(scripted)


def no_target(name: str, scope: Scope) -> str:
    """Why an entry point or route target names nothing; groups are named only in workflows that have some."""
    if not scope.group_names:
        return _no_agent(name, scope.agent_names)
    close = difflib.get_close_matches(name, sorted(scope.targets), n=1, cutoff=0.75)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else f"agents: {', '.join(sorted(scope.agent_names)) or 'none'}; groups: {', '.join(sorted(scope.group_names))}"
    )
    return f"no agent or group named '{name}' ({hint})"


def _no_agent(name: str, agent_names: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(agent_names), n=1, cutoff=0.75)
    hint = f"did you mean '{close[0]}'?" if close else f"agents: {', '.join(sorted(agent_names)) or 'none'}"
    return f"no agent named '{name}' ({hint})"
