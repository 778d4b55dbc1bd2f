"""Where a run goes after a step: the routes of the agent or group that ended, entering the next one,
and the branches of a group, which are steps like any other, several in flight. What differs between
kinds of group (parallel, for_each) their kind says (`kinds.GroupKind`); the rest is here.

A branch is a chain of steps: its agent's own, then, for an agent with a validator, its validator's
and perhaps a re-run, each carrying the branch's group, entry (`iteration`), index and key. A branch
holds its group's slot until its chain ends, and has one step open at a time.

A step's sequence is one above the run's highest when it is created (`_sequence_next`): sequences
order a run's steps as they were created, whichever branch or chain they belong to.

Callers hold the run and step locks (`locks.lock_rows`). Whichever branch of a group ends
last sees so under the run's lock and ends the group: exactly one does.

A group inside a sub-workflow is named by its path (`research/reviews`), as its steps' `group`, its
result's key in the run's outputs and its event say; its frame (`frame_at`) gives what its entry
and its branches see, and its branches' agents are paths too.

A for_each group whose agent is a sub-workflow (`type: workflow`) makes each branch a frame of its
own (definition/subworkflows.py): the branch's first step, the workflow step, binds the inputs
under its caller (`replier[2]`), and each following step of the chain is a step of the branch's
sub-workflow (`replier[2]/drafter`), created as the one before it routes (`_branch_frame_go_on`,
the same `move_after` as any frame's, stopped at the branch's frame). When the sub-workflow ends,
its output becomes the workflow step's, which is the branch's output, and its frame's outputs are
dropped; a route that fails it fails the branch as a failed step would.
"""

from collections import Counter
from decimal import Decimal
from functools import partial

from django.db.models import Count, Max, Q
from django.utils import timezone

from workflows.definition import (
    SUBWORKFLOW_SEPARATOR,
    AfterStep,
    AgentSpec,
    CallModel,
    CallTool,
    Complete,
    Fail,
    ForEachSpec,
    Frame,
    GoTo,
    Move,
    Proceed,
    TemplateFailure,
    WorkflowDefinition,
    after_step,
    branch_caller_of,
    branch_frame_left,
    branch_frames_left,
    counts_as_iteration,
    fails_open,
    frame_at,
    frame_left,
    next_move,
)
from workflows.models import ACTIVE_RUN_STATUSES, EventType, Run, RunStatus, Step, StepRole, StepStatus, Team
from workflows.selectors import definition_of, latest_checkpoint
from workflows.services.budgets import release
from workflows.services.dispatch import step_schedule, step_send
from workflows.services.events import event_record
from workflows.services.ledger import branch_of
from workflows.services.renders import rendered
from workflows.services.gate import GateDecision
from workflows.services.run_state import checkpoint_record, run_complete, run_fail, run_stop
from workflows.services.steps.kinds import group_kind_of, kind_of
from workflows.services.steps.kinds.base import branches_ended
from workflows.services.steps.prepare import run_context
from workflows.services.steps.validation import validation_record, validation_step_enter


def run_advance(
    *,
    team: Team,
    run: Run,
    path: str,
    outputs: dict,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    """Take the routes of the agent, step or group at `path` that just ended: to the next step, or to
    the end."""
    move, prefix, outputs = move_after(run=run, definition=definition, path=path, outputs=outputs)
    if isinstance(move, Fail):
        checkpoint_record(run=run, reason="step_completed", outputs=outputs, next_step=None)
        run_fail(
            team=team, run=run, step=None, error={"type": move.error_type, "message": move.message}, output=move.output
        )
    elif isinstance(move, Complete):
        run_complete(run=run, output=move.output, outputs=outputs)
    else:
        step_enter(
            team=team,
            run=run,
            target=prefix + move.target,
            outputs=outputs,
            reason="step_completed",
            definition=definition,
            empty_groups=empty_groups,
        )


def move_after(
    *,
    run: Run,
    definition: WorkflowDefinition,
    path: str,
    outputs: dict,
    settling: Decimal | None = None,
    counted: bool = True,
    until: str = "",
) -> tuple[Move, str, dict]:
    """Where the run goes once the node at `path` ended, its output in `outputs`, as its kind says:
    the move, the path prefix of the sub-workflow its target is in, and the outputs as they then are.
    A sub-workflow that ends returns its output as its calling step's, whose routes are then taken,
    as many levels up as end at once, but never above the frame `until` (a for_each branch's, whose
    end its caller handles). Answered from what was rendered before the transaction when that still
    holds."""
    frame = frame_at(definition, path)
    source = frame.definition.group(frame.name) or frame.definition.node(frame.name)
    context = run_context(
        run=run, definition=frame.definition, outputs=outputs, settling=settling, counted=counted, prefix=frame.prefix
    )
    move = rendered(
        ("move", frame.path),
        context,
        partial(kind_of(source).route, definition=frame.definition, node=source, context=context),
    )
    while isinstance(move, Complete) and frame.prefix and frame.prefix != until:
        outputs = frame_left(outputs, frame, move.output)
        frame = frame_at(definition, frame.caller)
        caller = frame.definition.node(frame.name)
        context = run_context(
            run=run, definition=frame.definition, outputs=outputs, settling=settling, counted=counted, prefix=frame.prefix
        )
        # The calling step's own routes: its kind's route is the way into the sub-workflow.
        move = rendered(("return", frame.path), context, partial(next_move, frame.definition, caller, context))
    return move, frame.prefix, outputs


def step_enter(
    *,
    team: Team,
    run: Run,
    target: str,
    outputs: dict,
    reason: str,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    """Create and send the step of an agent, or the branches of a group, with a checkpoint that
    points at the first. A branch beyond its group's slots waits for a free one."""
    group = definition.group(target)
    if run.current_agent != target:  # a run starts with its entry point there already
        run.current_agent = target
        run.save(update_fields=["current_agent", "updated_at"])
    if group is None:
        # The agent's reach counts its own earlier steps (not its validator's or a re-run).
        sequence, found = _sequence_next(run, reached=Count("pk", filter=Q(agent=target, role="")))
        step = Step.objects.create(
            run=run, sequence=sequence, agent=target, iteration=found["reached"] + 1, enqueued_at=timezone.now()
        )
        checkpoint_record(run=run, reason=reason, outputs=outputs, next_step=step)
        step_send(step.pk)
        return

    kind = group_kind_of(group)
    frame = frame_at(definition, target)
    context = run_context(run=run, definition=frame.definition, outputs=outputs, prefix=frame.prefix)
    try:
        count = kind.branch_count(group=group, context=context, entering=True)
    except TemplateFailure as exc:
        checkpoint_record(run=run, reason=reason, outputs=outputs, next_step=None)
        run_fail(team=team, run=run, step=None, error={"type": kind.entry_error_type, "message": str(exc)})
        return
    if not count:
        # Nothing to run: the group ends at once, and conductor's empty result goes on to its routes.
        if empty_groups >= run.max_iterations:
            checkpoint_record(run=run, reason=reason, outputs=outputs, next_step=None)
            message = f"Groups with nothing to run routed to each other {empty_groups} times without a step."
            run_fail(team=team, run=run, step=None, error={"type": "RouteError", "message": message})
            return
        _group_done(
            team=team,
            run=run,
            frame=frame,
            result=kind.result(group=group, ended=[]),
            outputs=outputs,
            definition=definition,
            empty_groups=empty_groups + 1,
        )
        return

    # Only the branches that have a slot are created now; `_send_waiting` creates each later one
    # when a slot frees, so a long for_each is never thousands of rows written at once.
    first_sequence, found = _sequence_next(run, entries=Max("iteration", filter=Q(group=target)))
    steps = _branches_create(
        run=run,
        frame=frame,
        iteration=(found["entries"] or 0) + 1,
        first_sequence=first_sequence,
        indexes=range(min(count, kind.slots(group=group))),
    )
    checkpoint_record(run=run, reason=reason, outputs=outputs, next_step=steps[0])
    if kind.refused_whole_past_max_iterations and run.iterations + count > run.max_iterations:
        # Its branches are blocked where they stand, and a resume with room runs them.
        message = (
            f"The group '{target}' would run {count} steps after the {run.iterations} executed; "
            f"max_iterations is {run.max_iterations}."
        )
        decision = GateDecision(stop=RunStatus.ITERATION_LIMIT, message=message)
        run_stop(team=team, run=run, step=steps[0], decision=decision, outputs=outputs)


def step_succeeded(*, team: Team, run: Run, step: Step, output: dict, prompt: str = "") -> None:
    """What follows a step that succeeded: its agent's validator grades the output (against `prompt`,
    what the agent was asked), its group goes on, or its agent's routes are taken. A stopped run's
    group goes on only when the run is resumed; a cancelled run keeps the output."""
    definition = definition_of(run.workflow_version)
    move = _after(definition, step, output=output)
    if step.group:
        _branch_go_on(team=team, run=run, step=step, move=move, prompt=prompt)
        return
    if run.status == RunStatus.CANCELLED:
        # A step of a tool loop that has not answered yet leaves its agent without an output.
        answered = not isinstance(move, CallModel | CallTool)
        outputs = {**run.latest_outputs, step.agent: move.output} if answered else run.latest_outputs
        checkpoint_record(run=run, reason="step_completed", outputs=outputs, next_step=None)
        return
    _go_on(team=team, run=run, step=step, move=move, definition=definition, prompt=prompt)


def step_failed(*, team: Team, run: Run, step: Step, error: dict) -> None:
    """A step failed. A plain step, or a branch under fail_fast, fails the run; any other branch
    is recorded as failed and its group goes on, its failure mode judging it when it ends. A
    validator's step or a re-run that fails leaves the graded output standing, as in conductor: it
    fails neither its run nor its branch. A step of a tool loop fails as its agent's own would."""
    if fails_open(step.role):
        _failed_step_record(run=run, step=step, error=error)
        definition = definition_of(run.workflow_version)
        move = _after(definition, step, failed=True)
        if step.group:
            _branch_go_on(team=team, run=run, step=step, move=move, error=error)
        else:
            _go_on(team=team, run=run, step=step, move=move, definition=definition, error=error)
        return
    if not step.group:
        run_fail(team=team, run=run, step=step, error=error, outputs=run.latest_outputs)
        return
    definition = definition_of(run.workflow_version)
    if run.status in ACTIVE_RUN_STATUSES and definition.group(step.group).failure_mode == "fail_fast":
        run_fail(team=team, run=run, step=step, error={**error, **branch_of(step)}, outputs=run.latest_outputs)
        return
    _failed_step_record(run=run, step=step, error=error)
    if run.status in ACTIVE_RUN_STATUSES:
        group_continue(team=team, run=run, step=step)


def _failed_step_record(*, run: Run, step: Step, error: dict) -> None:
    """A step that failed without failing its run: its reservation released, its error kept."""
    release(run=run, step=step)
    step.status = StepStatus.FAILED
    step.error = error
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])


def _after(definition: WorkflowDefinition, step: Step, *, output=None, failed: bool = False) -> AfterStep | None:
    """What follows a step, a branch's too (definition/validation.py)."""
    node = definition.node(step.agent)
    validator = node.validator if isinstance(node, AgentSpec) else None
    dialog = node.dialog if isinstance(node, AgentSpec) else None
    return after_step(
        validator=validator,
        role=step.role,
        given=step.validation,
        output=output,
        failed=failed,
        dialog=dialog,
        tools=isinstance(node, AgentSpec) and node.uses_tools,
    )


def _go_on(
    *,
    team: Team,
    run: Run,
    step: Step,
    move: AfterStep,
    definition: WorkflowDefinition,
    prompt: str = "",
    error: dict | None = None,
) -> None:
    """Take `move` after a step outside any group: its validator's or dialog's next step, or its routes."""
    validation_record(run=run, step=step, move=move, error=error)
    if not isinstance(move, Proceed):
        validation_step_enter(run=run, step=step, move=move, sequence=_sequence_next(run)[0], prompt=prompt)
        return
    run_advance(
        team=team,
        run=run,
        path=step.agent,
        outputs={**run.latest_outputs, step.agent: move.output},
        definition=definition,
    )


def _branch_go_on(
    *, team: Team, run: Run, step: Step, move: AfterStep, prompt: str = "", error: dict | None = None
) -> None:
    """Take `move` after a step of a branch: its validator's step or a re-run follows in the branch,
    or the branch ended and its group goes on; its output joins the group's result when the group
    ends (`branches_ended`). A branch that ends in a stopped run waits for a resume to go on, and
    a step that follows it there is blocked as the group's unstarted branches are."""
    if run.status == RunStatus.CANCELLED:
        return
    validation_record(run=run, step=step, move=move, error=error)
    definition = definition_of(run.workflow_version)
    if not isinstance(move, Proceed):
        validation_step_enter(
            run=run,
            step=step,
            move=move,
            sequence=_sequence_next(run)[0],
            prompt=prompt,
            blocked=run.status not in ACTIVE_RUN_STATUSES,
        )
    elif (caller := branch_caller_of(definition, step.group, step.branch_index)) is not None:
        _branch_frame_go_on(team=team, run=run, step=step, output=move.output, caller=caller, definition=definition)
    elif run.status in ACTIVE_RUN_STATUSES:
        group_continue(team=team, run=run, step=step)


def _branch_frame_go_on(
    *, team: Team, run: Run, step: Step, output, caller: str, definition: WorkflowDefinition
) -> None:
    """A step of a branch that runs a sub-workflow (its caller `caller`) succeeded with `output`: the
    branch's next step in its frame (blocked when the run stopped meanwhile), or, the sub-workflow
    having ended, the branch's end: its output on its workflow step, its frame's outputs dropped,
    and its group goes on. A route that fails the sub-workflow fails the branch."""
    move, prefix, outputs = _branch_move(
        run=run, definition=definition, step=step, caller=caller, outputs=run.latest_outputs, output=output
    )
    active = run.status in ACTIVE_RUN_STATUSES
    if isinstance(move, GoTo):
        following = Step.objects.create(
            run=run,
            sequence=_sequence_next(run)[0],
            agent=prefix + move.target,
            iteration=step.iteration,
            group=step.group,
            branch_index=step.branch_index,
            branch_key=step.branch_key,
            status=StepStatus.PENDING if active else StepStatus.BLOCKED,
            enqueued_at=timezone.now() if active else None,
        )
        _branch_checkpoint(run=run, outputs=outputs, next_step=following)
        if active:
            step_send(following.pk)
        return
    first = group_branches(run=run, step=step).filter(branch_index=step.branch_index).order_by("sequence").first()
    if isinstance(move, Complete):
        first.output = move.output
        first.save(update_fields=["output"])
    else:  # the workflow step fails: a resume that runs it again enters its sub-workflow afresh
        error = {"type": move.error_type, "message": move.message}
        _failed_step_record(run=run, step=first, error=error)
        if active and definition.group(step.group).failure_mode == "fail_fast":
            outputs = branch_frame_left(outputs, caller)
            error = {**error, **branch_of(step)}
            run_fail(team=team, run=run, step=first, error=error, outputs=outputs, output=move.output)
            return
    _branch_checkpoint(run=run, outputs=branch_frame_left(outputs, caller), next_step=None)
    if active:
        group_continue(team=team, run=run, step=step)


def _branch_move(
    *,
    run: Run,
    definition: WorkflowDefinition,
    step: Step,
    caller: str,
    outputs: dict,
    output,
    settling: Decimal | None = None,
    counted: bool = True,
) -> tuple[Move, str, dict]:
    """Where the branch whose sub-workflow `caller` calls goes after its `step` succeeded with
    `output`, as `move_after` says: from its workflow step into its sub-workflow's entry point, and
    from a step inside it by that step's routes, up to the end of the branch's frame (a `Complete`
    whose prefix is the frame's)."""
    prefix = caller + SUBWORKFLOW_SEPARATOR
    if not step.agent.startswith(prefix):  # the workflow step: what it bound is the frame's inputs
        frame = frame_at(definition, step.agent)
        return GoTo(frame.definition.subworkflows[frame.name].entry_point), prefix, {**outputs, caller: output}
    outputs = {**outputs, step.agent: output}
    return move_after(
        run=run, definition=definition, path=step.agent, outputs=outputs, settling=settling, counted=counted, until=prefix
    )


def _branch_checkpoint(*, run: Run, outputs: dict, next_step: Step | None) -> None:
    """The outputs of a branch's sub-workflow changed: recorded, pointing at `next_step`, else at what
    the run's latest checkpoint points at (the step a stopped run resumes from)."""
    if next_step is None:
        next_step = latest_checkpoint(run=run).next_step
    checkpoint_record(run=run, reason="step_completed", outputs=outputs, next_step=next_step)
    run.latest_outputs = outputs


def group_continue(*, team: Team, run: Run, step: Step) -> None:
    """A branch ended in an active run: send a waiting branch into the freed slot, or, when it was
    the last, end the group. Callers hold the run row lock, so of two branches ending at once on
    two workers, exactly one sees the other ended and ends the group."""
    definition = definition_of(run.workflow_version)
    frame = frame_at(definition, step.group)
    group = frame.definition.group(frame.name)
    branches = group_branches(run=run, step=step)
    if _send_waiting(run=run, frame=frame, branches=branches, iteration=step.iteration):
        return
    ended = branches_ended(list(branches))
    failed = [branch for branch in ended if branch.status == StepStatus.FAILED]
    result = group_kind_of(group).result(group=group, ended=ended)
    succeeded = len(ended) - len(failed)
    if failed and (group.failure_mode != "continue_on_error" or not succeeded):
        rule = "every branch must succeed" if group.failure_mode != "continue_on_error" else "no branch succeeded"
        error = {
            "type": "GroupFailedError",
            "message": f"Group '{frame.path}' failed ({group.failure_mode}: {rule}): "
            f"{succeeded} succeeded, {len(failed)} failed.",
            "group": frame.path,
            "errors": result["errors"],
        }
        checkpoint_record(run=run, reason="failed", outputs=run.latest_outputs, next_step=failed[0].step)
        run_fail(team=team, run=run, step=None, error=error)
        return
    _group_done(
        team=team,
        run=run,
        frame=frame,
        result=result,
        outputs=run.latest_outputs,
        definition=definition,
    )


def steps_reopen(*, run: Run, step: Step, failed_too: bool) -> None:
    """Resume: send the step the checkpoint points at again. For a branch, also every step of its
    group that a stop kept from running, and with `failed_too` the branches that failed (the steps
    that failed their agents, their own or their tool loops': a validator's or a re-run's failure
    went on with the graded output);
    branches that succeeded keep their outputs."""
    if not step.group:
        step.status = StepStatus.PENDING
        step.error = None
        step.redeliveries = 0
        step.provider_retries = 0
        step.save(update_fields=["status", "error", "redeliveries", "provider_retries"])
        step_schedule(step)
        return
    branches = group_branches(run=run, step=step)
    fresh = {"status": StepStatus.WAITING, "error": None, "redeliveries": 0, "provider_retries": 0}
    branches.filter(pk=step.pk).update(**fresh)
    failed = Q(status=StepStatus.FAILED, role__in=AGENT_FAILING_ROLES)
    reopened = Q(status=StepStatus.BLOCKED) | failed if failed_too else Q(status=StepStatus.BLOCKED)
    branches.filter(reopened).update(**fresh)
    _send_waiting(
        run=run, frame=frame_at(definition_of(run.workflow_version), step.group), branches=branches, iteration=step.iteration
    )


def prerender_ending(
    *, run: Run, step: Step, output: dict | None = None, error: dict | None = None, charge: Decimal = Decimal("0")
) -> None:
    """What the transaction that ends `step` (with `output` and `charge` to its run, or failed with
    `error`) will render: the routes of its agent and the run's output, or, when it ends the last of
    its group's branches to end (its chain's last step), those of its group. Reads without locks;
    renders only."""
    if run.status not in ACTIVE_RUN_STATUSES:
        return
    definition = definition_of(run.workflow_version)
    outputs = run.latest_outputs or {}
    # The transaction that routes after a step charges its call, a failed one's billed usage too (a
    # branch's, or a validator's step's or a re-run's, whose failure routes on); only a step that
    # succeeded counts as executed.
    counted = error is None and counts_as_iteration(step.role)
    if not step.group:
        move = _after(definition, step, output=output, failed=error is not None)
        if not isinstance(move, Proceed):
            return  # the step fails its run, or a validator's or dialog's step follows: nothing is rendered
        path = step.agent
        outputs = {**outputs, step.agent: move.output}
    else:
        move = _after(definition, step, output=output, failed=error is not None)
        if move is not None and not isinstance(move, Proceed):
            return  # a validator's step or a re-run follows in the branch: nothing is rendered
        caller = branch_caller_of(definition, step.group, step.branch_index)
        ended = None  # how a branch's sub-workflow ended with this step, if it did
        if caller is not None and error is None:
            ended, prefix, _ = _branch_move(
                run=run,
                definition=definition,
                step=step,
                caller=caller,
                outputs=outputs,
                output=move.output,
                settling=charge,
                counted=counted,
            )
            if isinstance(ended, GoTo) or (isinstance(ended, Complete) and prefix != caller + SUBWORKFLOW_SEPARATOR):
                return  # the branch goes on in its sub-workflow: its routes were rendered
        steps = list(group_branches(run=run, step=step))
        first = min((each for each in steps if each.branch_index == step.branch_index), key=lambda each: each.sequence)
        for each in steps:
            if each.pk == step.pk:
                each.status = StepStatus.FAILED if error is not None else StepStatus.SUCCEEDED
                each.output, each.error = output, error
        if isinstance(ended, Complete):
            first.output = ended.output
        elif isinstance(ended, Fail):
            first.status, first.error = StepStatus.FAILED, {"type": ended.error_type, "message": ended.message}
        frame = frame_at(definition, step.group)
        source = frame.definition.group(frame.name)
        created = len({each.branch_index for each in steps})
        unborn = created < _branch_count(run=run, frame=frame)
        if unborn or any(each.status in _UNENDED_BRANCH for each in steps):
            return
        outputs = {**outputs, frame.path: group_kind_of(source).result(group=source, ended=branches_ended(steps))}
        path = frame.path
    move_after(run=run, definition=definition, path=path, outputs=outputs, settling=charge, counted=counted)


_UNENDED_BRANCH = (StepStatus.WAITING, StepStatus.PENDING, StepStatus.RUNNING)
# The roles of the steps whose failure fails their agent (fails_open): its own, and its tool loop's.
AGENT_FAILING_ROLES = ("", StepRole.MODEL_CALL, StepRole.TOOL_CALL)


def group_branches(*, run: Run, step: Step):
    """The steps of the branches of the group `step` belongs to, in this entry of the group."""
    return run.steps.filter(group=step.group, iteration=step.iteration)


def _group_done(
    *,
    team: Team,
    run: Run,
    frame: Frame,
    result: dict,
    outputs: dict,
    definition: WorkflowDefinition,
    empty_groups: int = 0,
) -> None:
    """The group at `frame` ended with `result`: recorded under its path, then its routes taken. The
    frames its branches' sub-workflows left (a failed one's) go."""
    group = frame.definition.group(frame.name)
    if isinstance(group, ForEachSpec) and group.agent.name in frame.definition.group_steps:
        outputs = branch_frames_left(outputs, frame.prefix + group.agent.name)
    event_record(
        run=run,
        type=EventType.GROUP_COMPLETED,
        payload={"group": frame.path, "succeeded": len(result["outputs"]), "failed": len(result["errors"])},
    )
    run_advance(
        team=team,
        run=run,
        path=frame.path,
        outputs={**outputs, frame.path: result},
        definition=definition,
        empty_groups=empty_groups,
    )


def _send_waiting(*, run: Run, frame: Frame, branches, iteration: int) -> bool:
    """Fill the free slots of the entry `iteration` of the group at `frame` (its steps `branches`):
    first with its waiting steps (reopened by a resume), then with branches of items that have none
    yet. A branch has one step open at a time, so open steps count branches. Whether any branch is
    still to end."""
    rows = list(branches.values_list("status", "branch_index"))
    statuses = Counter(status for status, _ in rows)
    in_flight = statuses[StepStatus.PENDING] + statuses[StepStatus.RUNNING]
    group = frame.definition.group(frame.name)
    free = group_kind_of(group).slots(group=group) - in_flight
    if statuses[StepStatus.WAITING] and free > 0:
        for waiting in branches.filter(status=StepStatus.WAITING).order_by("branch_index")[:free]:
            waiting.status = StepStatus.PENDING
            waiting.enqueued_at = timezone.now()
            waiting.save(update_fields=["status", "enqueued_at"])
            step_send(waiting.pk)
            free -= 1
    created = len({index for _, index in rows})  # branches are created in index order
    unborn = _branch_count(run=run, frame=frame) - created
    if unborn > 0 and free > 0:
        _branches_create(
            run=run,
            frame=frame,
            iteration=iteration,
            first_sequence=_sequence_next(run)[0],
            indexes=range(created, created + min(free, unborn)),
        )
    return bool(in_flight or statuses[StepStatus.WAITING] or unborn > 0)


def _branch_count(*, run: Run, frame: Frame) -> int:
    """How many branches the current entry of the group at `frame` has in all, created or not, asked
    in its frame's context of the outputs it was entered with, which its checkpoints keep."""
    group = frame.definition.group(frame.name)
    context = run_context(run=run, definition=frame.definition, outputs=run.latest_outputs or {}, prefix=frame.prefix)
    return group_kind_of(group).branch_count(group=group, context=context)


def _branches_create(*, run: Run, frame: Frame, iteration: int, first_sequence: int, indexes: range) -> list[Step]:
    """Create and send the branches at `indexes` of the entry `iteration` of the group at `frame`, in
    index order from `first_sequence`, the run's next."""
    group = frame.definition.group(frame.name)
    kind = group_kind_of(group)
    now = timezone.now()
    branches = {index: kind.branch(group=group, index=index, prefix=frame.prefix) for index in indexes}
    steps = Step.objects.bulk_create(
        Step(
            run=run,
            sequence=first_sequence + offset,
            agent=agent,
            iteration=iteration,
            group=frame.path,
            branch_index=index,
            branch_key=key,
            status=StepStatus.PENDING,
            enqueued_at=now,
        )
        for offset, (index, (agent, key)) in enumerate(branches.items())
    )
    for step in steps:
        step_send(step.pk)
    return steps


def _sequence_next(run: Run, **aggregates) -> tuple[int, dict]:
    """The sequence of the run's next step, one above its highest, and `aggregates` over the run's
    steps, read in the same statement. Callers hold the run's lock, which serialises the steps a
    run creates."""
    found = run.steps.aggregate(highest=Max("sequence"), **aggregates)
    return (found.pop("highest") or 0) + 1, found

