"""An agent's dialog (conductor's `dialog:`): the evaluator's model call reading the agent's output
against the author's trigger_prompt, and the step that waits for a person's reply to its question.
Progression enters both after the agent's own step (services/steps/validation.py); no definition
names either as a `type`."""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from workflows.definition import (
    EVALUATION_SCHEMA,
    AgentSpec,
    ReplyInvalid,
    WorkflowDefinition,
    evaluator_prompt,
    evaluator_system_prompt,
    reply_of,
)
from workflows.errors import ValidationFailed
from workflows.services.steps.kinds.agent import AgentKind
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep, check_answer_fields


class DialogKind(AgentKind):
    """The evaluator: a call to the agent's model through its provider, charged as an agent's is."""

    name = "dialog"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """`context` is what it reads, as recorded when the agent's step ended (`Step.validation`): the
        agent's output. Nothing is rendered: the trigger_prompt is plain text."""
        dialog = node.dialog
        return self.review_call(
            agent=node,
            model=node.model,  # conductor's evaluator calls the agent's model
            system_prompt=evaluator_system_prompt(dialog.trigger_prompt),
            prompt=evaluator_prompt(agent=node.name, output=context["output"]),
            answer_schema=EVALUATION_SCHEMA,
            mock=dialog.mock,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=provider_routes,
        )


class DialogReplyKind(NoCallStepKind):
    """A person's reply to the evaluator's question: the run waits for it (`waiting_for_input`),
    holding no worker, and costs nothing. Its output is `{declined: true}` or `{declined: false, text}`."""

    name = "dialog_reply"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """`context` is what the person is asked, as recorded when the evaluator's step ended."""
        request = {
            "dialog": True,
            "prompt": context["question"],  # what any form for a person's answer shows first
            "reason": context["reason"],
            "output": context["output"],  # what the agent answered, which the question is about
        }
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), awaits_input=True, data={"request": request})

    def answer(self, *, node: AgentSpec, asked: Mapping[str, Any], given: Mapping[str, Any]) -> dict:
        check_answer_fields(given, takes=("text", "decline"), step=node.name)
        try:
            return reply_of(given).to_output()
        except ReplyInvalid as exc:
            raise ValidationFailed(
                f"The dialog of '{node.name}' is answered with a 'text', or 'decline': true: {exc}.",
                details=[{"path": exc.field, "message": str(exc)}],
            ) from None
