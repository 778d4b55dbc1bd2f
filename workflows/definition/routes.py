"""Routing: where a run goes once an agent or a group has ended, a pure function of the definition and the run's context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conditions import condition_holds
from .errors import NoRouteMatched, TemplateFailure
from .model import END, JINJA_CONDITIONS, AgentSpec, ForEachSpec, ParallelSpec, RouteSpec, StepSpec, WorkflowDefinition
from .run_output import output_value, parsed_text
from .templates import evaluate, render

__all__ = ["END", "Complete", "Fail", "GoTo", "Move", "next_agent", "next_move", "route_context"]

Source = AgentSpec | StepSpec | ParallelSpec | ForEachSpec


def route_context(source: Source, context: Mapping[str, Any]) -> dict[str, Any]:
    """What `source`'s routes see: the run's context and, as ``output``, the output of `source` itself
    (a group's result, for a group), as conductor's router adds it."""
    if source.name not in context or "output" in context:  # an agent stored as `output` before the name was reserved keeps it
        return dict(context)
    own = context[source.name]
    if not isinstance(source, (ParallelSpec, ForEachSpec)) and isinstance(own, Mapping):
        own = own.get("output")
    return {**context, "output": own}


def next_route(source: Source, context: Mapping[str, Any]) -> tuple[int, RouteSpec] | None:
    """The first route of an agent or group whose ``when`` is absent or holds, with its index, in
    the context `route_context` gives; None when it has no routes (the workflow ends)."""
    if not source.routes:
        return None
    for index, route in enumerate(source.routes):
        where = f"agent '{source.name}' routes[{index}].when"
        if route.when is None or _holds(route, context, where=where):
            return index, route
    raise NoRouteMatched(source.name)


def next_agent(source: Source, context: Mapping[str, Any]) -> str:
    """The target of the first route that holds; END without routes."""
    taken = next_route(source, route_context(source, context))
    return END if taken is None else taken[1].to


def _holds(route: RouteSpec, context: Mapping[str, Any], *, where: str) -> bool:
    if route.conditions == JINJA_CONDITIONS:  # a version stored before conductor's conditions
        return bool(evaluate(route.when, context, where=where))
    return condition_holds(route.when, context, where=where)


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


def next_move(definition: WorkflowDefinition, source: Source, context: Mapping[str, Any]) -> Move:
    """Where a run goes once `source` has ended, its output in `context`: to a route's target, or to
    the end with the workflow's output, over which the `$end` route's own ``output`` is laid."""
    routed = route_context(source, context)
    try:
        taken = next_route(source, routed)
        if taken is not None and taken[1].to != END:
            return GoTo(taken[1].to)
        output = {
            name: output_value(template, context, where=f"output '{name}'")
            for name, template in definition.output.items()
        }
        if taken is not None and taken[1].output:
            index, route = taken
            for name, template in route.output.items():
                where = f"agent '{source.name}' routes[{index}].output '{name}'"
                output[name] = parsed_text(render(template, routed, where=where))
        return Complete(output)
    except NoRouteMatched as exc:
        return Fail("RouteError", str(exc))
    except TemplateFailure as exc:
        return Fail("TemplateError", str(exc))
