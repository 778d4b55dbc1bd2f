"""Preparing a step: the context its templates see, then what its kind prepares and estimates.

A step is prepared before the transaction that admits it (`renders.rendered_ahead`): rendering may
take a tenant's whole TEMPLATE_RENDER_SECONDS, which must never be spent holding locks.
"""

from decimal import ROUND_HALF_UP, Decimal

from workflows.definition import (
    MONEY_PLACES,
    AgentSpec,
    Frame,
    StepSpec,
    WorkflowDefinition,
    context_for_agent,
    frame_at,
    frame_inputs,
    frame_outputs,
    ran_just_before,
    dialog_guidance,
    template_context,
    validation_feedback,
)
from workflows.models import Run, Step, StepRole
from workflows.services.periods import period_window, team_period_spent
from workflows.services.steps.kinds import PreparedStep, group_kind_of, kind_for_step, kind_of
from workflows.services.steps.kinds.tools import loop_so_far
from workflows.services.steps.sessions import CALLING_ROLES, session_history

# The roles whose steps are prepared from what their agent's step recorded (`Step.validation`), not
# from the run's context: a validator's and a dialog evaluator's call, and a person's reply; and
# those prepared from their tool loop so far.
_READS_RECORDED = (StepRole.VALIDATOR, StepRole.DIALOG, StepRole.REPLY)
_IN_TOOL_LOOP = (StepRole.MODEL_CALL, StepRole.TOOL_CALL)


def step_prepare(
    *, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict, may_override_prices: bool
) -> PreparedStep:
    """Prepare the step as its kind says, in the context of the run so far (of its sub-workflow's
    entry, for a step inside one), and for a branch as its group's kind adds to it; a validator's step
    from what it grades, a dialog's evaluator and a person's reply from the output they read, a step
    of a tool loop from the loop so far, and an agent's re-run as the agent, told the validator's
    issues or the dialog's question and reply. A call of an agent with a session_key also replays
    its session's earlier exchanges (steps/sessions.py).
    Raises TemplateFailure (SessionTooLong among them)."""
    frame = frame_at(definition, step.agent)
    # A branch's group is in its agent's frame: its path is the frame's prefix and its name there. A
    # step of a branch's sub-workflow is in a frame of its own, which sees nothing of the group's.
    group_frame = frame_at(definition, step.group) if step.group else None
    group_name = group_frame.name if group_frame is not None and group_frame.prefix == frame.prefix else ""
    definition = frame.definition
    node = definition.node(frame.name)
    session = _session(step=step, frame=frame, node=node)
    if step.role in _READS_RECORDED or step.role in _IN_TOOL_LOOP:
        return kind_for_step(node, step.role).prepare(
            node=node,
            context=step.validation if step.role in _READS_RECORDED else loop_so_far(step, team_id=run.team_id) | session,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=run.provider_routes,
        )
    context = run_context(run=run, definition=definition, outputs=outputs, prefix=frame.prefix)
    branch = context
    if group_name:
        group = definition.group(group_name)
        branch = group_kind_of(group).branch_context(
            group=group, context=context, index=step.branch_index, key=step.branch_key
        )
    if isinstance(node, AgentSpec) and definition.context_mode != "accumulate":
        # The mode narrows what the run has to show; what the branch adds (its item) stays.
        seen = context_for_agent(
            context,
            mode=definition.context_mode,
            references=node.input,
            last=ran_just_before(definition, group_name or frame.name),
            where=f"agent '{node.name}' input",
        )
        context = {**seen, **{name: value for name, value in branch.items() if name not in context}}
    else:
        context = branch
    # A re-run renders over the outputs its agent's first run saw: the checkpoint holds no output of the
    # agent's yet (the run's progress and spend are as they are now).
    rerun = {"feedback": _rerun_feedback(step.validation)} if step.role == StepRole.RERUN else {}
    return kind_of(node).prepare(
        node=node,
        context=context,
        definition=definition,
        may_override_prices=may_override_prices,
        provider_routes=run.provider_routes,
        **rerun,
        **session,
    )


def _session(*, step: Step, frame: Frame, node: AgentSpec | StepSpec) -> dict:
    """`history`, the earlier exchanges of its session, for a step that calls a keyed agent's model
    with the agent's own prompt (its own step, a re-run, a model call of its tool loop); nothing for
    any other. Raises SessionTooLong."""
    if not isinstance(node, AgentSpec) or node.session_key is None or step.role not in CALLING_ROLES:
        return {}
    if step.role == "" and node.uses_tools:
        return {}  # its own step lists its tools; the model calls of its loop continue the session
    return {"history": session_history(step=step, frame=frame, node=node)}


def _rerun_feedback(given: dict) -> str:
    """What a re-run's prompt is appended: the validator's issues, or the dialog's question and reply."""
    if "issues" in given:
        return validation_feedback(given["issues"])
    return dialog_guidance(question=given["question"], reply=given["reply"])


def run_context(
    *,
    run: Run,
    definition: WorkflowDefinition,
    outputs: dict,
    settling: Decimal | None = None,
    counted: bool = True,
    prefix: str = "",
) -> dict:
    """What a run's templates see: its inputs, name, progress and outputs so far, and its budget when
    they read it. Inside a sub-workflow (`prefix` its path, `definition` its own), the inputs, name
    and outputs are the sub-workflow entry's; progress and budget stay the run's. `settling` renders
    ahead of a settlement not yet written: as the run will be once one more step has been charged
    that much, and, if it is `counted` toward max_iterations, executed."""
    iterations, spent = run.iterations, run.spent_usd
    if settling is not None:
        iterations += 1 if counted else 0
        spent = (spent + settling).quantize(MONEY_PLACES, ROUND_HALF_UP)  # as the database stores the sum
    frame = Frame(definition, prefix, "")
    return template_context(
        inputs=frame_inputs(outputs, frame, run.inputs),
        outputs=frame_outputs(outputs, prefix),
        groups=definition.group_names,
        workflow_name=definition.name,
        iteration=iterations,
        budget=budget_context(run=run, spent=spent, definition=definition) if definition.reads_budget else None,
    )


def budget_context(*, run: Run, spent: Decimal, definition: WorkflowDefinition) -> dict:
    """`budget.*`: the run's budget, spend and what is left of it (None without a budget, below zero
    once spend passed it), its mode, and, only for a definition that reads it, what is left of its
    team's period budget as the ledger holds it (None when the team has none)."""
    budget = {
        "budget_usd": run.budget_usd,
        "spent_usd": spent,
        "remaining_usd": None if run.budget_usd is None else run.budget_usd - spent,
        "mode": run.budget_mode,
        "team_remaining_usd": None,
    }
    team = run.team
    if definition.reads_team_budget and team.period_budget_usd is not None:
        spent_in_period = team_period_spent(team=team, window=period_window(team.period))
        budget["team_remaining_usd"] = team.period_budget_usd - spent_in_period
    return budget
