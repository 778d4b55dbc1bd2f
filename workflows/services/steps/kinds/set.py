"""`set`: conductor's step that binds rendered values into the run's context; no call, no cost."""

from collections.abc import Mapping
from decimal import Decimal

from workflows.definition import AgentSpec, StepSpec, TemplateFailure, WorkflowDefinition, compile_check
from workflows.definition.coercion import OUTPUT_TYPES, coerce_rendered
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep


class SetKind(NoCallStepKind):
    """`value:` binds one rendered template, typed as `output_type` says (by default read as YAML),
    as the step's output; `values:` binds several, each read as YAML, as a mapping. Every binding is
    rendered against the context before the step: one cannot see another."""

    name = "set"
    keys = ("value", "values", "output_type", "input")

    def read(self, section):
        problems_before = len(section.problems)
        value, values = section.data.get("value"), section.data.get("values")
        if (value is None) == (values is None):
            section.report("value", "a set step needs exactly one of 'value' or 'values'")
            return None
        output_type = section.text("output_type") or "auto"
        if output_type not in OUTPUT_TYPES:
            section.report("output_type", f"must be one of {', '.join(OUTPUT_TYPES)}, not {output_type!r}")
        elif values is not None and "output_type" in section.data:
            section.report("output_type", "applies only to 'value'; each of 'values' is read as YAML")
        references = section.data.get("input")
        if references is not None and not (isinstance(references, list) and all(isinstance(r, str) for r in references)):
            # Accepted as for agents, and as there it does not limit what the templates see.
            section.report("input", "must be a list of references like 'agent.output.field'")
        if value is not None:
            templates = {"value": value}
        elif isinstance(values, Mapping) and values:
            templates = {f"values.{key}": template for key, template in values.items()}
        else:
            section.report("values", "must be a mapping of names to templates, with at least one")
            return None
        for key, template in templates.items():
            if not isinstance(template, str):
                section.report(key, f"must be a template string, not {type(template).__name__}")
            elif error := compile_check(template):
                section.report(key, f"template does not compile: {error}")
            elif key == "value" and "{{" not in template and "{%" not in template:
                try:  # no template: what it binds is known now
                    coerce_rendered(template, output_type if output_type in OUTPUT_TYPES else "auto")
                except ValueError as exc:
                    section.report("value", f"does not read as output_type {output_type}: {exc}")
        if len(section.problems) > problems_before:
            return None
        if value is not None:
            return {"value": value, "output_type": output_type}
        return {"values": dict(values)}

    def templates(self, params):
        if "value" in params:
            return [("value", params["value"])]
        return [(f"values.{key}", template) for key, template in params["values"].items()]

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        params = node.params
        if "value" in params:
            output = _bound(params["value"], params["output_type"], context, where=f"set '{node.name}' value")
        else:
            output = {
                key: _bound(template, "auto", context, where=f"set '{node.name}' values.{key}")
                for key, template in params["values"].items()
            }
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), data={"output": output})


def _bound(template: str, output_type: str, context: dict, *, where: str):
    text = render_kept(template, context, where=where)
    try:
        return coerce_rendered(text, output_type)
    except ValueError as exc:
        raise TemplateFailure(where, f"rendered {text[:80]!r}, which is not a {output_type}: {exc}") from None
