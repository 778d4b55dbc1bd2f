"""spend_by against an independent sum over the ledger rows, for every grouping and date window."""

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.factories import LOOP_YAML, TeamFactory, workflow_version
from tests.reports.ledger import answer, charge, start_run, taken_over
from workflows.errors import ValidationFailed
from workflows.models import LedgerEntry
from workflows.reports.spend import GROUPINGS, SpendGroup, spend_by
from workflows.services.adjustments import check_adjustment, ledger_adjust
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def ledger(team):
    """Two workflows, three runs, four UTC days, a retried step and two unpriced entries; and
    another team's spend on the same days."""
    research = workflow_version(team=team)
    loop = workflow_version(team=team, source=LOOP_YAML)
    first, second = start_run(team=team, version=research), start_run(team=team, version=research)
    looping = start_run(team=team, version=loop, inputs={})

    charge(run=first, agent="researcher", cost_usd="0.300000", at=utc(2026, 3, 1, 0, 0, 0))
    charge(run=first, agent="writer", cost_usd="0.300000", at=utc(2026, 3, 1, 23, 59, 59, 999999))
    charge(run=first, agent="reviewer", model="gpt-x", cost_usd=None, input_tokens=7, output_tokens=70,
           at=utc(2026, 3, 2))
    retried = charge(run=first, agent="writer", cost_usd="0.100000", at=utc(2026, 3, 2, 12))
    charge(run=first, agent="writer", cost_usd="0.200000", at=utc(2026, 3, 2, 12, 5), step=retried.step, attempt=2)
    charge(run=second, agent="researcher", cost_usd="0.123456", at=utc(2026, 2, 28, 23, 59, 59))
    charge(run=looping, agent="thinker", model="mystery-model", cost_usd=None, input_tokens=3, output_tokens=30,
           at=utc(2026, 3, 3))
    charge(run=looping, agent="thinker", cost_usd="0.010000", at=utc(2026, 3, 3, 8))

    other = TeamFactory(name="globex")
    charge(run=start_run(team=other, version=workflow_version(team=other)), cost_usd="5.000000", at=utc(2026, 3, 1, 9))
    return team


SEARCH = ("https://search.example/mcp", "web_search")


@pytest.fixture
def tooled_ledger(ledger):
    """The ledger, with priced tool calls of two tools of two servers in two runs."""
    first, _, looping = ledger.runs.order_by("pk")
    charge(run=first, agent="researcher", cost_usd="0.050000", tool=SEARCH, at=utc(2026, 3, 1, 12))
    charge(run=looping, agent="thinker", cost_usd="0.050000", tool=SEARCH, at=utc(2026, 3, 3, 9))
    charge(run=looping, agent="thinker", cost_usd="0.002000", tool=("maps-mcp", "route"), at=utc(2026, 3, 3, 10))
    return ledger


def adjust(entry: LedgerEntry, amount: str) -> LedgerEntry:
    return ledger_adjust(entry=entry, adjustment=check_adjustment(amount_usd=amount, reason="console"), actor="user:ops")


@pytest.fixture
def estimated_ledger(tooled_ledger):
    """The ledger with its tool calls, and a run of today whose attempts' outcomes were unknown: an
    estimate awaiting usage (researcher), one its late usage corrected (writer), one an operator
    adjusted (reviewer), and an adjusted charge. Entries, in order, with what the run has spent:

    researcher 1 estimated $0.30, 2 reported $0.30; writer 1 estimated $0.30, its correction -$0.15,
    2 reported $0.30; reviewer 1 estimated $0.30, adjusted -$0.28; researcher 2 adjusted +$0.05.
    """
    run = start_run(team=tooled_ledger, version=tooled_ledger.runs.earliest("pk").workflow_version)
    _, owner = taken_over(run, sequence=1)
    step_settle(attempt=owner, result=answer({"findings": "f"}))
    late, owner = taken_over(run, sequence=2)
    step_settle(attempt=late, result=answer({"draft": "late"}, output_tokens=500))
    step_settle(attempt=owner, result=answer({"draft": "d"}))
    taken_over(run, sequence=3)
    adjust(run.ledger_entries.get(agent="reviewer", basis="estimated"), "-0.28")
    adjust(run.ledger_entries.get(agent="researcher", basis="reported"), "0.05")
    return tooled_ledger


def entries_between(*, team, since: date | None, until: date | None) -> list[LedgerEntry]:
    entries = LedgerEntry.objects.filter(team=team).select_related("run__workflow_version__workflow")
    return [
        entry
        for entry in entries
        if (since is None or entry.created_at.astimezone(UTC).date() >= since)
        and (until is None or entry.created_at.astimezone(UTC).date() <= until)
    ]


def expected_groups(*, team, group_by: str, since: date | None, until: date | None) -> list[SpendGroup]:
    """The report worked out row by row in Python, without the database's grouping."""
    key_of = {
        "workflow": lambda entry: entry.run.workflow_version.workflow.name,
        "model": lambda entry: entry.model,
        "agent": lambda entry: entry.agent,
        "tool": lambda entry: f"{entry.tool} @ {entry.tool_server}" if entry.kind == "tool" else "",
        "run": lambda entry: str(entry.run_id),
        "day": lambda entry: entry.created_at.astimezone(UTC).date().isoformat(),
        "team": lambda entry: entry.team.name,
    }[group_by]
    by_key = defaultdict(list)
    for entry in entries_between(team=team, since=since, until=until):
        by_key[key_of(entry)].append(entry)
    ledger = {entry.pk: entry for entry in LedgerEntry.objects.filter(team=team)}
    corrected = {entry.corrects_id for entry in ledger.values() if entry.basis == "correction"}

    def on_open_estimate(entry: LedgerEntry) -> bool:
        """An estimate with no correction, or an adjustment of one."""
        estimate = entry if entry.basis != "adjustment" else ledger[entry.corrects_id]
        return estimate.basis == "estimated" and estimate.pk not in corrected

    groups = [
        SpendGroup(
            key=key,
            spent_usd=sum((e.cost_usd for e in entries if e.cost_usd is not None), Decimal("0")),
            estimated_usd=sum((e.cost_usd for e in entries if on_open_estimate(e)), Decimal("0")),
            runs=len({e.run_id for e in entries}),
            steps=len({e.step_id for e in entries}),
            input_tokens=sum(e.input_tokens for e in entries),
            output_tokens=sum(e.output_tokens for e in entries),
            unpriced_steps=sum(1 for e in entries if e.cost_usd is None),
            unpriced_input_tokens=sum(e.input_tokens for e in entries if e.cost_usd is None),
            unpriced_output_tokens=sum(e.output_tokens for e in entries if e.cost_usd is None),
        )
        for key, entries in by_key.items()
    ]
    # Run ids order as numbers, like the database orders them.
    return sorted(groups, key=lambda g: (-g.spent_usd, int(g.key) if group_by == "run" else g.key))


@pytest.mark.parametrize("group_by", list(GROUPINGS))
@pytest.mark.parametrize(
    "since,until",
    [(None, None), (date(2026, 3, 1), date(2026, 3, 2)), (date(2026, 3, 2), None), (None, date(2026, 2, 28))],
)
def test_every_grouping_matches_an_independent_sum_over_the_ledger(estimated_ledger, group_by, since, until):
    ledger = estimated_ledger
    report = spend_by(team=ledger, group_by=group_by, since=since, until=until)

    assert report.groups == expected_groups(team=ledger, group_by=group_by, since=since, until=until)
    entries = entries_between(team=ledger, since=since, until=until)
    assert report.total_usd == sum((e.cost_usd for e in entries if e.cost_usd is not None), Decimal("0"))
    assert report.unpriced_steps == sum(1 for e in entries if e.cost_usd is None)


def test_spend_by_tool_names_each_priced_tool_with_its_server_and_the_model_calls_together(tooled_ledger):
    report = spend_by(team=tooled_ledger, group_by="tool", since=None, until=None)

    assert [(g.key, g.spent_usd, g.runs, g.steps, g.input_tokens) for g in report.groups] == [
        ("", Decimal("1.033456"), 3, 7, 70),  # every model call, so that the groups add up to the total
        ("web_search @ https://search.example/mcp", Decimal("0.100000"), 2, 2, 0),
        ("route @ maps-mcp", Decimal("0.002000"), 1, 1, 0),
    ]
    assert report.total_usd == spend_by(team=tooled_ledger, group_by="model", since=None, until=None).total_usd
    # By agent, an agent's tool calls are its spend too.
    by_agent = {g.key: g.spent_usd for g in spend_by(team=tooled_ledger, group_by="agent", since=None, until=None).groups}
    assert by_agent["thinker"] == Decimal("0.062000")


def test_the_whole_ledger_totals_to_the_micro_dollar(ledger):
    report = spend_by(team=ledger, group_by="workflow", since=None, until=None)

    assert report.total_usd == Decimal("1.033456")
    assert [(g.key, g.spent_usd, g.runs, g.steps) for g in report.groups] == [
        ("research-pipeline", Decimal("1.023456"), 2, 5),  # the retried step counts once
        ("loop", Decimal("0.010000"), 1, 2),
    ]


def test_what_rests_on_estimates_awaiting_usage_is_reported_beside_the_spend_it_is_part_of(estimated_ledger):
    run = estimated_ledger.runs.latest("pk")

    by_run = {g.key: g for g in spend_by(team=estimated_ledger, group_by="run", since=None, until=None).groups}
    group = by_run[str(run.pk)]
    # The researcher's estimate ($0.30) and the reviewer's as the operator adjusted it ($0.02): the
    # writer's was corrected by its usage, and the researcher's charge adjusted is settled.
    assert (group.spent_usd, group.estimated_usd) == (Decimal("1.120000"), Decimal("0.320000"))
    run.refresh_from_db()
    assert run.spent_usd == group.spent_usd  # the whole ledger, estimates included
    by_agent = spend_by(team=estimated_ledger, group_by="agent", since=date(2026, 3, 4), until=None).groups
    assert [(g.key, g.spent_usd, g.estimated_usd) for g in by_agent] == [
        ("researcher", Decimal("0.650000"), Decimal("0.300000")),
        ("writer", Decimal("0.450000"), Decimal("0")),
        ("reviewer", Decimal("0.020000"), Decimal("0.020000")),
    ]
    report = spend_by(team=estimated_ledger, group_by="workflow", since=None, until=None)
    assert (report.total_usd, report.estimated_usd) == (Decimal("2.255456"), Decimal("0.320000"))


def test_an_estimate_no_longer_awaits_once_its_usage_arrives(team):
    run = start_run(team=team, version=workflow_version(team=team))
    late, _ = taken_over(run, sequence=1)

    def figures():
        (group,) = spend_by(team=team, group_by="run", since=None, until=None).groups
        return group.spent_usd, group.estimated_usd

    assert figures() == (Decimal("0.300000"), Decimal("0.300000"))

    step_settle(attempt=late, result=answer({"findings": "late"}, output_tokens=100))

    # The estimate and its correction are what the call cost: $0.03, settled.
    assert figures() == (Decimal("0.030000"), Decimal("0"))


def test_since_and_until_are_inclusive_utc_days(ledger):
    march_first = spend_by(team=ledger, group_by="day", since=date(2026, 3, 1), until=date(2026, 3, 1))

    # 00:00:00.000000 and 23:59:59.999999 on the day are in; 23:59:59 the day before and midnight after are not.
    assert [(g.key, g.spent_usd, g.steps) for g in march_first.groups] == [("2026-03-01", Decimal("0.600000"), 2)]


def test_unpriced_usage_is_reported_beside_the_dollars_never_as_spend(ledger):
    report = spend_by(team=ledger, group_by="model", since=None, until=None)

    by_model = {g.key: (g.spent_usd, g.unpriced_steps, g.unpriced_input_tokens, g.unpriced_output_tokens) for g in report.groups}
    assert by_model == {
        "sim-model": (Decimal("1.033456"), 0, 0, 0),
        "gpt-x": (Decimal("0"), 1, 7, 70),
        "mystery-model": (Decimal("0"), 1, 3, 30),
    }
    assert report.unpriced_steps == 2


def test_another_teams_ledger_is_never_included(ledger):
    for group_by in GROUPINGS:
        report = spend_by(team=ledger, group_by=group_by, since=None, until=None)
        assert Decimal("5.000000") not in [g.spent_usd for g in report.groups]

    other = spend_by(team=TeamFactory(name="globex"), group_by="workflow", since=None, until=None)
    assert [(g.key, g.spent_usd) for g in other.groups] == [("research-pipeline", Decimal("5.000000"))]


def test_days_are_utc_dates_whatever_the_servers_time_zone(ledger, settings):
    settings.TIME_ZONE = "Pacific/Auckland"  # UTC+13 in March: local dates would move every entry

    report = spend_by(team=ledger, group_by="day", since=date(2026, 3, 1), until=date(2026, 3, 1))

    assert [(g.key, g.spent_usd) for g in report.groups] == [("2026-03-01", Decimal("0.600000"))]


def test_an_empty_window_reports_no_groups_and_zero(ledger):
    report = spend_by(team=ledger, group_by="agent", since=date(2025, 1, 1), until=date(2025, 12, 31))

    assert (report.groups, report.total_usd, report.unpriced_steps) == ([], Decimal("0"), 0)


@pytest.mark.parametrize(
    "query,path",
    [
        ({"group_by": "colour", "since": None, "until": None}, "group_by"),
        ({"group_by": "day", "since": date(2026, 3, 2), "until": date(2026, 3, 1)}, "since"),
    ],
)
def test_an_unknown_grouping_or_reversed_dates_are_refused(team, query, path):
    with pytest.raises(ValidationFailed) as refused:
        spend_by(team=team, **query)

    assert [detail["path"] for detail in refused.value.details] == [path]
