"""Reading the ``workflow:`` section of a definition."""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ._section import Section
from ._values import kind_of, non_json_kind, show
from .bounds import MAX_CALL_TOKENS
from .errors import Problem
from .inputs import INPUT_TYPES, matches_type
from .limits import check_limits
from .model import InputSpec, LimitsSpec
from .pricing import UnitPrices

DEFAULT_PROVIDER = "fake"
MAX_TEMPERATURE = 2.0

_CONTEXT_UNSUPPORTED = "conductor's 'context' modes are not supported (every agent sees all earlier outputs)"
_WORKFLOW_KEYS = ("name", "description", "version", "entry_point", "input", "limits", "runtime", "cost")
_WORKFLOW_UNSUPPORTED = {
    "hooks": "'hooks' are not supported",
    "context": _CONTEXT_UNSUPPORTED,
    "context_mode": _CONTEXT_UNSUPPORTED,
}
_RUNTIME_KEYS = ("provider", "default_model", "max_tokens", "temperature", "stream")
_RUNTIME_UNSUPPORTED = {"mcp_servers": "'mcp_servers' are not supported"}
_INPUT_KEYS = ("type", "required", "default", "description")
# conductor's names, and `cached_input_per_mtok` (this service's older name for the cache-read rate).
_PRICE_KEYS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok", "cached_input_per_mtok")


@dataclass(frozen=True)
class Header:
    """The ``workflow:`` section; a field is None where it was missing or invalid."""

    name: str | None
    description: str
    version: str | None
    entry_point: str | None
    inputs: dict[str, InputSpec]
    limits: LimitsSpec
    provider: str
    default_model: str | None
    max_tokens: int | None
    temperature: float | None
    stream: bool
    pricing: dict[str, UnitPrices]
    priced_models: frozenset[str]  # every model under cost.pricing, even one whose prices are invalid


def read_header(top: Section, *, known_providers: Collection[str]) -> Header:
    workflow = top.section("workflow", keys=_WORKFLOW_KEYS, unsupported=_WORKFLOW_UNSUPPORTED, required=True)
    runtime = workflow.section("runtime", keys=_RUNTIME_KEYS, unsupported=_RUNTIME_UNSUPPORTED)
    cost = workflow.section("cost", keys=("pricing",))
    price_entries = cost.entries("pricing")
    return Header(
        name=workflow.text("name", required=True),
        description=workflow.text("description") or "",
        version=_version(workflow),
        entry_point=workflow.text("entry_point", required=True),
        inputs=_inputs(workflow),
        limits=_limits(workflow),
        provider=_provider(runtime, known_providers),
        default_model=runtime.text("default_model"),
        max_tokens=runtime.integer("max_tokens", minimum=1, maximum=MAX_CALL_TOKENS),
        temperature=runtime.number("temperature", minimum=0, maximum=MAX_TEMPERATURE),
        stream=runtime.flag("stream", default=False),
        pricing=_pricing(price_entries, workflow.problems),
        priced_models=frozenset(model for model, _, _ in price_entries),
    )


def _version(workflow: Section) -> str | None:
    value = workflow.data.get("version")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    workflow.report("version", f"must be a string or a number, not {kind_of(value)}")
    return None


def _inputs(workflow: Section) -> dict[str, InputSpec]:
    inputs = {}
    for name, raw, path in workflow.entries("input"):
        spec = Section(raw, path, workflow.problems, keys=_INPUT_KEYS)
        type_name = spec.text("type") or "string"
        if type_name not in INPUT_TYPES:
            spec.report("type", f"must be one of {', '.join(INPUT_TYPES)}, not {show(type_name)}")
        default = spec.data.get("default")
        if default is not None and type_name in INPUT_TYPES and not matches_type(default, type_name):
            spec.report("default", f"must be {INPUT_TYPES[type_name]} like the input, not {kind_of(default)}")
        elif default is not None and (bad := non_json_kind(default)):
            spec.report("default", f"must be plain JSON data, but holds {bad}")
        inputs[name] = InputSpec(
            name=name,
            type=type_name,
            required=spec.flag("required", default=True),  # conductor's default
            default=copy.deepcopy(default),
            has_default=default is not None,
            description=spec.text("description") or "",
        )
    return inputs


def _limits(workflow: Section) -> LimitsSpec:
    raw = workflow.data.get("limits")
    if raw is None:
        return LimitsSpec()
    cleaned, problems = check_limits(raw, path=workflow.at("limits"))
    workflow.problems.extend(problems)
    return LimitsSpec(**cleaned)


def _provider(runtime: Section, known_providers: Collection[str]) -> str:
    provider = runtime.text("provider") or DEFAULT_PROVIDER
    if provider not in known_providers:
        known = ", ".join(sorted(known_providers)) or "none"
        runtime.report("provider", f"unknown provider '{provider}' (known providers: {known})")
    return provider


def _pricing(entries: list[tuple[str, Any, str]], problems: list[Problem]) -> dict[str, UnitPrices]:
    pricing = {}
    for model, raw, path in entries:
        prices = Section(raw, path, problems, keys=_PRICE_KEYS, nullable=False)
        input_price = prices.money("input_per_mtok", required=True)
        output_price = prices.money("output_per_mtok", required=True)
        cache_read = prices.money("cache_read_per_mtok")
        if prices.data.get("cached_input_per_mtok") is not None:
            if cache_read is not None:
                prices.report("cached_input_per_mtok", "is another name for cache_read_per_mtok; give only one")
            cache_read = prices.money("cached_input_per_mtok")
        cache_write = prices.money("cache_write_per_mtok")
        if input_price is not None and output_price is not None:
            pricing[model] = UnitPrices(input_price, output_price, cache_read, cache_write)
    return pricing
