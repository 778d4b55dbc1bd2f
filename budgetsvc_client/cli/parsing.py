"""What the command line means: inputs as conductor reads them, spend dates, money, limits and durations.
Every value is checked here, before anything is sent: a bad one is a usage error (exit 2), never a
request the API refuses after the workflow was uploaded."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

# The API's bounds (workflows/definition/bounds.py, which this package cannot import: it is the service's;
# tests/cli/test_parsing.py checks that they agree).
MAX_BUDGET_USD = Decimal("1000000000")
MONEY_PLACES = 6
MAX_ITERATIONS = 500
MAX_TIMEOUT_SECONDS = 366 * 24 * 60 * 60


class UsageError(Exception):
    """A command line the arguments' types could not tell apart: exits 2 like argparse's."""


# Inputs, as `conductor run --input NAME=VALUE` reads them


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON has no {name}")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large for a JSON number")
    return number


def strict_json(text: str) -> Any:
    """JSON as the API reads it: no NaN, no Infinity, no number too large to be finite."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def input_value(text: str) -> Any:
    """conductor's reading of a `--input` value: true/false (any case) are booleans, null is None, text
    starting with [ or { that is JSON is that JSON, a whole number is an int, a number with a `.` a
    float, and anything else (`1e3` included) the string as typed. JSON holding NaN or an infinity is a
    UsageError: the API could not be sent it."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if text.startswith(("[", "{")):
        try:
            json.loads(text)
        except ValueError:
            pass  # not JSON: the text as typed
        else:
            try:
                return strict_json(text)
            except ValueError as error:
                raise UsageError(f"--input value {text!r}: {error}") from None
    try:
        number = float(text) if "." in text else int(text)
    except ValueError:
        return text
    # JSON has no NaN or infinity ("nan." or "inf." would read as one): those stay text.
    return number if not isinstance(number, float) or math.isfinite(number) else text


def parse_inputs(pairs: Sequence[str], *, input_file: Path | None = None) -> dict[str, Any]:
    """`--input-file`'s JSON object, then each `--input NAME=VALUE` over it (split at the first `=`)."""
    inputs: dict[str, Any] = {}
    if input_file is not None:
        try:
            loaded = strict_json(input_file.read_text(encoding="utf-8"))
        except OSError as error:
            raise UsageError(f"--input-file: cannot read {input_file}: {error.strerror}") from None
        except ValueError as error:  # UnicodeDecodeError included
            raise UsageError(f"--input-file: {input_file} is not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--input-file: {input_file} must hold a JSON object of inputs")
        inputs.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--input takes NAME=VALUE, not {pair!r}")
        inputs[name.strip()] = input_value(value.strip())
    return inputs


def conductor_input_flags(argv: Sequence[str]) -> list[str]:
    """conductor's other spelling, `--input.NAME=VALUE` (or `--input.NAME VALUE`), as `--input NAME=VALUE`."""
    args: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        match = re.fullmatch(r"--input\.([^=]+)(?:=(.*))?", arg, flags=re.DOTALL)
        if not match:
            args.append(arg)
            continue
        name, value = match.groups()
        if value is None:
            # conductor: the next argument is the value, unless it is an option; a bare flag is true.
            if index < len(argv) and not argv[index].startswith("-"):
                value = argv[index]
                index += 1
            else:
                value = "true"
        args += ["--input", f"{name}={value}"]
    return args


def answers(pairs: Sequence[str]) -> dict[str, str]:
    """`--answer ID=TEXT`, repeatable, as the questions' answers by id."""
    if any("=" not in pair for pair in pairs):
        raise UsageError("--answer takes ID=TEXT")
    return dict(pair.partition("=")[::2] for pair in pairs)


# Dates of `spend`

_AGO = re.compile(r"(\d{1,5})([hdw])")


def spend_date(text: str, *, now: datetime | None = None) -> str:
    """`--since`/`--until` as the API's UTC date: `7d`, `24h`, `2w` (the UTC day that long ago falls
    in), `today`, or an ISO 8601 date or time (its UTC date)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "today":
        return now.date().isoformat()
    if match := _AGO.fullmatch(text):
        count, unit = int(match[1]), match[2]
        delta = {"h": timedelta(hours=count), "d": timedelta(days=count), "w": timedelta(weeks=count)}[unit]
        return (now - delta).date().isoformat()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
        return (moment.astimezone(UTC) if moment.tzinfo else moment).date().isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 7d, 24h, 2w, today or an ISO date") from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


# Limits, as strict as the API's (docs/budgets.md)


def budget(text: str) -> Decimal:
    """Dollars, `0.50` or `$0.50`: above 0, at most MAX_BUDGET_USD, in whole micro-dollars."""
    cleaned = text.strip().removeprefix("$")
    try:
        amount = Decimal(cleaned) if "_" not in cleaned else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in dollars")
    if amount <= 0 or amount > MAX_BUDGET_USD:
        raise argparse.ArgumentTypeError(f"the budget must be above $0 and at most ${MAX_BUDGET_USD:,}, not {text}")
    if amount != amount.quantize(Decimal(1).scaleb(-MONEY_PLACES)):
        raise argparse.ArgumentTypeError(f"the budget has more than {MONEY_PLACES} decimal places: {text}")
    return amount


def whole_number(maximum: int | None = None):
    """An argparse type: a whole number from 1 to `maximum`."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if number < 1 or (maximum is not None and number > maximum):
            bound = f"1 to {maximum:,}" if maximum is not None else "at least 1"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
        return number

    return parse


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")


def seconds(text: str) -> float:
    """A duration above 0: `30` or `30s`, `5m`, `2h`."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not 0 < float(match[1]) < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration above 0 (30, 30s, 5m, 2h)")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2] or "s"]
