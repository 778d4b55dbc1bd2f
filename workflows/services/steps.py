"""Executing one step: the gate and reservation, the provider call, then settlement.

Each of `step_begin` and `step_settle` is one transaction that locks the team row, the run row and
then the step row, always in that order. The provider is called between them, outside any transaction.
"""

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from workflows.definition import (
    END,
    NoRouteMatched,
    TemplateFailure,
    UnitPrices,
    WorkflowDefinition,
    cost_usd,
    count_tokens,
    estimate_usd,
    next_agent,
    render,
    render_value,
    template_context,
)
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    BudgetMode,
    Checkpoint,
    EventType,
    LedgerEntry,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Team,
)
from workflows.providers import CompletionRequest, CompletionResult, ProviderError, get_provider
from workflows.selectors import definition_of, latest_checkpoint
from workflows.services.events import event_record, usd
from workflows.services.alerts import alert_send, alerts_after_spend
from workflows.services.budgets import (
    add,
    budget_exceeded_payload,
    gate_input,
    release,
    report_over_budget,
    reserve,
)
from workflows.services.gate import GateDecision, gate_decide
from workflows.services.prices import prices_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedStep:
    """A step's rendered request and its prices, ready for the gate and the provider."""

    provider: str
    request: CompletionRequest
    prices: UnitPrices | None
    price_source: str
    estimate_usd: Decimal | None


@dataclass(frozen=True)
class StepAttempt:
    team_id: int
    run_id: int
    step_id: int
    number: int
    prepared: PreparedStep


def step_prepare(*, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict) -> PreparedStep:
    """Render the step's prompts and estimate its cost. Raises TemplateFailure."""
    agent = definition.agent(step.agent)
    context = template_context(inputs=run.inputs, outputs=outputs)
    system_prompt = render(agent.system_prompt, context, where=f"agent '{agent.name}' system_prompt")
    prompt = render(agent.prompt, context, where=f"agent '{agent.name}' prompt")
    prices, price_source = prices_for(model=agent.model, pricing=definition.pricing)
    estimate = None
    if prices is not None:
        estimate = estimate_usd(
            prices=prices, input_tokens=count_tokens(system_prompt + prompt), max_output_tokens=agent.max_tokens
        )
    options = {"mock": agent.mock.to_dict()} if agent.mock else {}
    request = CompletionRequest(
        model=agent.model,
        system_prompt=system_prompt,
        prompt=prompt,
        max_tokens=agent.max_tokens,
        temperature=agent.temperature,
        output_schema=agent.output,
        options=options,
    )
    return PreparedStep(
        provider=agent.provider, request=request, prices=prices, price_source=price_source, estimate_usd=estimate
    )


def step_execute(*, step_id: int) -> None:
    """Run one step from gate to settlement; the Celery task's whole body."""
    attempt = step_begin(step_id=step_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    if attempt is None:
        return
    try:
        result = get_provider(attempt.prepared.provider).complete(attempt.prepared.request)
    except ProviderError as exc:
        step_fail(attempt=attempt, error={"type": "ProviderError", "message": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001 - includes Celery's soft time limit
        # Whatever stopped the call, the reservation is released and the run fails resumably
        # rather than staying "running" with money held.
        logger.exception("Step %s attempt %s stopped unexpectedly.", attempt.step_id, attempt.number)
        step_fail(
            attempt=attempt,
            error={"type": "StepInterruptedError", "message": f"The provider call stopped: {type(exc).__name__}."},
        )
        return
    step_settle(attempt=attempt, result=result)


def step_schedule(step: Step, *, now: datetime | None = None) -> None:
    """Enqueue the step's task once the transaction that created or reopened it commits.

    The step is stamped as sent in that same transaction: a pending step whose stamp grows old lost
    its message, and the sweeper sends it again.
    """
    from workflows.tasks import execute_step

    step.enqueued_at = now or timezone.now()
    step.save(update_fields=["enqueued_at"])
    transaction.on_commit(partial(execute_step.delay, step.pk))


def step_begin(*, step_id: int, worker: str) -> StepAttempt | None:
    """The gate: admit the step with a reservation, or stop the run. None when there is nothing to run.

    The caller holds the step's attempt lock, so a step found `running` here belongs to an attempt
    whose worker died: it is taken over, within the redelivery bound.
    """
    with transaction.atomic(durable=True):
        ids = Step.objects.filter(pk=step_id).values_list("run__team_id", "run_id").first()
        if ids is None:
            logger.warning("Step %s no longer exists; nothing to do.", step_id)
            return None
        team, run, step = _lock(team_id=ids[0], run_id=ids[1], step_id=step_id)
        if step.status not in (StepStatus.PENDING, StepStatus.RUNNING):
            return None
        if run.status not in ACTIVE_RUN_STATUSES:
            # Cancelled while queued, or while an attempt that has since died was running.
            release(team=team, run=run, step=step)
            step.status = StepStatus.CANCELLED
            step.save(update_fields=["status"])
            return None

        definition = definition_of(run.workflow_version)
        checkpoint = latest_checkpoint(run=run)
        try:
            prepared = step_prepare(run=run, step=step, definition=definition, outputs=checkpoint.outputs)
        except TemplateFailure as exc:
            _run_fail(team=team, run=run, step=step, error={"type": "TemplateError", "message": str(exc)})
            return None

        if step.status == StepStatus.RUNNING:
            return _take_over_crashed_attempt(team=team, run=run, step=step, prepared=prepared, worker=worker)

        enforced = (run.budget_usd is not None and run.budget_mode == BudgetMode.ENFORCE) or team.enforces_period_budget
        if prepared.prices is None and enforced:
            _run_fail(
                team=team,
                run=run,
                step=step,
                error={
                    "type": "UnpricedModelError",
                    "message": f"Model '{prepared.request.model}' has no price, so the enforce budget cannot be kept.",
                    "model": prepared.request.model,
                },
            )
            return None

        now = timezone.now()
        decision = gate_decide(gate_input(run=run, team=team, estimate=prepared.estimate_usd, now=now))
        if not decision.admitted:
            step.estimate_usd = prepared.estimate_usd
            _run_stop(team=team, run=run, step=step, decision=decision)
            return None
        report_over_budget(team=team, run=run, step=step, decision=decision, now=now)

        reserve(team=team, run=run, step=step, amount=prepared.estimate_usd or Decimal("0"))
        run.status = RunStatus.RUNNING
        run.current_agent = step.agent
        run.save(update_fields=["status", "current_agent", "updated_at"])
        step.status = StepStatus.RUNNING
        step.attempts += 1
        step.model = prepared.request.model
        step.estimate_usd = prepared.estimate_usd
        step.worker = worker
        step.started_at = timezone.now()
        step.save(update_fields=["status", "attempts", "model", "estimate_usd", "reserved_usd", "worker", "started_at"])
        return StepAttempt(team_id=team.pk, run_id=run.pk, step_id=step.pk, number=step.attempts, prepared=prepared)


def step_settle(*, attempt: StepAttempt, result: CompletionResult) -> None:
    """Charge the attempt, release its reservation, record the output and a checkpoint, and go on."""
    with transaction.atomic(durable=True):
        team, run, step = _lock(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id)
        if LedgerEntry.objects.filter(step=step, attempt=attempt.number).exists():
            return  # settled already
        cost = _charge(run=run, step=step, attempt=attempt, result=result)
        alerts_after_spend(team=team, run=run)
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            # An attempt another delivery took over from finished after all: what it cost is
            # charged, but the step's reservation and progress belong to the attempt that owns it.
            logger.warning("Attempt %s of step %s finished after it was superseded.", attempt.number, step.pk)
            return
        release(team=team, run=run, step=step)
        add(run, iterations=1)
        step.status = StepStatus.SUCCEEDED
        step.output = result.output
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "output", "finished_at"])
        event_record(
            run=run,
            type=EventType.AGENT_COMPLETED,
            payload={
                "agent": step.agent,
                "step": step.sequence,
                "attempt": attempt.number,
                "model": attempt.prepared.request.model,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "cost_usd": usd(cost),
                "spent_usd": usd(run.spent_usd),
            },
        )
        outputs = {**latest_checkpoint(run=run).outputs, step.agent: result.output}
        if run.status == RunStatus.CANCELLED:
            _checkpoint(run=run, reason="step_completed", outputs=outputs, next_step=None)
            return
        _advance(team=team, run=run, step=step, outputs=outputs)


def step_fail(*, attempt: StepAttempt, error: dict) -> None:
    """The provider failed the step: release its reservation and fail the run, resumably."""
    with transaction.atomic(durable=True):
        team, run, step = _lock(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            return
        if run.status == RunStatus.CANCELLED:
            # A cancelled run stays cancelled: failing it would make it resumable again.
            release(team=team, run=run, step=step)
            step.status = StepStatus.FAILED
            step.error = error
            step.finished_at = timezone.now()
            step.save(update_fields=["status", "error", "finished_at"])
            return
        _run_fail(team=team, run=run, step=step, error=error)


def _lock(*, team_id: int, run_id: int, step_id: int) -> tuple[Team, Run, Step]:
    """Lock the team, the run and the step rows: the one order every transaction takes them in.

    The team row serialises the admission of all the team's steps against its period budget. The
    locks are FOR NO KEY UPDATE, so rows that merely reference these (events, ledger entries) can
    still be inserted by others.
    """
    team = Team.objects.select_for_update(no_key=True).get(pk=team_id)
    run = Run.objects.select_for_update(of=("self",), no_key=True).select_related("workflow_version").get(
        pk=run_id
    )
    return team, run, Step.objects.select_for_update(no_key=True).get(pk=step_id)


def _charge(*, run: Run, step: Step, attempt: StepAttempt, result: CompletionResult) -> Decimal | None:
    """The attempt's ledger entry, and its cost added to the run's spend. None when unpriced."""
    prices = attempt.prepared.prices
    cost = None
    if prices is not None:
        cost = cost_usd(
            prices=prices,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cached_input_tokens=result.cached_input_tokens,
        )
    LedgerEntry.objects.create(
        team_id=run.team_id,
        run=run,
        step=step,
        attempt=attempt.number,
        agent=step.agent,
        provider=attempt.prepared.provider,
        model=attempt.prepared.request.model,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cached_input_tokens=result.cached_input_tokens,
        input_per_mtok=prices.input_per_mtok if prices else None,
        output_per_mtok=prices.output_per_mtok if prices else None,
        cached_input_per_mtok=prices.cached_input_per_mtok if prices else None,
        price_source=attempt.prepared.price_source,
        cost_usd=cost,
        request_id=result.request_id,
    )
    add(run, spent_usd=cost or Decimal("0"), unpriced_steps=0 if cost is not None else 1)
    return cost


def _advance(*, team: Team, run: Run, step: Step, outputs: dict) -> None:
    definition = definition_of(run.workflow_version)
    context = template_context(inputs=run.inputs, outputs=outputs)
    try:
        target = next_agent(definition.agent(step.agent), context)
        final_output = _render_output(definition, context) if target == END else None
    except (NoRouteMatched, TemplateFailure) as exc:
        error_type = "RouteError" if isinstance(exc, NoRouteMatched) else "TemplateError"
        _checkpoint(run=run, reason="step_completed", outputs=outputs, next_step=None)
        _run_fail(team=team, run=run, step=None, error={"type": error_type, "message": str(exc)})
        return
    if target == END:
        now = timezone.now()
        run.status = RunStatus.COMPLETED
        run.output = final_output
        run.current_agent = ""
        _pause_clock(run, now)
        run.finished_at = now
        run.save(update_fields=["status", "output", "current_agent", "active_time", "active_since", "finished_at", "updated_at"])
        _checkpoint(run=run, reason="completed", outputs=outputs, next_step=None)
        event_record(run=run, type=EventType.RUN_COMPLETED, payload={"spent_usd": usd(run.spent_usd)})
        return
    next_step = Step.objects.create(
        run=run,
        sequence=step.sequence + 1,
        agent=target,
        iteration=run.steps.filter(agent=target).count() + 1,
    )
    run.current_agent = target
    run.save(update_fields=["current_agent", "updated_at"])
    _checkpoint(run=run, reason="step_completed", outputs=outputs, next_step=next_step)
    step_schedule(next_step)


def _render_output(definition: WorkflowDefinition, context: dict) -> dict:
    return {
        name: render_value(template, context, where=f"output '{name}'") for name, template in definition.output.items()
    }


def _take_over_crashed_attempt(
    *, team: Team, run: Run, step: Step, prepared: PreparedStep, worker: str
) -> StepAttempt | None:
    """A redelivered step whose previous attempt died: try again on the same reservation, or give up."""
    if step.redeliveries >= settings.STEP_MAX_REDELIVERIES:
        _run_fail(
            team=team,
            run=run,
            step=step,
            error={
                "type": "StepCrashedError",
                "message": f"Step {step.sequence} ({step.agent}) lost its worker {step.redeliveries + 1} times; "
                "the run is parked and can be resumed.",
            },
        )
        return None
    step.redeliveries += 1
    step.attempts += 1
    step.worker = worker
    step.started_at = timezone.now()
    step.save(update_fields=["redeliveries", "attempts", "worker", "started_at"])
    event_record(
        run=run,
        type=EventType.STEP_REDELIVERED,
        payload={"agent": step.agent, "step": step.sequence, "attempt": step.attempts},
    )
    return StepAttempt(team_id=run.team_id, run_id=run.pk, step_id=step.pk, number=step.attempts, prepared=prepared)


def _run_stop(*, team: Team, run: Run, step: Step, decision: GateDecision) -> None:
    """A limit stops the run before `step`; the checkpoint points at that step so resume runs it."""
    now = timezone.now()
    if decision.stop == RunStatus.BUDGET_EXCEEDED:
        payload = budget_exceeded_payload(decision.stopped_by, current_agent=step.agent)
        alert_send(team=team, event=event_record(run=run, type=EventType.BUDGET_EXCEEDED, payload=payload))
        run.error = {
            "type": "BudgetExceededError",
            "message": decision.message,
            "scope": payload["scope"],
            "budget_usd": payload["budget_usd"],
            "spent_usd": payload["spent_usd"],
            "current_agent": step.agent,
        }
    else:
        event_type = EventType.TIMED_OUT if decision.stop == RunStatus.TIMED_OUT else EventType.ITERATION_LIMIT
        event_record(
            run=run,
            type=event_type,
            payload={"message": decision.message, "iterations": run.iterations, "current_agent": step.agent},
        )
        error_type = "TimeoutError" if decision.stop == RunStatus.TIMED_OUT else "MaxIterationsError"
        run.error = {"type": error_type, "message": decision.message, "current_agent": step.agent}
    run.status = decision.stop
    run.current_agent = step.agent
    _pause_clock(run, now)
    run.finished_at = now
    run.save(update_fields=["status", "error", "current_agent", "active_time", "active_since", "finished_at", "updated_at"])
    step.status = StepStatus.BLOCKED
    step.save(update_fields=["status", "estimate_usd"])
    _checkpoint(run=run, reason=decision.stop, outputs=latest_checkpoint(run=run).outputs, next_step=step)


def _run_fail(*, team: Team, run: Run, step: Step | None, error: dict) -> None:
    now = timezone.now()
    run.status = RunStatus.FAILED
    run.error = error
    _pause_clock(run, now)
    run.finished_at = now
    run.save(update_fields=["status", "error", "active_time", "active_since", "finished_at", "updated_at"])
    if step is not None:
        release(team=team, run=run, step=step)
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = now
        step.save(update_fields=["status", "error", "finished_at"])
        _checkpoint(run=run, reason="failed", outputs=latest_checkpoint(run=run).outputs, next_step=step)
    event_record(run=run, type=EventType.RUN_FAILED, payload=error)


def _pause_clock(run: Run, now) -> None:
    run.active_time = run.elapsed(now)
    run.active_since = None


def _checkpoint(*, run: Run, reason: str, outputs: dict, next_step: Step | None) -> Checkpoint:
    return Checkpoint.objects.create(
        run=run,
        reason=reason,
        next_step=next_step,
        next_agent=next_step.agent if next_step else "",
        outputs=outputs,
        iterations=run.iterations,
        spent_usd=run.spent_usd,
        active_time=run.elapsed(),
    )
