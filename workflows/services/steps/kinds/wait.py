"""`wait`: conductor's pause before the run goes on. No worker waits: the step's task is sent again
for when the pause ends (`PreparedStep.delay_seconds`)."""

from collections.abc import Mapping
from decimal import Decimal

from workflows.definition import AgentSpec, StepSpec, TemplateFailure, WorkflowDefinition, compile_check
from workflows.definition.durations import wait_seconds
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep


class WaitKind(NoCallStepKind):
    """`duration` is seconds, text like "90s", "5m" or "1h", or a template that renders to either,
    at most 24 hours. The pause starts when the run enters the step. The output is `{waited_seconds}`."""

    name = "wait"
    keys = ("duration", "reason", "input")

    def read(self, section):
        problems_before = len(section.problems)
        duration = section.data.get("duration")
        if duration is None:
            section.missing("duration")
        elif _is_template(duration):
            if error := compile_check(duration):
                section.report("duration", f"template does not compile: {error}")
        else:
            try:
                wait_seconds(duration)
            except ValueError as exc:
                section.report("duration", str(exc))
        section.text("reason")  # shown where the step is listed; no template
        if len(section.problems) > problems_before:
            return None
        return {"duration": duration, "reason": section.data.get("reason") or ""}

    def templates(self, params):
        return [("duration", params["duration"])] if _is_template(params["duration"]) else []

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        duration = node.params["duration"]
        where = f"wait '{node.name}' duration"
        if _is_template(duration):
            duration = render_kept(duration, context, where=where)
        try:
            seconds = wait_seconds(duration)
        except ValueError as exc:
            raise TemplateFailure(where, str(exc)) from None
        return PreparedStep(
            kind=self.name, estimate_usd=Decimal("0"), delay_seconds=seconds, data={"output": {"waited_seconds": seconds}}
        )


def _is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)
