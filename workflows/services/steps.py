"""Executing one step: the gate and reservation, the provider call, then settlement.

Each of `step_begin` and `step_settle` is one transaction that locks the team row, the run row and
then the step row, always in that order. The provider is called between them, outside any transaction.
On PostgreSQL the common case of each is one database function call (`step_functions.py`); these
functions are the general path, which every other case takes.

The branches of a parallel or for_each group are steps like any other, several in flight at once.
Whichever branch ends last sees so under the run row lock and ends the group: exactly one does.
"""

import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, OuterRef, Subquery
from django.utils import timezone

from workflows.definition import (
    END,
    FREELY_PRICED_PROVIDERS,
    USAGE_FIELDS,
    AgentSpec,
    ForEachSpec,
    NoRouteMatched,
    ParallelSpec,
    TemplateFailure,
    UnitPrices,
    WorkflowDefinition,
    cost_usd,
    count_tokens,
    estimate_usd,
    is_count,
    next_agent,
    output_cap,
    render,
    render_budget,
    render_value,
    resolve_reference,
    template_context,
    unstorable_json,
    usage_problem,
    worst_case_counts,
)
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    BudgetMode,
    Checkpoint,
    Event,
    EventType,
    LedgerEntry,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Team,
)
from workflows.providers import CompletionRequest, CompletionResult, ProviderError, Usage, get_provider
from workflows.providers.retries import retry_delay_seconds
from workflows.selectors import definition_of, latest_checkpoint
from workflows.services.events import SYSTEM_ACTOR, event_record, usd
from workflows.services.alerts import alert_send, alerts_after_spend
from workflows.services.budgets import (
    add,
    budget_exceeded_payload,
    gate_input,
    release,
    report_over_budget,
    reserve,
)
from workflows.services.credentials import credentials_for
from workflows.services.gate import GateDecision, gate_decide
from workflows.services.prices import prices_for
from workflows.services import step_functions
from workflows.services.renders import rendered, rendered_ahead
from workflows.services.step_functions import StepBasis

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedStep:
    """A step's rendered request and its prices, ready for the gate and the provider."""

    provider: str
    request: CompletionRequest
    prices: UnitPrices | None
    price_source: str
    estimate_usd: Decimal | None
    # The input tokens the estimate counted: with the output cap, the worst case it priced.
    estimated_input_tokens: int


@dataclass(frozen=True)
class StepAttempt:
    team_id: int
    run_id: int
    step_id: int
    number: int
    prepared: PreparedStep
    # Set when `step_functions.admit` admitted the attempt: its settlement may go that way too.
    basis: StepBasis | None = None


def step_prepare(
    *, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict, may_override_prices: bool
) -> PreparedStep:
    """Render the step's prompts and estimate its cost. Raises TemplateFailure."""
    agent = definition.agent(step.agent)
    context = _context(run=run, definition=definition, outputs=outputs)
    if step.group in definition.for_each:
        group = definition.for_each[step.group]
        items = _items(group, context)
        if step.branch_index >= len(items):
            raise TemplateFailure(f"for_each '{group.name}' source", f"has no item {step.branch_index} any more")
        context.update({group.as_name: items[step.branch_index], "_index": step.branch_index, "_key": step.branch_key})
    system_prompt = _render_kept(agent.system_prompt, context, where=f"agent '{agent.name}' system_prompt")
    prompt = _render_kept(agent.prompt, context, where=f"agent '{agent.name}' prompt")
    prices, price_source = prices_for(
        model=agent.model, pricing=definition.pricing, provider=agent.provider, may_override_prices=may_override_prices
    )
    max_tokens = output_cap(agent, prices)
    input_tokens = count_tokens(system_prompt + prompt)
    if agent.provider in FREELY_PRICED_PROVIDERS and agent.mock and agent.mock.input_tokens is not None:
        # The fake reports its mock's input count; estimated too, it never costs more than its estimate.
        input_tokens = max(input_tokens, agent.mock.input_tokens)
    estimate = None
    if prices is not None:
        estimate = estimate_usd(prices=prices, input_tokens=input_tokens, max_output_tokens=max_tokens)
    options = {"mock": agent.mock.to_dict()} if agent.mock else {}
    request = CompletionRequest(
        model=agent.model,
        system_prompt=system_prompt,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=agent.temperature,
        output_schema=agent.output,
        stream=agent.stream,
        options=options,
    )
    return PreparedStep(
        provider=agent.provider,
        request=request,
        prices=prices,
        price_source=price_source,
        estimate_usd=estimate,
        estimated_input_tokens=input_tokens,
    )


def _render_kept(source: str, context: dict, *, where: str) -> str:
    return rendered(("render", where, source), context, lambda: render(source, context, where=where))


def step_execute(*, step_id: int) -> None:
    """Run one step from gate to settlement; the Celery task's whole body."""
    attempt = step_begin(step_id=step_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    if attempt is None:
        return
    provider = get_provider(attempt.prepared.provider)
    try:
        credentials = credentials_for(team_id=attempt.team_id, provider=provider.name)
        result = provider.complete(attempt.prepared.request, credentials=credentials)
    except ProviderError as exc:
        step_provider_failed(attempt=attempt, error=exc)
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
    if problem := unstorable_json(result.output):
        # Storing it would fail the settlement, and the call would go uncharged: charged, it fails the step.
        message = f"The provider's answer cannot be stored: it holds {problem}."
        step_provider_failed(attempt=attempt, error=ProviderError(message, usage=result))
        return
    step_settle(attempt=attempt, result=result)


def step_schedule(step: Step, *, now: datetime | None = None, countdown: float = 0) -> None:
    """Enqueue the step's task once the transaction that created or reopened it commits, to run
    `countdown` seconds from now.

    The step is stamped as sent, for when it is due, in that same transaction: a pending step whose
    stamp grows old lost its message, and the sweeper sends it again.
    """
    step.enqueued_at = (now or timezone.now()) + timedelta(seconds=countdown)
    step.save(update_fields=["enqueued_at"])
    _send(step, countdown=countdown)


def _send(step: Step, *, countdown: float = 0) -> None:
    """`step_schedule` for a step whose row already carries its `enqueued_at` stamp: a step this
    transaction creates is stamped in its INSERT, a saved one in the UPDATE that makes it pending."""
    from workflows.tasks import execute_step

    if countdown:
        transaction.on_commit(partial(execute_step.apply_async, (step.pk,), countdown=countdown))
    else:
        transaction.on_commit(partial(execute_step.delay, step.pk))


def step_begin(*, step_id: int, worker: str) -> StepAttempt | None:
    """The gate: admit the step with a reservation, or stop the run. None when there is nothing to run.

    The caller holds the step's attempt lock, so a step found `running` here belongs to an attempt
    whose worker died: it is taken over, within the redelivery bound.
    """
    if step_functions.step_functions_enabled():
        attempt = _admit_in_one_call(step_id=step_id, worker=worker)
        if attempt is not None:
            return attempt
    return rendered_ahead(
        prerender=partial(_prerender_begin, step_id=step_id),
        locked=partial(_begin_under_locks, step_id=step_id, worker=worker),
    )


def _prerender_begin(*, step_id: int) -> None:
    """What `_begin_under_locks` will render, rendered before its transaction: the step's prompts,
    or when they fail and the step is its group's last branch, what its group's end renders."""
    read = _read_run_and_step(step_id=step_id)
    if read is None:
        return
    run, step = read
    if step.status not in (StepStatus.PENDING, StepStatus.RUNNING) or run.status not in ACTIVE_RUN_STATUSES:
        return
    definition = definition_of(run.workflow_version)
    try:
        step_prepare(
            run=run,
            step=step,
            definition=definition,
            outputs=run.latest_outputs,
            may_override_prices=run.team.may_override_prices,
        )
    except TemplateFailure as exc:
        _prerender_ending(run=run, step=step, error={"type": "TemplateError", "message": str(exc)})


def _begin_under_locks(*, step_id: int, worker: str) -> StepAttempt | None:
    with transaction.atomic(durable=True):
        # The team row is found through the step: the first lock and the id lookup in one statement.
        team = (
            Team.objects.select_for_update(of=("self",), no_key=True)
            .filter(runs__steps=step_id)
            .annotate(step_run_id=F("runs__id"))
            .first()
        )
        if team is None:
            logger.warning("Step %s no longer exists; nothing to do.", step_id)
            return None
        run, step = _lock_run_and_step(run_id=team.step_run_id, step_id=step_id)
        if step.status not in (StepStatus.PENDING, StepStatus.RUNNING):
            return None
        if run.status not in ACTIVE_RUN_STATUSES:
            # Cancelled while queued, or while an attempt that has since died was running.
            release(team=team, run=run, step=step)
            step.status = StepStatus.CANCELLED
            step.save(update_fields=["status"])
            return None

        definition = definition_of(run.workflow_version)
        try:
            prepared = step_prepare(
                run=run,
                step=step,
                definition=definition,
                outputs=run.latest_outputs,
                may_override_prices=team.may_override_prices,
            )
        except TemplateFailure as exc:
            _step_failed(team=team, run=run, step=step, error={"type": "TemplateError", "message": str(exc)})
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
        in_flight = run.steps.filter(status=StepStatus.RUNNING).count() if step.group else 0
        decision = gate_decide(
            gate_input(run=run, team=team, estimate=prepared.estimate_usd, now=now, in_flight=in_flight)
        )
        if not decision.admitted:
            step.estimate_usd = prepared.estimate_usd
            _run_stop(team=team, run=run, step=step, decision=decision)
            return None
        report_over_budget(team=team, run=run, step=step, decision=decision, now=now)

        reserve(
            team=team,
            run=run,
            step=step,
            amount=prepared.estimate_usd or Decimal("0"),
            run_fields={"status": RunStatus.RUNNING, "current_agent": step.group or step.agent, "updated_at": now},
        )
        step.status = StepStatus.RUNNING
        step.attempts += 1
        step.model = prepared.request.model
        step.estimate_usd = prepared.estimate_usd
        step.worker = worker
        step.started_at = timezone.now()
        step.save(update_fields=["status", "attempts", "model", "estimate_usd", "reserved_usd", "worker", "started_at"])
        return StepAttempt(team_id=team.pk, run_id=run.pk, step_id=step.pk, number=step.attempts, prepared=prepared)


def _admit_in_one_call(*, step_id: int, worker: str) -> StepAttempt | None:
    """`step_begin` for a pending plain step that its run and team have room for, in one database
    call. None when the general path must decide: the step is not that case, or no longer is."""
    basis = step_functions.step_basis(step_id)
    if basis is None or not basis.pending_plain_step:
        return None
    step = Step(pk=step_id, run_id=basis.run_id, agent=basis.agent)
    try:
        with render_budget():
            prepared = step_prepare(
                run=Run(pk=basis.run_id, inputs=basis.inputs),
                step=step,
                definition=basis.definition,
                outputs=basis.outputs,
                may_override_prices=basis.may_override_prices,
            )
    except TemplateFailure:
        return None
    if prepared.estimate_usd is None:
        return None
    number = step_functions.admit(
        basis=basis, estimate=prepared.estimate_usd, model=prepared.request.model, worker=worker, at=timezone.now()
    )
    if number is None:
        return None
    return StepAttempt(
        team_id=basis.team_id, run_id=basis.run_id, step_id=step_id, number=number, prepared=prepared, basis=basis
    )


def step_settle(*, attempt: StepAttempt, result: CompletionResult) -> None:
    """Charge the attempt, release its reservation, record the output and a checkpoint, and go on."""
    if attempt.basis is not None and step_functions.step_functions_enabled():
        if _settle_in_one_call(attempt=attempt, result=result):
            return
    rendered_ahead(
        prerender=partial(_prerender_end_of, step_id=attempt.step_id, output=result.output),
        locked=partial(_settle_under_locks, attempt=attempt, result=result),
    )


def _settle_under_locks(*, attempt: StepAttempt, result: CompletionResult) -> None:
    with transaction.atomic(durable=True):
        team, run, step = _lock(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id)
        owner = step.status == StepStatus.RUNNING and step.attempts == attempt.number
        # Whatever charges an attempt that owns its step also takes the step out of `running` in
        # that transaction, so only an attempt that no longer owns it can have been charged already.
        # The unique (step, attempt) constraint backs this: a second charge would fail, never count.
        if not owner and LedgerEntry.objects.filter(step=step, attempt=attempt.number).exists():
            return  # settled already
        # The attempt that owns the step releases the run's share of its reservation and counts as
        # executed in the UPDATE of the run that charges it; the team's share and the step follow.
        settled = {"reserved_usd": -step.reserved_usd, "iterations": 1} if owner else {}
        billed, cost = _charge(run=run, step=step, attempt=attempt, usage=result, **settled)
        alerts_after_spend(team=team, run=run)
        if not owner:
            # An attempt another delivery took over from finished after all: what it cost is
            # charged, but the step's reservation and progress belong to the attempt that owns it.
            logger.warning("Attempt %s of step %s finished after it was superseded.", attempt.number, step.pk)
            return
        if step.reserved_usd:
            add(team, reserved_usd=-step.reserved_usd)
        step.reserved_usd = Decimal("0")
        step.status = StepStatus.SUCCEEDED
        step.output = result.output
        step.error = None  # a transient error an earlier attempt left
        step.finished_at = timezone.now()
        step.save(update_fields=["reserved_usd", "status", "output", "error", "finished_at"])
        event_record(
            run=run,
            type=EventType.AGENT_COMPLETED,
            payload={
                **_completed_payload(step=step, attempt=attempt, usage=billed, cost=cost),
                "spent_usd": usd(run.spent_usd),
            },
        )
        if step.group:
            # A branch's output joins its group's result when the group ends; a stopped run's
            # group goes on only when the run is resumed.
            if run.status in ACTIVE_RUN_STATUSES:
                _group_continue(team=team, run=run, step=step)
            return
        outputs = {**run.latest_outputs, step.agent: result.output}
        if run.status == RunStatus.CANCELLED:
            _checkpoint(run=run, reason="step_completed", outputs=outputs, next_step=None)
            return
        definition = definition_of(run.workflow_version)
        _advance(
            team=team,
            run=run,
            source=definition.agent(step.agent),
            outputs=outputs,
            after_sequence=step.sequence,
            definition=definition,
        )


def _settle_in_one_call(*, attempt: StepAttempt, result: CompletionResult) -> bool:
    """`step_settle` in one database call, for the attempt that owns a plain step whose routes lead to
    another plain step or to the end. False when the general path must settle: nothing was written."""
    if _usage_problem(result) is not None:
        return False  # billed at its worst case, with its event: the general path's work
    basis = attempt.basis
    definition = basis.definition
    outputs = {**basis.outputs, basis.agent: result.output}
    context = template_context(inputs=basis.inputs, outputs=outputs, groups=definition.group_names)
    try:
        with render_budget():
            target = next_agent(definition.agent(basis.agent), context)
            run_output = _render_output(definition, context) if target == END else None
    except (NoRouteMatched, TemplateFailure):
        return False
    if definition.group(target) is not None:
        return False
    step = Step(pk=basis.step_id, run_id=basis.run_id, agent=basis.agent, sequence=basis.sequence)
    cost = _cost(attempt=attempt, usage=result)
    events = [
        Event(
            team_id=basis.team_id,
            run_id=basis.run_id,
            type=EventType.AGENT_COMPLETED,
            payload=_completed_payload(step=step, attempt=attempt, usage=result, cost=cost),
            actor=SYSTEM_ACTOR,
        )
    ]
    if target == END:
        events.append(
            Event(team_id=basis.team_id, run_id=basis.run_id, type=EventType.RUN_COMPLETED, actor=SYSTEM_ACTOR)
        )
    settled, next_step_id = step_functions.settle(
        basis=basis,
        attempt=attempt.number,
        at=timezone.now(),
        output=result.output,
        ledger_entry=LedgerEntry(**_ledger_fields(step=step, attempt=attempt, usage=result, cost=cost)),
        events=events,
        next_step=(
            None if target == END else Step(run_id=basis.run_id, sequence=basis.sequence + 1, agent=target, iteration=0)
        ),
        checkpoint=Checkpoint(
            run_id=basis.run_id,
            reason="completed" if target == END else "step_completed",
            next_agent="" if target == END else target,
            outputs=outputs,
            iterations=0,
            spent_usd=Decimal("0"),
            active_time=timedelta(0),
        ),
        run_output=run_output,
    )
    if next_step_id is not None:
        _send(Step(pk=next_step_id))
    return settled


def _completed_payload(*, step: Step, attempt: StepAttempt, usage: Usage, cost: Decimal | None) -> dict:
    """The `agent_completed` event of a settled step, with the usage it was billed for, but for the
    run's spend after it."""
    return {
        "agent": step.agent,
        "step": step.sequence,
        **_branch_of(step),
        "attempt": attempt.number,
        "model": attempt.prepared.request.model,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usd(cost),
    }


def step_fail(*, attempt: StepAttempt, error: dict) -> None:
    """The provider failed the step: release its reservation and fail the run, resumably."""
    rendered_ahead(
        prerender=partial(_prerender_end_of, step_id=attempt.step_id, error=error),
        locked=partial(_fail_under_locks, attempt=attempt, error=error),
    )


def _fail_under_locks(*, attempt: StepAttempt, error: dict) -> None:
    with transaction.atomic(durable=True):
        team, run, step = _lock(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            return
        _attempt_failed(team=team, run=run, step=step, error=error)


def step_provider_failed(*, attempt: StepAttempt, error: ProviderError) -> None:
    """Charge what the failed call used, if the provider said, then try the step again later or fail it.

    A retry is a new attempt through `step_begin`: the reservation is released now and the gate runs
    again before the next call, so a retry can be stopped by a budget like any step, and each
    attempt gets its own ledger entry. The wait is Celery's countdown, not a worker asleep.
    """
    rendered_ahead(
        prerender=partial(_prerender_end_of, step_id=attempt.step_id, error=_provider_error(error)),
        locked=partial(_provider_failed_under_locks, attempt=attempt, error=error),
    )


def _provider_failed_under_locks(*, attempt: StepAttempt, error: ProviderError) -> None:
    with transaction.atomic(durable=True):
        team, run, step = _lock(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id)
        cost = None
        if error.usage is not None and not LedgerEntry.objects.filter(step=step, attempt=attempt.number).exists():
            _, cost = _charge(run=run, step=step, attempt=attempt, usage=error.usage)
            alerts_after_spend(team=team, run=run)
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            return
        details = _provider_error(error)
        if not error.retryable or run.status not in ACTIVE_RUN_STATUSES:
            _attempt_failed(team=team, run=run, step=step, error=details)
            return
        if step.provider_retries >= settings.PROVIDER_MAX_RETRIES:
            tries = step.provider_retries + 1
            message = f"The provider failed {tries} times in a row; the last error: {details['message']}"
            _attempt_failed(team=team, run=run, step=step, error={**details, "message": message})
            return
        release(team=team, run=run, step=step)
        step.provider_retries += 1
        step.status = StepStatus.PENDING
        step.error = details
        step.save(update_fields=["status", "error", "provider_retries"])
        delay = retry_delay_seconds(
            retry=step.provider_retries,
            base_seconds=settings.PROVIDER_RETRY_BASE_SECONDS,
            max_seconds=settings.PROVIDER_RETRY_MAX_SECONDS,
            retry_after_seconds=error.retry_after_seconds,
        )
        event_record(
            run=run,
            type=EventType.PROVIDER_RETRY,
            payload={
                "agent": step.agent,
                "step": step.sequence,
                **_branch_of(step),
                "attempt": attempt.number,
                "retry": step.provider_retries,
                "retry_in_seconds": round(delay, 3),
                "error": details,
                "cost_usd": usd(cost),
            },
        )
        step_schedule(step, countdown=delay)


def _provider_error(error: ProviderError) -> dict:
    return {"type": "ProviderError", "message": _storable(error.message), "status_code": error.status_code}


def _attempt_failed(*, team: Team, run: Run, step: Step, error: dict) -> None:
    if run.status == RunStatus.CANCELLED:
        # A cancelled run stays cancelled: failing it would make it resumable again.
        release(team=team, run=run, step=step)
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
        return
    _step_failed(team=team, run=run, step=step, error=error)


def _lock(*, team_id: int, run_id: int, step_id: int) -> tuple[Team, Run, Step]:
    """Lock the team, the run and the step rows: the one order every transaction takes them in.

    The team row serialises the admission of all the team's steps against its period budget. The
    locks are FOR NO KEY UPDATE, so rows that merely reference these (events, ledger entries) can
    still be inserted by others.
    """
    team = Team.objects.select_for_update(no_key=True).get(pk=team_id)
    return (team, *_lock_run_and_step(run_id=run_id, step_id=step_id))


def _lock_run_and_step(*, run_id: int, step_id: int) -> tuple[Run, Step]:
    """The rest of `_lock`, for a caller that has locked the team row already.

    The run comes with its latest checkpoint's outputs as `latest_outputs`, read in the same
    statement. They are current: this statement starts after the team row is locked, and every
    transaction that writes a checkpoint holds that lock until it commits. They are what the
    transaction started from: a caller that has written a checkpoint since reads it again.
    """
    latest = Checkpoint.objects.filter(run=OuterRef("pk")).order_by("-id").values("outputs")[:1]
    run = (
        Run.objects.select_for_update(of=("self",), no_key=True)
        .select_related("workflow_version")
        .annotate(latest_outputs=Subquery(latest))
        .get(pk=run_id)
    )
    return run, Step.objects.select_for_update(no_key=True).get(pk=step_id)


def _charge(
    *, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
) -> tuple[Usage, Decimal | None]:
    """The attempt's ledger entry, and its cost added to the run's spend, with `run_deltas` added
    to the run in the same UPDATE: the usage billed and its cost, None when unpriced.

    Usage no call can have had (a count negative, not a whole number, or above
    PROVIDER_USAGE_MAX_TOKENS) is billed at the worst case the gate estimated, with a
    `usage_rejected` event that says why: the call returned, so it is charged, never dropped.
    """
    billed, cost = usage, None
    problem = _usage_problem(usage)
    if problem is None:
        cost = _cost(attempt=attempt, usage=usage)
    else:
        prepared = attempt.prepared
        counts = worst_case_counts(
            prices=prepared.prices,
            input_tokens=prepared.estimated_input_tokens,
            max_output_tokens=prepared.request.max_tokens,
        )
        billed, cost = Usage(**counts, request_id=usage.request_id), prepared.estimate_usd
        logger.warning("Step %s attempt %s reported unbillable usage (%s).", step.pk, attempt.number, problem)
        event_record(
            run=run,
            type=EventType.USAGE_REJECTED,
            payload={
                "agent": step.agent,
                "step": step.sequence,
                **_branch_of(step),
                "attempt": attempt.number,
                "model": prepared.request.model,
                "reason": problem,
                "reported": {field: _reported_count(getattr(usage, field)) for field in USAGE_FIELDS},
                "billed": counts,
                "cost_usd": usd(cost),
            },
        )
    LedgerEntry.objects.create(**_ledger_fields(step=step, attempt=attempt, usage=billed, cost=cost))
    add(run, spent_usd=cost or Decimal("0"), unpriced_steps=0 if cost is not None else 1, **run_deltas)
    return billed, cost


def _usage_problem(usage: Usage) -> str | None:
    counts = {field: getattr(usage, field) for field in USAGE_FIELDS}
    return usage_problem(counts, max_tokens=settings.PROVIDER_USAGE_MAX_TOKENS)


def _reported_count(value: object) -> int | str:
    """A reported count as the event can hold it: a whole number as is, anything else as a short repr."""
    if is_count(value) and abs(value) < 2**53:
        return value
    try:
        return repr(value)[:40]
    except ValueError:  # an int beyond Python's str-conversion digit limit
        return f"<{type(value).__name__}>"


def _storable(text: str) -> str:
    """Text from a provider as the database can store it: NULs dropped, lone surrogates replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _cost(*, attempt: StepAttempt, usage: Usage) -> Decimal | None:
    prices = attempt.prepared.prices
    if prices is None:
        return None
    return cost_usd(
        prices=prices,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def _ledger_fields(*, step: Step, attempt: StepAttempt, usage: Usage, cost: Decimal | None) -> dict:
    prices = attempt.prepared.prices
    return dict(
        team_id=attempt.team_id,
        run_id=attempt.run_id,
        step_id=step.pk,
        attempt=attempt.number,
        agent=step.agent,
        provider=attempt.prepared.provider,
        model=attempt.prepared.request.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        input_per_mtok=prices.input_per_mtok if prices else None,
        output_per_mtok=prices.output_per_mtok if prices else None,
        cached_input_per_mtok=(
            _rate_used(prices.cached_input_per_mtok, prices.cache_read_rate, usage.cached_input_tokens) if prices else None
        ),
        cache_write_per_mtok=(
            _rate_used(prices.cache_write_per_mtok, prices.cache_write_rate, usage.cache_write_tokens) if prices else None
        ),
        price_source=attempt.prepared.price_source,
        cost_usd=cost,
        request_id=_storable(usage.request_id)[:200] if isinstance(usage.request_id, str) else "",
    )


def _rate_used(listed: Decimal | None, fallback: Decimal, tokens: int) -> Decimal | None:
    """The rate a kind of cached input was billed at: its listed rate, or the fallback when it had tokens."""
    if listed is not None:
        return listed
    return fallback if tokens else None


def step_enter(
    *,
    team: Team,
    run: Run,
    target: str,
    outputs: dict,
    after_sequence: int,
    reason: str,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    """Create and send the step of an agent, or the branches of a group, with a checkpoint that
    points at the first. A for_each branch beyond max_concurrent waits for a free slot."""
    group = definition.group(target)
    run.current_agent = target
    run.save(update_fields=["current_agent", "updated_at"])
    if group is None:
        step = Step.objects.create(
            run=run,
            sequence=after_sequence + 1,
            agent=target,
            iteration=run.steps.filter(agent=target).count() + 1,
            enqueued_at=timezone.now(),
        )
        _checkpoint(run=run, reason=reason, outputs=outputs, next_step=step)
        _send(step)
        return

    if isinstance(group, ParallelSpec):
        count = len(group.agents)
    else:
        try:
            count = len(_items(group, _context(run=run, definition=definition, outputs=outputs), entering=True))
        except TemplateFailure as exc:
            _checkpoint(run=run, reason=reason, outputs=outputs, next_step=None)
            _run_fail(team=team, run=run, step=None, error={"type": "ForEachSourceError", "message": str(exc)})
            return
    if not count:
        # Nothing to run: the group ends at once, and conductor's empty result goes on to its routes.
        if empty_groups >= run.max_iterations:
            _checkpoint(run=run, reason=reason, outputs=outputs, next_step=None)
            message = f"Groups with nothing to run routed to each other {empty_groups} times without a step."
            _run_fail(team=team, run=run, step=None, error={"type": "RouteError", "message": message})
            return
        _group_done(
            team=team,
            run=run,
            group=group,
            result=_group_result(group, []),
            outputs=outputs,
            after_sequence=after_sequence,
            definition=definition,
            empty_groups=empty_groups + 1,
        )
        return

    iteration = (run.steps.filter(group=target).aggregate(last=Max("iteration"))["last"] or 0) + 1
    # Only the branches that have a slot are created now; `_send_waiting` creates each later one
    # when a slot frees, so a long for_each is never thousands of rows written at once.
    steps = _branches_create(
        run=run,
        group=group,
        iteration=iteration,
        first_sequence=after_sequence + 1,
        indexes=range(min(count, _slots(group))),
    )
    _checkpoint(run=run, reason=reason, outputs=outputs, next_step=steps[0])


def _branches_create(
    *, run: Run, group: ParallelSpec | ForEachSpec, iteration: int, first_sequence: int, indexes: range
) -> list[Step]:
    """Create and send the branches at `indexes` of one entry of a group; a branch's sequence is
    its group's first plus its index."""
    now = timezone.now()
    steps = Step.objects.bulk_create(
        Step(
            run=run,
            sequence=first_sequence + index,
            agent=group.agents[index] if isinstance(group, ParallelSpec) else group.agent.name,
            iteration=iteration,
            group=group.name,
            branch_index=index,
            branch_key=group.agents[index] if isinstance(group, ParallelSpec) else str(index),
            status=StepStatus.PENDING,
            enqueued_at=now,
        )
        for index in indexes
    )
    for step in steps:
        _send(step)
    return steps


def steps_reopen(*, run: Run, step: Step, failed_too: bool) -> None:
    """Resume: send the step the checkpoint points at again. For a branch, also every branch of its
    group that a stop kept from running, and with `failed_too` those that failed; branches that
    succeeded keep their outputs."""
    reopened = [StepStatus.BLOCKED, StepStatus.FAILED] if failed_too else [StepStatus.BLOCKED]
    if not step.group:
        step.status = StepStatus.PENDING
        step.error = None
        step.redeliveries = 0
        step.provider_retries = 0
        step.save(update_fields=["status", "error", "redeliveries", "provider_retries"])
        step_schedule(step)
        return
    branches = _branches(run=run, step=step)
    fresh = {"status": StepStatus.WAITING, "error": None, "redeliveries": 0, "provider_retries": 0}
    branches.filter(pk=step.pk).update(**fresh)
    branches.filter(status__in=reopened).update(**fresh)
    definition = definition_of(run.workflow_version)
    _send_waiting(run=run, group=definition.group(step.group), branches=branches, definition=definition)


def _advance(
    *,
    team: Team,
    run: Run,
    source: AgentSpec | ParallelSpec | ForEachSpec,
    outputs: dict,
    after_sequence: int,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    """Take the routes of the agent or group that just ended: to the next step, or to the end."""
    context = _context(run=run, definition=definition, outputs=outputs)
    try:
        target = _route(source, context)
        final_output = _final_output(definition, context) if target == END else None
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
    step_enter(
        team=team,
        run=run,
        target=target,
        outputs=outputs,
        after_sequence=after_sequence,
        reason="step_completed",
        definition=definition,
        empty_groups=empty_groups,
    )


def _group_continue(*, team: Team, run: Run, step: Step) -> None:
    """A branch ended in an active run: send a waiting branch into the freed slot, or, when it was
    the last, end the group. Callers hold the run row lock, so of two branches ending at once on
    two workers, exactly one sees the other ended and ends the group."""
    definition = definition_of(run.workflow_version)
    group = definition.group(step.group)
    branches = _branches(run=run, step=step)
    if _send_waiting(run=run, group=group, branches=branches, definition=definition):
        return
    ended = list(branches.order_by("branch_index"))
    failed = [branch for branch in ended if branch.status == StepStatus.FAILED]
    result = _group_result(group, ended)
    succeeded = len(ended) - len(failed)
    if failed and (group.failure_mode != "continue_on_error" or not succeeded):
        rule = "every branch must succeed" if group.failure_mode != "continue_on_error" else "no branch succeeded"
        error = {
            "type": "GroupFailedError",
            "message": f"Group '{group.name}' failed ({group.failure_mode}: {rule}): "
            f"{succeeded} succeeded, {len(failed)} failed.",
            "group": group.name,
            "errors": result["errors"],
        }
        _checkpoint(run=run, reason="failed", outputs=latest_checkpoint(run=run).outputs, next_step=failed[0])
        _run_fail(team=team, run=run, step=None, error=error)
        return
    _group_done(
        team=team,
        run=run,
        group=group,
        result=result,
        outputs=latest_checkpoint(run=run).outputs,
        after_sequence=ended[-1].sequence,
        definition=definition,
    )


def _group_done(
    *,
    team: Team,
    run: Run,
    group: ParallelSpec | ForEachSpec,
    result: dict,
    outputs: dict,
    after_sequence: int,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    event_record(
        run=run,
        type=EventType.GROUP_COMPLETED,
        payload={"group": group.name, "succeeded": len(result["outputs"]), "failed": len(result["errors"])},
    )
    _advance(
        team=team,
        run=run,
        source=group,
        outputs={**outputs, group.name: result},
        after_sequence=after_sequence,
        definition=definition,
        empty_groups=empty_groups,
    )


def _send_waiting(*, run: Run, group: ParallelSpec | ForEachSpec, branches, definition: WorkflowDefinition) -> bool:
    """Fill the group's free slots: first with its waiting branches (reopened by a resume), then
    with branches of items that have none yet. Whether any branch is still to end."""
    statuses = Counter(branches.values_list("status", flat=True))
    in_flight = statuses[StepStatus.PENDING] + statuses[StepStatus.RUNNING]
    free = _slots(group) - in_flight
    if statuses[StepStatus.WAITING] and free > 0:
        for waiting in branches.filter(status=StepStatus.WAITING).order_by("branch_index")[:free]:
            waiting.status = StepStatus.PENDING
            waiting.enqueued_at = timezone.now()
            waiting.save(update_fields=["status", "enqueued_at"])
            _send(waiting)
            free -= 1
    created = sum(statuses.values())
    unborn = _branch_count(run=run, group=group, definition=definition) - created
    if unborn > 0 and free > 0:
        first = branches.order_by("branch_index").first()
        _branches_create(
            run=run,
            group=group,
            iteration=first.iteration,
            first_sequence=first.sequence - first.branch_index,
            indexes=range(created, created + min(free, unborn)),
        )
    return bool(in_flight or statuses[StepStatus.WAITING] or unborn > 0)


def _branch_count(*, run: Run, group: ParallelSpec | ForEachSpec, definition: WorkflowDefinition) -> int:
    """How many branches the group's current entry has in all, created or not: its for_each
    source is read again from the outputs it was entered with, which its checkpoints keep."""
    if isinstance(group, ParallelSpec):
        return len(group.agents)
    return len(_items(group, _context(run=run, definition=definition, outputs=latest_checkpoint(run=run).outputs)))


def _group_result(group: ParallelSpec | ForEachSpec, ended: list[Step]) -> dict:
    """Conductor's shape: a parallel group's outputs and errors by agent; a for_each group's outputs
    as a list in item order (failed items left out), its errors by item key, and its item count."""
    succeeded = [branch for branch in ended if branch.status == StepStatus.SUCCEEDED]
    failed = [branch for branch in ended if branch.status == StepStatus.FAILED]
    if isinstance(group, ParallelSpec):
        return {
            "outputs": {branch.branch_key: branch.output for branch in succeeded},
            "errors": {branch.branch_key: _branch_error("agent_name", branch) for branch in failed},
        }
    return {
        "outputs": [branch.output for branch in succeeded],
        "errors": {branch.branch_key: _branch_error("item_key", branch) for branch in failed},
        "count": len(ended),
    }


def _branch_error(name_field: str, branch: Step) -> dict:
    error = branch.error or {}
    return {name_field: branch.branch_key, "exception_type": error.get("type", ""), "message": error.get("message", "")}


def _branches(*, run: Run, step: Step):
    """The branches of the group `step` belongs to, in this entry of the group."""
    return run.steps.filter(group=step.group, iteration=step.iteration)


def _branch_of(step: Step) -> dict:
    return {"group": step.group, "branch": step.branch_key} if step.group else {}


def _slots(group: ParallelSpec | ForEachSpec) -> int:
    """How many of the group's branches may be in flight at once."""
    return group.max_concurrent if isinstance(group, ForEachSpec) else len(group.agents)


def _items(group: ForEachSpec, context: dict, *, entering: bool = False) -> list:
    """The group's items. Their count is held to FOR_EACH_MAX_ITEMS when the group is entered; a
    group already entered keeps its items if the limit is lowered while it runs."""
    where = f"for_each '{group.name}' source"
    items = resolve_reference(group.source, context, where=where)
    if not isinstance(items, list):
        raise TemplateFailure(where, f"'{group.source}' is {type(items).__name__}, not a list")
    if entering and len(items) > settings.FOR_EACH_MAX_ITEMS:
        limit = settings.FOR_EACH_MAX_ITEMS
        message = f"'{group.source}' has {len(items):,} items; the limit is {limit:,} (FOR_EACH_MAX_ITEMS)"
        raise TemplateFailure(where, message)
    return items


def _context(*, run: Run, definition: WorkflowDefinition, outputs: dict) -> dict:
    return template_context(inputs=run.inputs, outputs=outputs, groups=definition.group_names)


def _route(source: AgentSpec | ParallelSpec | ForEachSpec, context: dict) -> str:
    return rendered(("routes", source.name), context, lambda: next_agent(source, context))


def _final_output(definition: WorkflowDefinition, context: dict) -> dict:
    return rendered(("output",), context, lambda: _render_output(definition, context))


def _read_run_and_step(*, step_id: int) -> tuple[Run, Step] | None:
    """The step and its run with `latest_outputs`, as `_lock_run_and_step` reads them, but without
    locks or a transaction: for rendering ahead, which the transaction checks against what it reads."""
    step = Step.objects.filter(pk=step_id).first()
    if step is None:
        return None
    latest = Checkpoint.objects.filter(run=OuterRef("pk")).order_by("-id").values("outputs")[:1]
    run = (
        Run.objects.select_related("workflow_version", "team")
        .annotate(latest_outputs=Subquery(latest))
        .get(pk=step.run_id)
    )
    return run, step


def _prerender_end_of(*, step_id: int, output: dict | None = None, error: dict | None = None) -> None:
    read = _read_run_and_step(step_id=step_id)
    if read is not None:
        _prerender_ending(run=read[0], step=read[1], output=output, error=error)


def _prerender_ending(*, run: Run, step: Step, output: dict | None = None, error: dict | None = None) -> None:
    """What the transaction that ends `step` (with `output`, or failed with `error`) will render:
    the routes of its agent and the run's output, or, when it is the last branch of its group to
    end, those of its group. Reads without locks; renders only."""
    if run.status not in ACTIVE_RUN_STATUSES:
        return
    definition = definition_of(run.workflow_version)
    outputs = run.latest_outputs or {}
    if not step.group:
        if error is not None:
            return  # a plain step that fails fails its run: nothing is rendered
        source = definition.agent(step.agent)
        outputs = {**outputs, step.agent: output}
    else:
        branches = list(_branches(run=run, step=step).order_by("branch_index"))
        for branch in branches:
            if branch.pk == step.pk:
                branch.status = StepStatus.FAILED if error is not None else StepStatus.SUCCEEDED
                branch.output, branch.error = output, error
        source = definition.group(step.group)
        unborn = len(branches) < _branch_count(run=run, group=source, definition=definition)
        if unborn or any(branch.status in _UNENDED_BRANCH for branch in branches):
            return
        outputs = {**outputs, source.name: _group_result(source, branches)}
    context = _context(run=run, definition=definition, outputs=outputs)
    if _route(source, context) == END:
        _final_output(definition, context)


_UNENDED_BRANCH = (StepStatus.WAITING, StepStatus.PENDING, StepStatus.RUNNING)


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


def _step_failed(*, team: Team, run: Run, step: Step, error: dict) -> None:
    """A step failed. A plain step, or a branch under fail_fast, fails the run; any other branch
    is recorded as failed and its group goes on, its failure mode judging it when it ends."""
    if not step.group:
        _run_fail(team=team, run=run, step=step, error=error)
        return
    definition = definition_of(run.workflow_version)
    if run.status in ACTIVE_RUN_STATUSES and definition.group(step.group).failure_mode == "fail_fast":
        _run_fail(team=team, run=run, step=step, error={**error, **_branch_of(step)})
        return
    release(team=team, run=run, step=step)
    step.status = StepStatus.FAILED
    step.error = error
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])
    if run.status in ACTIVE_RUN_STATUSES:
        _group_continue(team=team, run=run, step=step)


def _block_unstarted_branches(*, run: Run, step: Step) -> None:
    """The run stopped at a branch: its group's branches not yet started never start, until a resume."""
    if step.group:
        _branches(run=run, step=step).filter(status__in=[StepStatus.PENDING, StepStatus.WAITING]).exclude(
            pk=step.pk
        ).update(status=StepStatus.BLOCKED)


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
    run.current_agent = step.group or step.agent
    _pause_clock(run, now)
    run.finished_at = now
    run.save(update_fields=["status", "error", "current_agent", "active_time", "active_since", "finished_at", "updated_at"])
    step.status = StepStatus.BLOCKED
    step.save(update_fields=["status", "estimate_usd"])
    _block_unstarted_branches(run=run, step=step)
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
        _block_unstarted_branches(run=run, step=step)
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
        next_agent=(next_step.group or next_step.agent) if next_step else "",
        outputs=outputs,
        iterations=run.iterations,
        spent_usd=run.spent_usd,
        active_time=run.elapsed(),
    )
