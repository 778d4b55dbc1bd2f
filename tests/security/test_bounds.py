"""Every number a team sends is bounded before anything is saved, and nothing saved can make a read fail."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, transaction
from django.db.models import F

from tests.admin.test_teams import change_url, form_data
from tests.factories import THREE_STEP_YAML
from tests.security.conftest import admin_reads, all_ok, ledger_entry, row_counts, team_reads
from workflows.definition.bounds import MAX_BUDGET_USD, MAX_TIMEOUT_SECONDS, MONEY_COLUMN_MAX
from workflows.models import BudgetChange, LedgerEntry, Run, RunStatus, Step, StepStatus, Team

pytestmark = pytest.mark.django_db


def start(world, **limits):
    body = {"workflow": "acme-flow", "inputs": {"topic": "tides"}, "limits": limits}
    return world.api.post("/api/v1/runs", body, format="json")


def assert_refused_at(response, status: int, type_: str, path: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["type"] == type_
    assert path in [detail["path"] for detail in error["details"]], error["details"]
    return error


def test_a_run_at_every_upper_bound_is_accepted_exactly(acme):
    response = start(acme, budget_usd="1000000000", max_iterations=500, timeout_seconds=MAX_TIMEOUT_SECONDS)

    assert response.status_code == 202, response.content
    assert response.json()["limits"] == {
        "budget_usd": "1000000000.000000",
        "budget_mode": "audit",
        "max_iterations": 500,
        "timeout_seconds": 31_622_400,
    }


@pytest.mark.parametrize(
    "field,value",
    [
        ("budget_usd", "1000000000.000001"),
        ("budget_usd", 10**12),
        ("max_iterations", 501),
        ("timeout_seconds", MAX_TIMEOUT_SECONDS + 1),
        ("timeout_seconds", 2**31),
    ],
)
def test_a_run_limit_one_past_its_bound_is_refused_and_leaves_no_row(acme, field, value):
    before = row_counts()

    response = start(acme, **{field: value})

    assert_refused_at(response, 400, "validation_error", f"limits.{field}")
    assert row_counts() == before


@pytest.mark.parametrize(
    "field,value", [("budget_usd", "1000000000.000001"), ("max_iterations", 501), ("timeout_seconds", 2**40)]
)
def test_a_resume_limit_past_its_bound_is_refused_before_the_run_is_looked_at(acme, field, value):
    Run.objects.filter(pk=acme.run_id).update(status=RunStatus.BUDGET_EXCEEDED)
    before = row_counts()

    response = acme.api.post(f"/api/v1/runs/{acme.run_id}/resume", {field: value, "reason": "more"}, format="json")

    assert_refused_at(response, 400, "validation_error", field)
    assert row_counts() == before
    assert Run.objects.get(pk=acme.run_id).status == RunStatus.BUDGET_EXCEEDED


@pytest.mark.parametrize(
    "replace,with_,path",
    [
        ("max_tokens: 1000}", "max_tokens: 1000}\n  limits: {budget_usd: 1000000000.5}", "workflow.limits.budget_usd"),
        ("max_tokens: 1000}", "max_tokens: 1000}\n  limits: {timeout_seconds: 99999999999}", "workflow.limits.timeout_seconds"),
        ("output_per_mtok: 300", "output_per_mtok: 10000.000001", "workflow.cost.pricing.sim-model.output_per_mtok"),
    ],
)
def test_a_definition_past_a_bound_is_refused_at_upload_naming_the_path(acme, replace, with_, path):
    before = row_counts()

    response = acme.api.post(
        "/api/v1/workflows?name=big", THREE_STEP_YAML.replace(replace, with_), content_type="application/yaml"
    )

    assert_refused_at(response, 400, "definition_invalid", path)
    assert row_counts() == before


def test_a_definition_at_the_price_bound_is_accepted(acme):
    response = acme.api.post(
        "/api/v1/workflows?name=dear",
        THREE_STEP_YAML.replace("output_per_mtok: 300", "output_per_mtok: 10000"),
        content_type="application/yaml",
    )
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget-usd", "1000000000.000001"], "defaults.budget_usd: must be at most 1000000000"),
        (["--period-budget-usd", "5000000000"], "period_budget_usd: must be at most 1000000000"),
        (["--timeout-seconds", "31622401"], "defaults.timeout_seconds: must be between 1 and 31622400"),
        (["--max-iterations", "2147483648"], "defaults.max_iterations: must be between 1 and 500"),
    ],
)
def test_create_team_refuses_defaults_past_their_bounds_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_team", "bounded", *args)
    assert not Team.objects.filter(name="bounded").exists()


def test_the_admin_refuses_a_period_budget_past_its_bound_as_a_form_error(admin_client, acme):
    response = admin_client.post(
        change_url(acme.team), form_data(admin_client, acme.team, period_budget_usd="2000000000")
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["period_budget_usd"] == ["must be at most 1000000000, not Decimal('2000000000')"]
    assert not BudgetChange.objects.exists()
    assert Team.objects.get(pk=acme.team.pk).period_budget_usd is None


@pytest.mark.parametrize("query", ["page_size=0", "page_size=201", "page_size=x", "cursor=%%%", "cursor=cD1hYmM="])
def test_a_bad_page_size_or_cursor_is_a_400_naming_the_parameter(acme, query):
    response = acme.api.get(f"/api/v1/runs?{query}")

    assert_refused_at(response, 400, "validation_error", query.split("=")[0])


def test_the_largest_page_and_a_returned_cursor_still_work(acme):
    first = acme.api.get("/api/v1/workflows?page_size=200")
    assert first.status_code == 200
    acme.api.post("/api/v1/runs", {"workflow": "acme-flow", "inputs": {"topic": "x"}}, format="json")
    page = acme.api.get("/api/v1/runs?page_size=1").json()
    assert acme.api.get(page["next"]).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/runs/9223372036854775808", "/api/v1/workflows/" + "9" * 5000])
def test_an_id_beyond_every_row_is_a_404(acme, path):
    response = acme.api.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_an_id_with_leading_zeros_is_the_same_id(acme):
    response = acme.api.get(f"/api/v1/runs/{acme.run_id:025d}")
    assert response.status_code == 200
    assert response.json()["id"] == acme.run_id


def day_ago(days: int) -> datetime:
    return datetime.now(UTC).replace(hour=12) - timedelta(days=days)


def settled_step(*, world, sequence: int, cost: Decimal, at: datetime) -> LedgerEntry:
    run = Run.objects.get(pk=world.run_id)
    step = Step.objects.create(
        run=run, sequence=sequence, agent="writer", iteration=1, status=StepStatus.SUCCEEDED, model="sim-model"
    )
    with mock.patch("django.utils.timezone.now", return_value=at):
        return ledger_entry(run=run, step=step, cost=cost)


def test_a_money_amount_too_large_for_its_column_is_never_stored(acme):
    """PostgreSQL refuses it by its column type, SQLite by the guard triggers: either way nothing is saved."""
    before = row_counts()

    with pytest.raises(DatabaseError), transaction.atomic():
        settled_step(world=acme, sequence=101, cost=Decimal(10**12), at=day_ago(0))
    with pytest.raises(DatabaseError), transaction.atomic():
        Run.objects.filter(pk=acme.run_id).update(spent_usd=F("spent_usd") + MONEY_COLUMN_MAX)

    assert row_counts() == before
    assert all_ok(team_reads(acme)) == {}


def test_spend_summed_past_what_one_column_holds_is_still_read_by_every_report(acme, admin_client):
    # Two runs' ledgers, on two days, each within its columns; together more than numeric(18, 6) holds.
    big = Decimal("600000000000.000000")
    settled_step(world=acme, sequence=101, cost=big, at=day_ago(2))
    second = Run.objects.create(
        team=acme.team, workflow_version=Run.objects.get(pk=acme.run_id).workflow_version, status=RunStatus.COMPLETED
    )
    acme.run_id, first_run = second.pk, acme.run_id
    settled_step(world=acme, sequence=101, cost=big, at=day_ago(1))

    assert all_ok(team_reads(acme)) == {}
    assert all_ok(admin_reads(admin_client)) == {}
    expected_total = "1200000000000.300000"  # the fixture's $0.30 step included
    assert acme.api.get("/api/v1/team").json()["lifetime_spent_usd"] == expected_total
    assert acme.api.get("/api/v1/spend").json()["total_usd"] == expected_total
    profile = acme.api.get(f"/api/v1/workflows/{acme.workflow_id}/cost-profile").json()
    assert profile["mean_cost_by_agent"]["writer"] == "600000000000.000000"
    assert Run.objects.get(pk=first_run).spent_usd == big + Decimal("0.3")


def test_the_bounds_keep_a_budget_a_thousandth_of_a_money_column():
    assert MAX_BUDGET_USD * 1000 <= MONEY_COLUMN_MAX + Decimal("0.000001")
