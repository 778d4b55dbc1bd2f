"""Escrow: how most steps are admitted without locking their team's row.

A team's enforced period budget is shared by all of its runs. Admitting a step against it once meant
locking the team's row, and that lock, held until commit, let one admission of the team through at a
time (docs/performance.md). Instead each run holds a slice of the budget, `Run.held_usd`. While the
slice covers a step's estimate, the step is admitted under the run's lock alone. Drawing a slice locks
the team, decides by the pure gate, and takes only what the team has room for.

The invariant: the period's spend plus, over the team's runs, max(held, reserved) stays within the
enforced budget, but for what calls cost beyond their estimates (charged as reported, as before).
It holds because a run's hold grows only under the team's lock, by a draw the budget has room for,
and spend moves out of a hold in the transaction that charges it.

The decision is the pure gate's over the spend and the steps in flight: a slice covers only what a
draw found room for, and a draw that other runs' idle slices would refuse recalls them first. Near
the limit, slices shrink to the estimate.
"""

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from functools import cache

from django.conf import settings
from django.db import connection
from django.db.models import F

from workflows import dialect
from workflows.definition import MONEY_PLACES
from workflows.models import ACTIVE_RUN_STATUSES, Run, Team
from workflows.services.periods import PERIOD_SPENT_SQL, PeriodWindow, period_spent_params

ZERO = Decimal("0")


@dataclass(frozen=True)
class TeamFigures:
    spent_usd: Decimal  # in the period
    reserved_usd: Decimal  # by the runs' steps in flight
    held_usd: Decimal  # by the runs, slices included: the sum of max(held, reserved)


def team_figures(team: Team, window: PeriodWindow, *, excluding_run: int | None = None) -> TeamFigures:
    """The team's spend in the period and what its runs (but `excluding_run`) reserve and hold, read
    in one statement: a settlement moves money from a hold to the spend in one transaction, so one
    snapshot sees it in one place or the other, never in both or neither. Written in SQL: every
    admission of an enforcing team reads it."""
    params = [*period_spent_params(team.pk, window), team.pk]
    if excluding_run is not None:
        params.append(excluding_run)
    with connection.cursor() as cursor:
        cursor.execute(_figures_statement(excluding_run is not None), params)
        row = cursor.fetchone()
    # Quantized: SQLite sums decimals as binary floats.
    return TeamFigures(*(Decimal(value if value is not None else 0).quantize(MONEY_PLACES) for value in row))


@cache
def _figures_statement(excluding_run: bool) -> str:
    runs = Run._meta.db_table
    held = dialect.greatest("r.held_usd", "r.reserved_usd")
    return f"""
        SELECT
            {PERIOD_SPENT_SQL},
            SUM(r.reserved_usd),
            SUM({held})
        FROM {runs} r
        WHERE r.team_id = %s AND (r.reserved_usd > 0 OR r.held_usd > 0){" AND r.id <> %s" if excluding_run else ""}
    """


def slice_covers(run: Run, estimate: Decimal) -> bool:
    """Whether what the run holds beyond its reservations covers the estimate (a free step always)."""
    return max(run.held_usd, run.reserved_usd) - run.reserved_usd >= estimate


def slice_size(*, estimate: Decimal, headroom: Decimal) -> Decimal:
    """What a draw adds to a run's hold for a step of `estimate`: the estimate, and room for
    TEAM_SLICE_STEPS - 1 more like it, but never more than half of what the budget has left after it."""
    extra = min(estimate * (settings.TEAM_SLICE_STEPS - 1), max(headroom, ZERO) / 2)
    return (estimate + extra).quantize(MONEY_PLACES, rounding=ROUND_DOWN).max(estimate)


def held_after(run: Run, *, released: Decimal, cost: Decimal | None = None) -> Decimal:
    """The run's hold once `cost` is charged and `released` of its reservations let go: the spend
    leaves the hold, which never falls below the reservations that remain. A run that has stopped
    holds nothing beyond those."""
    remaining = run.reserved_usd - released
    if run.status not in ACTIVE_RUN_STATUSES:
        return min(run.held_usd, remaining)
    if not run.held_usd:
        return ZERO
    return max(run.held_usd - (cost or ZERO), remaining)


def idle_slices_recall(team: Team, *, except_run: int | None = None) -> int:
    """Shrink the holds of the team's runs to their reservations; how many runs gave some back.
    Under the team's lock: it takes the runs' locks after it, as the lock order allows."""
    runs = Run.objects.filter(team=team, held_usd__gt=F("reserved_usd"))
    if except_run is not None:
        runs = runs.exclude(pk=except_run)
    return runs.update(held_usd=F("reserved_usd"))


def slices_revoke(team: Team) -> int:
    """Take back every hold of the team's runs, their reservations' included: a change of its budget.
    A step in flight still counts by its reservation (the figures take max(held, reserved)), but
    what it does not spend goes back to the team: it was drawn from the old budget, and left in
    the hold it would admit the run's next steps without a draw against the new one. Under the
    team's lock. Only draws raise a hold from 0, under that lock, so no concurrent settlement can
    bring a run into this UPDATE's scope after its snapshot."""
    return Run.objects.filter(team=team, held_usd__gt=0).update(held_usd=ZERO)
