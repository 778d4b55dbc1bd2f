"""Choosing the next agent from an agent's routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import NoRouteMatched
from .model import END, AgentSpec, ForEachSpec, ParallelSpec
from .templates import evaluate

__all__ = ["END", "next_agent"]


def next_agent(agent: AgentSpec | ParallelSpec | ForEachSpec, context: Mapping[str, Any]) -> str:
    """The first route of an agent or group whose ``when`` is absent or truthy; without routes, the workflow ends."""
    if not agent.routes:
        return END
    for index, route in enumerate(agent.routes):
        if route.when is None or evaluate(route.when, context, where=f"agent '{agent.name}' routes[{index}].when"):
            return route.to
    raise NoRouteMatched(agent.name)
