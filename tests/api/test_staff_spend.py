"""GET /staff/spend: the spend of several teams for their staff, over HTTP Basic, scoped as the admin's Spend
page is; a team API key never reads another team's spend through it or through GET /spend."""

import csv
import io
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from tests.api.test_staff import basic, refused, staff_user
from tests.factories import TeamFactory, workflow_version
from tests.reports.ledger import charge, start_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/staff/spend"


@pytest.fixture
def teams(team):
    """acme, globex and initech, each with a workflow named alike and spend of its own."""
    globex, initech = TeamFactory(name="globex"), TeamFactory(name="initech")
    for owner, cost in ((team, "0.300000"), (globex, "7.000000"), (initech, "0.000042")):
        run = start_run(team=owner, version=workflow_version(team=owner))
        charge(run=run, cost_usd=cost, at=datetime(2026, 3, 1, 10, tzinfo=UTC))
    return team, globex, initech


def groups(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.content
    return [(group["key"], group["spent_usd"]) for group in response.json()["groups"]]


def test_staff_of_two_teams_read_their_spend_by_team_and_never_a_third_teams(teams):
    acme, globex, _ = teams
    staff_user("ops", acme, globex, permissions=("view_ledgerentry",))

    assert groups(basic("ops").get(URL, {"group_by": "team"})) == [("globex", "7.000000"), ("acme", "0.300000")]
    # Two teams' workflows of one name stay apart.
    assert groups(basic("ops").get(URL)) == [("globex/research-pipeline", "7.000000"), ("acme/research-pipeline", "0.300000")]
    assert groups(basic("ops").get(URL, {"group_by": "day"})) == [("2026-03-01", "7.300000")]
    assert groups(basic("ops").get(URL, {"group_by": "team", "team": "acme"})) == [("acme", "0.300000")]


def test_another_teams_name_answers_as_an_unknown_one(teams):
    acme, *_ = teams
    staff_user("ops", acme, permissions=("view_ledgerentry",))

    for name in ("initech", "no-such-team"):
        error = refused(basic("ops").get(URL, {"team": name}), 404, "not_found")
        assert error["message"] == f"No team named '{name}'."
    assert groups(basic("ops").get(URL, {"group_by": "team"})) == [("acme", "0.300000")]


def test_superusers_read_every_teams_spend_as_csv_too(teams):
    staff_user("root", is_superuser=True, permissions=())

    response = basic("root").get(URL, {"group_by": "team", "format": "csv"})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["key"], row["spent_usd"]) for row in rows] == [
        ("globex", "7.000000"),
        ("acme", "0.300000"),
        ("initech", "0.000042"),
    ]


def test_a_team_api_key_is_refused_and_its_own_spend_by_team_is_its_team_alone(teams, api):
    error = refused(api.get(URL, {"group_by": "team"}), 403, "permission_denied")
    assert "a team API key may not" in error["message"]
    assert groups(api.get("/api/v1/spend", {"group_by": "team"})) == [("acme", "0.300000")]


@pytest.mark.parametrize(
    "flags,permissions,status,type_",
    [
        ({"is_staff": False}, ("view_ledgerentry",), 401, "authentication_failed"),
        ({}, ("view_run",), 403, "permission_denied"),
        ({"is_active": False}, ("view_ledgerentry",), 401, "authentication_failed"),
    ],
    ids=["not-staff", "no-permission", "inactive"],
)
def test_users_who_may_not_read_the_ledger_are_refused(teams, flags, permissions, status, type_):
    staff_user("someone", teams[0], permissions=permissions, **flags)
    refused(basic("someone").get(URL), status, type_)


def test_without_credentials_it_is_401_asking_for_basic(teams):
    response = APIClient().get(URL)
    refused(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_parameter_it_does_not_take_is_400(teams):
    staff_user("ops", teams[0], permissions=("view_ledgerentry",))
    error = refused(basic("ops").get(URL, {"teem": "acme"}), 400, "validation_error")
    assert error["details"][0]["path"] == "teem"
