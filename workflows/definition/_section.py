"""Typed reads from one mapping of a definition, recording problems instead of raising."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ._values import kind_of, show, whole_number
from .bounds import MAX_PRICE_PER_MTOK
from .errors import Problem
from .pricing import to_exact_money

_NOTHING_UNSUPPORTED: Mapping[str, str] = MappingProxyType({})
_NOTHING_IGNORED: Mapping[str, Callable[[Section, str], None]] = MappingProxyType({})


class Section:
    """One mapping under validation, at ``path``; ``nullable`` lets null stand for an empty one.

    Each read returns None (or a fallback) after recording a problem, so validation goes on
    and every mistake is reported at once. A key outside ``keys`` is checked by its function in
    ``ignored`` (then has no effect), refused with its reason in ``unsupported``, or is unknown.
    """

    def __init__(
        self,
        raw: object,
        path: str,
        problems: list[Problem],
        *,
        keys: Collection[str],
        unsupported: Mapping[str, str] = _NOTHING_UNSUPPORTED,
        ignored: Mapping[str, Callable[[Section, str], None]] = _NOTHING_IGNORED,
        nullable: bool = True,
    ) -> None:
        self.path = path
        self.problems = problems
        # Only a real mapping reports its missing required keys; an absent one was reported above it.
        self.is_mapping = isinstance(raw, Mapping)
        self.data: Mapping[Any, Any] = raw if isinstance(raw, Mapping) else {}
        if not self.is_mapping and (raw is not None or not nullable):
            problems.append(Problem(path, f"must be a mapping, not {kind_of(raw)}"))
        for key in self.data:
            if not isinstance(key, str):
                problems.append(Problem(path or "definition", f"keys must be strings, not {show(key)}"))
            elif key in keys:
                continue  # a key the section implements wins over any refusal written for it
            elif key in ignored:
                ignored[key](self, key)
            elif key in unsupported:
                self.report(key, f"'{key}' is not supported: {unsupported[key]}")
            else:
                self.report(key, _unknown_key(key, keys))

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def report(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.at(key), message))

    def missing(self, key: str) -> None:
        if self.is_mapping:
            self.report(key, "is required")

    def section(
        self,
        key: str,
        *,
        keys: Collection[str],
        unsupported: Mapping[str, str] = _NOTHING_UNSUPPORTED,
        ignored: Mapping[str, Callable[[Section, str], None]] = _NOTHING_IGNORED,
        required: bool = False,
    ) -> Section:
        """The nested mapping at ``key``; empty when absent."""
        if required and self.data.get(key) is None:
            self.missing(key)
        return Section(
            self.data.get(key), self.at(key), self.problems, keys=keys, unsupported=unsupported, ignored=ignored
        )

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.missing(key)
            return None
        if not isinstance(value, str):
            self.report(key, f"must be a string, not {kind_of(value)}")
            return None
        if required and not value.strip():
            self.report(key, "must not be empty")
            return None
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        try:
            return whole_number(value, minimum=minimum, maximum=maximum)
        except ValueError as exc:
            self.report(key, str(exc))
            return None

    def number(self, key: str, *, minimum: float, maximum: float) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or (isinstance(value, float) and not math.isfinite(value)):
            self.report(key, f"must be a number, not {kind_of(value)}")
            return None
        if not minimum <= value <= maximum:
            self.report(key, f"must be between {minimum:g} and {maximum:g}, not {show(value)}")
            return None
        return float(value)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.report(key, f"must be true or false, not {kind_of(value)}")
            return default
        return value

    def money(self, key: str, *, required: bool = False) -> Decimal | None:
        """A price: a non-negative USD amount per million tokens with at most 6 decimal places."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.missing(key)
            return None
        try:
            amount = to_exact_money(value)
        except ValueError as exc:
            self.report(key, str(exc))
            return None
        if amount < 0:
            self.report(key, f"must not be negative, not {show(value)}")
            return None
        if amount > MAX_PRICE_PER_MTOK:
            self.report(key, f"must be at most {MAX_PRICE_PER_MTOK}, not {show(value)}")
            return None
        return amount

    def sequence(self, key: str, *, required: bool = False) -> list[Any]:
        """The list at ``key``; empty when absent or not a list."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.missing(key)
            return []
        if not isinstance(value, list):
            self.report(key, f"must be a list, not {kind_of(value)}")
            return []
        return value

    def entries(self, key: str) -> list[tuple[str, Any, str]]:
        """``(name, value, path)`` for each entry of a mapping whose keys are names the author chose."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, Mapping):
            self.report(key, f"must be a mapping, not {kind_of(value)}")
            return []
        entries = []
        for name, item in value.items():
            if isinstance(name, str) and name:
                entries.append((name, item, f"{self.at(key)}.{name}"))
            else:
                self.report(key, f"names must be non-empty strings, not {show(name)}")
        return entries


def _unknown_key(key: str, keys: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.75)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (expected one of: {', '.join(keys)})"
