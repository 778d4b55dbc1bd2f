"""Conductor's `dialog:` on an agent, as pure rules: the evaluator's prompts, reading its answer, the
guidance a re-run is given, and what a person's answer may be.

In conductor, after the agent's call an evaluator call (the agent's model) reads its output against
the author's `trigger_prompt` and answers `{"trigger": bool, "reason": str, "question": str}`. When it
triggers, a person converses with the agent in conductor's terminal; the agent then runs once more
with the transcript appended to its prompt, and that output is final. A person who declines, an
evaluator that does not trigger, fails, or answers something unreadable, leaves the output standing.

Here each of these is a step of the run, as a validator's are (definition/validation.py): the
evaluator's call (role DIALOG_ROLE: gated, reserved, charged as '<agent> (dialog)'), a step that waits
for a person's answer to the evaluator's question (role REPLY_ROLE: the run is `waiting_for_input`),
and the agent's re-run (RERUN_ROLE) told the question and the answer. The conversation is one
question and one answer: a reply either sends the agent back with it, or declines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The roles of the steps an agent's dialog adds after the agent's own (`Step.role`); its re-run is
# validation.RERUN_ROLE.
DIALOG_ROLE = "dialog"
REPLY_ROLE = "dialog_reply"

# What an evaluator answers, as an output schema.
EVALUATION_SCHEMA = {
    "trigger": {"type": "boolean"},
    "reason": {"type": "string"},
    "question": {"type": "string"},
}

# How much of the agent's output the evaluator is shown, in characters: conductor's bound.
OUTPUT_CHARS = 4000
# How much of the evaluator's reason and question a run keeps and a person is shown.
QUESTION_CHARS = 10_000
MAX_REPLY_CHARS = 10_000  # characters a person may reply with (the API's bound for any text)
_CUT = "\n…[truncated]"

_SYSTEM_PROMPT = """\
You decide whether an agent should stop and talk with the person it works for before its answer is \
used. The workflow's author wrote when that should happen:

When to ask:
{trigger_prompt}

Read the agent's answer and reply with one JSON object and nothing else: {{"trigger": true or false, \
"reason": "why, in one sentence", "question": "..."}}. "trigger" is true only when the answer meets \
the author's condition. When it is, "question" is what the agent asks the person, with everything \
they need to answer it (the facts, figures and choices at stake); otherwise it is empty."""

_PROMPT = """\
Agent: {agent}

The agent's answer:
<<<
{output}
>>>"""


def _truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_CUT)] + _CUT


def _shown(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False, default=str)


def evaluator_system_prompt(trigger_prompt: str) -> str:
    return _SYSTEM_PROMPT.format(trigger_prompt=trigger_prompt)


def evaluator_prompt(*, agent: str, output: Any) -> str:
    """What the evaluator is asked: the agent's output, bounded as conductor bounds it."""
    return _PROMPT.format(agent=agent, output=_truncated(_shown(output), OUTPUT_CHARS))


@dataclass(frozen=True)
class Evaluation:
    trigger: bool
    reason: str = ""
    question: str = ""
    # No evaluation could be had (the call failed, or its answer is not one): taken as not triggered.
    errored: bool = False


def evaluation_of(answer: Any) -> Evaluation:
    """An evaluator's answer read as conductor reads it, a little stricter: `trigger` a boolean or the
    text "true"/"false"; anything else, or a trigger with no question to ask, is errored and does not
    trigger (conductor's fail-open: the agent's output stands)."""
    if not isinstance(answer, Mapping):
        return Evaluation(trigger=False, errored=True)
    trigger = answer.get("trigger")
    if isinstance(trigger, str) and trigger.strip().lower() in ("true", "false"):
        trigger = trigger.strip().lower() == "true"
    if not isinstance(trigger, bool):
        return Evaluation(trigger=False, errored=True)
    reason = _text(answer.get("reason"))
    question = _text(answer.get("question")).strip()
    if trigger and not question:
        return Evaluation(trigger=False, reason=reason, errored=True)
    return Evaluation(trigger=trigger, reason=reason, question=question if trigger else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return _truncated(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), QUESTION_CHARS)


def dialog_guidance(*, question: str, reply: str) -> str:
    """The section appended to a re-run's prompt: the conversation, as conductor frames it."""
    return (
        "\n\n## Dialog with the user\n"
        "After your previous answer you asked the user a question, and they replied. Use the reply to "
        "produce your final answer.\n\n"
        f"You asked:\n{question}\n\n"
        f"The user replied:\n{reply}\n"
    )


@dataclass(frozen=True)
class Reply:
    """A person's answer to the dialog's question: a reply that sends the agent back, or declined."""

    declined: bool
    text: str = ""

    def to_output(self) -> dict[str, Any]:
        return {"declined": True} if self.declined else {"declined": False, "text": self.text}


class ReplyInvalid(ValueError):
    """What is wrong with an answer to a dialog (the field, and the message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def reply_of(given: Mapping[str, Any]) -> Reply:
    """`{"text": "..."}` replies; `{"decline": true}` lets the agent's output stand. Raises ReplyInvalid."""
    text, decline = given.get("text"), given.get("decline")
    if decline is not None and not isinstance(decline, bool):
        raise ReplyInvalid("decline", "must be true or false")
    if decline and text is not None:
        raise ReplyInvalid("text", "a reply is either a text or declined, not both")
    if decline:
        return Reply(declined=True)
    if not isinstance(text, str) or not text.strip():
        raise ReplyInvalid("text", "required: a reply to the question, or 'decline': true")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyInvalid("text", f"at most {MAX_REPLY_CHARS:,} characters")
    return Reply(declined=False, text=text)
