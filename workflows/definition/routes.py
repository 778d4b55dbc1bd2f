"""Routing: where a run goes once an agent or a group has ended, a pure function of the definition and the run's context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import NoRouteMatched, TemplateFailure
from .model import END, AgentSpec, ForEachSpec, ParallelSpec, WorkflowDefinition
from .templates import evaluate, render_value

__all__ = ["END", "Complete", "Fail", "GoTo", "Move", "next_agent", "next_move"]


def next_agent(agent: AgentSpec | ParallelSpec | ForEachSpec, context: Mapping[str, Any]) -> str:
    """The first route of an agent or group whose ``when`` is absent or truthy; without routes, the workflow ends."""
    if not agent.routes:
        return END
    for index, route in enumerate(agent.routes):
        if route.when is None or evaluate(route.when, context, where=f"agent '{agent.name}' routes[{index}].when"):
            return route.to
    raise NoRouteMatched(agent.name)


@dataclass(frozen=True)
class GoTo:
    """Enter the agent or group `target`."""

    target: str


@dataclass(frozen=True)
class Complete:
    """End the run with `output`, the workflow's output section rendered."""

    output: dict[str, Any]


@dataclass(frozen=True)
class Fail:
    """Fail the run: no route matched, a template failed, or a step ended it (with the run's `output`)."""

    error_type: str  # "RouteError", "TemplateError", or a kind's own
    message: str
    output: dict[str, Any] | None = None


Move = GoTo | Complete | Fail


def next_move(definition: WorkflowDefinition, source: AgentSpec | ParallelSpec | ForEachSpec, context: Mapping[str, Any]) -> Move:
    """Where a run goes once `source` has ended, its output in `context`."""
    try:
        target = next_agent(source, context)
        if target != END:
            return GoTo(target)
        return Complete(
            {
                name: render_value(template, context, where=f"output '{name}'")
                for name, template in definition.output.items()
            }
        )
    except NoRouteMatched as exc:
        return Fail("RouteError", str(exc))
    except TemplateFailure as exc:
        return Fail("TemplateError", str(exc))
