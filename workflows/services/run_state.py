"""A run's state transitions: stopped by a limit, failed, completed, and what every stop does.

Every change of a run's status that a step causes is made here, under the caller's locks (run and
step: `locks.lock_rows`), together with the rows that must change with it: the step it stopped or
failed at, that step's group's branches not yet started, and the checkpoint a resume starts from.
"""

from datetime import datetime

from django.utils import timezone

from workflows.models import Checkpoint, EventType, Run, RunStatus, Step, StepStatus, Team
from workflows.services.alerts import alert_send
from workflows.services.budgets import budget_exceeded_payload, release
from workflows.services.events import event_record, usd
from workflows.services.gate import GateDecision


def pause_clock(run: Run, now: datetime) -> None:
    """Stop the run's active-time clock: the timeout counts active time only."""
    run.active_time = run.elapsed(now)
    run.active_since = None


def run_paused(run: Run, now: datetime) -> list[str]:
    """What a run that stops or waits gives up, on the instance: its clock stops, and its slice of
    its team's budget goes back but for its steps still in flight (escrow.py). The fields to save."""
    pause_clock(run, now)
    run.held_usd = min(run.held_usd, run.reserved_usd)
    return ["active_time", "active_since", "held_usd", "updated_at"]


def run_ended(run: Run, now: datetime) -> list[str]:
    """What every stop of a run does to it, on the instance: `run_paused`, and the time it ended."""
    run.finished_at = now
    return ["finished_at", *run_paused(run, now)]


def checkpoint_record(*, run: Run, reason: str, outputs: dict, next_step: Step | None) -> Checkpoint:
    """What a resume continues from: the outputs so far and the step to run next, if any."""
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


def run_stop(*, team: Team, run: Run, step: Step, decision: GateDecision, outputs: dict) -> None:
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
    run.save(update_fields=["status", "error", "current_agent", *run_ended(run, now)])
    step.status = StepStatus.BLOCKED
    step.save(update_fields=["status", "estimate_usd"])
    _block_unstarted_branches(run=run, step=step)
    checkpoint_record(run=run, reason=decision.stop, outputs=outputs, next_step=step)


def run_await_input(*, team: Team, run: Run, step: Step, request: dict, outputs: dict) -> None:
    """The run waits at `step` for a person's answer to `request` (services/inputs.py): its clock and
    its slice pause, and its team's webhook is told."""
    run.status = RunStatus.WAITING_FOR_INPUT
    run.current_agent = step.agent
    run.save(update_fields=["status", "current_agent", *run_paused(run, timezone.now())])
    step.status = StepStatus.AWAITING_INPUT
    step.save(update_fields=["status"])
    checkpoint_record(run=run, reason=RunStatus.WAITING_FOR_INPUT, outputs=outputs, next_step=step)
    event = event_record(run=run, type=EventType.INPUT_REQUESTED, payload={"agent": step.agent, **request})
    alert_send(team=team, event=event)


def run_fail(
    *, team: Team, run: Run, step: Step | None, error: dict, outputs: dict | None = None, output: dict | None = None
) -> None:
    """Fail the run, resumably: at `step` (its reservation released, and a checkpoint with `outputs`
    pointing at it), or, with no step, where it stands (the caller has written the checkpoint).
    `output` is the run's output, when what failed it gave one."""
    now = timezone.now()
    if step is not None:
        release(run=run, step=step)
    run.status = RunStatus.FAILED
    run.error = error
    run.output = output
    run.save(update_fields=["status", "error", "output", *run_ended(run, now)])
    if step is not None:
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = now
        step.save(update_fields=["status", "error", "finished_at"])
        _block_unstarted_branches(run=run, step=step)
        checkpoint_record(run=run, reason="failed", outputs=outputs, next_step=step)
    event_record(run=run, type=EventType.RUN_FAILED, payload=error)


def run_complete(*, run: Run, output: dict, outputs: dict) -> None:
    now = timezone.now()
    run.status = RunStatus.COMPLETED
    run.output = output
    run.current_agent = ""
    run.save(update_fields=["status", "output", "current_agent", *run_ended(run, now)])
    checkpoint_record(run=run, reason="completed", outputs=outputs, next_step=None)
    event_record(run=run, type=EventType.RUN_COMPLETED, payload={"spent_usd": usd(run.spent_usd)})


def step_set_aside(*, run: Run, step: Step, error: dict | None = None) -> None:
    """A queued or crashed step of a run that is no longer active: its reservation released, and
    `blocked`, so that a resume runs it (a stopped group's other branches can still be in flight when
    the run stops); `cancelled` in a cancelled run, which nothing resumes. An `error` (its attempt
    crashed) replaces the step's last one and ends its attempt."""
    release(run=run, step=step)
    step.status = StepStatus.CANCELLED if run.status == RunStatus.CANCELLED else StepStatus.BLOCKED
    if error is not None:
        step.error = error
        step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])


def _block_unstarted_branches(*, run: Run, step: Step) -> None:
    """The run stopped at a branch: its group's branches not yet started never start, until a resume."""
    if step.group:
        Step.objects.filter(
            run=run, group=step.group, iteration=step.iteration, status__in=[StepStatus.PENDING, StepStatus.WAITING]
        ).exclude(pk=step.pk).update(status=StepStatus.BLOCKED)
