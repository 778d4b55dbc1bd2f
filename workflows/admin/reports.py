"""The admin's spend reports: ledger entries filtered and aggregated in the database."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from workflows.admin.base import format_usd
from workflows.admin.charts import period_budget_svg
from workflows.models import LedgerEntry, Run, Team, Workflow
from workflows.reports.forecast import BudgetForecast
from workflows.selectors import ESTIMATED_USD, TeamBudgetStatus, team_budget_status, team_forecast
from workflows.services.periods import PeriodWindow

ZERO = Decimal("0")
MAX_SERIES_DAYS = 400

# What every breakdown row and the totals count. Unpriced entries add no dollars, so they are counted apart,
# per ledger entry as Run.unpriced_steps counts them (and workflows.reports.spend does).
TOTALS = {
    "spend_usd": Sum("cost_usd", default=ZERO),
    "runs": Count("run", distinct=True),
    "steps": Count("step", distinct=True),
    "input_tokens": Sum("input_tokens", default=0),
    "output_tokens": Sum("output_tokens", default=0),
    "unpriced_steps": Count("pk", filter=Q(cost_usd__isnull=True)),
}

# The keys each breakdown groups by; names differ from LedgerEntry's fields, which values() requires.
GROUPS = {
    "day": {"day": TruncDate("booked_at", tzinfo=UTC)},
    "team": {"team_pk": F("team"), "team_name": F("team__name")},
    "workflow": {
        "workflow_id": F("run__workflow_version__workflow"),
        "workflow_name": F("run__workflow_version__workflow__name"),
        "team_name": F("team__name"),
    },
    "model": {"model_name": F("model")},
    "agent": {
        "workflow_id": F("run__workflow_version__workflow"),
        "workflow_name": F("run__workflow_version__workflow__name"),
        "team_name": F("team__name"),
        "agent_name": F("agent"),
    },
    # Priced tools by server and tool; every model call in one row, whose server and tool are "".
    "tool": {"server_name": F("tool_server"), "tool_name": F("tool")},
}


@dataclass(frozen=True)
class SpendQuery:
    team: Team | None = None
    workflow: Workflow | None = None
    model: str = ""
    since: date | None = None
    until: date | None = None  # inclusive


def day_start(day: date) -> datetime:
    # Days are UTC calendar days, as team budget periods are.
    return datetime.combine(day, time.min, tzinfo=UTC)


def ledger_for(query: SpendQuery, *, entries: QuerySet[LedgerEntry]) -> QuerySet[LedgerEntry]:
    """`entries` (the ledger the user may see) narrowed by the query."""
    # Date bounds on booked_at itself, not booked_at__date, so the (team, booked_at) index serves them.
    # A correction or an adjustment is dated as the entry it corrects, as period budgets date it.
    entries = entries.order_by()
    if query.team is not None:
        entries = entries.filter(team=query.team)
    if query.workflow is not None:
        entries = entries.filter(run__workflow_version__workflow=query.workflow)
    if query.model:
        entries = entries.filter(model=query.model)
    if query.since is not None:
        entries = entries.filter(booked_at__gte=day_start(query.since))
    if query.until is not None and query.until < date.max:  # date.max has no next day, and nothing is later
        entries = entries.filter(booked_at__lt=day_start(query.until + timedelta(days=1)))
    return entries


def spend_totals(*, entries: QuerySet[LedgerEntry]) -> dict:
    """The TOTALS of `entries`, and `estimated_usd`: what of their spend rests on estimates awaiting usage."""
    return entries.aggregate(**TOTALS, estimated_usd=ESTIMATED_USD)


def spend_breakdown(*, entries: QuerySet[LedgerEntry], by: str) -> list[dict]:
    """One row per day (oldest first), or per workflow, model or agent (most spend first)."""
    keys = GROUPS[by]
    rows = entries.values(**keys).annotate(**TOTALS)
    ordering = ["day"] if by == "day" else ["-spend_usd", *keys]
    return list(rows.order_by(*ordering))


def daily_series(*, days: list[dict], since: date | None, until: date | None) -> list[tuple[date, Decimal]]:
    """Spend per day over the range, days without spend included as zero so the chart keeps its time axis.

    A range longer than MAX_SERIES_DAYS is cut to the days that have entries: a typed-in year 1 must not
    make a chart of 740,000 days.
    """
    spend = {row["day"]: row["spend_usd"] for row in days}
    if not spend and (since is None or until is None):
        return []
    first, last = since or min(spend), until or max(spend)
    if (last - first).days >= MAX_SERIES_DAYS:
        if not spend:
            return []
        first, last = max(first, min(spend)), min(last, max(spend))
    every_day = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [(day, spend.get(day, ZERO)) for day in every_day]


def top_runs(*, entries: QuerySet[LedgerEntry], limit: int = 10) -> list[dict]:
    """The runs that spent most within the filter, with their Run rows for links and status."""
    rows = list(
        entries.values("run")
        .annotate(spend_usd=TOTALS["spend_usd"], steps=TOTALS["steps"])
        .order_by("-spend_usd", "-run")[:limit]
    )
    runs = Run.objects.select_related("workflow_version__workflow", "team").in_bulk([row["run"] for row in rows])
    return [{**row, "run": runs[row["run"]]} for row in rows]


def ledger_models(*, entries: QuerySet[LedgerEntry]) -> list[str]:
    """The models of the entries; a tool call's entry names none."""
    return list(entries.exclude(model="").order_by("model").values_list("model", flat=True).distinct())


@dataclass(frozen=True)
class BudgetBar:
    """A team's budget status, placed on the team page's 0-100% bar."""

    status: TeamBudgetStatus
    thresholds: list[int]

    @property
    def window(self) -> PeriodWindow:
        return self.status.window

    @property
    def budget_usd(self) -> Decimal | None:
        return self.status.team.period_budget_usd

    @property
    def spent_usd(self) -> Decimal:
        return self.status.period_spent_usd

    @property
    def reserved_usd(self) -> Decimal:
        return self.status.reserved_usd

    @property
    def lifetime_usd(self) -> Decimal:
        return self.status.lifetime_spent_usd

    def _pct(self, amount: Decimal) -> Decimal | None:
        if self.budget_usd is None:
            return None
        return (amount / self.budget_usd * 100).quantize(Decimal("0.1"))

    @property
    def spent_pct(self) -> Decimal | None:
        return self._pct(self.spent_usd)

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.spent_usd > self.budget_usd

    # Bar widths are CSS strings: a localized Decimal ("42,5") would not be a valid width.
    @property
    def spent_width(self) -> str:
        return f"{min(self.spent_pct, 100)}%"

    @property
    def reserved_width(self) -> str:
        spent = min(self.spent_pct, 100)
        return f"{min(self._pct(self.spent_usd + self.reserved_usd), 100) - spent}%"


def budget_bar(*, team: Team) -> BudgetBar:
    return BudgetBar(
        status=team_budget_status(team=team),
        # Alert thresholds are free-form JSON; only percentages the bar can place are drawn.
        thresholds=sorted(t for t in team.alert_thresholds if type(t) is int and 0 < t <= 100),
    )


def forecast_sentence(forecast: BudgetForecast) -> str:
    period_end = f"the period's end ({forecast.period_last_day:%Y-%m-%d})"
    if forecast.over_budget:
        return (
            f"Over budget since {forecast.runs_out_on:%Y-%m-%d}: {format_usd(forecast.spent_usd)} spent "
            f"of {format_usd(forecast.budget_usd)}."
        )
    at_rate = (
        f"At {format_usd(forecast.daily_rate_usd)} a day, spend reaches {format_usd(forecast.projected_usd)} "
        f"by {period_end}"
    )
    if forecast.runs_out_on is None:
        return f"{at_rate}: the budget does not run out before the period ends."
    return f"{at_rate}: the budget runs out on {forecast.runs_out_on:%Y-%m-%d}."


def period_forecast(team: Team | None) -> dict:
    """The team's period budget chart and forecast, when the report is narrowed to a team that has one."""
    forecast = team_forecast(team=team) if team is not None else None
    if forecast is None:
        return {}
    title = (
        f"{team}: spend this {team.period}, {forecast.period_first_day:%Y-%m-%d} to "
        f"{forecast.period_last_day:%Y-%m-%d}, against its {format_usd(forecast.budget_usd)} budget"
    )
    return {
        "forecast": forecast,
        "forecast_sentence": forecast_sentence(forecast),
        "period_chart": period_budget_svg(title=title, forecast=forecast),
    }
