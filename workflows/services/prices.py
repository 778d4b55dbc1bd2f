import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.db.models import Case, Q, When
from django.utils import timezone

from workflows.definition import FREELY_PRICED_PROVIDERS, UnitPrices, to_exact_money
from workflows.definition.bounds import MAX_PRICE_PER_MTOK
from workflows.errors import ValidationFailed
from workflows.models import ModelAlias, Price

PRICE_SOURCE_WORKFLOW = "workflow"
PRICE_SOURCE_TABLE = "table"


def prices_for(
    *, model: str, pricing: dict[str, UnitPrices], provider: str, may_override_prices: bool, on: date | None = None
) -> tuple[UnitPrices | None, str]:
    """The unit prices a step of `model` is charged at, and where they came from.

    The price table wins for every real provider: a workflow's own `cost.pricing` is used for a model
    the table lacks, for a simulated provider, or for a team an operator allowed to override prices.
    Prices are resolved when the step runs, so a model the table has priced since the workflow was
    uploaded is charged the table's price. The table answers for the model's own name, else for the
    model a listed alias names; a merely similar name never borrows a price. No price is (None, "").
    """
    workflow_wins = may_override_prices or provider in FREELY_PRICED_PROVIDERS
    if model in pricing and workflow_wins:
        return pricing[model], PRICE_SOURCE_WORKFLOW
    table = table_prices(model, on=on)
    if table is not None:
        return table, PRICE_SOURCE_TABLE
    if model in pricing:
        return pricing[model], PRICE_SOURCE_WORKFLOW
    return None, ""


def table_prices(model: str, *, on: date | None = None) -> UnitPrices | None:
    """The price table's prices of `model` in force on `on` (today by default), or None."""
    row = _price_row_in_force(model, on=on or timezone.now().date())
    if row is None:
        return None
    return UnitPrices(
        input_per_mtok=row.input_per_mtok,
        output_per_mtok=row.output_per_mtok,
        cached_input_per_mtok=row.cached_input_per_mtok,
        cache_write_per_mtok=row.cache_write_per_mtok,
        max_output_tokens=row.max_output_tokens,
    )


def is_priced(model: str) -> bool:
    return _price_row_in_force(model, on=timezone.now().date()) is not None


def _price_row_in_force(model: str, *, on: date) -> Price | None:
    aliased = ModelAlias.objects.filter(alias=model).values("model")
    return (
        Price.objects.filter(Q(model=model) | Q(model__in=aliased), valid_from__lte=on)
        # The model's own rows first: an alias never shadows a price listed under the name itself.
        .order_by(Case(When(model=model, then=0), default=1), "-valid_from")
        .first()
    )


@transaction.atomic
def prices_load(*, path: Path) -> int:
    """Create or update the price rows and aliases listed in a JSON file; answers how many price rows it wrote.

    The file is `{"prices": [{"model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"?,
    "cache_write_per_mtok"?, "max_output_tokens"?, "valid_from"}], "aliases"?: {"ALIAS": "MODEL"}}`.
    """
    try:
        data = json.loads(Path(path).read_text())
        rows = [_price_row(entry) for entry in data["prices"]]
        aliases = _aliases(data.get("aliases") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed(f"Cannot load prices from {path}: {exc}") from exc
    for row in rows:
        Price.objects.update_or_create(model=row.pop("model"), valid_from=row.pop("valid_from"), defaults=row)
    for alias, model in aliases.items():
        ModelAlias.objects.update_or_create(alias=alias, defaults={"model": model})
    return len(rows)


def _price_row(entry: dict) -> dict:
    row = {
        "model": str(entry["model"]),
        "valid_from": date.fromisoformat(entry["valid_from"]),
        "input_per_mtok": _price(entry["input_per_mtok"]),
        "output_per_mtok": _price(entry["output_per_mtok"]),
        "max_output_tokens": None,
    }
    for rate in ("cached_input_per_mtok", "cache_write_per_mtok"):
        row[rate] = None if entry.get(rate) is None else _price(entry[rate])
    if entry.get("max_output_tokens") is not None:
        tokens = entry["max_output_tokens"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"max_output_tokens must be a whole number >= 1, not {tokens!r}")
        row["max_output_tokens"] = tokens
    return row


def _aliases(raw: dict) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("aliases must map alias names to model names")
    if same := [alias for alias, model in raw.items() if alias == model]:
        raise ValueError(f"an alias cannot name itself: {same[0]}")
    return raw


def _price(value) -> Decimal:
    price = to_exact_money(value)
    if price < 0:
        raise ValueError(f"a price cannot be negative: {value}")
    if price > MAX_PRICE_PER_MTOK:
        raise ValueError(f"a price cannot be more than {MAX_PRICE_PER_MTOK} per million tokens: {value}")
    return price
