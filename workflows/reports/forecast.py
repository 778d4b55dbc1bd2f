"""Will the team run out? Its period budget against its spend so far and its recent rate, projected to
the end of the period. A pure rule over daily sums: no database, tested in milliseconds."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from workflows.services.periods import PeriodWindow

RATE_DAYS = 7
ZERO = Decimal("0")
MICRO_USD = Decimal("0.000001")
FORECAST_METHOD = (
    f"Mean daily spend over the last {RATE_DAYS} full UTC days (days without spend count as $0), "
    "added for each day after today to the period's spend so far, up to the period's end. "
    "Spend is what the ledger has booked: what runs in flight reserve is not counted until charged."
)


@dataclass(frozen=True)
class BudgetForecast:
    budget_usd: Decimal
    period_first_day: date
    period_last_day: date  # inclusive: the period ends at the midnight after it
    today: date
    spent_usd: Decimal  # in the period, today included
    daily_rate_usd: Decimal  # the mean of the last RATE_DAYS full days
    projected_usd: Decimal  # at the period's end, at that rate
    runs_out_on: date | None  # the first day whose end finds spend above the budget; None: not in this period
    cumulative: list[tuple[date, Decimal]]  # spend to the end of each day of the period, up to today
    method: str = FORECAST_METHOD

    @property
    def over_budget(self) -> bool:
        return self.spent_usd > self.budget_usd

    @property
    def projection(self) -> list[tuple[date, Decimal]]:
        """Spend to the end of each day from today to the period's last day, at the rate."""
        days = (self.period_last_day - self.today).days
        return [(self.today + timedelta(days=n), self.spent_usd + self.daily_rate_usd * n) for n in range(days + 1)]


def budget_forecast(
    *, budget_usd: Decimal | None, window: PeriodWindow, today: date, daily_spend: Mapping[date, Decimal]
) -> BudgetForecast | None:
    """The forecast for a period budget of `budget_usd` in `window`, which holds `today`, from the team's
    spend per UTC day (`daily_spend`: the period's days up to today and the RATE_DAYS before today;
    missing days spent nothing). None without a budget.

    Spend above the budget means strictly above, as the budget gate counts it. When spend is already
    above, `runs_out_on` is the day it went above.
    """
    if budget_usd is None:
        return None
    first, last = window.start.date(), window.end.date() - timedelta(days=1)
    if not first <= today <= last:
        raise ValueError(f"{today} is not in the period {first} to {last}.")
    rate_days = (today - timedelta(days=n) for n in range(1, RATE_DAYS + 1))
    rate = (sum((daily_spend.get(day, ZERO) for day in rate_days), ZERO) / RATE_DAYS).quantize(
        MICRO_USD, rounding=ROUND_HALF_EVEN
    )
    cumulative, spent = [], ZERO
    for n in range((today - first).days + 1):
        day = first + timedelta(days=n)
        spent += daily_spend.get(day, ZERO)
        cumulative.append((day, spent))
    days_left = (last - today).days
    return BudgetForecast(
        budget_usd=budget_usd,
        period_first_day=first,
        period_last_day=last,
        today=today,
        spent_usd=spent,
        daily_rate_usd=rate,
        projected_usd=spent + rate * days_left,
        runs_out_on=_runs_out_on(budget_usd=budget_usd, cumulative=cumulative, rate=rate, last=last),
        cumulative=cumulative,
    )


def _runs_out_on(*, budget_usd: Decimal, cumulative: list[tuple[date, Decimal]], rate: Decimal, last: date) -> date | None:
    already = next((day for day, spent in cumulative if spent > budget_usd), None)
    if already is not None:
        return already
    today, spent = cumulative[-1]
    if rate <= 0:
        return None
    # The fewest whole days after today at the rate that take spend strictly above the budget.
    days = int((budget_usd - spent) // rate) + 1
    runs_out = today + timedelta(days=days)
    return runs_out if runs_out <= last else None
