"""POST /ledger/{id}/adjustments: staff users adjust a charge over HTTP Basic, scoped as in the admin;
team API keys, other users and other teams' entries are refused in the one error shape, saving nothing."""

import base64
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tests.factories import TeamFactory, workflow_version
from tests.invariants import assert_invariants
from tests.reports.ledger import answer, start_run, taken_over
from workflows.models import EventType, LedgerEntry, Run
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db

REFUND = {"amount_usd": "-0.28", "reason": "Provider console: request billed $0.02"}


def staff_user(name: str, *teams, permissions=("add_ledgerentry",), **flags) -> User:
    user = User.objects.create_user(name, password=f"{name}-password", **{"is_staff": True, **flags})
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="workflows", codename__in=permissions))
    for team in teams:
        team.staff.add(user)
    return user


def basic(username: str, password: str | None = None) -> APIClient:
    client = APIClient()
    token = base64.b64encode(f"{username}:{password or f'{username}-password'}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    return client


def adjustments(entry: LedgerEntry) -> str:
    return f"/api/v1/ledger/{entry.pk}/adjustments"


@pytest.fixture
def estimate(team) -> LedgerEntry:
    """The $0.30 estimate of an attempt whose worker was thought dead."""
    run = start_run(team=team, version=workflow_version(team=team), limits={"budget_usd": "5"})
    taken_over(run, sequence=1)
    return run.ledger_entries.get(basis="estimated")


def nothing_saved(entry: LedgerEntry) -> bool:
    run = Run.objects.get(pk=entry.run_id)
    return (
        not LedgerEntry.objects.filter(basis="adjustment").exists()
        and not run.events.filter(type=EventType.LEDGER_ADJUSTED).exists()
        and run.spent_usd == Decimal("0.300000")
    )


def test_a_staff_users_script_adjusts_an_estimate_and_the_team_sees_it_in_the_runs_ledger(team, estimate, api):
    staff_user("ops", team)

    response = basic("ops").post(adjustments(estimate), REFUND, format="json")

    assert response.status_code == 201
    made = response.json()
    assert {key: made[key] for key in ("step", "attempt", "agent", "basis", "corrects", "actor", "reason", "cost_usd")} == {
        "step": 1,
        "attempt": 1,
        "agent": "researcher",
        "basis": "adjustment",
        "corrects": estimate.pk,
        "actor": "user:ops",
        "reason": "Provider console: request billed $0.02",
        "cost_usd": "-0.280000",
    }
    run = api.get(f"/api/v1/runs/{estimate.run_id}").json()
    assert (run["spent_usd"], run["estimated_usd"]) == ("0.020000", "0.020000")
    ledger = api.get(f"/api/v1/runs/{estimate.run_id}/ledger").json()["results"]
    assert [(e["id"], e["basis"], e["corrects"], e["cost_usd"]) for e in ledger] == [
        (estimate.pk, "estimated", None, "0.300000"),
        (made["id"], "adjustment", estimate.pk, "-0.280000"),
    ]
    (event,) = api.get(f"/api/v1/runs/{estimate.run_id}/events").json()["results"][-1:]
    assert (event["type"], event["actor"], event["payload"]["entry_stands_at_usd"]) == (
        "ledger_adjusted",
        "user:ops",
        "0.020000",
    )
    assert_invariants(Run.objects.get(pk=estimate.run_id))


def test_a_superuser_adjusts_any_teams_entry(estimate):
    User.objects.create_superuser("root", password="root-password")

    response = basic("root").post(adjustments(estimate), {"amount_usd": 0.1, "reason": "price fixed"}, format="json")

    assert (response.status_code, response.json()["cost_usd"]) == (201, "0.100000")


def refused(response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_
    return body["error"]


def test_without_credentials_or_with_wrong_ones_it_is_401(team, estimate):
    staff_user("ops", team)

    response = APIClient().post(adjustments(estimate), REFUND, format="json")
    refused(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Basic")
    refused(basic("ops", "wrong").post(adjustments(estimate), REFUND, format="json"), 401, "authentication_failed")
    assert nothing_saved(estimate)


def test_a_logged_in_admin_session_is_not_enough(team, estimate):
    client = APIClient()
    client.force_login(staff_user("ops", team))

    refused(client.post(adjustments(estimate), REFUND, format="json"), 401, "not_authenticated")
    assert nothing_saved(estimate)


def test_a_team_api_key_is_refused_with_403(team, estimate, api):
    error = refused(api.post(adjustments(estimate), REFUND, format="json"), 403, "permission_denied")

    assert "a team API key may not" in error["message"]
    assert nothing_saved(estimate)


@pytest.mark.parametrize(
    "flags,permissions,status,type_",
    [
        # A user who is not staff is told what a wrong password is told: no one's password is confirmed.
        ({"is_staff": False}, ("add_ledgerentry",), 401, "authentication_failed"),
        ({}, ("view_ledgerentry",), 403, "permission_denied"),  # staff who may read the ledger only
        ({"is_active": False}, ("add_ledgerentry",), 401, "authentication_failed"),
    ],
    ids=["not-staff", "no-permission", "inactive"],
)
def test_users_who_may_not_adjust_are_refused(team, estimate, flags, permissions, status, type_):
    staff_user("someone", team, permissions=permissions, **flags)

    refused(basic("someone").post(adjustments(estimate), REFUND, format="json"), status, type_)
    assert nothing_saved(estimate)


def test_another_teams_entry_is_absent_for_staff_of_other_teams(estimate):
    staff_user("globex-ops", TeamFactory(name="globex"))

    error = refused(basic("globex-ops").post(adjustments(estimate), REFUND, format="json"), 404, "not_found")
    unknown = refused(
        basic("globex-ops").post(f"/api/v1/ledger/{estimate.pk + 1000}/adjustments", REFUND, format="json"),
        404,
        "not_found",
    )

    assert error["message"] == f"No ledger entry with id {estimate.pk}."
    assert unknown["message"] == f"No ledger entry with id {estimate.pk + 1000}."
    assert nothing_saved(estimate)


@pytest.mark.parametrize(
    "body,details",
    [
        ({**REFUND, "actor": "someone else"}, [{"path": "actor", "message": "Unknown field."}]),
        ({"reason": "why"}, [{"path": "amount_usd", "message": "This field is required."}]),
        ({"amount_usd": "0", "reason": " "}, [
            {"path": "amount_usd", "message": "must not be 0"},
            {"path": "reason", "message": "say why the entry is adjusted"},
        ]),
        ({"amount_usd": "-0.300001", "reason": "refund"}, [{"path": "amount_usd", "message": "must be at least -0.300000"}]),
    ],
    ids=["unknown-field", "missing", "checked-by-the-service", "below-zero"],
)
def test_an_invalid_adjustment_is_400_with_each_problem_and_saves_nothing(team, estimate, body, details):
    staff_user("ops", team)

    error = refused(basic("ops").post(adjustments(estimate), body, format="json"), 400, "validation_error")

    assert error["details"] == details
    assert nothing_saved(estimate)


def test_only_json_is_accepted_so_a_cross_site_form_cannot_post_with_cached_credentials(team, estimate):
    staff_user("ops", team)

    response = basic("ops").post(adjustments(estimate), "amount_usd=-0.28&reason=x", content_type="application/x-www-form-urlencoded")

    refused(response, 415, "unsupported_media_type")
    assert nothing_saved(estimate)


def test_a_correction_is_refused_naming_the_charge_to_adjust(team):
    run = start_run(team=team, version=workflow_version(team=team))
    late, _ = taken_over(run, sequence=1)
    step_settle(attempt=late, result=answer({"findings": "late"}, output_tokens=500))
    correction = run.ledger_entries.get(basis="correction")
    staff_user("ops", team)

    error = refused(basic("ops").post(adjustments(correction), REFUND, format="json"), 400, "validation_error")

    assert error["message"] == f"Entry {correction.pk} corrects entry {correction.corrects_id}: adjust that one."
    assert not run.ledger_entries.filter(basis="adjustment").exists()


def test_a_nul_inside_basic_credentials_is_refused_as_any_wrong_credentials(team, estimate):
    """The header's base64 hides it from the check of raw headers; the database would refuse it."""
    staff_user("ops", team)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"ops\x00:ops-password").decode())

    refused(client.post(adjustments(estimate), REFUND, format="json"), 401, "authentication_failed")
    assert nothing_saved(estimate)


def test_adjustments_never_take_an_entry_or_its_run_past_the_largest_budget(team, estimate):
    staff_user("ops", team)
    assert basic("ops").post(adjustments(estimate), {"amount_usd": "999999999", "reason": "fix"}, format="json").status_code == 201

    response = basic("ops").post(adjustments(estimate), {"amount_usd": "1", "reason": "again"}, format="json")

    details = refused(response, 400, "validation_error")["details"]
    assert details == [{"path": "amount_usd", "message": "must keep the entry and its run within 1000000000"}]
    assert LedgerEntry.objects.filter(basis="adjustment").count() == 1
