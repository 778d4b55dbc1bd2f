"""Reading what conductor lets an agent, or the runtime for all agents, say about its model call
beyond the prompt and the cap: its deadline."""

from __future__ import annotations

from ._section import Section
from .bounds import MAX_TIMEOUT_SECONDS

# Conductor's lower bound; the upper one is the longest run's, beyond which no deadline can matter.
_SECONDS = {"minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}


def runtime_session_seconds(runtime: Section) -> float | None:
    return runtime.number("max_session_seconds", **_SECONDS)


def agent_deadline(section: Section, runtime_session: float | None) -> float | None:
    """The seconds the agent's call may take: the least of its `timeout_seconds` and its
    `max_session_seconds`, which falls back to the runtime's. Both bound one call here."""
    timeout = section.number("timeout_seconds", **_SECONDS)
    session = section.number("max_session_seconds", **_SECONDS)
    if session is None and section.data.get("max_session_seconds") is None:
        session = runtime_session
    given = [seconds for seconds in (timeout, session) if seconds is not None]
    return min(given) if given else None
