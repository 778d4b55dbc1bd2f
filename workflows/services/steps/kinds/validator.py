"""An agent's validator (conductor's `validator:`): a model call grading the agent's output against
the author's criteria. It is charged as an agent's call is; progression enters its steps after the
agent's own (services/steps/validation.py), and no definition names it as a `type`."""

from collections.abc import Mapping

from workflows.definition import (
    VERDICT_SCHEMA,
    AgentSpec,
    WorkflowDefinition,
    validator_prompt,
    validator_system_prompt,
)
from workflows.services.steps.kinds.agent import AgentKind
from workflows.services.steps.kinds.base import PreparedStep


class ValidatorKind(AgentKind):
    name = "validator"

    def prepare(
        self,
        *,
        node: AgentSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        """`context` is what it grades, as recorded when the agent's step ended (`Step.validation`):
        the agent's rendered prompt and its output. Nothing is rendered: the criteria are plain text."""
        validator = node.validator
        return self.review_call(
            agent=node,
            model=validator.model,
            system_prompt=validator_system_prompt(validator.criteria),
            prompt=validator_prompt(agent=node.name, prompt=context["prompt"], output=context["output"]),
            answer_schema=VERDICT_SCHEMA,
            mock=validator.mock,
            definition=definition,
            may_override_prices=may_override_prices,
            provider_routes=provider_routes,
        )
