"""Calendar periods of team budgets, in UTC: days from midnight, weeks from Monday, months from the 1st."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from workflows.definition import MONEY_PLACES
from workflows.models import Period, Team, TeamDailySpend


@dataclass(frozen=True)
class PeriodWindow:
    start: datetime
    end: datetime  # exclusive: when the next period starts and spend resets


def period_window(period: str, now: datetime | None = None) -> PeriodWindow:
    now = (now or timezone.now()).astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Period.DAY:
        return PeriodWindow(midnight, midnight + timedelta(days=1))
    if period == Period.WEEK:
        start = midnight - timedelta(days=midnight.weekday())
        return PeriodWindow(start, start + timedelta(days=7))
    start = midnight.replace(day=1)
    next_month = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return PeriodWindow(start, next_month)


def team_period_spent(*, team: Team, window: PeriodWindow) -> Decimal:
    """The team's spend in the period, from the ledger: history is never reset or deleted.

    Read from the ledger's daily sums (TeamDailySpend), which a trigger on the ledger keeps in the
    statement that inserts each entry: the same total as summing the period's entries, in at most
    31 rows however many entries the period holds. Periods start at midnight UTC, so a period is
    whole UTC days.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {PERIOD_SPENT_SQL}", period_spent_params(team.pk, window))
        total = cursor.fetchone()[0]
    # Quantized: SQLite sums decimals as binary floats.
    return Decimal(total).quantize(MONEY_PLACES) if total is not None else Decimal("0")


# The spend of team %s in the days from %s to before %s, in SQL: a settlement reads it for the
# team's alerts, and an admission in escrow.team_figures.
PERIOD_SPENT_SQL = (
    f"(SELECT SUM(d.spent_usd) FROM {TeamDailySpend._meta.db_table} d WHERE d.team_id = %s AND d.day >= %s AND d.day < %s)"
)


def period_spent_params(team_id: int, window: PeriodWindow) -> list:
    return [team_id, *(connection.ops.adapt_datefield_value(moment.date()) for moment in (window.start, window.end))]
