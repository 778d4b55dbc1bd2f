"""Conductor's `session_key` (definition/sessions.py): the earlier exchanges a keyed agent's call
replays, read from the run's steps, and what a step keeps of its call for the calls after it.

An execution of a keyed agent keeps, on the step whose output is its answer (`Step.session`), the
prompt it was sent: its own step or a re-run's for one call, the model call that answered for a tool
loop. A later call replays each such step of its session that succeeded before it was created, in
run order. Nothing else is read, so every attempt at a call (a retry, a redelivery, a resume) sends
the same exchanges, and a stopped run resumes with its session whole.
"""

from django.db.models import Max

from workflows.definition import (
    MAX_SESSION_HISTORY_CHARS,
    MODEL_CALL_ROLE,
    AgentSpec,
    Frame,
    SessionTooLong,
    answer_text,
    entering_step,
)
from workflows.models import Step, StepRole, StepStatus
from workflows.providers import SessionExchange
from workflows.services.ledger import storable
from workflows.services.steps.kinds import PreparedStep

# The roles of the steps that call the agent's model with its own prompt.
CALLING_ROLES = ("", StepRole.RERUN, StepRole.MODEL_CALL)
_CHUNK_ROWS = 16


def session_history(*, step: Step, frame: Frame, node: AgentSpec) -> tuple[SessionExchange, ...]:
    """The exchanges a call of `node` (a keyed agent, at `step`, in `frame`) replays: those of every
    agent of the frame with its key, that ended before `step` was created, since the frame was
    entered, kept under that key (a run resumed onto a version that gave the agent a new key starts a
    new session). Raises SessionTooLong past MAX_SESSION_HISTORY_CHARS, having read at most that much."""
    paths = [frame.prefix + agent.name for agent in frame.definition.all_agents() if agent.session_key == node.session_key]
    earlier = Step.objects.filter(
        run_id=step.run_id,
        agent__in=paths,
        status=StepStatus.SUCCEEDED,
        sequence__lt=step.sequence,
        session__has_key="prompt",
        session__key=node.session_key,
    )
    if frame.prefix:
        # A sub-workflow entered again starts afresh, as its outputs do (definition.frame_left).
        path, branch_index = entering_step(frame.caller)
        entries = Step.objects.filter(run_id=step.run_id, agent=path, sequence__lt=step.sequence)
        if branch_index is not None:
            entries = entries.filter(branch_index=branch_index)
        entered = entries.aggregate(entered=Max("sequence"))["entered"] or 0
        earlier = earlier.filter(sequence__gt=entered)
    exchanges, chars = [], 0
    rows = earlier.order_by("sequence").values_list("role", "output", "session").iterator(chunk_size=_CHUNK_ROWS)
    for role, output, session in rows:
        answer = answer_text(output["answer"] if role == MODEL_CALL_ROLE else output)
        chars += len(session["prompt"]) + len(answer)
        if chars > MAX_SESSION_HISTORY_CHARS:
            raise SessionTooLong(agent=node.name, key=node.session_key, chars=chars, limit=MAX_SESSION_HISTORY_CHARS)
        exchanges.append(SessionExchange(prompt=session["prompt"], answer=answer))
    return tuple(exchanges)


def session_kept(*, prepared: PreparedStep, role: str, output) -> dict | None:
    """What a step that succeeded keeps of the session its call continued (None for a call that
    continued none): its key and how many exchanges it replayed, and, when its output is its
    execution's answer, the prompt it was sent, which later calls replay."""
    if prepared.session is None or prepared.request is None:
        return None
    if role == MODEL_CALL_ROLE and "answer" not in output:
        return dict(prepared.session)  # it asked for tools: its loop goes on
    # As the database can store it, as a validator keeps the prompt it grades: a template may render a NUL.
    return {**prepared.session, "prompt": storable(prepared.request.prompt)}
