import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.db.models import Case, Q, When
from django.utils import timezone

from workflows.definition import FREELY_PRICED_PROVIDERS, UnitPrices, to_exact_money
from workflows.definition.bounds import MAX_PRICE_PER_MTOK
from workflows.errors import ValidationFailed
from workflows.models import ModelAlias, Price, PriceSource, ToolPrice
from workflows.services.list_prices import list_prices

PRICE_SOURCE_WORKFLOW = "workflow"
PRICE_SOURCE_TABLE = "table"
PRICE_SOURCE_TEAM = "team"  # a tool's price set for the team alone


def tool_price_for(*, team_id: int, server: str, tool: str) -> tuple[Decimal, str] | None:
    """The price of one call of `tool` of the MCP server an operator's price names `server`
    (definition.tool_server_key), and where it came from: the team's own price (`team`), else the
    price for every team (`table`); None when the tool has no price, and costs nothing."""
    rows = ToolPrice.objects.filter(server=server, tool=tool).filter(Q(team_id=team_id) | Q(team__isnull=True))
    prices = dict(rows.values_list("team_id", "usd_per_call"))
    if team_id in prices:
        return prices[team_id], PRICE_SOURCE_TEAM
    if None in prices:
        return prices[None], PRICE_SOURCE_TABLE
    return None


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
        .order_by(
            # The model's own rows first: an alias never shadows a price listed under the name itself.
            Case(When(model=model, then=0), default=1),
            # Then a local override in force, however old, before any list price, however new.
            Case(When(source=PriceSource.LOCAL, then=0), default=1),
            "-valid_from",
        )
        .first()
    )


@dataclass(frozen=True)
class PricesLoaded:
    list_rows: int  # list prices written from genai-prices
    local_rows: int  # local overrides written from the file's `prices`
    list_rows_kept_local: int  # list prices not written: a local row holds their model and date

    @property
    def rows(self) -> int:
        return self.list_rows + self.local_rows


@transaction.atomic
def prices_load(*, path: Path) -> PricesLoaded:
    """Load the price table from a prices file, in one transaction.

    The file is `{"genai_prices"?: {PROVIDER: {MODEL: {"max_output_tokens"?, "aliases"?: [NAME]}}},
    "prices": [{"model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"?,
    "cache_write_per_mtok"?, "max_output_tokens"?, "valid_from"}], "aliases"?: {"ALIAS": "MODEL"}}`.
    Each model under `genai_prices` gets a list row per dated price that genai-prices gives it
    (list_prices.py) and its aliases; `prices` are local rows. Rows are created or updated by
    (model, valid_from): a list row never replaces a local one, a local row replaces a list one.
    Nothing is deleted, so every price that took effect stays in the table.
    """
    try:
        data = json.loads(Path(path).read_text())
        listed, list_aliases = _list_rows(data.get("genai_prices") or {})
        local = [_price_row(entry) for entry in data["prices"]]
        aliases = {**list_aliases, **_aliases(data.get("aliases") or {})}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed(f"Cannot load prices from {path}: {exc}") from exc
    kept_local = 0
    for row in listed:
        key = {"model": row.pop("model"), "valid_from": row.pop("valid_from")}
        if Price.objects.filter(**key, source=PriceSource.LOCAL).exists():
            kept_local += 1
            continue
        Price.objects.update_or_create(**key, defaults={**row, "source": PriceSource.LIST})
    for row in local:
        key = {"model": row.pop("model"), "valid_from": row.pop("valid_from")}
        Price.objects.update_or_create(**key, defaults={**row, "source": PriceSource.LOCAL})
    for alias, model in aliases.items():
        ModelAlias.objects.update_or_create(alias=alias, defaults={"model": model})
    return PricesLoaded(list_rows=len(listed) - kept_local, local_rows=len(local), list_rows_kept_local=kept_local)


def _list_rows(raw: dict) -> tuple[list[dict], dict[str, str]]:
    """The Price rows and aliases of the models a prices file takes from genai-prices."""
    if not isinstance(raw, dict):
        raise ValueError("genai_prices must map provider names to models")
    rows, aliases = [], {}
    for provider, models in raw.items():
        if not isinstance(models, dict):
            raise ValueError(f"genai_prices.{provider} must map model names to their settings")
        for model, spec in models.items():
            spec = {} if spec is None else spec
            if not isinstance(spec, dict):
                raise ValueError(f"genai_prices.{provider}.{model} must be a mapping of max_output_tokens and aliases")
            names = spec.get("aliases") or []
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise ValueError(f"genai_prices.{provider}.{model}.aliases must be a list of names")
            max_output = _max_output_tokens(spec.get("max_output_tokens"))
            for period in list_prices(provider=provider, model=model, aliases=names):
                row = {"model": model, "valid_from": period.valid_from, "max_output_tokens": max_output}
                for rate, value in period.rates.items():
                    row[rate] = None if value is None else _price(value)
                rows.append(row)
            aliases.update(_aliases(dict.fromkeys(names, model)))
    return rows, aliases


def _price_row(entry: dict) -> dict:
    row = {
        "model": str(entry["model"]),
        "valid_from": date.fromisoformat(entry["valid_from"]),
        "input_per_mtok": _price(entry["input_per_mtok"]),
        "output_per_mtok": _price(entry["output_per_mtok"]),
    }
    for rate in ("cached_input_per_mtok", "cache_write_per_mtok"):
        row[rate] = None if entry.get(rate) is None else _price(entry[rate])
    row["max_output_tokens"] = _max_output_tokens(entry.get("max_output_tokens"))
    return row


def _max_output_tokens(tokens) -> int | None:
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ValueError(f"max_output_tokens must be a whole number >= 1, not {tokens!r}")
    return tokens


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
