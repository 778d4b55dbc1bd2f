"""The parsed, validated form of a workflow definition.

Instances are only ever built from valid input, by ``load_definition`` or by ``from_dict``
on the output of ``to_dict``. Their dicts and tuples are shared: treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from .bounds import MAX_CALL_TOKENS
from .pricing import UnitPrices
from .reasoning import THINKING_TOKENS
from .tools import DEFAULT_MAX_AGENT_ITERATIONS, DEFAULT_TOOL_OUTPUT_CHARS, McpServerSpec

END = "$end"
# Between the names in a step's path inside a sub-workflow: `research/answerer` is the agent
# `answerer` of the workflow the step `research` runs. Names never hold it.
SUBWORKFLOW_SEPARATOR = "/"
# A for_each branch's sub-workflow is named by its group's agent and the item's index, between these:
# `replier[2]/drafter` is the agent `answerer` of the sub-workflow the branch of item 2 runs.
BRANCH_OPEN, BRANCH_CLOSE = "[", "]"
DEFAULT_MAX_CONCURRENT = 10
FAILURE_MODES = ("fail_fast", "continue_on_error", "all_or_nothing")


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    required: bool
    default: Any | None
    has_default: bool
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "has_default": self.has_default,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(**data)


# How a route's `when` is evaluated: as conductor does (a `{{ }}` template, else a simpleeval
# expression), or, for versions stored before that, as one Jinja2 expression with or without `{{ }}`.
CONDUCTOR_CONDITIONS = "conductor"
JINJA_CONDITIONS = "jinja"


@dataclass(frozen=True)
class RouteSpec:
    to: str  # an agent name or END
    when: str | bool | None
    output: dict[str, str] | None = None  # templates merged into the run's output when `to` is END
    conditions: str = CONDUCTOR_CONDITIONS

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "when": self.when, "output": self.output, "conditions": self.conditions}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouteSpec:
        return cls(**{"conditions": JINJA_CONDITIONS, **data})


@dataclass(frozen=True)
class MockSpec:
    """What the fake provider answers for an agent."""

    output: Any | None
    output_tokens: int | None
    latency_ms: int = 0
    # The input tokens to report instead of the fake's own count, as for a prompt of that size. The
    # step's estimate counts them too: the fake never costs more than the gate reserved for it.
    input_tokens: int | None = None
    # What the agent answers when it runs again, sent back by its validator with feedback or after a
    # dialog with a person; None: `output` again.
    rerun_output: Any | None = None
    # For an agent with tools: the calls its model asks for at each model call of its tool loop, in
    # order, each a list of {name, arguments}; once they are used up it answers `output`.
    tool_calls: tuple[tuple[dict[str, Any], ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens,
            "rerun_output": self.rerun_output,
            "tool_calls": [list(turn) for turn in self.tool_calls],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MockSpec:
        # Definitions stored before the counts were bounded at upload are bounded here.
        bounded = {
            key: None if data.get(key) is None else min(data[key], MAX_CALL_TOKENS)
            for key in ("output_tokens", "input_tokens")
        }
        # Versions stored before tools have no tool calls.
        tool_calls = tuple(tuple(turn) for turn in data.get("tool_calls", ()))
        return cls(**{**data, **bounded, "tool_calls": tool_calls})


@dataclass(frozen=True)
class ValidatorSpec:
    """Conductor's `validator:` on an agent: a second call, to `model`, grades the agent's output
    against `criteria` (plain text, never rendered); when it fails and `max_retries` is 1 the agent
    runs once more with the issues appended to its prompt (definition/validation.py)."""

    criteria: str
    model: str  # its own, or its agent's
    max_retries: int
    mock: MockSpec | None = None  # what the fake provider answers for it

    def to_dict(self) -> dict[str, Any]:
        return {
            "criteria": self.criteria,
            "model": self.model,
            "max_retries": self.max_retries,
            "mock": None if self.mock is None else self.mock.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidatorSpec:
        return cls(**{**data, "mock": None if data["mock"] is None else MockSpec.from_dict(data["mock"])})


@dataclass(frozen=True)
class DialogSpec:
    """Conductor's `dialog:` on an agent: a call to the agent's model reads its output against
    `trigger_prompt` (plain text, never rendered) and may ask a person a question; answered, the agent
    runs once more with the question and the answer appended to its prompt (definition/dialog.py)."""

    trigger_prompt: str
    mock: MockSpec | None = None  # what the fake provider answers for the evaluator

    def to_dict(self) -> dict[str, Any]:
        return {"trigger_prompt": self.trigger_prompt, "mock": None if self.mock is None else self.mock.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DialogSpec:
        return cls(**{**data, "mock": None if data["mock"] is None else MockSpec.from_dict(data["mock"])})


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    model: str
    provider: str
    system_prompt: str
    prompt: str
    input: tuple[str, ...]
    output: dict[str, dict[str, Any]] | None
    routes: tuple[RouteSpec, ...]
    max_tokens: int | None  # the agent's or the runtime's; None takes the model's (see output_cap)
    temperature: float | None
    mock: MockSpec | None
    stream: bool = False
    validator: ValidatorSpec | None = None
    # A level of reasoning.REASONING_EFFORTS or a template rendering to one; the agent's or the runtime's.
    reasoning_effort: str | None = None
    # The same for reasoning.CONTEXT_TIERS: checked, and without effect (docs/conductor.md says why).
    context_tier: str | None = None
    # The agent's deadline for its call (timeout_seconds, max_session_seconds), if it set one.
    timeout_seconds: float | None = None
    dialog: DialogSpec | None = None
    # The MCP servers whose tools it may call, by name (none: it makes one model call), the names its
    # tools are chosen by (None: all; definition/tools.py), and how many model calls its loop may make.
    tool_servers: tuple[str, ...] = ()
    tools: tuple[str, ...] | None = None
    max_agent_iterations: int = DEFAULT_MAX_AGENT_ITERATIONS
    # Conductor's session_key: its calls continue the conversation of every execution with the key
    # (definition/sessions.py); None: each call starts afresh.
    session_key: str | None = None

    @property
    def uses_tools(self) -> bool:
        """Whether its step runs a tool loop rather than one model call."""
        return bool(self.tool_servers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "provider": self.provider,
            "system_prompt": self.system_prompt,
            "prompt": self.prompt,
            "input": list(self.input),
            "output": self.output,
            "routes": [route.to_dict() for route in self.routes],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "mock": None if self.mock is None else self.mock.to_dict(),
            "stream": self.stream,
            "validator": None if self.validator is None else self.validator.to_dict(),
            "reasoning_effort": self.reasoning_effort,
            "context_tier": self.context_tier,
            "timeout_seconds": self.timeout_seconds,
            "dialog": None if self.dialog is None else self.dialog.to_dict(),
            "tool_servers": list(self.tool_servers),
            "tools": None if self.tools is None else list(self.tools),
            "max_agent_iterations": self.max_agent_iterations,
            "session_key": self.session_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentSpec:
        validator = data.get("validator")  # versions stored before validators have none
        dialog = data.get("dialog")  # nor before dialogs
        return cls(
            **{
                **data,
                "input": tuple(data["input"]),
                "routes": tuple(RouteSpec.from_dict(route) for route in data["routes"]),
                "mock": None if data["mock"] is None else MockSpec.from_dict(data["mock"]),
                "validator": None if validator is None else ValidatorSpec.from_dict(validator),
                "dialog": None if dialog is None else DialogSpec.from_dict(dialog),
                # Nor before tools these.
                "tool_servers": tuple(data.get("tool_servers", ())),
                "tools": None if data.get("tools") is None else tuple(data["tools"]),
            }
        )


@dataclass(frozen=True)
class StepSpec:
    """A step of a registered kind other than 'agent' (definition/step_kinds.py): its own fields,
    checked by its kind's reader, are `params`."""

    name: str
    kind: str
    description: str
    routes: tuple[RouteSpec, ...]
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "routes": [route.to_dict() for route in self.routes],
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepSpec:
        return cls(**{**data, "routes": tuple(RouteSpec.from_dict(route) for route in data["routes"])})


@dataclass(frozen=True)
class ParallelSpec:
    """A parallel group: its agents run at once, each a step of its own, then its routes are taken."""

    kind: ClassVar[str] = "parallel"  # the kind of group that runs it (services/steps/kinds/)
    name: str
    description: str
    agents: tuple[str, ...]
    failure_mode: str
    routes: tuple[RouteSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "agents": list(self.agents),
            "failure_mode": self.failure_mode,
            "routes": [route.to_dict() for route in self.routes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParallelSpec:
        return cls(
            **{
                **data,
                "agents": tuple(data["agents"]),
                "routes": tuple(RouteSpec.from_dict(route) for route in data["routes"]),
            }
        )


@dataclass(frozen=True)
class ForEachSpec:
    """A for_each group: its agent runs once per item of the list at ``source``, at most
    ``max_concurrent`` at a time, then its routes are taken. Its agent is an agent, or a step of kind
    `workflow` whose sub-workflow each branch runs (subworkflows.py)."""

    kind: ClassVar[str] = "for_each"  # the kind of group that runs it (services/steps/kinds/)
    name: str
    description: str
    source: str  # a reference like "finder.output.items", evaluated when the group is entered
    as_name: str  # what templates call the item
    max_concurrent: int
    failure_mode: str
    agent: AgentSpec | StepSpec
    routes: tuple[RouteSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "as_name": self.as_name,
            "max_concurrent": self.max_concurrent,
            "failure_mode": self.failure_mode,
            "agent": self.agent.to_dict(),
            "routes": [route.to_dict() for route in self.routes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForEachSpec:
        return cls(
            **{
                **data,
                # A step's dict names its kind; an agent's does not.
                "agent": (StepSpec if "kind" in data["agent"] else AgentSpec).from_dict(data["agent"]),
                "routes": tuple(RouteSpec.from_dict(route) for route in data["routes"]),
            }
        )


# A group of any kind: what `WorkflowDefinition.group` answers and a group kind runs.
GroupSpec = ParallelSpec | ForEachSpec


@dataclass(frozen=True)
class LimitsSpec:
    """Limits set by the definition itself; None means "not set here"."""

    max_iterations: int | None = None
    timeout_seconds: int | None = None
    budget_usd: Decimal | None = None
    budget_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_iterations": self.max_iterations,
            "timeout_seconds": self.timeout_seconds,
            "budget_usd": _str_or_none(self.budget_usd),
            "budget_mode": self.budget_mode,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LimitsSpec:
        return cls(**{**data, "budget_usd": _decimal_or_none(data["budget_usd"])})


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    description: str
    version: str | None
    entry_point: str
    inputs: dict[str, InputSpec]
    limits: LimitsSpec
    provider: str
    default_model: str | None
    max_tokens: int | None
    temperature: float | None
    pricing: dict[str, UnitPrices]
    agents: dict[str, AgentSpec]  # in the order written
    output: dict[str, str]  # top-level output templates, possibly empty
    parallel: dict[str, ParallelSpec] = field(default_factory=dict)
    for_each: dict[str, ForEachSpec] = field(default_factory=dict)
    steps: dict[str, StepSpec] = field(default_factory=dict)  # of kinds other than 'agent'
    # Whether templates or conditions read `budget`, and its team figure (one more query per render).
    reads_budget: bool = False
    reads_team_budget: bool = False
    # With no input block: the inputs its templates read, which every run must give (as in conductor,
    # such a workflow takes whatever inputs a run gives).
    reads_inputs: tuple[str, ...] = ()
    context_mode: str = "accumulate"  # which earlier outputs an agent sees (context_modes.py)
    # The workflow each `type: workflow` step runs, by the step's name, as it was at upload (subworkflows.py).
    subworkflows: dict[str, WorkflowDefinition] = field(default_factory=dict)
    # Its MCP servers by name, and how much of a tool's result a model is shown (None: all of it).
    mcp_servers: dict[str, McpServerSpec] = field(default_factory=dict)
    tool_output_chars: int | None = DEFAULT_TOOL_OUTPUT_CHARS
    # The base URL its provider's calls go to, when it names one (definition/endpoints.py): where the
    # team's credentials pointed at upload, and must still point when a run starts.
    endpoint: str | None = None
    # The wire it names for those calls (`type`, `wire_api`), when it does: their backend's at upload,
    # and still so when a run starts, whatever the team's routes became.
    wire: str | None = None
    wire_api: str | None = None

    def agent(self, name: str) -> AgentSpec:
        """A listed agent, or the inline agent of a for_each group, by the name its steps carry."""
        return self.agents.get(name) or next(agent for agent in self.all_agents() if agent.name == name)

    def node(self, name: str) -> AgentSpec | StepSpec:
        """What a step named `name` runs: an agent, or a step of another kind; inside a sub-workflow,
        its path (`research/answerer`, or in a for_each branch's `replier[2]/drafter`) names it."""
        caller, separator, rest = name.partition(SUBWORKFLOW_SEPARATOR)
        if separator:
            return self.subworkflows[step_of_caller(caller)].node(rest)
        return self.steps.get(name) or self.group_steps.get(name) or self.agent(name)

    def group(self, name: str) -> GroupSpec | None:
        """The group named `name`, None if there is none; inside a sub-workflow, its path
        (`research/reviews`) names it, as `node` reads a step's."""
        caller, separator, rest = name.partition(SUBWORKFLOW_SEPARATOR)
        if separator:
            child = self.subworkflows.get(step_of_caller(caller))
            return None if child is None else child.group(rest)
        return self.parallel.get(name) or self.for_each.get(name)

    @property
    def group_names(self) -> frozenset[str]:
        return frozenset(self.parallel) | frozenset(self.for_each)

    def all_agents(self) -> list[AgentSpec]:
        """The listed agents, then each for_each group's inline agent."""
        inline = (group.agent for group in self.for_each.values() if isinstance(group.agent, AgentSpec))
        return [*self.agents.values(), *inline]

    @property
    def agent_names(self) -> frozenset[str]:
        return frozenset(agent.name for agent in self.all_agents()) | frozenset(self.group_steps)

    @property
    def group_steps(self) -> dict[str, StepSpec]:
        """The steps for_each groups run as their agent (a `workflow` step), by name."""
        return {group.agent.name: group.agent for group in self.for_each.values() if isinstance(group.agent, StepSpec)}

    def all_steps(self) -> list[StepSpec]:
        """The listed steps of kinds other than 'agent', then those for_each groups run."""
        return [*self.steps.values(), *self.group_steps.values()]

    def providers(self) -> set[str]:
        """The providers of its agents and of its sub-workflows' agents."""
        return {agent.provider for agent in self.all_agents()}.union(
            *(child.providers() for child in self.subworkflows.values())
        )

    def model_calls(self) -> set[tuple[str, str]]:
        """(model, provider) of each model its agents and their validators call."""
        calls = {(agent.model, agent.provider) for agent in self.all_agents()}
        return calls | {(agent.validator.model, agent.provider) for agent in self.all_agents() if agent.validator}

    def models(self) -> set[str]:
        return {model for model, _ in self.model_calls()}

    def nested(self) -> list[WorkflowDefinition]:
        """Itself, then every sub-workflow it runs, however deep."""
        return [self, *(nested for child in self.subworkflows.values() for nested in child.nested())]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form that ``from_dict`` turns back into an equal definition."""
        # Ordered collections are lists: jsonb does not keep the key order of objects.
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "entry_point": self.entry_point,
            "inputs": [spec.to_dict() for spec in self.inputs.values()],
            "limits": self.limits.to_dict(),
            "provider": self.provider,
            "default_model": self.default_model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "pricing": {model: _prices_to_dict(prices) for model, prices in self.pricing.items()},
            "agents": [agent.to_dict() for agent in self.agents.values()],
            "output": [{"name": name, "template": template} for name, template in self.output.items()],
            "parallel": [group.to_dict() for group in self.parallel.values()],
            "for_each": [group.to_dict() for group in self.for_each.values()],
            "steps": [step.to_dict() for step in self.steps.values()],
            "reads_budget": self.reads_budget,
            "reads_team_budget": self.reads_team_budget,
            "reads_inputs": list(self.reads_inputs),
            "context_mode": self.context_mode,
            "subworkflows": [{"step": name, "definition": child.to_dict()} for name, child in self.subworkflows.items()],
            "mcp_servers": [server.to_dict() for server in self.mcp_servers.values()],
            "tool_output_chars": self.tool_output_chars,
            "endpoint": self.endpoint,
            "wire": self.wire,
            "wire_api": self.wire_api,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowDefinition:
        inputs = (InputSpec.from_dict(spec) for spec in data["inputs"])
        agents = (AgentSpec.from_dict(agent) for agent in data["agents"])
        return cls(
            name=data["name"],
            description=data["description"],
            version=data["version"],
            entry_point=data["entry_point"],
            inputs={spec.name: spec for spec in inputs},
            limits=LimitsSpec.from_dict(data["limits"]),
            provider=data["provider"],
            default_model=data["default_model"],
            max_tokens=data["max_tokens"],
            temperature=data["temperature"],
            pricing={model: _prices_from_dict(prices) for model, prices in data["pricing"].items()},
            agents={agent.name: agent for agent in agents},
            output={item["name"]: item["template"] for item in data["output"]},
            # Versions stored before groups existed have neither key.
            parallel={group["name"]: ParallelSpec.from_dict(group) for group in data.get("parallel", [])},
            for_each={group["name"]: ForEachSpec.from_dict(group) for group in data.get("for_each", [])},
            # Nor before steps of other kinds.
            steps={step["name"]: StepSpec.from_dict(step) for step in data.get("steps", [])},
            # Nor, before templates saw `budget`, these.
            reads_budget=data.get("reads_budget", False),
            reads_team_budget=data.get("reads_team_budget", False),
            reads_inputs=tuple(data.get("reads_inputs", ())),
            context_mode=data.get("context_mode", "accumulate"),
            # Nor, before sub-workflows, this.
            subworkflows={
                item["step"]: WorkflowDefinition.from_dict(item["definition"]) for item in data.get("subworkflows", [])
            },
            # Nor, before tools, these.
            mcp_servers={server["name"]: McpServerSpec.from_dict(server) for server in data.get("mcp_servers", [])},
            tool_output_chars=data.get("tool_output_chars", DEFAULT_TOOL_OUTPUT_CHARS),
            # Nor, before a workflow could name its endpoint, this.
            endpoint=data.get("endpoint"),
            wire=data.get("wire"),
            wire_api=data.get("wire_api"),
        )


def step_of_caller(caller: str) -> str:
    """The step a sub-workflow's caller names: itself, or for a for_each branch's (`replier[2]`)
    the group's agent."""
    return caller.partition(BRANCH_OPEN)[0]


def branch_caller(agent: str, index: int) -> str:
    """What the sub-workflow of the branch at `index` of a for_each group whose agent is at path
    `agent` is called by: the path of its steps up to the separator (`replier[2]`)."""
    return f"{agent}{BRANCH_OPEN}{index}{BRANCH_CLOSE}"


def entering_step(caller: str) -> tuple[str, int | None]:
    """The step that entered the frame `caller` names: its path, and for a for_each branch's frame
    (`research/replier[2]`) the branch's index, its step being the group's agent's (`research/replier`, 2)."""
    outer, separator, last = caller.rpartition(SUBWORKFLOW_SEPARATOR)
    name, branch, index = last.partition(BRANCH_OPEN)
    return outer + separator + name, int(index.removesuffix(BRANCH_CLOSE)) if branch else None


def output_cap(agent: AgentSpec, prices: UnitPrices | None, *, default: int, effort: str | None = None) -> int:
    """The most output tokens a step may produce, thinking included: the agent's, else the runtime's
    (both already in `agent.max_tokens`), else `default`, the service's output allowance
    (settings.DEFAULT_MAX_TOKENS), plus the thinking tokens of the step's reasoning `effort`, lowered
    to the model's maximum output when the price table lists a smaller one. The request is capped at
    it too, so the estimate built on it is an upper bound on output, whichever the source."""
    if agent.max_tokens is not None:
        return agent.max_tokens
    allowance = default + (THINKING_TOKENS[effort] if effort is not None else 0)
    if prices is not None and prices.max_output_tokens is not None:
        return min(allowance, prices.max_output_tokens)
    return allowance


def _prices_to_dict(prices: UnitPrices) -> dict[str, str | None]:
    return {
        "input_per_mtok": str(prices.input_per_mtok),
        "output_per_mtok": str(prices.output_per_mtok),
        "cached_input_per_mtok": _str_or_none(prices.cached_input_per_mtok),
        "cache_write_per_mtok": _str_or_none(prices.cache_write_per_mtok),
    }


def _prices_from_dict(data: dict[str, Any]) -> UnitPrices:
    return UnitPrices(
        input_per_mtok=Decimal(data["input_per_mtok"]),
        output_per_mtok=Decimal(data["output_per_mtok"]),
        cached_input_per_mtok=_decimal_or_none(data["cached_input_per_mtok"]),
        # Versions stored before cache writes were priced have no such key.
        cache_write_per_mtok=_decimal_or_none(data.get("cache_write_per_mtok")),
    )


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
