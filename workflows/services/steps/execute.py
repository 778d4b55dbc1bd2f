"""An attempt at a step, from the gate to settlement: the Celery task's whole body.

Each of `step_begin` and the settlements (`step_settle`, `step_fail`, `step_provider_failed`) is one
transaction that locks the run and step rows (`locks.lock_rows`; the team's too only for a gate that
draws a slice of its budget or reports against it: escrow.py), decides in Python and writes.
The provider is called between them, outside any transaction. What either renders is rendered before
its transaction opens (`renders.rendered_ahead`).
"""

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from budgetsvc.logs import log_context_bind
from workflows import metrics
from workflows.definition import TemplateFailure, counts_as_iteration, unstorable_json
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    BudgetMode,
    BudgetScope,
    EventType,
    LedgerEntry,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Team,
)
from workflows.providers import CompletionResult, ProviderError, Usage
from workflows.providers.retries import retry_delay_seconds
from workflows.selectors import definition_of
from workflows.services import run_rows
from workflows.services.alerts import alerts_after_entry, alerts_after_spend
from workflows.services.budgets import gate_input, release, report_over_budget, reserve, team_budget_state
from workflows.services.escrow import ZERO, TeamFigures, idle_slices_recall, slice_covers, slice_size, team_figures
from workflows.services.dispatch import step_schedule
from workflows.services.events import event_record, usd
from workflows.services.gate import gate_decide
from workflows.services.ledger import (
    attempt_named,
    correction_event_record,
    cost_ahead,
    estimate_event_record,
    ledger_charge_estimate,
    ledger_correction,
    ledger_estimate_open,
    ledger_has_entry,
    ledger_record,
    storable,
)
from workflows.services.locks import lock_rows
from workflows.services.periods import period_window
from workflows.services.renders import rendered_ahead
from workflows.services.run_state import run_await_input, run_fail, run_stop, step_set_aside
from workflows.services.steps.kinds import Charged, PreparedStep, StepAttempt, StepWorkFailed, kind_named
from workflows.services.steps.prepare import step_prepare
from workflows.services.steps.sessions import session_kept
from workflows.services.steps.progression import prerender_ending, step_failed, step_succeeded

logger = logging.getLogger(__name__)

# A settlement the database refused is tried again after this long, doubling up to the longest,
# until the task's soft time limit less the margin (`_settled_despite_outages`).
SETTLE_RETRY_FIRST_SECONDS = 0.5
SETTLE_RETRY_LONGEST_SECONDS = 15
SETTLE_RETRY_MARGIN_SECONDS = 5


def step_execute(*, step_id: int) -> None:
    """Run one step from gate to settlement."""
    began = time.monotonic()
    log_context_bind(step_id=step_id)
    attempt = step_begin(step_id=step_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    if attempt is None:
        return
    deadline = began + settings.STEP_SOFT_TIME_LIMIT_SECONDS - SETTLE_RETRY_MARGIN_SECONDS
    if attempt.prepared.awaits_input:
        _settled_despite_outages(partial(step_await_input, attempt=attempt), attempt=attempt, usage=None, deadline=deadline)
        return
    usage = None
    try:
        result = kind_named(attempt.prepared.kind).run(attempt)
    except ProviderError as exc:
        usage = exc.usage
        end = partial(step_provider_failed, attempt=attempt, error=exc)
    except StepWorkFailed as exc:
        end = partial(step_fail, attempt=attempt, error={"type": exc.error_type, "message": str(exc)})
    except Exception as exc:  # noqa: BLE001 - includes Celery's soft time limit
        # Whatever stopped the call, the run fails resumably rather than staying "running" with
        # money held; whether the call was made and billed is unknown, so it is charged as estimated.
        logger.exception("Step %s attempt %s stopped unexpectedly.", attempt.step_id, attempt.number)
        error = {"type": "StepInterruptedError", "message": f"The step's work stopped: {type(exc).__name__}."}
        end = partial(step_fail, attempt=attempt, error=error, outcome_unknown=True)
    else:
        usage = result
        if problem := unstorable_json(result.output):
            # Storing it would fail the settlement, and the call would go uncharged: charged, it fails the step.
            message = f"The provider's answer cannot be stored: it holds {problem}."
            end = partial(step_provider_failed, attempt=attempt, error=ProviderError(message, usage=result))
        else:
            end = partial(step_settle, attempt=attempt, result=result)
    _settled_despite_outages(end, attempt=attempt, usage=usage, deadline=deadline)


def _settled_despite_outages(end: Callable[[], None], *, attempt: StepAttempt, usage: Usage | None, deadline: float) -> None:
    """End the attempt with `end`, trying again, with backoff, while the database cannot be reached:
    a worker cut off from the network settles what it can once it is back. Should another worker
    have taken the step over meanwhile, `end` records the attempt's usage as the correction of the
    estimate that takeover charged, and leaves the run alone.

    Tried until `deadline` (the task's soft time limit, less a margin): past it the error goes to
    the task, whose next delivery takes the step over, and the estimate stands.
    """
    wait = SETTLE_RETRY_FIRST_SECONDS
    while True:
        try:
            end()
            return
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + wait > deadline:
                logger.error(
                    "Step %s attempt %s could not settle before its time limit (%s); its usage stays "
                    "unrecorded: %s.",
                    attempt.step_id,
                    attempt.number,
                    exc,
                    usage,
                )
                raise
            logger.warning(
                "Step %s attempt %s could not settle (%s); trying again in %.1f s.",
                attempt.step_id,
                attempt.number,
                exc,
                wait,
            )
        _connection_dropped()
        time.sleep(wait)
        wait = min(wait * 2, SETTLE_RETRY_LONGEST_SECONDS)


def _connection_dropped() -> None:
    """Close the database connection if it is lost, so that the next try opens a new one. One that
    still answers (the error was a deadlock, a serialization failure) is kept: it holds the step's
    attempt lock, and closing it would let the sweeper judge this live attempt dead. So is one a
    caller's transaction is open on (a test's), which only that caller may end."""
    if connection.in_atomic_block or connection.connection is None or connection.is_usable():
        return
    try:
        connection.close()
    except DatabaseError:
        pass


def step_await_input(*, attempt: StepAttempt) -> None:
    """The admitted step waits for a person's answer, which settles it (services/inputs.py)."""
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        team, run, step = locked.team, locked.run, locked.step
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            return  # taken over meanwhile by a redelivery, which asks in its turn
        if run.status not in ACTIVE_RUN_STATUSES:
            step_set_aside(run=run, step=step)  # stopped since it was admitted: nobody is asked
            return
        run_await_input(
            team=team, run=run, step=step, request=attempt.prepared.data["request"], outputs=run.latest_outputs
        )


def step_begin(*, step_id: int, worker: str) -> StepAttempt | None:
    """The gate: admit the step with a reservation, or stop the run. None when there is nothing to run.

    The caller holds the step's attempt lock, so a step found `running` here belongs to an attempt
    whose worker died: that attempt is ended first (`_crashed_attempt_end`), and the step then goes
    through the gate like any other, within the redelivery bound.
    """
    gate = partial(
        rendered_ahead,
        prerender=partial(_prerender_begin, step_id=step_id),
        locked=partial(_begin, step_id=step_id, worker=worker),
    )
    admitted = gate()
    if admitted is not _CRASHED:
        return admitted
    if not _crashed_attempt_end(step_id=step_id):
        return None
    admitted = gate()
    return None if admitted is _CRASHED else admitted


# What the gate answers for a step whose attempt crashed: it admits nothing until that attempt is ended.
_CRASHED = object()


def _crashed_attempt_end(*, step_id: int) -> bool:
    """End the attempt of a step whose worker died, in a transaction of its own: whether its call
    was made and billed is unknown, so it is charged its reservation as an estimate. Whether the
    step is to be tried again: not in a run that stopped meanwhile, nor past STEP_MAX_REDELIVERIES
    (the run is parked)."""
    return rendered_ahead(
        prerender=partial(_prerender_crashed, step_id=step_id),
        locked=partial(_crashed_under_locks, step_id=step_id),
    )


def _prerender_crashed(*, step_id: int) -> None:
    read = run_rows.read(step_id=step_id)
    if read is not None and read[1].status == StepStatus.RUNNING:
        _prepared_again(run=read[0], step=read[1])


def _prepared_again(*, run: Run, step: Step) -> PreparedStep | None:
    """The step as its crashed attempt was prepared, for what its estimate names; None when it can
    no longer be."""
    try:
        return step_prepare(
            run=run,
            step=step,
            definition=definition_of(run.workflow_version),
            outputs=run.latest_outputs,
            may_override_prices=run.team.may_override_prices,
        )
    except TemplateFailure:
        return None


def _crashed_under_locks(*, step_id: int) -> bool:
    with transaction.atomic(durable=True):
        locked = lock_rows(step_id=step_id, lock_team=False)
        if locked is None or locked.step is None or locked.step.status != StepStatus.RUNNING:
            return False
        team, run, step = locked.team, locked.run, locked.step
        lost = step.attempts
        estimate = ledger_charge_estimate(
            team_id=team.pk,
            run=run,
            step=step,
            attempt=lost,
            prepared=_prepared_again(run=run, step=step),
            reason=f"Attempt {lost} lost its worker before it settled.",
        )
        if estimate is not None:
            estimate_event_record(run=run, step=step, entry=estimate)
        again = _after_crash(team=team, run=run, step=step)
        # Last: the entry locks the team's daily sum until commit (ledger.ledger_charge).
        _charge_record(team=team, run=run, entry=estimate)
        return again


def _after_crash(*, team: Team, run: Run, step: Step) -> bool:
    """What becomes of a step whose attempt crashed and was charged: whether it is tried again."""
    lost = step.attempts
    if run.status not in ACTIVE_RUN_STATUSES:
        # Cancelled or stopped while the attempt ran (a group's other branch hit a limit).
        message = f"Attempt {lost} lost its worker after the run stopped."
        step_set_aside(run=run, step=step, error={"type": "StepCrashedError", "message": message})
        return False
    if step.redeliveries >= settings.STEP_MAX_REDELIVERIES:
        error = {
            "type": "StepCrashedError",
            "message": f"Step {step.sequence} ({step.agent}) lost its worker {step.redeliveries + 1} times; "
            "the run is parked and can be resumed.",
        }
        run_fail(team=team, run=run, step=step, error=error, outputs=run.latest_outputs)
        return False
    step.redeliveries += 1
    step.status = StepStatus.PENDING
    step.save(update_fields=["redeliveries", "status"])
    event_record(run=run, type=EventType.STEP_REDELIVERED, payload=attempt_named(step, lost + 1))
    return True


TEAM_BUDGET_FIELDS = ["period_budget_usd", "period", "period_mode", "period_audit_start", "period_audit_rearm_at_usd"]


class _TeamLockNeeded(Exception):
    """The gate must lock the team: to draw a slice of its budget, or to report against it."""


def _begin(*, step_id: int, worker: str) -> StepAttempt | object | None:
    """Most steps are admitted under their run's lock alone. The few that need the team's lock
    start again with it: it comes first in the lock order, so it cannot be taken once the run's is."""
    try:
        return _begin_under_locks(step_id=step_id, worker=worker, lock_team=False)
    except _TeamLockNeeded:
        return _begin_under_locks(step_id=step_id, worker=worker, lock_team=True)


def _prerender_begin(*, step_id: int) -> None:
    """What `_begin_under_locks` will render, rendered before its transaction: the step's prompts,
    or when they fail and the step is its group's last branch, what its group's end renders."""
    read = run_rows.read(step_id=step_id)
    if read is None:
        return
    run, step = read
    if step.status != StepStatus.PENDING or run.status not in ACTIVE_RUN_STATUSES:
        return
    try:
        step_prepare(
            run=run,
            step=step,
            definition=definition_of(run.workflow_version),
            outputs=run.latest_outputs,
            may_override_prices=run.team.may_override_prices,
        )
    except TemplateFailure as exc:
        prerender_ending(run=run, step=step, error={"type": exc.error_type, "message": str(exc)})


def _wait_left(*, step: Step, prepared: PreparedStep) -> float:
    """Seconds until a step its kind delays may be admitted: its delay counts from its entry."""
    if not prepared.delay_seconds:
        return 0
    due = step.created_at + timedelta(seconds=prepared.delay_seconds)
    return (due - timezone.now()).total_seconds()


def _begin_under_locks(*, step_id: int, worker: str, lock_team: bool) -> StepAttempt | object | None:
    with transaction.atomic(durable=True):
        locked = lock_rows(step_id=step_id, lock_team=lock_team)
        if locked is None or locked.step is None:
            logger.warning("Step %s no longer exists; nothing to do.", step_id)
            return None
        team, run, step = locked.team, locked.run, locked.step
        log_context_bind(run_id=run.pk)
        if step.status == StepStatus.RUNNING:
            return _CRASHED
        if step.status != StepStatus.PENDING:
            return None
        if run.status not in ACTIVE_RUN_STATUSES:
            step_set_aside(run=run, step=step)  # stopped or cancelled while queued
            return None

        try:
            prepared = step_prepare(
                run=run,
                step=step,
                definition=definition_of(run.workflow_version),
                outputs=run.latest_outputs,
                may_override_prices=team.may_override_prices,
            )
        except TemplateFailure as exc:
            step_failed(team=team, run=run, step=step, error={"type": exc.error_type, "message": str(exc)})
            return None

        if (wait := _wait_left(step=step, prepared=prepared)) > 0:
            # Sent again for later, in slices below the broker's visibility timeout, which would
            # otherwise deliver a message held that long a second time.
            step_schedule(step, countdown=min(wait, settings.CELERY_VISIBILITY_TIMEOUT_SECONDS / 2))
            return None

        if not lock_team and not team.enforces_period_budget:
            # The team's settings came with the run, as of before its lock was granted: a switch to
            # enforce may have committed while this waited for it (it locks the team's runs).
            team.refresh_from_db(fields=TEAM_BUDGET_FIELDS)
        enforced = (run.budget_usd is not None and run.budget_mode == BudgetMode.ENFORCE) or team.enforces_period_budget
        if prepared.estimate_usd is None and enforced:
            error = {
                "type": "UnpricedModelError",
                "message": f"Model '{prepared.model}' has no price, so the enforce budget cannot be kept.",
                "model": prepared.model,
            }
            run_fail(team=team, run=run, step=step, error=error, outputs=run.latest_outputs)
            return None

        now = timezone.now()
        estimate = prepared.estimate_usd
        # The run's other steps running that will count as executed: branches' own, not their validators'.
        in_flight = run.steps.filter(status=StepStatus.RUNNING, role="").count() if step.group else 0
        window = period_window(team.period, now)
        decide = partial(
            gate_input,
            run=run,
            team=team,
            estimate=estimate,
            now=now,
            in_flight=in_flight,
            counted=counts_as_iteration(step.role),
        )
        # Under the team's lock an enforced budget is always drawn from: the lock was taken to.
        draws = team.enforces_period_budget and (lock_team or not _slice_admits(team, run, estimate, window))
        if draws and not lock_team:
            raise _TeamLockNeeded
        if draws:
            figures = team_figures(team, window, excluding_run=run.pk)
            decision = gate_decide(decide(team_budget=_drawing_state(team, window, run, figures)))
            if decision.stopped_by is not None and decision.stopped_by.scope == BudgetScope.TEAM:
                if idle_slices_recall(team, except_run=run.pk):
                    figures = team_figures(team, window, excluding_run=run.pk)
                    decision = gate_decide(decide(team_budget=_drawing_state(team, window, run, figures)))
        elif team.enforces_period_budget:
            # The run's slice covers the step: the team's budget has room for it.
            decision = gate_decide(decide(team_budget=team_budget_state(team, window, spent=ZERO, reserved=ZERO)))
        else:
            decision = gate_decide(decide())
        metrics.gate_decided(decision=decision)
        if not decision.admitted:
            step.estimate_usd = estimate
            run_stop(team=team, run=run, step=step, decision=decision, outputs=run.latest_outputs)
            metrics.step_finished(kind=prepared.kind, status=step.status)
            return None
        if not lock_team and any(check.scope == BudgetScope.TEAM for check in decision.reports):
            raise _TeamLockNeeded  # an audit report against the team's budget, which re-arms on the team's row
        report_over_budget(team=team, run=run, step=step, decision=decision, now=now)

        run_fields = {"status": RunStatus.RUNNING, "current_agent": step.group or step.agent, "updated_at": now}
        if draws:
            headroom = team.period_budget_usd - figures.spent_usd - figures.held_usd - run.reserved_usd - estimate
            run_fields["held_usd"] = run.reserved_usd + slice_size(estimate=estimate, headroom=headroom)
        reserve(run=run, step=step, amount=estimate or ZERO, run_fields=run_fields)
        step.status = StepStatus.RUNNING
        step.attempts += 1
        step.model = prepared.model
        step.estimate_usd = estimate
        step.worker = worker
        step.started_at = timezone.now()
        step.save(update_fields=["status", "attempts", "model", "estimate_usd", "reserved_usd", "worker", "started_at"])
        return _admitted(run=run, step=step, prepared=prepared)


def _slice_admits(team: Team, run: Run, estimate: Decimal, window) -> bool:
    """Whether the run's slice covers the step, and the team is within its budget: a call that cost
    more than its estimate can take the team over it, and then the slices still held must not admit
    what the pure gate would not (a draw decides instead). Read without the team's lock: a charge
    committing meanwhile is seen by the next step."""
    if not slice_covers(run, estimate):
        return False
    figures = team_figures(team, window)
    return figures.spent_usd + figures.held_usd <= team.period_budget_usd


def _drawing_state(team: Team, window, run: Run, figures: TeamFigures):
    """The team's budget as a draw sees it: the other runs' holds, slices included, and this run's
    reservations (its own slice is what it is drawing again)."""
    return team_budget_state(team, window, spent=figures.spent_usd, reserved=figures.held_usd + run.reserved_usd)


def _admitted(*, run: Run, step: Step, prepared: PreparedStep) -> StepAttempt:
    """The attempt the gate admitted, with the rows it admitted it from."""
    return StepAttempt(
        team_id=run.team_id,
        run_id=run.pk,
        step_id=step.pk,
        number=step.attempts,
        prepared=prepared,
        admitted_run=run,
        admitted_step=step,
    )


def step_settle(*, attempt: StepAttempt, result: CompletionResult) -> None:
    """Charge the attempt, release its reservation, record the output and a checkpoint, and go on."""
    # A model call's charge is known before its settlement; another kind's is taken as nothing (should
    # it charge, the renders that read the spend are redone under the locks).
    charge = cost_ahead(prepared=attempt.prepared, usage=result) if attempt.prepared.request is not None else ZERO
    rendered_ahead(
        prerender=partial(_prerender_end_of, attempt=attempt, output=result.output, charge=charge),
        locked=partial(_settle_under_locks, attempt=attempt, result=result),
    )


def _settle_under_locks(*, attempt: StepAttempt, result: CompletionResult) -> None:
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        team, run, step = locked.team, locked.run, locked.step
        if not (step.status == StepStatus.RUNNING and step.attempts == attempt.number):
            _superseded_attempt_charge(team=team, run=run, step=step, attempt=attempt, usage=result)
            return
        # The attempt that owns the step releases its reservation and counts as executed in the
        # UPDATE of the run that charges it; the step follows.
        executed = {"iterations": 1} if counts_as_iteration(step.role) else {}
        charged = _charge(
            team=team, run=run, step=step, attempt=attempt, usage=result, reserved_usd=-step.reserved_usd, **executed
        )
        judged = alerts_after_spend(team=team, run=run, unrecorded=charged.cost_usd if charged.entry else None)
        step.reserved_usd = ZERO
        step.status = StepStatus.SUCCEEDED
        step.output = result.output
        step.error = None  # a transient error an earlier attempt left
        step.finished_at = timezone.now()
        step.session = session_kept(prepared=attempt.prepared, role=step.role, output=result.output)
        step.save(update_fields=["reserved_usd", "status", "output", "error", "finished_at", "session"])
        metrics.step_finished(kind=attempt.prepared.kind, status=step.status)
        completed, said = kind_named(attempt.prepared.kind).completed_event(step=step, output=result.output)
        continued = {"session": attempt.prepared.session} if attempt.prepared.session else {}
        event_record(
            run=run,
            type=completed,
            payload={
                **attempt_named(step, attempt.number),
                **said,
                **continued,
                **charged.details,
                "cost_usd": usd(charged.cost_usd),
                "spent_usd": usd(run.spent_usd),
            },
        )
        request = attempt.prepared.request
        step_succeeded(team=team, run=run, step=step, output=result.output, prompt=request.prompt if request else "")
        # Last: the entry locks the team's daily sum until commit (ledger.ledger_charge).
        if charged.entry is not None:
            ledger_record(charged.entry)
            alerts_after_entry(team=team, run=run, judged=judged)


def _superseded_attempt_charge(
    *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage | None
) -> None:
    """The usage of an attempt that another delivery took over from, or that the run's stop ended
    (None: it is known to have cost nothing): its call happened, so it is charged, but the step's
    reservation and progress belong to others. Charged as an estimate when the takeover found its
    outcome unknown, it corrects that estimate.

    Whatever charges an attempt that owns its step also takes the step out of `running` in that
    transaction, so only an attempt that no longer owns it can have been charged already; the
    unique constraints on charges and corrections back this: a second would fail, never count.
    """
    estimated = ledger_estimate_open(step=step, attempt=attempt.number)
    if estimated is None and (usage is None or ledger_has_entry(step=step, attempt=attempt.number)):
        return  # nothing to charge, settled already, or its estimate corrected
    entry = None if usage is None else _charge(team=team, run=run, step=step, attempt=attempt, usage=usage).entry
    if estimated is not None:
        entry = ledger_correction(run=run, estimated=estimated, charged=entry)
        correction_event_record(run=run, step=step, entry=entry)
    # An attempt that charges nothing leaves no entry to tell its duplicate by: nothing to record.
    if entry is not None:
        logger.warning("Attempt %s of step %s finished after it was superseded.", attempt.number, step.pk)
        _charge_record(team=team, run=run, entry=entry)


def step_fail(*, attempt: StepAttempt, error: dict, outcome_unknown: bool = False) -> None:
    """The step's work failed: release its reservation and fail the run, resumably. When the work
    may have made a paid call that reported nothing (`outcome_unknown`), the reservation is charged
    as an estimate instead of released."""
    charge = (attempt.prepared.estimate_usd or ZERO) if outcome_unknown else ZERO
    rendered_ahead(
        prerender=partial(_prerender_end_of, attempt=attempt, error=error, charge=charge),
        locked=partial(_fail_under_locks, attempt=attempt, error=error, outcome_unknown=outcome_unknown),
    )


def _fail_under_locks(*, attempt: StepAttempt, error: dict, outcome_unknown: bool) -> None:
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        team, run, step = locked.team, locked.run, locked.step
        if step.status != StepStatus.RUNNING or step.attempts != attempt.number:
            return
        estimate = _estimate_charge(team=team, run=run, step=step, attempt=attempt, reason=error["message"]) if outcome_unknown else None
        _attempt_failed(team=team, run=run, step=step, attempt=attempt, error=error)
        _charge_record(team=team, run=run, entry=estimate)


def _estimate_charge(*, team: Team, run: Run, step: Step, attempt: StepAttempt, reason: str) -> LedgerEntry | None:
    """Charge the attempt that owns its step its reservation as an estimate, with its event; the
    entry is written last (`_charge_record`)."""
    entry = ledger_charge_estimate(
        team_id=team.pk, run=run, step=step, attempt=attempt.number, prepared=attempt.prepared, reason=reason
    )
    if entry is not None:
        estimate_event_record(run=run, step=step, entry=entry)
    return entry


def step_provider_failed(*, attempt: StepAttempt, error: ProviderError) -> None:
    """Charge what the failed call used, if the provider said, then try the step again later or fail it.

    A retry is a new attempt through `step_begin`: the reservation is released now and the gate runs
    again before the next call, so a retry can be stopped by a budget like any step, and each
    attempt gets its own ledger entry. The wait is Celery's countdown, not a worker asleep.
    """
    charge = ZERO
    if error.usage is not None and attempt.prepared.request is not None:
        charge = cost_ahead(prepared=attempt.prepared, usage=error.usage)
    elif error.usage is None and error.outcome_unknown:
        charge = attempt.prepared.estimate_usd or ZERO
    rendered_ahead(
        prerender=partial(_prerender_end_of, attempt=attempt, error=_provider_error(error), charge=charge),
        locked=partial(_provider_failed_under_locks, attempt=attempt, error=error),
    )


def _provider_failed_under_locks(*, attempt: StepAttempt, error: ProviderError) -> None:
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        team, run, step = locked.team, locked.run, locked.step
        if not (step.status == StepStatus.RUNNING and step.attempts == attempt.number):
            if error.usage is not None or not error.outcome_unknown:
                # No usage and a known outcome (refused, answered with an error): it cost nothing.
                _superseded_attempt_charge(team=team, run=run, step=step, attempt=attempt, usage=error.usage)
            return
        entry, cost = None, None
        if error.usage is not None:
            charged = _charge(team=team, run=run, step=step, attempt=attempt, usage=error.usage)
            entry, cost = charged.entry, charged.cost_usd
        elif error.outcome_unknown:
            entry = _estimate_charge(team=team, run=run, step=step, attempt=attempt, reason=error.message)
            cost = None if entry is None else entry.cost_usd
        _failed_call_handle(run=run, team=team, step=step, attempt=attempt, error=error, cost=cost)
        # Last, as a settlement writes its entry: what follows the failure renders holding no more locks.
        _charge_record(team=team, run=run, entry=entry)


def _failed_call_handle(
    *, team: Team, run: Run, step: Step, attempt: StepAttempt, error: ProviderError, cost: Decimal | None
) -> None:
    """Fail the attempt that owns its step, or send it again later, as the error and the retries so far say."""
    details = _provider_error(error)
    if not error.retryable or run.status not in ACTIVE_RUN_STATUSES:
        _attempt_failed(team=team, run=run, step=step, attempt=attempt, error=details)
        return
    if step.provider_retries >= settings.PROVIDER_MAX_RETRIES:
        tries = step.provider_retries + 1
        message = f"The provider failed {tries} times in a row; the last error: {details['message']}"
        _attempt_failed(team=team, run=run, step=step, attempt=attempt, error={**details, "message": message})
        return
    release(run=run, step=step)
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
            **attempt_named(step, attempt.number),
            "retry": step.provider_retries,
            "retry_in_seconds": round(delay, 3),
            "error": details,
            "cost_usd": usd(cost),
        },
    )
    step_schedule(step, countdown=delay)


def _charge(*, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas) -> Charged:
    """What the attempt's kind charges for it, on the run; its ledger entry is written by `_charge_record`."""
    return kind_named(attempt.prepared.kind).settle(
        team=team, run=run, step=step, attempt=attempt, usage=usage, **run_deltas
    )


def _charge_record(*, team: Team, run: Run, entry: LedgerEntry | None) -> None:
    """Write a charge's ledger entry, if any, then record the alerts its spend newly reaches: for a
    settlement that ends with its charge."""
    if entry is None:
        return
    ledger_record(entry)
    alerts_after_spend(team=team, run=run)


def _attempt_failed(*, team: Team, run: Run, step: Step, attempt: StepAttempt, error: dict) -> None:
    metrics.step_finished(kind=attempt.prepared.kind, status=StepStatus.FAILED)
    if run.status == RunStatus.CANCELLED:
        # A cancelled run stays cancelled: failing it would make it resumable again.
        release(run=run, step=step)
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
        return
    step_failed(team=team, run=run, step=step, error=error)


def _provider_error(error: ProviderError) -> dict:
    return {"type": error.error_type, "message": storable(error.message), "status_code": error.status_code}


def _lock_attempt(attempt: StepAttempt):
    locked = lock_rows(team_id=attempt.team_id, run_id=attempt.run_id, step_id=attempt.step_id, lock_team=False)
    if locked is None or locked.step is None:
        raise Step.DoesNotExist(f"Step {attempt.step_id} of run {attempt.run_id} is gone.")
    return locked


def _prerender_end_of(
    *, attempt: StepAttempt, output: dict | None = None, error: dict | None = None, charge: Decimal = ZERO
) -> None:
    """What the settlement will render, rendered ahead: from the rows the gate read for a step outside
    any group, read again for a branch (its group's other branches may have ended since)."""
    run, step = attempt.admitted_run, attempt.admitted_step
    if run is None or step is None or step.group:
        read = run_rows.read(step_id=attempt.step_id)
        if read is None:
            return
        run, step = read
    prerender_ending(run=run, step=step, output=output, error=error, charge=charge)
