"""Conductor's keys that a definition here may not use, each with the reason it is refused, and the
few it may use that change nothing here, each checked and then ignored.

A refused key is reported at its path as "'KEY' is not supported: REASON" (Section does the
wording). A key a section implements is never refused, whatever these maps say, so implementing a
key is only adding it to the section's keys. docs/conductor.md lists every key of both kinds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from ._section import Section
from .errors import Problem

# --- refused: what each key would need that this service does not have ------------------------

_CONTEXT = "conductor's docs show it, but its schema reads the context mode from 'context: {mode: ...}'"
_SKILLS = (
    "skills are files a coding-agent runtime loads into an agent's session; an agent here is one "
    "model call that sees only its prompts (put what it needs to know in its system_prompt)"
)
_PLUGINS = (
    "plugins (skills, subagents and MCP servers) are installed into a coding-agent runtime; an agent "
    "here is one model call that sees only its prompts"
)
_WORKING_DIR = (
    "it is a directory on the machine a coding agent works in; agents here never see the worker's "
    "files, and an MCP server started on a worker runs in a scratch directory of its own"
)

TOP_UNSUPPORTED = {"mcp_servers": "MCP servers are written under workflow.runtime.mcp_servers"}

WORKFLOW_UNSUPPORTED = {
    "context_mode": _CONTEXT,
    "hooks": (
        "conductor's lifecycle hooks run on the machine that runs the workflow; follow a run through "
        "its events and the team's webhook instead"
    ),
    "instructions": (
        "it prepends a coding agent's workspace files to every prompt, and a workflow here reads no "
        "files; write the text into each agent's system_prompt"
    ),
}

RUNTIME_UNSUPPORTED = {
    "timeout": (
        "a call's deadline is written as workflow.runtime.max_session_seconds (or an agent's "
        "timeout_seconds), within the operator's PROVIDER_TIMEOUT_SECONDS; bound the run with "
        "workflow.limits.timeout_seconds"
    ),
    "working_dir": _WORKING_DIR,
    "skills": _SKILLS,
    "skill_injection": "it sizes the skill text injected into prompts, and skills are not supported",
    "skill_discovery": (
        "it scans the machine for installed skills; a workflow here never reads the worker's files, "
        "and skills are not supported"
    ),
    "plugins": _PLUGINS,
    "plugin_sources": "it names where a coding-agent runtime fetches plugins from, and plugins are not supported",
}

# Fields of conductor's other step kinds: on an agent they are a mistake, whatever the service runs.
_STEP_FIELDS = {
    "script": ("command", "args", "env", "stdin", "timeout"),
    "wait": ("duration",),
    "set": ("value", "values", "output_type"),
    "workflow": ("workflow", "input_mapping", "max_depth"),
    "human_gate": ("options",),
    "questions": ("questions", "source", "allow_back", "allow_skip", "allow_skip_all", "allow_abort", "abort_route"),
    "terminate": ("status", "output_template"),
}
STEP_FIELDS = tuple(key for keys in _STEP_FIELDS.values() for key in keys) + ("reason",)

AGENT_UNSUPPORTED = {
    "output_mode": (
        "not implemented yet: an agent with 'output' answers that schema, one without it answers text "
        "(conductor's 'raw' mode would wrap the text as {result: ...})"
    ),
    "retry": (
        "retries are the service's: a transient provider error is retried up to the operator's "
        "PROVIDER_MAX_RETRIES times with backoff, each attempt gated and charged"
    ),
    "sandbox": "it configures the 'aca' sandbox provider's session, and that provider is not supported",
    "working_dir": _WORKING_DIR,
    "skills": _SKILLS,
    "plugins": _PLUGINS,
    **{
        key: f"it is a field of conductor's '{kind}' steps, not of an agent"
        for kind, keys in _STEP_FIELDS.items()
        for key in keys
    },
    "reason": "it is a field of conductor's 'wait' and 'terminate' steps, not of an agent",
}


def no_call_unsupported(kind: str) -> dict[str, str]:
    """What a step of a kind that makes no model call may not have, as conductor refuses it there."""
    return {
        "session_key": (
            f"a '{kind}' step makes no model call, so it has no conversation to continue; only an "
            "agent's calls continue a session"
        )
    }


def fields_of_other_kinds(raw: object) -> tuple[str, ...]:
    """The fields of conductor's other step kinds, for an entry whose `type` names one this service
    does not run: that type is refused, and its kind's fields need no refusal of their own."""
    is_other = isinstance(raw, Mapping) and isinstance(raw.get("type"), str) and raw["type"] != "agent"
    return STEP_FIELDS if is_other else ()


# --- ignored: checked like conductor checks them, then without effect (docs/conductor.md says why) --

Check = Callable[[Section, str], None]


def _whole(minimum: int, maximum: int | None = None) -> Check:
    return lambda section, key: section.integer(key, minimum=minimum, maximum=maximum) and None


def _flag(section: Section, key: str) -> None:
    section.flag(key, default=False)


def _mapping(section: Section, key: str) -> None:
    section.entries(key)


def _block(**fields: Check) -> Check:
    return lambda section, key: section.section(key, keys=(), ignored=fields) and None


TOP_IGNORED: Mapping[str, Check] = {}
WORKFLOW_IGNORED: Mapping[str, Check] = {"metadata": _mapping}
RUNTIME_IGNORED: Mapping[str, Check] = {
    # A checkpoint is saved after every step here, always.
    "checkpoint": _block(every_agent=_flag, every_seconds=_whole(1), keep_last=_whole(1, 100)),
}
COST_IGNORED: Mapping[str, Check] = {"show_per_agent": _flag, "show_summary": _flag}
AGENT_IGNORED: Mapping[str, Check] = {}

# --- ${VAR} interpolation --------------------------------------------------------------------------

# Conductor's pattern: it replaces ${VAR} and ${VAR:-default} in every string value before parsing.
_ENVIRONMENT_VARIABLE = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def is_environment_reference(value: object) -> bool:
    """Whether `value` is one `${VAR}` or `${VAR:-default}` and nothing else."""
    return isinstance(value, str) and _ENVIRONMENT_VARIABLE.fullmatch(value.strip()) is not None


def interpolation_in(value: str) -> str | None:
    """The first `${VAR}` of `value` that conductor would fill in from its environment; None if none."""
    match = _ENVIRONMENT_VARIABLE.search(value)
    return None if match is None else match.group(0)


def interpolation_problems(data: Any, path: str = "", *, accepted: Collection[str] = ()) -> Iterator[Problem]:
    """A problem for each string value that conductor would fill in from its environment, but at the
    paths `accepted` (a registered MCP server's headers, definition/tools.py)."""
    stack: list[tuple[Any, str]] = [(data, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if (match := _ENVIRONMENT_VARIABLE.search(value)) and where not in accepted:
                yield Problem(where or "definition", interpolation_message(match.group(0)))
        elif isinstance(value, Mapping):
            stack.extend(
                (item, f"{where}.{key}" if where else key) for key, item in reversed(value.items()) if isinstance(key, str)
            )
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]") for index, item in reversed(list(enumerate(value))))


def interpolation_message(text: str) -> str:
    """Why `text`, one `${VAR}` or `${VAR:-default}`, is refused."""
    match = _ENVIRONMENT_VARIABLE.fullmatch(text)
    assert match is not None
    name, default = match.groups()
    instead = (
        f"write the value in place (its default here is '{default}')"
        if default is not None
        else "write the value in place"
    )
    return (
        f"'{match.group(0)}' would read the environment variable '{name}': a workflow here never reads "
        f"the environment of the service's machines; {instead}, or make it a workflow input and use "
        "{{ workflow.input.NAME }} in a template"
    )
