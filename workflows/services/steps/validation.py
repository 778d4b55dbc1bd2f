"""The steps an agent's validator adds after the agent's own (definition/validation.py has the rules):
entering its validator's step and its re-run, each a step of the run like any other, and the events
that say what the validator found. Callers hold the run and step locks (`locks.lock_rows`)."""

from django.utils import timezone

from workflows.definition import PROMPT_CHARS, AfterStep, Rerun, Validate, truncated
from workflows.models import EventType, Run, Step, StepRole
from workflows.services.dispatch import step_send
from workflows.services.events import event_record
from workflows.services.ledger import storable
from workflows.services.run_state import checkpoint_record


def validation_step_enter(*, run: Run, step: Step, move: Validate | Rerun, prompt: str = "") -> None:
    """Create and send the step that follows `step` of an agent: its validator's, grading the output
    against `prompt` (what the agent was asked), or its re-run, told the issues. The checkpoint that
    points at it keeps the outputs from before the agent: its output is not final yet."""
    if isinstance(move, Validate):
        # The prompt is whatever the agent's templates rendered: kept as the database can store it.
        role, validation = StepRole.VALIDATOR, {"prompt": storable(truncated(prompt, PROMPT_CHARS)), "output": move.output}
    else:
        role, validation = StepRole.RERUN, {"issues": list(move.verdict.issues), "output": move.output}
    follower = Step.objects.create(
        run=run,
        sequence=step.sequence + 1,
        agent=step.agent,
        iteration=step.iteration,  # the same reach of the agent
        role=role,
        validation=validation,
        enqueued_at=timezone.now(),
    )
    checkpoint_record(run=run, reason="step_completed", outputs=run.latest_outputs, next_step=follower)
    step_send(follower.pk)


def validation_record(*, run: Run, step: Step, move: AfterStep, error: dict | None = None) -> None:
    """The event saying what a validator's step found (`error`: it failed, and passed the output),
    or that a re-run failed and the graded output stands; nothing for any other step."""
    named = {"agent": step.agent, "step": step.sequence}
    if step.role == StepRole.VALIDATOR:
        verdict = move.verdict
        if verdict.passed:
            failure = {"error": error} if error is not None else {}
            payload = {**named, "errored": verdict.errored, **failure}
            event_record(run=run, type=EventType.AGENT_VALIDATION_PASSED, payload=payload)
        else:
            payload = {**named, "issues": list(verdict.issues), "will_retry": isinstance(move, Rerun)}
            event_record(run=run, type=EventType.AGENT_VALIDATION_FAILED, payload=payload)
    elif step.role == StepRole.RERUN and error is not None:
        payload = {**named, "issues": step.validation["issues"], "will_retry": False, "rerun_error": error}
        event_record(run=run, type=EventType.AGENT_VALIDATION_FAILED, payload=payload)
