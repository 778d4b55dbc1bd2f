"""Prices a team cannot lower: for a real provider the price table wins over a workflow's
`cost.pricing`, at upload and when a step runs, unless an operator allowed the team to override it."""

from datetime import date
from decimal import Decimal

import pytest

from tests.admin.test_teams import change_url, form_data
from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, priced, wire  # noqa: F401 - fixtures
from tests.providers.wire import openai_completion, openai_usage
from workflows.models import BudgetChange, LedgerEntry, ModelAlias, Price, Team, Workflow
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db


def definition(pricing: str, *, provider: str = "openai", model: str = "gpt-4o") -> str:
    return f"""
workflow:
  name: priced
  entry_point: writer
  runtime: {{provider: {provider}, default_model: {model}, max_tokens: 1000}}
  cost:
    pricing:
      {pricing}
agents:
  - name: writer
    prompt: "Write."
"""


def upload(api, source: str):
    return api.post("/api/v1/workflows", {"definition": source}, format="json")


def run_once(team, wire, *, usage: dict) -> LedgerEntry:
    """Run the team's `priced` workflow against the wire server; its one ledger entry."""
    credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url=f"{wire.url}/v1")
    wire.script(openai_completion("Done.", usage))
    run = drive(run_start(team=team, workflow="priced"))
    assert run.status == "completed", run.error
    assert_invariants(run)
    return LedgerEntry.objects.get(run=run)


@pytest.mark.parametrize(
    ("pricing", "path", "table_price"),
    [
        ("gpt-4o: {input_per_mtok: 0, output_per_mtok: 10}", "gpt-4o.input_per_mtok", "2.500000"),
        ("gpt-4o: {input_per_mtok: 2.5, output_per_mtok: 9.999999}", "gpt-4o.output_per_mtok", "10.000000"),
        (
            "gpt-4o: {input_per_mtok: 2.5, output_per_mtok: 10, cache_read_per_mtok: 1.2}",
            "gpt-4o.cache_read_per_mtok",
            "1.250000",
        ),
        (
            "gpt-4o: {input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 0}",
            "gpt-4o.cache_read_per_mtok",
            "1.250000",
        ),
        (
            "claude-wire-test: {input_per_mtok: 3, output_per_mtok: 15, cache_write_per_mtok: 3.7}",
            "claude-wire-test.cache_write_per_mtok",
            "3.750000",
        ),
    ],
)
def test_a_workflow_that_prices_a_table_model_lower_is_refused_at_the_path(team, api, priced, pricing, path, table_price):
    response = upload(api, definition(pricing))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "definition_invalid"
    problems = {problem["path"]: problem["message"] for problem in error["details"]}
    assert f"below the price table's {table_price}" in problems[f"workflow.cost.pricing.{path}"]
    assert not Workflow.objects.exists()


def test_every_rate_priced_lower_is_named(team, api, priced):
    response = upload(api, definition("gpt-4o: {input_per_mtok: 0, output_per_mtok: 0}"))

    assert [problem["path"] for problem in response.json()["error"]["details"]] == [
        "workflow.cost.pricing.gpt-4o.input_per_mtok",
        "workflow.cost.pricing.gpt-4o.output_per_mtok",
        "workflow.cost.pricing.gpt-4o.cache_read_per_mtok",  # left out, it is billed at the $0 input rate
        "workflow.cost.pricing.gpt-4o.cache_write_per_mtok",
    ]


def test_a_listed_alias_is_held_to_its_models_price(team, api, priced):
    ModelAlias.objects.create(alias="gpt-4o-2024-08-06", model="gpt-4o")

    response = upload(api, definition("gpt-4o-2024-08-06: {input_per_mtok: 0, output_per_mtok: 10}"))

    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["path"] == "workflow.cost.pricing.gpt-4o-2024-08-06.input_per_mtok"
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    ("pricing", "provider"),
    [
        ("gpt-4o: {input_per_mtok: 2.5, output_per_mtok: 10, cache_read_per_mtok: 1.25}", "openai"),  # the table's own
        ("gpt-4o: {input_per_mtok: 5, output_per_mtok: 20}", "openai"),  # dearer
        ("my-finetune: {input_per_mtok: 0, output_per_mtok: 0}", "openai"),  # what the table lacks
        ("gpt-4o: {input_per_mtok: 0, output_per_mtok: 0}", "fake"),  # a simulator spends nothing real
    ],
)
def test_a_workflow_may_price_what_the_table_lacks_dearer_or_for_the_fake(team, api, priced, pricing, provider):
    assert upload(api, definition(pricing, provider=provider)).status_code == 201


def test_a_team_an_operator_allowed_may_lower_a_price_and_its_ledger_says_so(team, api, wire, priced):
    Team.objects.filter(pk=team.pk).update(may_override_prices=True)
    team.refresh_from_db()
    assert upload(api, definition("gpt-4o: {input_per_mtok: 1, output_per_mtok: 4}")).status_code == 201

    entry = run_once(team, wire, usage=openai_usage(prompt=1000, completion=100))

    # 1,000 input at the negotiated $1 + 100 output at $4 per 1M.
    assert (entry.cost_usd, entry.input_per_mtok, entry.price_source) == (Decimal("0.001400"), Decimal("1"), "workflow")


def test_a_price_the_table_adds_after_upload_wins_when_the_step_runs(team, api, wire):
    assert upload(api, definition("new-model: {input_per_mtok: 0, output_per_mtok: 0}", model="new-model")).status_code == 201
    Price.objects.create(model="new-model", input_per_mtok=2, output_per_mtok=8, valid_from=date(2024, 1, 1))

    entry = run_once(team, wire, usage=openai_usage(prompt=1000, completion=100))

    assert (entry.cost_usd, entry.price_source) == (Decimal("0.002800"), "table")


def test_a_permission_withdrawn_after_upload_leaves_the_table_price(team, api, wire, priced):
    Team.objects.filter(pk=team.pk).update(may_override_prices=True)
    team.refresh_from_db()
    assert upload(api, definition("gpt-4o: {input_per_mtok: 0, output_per_mtok: 0}")).status_code == 201
    Team.objects.filter(pk=team.pk).update(may_override_prices=False)
    team.refresh_from_db()

    entry = run_once(team, wire, usage=openai_usage(prompt=1000, completion=100))

    assert (entry.cost_usd, entry.price_source) == (Decimal("0.003500"), "table")


def test_a_dearer_workflow_price_for_a_table_model_is_charged_at_the_table(team, api, wire, priced):
    assert upload(api, definition("gpt-4o: {input_per_mtok: 5, output_per_mtok: 20}")).status_code == 201

    entry = run_once(team, wire, usage=openai_usage(prompt=1000, completion=100))

    assert (entry.cost_usd, entry.price_source) == (Decimal("0.003500"), "table")


def test_a_new_team_may_not_override_prices_and_an_operator_allows_it_in_the_admin(admin_client, team):
    assert Team.objects.get(pk=team.pk).may_override_prices is False

    data = form_data(admin_client, team, may_override_prices="on", change_reason="negotiated rates")
    response = admin_client.post(change_url(team), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Team.objects.get(pk=team.pk).may_override_prices is True
    change = BudgetChange.objects.get(team=team)
    assert (change.field, change.old_value, change.new_value, change.reason) == (
        "may_override_prices", "False", "True", "negotiated rates",
    )  # fmt: skip
    assert change.actor.startswith("user:")
