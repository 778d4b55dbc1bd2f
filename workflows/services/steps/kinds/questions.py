"""`questions`: conductor's step that asks a person several questions at once. The run waits for the
answers (`waiting_for_input`, services/inputs.py) holding no worker; they become the step's output."""

import dataclasses
import re
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
    TemplateFailure,
    WorkflowDefinition,
    compile_check,
    next_move,
    resolve_reference,
)
from workflows.definition.questions import (
    MAX_QUESTIONS,
    QUESTION_KEYS,
    answers_output,
    numbered,
    question_of,
    question_problems,
)
from workflows.errors import ValidationFailed
from workflows.services.renders import render_kept
from workflows.services.steps.kinds.base import NoCallStepKind, PreparedStep, check_answer_fields

_SOURCE = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)+")
_FLAGS = {"allow_back": True, "allow_skip": True, "allow_skip_all": True, "allow_abort": False}


class QuestionsKind(NoCallStepKind):
    """`questions` written inline (their text, hints and choices templates), or `source`, the
    dotted path of a list in an earlier output (its entries text, or mappings like the inline ones;
    never rendered, as they come from a model). `prompt` is an optional introduction. The answers
    come in one go; `allow_skip: false` makes each one required, and `allow_abort` lets the person
    abandon the step, which routes to `abort_route` (default `$end`)."""

    name = "questions"
    keys = ("questions", "source", "prompt", *_FLAGS, "abort_route", "input")

    def read(self, section):
        problems_before = len(section.problems)
        inline, source = section.data.get("questions"), section.data.get("source")
        if (inline is None) == (source is None):
            section.report("questions", "a questions step needs exactly one of 'questions' or 'source'")
        if source is not None and not (isinstance(source, str) and _SOURCE.fullmatch(source)):
            section.report("source", "must be a dotted path like 'agent.output.questions'")
        questions = []
        for index, raw in enumerate(section.sequence("questions")):
            entry = Section(raw, section.at(f"questions[{index}]"), section.problems, keys=QUESTION_KEYS, nullable=False)
            for key, message in question_problems(entry.data, unknown_keys=False):
                entry.report(key, message)
            templates = [(key, entry.data.get(key)) for key in ("text", "hint")]
            templates += [(f"choices[{n}]", choice) for n, choice in enumerate(entry.data.get("choices") or [])]
            for key, template in templates:
                if isinstance(template, str) and (error := compile_check(template)):
                    entry.report(key, f"template does not compile: {error}")
            questions.append(dict(entry.data))
        if inline is not None and not (1 <= len(questions) <= MAX_QUESTIONS):
            section.report("questions", f"must list 1 to {MAX_QUESTIONS} questions")
        try:
            numbered(questions)
        except ValueError as exc:
            section.report("questions", str(exc))
        prompt = section.text("prompt")
        if prompt is not None and (error := compile_check(prompt)):
            section.report("prompt", f"template does not compile: {error}")
        flags = {flag: section.flag(flag, default=default) for flag, default in _FLAGS.items()}
        abort_route = section.text("abort_route")
        if abort_route is not None and not flags["allow_abort"]:
            section.report("abort_route", "needs allow_abort: true")
        if len(section.problems) > problems_before:
            return None
        return {"questions": questions, "source": source, "prompt": prompt or "", "abort_route": abort_route, **flags}

    def targets(self, params):
        return [("abort_route", params["abort_route"])] if params["abort_route"] else []

    def templates(self, params):
        templates = [("prompt", params["prompt"])] if params["prompt"] else []
        for index, question in enumerate(params["questions"]):
            templates += [(f"questions[{index}].{key}", question[key]) for key in ("text", "hint") if question.get(key)]
            templates += [(f"questions[{index}].choices[{n}]", c) for n, c in enumerate(question.get("choices") or [])]
        if params["source"] and "-" not in params["source"]:  # a name with '-' reads as a subtraction
            templates.append(("source", "{{ " + params["source"] + " }}"))
        return templates

    def prepare(
        self,
        *,
        node: AgentSpec | StepSpec,
        context: dict,
        definition: WorkflowDefinition,
        may_override_prices: bool,
        provider_routes: Mapping[str, str],
    ) -> PreparedStep:
        params, where = node.params, f"questions '{node.name}'"
        if params["source"]:
            questions = _from_source(params["source"], context, where=f"{where} source")
        else:
            questions = [_rendered(question, context, where=f"{where} questions[{index}]") for index, question in enumerate(params["questions"])]
        request = {
            "prompt": render_kept(params["prompt"], context, where=f"{where} prompt"),
            "questions": numbered(questions),
            "allow_skip": params["allow_skip"],
            "allow_abort": params["allow_abort"],
        }
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), awaits_input=True, data={"request": request})

    def answer(self, *, node: StepSpec, asked: Mapping[str, Any], given: Mapping[str, Any]) -> dict:
        check_answer_fields(given, takes=("answers", "abort"), step=node.name)
        answers, aborted = given.get("answers") or {}, bool(given.get("abort"))
        if aborted and not asked["allow_abort"]:
            raise ValidationFailed(
                f"The questions '{node.name}' cannot be abandoned.", details=[{"path": "abort", "message": "not allowed"}]
            )
        output, problems = answers_output(asked["questions"], answers, may_skip=asked["allow_skip"], aborted=aborted)
        if problems:
            raise ValidationFailed(
                f"The answers to '{node.name}' cannot be taken.",
                details=[{"path": f"answers.{key}", "message": message} for key, message in problems],
            )
        return output

    def route(self, *, definition: WorkflowDefinition, node: AgentSpec | StepSpec, context: dict) -> Move:
        if context[node.name]["output"]["outcome"] != "aborted":
            return next_move(definition, node, context)
        target = node.params["abort_route"] or END
        return next_move(definition, dataclasses.replace(node, routes=()), context) if target == END else GoTo(target)


def _rendered(question: dict, context: dict, *, where: str) -> dict:
    """An inline question with its text, hint and choices rendered: the workflow's author wrote them."""
    rendered = {key: render_kept(question[key], context, where=f"{where}.{key}") for key in ("text", "hint") if question.get(key)}
    if question.get("choices"):
        rendered["choices"] = [render_kept(c, context, where=f"{where}.choices[{n}]") for n, c in enumerate(question["choices"])]
    return {**question, **rendered}


def _from_source(source: str, context: dict, *, where: str) -> list[dict]:
    entries = resolve_reference(source, context, where=where)
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_QUESTIONS:
        raise TemplateFailure(where, f"'{source}' must be a list of 1 to {MAX_QUESTIONS} questions")
    try:
        return [question_of(entry, index) for index, entry in enumerate(entries)]
    except ValueError as exc:
        raise TemplateFailure(where, str(exc)) from None
