"""Validating run limits and resolving them across the run, workflow-setting, workflow, team and system layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ._values import show, whole_number
from .bounds import MAX_BUDGET_USD, MAX_ITERATIONS, MAX_TIMEOUT_SECONDS
from .errors import Problem
from .pricing import to_exact_money

LIMIT_FIELDS = ("budget_usd", "budget_mode", "max_iterations", "timeout_seconds")
BUDGET_MODES = ("audit", "enforce")
SYSTEM_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"budget_usd": None, "budget_mode": "audit", "max_iterations": 10, "timeout_seconds": None}
)
# Highest precedence first. "workflow_setting" is the operator's budget for a workflow (Workflow.budget_usd and
# budget_mode): it outranks the definition's `limits`, which the team re-uploads at will, and yields to a run
# request that sets its own.
_LAYERS = ("run", "workflow_setting", "workflow", "team")
_NO_SETTING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ResolvedLimits:
    budget_usd: Decimal | None
    budget_mode: str
    max_iterations: int
    timeout_seconds: int | None
    sources: dict[str, str]  # field -> "run" | "workflow_setting" | "workflow" | "team" | "system"


def check_limits(raw: Mapping[str, Any], *, path: str) -> tuple[dict[str, Any], list[Problem]]:
    """The cleaned values of the limits present in ``raw``, plus every problem; None means "not set"."""
    if not isinstance(raw, Mapping):
        return {}, [Problem(path, "must be a mapping")]
    cleaned: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in _CLEANERS:
            problems.append(Problem(where, f"unknown key {show(key)} (expected one of: {', '.join(LIMIT_FIELDS)})"))
        elif value is not None:
            try:
                cleaned[key] = _CLEANERS[key](value)
            except ValueError as exc:
                problems.append(Problem(where, str(exc)))
    return cleaned, problems


def resolve_limits(
    *,
    run: Mapping[str, Any],
    workflow: Mapping[str, Any],
    team: Mapping[str, Any],
    workflow_setting: Mapping[str, Any] = _NO_SETTING,
) -> ResolvedLimits:
    """Per field, the first value set by the run, the workflow's setting, the workflow's definition or the
    team, else the system default; except that the workflow's setting is one budget and mode: a run's
    `budget_mode` replaces the setting's only with the run's own `budget_usd`."""
    if workflow_setting.get("budget_usd") is not None and run.get("budget_usd") is None:
        # Else a request's mode alone would turn the operator's enforced budget into a dry run.
        run = {field: value for field, value in run.items() if field != "budget_mode"}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in LIMIT_FIELDS:
        values[field], sources[field] = SYSTEM_DEFAULTS[field], "system"
        for source, layer in zip(_LAYERS, (run, workflow_setting, workflow, team), strict=True):
            if layer.get(field) is not None:
                values[field], sources[field] = layer[field], source
                break
    return ResolvedLimits(**values, sources=sources)


def _clean_budget(value: object) -> Decimal:
    amount = to_exact_money(value)
    if amount <= 0:
        raise ValueError(f"must be greater than 0, not {show(value)}")
    if amount > MAX_BUDGET_USD:
        raise ValueError(f"must be at most {MAX_BUDGET_USD}, not {show(value)}")
    return amount


def _clean_mode(value: object) -> str:
    if not isinstance(value, str) or value not in BUDGET_MODES:
        raise ValueError(f"must be 'audit' or 'enforce', not {show(value)}")
    return value


def _clean_iterations(value: object) -> int:
    return whole_number(value, minimum=1, maximum=MAX_ITERATIONS)


def _clean_timeout(value: object) -> int:
    return whole_number(value, minimum=1, maximum=MAX_TIMEOUT_SECONDS)


_CLEANERS: dict[str, Callable[[object], Any]] = {
    "budget_usd": _clean_budget,
    "budget_mode": _clean_mode,
    "max_iterations": _clean_iterations,
    "timeout_seconds": _clean_timeout,
}
