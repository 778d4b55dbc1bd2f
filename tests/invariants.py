"""DESIGN.md's invariants, checked after every scenario."""

from collections import Counter, defaultdict
from datetime import UTC
from decimal import Decimal

from django.db.models import (
    BooleanField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from workflows.models import LedgerEntry, Run, Step, StepStatus, Team, TeamDailySpend


def assert_invariants(*runs: Run) -> None:
    for run in runs:
        run.refresh_from_db()
        ledger_sum = LedgerEntry.objects.filter(run=run).aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
        assert ledger_sum == run.spent_usd, f"run {run.pk}: ledger {ledger_sum} != spent {run.spent_usd}"
        assert run.reserved_usd >= 0
        held = Step.objects.filter(run=run).aggregate(total=Sum("reserved_usd"))["total"] or Decimal("0")
        assert held == run.reserved_usd, f"run {run.pk}: steps hold {held}, run reserves {run.reserved_usd}"
        if not Step.objects.filter(run=run, status=StepStatus.RUNNING).exists():
            assert run.reserved_usd == 0, f"run {run.pk} reserves {run.reserved_usd} with nothing in flight"
        attempts = Counter(LedgerEntry.objects.filter(run=run).values_list("step_id", "attempt"))
        assert all(count == 1 for count in attempts.values())
        # Several steps are in flight only as branches of one entry of one group.
        open_steps = Step.objects.filter(run=run, status__in=[StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING])
        groups = set(open_steps.values_list("group", "iteration"))
        assert open_steps.count() <= 1 or (len(groups) == 1 and "" not in {group for group, _ in groups}), (
            f"run {run.pk} has unrelated steps open: {list(open_steps.values_list('sequence', 'agent', 'group'))}"
        )
    for team in Team.objects.filter(runs__in=runs).distinct():
        ledger = LedgerEntry.objects.filter(team=team).aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
        spent = Run.objects.filter(team=team).aggregate(total=Sum("spent_usd"))["total"] or Decimal("0")
        assert ledger == spent, f"team {team}: ledger {ledger} != spent {spent}"
        assert_team_reservation_matches_runs(team)
        assert_daily_spend_matches_ledger(team)


def assert_team_reservation_matches_runs(team: Team) -> None:
    """The team's reservation is its runs' (every reserve and release moves both), and exactly 0, as the
    database compares it, once none of its steps is running. Read in one statement, so that a worker
    still settling another run cannot change one number between two reads."""
    runs_reserved = (
        Run.objects.filter(team=OuterRef("pk")).values("team").annotate(total=Sum("reserved_usd")).values("total")
    )
    row = (
        Team.objects.filter(pk=team.pk)
        .annotate(
            runs_reserved=Coalesce(Subquery(runs_reserved), Value(Decimal("0")), output_field=DecimalField()),
            in_flight=Exists(Step.objects.filter(run__team=OuterRef("pk"), status=StepStatus.RUNNING)),
            # On SQLite a float residue reads back as 0.000000 yet fails CHECK (reserved_usd >= 0) later.
            exactly_zero=ExpressionWrapper(Q(reserved_usd=0), output_field=BooleanField()),
        )
        .values("reserved_usd", "runs_reserved", "in_flight", "exactly_zero")
        .get()
    )
    assert row["reserved_usd"] >= 0, f"team {team} reserves {row['reserved_usd']}"
    assert row["reserved_usd"] == row["runs_reserved"], (
        f"team {team} reserves {row['reserved_usd']}, its runs {row['runs_reserved']}"
    )
    if not row["in_flight"]:
        assert row["exactly_zero"], f"team {team} reserves {row['reserved_usd']} with nothing in flight"


def assert_daily_spend_matches_ledger(team: Team) -> None:
    """The daily sums the gate reads period spend from are the ledger's own, day by UTC day."""
    ledger: dict = defaultdict(Decimal)
    for created_at, cost in LedgerEntry.objects.filter(team=team).values_list("created_at", "cost_usd"):
        ledger[created_at.astimezone(UTC).date()] += cost or Decimal("0")
    daily = dict(TeamDailySpend.objects.filter(team=team).values_list("day", "spent_usd"))
    assert daily == dict(ledger), f"team {team}: daily sums {daily} != ledger {dict(ledger)}"
