"""Model prices and USD cost arithmetic (Decimal only, never float)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from ._values import kind_of, show

MONEY_PLACES = Decimal("0.000001")
_TOKENS_PER_UNIT = Decimal(1_000_000)


@dataclass(frozen=True)
class UnitPrices:
    """USD per million tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None


def cost_usd(*, prices: UnitPrices, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
    """Actual cost of a call, rounded half-up to the micro-dollar."""
    if min(input_tokens, output_tokens, cached_input_tokens) < 0:
        raise ValueError("token counts must not be negative")
    if cached_input_tokens > input_tokens:
        raise ValueError("cached_input_tokens cannot exceed input_tokens")
    cached_price = prices.cached_input_per_mtok
    if cached_price is None:
        cached_price = prices.input_per_mtok
    total = (
        (input_tokens - cached_input_tokens) * prices.input_per_mtok
        + cached_input_tokens * cached_price
        + output_tokens * prices.output_per_mtok
    )
    return (total / _TOKENS_PER_UNIT).quantize(MONEY_PLACES, ROUND_HALF_UP)


def estimate_usd(*, prices: UnitPrices, input_tokens: int, max_output_tokens: int) -> Decimal:
    """Worst-case cost of a call before it is made, rounded up so a budget is never undercounted."""
    if min(input_tokens, max_output_tokens) < 0:
        raise ValueError("token counts must not be negative")
    total = input_tokens * prices.input_per_mtok + max_output_tokens * prices.output_per_mtok
    return (total / _TOKENS_PER_UNIT).quantize(MONEY_PLACES, ROUND_CEILING)


def to_decimal(value: object) -> Decimal:
    """Parse an amount exactly; ValueError for bools, non-numbers, NaN and infinities."""
    # bool is an int subclass, but `budget_usd: true` is a mistake, not one dollar.
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError(f"must be a number, not {kind_of(value)}")
    try:
        # str(float) is the shortest repr, so 0.1 from YAML becomes Decimal("0.1"), not 0.1000000000000000055...
        amount = Decimal(str(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"must be a number, not {show(value)}") from None
    if not amount.is_finite():
        raise ValueError(f"must be a finite number, not {show(value)}")
    return amount


def to_money(value: object) -> Decimal:
    """Parse an amount and round it half-up to 6 decimal places; the sign is not checked."""
    return quantize_money(to_decimal(value))


def quantize_money(amount: Decimal) -> Decimal:
    """Round to 6 places; ValueError when the amount has too many digits to represent."""
    try:
        return amount.quantize(MONEY_PLACES, ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError("is too large") from None


def to_exact_money(value: object) -> Decimal:
    """Parse an amount that must already fit in 6 decimal places: money is never silently rounded."""
    amount = to_decimal(value)
    rounded = quantize_money(amount)
    if rounded != amount:
        raise ValueError(f"has more than 6 decimal places: {show(value)}")
    return rounded
