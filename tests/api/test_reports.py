"""GET /spend (JSON and CSV) and GET /workflows/{id}/cost-profile: shapes, money as strings, scoping, errors."""

import csv
import io
from datetime import UTC, datetime

import pytest

from tests.conftest import client_for
from tests.factories import TeamFactory, workflow_version
from tests.reports.ledger import answer, charge, start_run, taken_over
from workflows.models import EventType, Run, RunStatus
from workflows.reports.spend import GROUPINGS
from workflows.services.events import event_record
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def version(team):
    return workflow_version(team=team)


@pytest.fixture
def ledger(team, version):
    run = start_run(team=team, version=version)
    charge(run=run, agent="researcher", cost_usd="0.300000", at=utc(2026, 3, 1, 10))
    charge(run=run, agent="writer", cost_usd="0.123456", at=utc(2026, 3, 2, 10))
    charge(run=run, agent="reviewer", model="mystery-model", cost_usd=None, input_tokens=5, output_tokens=50,
           at=utc(2026, 3, 3))
    other = TeamFactory(name="globex")
    charge(run=start_run(team=other, version=workflow_version(team=other)), cost_usd="7.000000", at=utc(2026, 3, 1))
    return run


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))


def test_spend_by_agent_answers_money_as_six_place_strings_with_unpriced_usage_beside_it(api, ledger):
    response = api.get("/api/v1/spend?group_by=agent")

    assert response.status_code == 200
    assert response.json() == {
        "total_usd": "0.423456",
        "estimated_usd": "0.000000",
        "unpriced_steps": 1,
        "groups": [
            {"key": "researcher", "spent_usd": "0.300000", "estimated_usd": "0.000000", "runs": 1, "steps": 1,
             "input_tokens": 10, "output_tokens": 100, "unpriced_steps": 0, "unpriced_input_tokens": 0,
             "unpriced_output_tokens": 0},
            {"key": "writer", "spent_usd": "0.123456", "estimated_usd": "0.000000", "runs": 1, "steps": 1,
             "input_tokens": 10, "output_tokens": 100, "unpriced_steps": 0, "unpriced_input_tokens": 0,
             "unpriced_output_tokens": 0},
            {"key": "reviewer", "spent_usd": "0.000000", "estimated_usd": "0.000000", "runs": 1, "steps": 1,
             "input_tokens": 5, "output_tokens": 50, "unpriced_steps": 1, "unpriced_input_tokens": 5,
             "unpriced_output_tokens": 50},
        ],
    }


def test_spend_shows_what_rests_on_estimates_awaiting_usage_in_json_and_csv(api, team, version):
    run = start_run(team=team, version=version)
    _, owner = taken_over(run, sequence=1)  # the first attempt's outcome is unknown: its $0.30 estimated
    step_settle(attempt=owner, result=answer({"findings": "f"}, output_tokens=500))

    body = api.get("/api/v1/spend", {"group_by": "agent"}).json()
    as_csv = csv_rows(api.get("/api/v1/spend", {"group_by": "agent", "format": "csv"}))

    assert (body["total_usd"], body["estimated_usd"]) == ("0.450000", "0.300000")
    assert [(g["key"], g["spent_usd"], g["estimated_usd"], g["steps"]) for g in body["groups"]] == [
        ("researcher", "0.450000", "0.300000", 1)
    ]
    assert [(row["spent_usd"], row["estimated_usd"]) for row in as_csv] == [("0.450000", "0.300000")]


def test_spend_groups_by_workflow_by_default_and_keeps_to_the_callers_team(api, ledger):
    body = api.get("/api/v1/spend/").json()

    assert [(g["key"], g["spent_usd"]) for g in body["groups"]] == [("research-pipeline", "0.423456")]
    assert body["total_usd"] == "0.423456"  # not globex's 7.000000


def test_spend_dates_are_inclusive(api, ledger):
    body = api.get("/api/v1/spend?group_by=day&since=2026-03-01&until=2026-03-02").json()

    assert [(g["key"], g["spent_usd"]) for g in body["groups"]] == [("2026-03-01", "0.300000"), ("2026-03-02", "0.123456")]


def test_spend_by_team_is_one_group_the_callers_team_however_many_teams_spent(api, team, ledger):
    body = api.get("/api/v1/spend", {"group_by": "team"}).json()

    assert [(g["key"], g["spent_usd"], g["runs"], g["steps"], g["unpriced_steps"]) for g in body["groups"]] == [
        (team.name, "0.423456", 1, 3, 1)
    ]
    assert body["total_usd"] == "0.423456"  # not globex's 7.000000
    globex = Run.objects.exclude(team=team).get().team
    body = client_for(globex).get("/api/v1/spend", {"group_by": "team"}).json()
    assert [(g["key"], g["spent_usd"]) for g in body["groups"]] == [("globex", "7.000000")]


@pytest.mark.parametrize("group_by", list(GROUPINGS))
@pytest.mark.parametrize("ask", [{"HTTP_ACCEPT": "text/csv"}, {"format": "csv"}])
def test_spend_as_csv_is_the_json_row_for_row(api, ledger, group_by, ask):
    query = {"group_by": group_by, **{k: v for k, v in ask.items() if k == "format"}}
    headers = {k: v for k, v in ask.items() if k != "format"}

    as_csv = api.get("/api/v1/spend", query, **headers)
    as_json = api.get("/api/v1/spend", {"group_by": group_by}).json()

    assert as_csv.status_code == 200
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert as_csv.content.decode().splitlines()[0] == ",".join(as_json["groups"][0])
    assert csv_rows(as_csv) == [{column: str(value) for column, value in group.items()} for group in as_json["groups"]]


def test_spend_csv_cells_never_open_as_spreadsheet_formulas(api, team, version):
    run = start_run(team=team, version=version)
    charge(run=run, model="=HYPERLINK(\"http://evil\")", cost_usd="0.100000", at=utc(2026, 3, 1))
    charge(run=run, model="-1+2", cost_usd="0.050000", at=utc(2026, 3, 1))

    as_json = api.get("/api/v1/spend", {"group_by": "model"}).json()
    as_csv = csv_rows(api.get("/api/v1/spend", {"group_by": "model", "format": "csv"}))

    assert [group["key"] for group in as_json["groups"]] == ['=HYPERLINK("http://evil")', "-1+2"]
    assert [row["key"] for row in as_csv] == ['\'=HYPERLINK("http://evil")', "'-1+2"]
    assert [row["spent_usd"] for row in as_csv] == ["0.100000", "0.050000"]


@pytest.mark.parametrize(
    "query,path",
    [
        ("group_by=colour", "group_by"),
        ("since=2026-02-30", "since"),
        ("until=yesterday", "until"),
        ("since=2026-03-02&until=2026-03-01", "since"),
        ("format=xml", "format"),
    ],
)
@pytest.mark.parametrize("as_csv", [False, True])
def test_bad_spend_parameters_are_400_in_the_json_error_shape_naming_the_parameter(api, query, path, as_csv):
    response = api.get(f"/api/v1/spend?{query}", HTTP_ACCEPT="text/csv" if as_csv else "application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert [detail["path"] for detail in error["details"]] == [path]


def test_reports_need_an_api_key(db, version):
    client = client_for(TeamFactory(name="nobody"))
    client.credentials()
    for url in ("/api/v1/spend", f"/api/v1/workflows/{version.workflow_id}/cost-profile"):
        assert client.get(url).status_code == 401


def test_cost_profile_answers_percentiles_the_rule_and_would_have_stopped(api, team, version):
    for spent in ("0.10", "0.20", "0.30", "0.40"):
        Run.objects.filter(pk=start_run(team=team, version=version).pk).update(spent_usd=spent, status=RunStatus.COMPLETED)
    audited = start_run(team=team, version=version, limits={"budget_usd": "0.5", "budget_mode": "audit"})
    charge(run=audited, agent="researcher", cost_usd="0.300000", at=utc(2026, 3, 1))
    event_record(
        run=audited,
        type=EventType.BUDGET_EXCEEDED,
        payload={"scope": "run", "budget_usd": "0.500000", "spent_usd": "0.300000", "projected_usd": "0.600000",
                 "budget_mode": "audit", "current_agent": "writer"},
    )

    response = api.get(f"/api/v1/workflows/{version.workflow_id}/cost-profile")

    assert response.status_code == 200
    assert response.json() == {
        "runs": 5,
        "completed_runs": 4,
        "percentile_method": "nearest rank: the smallest completed-run spend that at least p% of completed runs do not exceed",
        "p50": "0.200000",
        "p95": "0.400000",
        "max": "0.400000",
        "mean_cost_by_agent": {"researcher": "0.300000"},
        "would_have_stopped": [
            {"run": audited.pk, "step_agent": "writer", "spent_usd": "0.300000", "projected_usd": "0.600000",
             "budget_usd": "0.500000"}
        ],
        "recommended_budget_usd": "0.500000",
        "margin": "1.25",
        "rule": "p95 of completed runs x 1.25, rounded up to the cent",
        "note": None,
    }


def test_cost_profile_without_completed_runs_is_null_with_a_note(api, version):
    body = api.get(f"/api/v1/workflows/{version.workflow_id}/cost-profile/").json()

    assert (body["p50"], body["p95"], body["max"], body["recommended_budget_usd"]) == (None, None, None, None)
    assert body["note"].startswith("No completed runs yet")


def test_another_teams_or_an_unknown_workflows_cost_profile_is_404(api, db):
    other = TeamFactory(name="globex")
    theirs = workflow_version(team=other).workflow_id
    for workflow_id in (theirs, theirs + 1000):
        response = api.get(f"/api/v1/workflows/{workflow_id}/cost-profile")
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["type"], error["message"]) == ("not_found", f"No workflow with id {workflow_id}.")
