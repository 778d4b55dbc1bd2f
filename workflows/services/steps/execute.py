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
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from workflows.definition import TemplateFailure, counts_as_iteration, unstorable_json
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    BudgetMode,
    BudgetScope,
    EventType,
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
from workflows.services.ledger import attempt_named, cost_ahead, ledger_has_entry, ledger_record, storable
from workflows.services.locks import lock_rows
from workflows.services.periods import period_window
from workflows.services.renders import rendered_ahead
from workflows.services.run_state import run_await_input, run_fail, run_stop, step_set_aside
from workflows.services.steps.kinds import Charged, PreparedStep, StepAttempt, StepWorkFailed, kind_named
from workflows.services.steps.prepare import step_prepare
from workflows.services.steps.sessions import session_kept
from workflows.services.steps.progression import prerender_ending, step_failed, step_succeeded

logger = logging.getLogger(__name__)


def step_execute(*, step_id: int) -> None:
    """Run one step from gate to settlement."""
    attempt = step_begin(step_id=step_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    if attempt is None:
        return
    if attempt.prepared.awaits_input:
        step_await_input(attempt=attempt)
        return
    try:
        result = kind_named(attempt.prepared.kind).run(attempt)
    except ProviderError as exc:
        step_provider_failed(attempt=attempt, error=exc)
        return
    except StepWorkFailed as exc:
        step_fail(attempt=attempt, error={"type": exc.error_type, "message": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001 - includes Celery's soft time limit
        # Whatever stopped the call, the reservation is released and the run fails resumably
        # rather than staying "running" with money held.
        logger.exception("Step %s attempt %s stopped unexpectedly.", attempt.step_id, attempt.number)
        step_fail(
            attempt=attempt,
            error={"type": "StepInterruptedError", "message": f"The step's work stopped: {type(exc).__name__}."},
        )
        return
    if problem := unstorable_json(result.output):
        # Storing it would fail the settlement, and the call would go uncharged: charged, it fails the step.
        message = f"The provider's answer cannot be stored: it holds {problem}."
        step_provider_failed(attempt=attempt, error=ProviderError(message, usage=result))
        return
    step_settle(attempt=attempt, result=result)


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
    whose worker died: it is taken over, within the redelivery bound.
    """
    return rendered_ahead(
        prerender=partial(_prerender_begin, step_id=step_id),
        locked=partial(_begin, step_id=step_id, worker=worker),
    )


TEAM_BUDGET_FIELDS = ["period_budget_usd", "period", "period_mode", "period_audit_start", "period_audit_rearm_at_usd"]


class _TeamLockNeeded(Exception):
    """The gate must lock the team: to draw a slice of its budget, or to report against it."""


def _begin(*, step_id: int, worker: str) -> StepAttempt | None:
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
    if step.status not in (StepStatus.PENDING, StepStatus.RUNNING) or run.status not in ACTIVE_RUN_STATUSES:
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


def _begin_under_locks(*, step_id: int, worker: str, lock_team: bool) -> StepAttempt | None:
    with transaction.atomic(durable=True):
        locked = lock_rows(step_id=step_id, lock_team=lock_team)
        if locked is None or locked.step is None:
            logger.warning("Step %s no longer exists; nothing to do.", step_id)
            return None
        team, run, step = locked.team, locked.run, locked.step
        if step.status not in (StepStatus.PENDING, StepStatus.RUNNING):
            return None
        if run.status not in ACTIVE_RUN_STATUSES:
            # Stopped or cancelled while queued, or while an attempt that has since died was running.
            step_set_aside(run=run, step=step)
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

        if step.status == StepStatus.RUNNING:
            return _take_over_crashed_attempt(team=team, run=run, step=step, prepared=prepared, worker=worker)

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
        if not decision.admitted:
            step.estimate_usd = estimate
            run_stop(team=team, run=run, step=step, decision=decision, outputs=run.latest_outputs)
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


def _take_over_crashed_attempt(
    *, team: Team, run: Run, step: Step, prepared: PreparedStep, worker: str
) -> StepAttempt | None:
    """A redelivered step whose previous attempt died: try again on the same reservation, or give up."""
    if step.redeliveries >= settings.STEP_MAX_REDELIVERIES:
        error = {
            "type": "StepCrashedError",
            "message": f"Step {step.sequence} ({step.agent}) lost its worker {step.redeliveries + 1} times; "
            "the run is parked and can be resumed.",
        }
        run_fail(team=team, run=run, step=step, error=error, outputs=run.latest_outputs)
        return None
    step.redeliveries += 1
    step.attempts += 1
    step.worker = worker
    step.started_at = timezone.now()
    step.save(update_fields=["redeliveries", "attempts", "worker", "started_at"])
    event_record(
        run=run,
        type=EventType.STEP_REDELIVERED,
        payload=attempt_named(step, step.attempts),
    )
    return _admitted(run=run, step=step, prepared=prepared)


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
        owner = step.status == StepStatus.RUNNING and step.attempts == attempt.number
        # Whatever charges an attempt that owns its step also takes the step out of `running` in
        # that transaction, so only an attempt that no longer owns it can have been charged already.
        # The unique (step, attempt) constraint backs this: a second charge would fail, never count.
        if not owner and ledger_has_entry(step=step, attempt=attempt.number):
            return  # settled already
        # The attempt that owns the step releases its reservation and counts as executed in the
        # UPDATE of the run that charges it; the step follows.
        executed = {"iterations": 1} if counts_as_iteration(step.role) else {}
        settled = {"reserved_usd": -step.reserved_usd, **executed} if owner else {}
        charged = _charge(team=team, run=run, step=step, attempt=attempt, usage=result, **settled)
        if not owner:
            # An attempt another delivery took over from finished after all: what it cost is
            # charged, but the step's reservation and progress belong to the attempt that owns it.
            # An attempt that charges nothing leaves no entry to tell its duplicate by: nothing to record.
            if charged.entry is not None:
                logger.warning("Attempt %s of step %s finished after it was superseded.", attempt.number, step.pk)
                _charge_record(team=team, run=run, charged=charged)
            return
        judged = alerts_after_spend(team=team, run=run, unrecorded=charged.cost_usd if charged.entry else None)
        step.reserved_usd = ZERO
        step.status = StepStatus.SUCCEEDED
        step.output = result.output
        step.error = None  # a transient error an earlier attempt left
        step.finished_at = timezone.now()
        step.session = session_kept(prepared=attempt.prepared, role=step.role, output=result.output)
        step.save(update_fields=["reserved_usd", "status", "output", "error", "finished_at", "session"])
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


def step_fail(*, attempt: StepAttempt, error: dict) -> None:
    """The step's work failed: release its reservation and fail the run, resumably."""
    rendered_ahead(
        prerender=partial(_prerender_end_of, attempt=attempt, error=error),
        locked=partial(_fail_under_locks, attempt=attempt, error=error),
    )


def _fail_under_locks(*, attempt: StepAttempt, error: dict) -> None:
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        if locked.step.status != StepStatus.RUNNING or locked.step.attempts != attempt.number:
            return
        _attempt_failed(team=locked.team, run=locked.run, step=locked.step, error=error)


def step_provider_failed(*, attempt: StepAttempt, error: ProviderError) -> None:
    """Charge what the failed call used, if the provider said, then try the step again later or fail it.

    A retry is a new attempt through `step_begin`: the reservation is released now and the gate runs
    again before the next call, so a retry can be stopped by a budget like any step, and each
    attempt gets its own ledger entry. The wait is Celery's countdown, not a worker asleep.
    """
    charge = ZERO
    if error.usage is not None and attempt.prepared.request is not None:
        charge = cost_ahead(prepared=attempt.prepared, usage=error.usage)
    rendered_ahead(
        prerender=partial(_prerender_end_of, attempt=attempt, error=_provider_error(error), charge=charge),
        locked=partial(_provider_failed_under_locks, attempt=attempt, error=error),
    )


def _provider_failed_under_locks(*, attempt: StepAttempt, error: ProviderError) -> None:
    with transaction.atomic(durable=True):
        locked = _lock_attempt(attempt)
        team, run, step = locked.team, locked.run, locked.step
        charged = None
        if error.usage is not None and not ledger_has_entry(step=step, attempt=attempt.number):
            charged = _charge(team=team, run=run, step=step, attempt=attempt, usage=error.usage)
        _failed_call_handle(run=run, team=team, step=step, attempt=attempt, error=error, charged=charged)
        if charged is not None:
            # Last, as a settlement writes its entry: what follows the failure renders holding no more locks.
            _charge_record(team=team, run=run, charged=charged)


def _failed_call_handle(
    *, team: Team, run: Run, step: Step, attempt: StepAttempt, error: ProviderError, charged: Charged | None
) -> None:
    """Fail the attempt, or send it again later, as the error and the retries so far say."""
    cost = None if charged is None else charged.cost_usd
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


def _charge_record(*, team: Team, run: Run, charged: Charged) -> None:
    """Write the charge's ledger entry, then record the alerts its spend newly reaches: for a
    settlement that ends with its charge."""
    if charged.entry is not None:
        ledger_record(charged.entry)
    alerts_after_spend(team=team, run=run)


def _attempt_failed(*, team: Team, run: Run, step: Step, error: dict) -> None:
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
