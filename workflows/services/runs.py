"""Starting, resuming and cancelling runs. Each `check_*` validates without writing; each public
service then does its writes in one transaction and enqueues work only once that commits."""

from collections.abc import Mapping
from dataclasses import asdict
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from workflows.definition import (
    SUBWORKFLOW_SEPARATOR,
    AgentSpec,
    ResolvedLimits,
    StepSpec,
    always_run_before,
    TemplateFailure,
    WorkflowDefinition,
    check_inputs,
    forwarded_input_problems,
    frame_at,
    check_limits,
    counts_as_iteration,
    render_budget,
    resolve_limits,
    resolve_reference,
    step_of_caller,
    template_context,
)
from workflows.definition import subworkflows
from workflows.errors import InvalidRunState, UnpricedModel, ValidationFailed, problems_as_details
from workflows.models import (
    FINAL_RUN_STATUSES,
    RESUMABLE_RUN_STATUSES,
    ApiKey,
    BudgetMode,
    EventType,
    Run,
    RunStatus,
    Step,
    StepRole,
    StepStatus,
    Team,
    Workflow,
    WorkflowVersion,
)
from workflows.selectors import definition_of, latest_checkpoint, workflow_version_get
from workflows.services.credentials import check_credentials, check_endpoints
from workflows.services.events import event_record, usd
from workflows.services.gate import gate_decide
from workflows.services.provider_routes import provider_routes_of, run_backends
from workflows.services.prices import prices_for
from workflows.services.renders import rendered_ahead
from workflows.services.budgets import gate_input
from workflows.services.locks import lock_rows
from workflows.services.run_state import run_ended
from workflows.services.steps import step_enter, step_prepare, steps_reopen
from workflows.services.steps.kinds import group_kind_of
from workflows.services.teams import budget_changes_record
from workflows.services.workflows import refused_step_kinds


def actor_of(api_key: ApiKey | None) -> str:
    return f"api_key:{api_key.prefix}" if api_key else "system"


def check_limit_overrides(limits: Mapping | None, *, path: str) -> dict:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise ValidationFailed("limits must be an object.", details=[{"path": path, "message": "must be an object"}])
    clean, problems = check_limits(limits, path=path)
    if problems:
        raise ValidationFailed("The limits are invalid.", details=problems_as_details(problems))
    return clean


def check_models_priced(
    *, definition: WorkflowDefinition, team: Team, budget_usd: Decimal | None, budget_mode: str
) -> None:
    """Under an enforce budget, the run's or its team's, every model must have a price: no price must
    never switch a budget off."""
    if not (budget_usd is not None and budget_mode == BudgetMode.ENFORCE) and not team.enforces_period_budget:
        return
    unpriced = sorted(
        {
            model
            for workflow in definition.nested()  # a sub-workflow's calls are priced as it prices them
            for model, provider in workflow.model_calls()
            if prices_for(
                model=model, pricing=workflow.pricing, provider=provider, may_override_prices=team.may_override_prices
            )[0]
            is None
        }
    )
    if unpriced:
        names = ", ".join(f"'{model}'" for model in unpriced)
        raise UnpricedModel(
            f"Model {names} has no price, so an enforce budget cannot be kept. Add it to the workflow's "
            "cost.pricing or the price table, or run in audit mode.",
            details={"models": unpriced},
        )


def check_step_kinds_allowed(*, definition: WorkflowDefinition, team: Team) -> None:
    """Refuse a run of a version uploaded when its kinds of step were allowed and no longer are (an
    operator turned scripts off), before any of its steps is paid for."""
    refused = refused_step_kinds(team=team)
    used = {step.kind for workflow in definition.nested() for step in workflow.all_steps()}
    if kinds := sorted(used & set(refused)):
        raise ValidationFailed(
            f"The workflow has {kinds[0]} steps: {refused[kinds[0]]}.",
            details=[{"path": "workflow", "message": refused[kind]} for kind in kinds],
        )


def check_for_each_inputs(*, definition: WorkflowDefinition, inputs: Mapping) -> None:
    """A for_each group whose source is an input is refused at once when that input holds more than
    FOR_EACH_MAX_ITEMS items, before the run spends anything on the steps before the group; so is one
    in a sub-workflow its step forwards the run's inputs to."""
    limit = settings.FOR_EACH_MAX_ITEMS
    context = template_context(inputs=inputs, outputs={})
    for prefix, frame in subworkflows.run_input_frames(definition):
        for group in frame.for_each.values():
            if not group.source.startswith("workflow.input."):
                continue
            try:
                items = resolve_reference(group.source, context, where=group.name)
            except TemplateFailure:
                continue  # judged when the group is entered, as any source
            if isinstance(items, list) and len(items) > limit:
                path = "inputs." + group.source.removeprefix("workflow.input.")
                raise ValidationFailed(
                    f"for_each '{prefix}{group.name}' would run over {len(items):,} items; the limit is {limit:,}.",
                    details=[{"path": path, "message": f"more than {limit:,} items (FOR_EACH_MAX_ITEMS)"}],
                )


def run_start(
    *,
    team: Team,
    workflow: int | str,
    version: int | None = None,
    inputs: Mapping | None = None,
    limits: Mapping | None = None,
    started_by: ApiKey | None = None,
) -> Run:
    workflow_version = workflow_version_get(team=team, workflow=workflow, version=version)
    definition = definition_of(workflow_version)
    requested = check_limit_overrides(limits, path="limits")
    if inputs is not None and not isinstance(inputs, Mapping):
        raise ValidationFailed("inputs must be an object.", details=[{"path": "inputs", "message": "must be an object"}])
    clean_inputs, problems = check_inputs(definition.inputs, inputs or {}, read=definition.reads_inputs)
    problems += forwarded_input_problems(definition, clean_inputs)
    if problems:
        raise ValidationFailed("The run's inputs are invalid.", details=problems_as_details(problems))
    check_for_each_inputs(definition=definition, inputs=clean_inputs)
    setting = workflow_version.workflow.limit_setting()
    resolved = _resolved_limits(definition=definition, team=team, requested=requested, setting=setting)
    check_step_kinds_allowed(definition=definition, team=team)
    backends = run_backends(providers=definition.providers(), routes=provider_routes_of(team=team))
    check_credentials(team=team, providers=backends.values())
    check_endpoints(team=team, definition=definition, backends=backends)

    now = timezone.now()
    # An entry point that is a group with nothing to run goes on to its routes at once, rendered in
    # this transaction: one budget bounds them all, however many empty groups route to each other.
    with render_budget(), transaction.atomic(durable=True):
        # The workflow's row lock, first (workflow -> team -> run -> step), orders this start after a change
        # of the operator's budget committed before it (workflow_budgets takes the same lock): a run
        # created after the change gets it, not the setting read above.
        current = (
            Workflow.objects.select_for_update(no_key=True)
            .only("budget_usd", "budget_mode")
            .get(pk=workflow_version.workflow_id)
            .limit_setting()
        )
        if current != setting:
            resolved = _resolved_limits(definition=definition, team=team, requested=requested, setting=current)
        run = Run.objects.create(
            team=team,
            workflow_version=workflow_version,
            inputs=clean_inputs,
            status=RunStatus.QUEUED,
            current_agent=definition.entry_point,
            active_since=now,
            provider_routes=backends,
            **_limit_fields(resolved),
        )
        event_record(
            run=run,
            type=EventType.RUN_STARTED,
            payload={"limits": _limits_payload(run), "limit_sources": resolved.sources},
            actor=actor_of(started_by),
        )
        # The entry point's step, or its group's branches, with the "started" checkpoint.
        step_enter(
            team=team,
            run=run,
            target=definition.entry_point,
            outputs={},
            reason="started",
            definition=definition,
        )
    return run


def _resolved_limits(*, definition: WorkflowDefinition, team: Team, requested: dict, setting: dict) -> ResolvedLimits:
    """A new run's limits under the workflow's `setting`; UnpricedModel if they enforce a budget over an
    unpriced model."""
    resolved = resolve_limits(
        run=requested, workflow_setting=setting, workflow=asdict(definition.limits), team=team.limit_defaults()
    )
    check_models_priced(
        definition=definition, team=team, budget_usd=resolved.budget_usd, budget_mode=resolved.budget_mode
    )
    return resolved


def check_run_resumable(*, run: Run, team: Team, new_limits: dict) -> Step:
    """The step a resume would run, or InvalidRunState saying why the run cannot make progress."""
    if run.status not in RESUMABLE_RUN_STATUSES:
        raise InvalidRunState(
            f"Cannot resume a run that is in '{run.status}' status.", details={"status": run.status}
        )
    checkpoint = latest_checkpoint(run=run)
    step = checkpoint.next_step if checkpoint else None
    if step is None or step.status not in (StepStatus.BLOCKED, StepStatus.FAILED):
        raise InvalidRunState(
            "The run has no step to continue from.", details={"status": run.status}
        )
    definition = definition_of(run.workflow_version)
    check_step_kinds_allowed(definition=definition, team=team)
    check_models_priced(
        definition=definition, team=team, budget_usd=new_limits["budget_usd"], budget_mode=new_limits["budget_mode"]
    )
    try:
        prepared = step_prepare(
            run=run,
            step=step,
            definition=definition,
            outputs=checkpoint.outputs,
            may_override_prices=team.may_override_prices,
        )
    except TemplateFailure as exc:
        raise InvalidRunState(f"The next step cannot be prepared: {exc}", details={"agent": step.agent}) from exc
    trial = Run(**{**_run_counters(run), **new_limits})
    decision = gate_decide(
        gate_input(run=trial, team=team, estimate=prepared.estimate_usd, counted=counts_as_iteration(step.role))
    )
    if not decision.admitted:
        details = {"status": decision.stop, "current_agent": step.agent, "limits": _limits_payload(trial)}
        if decision.stopped_by is not None:
            details.update(
                scope=decision.stopped_by.scope,
                projected_usd=usd(decision.stopped_by.projected_usd),
                spent_usd=usd(decision.stopped_by.spent_usd),
            )
        raise InvalidRunState(f"Resuming would stop again at once: {decision.message}", details=details)
    group = definition.group(step.group) if step.group else None
    if group is not None and group_kind_of(group).refused_whole_past_max_iterations:
        # Such a group runs whole or not at all, on a resume too.
        reopened = [StepStatus.BLOCKED, StepStatus.PENDING, StepStatus.WAITING]
        reopened += [StepStatus.FAILED] if run.status == RunStatus.FAILED else []
        # Branches only: a validator's call or a re-run is not counted.
        left = run.steps.filter(group=step.group, iteration=step.iteration, status__in=reopened, role="").count()
        if trial.iterations + left > trial.max_iterations:
            raise InvalidRunState(
                f"Resuming would stop again at once: the group '{step.group}' would run {left} steps after the "
                f"{trial.iterations} executed; max_iterations is {trial.max_iterations}.",
                details={"status": RunStatus.ITERATION_LIMIT, "current_agent": step.group, "limits": _limits_payload(trial)},
            )
    return step


def check_version_replaces(*, run: Run, version: WorkflowVersion) -> dict[str, str]:
    """The provider backends a run would have on `version`, another version of its workflow that a
    resume moves it to. ValidationFailed unless every agent, step and group the run has run or stopped
    at is there as it was (kind, a group's agents, an agent's output schema), whatever the new version
    always runs before the step the run goes on from has run, and the run's inputs fit it: completed
    steps are never run again, so what later steps read of them must hold."""
    if version.workflow_id != run.workflow_version.workflow_id:
        raise ValidationFailed(
            "A run can move only to another version of its own workflow.",
            details=[{"path": "workflow_version", "message": "not a version of the run's workflow"}],
        )
    written, definition = definition_of(run.workflow_version), definition_of(version)
    problems = set()
    for agent, group in run.steps.values_list("agent", "group").distinct():
        if group:
            kept = definition.group(group)
            if kept is None or kept.kind != written.group(group).kind or _members(kept) != _members(written.group(group)):
                problems.add(f"'{group}' (with its agents as they were)")
            elif not _kept_as_it_was(agent, written=written, definition=definition):
                problems.add(f"'{agent}'")
            elif not _output_kept(agent, written=written, definition=definition):
                problems.add(f"'{agent}' with its output as it was")
        elif not _kept_as_it_was(agent, written=written, definition=definition):
            problems.add(f"'{agent}'")
        elif not _output_kept(agent, written=written, definition=definition):
            problems.add(f"'{agent}' with its output as it was")
    checkpoint = latest_checkpoint(run=run)
    if not problems and checkpoint is not None and checkpoint.next_step is not None:
        # What the new version runs before the step the run goes on from, on every way there, it must have run.
        resume_point = checkpoint.next_step.group or checkpoint.next_step.agent
        unrun = _always_run_before(definition, resume_point) - set(checkpoint.outputs)
        problems.update(f"'{name}' run before '{resume_point}' (the run has not run it)" for name in unrun)
        problems.update(_open_frame_problems(definition, resume_point, checkpoint.outputs))
        for agent in _open_branch_frames(run):
            problems.update(_open_frame_problems(definition, agent, checkpoint.outputs))
        problems.update(_open_review_problems(run, definition, written=written, resume_step=checkpoint.next_step))
    if problems:
        raise ValidationFailed(
            f"Version {version.version} lacks what the run has run: {', '.join(sorted(problems))}.",
            details=[{"path": "workflow_version", "message": f"lacks {problem}"} for problem in sorted(problems)],
        )
    _, input_problems = check_inputs(definition.inputs, run.inputs, read=definition.reads_inputs)
    if input_problems:
        raise ValidationFailed(
            f"The run's inputs do not fit version {version.version}.", details=problems_as_details(input_problems)
        )
    # A provider the run has used keeps its backend; one new to it is routed as a new run's would be.
    providers = definition.providers()
    used = {name: backend for name, backend in run.provider_routes.items() if name in providers}
    backends = {**used, **run_backends(providers=providers - set(used), routes=provider_routes_of(team=run.team))}
    check_credentials(team=run.team, providers=backends.values())
    check_endpoints(team=run.team, definition=definition, backends=backends)
    return backends


def _members(group) -> set[str]:
    """The agents a group's branches run."""
    return {group.agent.name} if group.kind == "for_each" else set(group.agents)


def _output_kept(path: str, *, written: WorkflowDefinition, definition: WorkflowDefinition) -> bool:
    """Whether what later steps of `definition` may read of the output `path` gave under `written` is
    there: an agent's output schema as it was; a sub-workflow's output with no field it lacked."""
    was, now = written.node(path), definition.node(path)
    if isinstance(was, AgentSpec):
        return now.output == was.output
    if was.kind == subworkflows.KIND:
        caller = frame_at(written, path)
        new_caller = frame_at(definition, path)
        return subworkflows.output_fields(new_caller.definition.subworkflows[new_caller.name]) <= (
            subworkflows.output_fields(caller.definition.subworkflows[caller.name])
        )
    return True


def _open_frame_problems(definition: WorkflowDefinition, path: str, outputs: Mapping) -> set[str]:
    """The sub-workflows the run is inside at `path` must take, in `definition`, the inputs their
    steps bound (those steps have run and are not run again)."""
    problems = set()
    frame = frame_at(definition, path)
    while frame.prefix:
        if frame.caller in outputs:  # else it is reported as not run
            bound = outputs[frame.caller]
            _, found = check_inputs(frame.definition.inputs, bound, read=frame.definition.reads_inputs)
            problems.update(f"'{frame.caller}' taking the inputs it bound ({problem.message})" for problem in found)
        frame = frame_at(definition, frame.caller)
    return problems


def _open_branch_frames(run: Run) -> list[str]:
    """The paths of the steps still to run inside for_each branches' sub-workflows: each is in a frame
    of its own, whose inputs a resume keeps (`replier[1]/drafter`)."""
    still_to_run = [StepStatus.BLOCKED, StepStatus.WAITING, StepStatus.PENDING, StepStatus.RUNNING, StepStatus.FAILED]
    open_steps = run.steps.filter(status__in=still_to_run).exclude(group="")
    return [agent for agent in open_steps.values_list("agent", flat=True).distinct() if subworkflows.BRANCH_OPEN in agent]


def _always_run_before(definition: WorkflowDefinition, path: str) -> set[str]:
    """The paths of what `definition` runs before the node at `path` on every way there: inside a
    sub-workflow, what its entry ran before it, the step that entered it, and what ran before that."""
    frame = frame_at(definition, path)
    before = {frame.prefix + name for name in always_run_before(frame.definition, frame.name)}
    if frame.prefix:
        before |= {frame.caller} | _always_run_before(definition, frame.caller)
    return before


def _open_review_problems(
    run: Run, definition: WorkflowDefinition, *, written: WorkflowDefinition, resume_step: Step
) -> set[str]:
    """What the new version lacks of the validators, dialogs and tools whose steps the run has still
    to run: the step the checkpoint points at (a failed run's, failed, runs again), and in a group,
    other branches' steps a stop set aside."""
    still_to_run = Q(status__in=[StepStatus.BLOCKED, StepStatus.WAITING, StepStatus.PENDING, StepStatus.RUNNING])
    open_steps = run.steps.filter(
        still_to_run | Q(pk=resume_step.pk),
        role__in=[StepRole.VALIDATOR, StepRole.DIALOG, StepRole.REPLY, StepRole.MODEL_CALL, StepRole.TOOL_CALL],
    )
    problems = set()
    for agent, role in open_steps.values_list("agent", "role").distinct():
        node = definition.node(agent)
        if not isinstance(node, AgentSpec):
            continue  # the agent's own change is reported already
        if role in (StepRole.MODEL_CALL, StepRole.TOOL_CALL):
            if not node.uses_tools:
                problems.add(f"'{agent}' with tools (the run goes on inside its tool loop)")
            elif node.provider != written.node(agent).provider:
                # The loop's turns so far are messages of the backend they were made with; a run keeps
                # the backend of each provider name it has used, so only another name could change it.
                problems.add(f"'{agent}' with its provider as it was (the run goes on inside its tool loop)")
        elif role == StepRole.VALIDATOR and node.validator is None:
            problems.add(f"'{agent}' with a validator (the run goes on from its validator's call)")
        elif role != StepRole.VALIDATOR and node.dialog is None:
            problems.add(f"'{agent}' with a dialog (the run goes on from its dialog)")
    return problems


def _kept_as_it_was(name: str, *, written: WorkflowDefinition, definition: WorkflowDefinition) -> bool:
    """Whether `definition` has the agent or step `name` of `written`, of the same kind; for a path
    inside a sub-workflow, whether it has the calling step and, in what it calls, the rest (in a for_each
    branch's sub-workflow, `replier[1]/drafter`, the calling step is the group's agent)."""
    caller, inside, rest = name.partition(SUBWORKFLOW_SEPARATOR)
    if inside:
        step = step_of_caller(caller)
        return (
            _kept_as_it_was(step, written=written, definition=definition)
            and step in definition.subworkflows
            and _kept_as_it_was(rest, written=written.subworkflows[step], definition=definition.subworkflows[step])
        )
    if name in written.agents:
        return name in definition.agents
    if name in written.steps:
        return name in definition.steps and definition.steps[name].kind == written.steps[name].kind
    was, now = _group_agent(written, name), _group_agent(definition, name)
    return now is not None and type(now) is type(was) and getattr(now, "kind", None) == getattr(was, "kind", None)


def _group_agent(definition: WorkflowDefinition, name: str) -> AgentSpec | StepSpec | None:
    """The agent, or the workflow step, of the for_each group whose agent is named `name`; None."""
    return next((group.agent for group in definition.for_each.values() if group.agent.name == name), None)


def run_resume(
    *,
    run: Run,
    actor: str = "system",
    limits: Mapping | None = None,
    reason: str = "",
    workflow_version: int | None = None,
) -> Run:
    """Continue a stopped run from its checkpoint, with limits raised and, when `workflow_version`
    names another version of its workflow (a corrected one), on that version. `actor` is who asked, as
    events name them: a team's key (`actor_of`) or a staff user (`user:<name>`)."""
    overrides = check_limit_overrides(limits, path="")
    moving_to = None
    if workflow_version is not None and workflow_version != run.workflow_version.version:
        moving_to = workflow_version_get(team=run.team, workflow=run.workflow_version.workflow_id, version=workflow_version)
        check_version_replaces(run=run, version=moving_to)
    else:
        # As at its start: the credentials may have moved since, and its calls would follow them.
        check_endpoints(team=run.team, definition=definition_of(run.workflow_version), backends=run.provider_routes)
    return rendered_ahead(
        prerender=partial(_prerender_resume, run_id=run.pk, version=moving_to),
        locked=partial(
            _resume_under_locks, run=run, actor=actor, overrides=overrides, reason=reason, moving_to=moving_to
        ),
    )


def _prerender_resume(*, run_id: int, version: WorkflowVersion | None) -> None:
    """The prompts of the step a resume continues from, rendered before its transaction."""
    run = Run.objects.select_related("workflow_version", "team").get(pk=run_id)
    checkpoint = latest_checkpoint(run=run)
    if checkpoint is not None and checkpoint.next_step is not None:
        step_prepare(
            run=run,
            step=checkpoint.next_step,
            definition=definition_of(version or run.workflow_version),
            outputs=checkpoint.outputs,
            may_override_prices=run.team.may_override_prices,
        )


def _resume_under_locks(
    *, run: Run, actor: str, overrides: dict, reason: str, moving_to: WorkflowVersion | None
) -> Run:
    with transaction.atomic(durable=True):
        locked = lock_rows(team_id=run.team_id, run_id=run.pk)
        team, run = locked.team, locked.run
        old_limits = run.limits
        new_limits = {**old_limits, **overrides}
        old_version = run.workflow_version
        if moving_to is not None:
            run.provider_routes = check_version_replaces(run=run, version=moving_to)
            run.workflow_version = moving_to
        step = check_run_resumable(run=run, team=team, new_limits=new_limits)

        previous_status = run.status
        now = timezone.now()
        for field, value in new_limits.items():
            setattr(run, field, value)
        run.limit_sources = {**run.limit_sources, **{field: "resume" for field in overrides}}
        if run.budget_usd != old_limits["budget_usd"]:
            run.audit_rearm_at_usd = None  # audit reports afresh against the new budget
        run.status = RunStatus.QUEUED
        run.error = None
        run.finished_at = None
        run.active_since = now
        run.current_agent = step.group or step.agent
        run.save(
            update_fields=[
                *new_limits,
                "limit_sources",
                "audit_rearm_at_usd",
                "status",
                "error",
                "finished_at",
                "active_since",
                "current_agent",
                "workflow_version",
                "provider_routes",
                "updated_at",
            ]
        )
        event_record(
            run=run,
            type=EventType.RUN_RESUMED,
            actor=actor,
            payload={
                "by": actor,
                "at": now.isoformat(),
                "reason": reason,
                "from_status": previous_status,
                "old_limits": _limits_payload(Run(**old_limits)),
                "new_limits": _limits_payload(run),
                "spent_usd": usd(run.spent_usd),
                "next_agent": step.group or step.agent,
                **(
                    {"workflow_version": {"from": old_version.version, "to": moving_to.version}}
                    if moving_to is not None
                    else {}
                ),
            },
        )
        budget_changes_record(
            team=team,
            run=run,
            old=old_limits,
            new=new_limits,
            actor=actor,
            reason=reason,
        )
        steps_reopen(run=run, step=step, failed_too=previous_status == RunStatus.FAILED)
    return run


def run_cancel(*, run: Run, actor: str = "system", reason: str = "") -> Run:
    with transaction.atomic(durable=True):
        run = lock_rows(team_id=run.team_id, run_id=run.pk, lock_team=False).run
        if run.status in FINAL_RUN_STATUSES:
            raise InvalidRunState(
                f"Cannot cancel a run that is in '{run.status}' status.", details={"status": run.status}
            )
        previous_status = run.status
        now = timezone.now()
        run.status = RunStatus.CANCELLED
        run.save(update_fields=["status", *run_ended(run, now)])
        # A step already running finishes and is charged; steps not yet started never run.
        run.steps.filter(
            status__in=[
                StepStatus.WAITING,
                StepStatus.PENDING,
                StepStatus.AWAITING_INPUT,
                StepStatus.BLOCKED,
                StepStatus.FAILED,
            ]
        ).update(
            status=StepStatus.CANCELLED
        )
        event_record(
            run=run,
            type=EventType.RUN_CANCELLED,
            actor=actor,
            payload={"by": actor, "reason": reason, "from_status": previous_status},
        )
    return run


def _limit_fields(resolved: ResolvedLimits) -> dict:
    return {
        "budget_usd": resolved.budget_usd,
        "budget_mode": resolved.budget_mode,
        "max_iterations": resolved.max_iterations,
        "timeout_seconds": resolved.timeout_seconds,
        "limit_sources": dict(resolved.sources),
    }


def _limits_payload(run: Run) -> dict:
    return {
        "budget_usd": usd(run.budget_usd),
        "budget_mode": run.budget_mode,
        "max_iterations": run.max_iterations,
        "timeout_seconds": run.timeout_seconds,
    }


def _run_counters(run: Run) -> dict:
    return {
        "spent_usd": run.spent_usd,
        "reserved_usd": run.reserved_usd,
        "iterations": run.iterations,
        "active_time": run.active_time,
        "active_since": None,
        "audit_rearm_at_usd": run.audit_rearm_at_usd,
    }
