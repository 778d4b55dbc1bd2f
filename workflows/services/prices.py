import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from workflows.definition import UnitPrices, to_exact_money
from workflows.errors import ValidationFailed
from workflows.models import Price

PRICE_SOURCE_WORKFLOW = "workflow"
PRICE_SOURCE_TABLE = "table"


def prices_for(*, model: str, pricing: dict[str, UnitPrices], on: date | None = None) -> tuple[UnitPrices | None, str]:
    """The unit prices a step of `model` is charged at, and where they came from.

    A workflow's own `cost.pricing` wins over the table; no price is (None, "").
    """
    if model in pricing:
        return pricing[model], PRICE_SOURCE_WORKFLOW
    row = (
        Price.objects.filter(model=model, valid_from__lte=on or timezone.now().date())
        .order_by("-valid_from")
        .first()
    )
    if row is None:
        return None, ""
    return (
        UnitPrices(
            input_per_mtok=row.input_per_mtok,
            output_per_mtok=row.output_per_mtok,
            cached_input_per_mtok=row.cached_input_per_mtok,
        ),
        PRICE_SOURCE_TABLE,
    )


def is_priced(model: str) -> bool:
    return Price.objects.filter(model=model, valid_from__lte=timezone.now().date()).exists()


@transaction.atomic
def prices_load(*, path: Path) -> int:
    """Create or update the price rows listed in a JSON file; answers how many rows it wrote.

    The file is `{"prices": [{"model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"?, "valid_from"}]}`.
    """
    try:
        entries = json.loads(Path(path).read_text())["prices"]
        rows = [_price_row(entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed(f"Cannot load prices from {path}: {exc}") from exc
    for row in rows:
        Price.objects.update_or_create(model=row.pop("model"), valid_from=row.pop("valid_from"), defaults=row)
    return len(rows)


def _price_row(entry: dict) -> dict:
    row = {
        "model": str(entry["model"]),
        "valid_from": date.fromisoformat(entry["valid_from"]),
        "input_per_mtok": _price(entry["input_per_mtok"]),
        "output_per_mtok": _price(entry["output_per_mtok"]),
        "cached_input_per_mtok": None,
    }
    if entry.get("cached_input_per_mtok") is not None:
        row["cached_input_per_mtok"] = _price(entry["cached_input_per_mtok"])
    return row


def _price(value) -> Decimal:
    price = to_exact_money(value)
    if price < 0:
        raise ValueError(f"a price cannot be negative: {value}")
    return price
