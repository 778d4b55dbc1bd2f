"""Conductor's `validator:` on an agent, as pure rules: the validator's prompts, reading its verdict,
the feedback a re-run is given, and what follows each of the steps an agent with a validator takes.

In conductor, after the agent's call a second call grades its output against the author's criteria
and answers `{"passed": bool, "issues": [str]}`. A failed output with `max_retries: 1` sends the agent
back once, with the issues appended to its prompt under "## Validation feedback"; that second output
is final. With `max_retries: 0` the failure is only reported. A validator that fails, or whose answer
cannot be read, passes the output (conductor's fail-open), and so does a re-run that fails: the run
goes on with the graded output.

Here each call is a step of its own, so that each passes the budget gate, is charged to the ledger and
can be stopped at and resumed from: the agent's step, then its validator's (role VALIDATOR_ROLE), then
perhaps its re-run (role RERUN_ROLE). Templates see `<agent>.output` only once it is final; the re-run sees
what the agent's first run saw. As in conductor, the agent's execution counts once toward
max_iterations, however many of these steps it takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .dialog import DIALOG_ROLE, REPLY_ROLE, Evaluation, evaluation_of
from .model import DialogSpec, ValidatorSpec
from .tools import MODEL_CALL_ROLE, TOOL_CALL_ROLE

# The roles of the steps an agent's validation adds after the agent's own (`Step.role`).
VALIDATOR_ROLE = "validator"
RERUN_ROLE = "rerun"
MAX_RETRIES = 1  # conductor's cap: beyond one re-run with feedback, the prompt needs work, not retries

# What a validator answers, as an output schema.
VERDICT_SCHEMA = {"passed": {"type": "boolean"}, "issues": {"type": "array", "items": {"type": "string"}}}
# The least output a validator's call may write, whatever its agent's cap: room for a verdict with a
# few issues. Cut off mid-JSON, a verdict would be no verdict, and fail-open would pass the output.
VERDICT_MIN_TOKENS = 512

# How much of the agent's prompt and output a validator is shown: conductor's bounds, in characters.
PROMPT_CHARS = 6000
OUTPUT_CHARS = 8000
_CUT = "\n…[truncated]"

_SYSTEM_PROMPT = """\
You check another agent's output against acceptance criteria that the workflow's author wrote. Judge \
by these criteria alone: add no requirement of your own, and pass no output that misses one of them.

Criteria:
{criteria}

Reply with one JSON object and nothing else: {{"passed": true or false, "issues": ["..."]}}. "passed" \
is true only when the output meets every criterion. "issues" names each problem as a concrete change \
the agent must make: empty when the output passes, at least one when it does not."""

_PROMPT = """\
Agent: {agent}

What the agent was asked:
<<<
{prompt}
>>>

What the agent answered (check this):
<<<
{output}
>>>"""


def counts_as_iteration(role: str) -> bool:
    """Whether a step counts toward max_iterations (and may be stopped by it): a validator's call, a
    dialog's evaluator, a person's reply, a re-run and the steps of a tool loop are part of their
    agent's execution, which counted once, as in conductor."""
    return not role


def fails_open(role: str) -> bool:
    """Whether a step's failure leaves its agent's output standing (a validator's, a dialog's, a
    person's reply, a re-run: conductor's fail-open), rather than failing the agent as its own
    step's failure does (the steps of its tool loop)."""
    return role not in ("", MODEL_CALL_ROLE, TOOL_CALL_ROLE)


def usage_label(agent: str, role: str) -> str:
    """What the ledger names a step's call by: a validator's is conductor's "<agent> (validator)"
    usage row, a dialog's evaluator "<agent> (dialog)"; a re-run is its agent's own call."""
    if role == VALIDATOR_ROLE:
        return f"{agent} (validator)"
    return f"{agent} (dialog)" if role == DIALOG_ROLE else agent


def truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_CUT)] + _CUT


def validator_system_prompt(criteria: str) -> str:
    return _SYSTEM_PROMPT.format(criteria=criteria)


def validator_prompt(*, agent: str, prompt: str, output: Any) -> str:
    """What a validator is asked: the agent's rendered prompt and its output, each bounded."""
    shown = output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False)
    return _PROMPT.format(
        agent=agent, prompt=truncated(prompt, PROMPT_CHARS), output=truncated(shown, OUTPUT_CHARS)
    )


def validation_feedback(issues: list[str] | tuple[str, ...]) -> str:
    """The section appended to a re-run's prompt."""
    listed = "\n".join(f"- {issue}" for issue in issues) or "- The output does not meet the acceptance criteria."
    return (
        "\n\n## Validation feedback\n"
        "A validator found problems in your previous answer. Answer again, fixing each of them:\n"
        f"{listed}\n"
    )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    issues: tuple[str, ...] = ()
    # No verdict could be had (the call failed, or its answer is not one): taken as passed.
    errored: bool = False


def verdict_of(answer: Any) -> Verdict:
    """A validator's answer read as conductor reads it: `passed` a boolean or the text "true"/"false"
    (a model may quote it), `issues` a list, or one text; anything else is errored, and passes."""
    if not isinstance(answer, Mapping):
        return Verdict(passed=True, errored=True)
    passed = answer.get("passed")
    if isinstance(passed, str) and passed.strip().lower() in ("true", "false"):
        passed = passed.strip().lower() == "true"
    if not isinstance(passed, bool):
        return Verdict(passed=True, errored=True)
    if passed:
        return Verdict(passed=True)
    issues = answer.get("issues") or []
    issues = issues if isinstance(issues, list) else [issues]
    return Verdict(passed=False, issues=tuple(item if isinstance(item, str) else json.dumps(item) for item in issues))


@dataclass(frozen=True)
class Validate:
    """The agent's own step succeeded and it has a validator: the validator's step follows."""

    output: Any


@dataclass(frozen=True)
class Rerun:
    """The validator failed the output with a retry left: the agent runs again, told the issues."""

    output: Any  # the graded output, which the run goes on with should the re-run fail
    verdict: Verdict


@dataclass(frozen=True)
class Evaluate:
    """The agent's own step succeeded and it has a dialog: its evaluator's step follows."""

    output: Any


@dataclass(frozen=True)
class Converse:
    """The evaluator triggered: a person is asked its question about `output`."""

    output: Any
    evaluation: Evaluation


@dataclass(frozen=True)
class Redo:
    """A person replied to the dialog's question: the agent runs again, told the question and reply."""

    output: Any  # the output the person was shown, which stands should the re-run fail
    question: str
    reply: str


@dataclass(frozen=True)
class CallModel:
    """An agent's tool loop goes on with its model call number `turn` (definition/tools.py)."""

    turn: int


@dataclass(frozen=True)
class CallTool:
    """The model call `turn` of an agent's tool loop asked for `count` tool calls: the one at `index`
    follows (each in turn, then the loop's next model call). The calls stay in the model call's
    output, where the tool call's step reads its own: copied into each step, a turn's many large
    calls would be written over and over."""

    turn: int
    index: int
    count: int


@dataclass(frozen=True)
class Proceed:
    """The agent's routes are taken, with `output` as its output."""

    output: Any
    verdict: Verdict | None = None  # the validator's, when its step is the one that ended
    evaluation: Evaluation | None = None  # the dialog's evaluator's, when its step is the one that ended


AfterStep = Validate | Rerun | Evaluate | Converse | Redo | CallModel | CallTool | Proceed


def after_step(
    *,
    validator: ValidatorSpec | None,
    role: str,
    given: Mapping[str, Any] | None,
    output: Any = None,
    failed: bool = False,
    dialog: DialogSpec | None = None,
    tools: bool = False,
) -> AfterStep | None:
    """What follows a step of an agent (or of any kind, with no validator or dialog) that succeeded
    with `output`, or `failed`; None when its failure fails the run, as any step's does. `given` is
    what a step of the agent's validation, dialog or tool loop was given (`Step.validation`): the
    output at stake, and the issues, or the question (and reply); a loop step's turn, and a tool
    call's place among its turn's calls. An agent has a validator or a dialog, never both, and neither when it has `tools`
    (the parser refuses them): its own step lists its tools, then its loop's steps follow, the model
    call that answers ending it with the agent's output."""
    if role in (MODEL_CALL_ROLE, TOOL_CALL_ROLE) and failed:
        return None  # a loop step fails its agent as the agent's own step does
    if role == TOOL_CALL_ROLE:
        if given["index"] + 1 < given["count"]:
            return CallTool(turn=given["turn"], index=given["index"] + 1, count=given["count"])
        return CallModel(turn=given["turn"] + 1)
    if role == MODEL_CALL_ROLE:
        if calls := output.get("tool_calls"):
            return CallTool(turn=given["turn"], index=0, count=len(calls))
        return Proceed(output["answer"])
    if role == DIALOG_ROLE:
        evaluation = Evaluation(trigger=False, errored=True) if failed else evaluation_of(output)
        if evaluation.trigger:
            return Converse(given["output"], evaluation)
        return Proceed(given["output"], evaluation=evaluation)
    if role == REPLY_ROLE:
        if failed or output.get("declined", True):
            return Proceed(given["output"])
        return Redo(given["output"], question=given["question"], reply=output["text"])
    if role == VALIDATOR_ROLE:
        verdict = Verdict(passed=True, errored=True) if failed else verdict_of(output)
        if verdict.passed or not validator.max_retries:
            return Proceed(given["output"], verdict)
        return Rerun(given["output"], verdict)
    if role == RERUN_ROLE:
        return Proceed(given["output"] if failed else output)
    if failed:
        return None
    if tools:
        return CallModel(turn=1)
    if validator is not None:
        return Validate(output)
    return Proceed(output) if dialog is None else Evaluate(output)
