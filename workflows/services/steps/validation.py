"""The steps an agent's validator or dialog adds after the agent's own (definition/validation.py and
definition/dialog.py have the rules): entering its validator's or dialog evaluator's step, a person's
reply and its re-run, each a step of the run like any other, and the events that say what the
validator or the evaluator found. After the step of a group's branch, they are steps of that branch.
Callers hold the run and step locks (`locks.lock_rows`)."""

from django.utils import timezone

from workflows.definition import (
    PROMPT_CHARS,
    AfterStep,
    CallModel,
    CallTool,
    Converse,
    Evaluate,
    Redo,
    Rerun,
    Validate,
    truncated,
)
from workflows.models import EventType, Run, Step, StepRole, StepStatus
from workflows.services.dispatch import step_send
from workflows.services.events import event_record
from workflows.services.ledger import branch_of, storable
from workflows.services.run_state import checkpoint_record


def validation_step_enter(
    *,
    run: Run,
    step: Step,
    move: Validate | Rerun | Evaluate | Converse | Redo | CallModel | CallTool,
    sequence: int,
    prompt: str = "",
    blocked: bool = False,
) -> None:
    """Create, as the run's step `sequence`, and send the step that follows `step` of an agent: its
    validator's, grading the output against `prompt` (what the agent was asked); its dialog's
    evaluator, reading the output; a person's reply to the evaluator's question; its re-run, told
    the issues or the question and reply; or the next model call or tool call of its tool loop. The checkpoint that points at it keeps the outputs from
    before the agent: its output is not final yet. After a branch's step it joins the branch, whose
    group's checkpoint a resume goes on from, and is `blocked` when the run stopped meanwhile."""
    if isinstance(move, Validate):
        # The prompt is whatever the agent's templates rendered: kept as the database can store it.
        role, validation = StepRole.VALIDATOR, {"prompt": storable(truncated(prompt, PROMPT_CHARS)), "output": move.output}
    elif isinstance(move, Rerun):
        role, validation = StepRole.RERUN, {"issues": list(move.verdict.issues), "output": move.output}
    elif isinstance(move, Evaluate):
        role, validation = StepRole.DIALOG, {"output": move.output}
    elif isinstance(move, Converse):
        evaluation = move.evaluation
        role = StepRole.REPLY
        validation = {"question": evaluation.question, "reason": evaluation.reason, "output": move.output}
    elif isinstance(move, Redo):
        role, validation = StepRole.RERUN, {"question": move.question, "reply": move.reply, "output": move.output}
    elif isinstance(move, CallModel):
        role, validation = StepRole.MODEL_CALL, {"turn": move.turn}
    else:
        role, validation = StepRole.TOOL_CALL, {"turn": move.turn, "index": move.index, "count": move.count}
    follower = Step.objects.create(
        run=run,
        sequence=sequence,
        agent=step.agent,
        iteration=step.iteration,  # the same reach of the agent, or entry of its group
        group=step.group,
        branch_index=step.branch_index,
        branch_key=step.branch_key,
        role=role,
        validation=validation,
        status=StepStatus.BLOCKED if blocked else StepStatus.PENDING,
        enqueued_at=None if blocked else timezone.now(),
    )
    if not step.group:
        checkpoint_record(run=run, reason="step_completed", outputs=run.latest_outputs, next_step=follower)
    if not blocked:
        step_send(follower.pk)


def validation_record(*, run: Run, step: Step, move: AfterStep, error: dict | None = None) -> None:
    """The event saying what a validator's or a dialog evaluator's step found (`error`: it failed,
    and the output stands), or that a re-run failed and the output it was to replace stands; nothing
    for any other step."""
    named = {"agent": step.agent, "step": step.sequence, **branch_of(step)}
    failure = {"error": error} if error is not None else {}
    if step.role == StepRole.VALIDATOR:
        verdict = move.verdict
        if verdict.passed:
            payload = {**named, "errored": verdict.errored, **failure}
            event_record(run=run, type=EventType.AGENT_VALIDATION_PASSED, payload=payload)
        else:
            payload = {**named, "issues": list(verdict.issues), "will_retry": isinstance(move, Rerun)}
            event_record(run=run, type=EventType.AGENT_VALIDATION_FAILED, payload=payload)
    elif step.role == StepRole.DIALOG:
        evaluation = move.evaluation  # a Converse or a Proceed, after an evaluator's step
        payload = {
            **named,
            "triggered": evaluation.trigger,
            "reason": evaluation.reason,
            "question": evaluation.question,
            "errored": evaluation.errored,
            **failure,
        }
        event_record(run=run, type=EventType.AGENT_DIALOG_EVALUATED, payload=payload)
    elif step.role == StepRole.RERUN and error is not None:
        if "issues" in step.validation:
            payload = {**named, "issues": step.validation["issues"], "will_retry": False, "rerun_error": error}
            event_record(run=run, type=EventType.AGENT_VALIDATION_FAILED, payload=payload)
        else:
            payload = {**named, "question": step.validation["question"], "rerun_error": error}
            event_record(run=run, type=EventType.AGENT_DIALOG_RERUN_FAILED, payload=payload)
