"""The interface of a kind of step (how it is validated, estimated, run, settled and routed), and what
the engine hands between the phases: the prepared step and the admitted attempt."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from workflows.definition import AgentSpec, Move, StepSpec, UnitPrices, WorkflowDefinition, next_move
from workflows.models import Run, Step, Team
from workflows.providers import CompletionRequest, CompletionResult, Usage


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
        self, *, node: AgentSpec | StepSpec, context: dict, definition: WorkflowDefinition, may_override_prices: bool
    ) -> PreparedStep:
        """What the step will do and its worst-case cost (None: it has no price). Raises TemplateFailure."""
        raise NotImplementedError

    def run(self, attempt: StepAttempt) -> CompletionResult:
        """Do the work. A ProviderError is retried or fails the step, as its `retryable` says; any
        other exception fails the step resumably."""
        raise NotImplementedError

    def settle(
        self, *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
    ) -> Charged:
        """Charge what the work used (what `run` returned, or what a failed call reported) and add
        `run_deltas` to the run, in one UPDATE of the run."""
        raise NotImplementedError

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        return next_move(definition, node, context)
