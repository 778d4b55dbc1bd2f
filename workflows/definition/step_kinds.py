"""Kinds of step beside 'agent': the readers that validate their fields in a definition.

A kind of step is one module (docs/architecture.md, "Step kinds"). Its engine side registers, with
`register_step_reader`, the reader here that checks the fields its steps may have. The parser then
accepts an entry of `agents:` whose `type` names the kind, keeps its checked fields as JSON data in a
`StepSpec`, and refuses any `type` no kind has registered, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ._section import Section

# What every step has whatever its kind; a kind's reader reads the rest of the entry.
COMMON_KEYS = ("name", "description", "type", "routes")


class StepReader(Protocol):
    name: str  # the `type` that names the kind in a definition
    keys: tuple[str, ...]  # its own fields, beside COMMON_KEYS

    def read(self, section: Section) -> Mapping[str, Any] | None:
        """The step's own fields, checked, as JSON data; None after reporting problems on `section`."""

    def targets(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, name) of each agent or group its fields route to, checked as `routes` are."""

    def templates(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, template) of each template among its fields, whose names are resolved at upload."""

    def route_templates(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The same for templates rendered as it routes, which see its own output."""


_readers: dict[str, StepReader] = {}


def register_step_reader(reader: StepReader) -> None:
    _readers[reader.name] = reader


def unregister_step_reader(name: str) -> None:
    _readers.pop(name, None)


def step_reader(name: object) -> StepReader | None:
    return _readers.get(name) if isinstance(name, str) else None


def step_kind_names() -> tuple[str, ...]:
    return tuple(sorted(_readers))
