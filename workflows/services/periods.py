"""Calendar periods of team budgets, in UTC: days from midnight, weeks from Monday, months from the 1st."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

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
    total = TeamDailySpend.objects.filter(
        team=team, day__gte=window.start.date(), day__lt=window.end.date()
    ).aggregate(total=Sum("spent_usd"))["total"]
    return total or Decimal("0")
