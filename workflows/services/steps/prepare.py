"""Preparing a step: its prompts rendered, its prices found, its worst case estimated.

A step is prepared before the transaction that admits it (`renders.rendered_ahead`): rendering may
take a tenant's whole TEMPLATE_RENDER_SECONDS, which must never be spent holding locks.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from workflows.definition import (
    FREELY_PRICED_PROVIDERS,
    ForEachSpec,
    TemplateFailure,
    UnitPrices,
    WorkflowDefinition,
    count_tokens,
    estimate_usd,
    output_cap,
    render,
    resolve_reference,
    template_context,
)
from workflows.models import Run, Step
from workflows.providers import CompletionRequest
from workflows.services.prices import prices_for
from workflows.services.renders import rendered


@dataclass(frozen=True)
class PreparedStep:
    """A step's rendered request and its prices, ready for the gate and the provider."""

    provider: str
    request: CompletionRequest
    prices: UnitPrices | None
    price_source: str
    estimate_usd: Decimal | None
    # The input tokens the estimate counted: with the output cap, the worst case it priced.
    estimated_input_tokens: int


@dataclass(frozen=True)
class StepAttempt:
    """One admitted attempt at a step: what its worker calls the provider with, and settles."""

    team_id: int
    run_id: int
    step_id: int
    number: int
    prepared: PreparedStep


def step_prepare(
    *, run: Run, step: Step, definition: WorkflowDefinition, outputs: dict, may_override_prices: bool
) -> PreparedStep:
    """Render the step's prompts and estimate its cost. Raises TemplateFailure."""
    agent = definition.agent(step.agent)
    context = run_context(run=run, definition=definition, outputs=outputs)
    if step.group in definition.for_each:
        group = definition.for_each[step.group]
        items = group_items(group, context)
        if step.branch_index >= len(items):
            raise TemplateFailure(f"for_each '{group.name}' source", f"has no item {step.branch_index} any more")
        context.update({group.as_name: items[step.branch_index], "_index": step.branch_index, "_key": step.branch_key})
    system_prompt = _render_kept(agent.system_prompt, context, where=f"agent '{agent.name}' system_prompt")
    prompt = _render_kept(agent.prompt, context, where=f"agent '{agent.name}' prompt")
    prices, price_source = prices_for(
        model=agent.model, pricing=definition.pricing, provider=agent.provider, may_override_prices=may_override_prices
    )
    max_tokens = output_cap(agent, prices)
    input_tokens = count_tokens(system_prompt + prompt)
    if agent.provider in FREELY_PRICED_PROVIDERS and agent.mock and agent.mock.input_tokens is not None:
        # The fake reports its mock's input count; estimated too, it never costs more than its estimate.
        input_tokens = max(input_tokens, agent.mock.input_tokens)
    estimate = None
    if prices is not None:
        estimate = estimate_usd(prices=prices, input_tokens=input_tokens, max_output_tokens=max_tokens)
    options = {"mock": agent.mock.to_dict()} if agent.mock else {}
    request = CompletionRequest(
        model=agent.model,
        system_prompt=system_prompt,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=agent.temperature,
        output_schema=agent.output,
        stream=agent.stream,
        options=options,
    )
    return PreparedStep(
        provider=agent.provider,
        request=request,
        prices=prices,
        price_source=price_source,
        estimate_usd=estimate,
        estimated_input_tokens=input_tokens,
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


def _render_kept(source: str, context: dict, *, where: str) -> str:
    return rendered(("render", where, source), context, lambda: render(source, context, where=where))
