"""`human_gate`: conductor's step that asks a person to choose. The run waits for the answer
(`waiting_for_input`, services/inputs.py) holding no worker; the chosen option says where it goes."""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from workflows.definition import (
    END,
    AgentSpec,
    GoTo,
    Move,
    Section,
    StepSpec,
    WorkflowDefinition,
    compile_check,
    next_move,
)
from workflows.errors import ValidationFailed
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep, check_answer_fields

MAX_ANSWER_TEXT = 10_000  # characters a person may write with a choice
_OPTION_KEYS = ("label", "value", "route", "prompt_for", "multiline")


class HumanGateKind(NoCallStepKind):
    """`prompt` (a template) and `options`, each `{label, value, route}` and optionally `prompt_for`,
    the name of a text the person writes with that choice. Its output is conductor's
    `{selected, additional_input}`; it routes by the option chosen, not by `routes`."""

    name = "human_gate"
    keys = ("prompt", "options", "input")

    def read(self, section):
        problems_before = len(section.problems)
        prompt = section.text("prompt", required=True)
        if prompt is not None and (error := compile_check(prompt)):
            section.report("prompt", f"template does not compile: {error}")
        if section.data.get("routes"):
            section.report("routes", "a human gate routes by the option chosen: give each option its 'route'")
        options = []
        for index, raw in enumerate(section.sequence("options", required=True)):
            option = Section(raw, section.at(f"options[{index}]"), section.problems, keys=_OPTION_KEYS, nullable=False)
            read = {
                "label": option.text("label", required=True),
                "value": option.text("value", required=True),
                "route": option.text("route", required=True),
                "prompt_for": option.text("prompt_for"),
                "multiline": option.flag("multiline", default=False),
            }
            if read["value"] is not None and read["value"] in {o["value"] for o in options}:
                option.report("value", f"duplicate option value {read['value']!r}")
            options.append(read)
        if section.data.get("options") == []:
            section.report("options", "must list at least one option")
        if len(section.problems) > problems_before:
            return None
        return {"prompt": prompt, "options": options}

    def targets(self, params):
        return [(f"options[{index}].route", option["route"]) for index, option in enumerate(params["options"])]

    def templates(self, params):
        return [("prompt", params["prompt"])]

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        prompt = render_kept(node.params["prompt"], context, where=f"human_gate '{node.name}' prompt")
        request = {"prompt": prompt, "options": node.params["options"]}
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), awaits_input=True, data={"request": request})

    def answer(self, *, node: StepSpec, asked: Mapping[str, Any], given: Mapping[str, Any]) -> dict:
        check_answer_fields(given, takes=("choice", "text"), step=node.name)
        options = {option["value"]: option for option in asked["options"]}
        choice, text = given.get("choice"), given.get("text")
        if choice not in options:
            raise ValidationFailed(
                f"The gate '{node.name}' is answered with a 'choice', one of its options' values."
                if choice is None
                else f"'{choice}' is not an option of the gate '{node.name}'.",
                details=[{"path": "choice", "message": f"one of {sorted(options)}"}],
            )
        asks_for = options[choice]["prompt_for"]
        if asks_for and not (isinstance(text, str) and text.strip()):
            raise ValidationFailed(
                f"The option '{choice}' asks for a text: '{asks_for}'.",
                details=[{"path": "text", "message": f"required with '{choice}': {asks_for}"}],
            )
        if text is not None and not asks_for:
            raise ValidationFailed(
                f"The option '{choice}' takes no text.", details=[{"path": "text", "message": "not asked for"}]
            )
        if text is not None and len(text) > MAX_ANSWER_TEXT:
            raise ValidationFailed(
                f"The text is longer than {MAX_ANSWER_TEXT:,} characters.",
                details=[{"path": "text", "message": f"at most {MAX_ANSWER_TEXT:,} characters"}],
            )
        return {"selected": choice, "additional_input": {asks_for: text} if asks_for else {}}

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        selected = context[node.name]["output"]["selected"]
        target = next(option["route"] for option in node.params["options"] if option["value"] == selected)
        return next_move(definition, node, context) if target == END else GoTo(target)
