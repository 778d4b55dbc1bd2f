"""Preparing a step: the context its templates see, then what its kind prepares and estimates.

A step is prepared before the transaction that admits it (`renders.rendered_ahead`): rendering may
take a tenant's whole TEMPLATE_RENDER_SECONDS, which must never be spent holding locks.
"""

from django.conf import settings

from workflows.definition import ForEachSpec, TemplateFailure, WorkflowDefinition, resolve_reference, template_context
from workflows.models import Run, Step
from workflows.services.steps.kinds import PreparedStep, kind_of


def step_prepare(
    *, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict, may_override_prices: bool
) -> PreparedStep:
    """Prepare the step as its kind says, in the context of the run so far. Raises TemplateFailure."""
    context = run_context(run=run, definition=definition, outputs=outputs)
    if step.group in definition.for_each:
        group = definition.for_each[step.group]
        items = group_items(group, context)
        if step.branch_index >= len(items):
            raise TemplateFailure(f"for_each '{group.name}' source", f"has no item {step.branch_index} any more")
        context.update({group.as_name: items[step.branch_index], "_index": step.branch_index, "_key": step.branch_key})
    node = definition.node(step.agent)
    return kind_of(node).prepare(
        node=node, context=context, definition=definition, may_override_prices=may_override_prices
    )


def run_context(*, run: Run, definition: WorkflowDefinition, outputs: dict) -> dict:
    """What a run's templates see: its inputs and the outputs so far."""
    return template_context(inputs=run.inputs, outputs=outputs, groups=definition.group_names)


def group_items(group: ForEachSpec, context: dict, *, entering: bool = False) -> list:
    """The group's items. Their count is held to FOR_EACH_MAX_ITEMS when the group is entered; a
    group already entered keeps its items if the limit is lowered while it runs."""
    where = f"for_each '{group.name}' source"
    items = resolve_reference(group.source, context, where=where)
    if not isinstance(items, list):
        raise TemplateFailure(where, f"'{group.source}' is {type(items).__name__}, not a list")
    if entering and len(items) > settings.FOR_EACH_MAX_ITEMS:
        limit = settings.FOR_EACH_MAX_ITEMS
        message = f"'{group.source}' has {len(items):,} items; the limit is {limit:,} (FOR_EACH_MAX_ITEMS)"
        raise TemplateFailure(where, message)
    return items
