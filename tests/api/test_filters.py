"""The lists' filters (workflows/api/filters.py): runs by status, workflow and creation time; the ledger,
a run's and the team's, by agent, model, run and booked time; workflows by name; events after an id.
Every bad value is a 400 naming its parameter."""

from datetime import UTC, datetime

import pytest

from tests.factories import UNPRICED_YAML, TeamFactory, workflow_version
from tests.reports.ledger import charge, start_run
from workflows.definition.bounds import MAX_ID
from workflows.models import EventType, Run
from workflows.services.adjustments import check_adjustment, ledger_adjust
from workflows.services.events import event_record

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


def created(run: Run, at: datetime) -> Run:
    Run.objects.filter(pk=run.pk).update(created_at=at)
    return run


@pytest.fixture
def pipeline(team):
    return workflow_version(team=team)


@pytest.fixture
def other_team():
    return TeamFactory(name="globex")


def test_runs_filter_by_workflow_and_another_teams_or_an_unknown_workflow_lists_none(api, team, pipeline, other_team):
    unpriced = workflow_version(team=team, source=UNPRICED_YAML)
    first = start_run(team=team, version=pipeline)
    other = start_run(team=team, version=unpriced, inputs={})
    second = start_run(team=team, version=pipeline)
    theirs = workflow_version(team=other_team)
    start_run(team=other_team, version=theirs)

    assert ids(api.get(f"/api/v1/runs?workflow={pipeline.workflow_id}")) == [second.pk, first.pk]
    assert ids(api.get(f"/api/v1/runs?workflow={unpriced.workflow_id}")) == [other.pk]
    assert ids(api.get(f"/api/v1/runs?workflow={theirs.workflow_id}")) == []
    assert ids(api.get("/api/v1/runs?workflow=999")) == []


def test_runs_filter_by_a_half_open_creation_range_in_any_offset(api, team, pipeline):
    march = [created(start_run(team=team, version=pipeline), utc(2026, 3, day, 12)) for day in (1, 2, 3)]

    assert ids(api.get("/api/v1/runs", {"created_after": "2026-03-02T12:00:00Z"})) == [march[2].pk, march[1].pk]
    assert ids(api.get("/api/v1/runs", {"created_before": "2026-03-02T12:00:00Z"})) == [march[0].pk]
    # 13:00 at +01:00 is 12:00 UTC; a time without an offset is UTC; a date alone is its midnight.
    both = {"created_after": "2026-03-02T13:00:00+01:00", "created_before": "2026-03-03T12:00:00"}
    assert ids(api.get("/api/v1/runs", both)) == [march[1].pk]
    assert ids(api.get("/api/v1/runs", {"created_after": "2026-03-03"})) == [march[2].pk]


def test_run_filters_combine_and_the_next_page_keeps_them(api, team, pipeline):
    runs = [start_run(team=team, version=pipeline) for _ in range(3)]
    Run.objects.filter(pk=runs[1].pk).update(status="cancelled")

    first = api.get("/api/v1/runs", {"status": "queued", "workflow": pipeline.workflow_id, "page_size": 1}).json()
    assert [run["id"] for run in first["results"]] == [runs[2].pk]
    assert "status=queued" in first["next"] and f"workflow={pipeline.workflow_id}" in first["next"]
    assert ids(api.get(first["next"])) == [runs[0].pk]


@pytest.fixture
def ledger(team, pipeline, other_team):
    """Four entries of two runs in March, and one of another team's."""
    run_a = start_run(team=team, version=pipeline)
    run_b = start_run(team=team, version=pipeline)
    entries = [
        charge(run=run_a, agent="researcher", cost_usd="0.1", at=utc(2026, 3, 1, 10)),
        charge(run=run_a, agent="writer", cost_usd="0.2", at=utc(2026, 3, 2, 10)),
        charge(run=run_b, agent="researcher", model="other-model", cost_usd="0.3", at=utc(2026, 3, 3, 10)),
        charge(run=run_b, agent="writer", cost_usd="0.4", at=utc(2026, 3, 4, 10)),
    ]
    charge(run=start_run(team=other_team, version=workflow_version(team=other_team)), cost_usd="9", at=utc(2026, 3, 2))
    return entries


def test_the_team_ledger_lists_the_teams_entries_newest_first_with_their_run(api, ledger):
    response = api.get("/api/v1/ledger")

    assert ids(response) == [entry.pk for entry in reversed(ledger)]
    newest = response.json()["results"][0]
    assert (newest["run"], newest["step"], newest["agent"], newest["cost_usd"]) == (ledger[3].run_id, ledger[3].step.sequence, "writer", "0.400000")


def test_the_team_ledger_filters_by_agent_model_run_and_booked_range(api, ledger):
    def listed(**query) -> list[int]:
        return ids(api.get("/api/v1/ledger", query))

    assert listed(agent="writer") == [ledger[3].pk, ledger[1].pk]
    assert listed(model="other-model") == [ledger[2].pk]
    assert listed(run=ledger[0].run_id) == [ledger[1].pk, ledger[0].pk]
    assert listed(agent="researcher", run=ledger[2].run_id) == [ledger[2].pk]
    assert listed(booked_after="2026-03-02T10:00:00Z", booked_before="2026-03-04T10:00:00Z") == [ledger[2].pk, ledger[1].pk]
    assert listed(agent="nobody") == []
    # Another team's run names none of this team's entries.
    other_run = Run.objects.exclude(team=ledger[0].team_id).get()
    assert listed(run=other_run.pk) == []


def test_a_runs_ledger_filters_by_agent_model_and_booked_range_oldest_first(api, ledger):
    run_b = ledger[2].run_id

    assert ids(api.get(f"/api/v1/runs/{run_b}/ledger")) == [ledger[2].pk, ledger[3].pk]
    assert ids(api.get(f"/api/v1/runs/{run_b}/ledger", {"agent": "writer"})) == [ledger[3].pk]
    assert ids(api.get(f"/api/v1/runs/{run_b}/ledger", {"model": "other-model"})) == [ledger[2].pk]
    assert ids(api.get(f"/api/v1/runs/{run_b}/ledger", {"booked_before": "2026-03-04"})) == [ledger[2].pk]


def test_the_booked_range_dates_an_adjustment_by_the_charge_it_corrects(api, ledger):
    """Reports and period budgets date a cost by booked_at: an adjustment made today to a March charge is March's."""
    refund = ledger_adjust(
        entry=ledger[0],
        adjustment=check_adjustment(amount_usd="0.05", reason="billed late"),
        actor="user:ops",
    )

    march = ids(api.get("/api/v1/ledger", {"booked_after": "2026-03-01", "booked_before": "2026-04-01"}))
    assert refund.pk in march
    assert refund.pk not in ids(api.get("/api/v1/ledger", {"booked_after": "2026-04-01"}))


def test_the_team_ledger_pages_with_a_cursor_that_keeps_the_filter(api, ledger):
    first = api.get("/api/v1/ledger", {"agent": "writer", "page_size": 1}).json()
    assert [entry["id"] for entry in first["results"]] == [ledger[3].pk]
    rest = api.get(first["next"]).json()
    assert [entry["id"] for entry in rest["results"]] == [ledger[1].pk]
    assert rest["next"] is None


def test_workflows_filter_by_name(api, team, pipeline):
    workflow_version(team=team, source=UNPRICED_YAML)

    assert ids(api.get("/api/v1/workflows", {"name": "research-pipeline"})) == [pipeline.workflow_id]
    assert ids(api.get("/api/v1/workflows", {"name": "research"})) == []


def test_events_after_an_id_are_the_later_ones_oldest_first_and_page_on(api, team, pipeline):
    run = start_run(team=team, version=pipeline)
    for number in range(3):
        event_record(run=run, type=EventType.PROVIDER_RETRY, payload={"retry": number})
    events = ids(api.get(f"/api/v1/runs/{run.pk}/events"))
    assert len(events) >= 4 and events == sorted(events)

    assert ids(api.get(f"/api/v1/runs/{run.pk}/events", {"after": events[0]})) == events[1:]
    assert ids(api.get(f"/api/v1/runs/{run.pk}/events", {"after": events[-1]})) == []
    assert ids(api.get(f"/api/v1/runs/{run.pk}/events", {"after": 0})) == events
    first = api.get(f"/api/v1/runs/{run.pk}/events", {"after": events[0], "page_size": 1}).json()
    assert [event["id"] for event in first["results"]] == events[1:2]
    assert f"after={events[0]}" in first["next"]
    assert ids(api.get(first["next"])) == events[2:3]


BAD_VALUES = [
    ("/api/v1/runs", "status", "nope"),
    ("/api/v1/runs", "status", "QUEUED"),
    ("/api/v1/runs", "workflow", "-1"),
    ("/api/v1/runs", "workflow", "1.5"),
    ("/api/v1/runs", "workflow", "1e3"),
    ("/api/v1/runs", "workflow", "\u0663"),  # an Arabic-Indic three: a digit to int(), not to the API
    ("/api/v1/runs", "workflow", str(MAX_ID + 1)),
    ("/api/v1/runs", "workflow", "9" * 5000),
    ("/api/v1/runs", "created_after", "yesterday"),
    ("/api/v1/runs", "created_after", "2026-02-30T00:00:00Z"),
    ("/api/v1/runs", "created_before", "0001-01-01T00:00:00+01:00"),
    ("/api/v1/runs", "created_before", "2026-03-01T00:00:00Z" + "0" * 5000),
    ("/api/v1/ledger", "agent", "a" * 201),
    ("/api/v1/ledger", "model", "m" * 5000),
    ("/api/v1/ledger", "run", "one"),
    ("/api/v1/ledger", "booked_after", "2026-13-01"),
    ("/api/v1/ledger", "booked_before", "9999-12-31T23:59:59-01:00"),
    ("/api/v1/runs/{run}/ledger", "agent", "a" * 201),
    ("/api/v1/runs/{run}/ledger", "booked_after", "March"),
    ("/api/v1/runs/{run}/events", "after", "-5"),
    ("/api/v1/runs/{run}/events", "after", str(MAX_ID + 1)),
    ("/api/v1/workflows", "name", "n" * 201),
]


@pytest.mark.parametrize("path,parameter,value", BAD_VALUES, ids=[f"{p}-{v[:20]}" for _, p, v in BAD_VALUES])
def test_a_bad_filter_value_is_a_400_naming_the_parameter(api, team, pipeline, path, parameter, value):
    run = start_run(team=team, version=pipeline)
    response = api.get(path.format(run=run.pk), {parameter: value})

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert [detail["path"] for detail in error["details"]] == [parameter]
    assert value not in str(error)  # a long or hostile value is not echoed back
