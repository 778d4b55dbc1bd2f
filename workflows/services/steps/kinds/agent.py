"""The agent: one call to a language model, priced by its tokens and charged to the ledger."""

from collections.abc import Mapping
from dataclasses import replace
from functools import partial

from django.conf import settings

from workflows.definition import (
    CONTEXT_TIERS,
    VERDICT_MIN_TOKENS,
    FREELY_PRICED_PROVIDERS,
    REASONING_EFFORTS,
    AgentSpec,
    MockSpec,
    WorkflowDefinition,
    backend_of,
    count_tokens,
    estimate_usd,
    history_text,
    is_template,
    model_for_backend,
    output_cap,
    rendered_choice,
)
from workflows.models import Run, Step, Team
from workflows.providers import (
    AssistantTurn,
    CompletionRequest,
    CompletionResult,
    SessionExchange,
    ToolResult,
    ToolSpec,
    Usage,
    get_provider,
    provider_complete,
)
from workflows.services.credentials import credentials_for
from workflows.services.ledger import ledger_charge
from workflows.services.prices import prices_for
from workflows.services.renders import render_kept, rendered
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
        feedback: str = "",
        history: tuple[SessionExchange, ...] | None = None,
    ) -> PreparedStep:
        """`feedback`, for a re-run its validator asked for, is appended to the rendered prompt;
        `history`, for an agent with a session_key, is its session's earlier exchanges."""
        system_prompt, prompt, effort = rendered_prompts(node, context)
        mock = node.mock
        if feedback and mock is not None and mock.rerun_output is not None:
            mock = replace(mock, output=mock.rerun_output)
        return self.call(
            agent=node,
            model=node.model,
            system_prompt=system_prompt,
            prompt=prompt + feedback,
            output_schema=node.output,
            temperature=node.temperature,
            mock=mock,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=provider_routes,
            effort=effort,
            deadline_seconds=deadline(node),
            history=history,
        )

    def call(
        self,
        *,
        agent: AgentSpec,
        model: str,
        system_prompt: str,
        prompt: str,
        output_schema: dict | None,
        temperature: float | None,
        mock: MockSpec | None,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
        effort: str | None = None,
        deadline_seconds: float | None = None,
        answer_checked: bool = True,
        tools: tuple[ToolSpec, ...] = (),
        transcript: tuple[AssistantTurn | ToolResult, ...] = (),
        loop_text: str = "",
        history: tuple[SessionExchange, ...] | None = None,
    ) -> PreparedStep:
        """A call to `model` through the agent's provider, with the agent's output cap (room for
        reasoning at `effort` included), priced and estimated: the worst case of its rendered input
        and its whole output cap. A model call of a tool loop also sends `tools` and the loop's
        `transcript` so far, which `loop_text` is as text, counted in its input. A call that
        continues the agent's session (`history` not None) sends its earlier exchanges before the
        prompt, counted in its input too."""
        prices, price_source = prices_for(
            model=model, pricing=definition.pricing, provider=agent.provider, may_override_prices=may_override_prices
        )
        max_tokens = output_cap(agent, prices, default=settings.DEFAULT_MAX_TOKENS, effort=effort)
        exchanges = history or ()
        sent = system_prompt + history_text((each.prompt, each.answer) for each in exchanges) + prompt + loop_text
        # Counted ahead of the transaction, as renders are: a session's or a loop's text can be long.
        input_tokens = rendered(("tokens", hash(sent)), {"text": sent}, partial(count_tokens, sent))
        if agent.provider in FREELY_PRICED_PROVIDERS and mock and mock.input_tokens is not None:
            # The fake reports its mock's input count; estimated too, it never costs more than its estimate.
            input_tokens = max(input_tokens, mock.input_tokens)
        estimate = None
        if prices is not None:
            estimate = estimate_usd(prices=prices, input_tokens=input_tokens, max_output_tokens=max_tokens)
        backend = backend_of(agent.provider, provider_routes)
        request = CompletionRequest(
            model=model_for_backend(model, backend),
            system_prompt=system_prompt,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            output_schema=output_schema,
            answer_checked=answer_checked,
            stream=agent.stream,
            reasoning_effort=effort,
            deadline_seconds=deadline_seconds,
            options={"mock": mock.to_dict()} if mock else {},
            tools=tools,
            transcript=transcript,
            history=exchanges,
        )
        return PreparedStep(
            kind=self.name,
            estimate_usd=estimate,
            model=model,
            provider=backend,
            request=request,
            prices=prices,
            price_source=price_source,
            estimated_input_tokens=input_tokens,
            session=None if history is None else {"key": agent.session_key, "exchanges": len(history)},
        )

    def review_call(
        self,
        *,
        agent: AgentSpec,
        model: str,
        system_prompt: str,
        prompt: str,
        answer_schema: dict,
        mock: MockSpec | None,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """A call that reads the agent's work and answers `answer_schema` (a validator's verdict, a
        dialog's evaluation): through the agent's provider, at the provider's own temperature, with
        the agent's output cap but never too little for its answer, which the schema only steers: the
        caller reads it leniently, as conductor does."""
        return self.call(
            agent=replace(agent, max_tokens=max(agent.max_tokens, VERDICT_MIN_TOKENS)) if agent.max_tokens else agent,
            model=model,
            system_prompt=system_prompt,
            prompt=prompt,
            output_schema=answer_schema,
            temperature=None,
            mock=mock,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=provider_routes,
            answer_checked=False,
        )

    def run(self, attempt: StepAttempt) -> CompletionResult:
        provider = get_provider(attempt.prepared.provider)
        credentials = credentials_for(team_id=attempt.team_id, provider=provider.name)
        return provider_complete(provider, attempt.prepared.request, credentials=credentials)

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


def rendered_prompts(node: AgentSpec, context: dict) -> tuple[str, str, str | None]:
    """The agent's system prompt, prompt and reasoning effort, rendered in `context`."""
    system_prompt = render_kept(node.system_prompt, context, where=f"agent '{node.name}' system_prompt")
    prompt = render_kept(node.prompt, context, where=f"agent '{node.name}' prompt")
    effort = _chosen(node.reasoning_effort, REASONING_EFFORTS, context, where=f"agent '{node.name}' reasoning.effort")
    # Checked as conductor checks it, then without effect (docs/conductor.md says why).
    _chosen(node.context_tier, CONTEXT_TIERS, context, where=f"agent '{node.name}' context_tier")
    return system_prompt, prompt, effort


def _chosen(value: str | None, choices: tuple[str, ...], context: dict, *, where: str) -> str | None:
    """A literal checked at upload, or a template rendered now and checked: before the gate, so a
    value that is none of `choices` fails the step before anything is spent on it."""
    if not is_template(value):
        return value
    return rendered_choice(render_kept(value, context, where=where), choices, where=where)


def deadline(node: AgentSpec) -> float | None:
    """The agent's deadline where it is below the operator's, which bounds every call anyway."""
    if node.timeout_seconds is not None and node.timeout_seconds < settings.PROVIDER_TIMEOUT_SECONDS:
        return node.timeout_seconds
    return None
