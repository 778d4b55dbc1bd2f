"""The agent: one call to a language model, priced by its tokens and charged to the ledger."""

from collections.abc import Mapping

from django.conf import settings

from workflows.definition import (
    CONTEXT_TIERS,
    FREELY_PRICED_PROVIDERS,
    REASONING_EFFORTS,
    AgentSpec,
    WorkflowDefinition,
    backend_of,
    count_tokens,
    estimate_usd,
    is_template,
    model_for_backend,
    output_cap,
    render,
    rendered_choice,
)
from workflows.models import Run, Step, Team
from workflows.providers import CompletionRequest, CompletionResult, Usage, get_provider
from workflows.services.credentials import credentials_for
from workflows.services.ledger import ledger_charge
from workflows.services.prices import prices_for
from workflows.services.renders import rendered
from workflows.services.steps.kinds.base import Charged, PreparedStep, StepAttempt, StepKind


class AgentKind(StepKind):
    """Validated by the definition parser itself (definition/_agents.py), the kind every step was
    before there were others."""

    name = "agent"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        system_prompt = _render_kept(node.system_prompt, context, where=f"agent '{node.name}' system_prompt")
        prompt = _render_kept(node.prompt, context, where=f"agent '{node.name}' prompt")
        effort = _chosen(node.reasoning_effort, REASONING_EFFORTS, context, where=f"agent '{node.name}' reasoning.effort")
        # Checked as conductor checks it, then without effect (docs/conductor.md says why).
        _chosen(node.context_tier, CONTEXT_TIERS, context, where=f"agent '{node.name}' context_tier")
        prices, price_source = prices_for(
            model=node.model, pricing=definition.pricing, provider=node.provider, may_override_prices=may_override_prices
        )
        max_tokens = output_cap(node, prices, default=settings.DEFAULT_MAX_TOKENS, effort=effort)
        input_tokens = count_tokens(system_prompt + prompt)
        if node.provider in FREELY_PRICED_PROVIDERS and node.mock and node.mock.input_tokens is not None:
            # The fake reports its mock's input count; estimated too, it never costs more than its estimate.
            input_tokens = max(input_tokens, node.mock.input_tokens)
        estimate = None
        if prices is not None:
            estimate = estimate_usd(prices=prices, input_tokens=input_tokens, max_output_tokens=max_tokens)
        backend = backend_of(node.provider, provider_routes)
        request = CompletionRequest(
            model=model_for_backend(node.model, backend),
            system_prompt=system_prompt,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=node.temperature,
            output_schema=node.output,
            stream=node.stream,
            reasoning_effort=effort,
            deadline_seconds=_deadline(node),
            options={"mock": node.mock.to_dict()} if node.mock else {},
        )
        return PreparedStep(
            kind=self.name,
            estimate_usd=estimate,
            model=node.model,
            provider=backend,
            request=request,
            prices=prices,
            price_source=price_source,
            estimated_input_tokens=input_tokens,
        )

    def run(self, attempt: StepAttempt) -> CompletionResult:
        provider = get_provider(attempt.prepared.provider)
        credentials = credentials_for(team_id=attempt.team_id, provider=provider.name)
        return provider.complete(attempt.prepared.request, credentials=credentials)

    def settle(
        self, *, team: Team, run: Run, step: Step, attempt: StepAttempt, usage: Usage, **run_deltas
    ) -> Charged:
        billed, cost, entry = ledger_charge(
            team_id=team.pk,
            run=run,
            step=step,
            attempt=attempt.number,
            prepared=attempt.prepared,
            usage=usage,
            **run_deltas,
        )
        details = {
            "model": attempt.prepared.model,
            "input_tokens": billed.input_tokens,
            "cached_input_tokens": billed.cached_input_tokens,
            "cache_write_tokens": billed.cache_write_tokens,
            "output_tokens": billed.output_tokens,
        }
        return Charged(cost_usd=cost, details=details, entry=entry)


def _render_kept(source: str, context: dict, *, where: str) -> str:
    return rendered(("render", where, source), context, lambda: render(source, context, where=where))


def _chosen(value: str | None, choices: tuple[str, ...], context: dict, *, where: str) -> str | None:
    """A literal checked at upload, or a template rendered now and checked: before the gate, so a
    value that is none of `choices` fails the step before anything is spent on it."""
    if not is_template(value):
        return value
    return rendered_choice(_render_kept(value, context, where=where), choices, where=where)


def _deadline(node: AgentSpec) -> float | None:
    """The agent's deadline where it is below the operator's, which bounds every call anyway."""
    if node.timeout_seconds is not None and node.timeout_seconds < settings.PROVIDER_TIMEOUT_SECONDS:
        return node.timeout_seconds
    return None
