"""Text a team may send: any Unicode a database column and a JSON answer can hold.

NUL cannot be stored in a PostgreSQL text or jsonb value, and a lone surrogate (half of a UTF-16 pair,
which JSON's "\\ud800" and YAML's "\\ud800" escapes can spell) cannot be encoded as UTF-8, so a saved
one would make every later answer that shows it fail. Both are refused where the text arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def unsafe_text_problem(text: str) -> str | None:
    """Why `text` cannot be accepted, or None."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"contains a NUL character (at {found.start()})"
    return f"contains a lone surrogate U+{ord(found.group()):04X} (at {found.start()}), which is not valid Unicode"


def unsafe_text_in(data: Any, *, path: str = "") -> tuple[str, str] | None:
    """(path, problem) of the first string in plain data, mapping keys included, that cannot be accepted."""
    stack: list[tuple[Any, str]] = [(data, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            problem = unsafe_text_problem(value)
            if problem:
                return where, problem
        elif isinstance(value, Mapping):
            for key, child in value.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and (problem := unsafe_text_problem(key)):
                    return where or "(key)", f"has a key that {problem}"
                stack.append((child, child_path))
        elif isinstance(value, (list, tuple)):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(value))
    return None
