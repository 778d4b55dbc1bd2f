"""Conductor's context modes: which earlier outputs an agent's templates see.

- `accumulate` (the default): every output so far.
- `last_only`: the output of the agent or group that ran just before it.
- `explicit`: only what its `input:` list declares (`workflow.input.x`, `agent.output[.field]`,
  `group.outputs...`, each optionally ending in `?`). A declared field shows the agent's whole
  output. Workflow inputs too are seen only when declared.

Workflow's name, `context.iteration` and `budget` are seen in every mode. The modes apply to agents,
whose prompts they shape (and so the cost estimate); steps of other kinds and route conditions see
every output, as with `accumulate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import TemplateFailure

CONTEXT_MODES = ("accumulate", "last_only", "explicit")
_ALWAYS = ("context", "budget")


def declared_roots(references: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The agents and groups, and the workflow inputs, that an `input:` list declares."""
    nodes, inputs = set(), set()
    for reference in references:
        parts = reference.rstrip("?").split(".")
        if parts[0] == "workflow":
            inputs.add(parts[2])
        else:
            nodes.add(parts[0])
    return frozenset(nodes), frozenset(inputs)


def context_for_agent(
    context: Mapping[str, Any], *, mode: str, references: Iterable[str], last: str | None, where: str
) -> dict[str, Any]:
    """What an agent sees of the run's `context` in `mode`; `last` is what ran just before it.
    Raises TemplateFailure for a declared reference (not ending in `?`) that has not run."""
    if mode == "accumulate":
        return dict(context)
    seen = {name: context[name] for name in _ALWAYS if name in context}
    if mode == "last_only":
        seen["workflow"] = context["workflow"]
        if last is not None and last in context:
            seen[last] = context[last]
        return seen
    references = list(references)
    nodes, inputs = declared_roots(references)
    given = context["workflow"]["input"]
    seen["workflow"] = {**context["workflow"], "input": {name: given.get(name) for name in inputs}}
    for reference in references:
        root = reference.rstrip("?").split(".")[0]
        if root == "workflow" or root not in nodes:
            continue
        if root in context:
            seen[root] = context[root]
        elif not reference.endswith("?"):
            raise TemplateFailure(where, f"'{reference}' is declared in its input but has not run")
    return seen
