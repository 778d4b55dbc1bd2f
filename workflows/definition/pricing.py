"""Model prices and USD cost arithmetic (Decimal only, never float)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from ._values import kind_of, show

MONEY_PLACES = Decimal("0.000001")
_TOKENS_PER_UNIT = Decimal(1_000_000)


@dataclass(frozen=True)
class UnitPrices:
    """USD per million tokens of each kind.

    `cached_input_per_mtok` is the rate for input read from the provider's prompt cache (OpenAI's
    "cached input", Anthropic's "cache read"); `cache_write_per_mtok` the rate for input written to it
    (Anthropic's cache creation).
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    # Not a rate: the model's maximum output, which caps a step's estimate when nothing else does.
    max_output_tokens: int | None = None

    @property
    def cache_read_rate(self) -> Decimal:
        """Without a rate of its own, a cache read is billed as uncached input: every provider
        discounts cache reads, so this can overcharge but never undercharge."""
        return self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok

    @property
    def cache_write_rate(self) -> Decimal:
        """Without a rate of its own, a cache write is billed at twice the input rate, the highest
        premium any provider lists (Anthropic's 1-hour cache): an upper bound, never less than the truth."""
        if self.cache_write_per_mtok is None:
            return self.input_per_mtok * CACHE_WRITE_FALLBACK_MULTIPLIER
        return self.cache_write_per_mtok


# Without a listed cache-write rate, cache writes cost this multiple of the input rate (see UnitPrices).
CACHE_WRITE_FALLBACK_MULTIPLIER = 2


def cost_usd(
    *,
    prices: UnitPrices,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """Actual cost of a call, rounded half-up to the micro-dollar.

    The four counts are disjoint, so no token is billed twice: `input_tokens` is uncached input
    only, `cached_input_tokens` input read from the cache, `cache_write_tokens` input written to it,
    `output_tokens` everything generated, reasoning included.
    """
    if min(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens) < 0:
        raise ValueError("token counts must not be negative")
    total = (
        input_tokens * prices.input_per_mtok
        + cached_input_tokens * prices.cache_read_rate
        + cache_write_tokens * prices.cache_write_rate
        + output_tokens * prices.output_per_mtok
    )
    return (total / _TOKENS_PER_UNIT).quantize(MONEY_PLACES, ROUND_HALF_UP)


def estimate_usd(*, prices: UnitPrices, input_tokens: int, max_output_tokens: int) -> Decimal:
    """Worst-case cost of a call before it is made, rounded up so a budget is never undercounted.

    Any input token may turn out to be a cache write, so input is estimated at the dearest input rate
    listed. A model with no cache-write rate is one whose provider charges nothing extra for writes
    (OpenAI's automatic caching), so the fallback rate does not inflate its estimate.
    """
    if min(input_tokens, max_output_tokens) < 0:
        raise ValueError("token counts must not be negative")
    listed = (prices.input_per_mtok, prices.cached_input_per_mtok, prices.cache_write_per_mtok)
    input_rate = max(rate for rate in listed if rate is not None)
    total = input_tokens * input_rate + max_output_tokens * prices.output_per_mtok
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


# Providers whose prices a workflow sets freely: they are simulators and spend nothing real.
FREELY_PRICED_PROVIDERS = frozenset({"fake"})

# The rates a workflow's `cost.pricing` sets, by the key it is written under, and the rate billed.
_RATES = (
    ("input_per_mtok", lambda prices: prices.input_per_mtok),
    ("output_per_mtok", lambda prices: prices.output_per_mtok),
    ("cache_read_per_mtok", lambda prices: prices.cache_read_rate),
    ("cache_write_per_mtok", lambda prices: prices.cache_write_rate),
)


def rates_below(*, listed: UnitPrices, floor: UnitPrices) -> list[tuple[str, Decimal, Decimal]]:
    """Each rate `listed` would bill below `floor`, as (key, listed rate, floor rate).

    Rates are compared as billed, fallbacks included: a cache rate left out is billed at its fallback,
    which must not be below the floor's either.
    """
    below = []
    for key, billed in _RATES:
        if billed(listed) < billed(floor):
            below.append((key, billed(listed), billed(floor)))
    return below


USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")


def is_count(value: object) -> bool:
    """Whether a reported token count is a whole number that arithmetic can be done on (bool is an
    int to Python, never a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def usage_problem(counts: dict[str, object], *, max_tokens: int) -> str | None:
    """Why the token counts a provider reported cannot be billed as they are, or None.

    Each count must be a whole number from 0 to `max_tokens`, and so must their sum: more than any
    model's context is no usage a call can have had.
    """
    for field in USAGE_FIELDS:
        value = counts[field]
        if not is_count(value):
            return f"{field} is not a whole number"
        if value < 0:
            return f"{field} is negative"
        if value > max_tokens:
            return f"{field} is above {max_tokens:,} tokens"
    if sum(counts[field] for field in USAGE_FIELDS) > max_tokens:  # type: ignore[misc]
        return f"the counts add up to more than {max_tokens:,} tokens"
    return None


def worst_case_counts(*, prices: UnitPrices | None, input_tokens: int, max_output_tokens: int) -> dict[str, int]:
    """The token counts `estimate_usd` bills: every input token at the dearest input-side rate listed
    (so as a cache write when that is the dearest), and the whole output cap."""
    counts = dict.fromkeys(USAGE_FIELDS, 0)
    counts["output_tokens"] = max_output_tokens
    dearest = "input_tokens"
    if prices is not None:
        listed = {
            "input_tokens": prices.input_per_mtok,
            "cached_input_tokens": prices.cached_input_per_mtok,
            "cache_write_tokens": prices.cache_write_per_mtok,
        }
        dearest = max((kind for kind, rate in listed.items() if rate is not None), key=lambda kind: listed[kind])
    counts[dearest] = input_tokens
    return counts
