"""Preparing a step: the context its templates see, then what its kind prepares and estimates.

A step is prepared before the transaction that admits it (`renders.rendered_ahead`): rendering may
take a tenant's whole TEMPLATE_RENDER_SECONDS, which must never be spent holding locks.
"""

from workflows.definition import WorkflowDefinition, template_context
from workflows.models import Run, Step
from workflows.services.steps.kinds import PreparedStep, group_kind_of, kind_of


def step_prepare(
    *, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict, may_override_prices: bool
) -> PreparedStep:
    """Prepare the step as its kind says, in the context of the run so far, and for a branch as its
    group's kind adds to it. Raises TemplateFailure."""
    context = run_context(run=run, definition=definition, outputs=outputs)
    if step.group:
        group = definition.group(step.group)
        context = group_kind_of(group).branch_context(
            group=group, context=context, index=step.branch_index, key=step.branch_key
        )
    node = definition.node(step.agent)
    return kind_of(node).prepare(
        node=node,
        context=context,
        definition=definition,
        may_override_prices=may_override_prices,
        provider_routes=run.provider_routes,
    )


def run_context(*, run: Run, definition: WorkflowDefinition, outputs: dict) -> dict:
    """What a run's templates see: its inputs and the outputs so far."""
    return template_context(inputs=run.inputs, outputs=outputs, groups=definition.group_names)
