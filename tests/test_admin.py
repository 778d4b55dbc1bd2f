from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import workflow_version
from workflows.models import Run
from workflows.providers import CompletionResult
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team):
    version = workflow_version(team=team)
    return run_start(team=team, workflow=version.workflow_id, inputs={"topic": "admin"}, limits={"budget_usd": "1"})


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m.__name__)
def test_every_changelist_renders_with_search(admin_client, run, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert admin_client.get(url).status_code == 200
    if admin.site._registry[model].search_fields:
        assert admin_client.get(url, {"q": "acme"}).status_code == 200


def story_table(page: str, section_id: str) -> str:
    """The HTML of one table of the run page's story, from its section's id to the table's end."""
    start = page.index(f'id="{section_id}"')
    return page[start : page.index("</table>", start)]


def test_a_runs_page_tells_its_budget_steps_events_and_ledger(admin_client, run):
    attempt = step_begin(step_id=run.steps.get().pk, worker="inline-worker:4242")
    step_settle(attempt=attempt, result=CompletionResult(output={"findings": "f"}, input_tokens=4321, output_tokens=777))
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()

    assert "$1.00 (audit)" in page
    steps = story_table(page, "run-steps")
    assert steps.count("<tr data-step-id=") == 2  # the settled step and the next one
    assert "inline-worker:4242" in steps and "researcher" in steps and "writer" in steps
    ledger = story_table(page, "run-ledger")
    assert ledger.count("<tr data-ledger-id=") == 1
    assert all(tokens in ledger for tokens in ("4321", "777"))
    assert 'title="agent_completed"' in story_table(page, "run-events")
    checkpoints = story_table(page, "run-checkpoints")
    assert "<tr data-checkpoint-id=" in checkpoints and "step_completed" in checkpoints


def test_a_workflows_page_shows_its_cost_profile(admin_client, team):
    version = workflow_version(team=team)
    for spent in ("0.40", "0.80"):
        run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
        Run.objects.filter(pk=run.pk).update(status="completed", spent_usd=Decimal(spent))

    page = admin_client.get(reverse("admin:workflows_workflow_change", args=[version.workflow_id])).content.decode()
    assert "Cost profile: 2 completed of 2 runs" in page
    assert "$1.00" in page  # p95 $0.80 x 1.25
    assert "p95 of completed runs x 1.25, rounded up to the cent" in page
