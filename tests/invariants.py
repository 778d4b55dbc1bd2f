"""DESIGN.md's invariants, checked after every scenario."""

from collections import Counter, defaultdict
from datetime import UTC
from decimal import Decimal

from django.db.models import F, Sum

from workflows.models import CHARGE_BASES, LedgerBasis, LedgerEntry, Run, Step, StepStatus, Team, TeamDailySpend
from workflows.services.escrow import team_figures
from workflows.services.periods import period_window


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
        assert_ledger_entries_add_up(run)
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
        assert_team_holds(team)
        assert_daily_spend_matches_ledger(team)


def assert_ledger_entries_add_up(run: Run) -> None:
    """One charge per attempt, reported or estimated; one correction at most per estimate, of an
    estimate; every correction and adjustment of an entry of the same attempt; and no charge that
    its corrections take below zero."""
    entries = list(LedgerEntry.objects.filter(run=run))
    charges = Counter((entry.step_id, entry.attempt) for entry in entries if entry.basis in CHARGE_BASES)
    assert all(count == 1 for count in charges.values()), f"run {run.pk}: attempts charged twice: {charges}"
    by_id = {entry.pk: entry for entry in entries}
    corrected = Counter(entry.corrects_id for entry in entries if entry.basis == LedgerBasis.CORRECTION)
    assert all(count == 1 for count in corrected.values()), f"run {run.pk}: estimates corrected twice"
    for entry in entries:
        if entry.basis in CHARGE_BASES:
            continue
        target = by_id[entry.corrects_id]
        assert (target.step_id, target.attempt) == (entry.step_id, entry.attempt)
        assert entry.basis == LedgerBasis.ADJUSTMENT or target.basis == LedgerBasis.ESTIMATED
    for cost, _ in charges_with_corrections(LedgerEntry.objects.filter(run=run)).values():
        assert cost is None or cost >= 0, f"run {run.pk}: a charge corrected below zero"


def charges_with_corrections(entries) -> dict[int, tuple[Decimal | None, Decimal | None]]:
    """Each charge among `entries` by id: its cost with its corrections' and adjustments', and its step's estimate."""
    totals = {
        pk: (cost, estimate)
        for pk, cost, estimate in entries.filter(basis__in=CHARGE_BASES).values_list("pk", "cost_usd", "step__estimate_usd")
    }
    for corrects, cost in entries.exclude(basis__in=CHARGE_BASES).values_list("corrects_id", "cost_usd"):
        total, estimate = totals[corrects]
        if total is not None and cost is not None:
            totals[corrects] = (total + cost, estimate)
    return totals


def assert_team_holds(team: Team) -> None:
    """docs/architecture.md's escrow invariants: a run that has stopped holds no slice of its team's
    budget, and, when no step cost more than its estimate, a team that enforces a period budget and
    whose runs hold slices has room for them: its period spend plus its runs' holds stay within its
    budget. The figures are read in one statement, as the gate reads them."""
    team.refresh_from_db()
    runs = Run.objects.filter(team=team)
    idle = runs.exclude(status__in=["queued", "running"]).filter(held_usd__gt=F("reserved_usd"))
    assert not idle.exists(), f"team {team}: stopped runs hold slices: {list(idle.values_list('pk', 'held_usd'))}"
    if not team.enforces_period_budget:
        return  # what runs hold then counts for nothing, and a budget set later recalls it first
    figures = team_figures(team, period_window(team.period))
    overage = sum(
        (
            max(cost - estimate, Decimal("0"))
            for cost, estimate in charges_with_corrections(LedgerEntry.objects.filter(team=team)).values()
            if cost is not None and estimate is not None
        ),
        Decimal("0"),
    )
    # Steps in flight when the budget was lowered may leave the team over it: slices never do.
    if not overage and figures.held_usd > figures.reserved_usd:
        assert figures.spent_usd + figures.held_usd <= team.period_budget_usd, (
            f"team {team}: spent {figures.spent_usd} + held {figures.held_usd} > budget {team.period_budget_usd}"
        )


def assert_daily_spend_matches_ledger(team: Team) -> None:
    """The daily sums the gate reads period spend from are the ledger's own, day by UTC day of
    booking (a correction or an adjustment on its entry's), which is never before the entry was written."""
    ledger: dict = defaultdict(Decimal)
    for booked_at, cost in LedgerEntry.objects.filter(team=team).values_list("booked_at", "cost_usd"):
        ledger[booked_at.astimezone(UTC).date()] += cost or Decimal("0")
    assert not LedgerEntry.objects.filter(team=team, booked_at__gt=F("created_at")).exists()
    daily = dict(TeamDailySpend.objects.filter(team=team).values_list("day", "spent_usd"))
    assert daily == dict(ledger), f"team {team}: daily sums {daily} != ledger {dict(ledger)}"
