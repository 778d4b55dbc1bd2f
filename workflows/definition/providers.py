"""Provider names as a workflow writes them, and the backend each one reaches.

Conductor names its providers after the agent runtimes it drives (copilot, claude-agent-sdk,
hermes); this service calls model APIs. A name that is a model API (openai, claude) reaches that
API directly. The others reach one only through a route that the team, or the operator for every
team, has chosen: `{"copilot": "openai"}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_PROVIDER = "copilot"  # conductor's default, when a workflow names none

# The backends a route may lead to: real model APIs. The fake provider runs only when named.
BACKENDS = ("anthropic", "openai")
_DIRECT = {"openai": "openai", "claude": "anthropic", "anthropic": "anthropic", "fake": "fake"}
ROUTABLE = ("copilot", "claude-agent-sdk", "hermes")
_REFUSED = {
    "aca": "runs agents in an Azure Container Apps coding sandbox, which this service does not offer",
}
PROVIDER_NAMES = (*sorted(_DIRECT), *ROUTABLE, *sorted(_REFUSED))
# Copilot writes Claude's versions with a dot ("claude-sonnet-4.5"); Anthropic's API with a dash.
_COPILOT_CLAUDE = re.compile(r"(claude-[a-z]+-\d+)\.(\d+)")


def provider_problem(name: str, routes: Mapping[str, str]) -> str | None:
    """Why a workflow may not name provider `name` under `routes`, or None."""
    if name in _DIRECT or (name in ROUTABLE and routes.get(name) in BACKENDS):
        return None
    if name in _REFUSED:
        return f"provider '{name}' is not supported: it {_REFUSED[name]}"
    if name in ROUTABLE:
        return (
            f"provider '{name}' is not routed to a backend: map it to one of {', '.join(BACKENDS)} "
            "with PUT /api/v1/team/provider-routes, or on the team's page in the admin"
        )
    return f"unknown provider '{name}' (known providers: {', '.join(PROVIDER_NAMES)})"


def backend_of(name: str, routes: Mapping[str, str]) -> str:
    """The backend that provider `name` reaches under `routes`; KeyError if it reaches none."""
    return _DIRECT.get(name) or routes[name]


def model_for_backend(model: str, backend: str) -> str:
    """The name `backend`'s API knows `model` by: a Claude model written as Copilot writes it is
    asked of Anthropic by Anthropic's name. Prices and the ledger keep the name as written."""
    if backend == "anthropic" and (copilot := _COPILOT_CLAUDE.fullmatch(model)):
        return f"{copilot[1]}-{copilot[2]}"
    return model


def route_problems(routes: object) -> list[tuple[str, str]]:
    """(provider, message) for each route that cannot be kept; empty when `routes` is a valid map."""
    if not isinstance(routes, Mapping):
        return [("", "must be an object mapping provider names to backends")]
    problems = []
    for name, backend in routes.items():
        if name not in ROUTABLE:
            why = "it reaches its backend directly" if name in _DIRECT else "it is not a provider that can be routed"
            problems.append((str(name), f"cannot be routed: {why} (routable: {', '.join(ROUTABLE)})"))
        elif backend not in BACKENDS:
            problems.append((name, f"must route to one of {', '.join(BACKENDS)}, not {backend!r}"))
    return problems
