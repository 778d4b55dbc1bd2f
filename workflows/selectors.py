"""Reads. Every API read goes through a function here that is scoped to the caller's team."""

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import DecimalField, Exists, Max, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from workflows.definition import WorkflowDefinition
from workflows.definition.bounds import MAX_ID, MAX_SUM_DIGITS
from workflows.errors import NotFound
from workflows.models import (
    Checkpoint,
    Event,
    LedgerBasis,
    LedgerEntry,
    Run,
    Step,
    Team,
    TeamDailySpend,
    Workflow,
    WorkflowVersion,
)
from workflows.reports.forecast import RATE_DAYS, BudgetForecast, budget_forecast
from workflows.services.escrow import team_figures
from workflows.services.periods import PeriodWindow, period_window


def teams_visible_to(*, user) -> QuerySet[Team]:
    """The teams a user may see in the admin: every team for a superuser, the teams they are staff of
    for other staff users (Team.staff), none for anyone else."""
    if not (user.is_active and user.is_staff):
        return Team.objects.none()
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(staff=user)


def may_adjust_ledger(*, user) -> bool:
    """Whether `user` may adjust ledger entries (of the teams they see): active staff with the permission
    to add ledger entries, which an adjustment is. Superusers have it; other staff are given it."""
    return bool(user and user.is_active and user.is_staff and user.has_perm("workflows.add_ledgerentry"))


def may_read_ledger(*, user) -> bool:
    """Whether `user` may read the ledger (of the teams they see), as the admin's Spend page does: active
    staff with the permission to view or to change ledger entries."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and (user.has_perm("workflows.view_ledgerentry") or user.has_perm("workflows.change_ledgerentry"))
    )


def ledger_entry_visible_to(*, user, entry_id: int) -> LedgerEntry:
    """A ledger entry of a team `user` may see; another team's is absent, as an unknown one."""
    entry = LedgerEntry.objects.filter(pk=entry_id, team__in=teams_visible_to(user=user)).first()
    if entry is None:
        raise NotFound(f"No ledger entry with id {entry_id}.")
    return entry


def _corrected(estimate: OuterRef) -> Exists:
    return Exists(LedgerEntry.objects.filter(corrects=estimate, basis=LedgerBasis.CORRECTION))


# Estimated entries whose attempt's usage has not arrived: no correction yet. An operator's adjustment
# is not the usage, and a correction may still come.
AWAITING_USAGE = Q(basis=LedgerBasis.ESTIMATED) & ~_corrected(OuterRef("pk"))
# What of the spend rests on those estimates: each, and the adjustments made to it. Everything else
# is settled, so a run's spend splits into two parts that are never negative.
ON_OPEN_ESTIMATE = AWAITING_USAGE | (
    Q(basis=LedgerBasis.ADJUSTMENT)
    & Exists(LedgerEntry.objects.filter(pk=OuterRef("corrects"), basis=LedgerBasis.ESTIMATED))
    & ~_corrected(OuterRef("corrects"))
)
ESTIMATED_USD = Sum("cost_usd", filter=ON_OPEN_ESTIMATE, default=Decimal("0"))


def runs_estimated_usd() -> Coalesce:
    """For each run of a query of runs, what of its spend rests on estimates awaiting usage."""
    amount = DecimalField(max_digits=MAX_SUM_DIGITS, decimal_places=6)
    per_run = (
        LedgerEntry.objects.filter(ON_OPEN_ESTIMATE, run=OuterRef("pk"))
        .order_by()
        .values("run")
        .annotate(total=Sum("cost_usd"))
        .values("total")
    )
    return Coalesce(Subquery(per_run, output_field=amount), Value(Decimal("0")), output_field=amount)


def workflows_for_team(*, team: Team) -> QuerySet[Workflow]:
    return Workflow.objects.filter(team=team).annotate(latest_version=Max("versions__version"))


def workflow_get(*, team: Team, workflow_id: int) -> Workflow:
    workflow = workflows_for_team(team=team).filter(pk=workflow_id).first()
    if workflow is None:
        raise NotFound(f"No workflow with id {workflow_id}.")
    return workflow


def workflow_version_get(*, team: Team, workflow: int | str, version: int | None = None) -> WorkflowVersion:
    """The version a run should pin: `workflow` is an id or a name, `version` defaults to the latest."""
    # Without the text and the definition: `definition_of` has the definition parsed already, but
    # for the first run of a version in this process.
    versions = (
        WorkflowVersion.objects.select_related("workflow").defer("source", "definition").filter(workflow__team=team)
    )
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int().
    if isinstance(workflow, int) or (isinstance(workflow, str) and workflow.isascii() and workflow.isdigit()):
        if int(workflow) > MAX_ID:  # no row has it, and the database could not even compare it
            raise NotFound(f"No workflow with id {str(workflow)[:30]}.")
        versions = versions.filter(workflow_id=int(workflow))
    else:
        versions = versions.filter(workflow__name=workflow)
    if version is not None:
        versions = versions.filter(version=version)
    found = versions.order_by("-version").first()
    if found is None:
        wanted = f"version {version} of workflow '{workflow}'" if version is not None else f"workflow '{workflow}'"
        raise NotFound(f"No {wanted}.")
    return found


def definition_of(version: WorkflowVersion) -> WorkflowDefinition:
    """The version's definition, parsed once per process: a step reads its run's definition several
    times, and a version never changes. `version` may hold only its id and creation time (the step
    transaction reads no more, locks.lock_rows): its definition is then read on a miss only."""
    return _definitions.get(version)


class _DefinitionCache:
    """Parsed definitions by version, least recently used first out, bounded by the size of their
    stored JSON (at most DEFINITION_MAX_EXPANDED_BYTES each), so a team that runs many large
    versions costs a worker a bounded amount of memory. Keyed by id and creation time: SQLite may
    give a rolled-back version's id to the next one."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, tuple[WorkflowDefinition, int]] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    def get(self, version: WorkflowVersion) -> WorkflowDefinition:
        if version.pk is None:
            return WorkflowDefinition.from_dict(version.definition)
        key = (version.pk, version.created_at)
        with self.lock:
            if (entry := self.entries.get(key)) is not None:
                self.entries.move_to_end(key)
                return entry[0]
        stored = version.definition
        definition = WorkflowDefinition.from_dict(stored)
        size = len(json.dumps(stored))
        with self.lock:
            if key not in self.entries and size <= self.max_bytes:
                self.entries[key] = (definition, size)
                self.size += size
                while self.size > self.max_bytes:
                    _, (_, evicted) = self.entries.popitem(last=False)
                    self.size -= evicted
        return definition


_definitions = _DefinitionCache(max_bytes=16 * 1024 * 1024)


def runs_for_team(*, team: Team) -> QuerySet[Run]:
    return (
        Run.objects.filter(team=team)
        .select_related("workflow_version__workflow")
        .annotate(estimated_usd=runs_estimated_usd())
    )


def run_get(*, team: Team, run_id: int) -> Run:
    run = runs_for_team(team=team).filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"No run with id {run_id}.")
    return run


def latest_checkpoint(*, run: Run) -> Checkpoint | None:
    return run.checkpoints.order_by("-id").first()


def steps_of(*, run: Run) -> QuerySet[Step]:
    return run.steps.order_by("sequence")


def events_of(*, run: Run) -> QuerySet[Event]:
    return run.events.order_by("id")


def ledger_of(*, run: Run) -> QuerySet[LedgerEntry]:
    return run.ledger_entries.order_by("id")


def ledger_for_team(*, team: Team) -> QuerySet[LedgerEntry]:
    """The team's ledger entries, with each entry's step, which the API shows."""
    return LedgerEntry.objects.filter(team=team).select_related("step")


def checkpoints_of(*, run: Run) -> QuerySet[Checkpoint]:
    return run.checkpoints.order_by("id")


@dataclass(frozen=True)
class TeamBudgetStatus:
    team: Team
    window: PeriodWindow
    period_spent_usd: Decimal
    reserved_usd: Decimal  # by the team's steps in flight
    lifetime_spent_usd: Decimal


def team_budget_status(*, team: Team, now: datetime | None = None) -> TeamBudgetStatus:
    """A team's period (the one `now` is in) and lifetime spend, both summed from the ledger, and its
    steps' reservations."""
    window = period_window(team.period, now)
    figures = team_figures(team, window)
    lifetime = LedgerEntry.objects.filter(team=team).aggregate(total=Sum("cost_usd"))["total"]
    return TeamBudgetStatus(
        team=team,
        window=window,
        period_spent_usd=figures.spent_usd,
        reserved_usd=figures.reserved_usd,
        lifetime_spent_usd=lifetime or Decimal("0"),
    )


def team_forecast(*, team: Team, now: datetime | None = None) -> BudgetForecast | None:
    """Whether and when the team's period budget runs out at its recent rate (reports.forecast); None
    without a period budget. Read from the ledger's daily sums: at most 38 rows."""
    if team.period_budget_usd is None:
        return None
    now = (now or timezone.now()).astimezone(UTC)
    window, today = period_window(team.period, now), now.date()
    first = min(window.start.date(), today - timedelta(days=RATE_DAYS))
    rows = TeamDailySpend.objects.filter(team=team, day__gte=first, day__lte=today).values_list("day", "spent_usd")
    return budget_forecast(budget_usd=team.period_budget_usd, window=window, today=today, daily_spend=dict(rows))
