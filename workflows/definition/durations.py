"""Durations as conductor writes them: seconds as a number, or text like "500ms", "60s", "2.5m", "1h"."""

from __future__ import annotations

import math
import re

MAX_WAIT_SECONDS = 24 * 3600  # conductor's bound on a wait

_WRITTEN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def wait_seconds(value: object) -> float:
    """The seconds a wait of `value` lasts; ValueError saying why it is no such wait."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be seconds or text like '60s', '5m', '1h', '500ms', not {type(value).__name__}")
    if isinstance(value, str):
        written = _WRITTEN.fullmatch(value)
        if written is None:
            raise ValueError(f"{value[:40]!r} is not a duration like '60s', '5m', '1h' or '500ms'")
        seconds = float(written[1]) * _UNIT_SECONDS[written[2] or "s"]
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WAIT_SECONDS):
        raise ValueError(f"must be more than 0 and at most 24h, not {value!r}")
    return seconds
