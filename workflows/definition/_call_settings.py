"""Reading what conductor lets an agent, or the runtime for all agents, say about its model call
beyond the prompt and the cap: reasoning effort, context tier and deadline (reasoning.py)."""

from __future__ import annotations

from ._section import Section
from ._values import show
from .bounds import MAX_TIMEOUT_SECONDS
from .reasoning import CONTEXT_TIERS, REASONING_EFFORTS, is_template
from .templates import compile_check

# Conductor's lower bound; the upper one is the longest run's, beyond which no deadline can matter.
_SECONDS = {"minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}


def _choice(section: Section, key: str, choices: tuple[str, ...], *, template: bool) -> str | None:
    """One of `choices` at `key`, or, where `template` allows, a template that compiles."""
    value = section.text(key)
    if value is None:
        return None
    if template and is_template(value):
        if error := compile_check(value):
            section.report(key, f"template does not compile: {error}")
            return None
        return value
    if value not in choices:
        written = " or a '{{ ... }}' template" if template else ""
        section.report(key, f"must be one of {', '.join(choices)}{written}, not {show(value)}")
        return None
    return value


# As in conductor, the runtime's defaults are literals; an agent's own may be a template.


def runtime_effort(runtime: Section) -> str | None:
    return _choice(runtime, "default_reasoning_effort", REASONING_EFFORTS, template=False)


def runtime_context_tier(runtime: Section) -> str | None:
    return _choice(runtime, "default_context_tier", CONTEXT_TIERS, template=False)


def runtime_session_seconds(runtime: Section) -> float | None:
    return runtime.number("max_session_seconds", **_SECONDS)


def agent_effort(section: Section, default: str | None) -> str | None:
    """`reasoning: {effort}`, else the runtime's default."""
    reasoning = section.section("reasoning", keys=("effort",))
    if not reasoning.is_mapping:
        return default
    if reasoning.data.get("effort") is None:
        reasoning.missing("effort")
        return None
    return _choice(reasoning, "effort", REASONING_EFFORTS, template=True)


def agent_context_tier(section: Section, default: str | None) -> str | None:
    tier = _choice(section, "context_tier", CONTEXT_TIERS, template=True)
    return default if section.data.get("context_tier") is None else tier


def agent_deadline(section: Section, runtime_session: float | None) -> float | None:
    """The seconds the agent's call may take: the least of its `timeout_seconds` and its
    `max_session_seconds`, which falls back to the runtime's. Both bound one call here."""
    timeout = section.number("timeout_seconds", **_SECONDS)
    session = section.number("max_session_seconds", **_SECONDS)
    if session is None and section.data.get("max_session_seconds") is None:
        session = runtime_session
    given = [seconds for seconds in (timeout, session) if seconds is not None]
    return min(given) if given else None
