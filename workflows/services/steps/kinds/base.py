"""The interfaces of a kind of step (how it is validated, estimated, run, settled and routed) and of a
kind of group (how many branches an entry has, what each runs and sees, the group's result and
route), and what the engine hands between a step's phases: the prepared step and the admitted attempt."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from workflows.definition import (
    MODEL_CALL_ROLE,
    RERUN_ROLE,
    AgentSpec,
    GroupSpec,
    Move,
    StepSpec,
    UnitPrices,
    WorkflowDefinition,
    fails_open,
    next_move,
)
from workflows.errors import ValidationFailed
from workflows.models import EventType, LedgerEntry, Run, Step, StepStatus, Team
from workflows.providers import CompletionRequest, CompletionResult, Usage
from workflows.services.budgets import add


class StepWorkFailed(Exception):
    """A kind's `run` failed in a way its owner should read: the step fails, resumably, with
    `{type: error_type, message}`. The message must hold nothing secret."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class PreparedStep:
    """What a step will do, ready for the gate and for its kind's `run`."""

    kind: str
    estimate_usd: Decimal | None  # its worst-case cost; None when it has no price
    model: str = ""  # what the step records having used
    # An agent's call: the provider, the rendered request and its prices.
    provider: str = ""
    request: CompletionRequest | None = None
    prices: UnitPrices | None = None
    price_source: str = ""
    # The input tokens the estimate counted: with the output cap, the worst case it priced.
    estimated_input_tokens: int = 0
    # Anything else a kind prepares for its `run`, as JSON data.
    data: dict = field(default_factory=dict)
    # How long after the step was entered it may be admitted: until then the engine sends its task
    # again for later, holding no worker meanwhile.
    delay_seconds: float = 0
    # Admitted, the step waits for a person's answer (`StepKind.answer`) instead of running.
    awaits_input: bool = False
    # A call that continues a session (definition/sessions.py): its key, and how many earlier
    # exchanges it replays.
    session: dict | None = None


@dataclass(frozen=True)
class StepAttempt:
    """One admitted attempt at a step: what its worker calls the provider with, and settles."""

    team_id: int
    run_id: int
    step_id: int
    number: int
    prepared: PreparedStep
    # The run and step as the gate admitted them: what the settlement of a step outside any group
    # renders ahead from, as nothing but that settlement changes its run's outputs meanwhile.
    admitted_run: Run | None = field(default=None, compare=False, repr=False)
    admitted_step: Step | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Charged:
    """What settling a step's work charged: its cost (None when unpriced), and what the step's
    `agent_completed` event says of the work (model, tokens)."""

    cost_usd: Decimal | None
    details: dict = field(default_factory=dict)
    entry: LedgerEntry | None = None  # the ledger entry, which the engine writes last (ledger.ledger_charge)


class StepKind:
    """One kind of step. A new kind is one module with a subclass of this, registered by
    `kinds.register_step_kind`; the engine (execute, progression) calls these and nothing else.

    The phases, in the order a step goes through them:
    - `read` validates the kind's own fields when a definition is uploaded (pure: no database);
    - `prepare` renders what the step needs and estimates its cost, before the gate, outside any
      transaction, with the template render budget in force;
    - `run` does the work, outside any transaction: a provider call, or nothing;
    - `settle` records what the work cost, inside the transaction that ends the step, under the
      run and step locks: a ledger entry, or nothing;
    - `route` says where the run goes next, as a pure function of the definition and the context.
    """

    name: str  # the `type` a definition gives steps of this kind
    keys: tuple[str, ...] = ()  # the kind's own fields in a definition, beside name, type, description, routes

    def read(self, section) -> Mapping[str, Any] | None:
        """The step's own fields, checked, as JSON data; None after reporting problems on `section`."""
        return {}

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """What the step will do and its worst-case cost (None: it has no price), under the team's
        pricing permission and the run's provider routes. Raises TemplateFailure."""
        raise NotImplementedError

    def targets(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, name) of each agent or group the kind's own fields route to, for the parser to check
        as it checks `routes`; the key is where a wrong name is reported."""
        return []

    def templates(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, template) of each template among the kind's own fields, whose names the parser
        resolves as it does an agent's prompt's; and (key, "{{ path }}") for a dotted path it reads."""
        return []

    def route_templates(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The same for templates rendered as the step routes, which see its own output too."""
        return []

    def run(self, attempt: StepAttempt) -> CompletionResult:
        """Do the work. A ProviderError is retried or fails the step, as its `retryable` says; any
        other exception fails the step resumably."""
        raise NotImplementedError

    def answer(self, *, node: StepSpec, asked: Mapping[str, Any], given: Mapping[str, Any]) -> Any:
        """For a kind whose steps await input: the step's output for a person's answer `given` to
        what the step `asked` (the request it prepared), or ValidationFailed saying what is wrong."""
        raise NotImplementedError

    def settle(
        self, *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
    ) -> Charged:
        """Charge what the work used (what `run` returned, or what a failed call reported) and add
        `run_deltas` to the run, in one UPDATE of the run. A ledger entry goes in `Charged.entry`,
        unwritten: the engine writes it last (ledger.ledger_charge says why)."""
        raise NotImplementedError

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        return next_move(definition, node, context)

    def completed_event(self, *, step: Step, output: Any) -> tuple[str, dict]:
        """The type of the event saying a step of this kind succeeded with `output`, and what it adds
        to the event's payload beyond the step's name and charge."""
        return EventType.AGENT_COMPLETED, {}


class NoCallStepKind(StepKind):
    """A kind whose steps call no model (conductor's set, wait, terminate, a person's answer, a
    script): it costs nothing and writes no ledger entry; its `run` answers what `prepare` left in
    `data["output"]`, unless the kind runs something itself."""

    def run(self, attempt: StepAttempt) -> CompletionResult:
        return CompletionResult(input_tokens=0, output_tokens=0, output=attempt.prepared.data["output"])

    def settle(
        self, *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
    ) -> Charged:
        add(run, **run_deltas)
        return Charged(cost_usd=Decimal("0"))


class GroupKind:
    """One kind of group: entering it runs several branches, each an agent step of its own, then
    its routes are taken. A new kind is one module with a subclass of this, registered by
    `kinds.register_group_kind`, and the parser's reading of its groups (docs/architecture.md).

    The engine (progression) does what every group does: creates the branches that have a free
    slot, fills slots as branches end, judges the group by its failure mode when its last branch
    ends, and ends a group with no branches at once. It asks the kind only what differs.
    """

    name: str  # the `kind` of the definition's groups of this kind
    # What `branch_context` adds, and the fields of `result`, for uploads to resolve templates against;
    # None: conductor's result for the definition's groups of this kind (parallel's, for_each's).
    branch_names: tuple[str, ...] = ()
    result_fields: tuple[str, ...] | None = None
    # The error type a run fails with when entering a group raised TemplateFailure; needed only by
    # a kind whose `branch_count` can.
    entry_error_type: str
    # Whether an entry whose branches would take the run past max_iterations is refused whole, before
    # any branch runs (conductor's parallel groups), rather than stopped at the branch that would.
    refused_whole_past_max_iterations: bool = False

    def branch_count(self, *, group: GroupSpec, context: dict, entering: bool = False) -> int:
        """How many branches an entry of the group has, in the context of the outputs it is (when
        `entering`), or was, entered with. Only when entering may a limit refuse the count: a group
        already entered keeps its branches. Raises TemplateFailure."""
        raise NotImplementedError

    def branch(self, *, group: GroupSpec, index: int, prefix: str = "") -> tuple[str, str]:
        """The agent the branch at `index` runs, by its path (`prefix` is the path of the sub-workflow
        the group is in, "" at the top), and its key: what the group's result names it by."""
        raise NotImplementedError

    def slots(self, *, group: GroupSpec) -> int:
        """How many of an entry's branches may be in flight at once."""
        raise NotImplementedError

    def branch_context(self, *, group: GroupSpec, context: dict, index: int, key: str) -> dict:
        """What the templates of the branch at `index` see, given the run's. Raises TemplateFailure."""
        return context

    def result(self, *, group: GroupSpec, ended: list["Branch"]) -> dict:
        """The group's result, what templates see under its name once it ended, from its branches in
        index order (`branches_ended`). Its `outputs` and `errors` are what `group_completed` counts and a failed
        group's error carries."""
        raise NotImplementedError

    def route(self, *, definition: WorkflowDefinition, node: GroupSpec, context: dict) -> Move:
        return next_move(definition, node, context)


def check_answer_fields(given: Mapping[str, Any], *, takes: tuple[str, ...], step: str) -> None:
    """Refuse an answer with fields the waiting step does not take (another kind's answer)."""
    if extra := sorted(set(given) - set(takes)):
        raise ValidationFailed(
            f"'{step}' is answered with {' and '.join(takes)}, not {', '.join(extra)}.",
            details=[{"path": field, "message": "not taken by this step"} for field in extra],
        )


@dataclass(frozen=True)
class Branch:
    """A branch of a group that ended, as its group's result sees it. Its steps are its agent's own,
    then, for an agent with tools, its tool loop's, or, for an agent with a validator, its
    validator's and perhaps a re-run: it has failed when its agent's own step or a step of its tool
    loop did, and succeeded otherwise (a validator or a re-run that fails leaves the graded output
    standing, as in conductor); its output is its final one, the answer that ended its tool loop or
    the re-run's when that succeeded. A branch that runs a sub-workflow has the workflow step as its
    own, then its sub-workflow's steps: it has failed when one of those failed its agent, or when
    the sub-workflow failed (its workflow step is then failed), and its output is the workflow
    step's, which the sub-workflow's output replaced when it ended."""

    branch_index: int
    branch_key: str
    status: str  # StepStatus.SUCCEEDED or FAILED
    output: Any
    error: dict | None
    step: Step = field(compare=False, repr=False)  # the step that failed it, else its agent's own


def branches_ended(steps: list[Step]) -> list[Branch]:
    """The branches of one entry of a group, in index order, from all its steps, each branch's
    having ended."""
    chains: dict[int, list[Step]] = {}
    for step in sorted(steps, key=lambda step: (step.branch_index, step.sequence)):
        chains.setdefault(step.branch_index, []).append(step)
    branches = []
    for index, chain in chains.items():
        own = next(step for step in chain if not step.role)
        # The step that failed the agent: its own, or one of its tool loop's (fails_open).
        failed = next((step for step in chain if not fails_open(step.role) and step.status == StepStatus.FAILED), None)
        answered = own.output
        for step in chain:
            if step.status != StepStatus.SUCCEEDED or step.agent != own.agent:
                continue  # a step of its sub-workflow's, if it runs one, ends nothing of its own
            if step.role == MODEL_CALL_ROLE and "answer" in step.output:
                answered = step.output["answer"]  # the model call that ended its tool loop
            elif step.role == RERUN_ROLE:
                answered = step.output
        ended = failed or own
        branches.append(
            Branch(
                branch_index=index,
                branch_key=own.branch_key,
                status=ended.status,
                output=answered,
                error=ended.error,
                step=ended,
            )
        )
    return branches


def branches_by_status(ended: list[Branch]) -> tuple[list[Branch], list[Branch]]:
    """The branches that succeeded and those that failed, each in the order given."""
    succeeded = [branch for branch in ended if branch.status == StepStatus.SUCCEEDED]
    failed = [branch for branch in ended if branch.status == StepStatus.FAILED]
    return succeeded, failed


def branch_error(branch: Branch, *, key_field: str) -> dict:
    """Conductor's entry for a failed branch in its group's `errors`."""
    error = branch.error or {}
    return {key_field: branch.branch_key, "exception_type": error.get("type", ""), "message": error.get("message", "")}
