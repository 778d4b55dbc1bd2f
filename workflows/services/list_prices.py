"""Public list prices, read from the genai-prices package's bundled table: no database, no network.

genai-prices (pydantic's) ships its table as Python data inside the package. Its `UpdatePrices`,
which fetches a newer table over HTTP, is never started here: the table read is always the one of
the installed release, so a price changes only when the lock takes a new release.

How its prices become rows of the Price table:
- a model's prices are a list of periods; the first applies from the start (it has no date), each
  later one from its `start_date`. The first is dated `FIRST_PRICE_FROM`, the rest by their date;
- of each period, the rates this service bills: input, output, cache read, cache write (the
  5-minute rate). A rate with long-context tiers is taken at its base (below the tier's threshold;
  docs/configuration.md#prices says what that leaves out). Prices for other units (web searches,
  audio, images) and per-request variants (batch, flex and priority tiers) are not read: the service
  makes none of those calls;
- its numbers are `Decimal`; each must fit in 6 decimal places, or the load is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib.metadata import version

# The date a model's first price in genai-prices is loaded as valid from: genai-prices gives none
# (its first price applies whenever no later one does), and every run is later than this.
FIRST_PRICE_FROM = date(2000, 1, 1)

_RATES = (
    ("input_per_mtok", "input_mtok"),
    ("output_per_mtok", "output_mtok"),
    ("cached_input_per_mtok", "cache_read_mtok"),
    ("cache_write_per_mtok", "cache_write_mtok"),
)


class ListPriceError(ValueError):
    """A model or name genai-prices cannot price as the prices file says."""


@dataclass(frozen=True)
class ListPrice:
    """One period of a model's list price, as a Price row takes it."""

    model: str
    valid_from: date
    rates: dict[str, object]  # as genai-prices gives them (Decimal), None for a rate it does not list


def genai_prices_version() -> str:
    return version("genai-prices")


def list_prices(*, provider: str, model: str, aliases: list[str]) -> list[ListPrice]:
    """The dated list prices of `model` at `provider`, oldest first.

    Every alias must be a name genai-prices knows as the same model: a name is priced only when it
    is listed, but never listed as another model's."""
    found = _find(provider, model)
    for alias in aliases:
        if (other := _find(provider, alias)).id != found.id:
            raise ListPriceError(f"genai-prices prices '{alias}' as '{other.id}', not as '{model}' ('{found.id}')")
    return [ListPrice(model=model, valid_from=start, rates=_rates(model, prices)) for start, prices in _periods(found)]


def _find(provider: str, name: str):
    try:
        _, found = _snapshot().find_provider_model(name, None, provider, None)
    except LookupError:
        raise ListPriceError(f"genai-prices {genai_prices_version()} has no model '{name}' at provider '{provider}'") from None
    return found


@cache
def _snapshot():
    """The table bundled with the installed release, never one that UpdatePrices fetched."""
    from genai_prices import data
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=data.providers, from_auto_update=False)


def _periods(found) -> list[tuple[date, object]]:
    from genai_prices.types import ModelPrice, StartDateConstraint

    if isinstance(found.prices, ModelPrice):
        return [(FIRST_PRICE_FROM, found.prices)]
    periods = [(FIRST_PRICE_FROM, found.prices[0].prices)]
    for conditional in found.prices[1:]:
        # genai-prices tries its periods last to first; read as dated rows, their dates must grow.
        constraint = conditional.constraint
        if not isinstance(constraint, StartDateConstraint) or constraint.start_date <= periods[-1][0]:
            raise ListPriceError(f"genai-prices prices '{found.id}' by {constraint!r}, which is not a later start date")
        periods.append((constraint.start_date, conditional.prices))
    return periods


def _rates(model: str, prices) -> dict[str, object]:
    from genai_prices.types import TieredPrices

    rates = {}
    for field, key in _RATES:
        value = getattr(prices, key, None)
        # Decimal in every release read so far; prices_load converts whatever comes exactly (a float
        # by its shortest repr) and refuses more than 6 decimal places.
        rates[field] = value.base if isinstance(value, TieredPrices) else value
    if rates["input_per_mtok"] is None or rates["output_per_mtok"] is None:
        raise ListPriceError(f"genai-prices lists no input or output price per token for '{model}'")
    return rates
