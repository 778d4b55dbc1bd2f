"""Conductor's `session_key`: agents whose calls continue one conversation.

Every model call of an agent with a key sends, before its own prompt, the earlier exchanges of its
session: for each earlier completed execution in the run (in the same entry of the same
sub-workflow) of an agent with that key, the prompt it was sent and the answer it gave. Conductor
keeps the session in its claude-agent-sdk runtime; here the service replays it, so every provider
can. The rules that need no database live here; services/steps/sessions.py reads the exchanges.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ._values import kind_of
from .errors import TemplateFailure

# A key is a label, as an agent's name is.
MAX_SESSION_KEY_CHARS = 100
# The most characters of earlier prompts and answers one call may replay: about a million tokens,
# the largest context window of the models the price table lists (a rendered prompt alone is at most
# templates.MAX_OUTPUT_CHARS, a million characters). A longer session fails its next call before
# the gate: that call is neither made nor charged.
MAX_SESSION_HISTORY_CHARS = 4_000_000


def session_key_problem(value: object) -> str | None:
    """Why `value` cannot be a session_key (None when it can): a non-empty static label, which, as in
    conductor, is never rendered, so a template in it is refused."""
    if not isinstance(value, str):
        return f"must be a string, not {kind_of(value)}"
    key = value.strip()
    if not key:
        return "must not be empty"
    if len(key) > MAX_SESSION_KEY_CHARS:
        return f"is {len(key)} characters long; a session_key may have at most {MAX_SESSION_KEY_CHARS}"
    if "{{" in key or "{%" in key:
        return (
            f"{key[:60]!r} looks like a template, but a session_key is never rendered: it would be one "
            "literal key shared by every execution; use a static label"
        )
    return None


def answer_text(answer: Any) -> str:
    """An execution's answer as the assistant message that replays it: a text answer as it is, a
    structured one as the JSON text the model gave."""
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def history_text(exchanges: Iterable[tuple[str, str]]) -> str:
    """Earlier (prompt, answer) exchanges as text for the gate's token count; "" for none."""
    exchanges = list(exchanges)
    if not exchanges:
        return ""
    return json.dumps([{"user": prompt, "assistant": answer} for prompt, answer in exchanges], ensure_ascii=False)


class SessionTooLong(TemplateFailure):
    """A call's session would replay more than `limit` (MAX_SESSION_HISTORY_CHARS) characters."""

    error_type = "SessionTooLongError"

    def __init__(self, *, agent: str, key: str, chars: int, limit: int) -> None:
        super().__init__(f"agent '{agent}' session_key", f"{chars} characters")
        self.args = (
            f"The session '{key}' of agent '{agent}' holds more than {limit:,} characters of earlier prompts "
            f"and answers ({chars:,} read so far), more than one call may send again; the call was not made. "
            "Give the agent a new session_key, or let it run fewer times (max_iterations).",
        )


def shared_session_problem(*, first: str, second: str, key: str) -> str:
    """Why two members of a parallel group cannot have one session_key."""
    return (
        f"agents '{first}' and '{second}' both have session_key '{key}' and this group runs them at once: "
        "executions that may run concurrently cannot continue one session; give them distinct keys, or "
        "move one out of the group"
    )


def concurrent_session_problem(*, key: str, max_concurrent: int) -> str:
    """Why a for_each agent running several items at once cannot have a session_key."""
    return (
        f"the group runs up to {max_concurrent} items at once (max_concurrent), and every item's "
        f"execution would continue session '{key}': executions that may run concurrently cannot continue "
        "one session; set the group's max_concurrent: 1, or remove the session_key"
    )
