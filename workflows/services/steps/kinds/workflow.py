"""`workflow`: conductor's step that runs another workflow as a black box (definition/subworkflows.py).

The step itself binds the sub-workflow's inputs, costs nothing, and routes into the sub-workflow's
entry point; the sub-workflow's steps then run as steps of the same run. When it ends, its output
becomes the step's, and the step's routes are taken (progression.run_advance). As a for_each group's
agent, each branch's step binds its item's inputs (its group's kind adds the item to the context it
renders `input_mapping` in), and the branch enters the sub-workflow in its own frame
(progression._branch_frame_go_on) instead of taking this kind's route.
"""

from collections.abc import Mapping
from decimal import Decimal
from functools import partial

from jinja2.exceptions import SecurityError

from workflows.definition import (
    SUBWORKFLOW_SEPARATOR,
    AgentSpec,
    GoTo,
    Move,
    StepSpec,
    TemplateFailure,
    WorkflowDefinition,
    check_inputs,
    evaluate,
)
from workflows.definition.coercion import coerce_rendered
from workflows.definition.subworkflows import KEYS, read_workflow_step
from workflows.definition.templates import is_one_expression, json_text
from workflows.services.renders import render_kept, rendered
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep

# How a rendered input_mapping value is read for the sub-workflow input's declared type.
_COERCED_AS = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean", "array": "list", "object": "dict"}


class WorkflowKind(NoCallStepKind):
    """Its output, while its sub-workflow runs, is the inputs it bound: `input_mapping` rendered in its
    caller's context and read as each input's type says, or without a mapping its caller's own inputs.
    The sub-workflow's output replaces it when the sub-workflow ends."""

    name = "workflow"
    keys = KEYS

    def read(self, section):
        return read_workflow_step(section)

    def templates(self, params):
        return [(f"input_mapping.{name}", template) for name, template in (params["input_mapping"] or {}).items()]

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        child = definition.subworkflows[node.name]
        where = f"workflow '{node.name}' input_mapping"
        mapping = node.params["input_mapping"]
        if mapping is None:
            given = dict(context["workflow"]["input"])
            if child.inputs:
                given = {name: value for name, value in given.items() if name in child.inputs}
        else:
            given = {name: _bound(name, template, child, context, where=where) for name, template in mapping.items()}
        inputs, problems = check_inputs(child.inputs, given, read=child.reads_inputs)
        if problems:
            raise TemplateFailure(where, "; ".join(f"{problem.path}: {problem.message}" for problem in problems))
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), data={"output": inputs})

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        """Into the sub-workflow: its entry point, by its path from the step's own frame."""
        return GoTo(node.name + SUBWORKFLOW_SEPARATOR + definition.subworkflows[node.name].entry_point)


def _bound(name: str, template: str, child: WorkflowDefinition, context: dict, *, where: str):
    """The value of one input: a template that is one expression gives its value as it is (a list
    stays a list), any other its text; text is read as the input's declared type."""
    where = f"{where}.{name}"
    if is_one_expression(template):
        value = rendered(("evaluate", where, template), context, partial(evaluate, template, context, where=where))
        if isinstance(value, Decimal):
            value = str(value)
        if not isinstance(value, str):
            try:
                json_text(value)
            except (TypeError, ValueError, SecurityError):
                raise TemplateFailure(where, f"is {type(value).__name__}, which is not JSON data") from None
            return value
        text = value
    else:
        text = render_kept(template, context, where=where)
    spec = child.inputs.get(name)
    if spec is None:
        return text  # a sub-workflow that declares no inputs takes them as conductor passes them: text
    try:
        return coerce_rendered(text, _COERCED_AS[spec.type])
    except ValueError as exc:
        raise TemplateFailure(where, f"rendered {text[:80]!r}, which is not a {spec.type}: {exc}") from None
