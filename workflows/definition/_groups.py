"""Reading the ``parallel:`` and ``for_each:`` groups of a definition."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._agents import AGENT_NAME, _AGENT_KEYS, Scope, name_register, read_agent, read_routes
from ._refused import AGENT_IGNORED, AGENT_UNSUPPORTED, fields_of_other_kinds
from ._section import Section
from ._values import show
from .errors import Problem
from .model import DEFAULT_MAX_CONCURRENT, FAILURE_MODES, AgentSpec, ForEachSpec, ParallelSpec, StepSpec
from .sessions import concurrent_session_problem, shared_session_problem
from .step_kinds import COMMON_KEYS, step_reader

MAX_CONCURRENT_CEILING = 100
DEFAULT_LOOP_VARIABLE = "item"

_PARALLEL_KEYS = ("name", "description", "agents", "failure_mode", "routes")
_FOR_EACH_KEYS = ("name", "description", "type", "source", "as", "max_concurrent", "failure_mode", "agent", "routes")
_FOR_EACH_UNSUPPORTED = {"key_by": "a for_each group's outputs are a list, in item order"}
_GROUP_DIALOG = (
    "a dialog on the agent of a group is not supported: conductor runs no dialog for a group's agents, "
    "whose branches run at once (a dialog works on an agent outside groups)"
)
# The kind of step a for_each group may run besides an agent: a sub-workflow (subworkflows.py).
_GROUP_STEP_KIND = "workflow"
# Conductor's reserved loop variable names.
_LOOP_RESERVED = frozenset({"workflow", "context", "output", "_index", "_key"})
_LOOP_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = AGENT_NAME.pattern
# "workflow.input.NAME", "AGENT.output" or "GROUP.outputs", each followed by any number of ".FIELD".
_SOURCE = re.compile(
    rf"(?:workflow\.input\.(?P<input>[^.]+)|(?P<agent>{_NAME})\.output|(?P<group>{_NAME})\.outputs)(?:\.[^.]+)*"
)


def group_names_written(data: Mapping) -> frozenset[str]:
    """The names the groups claim, before they are checked: what routes and the entry point may name."""
    names = set()
    for key in ("parallel", "for_each"):
        groups = data.get(key)
        if isinstance(groups, list):
            names.update(g["name"] for g in groups if isinstance(g, Mapping) and isinstance(g.get("name"), str))
    return frozenset(names)


def read_groups(
    top: Section, scope: Scope, agents: Mapping[str, AgentSpec], first_use: dict[str, str]
) -> tuple[dict[str, ParallelSpec], dict[str, ForEachSpec]]:
    parallel = {}
    for index, raw in enumerate(top.sequence("parallel")):
        section = Section(raw, f"parallel[{index}]", top.problems, keys=_PARALLEL_KEYS, nullable=False)
        group = _parallel(section, scope, agents, first_use)
        if group is not None:
            parallel[group.name] = group
    for_each = {}
    for index, raw in enumerate(top.sequence("for_each")):
        section = Section(
            raw, f"for_each[{index}]", top.problems, keys=_FOR_EACH_KEYS, unsupported=_FOR_EACH_UNSUPPORTED, nullable=False
        )
        group = _for_each(section, scope, first_use)
        if group is not None:
            for_each[group.name] = group
    return parallel, for_each


def _parallel(
    section: Section, scope: Scope, agents: Mapping[str, AgentSpec], first_use: dict[str, str]
) -> ParallelSpec | None:
    name = name_register(section, first_use, kind="group")
    members = _members(section, scope, agents)
    listed = section.data.get("agents")
    if isinstance(listed, list) and len(listed) < 2:
        section.report("agents", "must list at least two agents (one agent needs no group)")
    failure_mode = _failure_mode(section)
    routes = read_routes(section, scope)
    if name is None or failure_mode is None:
        return None
    return ParallelSpec(
        name=name,
        description=section.text("description") or "",
        agents=members,
        failure_mode=failure_mode,
        routes=routes,
    )


def _members(section: Section, scope: Scope, agents: Mapping[str, AgentSpec]) -> tuple[str, ...]:
    members: list[str] = []
    keyed: dict[str, str] = {}  # each session_key a member has, and the first member with it
    for index, member in enumerate(section.sequence("agents", required=True)):
        path = f"{section.at('agents')}[{index}]"
        if not isinstance(member, str):
            problem = f"must be an agent name, not {show(member)}"
        elif member in scope.group_names:
            problem = f"'{member}' is a group; groups cannot be nested"
        elif member not in scope.agent_names:
            problem = f"no agent named '{member}'"
        elif member in scope.step_kinds:
            problem = f"'{member}' is a {scope.step_kinds[member]} step; a parallel group runs agents"
        elif member in members:
            problem = f"agent '{member}' is listed twice"
        elif member in agents and agents[member].routes:
            problem = f"agent '{member}' has routes; an agent in a parallel group must not (the group's routes are taken)"
        elif member in agents and agents[member].dialog is not None:
            problem = f"agent '{member}' has a dialog: {_GROUP_DIALOG}"
        elif (key := _session_of(agents, member)) in keyed:
            problem = shared_session_problem(first=keyed[key], second=member, key=key)
        else:
            members.append(member)
            if key is not None:
                keyed[key] = member
            continue
        section.problems.append(Problem(path, problem))
    return tuple(members)


def _session_of(agents: Mapping[str, AgentSpec], member: str) -> str | None:
    return agents[member].session_key if member in agents else None


def _for_each(section: Section, scope: Scope, first_use: dict[str, str]) -> ForEachSpec | None:
    name = name_register(section, first_use, kind="group")
    group_type = section.data.get("type")
    if group_type is not None and group_type != "for_each":
        section.report("type", f"must be 'for_each', not {show(group_type)}")
    source = _source(section, scope, name)
    as_name = _loop_variable(section, scope)
    max_concurrent = section.integer("max_concurrent", minimum=1, maximum=MAX_CONCURRENT_CEILING)
    failure_mode = _failure_mode(section)
    agent = _inline_agent(section, scope, name, first_use)
    routes = read_routes(section, scope)
    slots = max_concurrent or DEFAULT_MAX_CONCURRENT
    if isinstance(agent, AgentSpec) and agent.session_key is not None and slots > 1:
        problem = concurrent_session_problem(key=agent.session_key, max_concurrent=slots)
        section.problems.append(Problem(f"{section.at('agent')}.session_key", problem))
    if None in (name, source, as_name, failure_mode, agent):
        return None
    return ForEachSpec(
        name=name,
        description=section.text("description") or "",
        source=source,
        as_name=as_name,
        max_concurrent=slots,
        failure_mode=failure_mode,
        agent=agent,
        routes=routes,
    )


def _failure_mode(section: Section) -> str | None:
    mode = section.text("failure_mode") or FAILURE_MODES[0]
    if mode not in FAILURE_MODES:
        section.report("failure_mode", f"must be one of {', '.join(FAILURE_MODES)}, not {show(mode)}")
        return None
    return mode


def _source(section: Section, scope: Scope, group: str | None) -> str | None:
    source = section.text("source", required=True)
    if source is None:
        return None
    match = _SOURCE.fullmatch(source)
    if match is None:
        problem = (
            f"{show(source)} must be a reference like 'workflow.input.NAME', 'AGENT.output.FIELD' or "
            "'GROUP.outputs', with any number of '.FIELD' after it"
        )
    elif match["input"] is not None and scope.header.inputs and match["input"] not in scope.header.inputs:
        # With no input block, any input may be given (and one read is required: references.py).
        problem = f"no workflow input named '{match['input']}'"
    elif match["agent"] is not None and match["agent"] not in scope.agent_names:
        problem = f"no agent named '{match['agent']}'"
    elif match["group"] is not None and match["group"] not in scope.group_names:
        problem = f"no group named '{match['group']}'"
    elif match["group"] is not None and match["group"] == group:
        problem = "a group cannot iterate over its own outputs"
    else:
        return source
    section.report("source", problem)
    return None


def _loop_variable(section: Section, scope: Scope) -> str | None:
    as_name = section.text("as") or DEFAULT_LOOP_VARIABLE
    if not _LOOP_VARIABLE.fullmatch(as_name):
        problem = f"{show(as_name)} must be an identifier: a letter or '_', then letters, digits or '_'"
    elif as_name in _LOOP_RESERVED:
        problem = f"'{as_name}' is reserved ({', '.join(sorted(_LOOP_RESERVED))})"
    elif as_name in scope.targets:
        problem = f"'{as_name}' is the name of an agent or group, which templates would no longer see"
    else:
        return as_name
    section.report("as", problem)
    return None


def _inline_agent(
    section: Section, scope: Scope, group: str | None, first_use: dict[str, str]
) -> AgentSpec | StepSpec | None:
    """The group's agent, or the `workflow` step each of its branches runs; without a name of its own
    it takes the group's, which its steps then carry."""
    if section.data.get("agent") is None:
        section.missing("agent")
        return None
    raw = section.data["agent"]
    reader = step_reader(raw.get("type")) if isinstance(raw, Mapping) else None
    runs_workflow = reader is not None and reader.name == _GROUP_STEP_KIND
    if runs_workflow:
        agent = section.section("agent", keys=COMMON_KEYS + reader.keys)
    else:
        keys = _AGENT_KEYS + fields_of_other_kinds(raw)
        agent = section.section("agent", keys=keys, unsupported=AGENT_UNSUPPORTED, ignored=AGENT_IGNORED)
    if agent.data.get("name") is None:
        name = group
    else:
        name = name_register(agent, first_use, kind="agent")
    if agent.data.get("routes") is not None:
        agent.report("routes", "the agent of a for_each group takes no routes; give them to the group")
    if runs_workflow:
        params = reader.read(agent)
        if name is None or params is None:
            return None
        description = agent.text("description") or ""
        return StepSpec(name=name, kind=reader.name, description=description, routes=(), params=dict(params))
    if agent.data.get("type") not in (None, "agent"):
        agent.report(
            "type",
            f"a for_each group runs an agent, or a sub-workflow (type 'workflow'): a step of type "
            f"{show(agent.data['type'])} cannot be its agent yet",
        )
        return None
    if agent.data.get("dialog") is not None:
        agent.report("dialog", _GROUP_DIALOG)
    return read_agent(agent, name, scope)
