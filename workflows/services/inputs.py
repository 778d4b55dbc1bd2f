"""A person's answer to a run waiting for input (a human gate, questions, an agent's dialog): checked, recorded with who gave it,
then settled as the waiting step's output, from which the run goes on as the answer routes it."""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from workflows.definition.text import unsafe_text_in
from workflows.errors import InvalidRunState, ValidationFailed
from workflows.models import EventType, Run, RunStatus, Step, StepStatus
from workflows.providers import CompletionResult
from workflows.selectors import definition_of, latest_checkpoint
from workflows.services.events import event_record
from workflows.services.locks import lock_rows, step_attempt_lock
from workflows.services.steps import step_settle
from workflows.services.steps.kinds import PreparedStep, StepAttempt, kind_for_step


def check_run_answerable(*, run: Run, given: Mapping[str, Any]) -> tuple[Step, Any, int]:
    """The step waiting for the answer, the output `given` makes of it, and the id of the
    `input_requested` event it answers; InvalidRunState when nothing waits, ValidationFailed when
    the answer is not one the step takes."""
    if unsafe := unsafe_text_in(given):
        # The API's parser refuses it already; the admin's forms come here too.
        path, problem = unsafe
        raise ValidationFailed(f"The answer {problem}.", details=[{"path": path or "answer", "message": problem}])
    checkpoint = latest_checkpoint(run=run)
    step = checkpoint.next_step if checkpoint else None
    if run.status != RunStatus.WAITING_FOR_INPUT or step is None or step.status != StepStatus.AWAITING_INPUT:
        raise InvalidRunState(
            f"The run is not waiting for input: it is '{run.status}'.", details={"status": run.status}
        )
    node = definition_of(run.workflow_version).node(step.agent)
    asked_id, asked = _latest_request(run).values_list("id", "payload").first()  # recorded as the run stopped
    return step, kind_for_step(node, step.role).answer(node=node, asked=asked, given=given), asked_id


def _latest_request(run: Run):
    return run.events.filter(type=EventType.INPUT_REQUESTED).order_by("-id")


def run_answer(*, run: Run, given: Mapping[str, Any], actor: str) -> Run:
    """Answer the run's waiting step with `given` on behalf of `actor`, and let the run go on.

    The step's attempt lock is held from the answer to its settlement: a worker the sweeper sends
    meanwhile waits for it rather than asking again and dropping the answer."""
    step, output, asked_id = check_run_answerable(run=run, given=given)
    with step_attempt_lock(step.pk) as acquired:
        if not acquired:
            raise InvalidRunState("The run's step is being answered now.", details={"status": run.status})
        with transaction.atomic(durable=True):
            locked = lock_rows(team_id=run.team_id, run_id=run.pk, step_id=step.pk, lock_team=False)
            run, step = locked.run, locked.step
            if run.status != RunStatus.WAITING_FOR_INPUT or step.status != StepStatus.AWAITING_INPUT:
                # Answered or cancelled since it was checked.
                raise InvalidRunState(
                    f"The run is not waiting for input: it is '{run.status}'.", details={"status": run.status}
                )
            if _latest_request(run).values_list("id", flat=True).first() != asked_id:
                raise InvalidRunState("What the run asks changed while it was answered: read it again.")
            now = timezone.now()
            run.status = RunStatus.RUNNING
            run.active_since = now  # its clock runs again
            run.save(update_fields=["status", "active_since", "updated_at"])
            step.status = StepStatus.RUNNING  # the attempt the gate admitted, which the answer ends
            step.started_at = now  # alive from now, for the sweeper
            step.save(update_fields=["status", "started_at"])
            event_record(
                run=run, type=EventType.INPUT_RECEIVED, actor=actor, payload={"agent": step.agent, "by": actor, **output}
            )
        kind = kind_for_step(definition_of(run.workflow_version).node(step.agent), step.role)
        prepared = PreparedStep(kind=kind.name, estimate_usd=Decimal("0"))
        attempt = StepAttempt(team_id=run.team_id, run_id=run.pk, step_id=step.pk, number=step.attempts, prepared=prepared)
        step_settle(attempt=attempt, result=CompletionResult(input_tokens=0, output_tokens=0, output=output))
    run.refresh_from_db()
    return run
