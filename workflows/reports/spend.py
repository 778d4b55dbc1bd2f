"""Spend by workflow, model, agent, tool, run, day or team: one GROUP BY query over the ledger.

Unpriced usage (ledger entries with `cost_usd` null) is counted beside the dollars, never as $0 of
spend that looks complete.

`estimated_usd` is the part of `spent_usd` that rests on estimates whose attempts' usage has not
arrived (selectors.ON_OPEN_ESTIMATE); the rest is settled. `spent_usd` stays the whole ledger, so
a run's groups still add up to its spend.

Every grouping covers every entry, so each report's groups add up to the same total: by tool, the
priced tool calls are grouped by tool (`<tool> @ <server>`) and every model call falls in the one
group with the key "", as by model every tool call falls in the group "" (no model was called).
"""

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Case, CharField, Count, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Concat, TruncDate

from workflows.errors import ValidationFailed
from workflows.models import LedgerEntry, LedgerKind, Team
from workflows.selectors import ESTIMATED_USD

# A priced tool by its own name and its server's (an operator's price names both): `search @ https://...`.
TOOL_KEY = Case(
    When(kind=LedgerKind.TOOL, then=Concat(F("tool"), Value(" @ "), F("tool_server"), output_field=CharField())),
    default=Value(""),
    output_field=CharField(),
)

# The expression each report groups the ledger by; days are UTC calendar days.
GROUPINGS = {
    "workflow": F("run__workflow_version__workflow__name"),
    "model": F("model"),
    "agent": F("agent"),
    "tool": TOOL_KEY,
    "run": F("run_id"),
    "day": TruncDate("booked_at", tzinfo=UTC),
    # A team's key reads one team's ledger, so one group: the grouping its staff's reports share.
    "team": F("team__name"),
}
DEFAULT_GROUP_BY = "workflow"
# Across teams a workflow is named by its team too, since two teams may name theirs alike.
ACROSS_TEAMS = GROUPINGS | {
    "workflow": Concat(F("team__name"), Value("/"), F("run__workflow_version__workflow__name"), output_field=CharField())
}

UNPRICED = Q(cost_usd__isnull=True)


@dataclass(frozen=True)
class SpendGroup:
    key: str
    spent_usd: Decimal
    estimated_usd: Decimal  # of spent_usd, on estimates awaiting usage
    runs: int
    steps: int
    input_tokens: int
    output_tokens: int
    unpriced_steps: int  # ledger entries without a price, as Run.unpriced_steps counts them
    unpriced_input_tokens: int
    unpriced_output_tokens: int


# The columns of a report, in order: the JSON keys of a group and the CSV header are these.
SPEND_COLUMNS = tuple(field.name for field in fields(SpendGroup))


@dataclass(frozen=True)
class SpendReport:
    group_by: str
    since: date | None
    until: date | None
    groups: list[SpendGroup]

    @property
    def total_usd(self) -> Decimal:
        return sum((group.spent_usd for group in self.groups), Decimal("0"))

    @property
    def estimated_usd(self) -> Decimal:
        return sum((group.estimated_usd for group in self.groups), Decimal("0"))

    @property
    def unpriced_steps(self) -> int:
        return sum(group.unpriced_steps for group in self.groups)


def spend_by(*, team: Team, group_by: str, since: date | None, until: date | None) -> SpendReport:
    """The team's ledger between the UTC dates `since` and `until` (both inclusive, either open),
    grouped by `group_by`; the biggest spenders first."""
    entries = LedgerEntry.objects.filter(team=team)
    return _report(entries=entries, keys=GROUPINGS, group_by=group_by, since=since, until=until)


def spend_of_teams(*, teams: QuerySet[Team], group_by: str, since: date | None, until: date | None) -> SpendReport:
    """As spend_by, over the ledgers of `teams` together (their staff's report); a workflow's key is
    `<team>/<workflow>`."""
    entries = LedgerEntry.objects.filter(team__in=teams)
    return _report(entries=entries, keys=ACROSS_TEAMS, group_by=group_by, since=since, until=until)


def _report(
    *, entries: QuerySet[LedgerEntry], keys: dict, group_by: str, since: date | None, until: date | None
) -> SpendReport:
    check_spend_query(group_by=group_by, since=since, until=until)
    rows = (
        _ledger_between(entries=entries, since=since, until=until)
        .values(key=keys[group_by])
        # The unpriced sums come first: once `input_tokens` names an aggregate, it no longer names the column.
        .annotate(
            unpriced_steps=Count("pk", filter=UNPRICED),
            unpriced_input_tokens=Sum("input_tokens", filter=UNPRICED, default=0),
            unpriced_output_tokens=Sum("output_tokens", filter=UNPRICED, default=0),
        )
        .annotate(
            spent_usd=Sum("cost_usd", default=Decimal("0")),
            estimated_usd=ESTIMATED_USD,
            runs=Count("run", distinct=True),
            steps=Count("step", distinct=True),
            input_tokens=Sum("input_tokens", default=0),
            output_tokens=Sum("output_tokens", default=0),
        )
        .order_by("-spent_usd", "key")
    )
    groups = [SpendGroup(**{**row, "key": _key_text(row["key"])}) for row in rows]
    return SpendReport(group_by=group_by, since=since, until=until, groups=groups)


def check_spend_query(*, group_by: str, since: date | None, until: date | None) -> None:
    if group_by not in GROUPINGS:
        raise ValidationFailed(
            f"Unknown group_by '{group_by}'.",
            details=[{"path": "group_by", "message": f"one of {', '.join(GROUPINGS)}"}],
        )
    if since is not None and until is not None and since > until:
        raise ValidationFailed(
            f"since ({since}) is after until ({until}).",
            details=[{"path": "since", "message": "must be on or before until"}],
        )


def _ledger_between(*, entries: QuerySet[LedgerEntry], since: date | None, until: date | None) -> QuerySet[LedgerEntry]:
    # Bounds on booked_at itself, not on its date, so the (team, booked_at) index serves them. A
    # correction or an adjustment is dated as the entry it corrects, as period budgets date it.
    if since is not None:
        entries = entries.filter(booked_at__gte=_utc_midnight(since))
    if until is not None and until < date.max:  # date.max has no next day, and nothing is later
        entries = entries.filter(booked_at__lt=_utc_midnight(until + timedelta(days=1)))
    return entries


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _key_text(key: object) -> str:
    return key.isoformat() if isinstance(key, date) else str(key)
