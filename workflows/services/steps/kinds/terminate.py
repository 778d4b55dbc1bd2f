"""`terminate`: conductor's step that ends the run at once, completed or failed, with a reason;
inside a sub-workflow, it ends the sub-workflow (completed, its caller goes on; failed, the run fails)."""

from collections.abc import Mapping
from decimal import Decimal

from workflows.definition import (
    AgentSpec,
    Complete,
    Fail,
    Move,
    StepSpec,
    TemplateFailure,
    WorkflowDefinition,
    compile_check,
    next_move,
    output_value,
)
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep

STATUSES = ("success", "failed")
ERROR_TYPE = "WorkflowTerminated"  # conductor's, for a run a `status: failed` step ended


class TerminateKind(NoCallStepKind):
    """Its output is `{status, reason}`, the reason rendered. The run's output is its
    `output_template` rendered, or else the workflow's `output`; `status: failed` fails the run
    with the reason, not resumably (there is no step left to run)."""

    name = "terminate"
    keys = ("status", "reason", "output_template", "input")

    def read(self, section):
        problems_before = len(section.problems)
        status = section.text("status", required=True)
        if status is not None and status not in STATUSES:
            section.report("status", f"must be 'success' or 'failed', not {status!r}")
        reason = section.text("reason", required=True)
        if reason is not None and (error := compile_check(reason)):
            section.report("reason", f"template does not compile: {error}")
        if section.data.get("routes"):
            section.report("routes", "a terminate step ends the run: it cannot route anywhere")
        output_template = section.data.get("output_template")
        if output_template is not None and not isinstance(output_template, Mapping):
            section.report("output_template", "must be a mapping of output names to templates")
            output_template = None
        for key, template in (output_template or {}).items():
            if not isinstance(template, str):
                section.report(f"output_template.{key}", f"must be a template string, not {type(template).__name__}")
            elif error := compile_check(template):
                section.report(f"output_template.{key}", f"template does not compile: {error}")
        if len(section.problems) > problems_before:
            return None
        return {"status": status, "reason": reason, "output_template": output_template}

    def templates(self, params):
        return [("reason", params["reason"])]

    def route_templates(self, params):
        return [(f"output_template.{key}", t) for key, t in (params["output_template"] or {}).items()]

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        reason = render_kept(node.params["reason"], context, where=f"terminate '{node.name}' reason")
        return PreparedStep(
            kind=self.name, estimate_usd=Decimal("0"), data={"output": {"status": node.params["status"], "reason": reason}}
        )

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        ended = context[node.name]["output"]
        template = node.params["output_template"]
        if template is None:
            output_move = next_move(definition, node, context)  # no routes: the workflow's output
            if isinstance(output_move, Fail):
                return output_move
            output = output_move.output
        else:
            try:
                output = {
                    name: output_value(source, context, where=f"terminate '{node.name}' output_template.{name}")
                    for name, source in template.items()
                }
            except TemplateFailure as exc:
                return Fail("TemplateError", str(exc))
        if ended["status"] == "success":
            return Complete(output)
        return Fail(ERROR_TYPE, ended["reason"], output=output)

