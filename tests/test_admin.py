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


def inline_section(page: str, prefix: str) -> str:
    """The HTML of one inline formset (`<div id="<prefix>-group">` up to the next inline group), so that a
    marker found there is in that inline, not in the sidebar, the budget box or another inline."""
    start = page.index(f'id="{prefix}-group"')
    following = [page.find(f'id="{other}-group"', start + 1) for other in RUN_INLINES if other != prefix]
    return page[start : min([index for index in following if index > start], default=len(page))]


RUN_INLINES = ("steps", "ledger_entries", "events", "checkpoints")


def test_a_runs_page_shows_its_budget_and_history_inline(admin_client, run):
    attempt = step_begin(step_id=run.steps.get().pk, worker="inline-worker:4242")
    step_settle(attempt=attempt, result=CompletionResult(output={"findings": "f"}, input_tokens=4321, output_tokens=777))
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()

    assert "$1.000000 (audit)" in page
    steps = inline_section(page, "steps")
    assert 'id="steps-1"' in steps and 'id="steps-2"' not in steps  # the settled step and the next one
    assert "inline-worker:4242" in steps and "researcher" in steps and "writer" in steps
    ledger = inline_section(page, "ledger_entries")
    assert 'id="ledger_entries-0"' in ledger and 'id="ledger_entries-1"' not in ledger
    assert all(tokens in ledger for tokens in ("4321", "777"))
    assert "agent_completed" in inline_section(page, "events")
    checkpoints = inline_section(page, "checkpoints")
    assert 'id="checkpoints-1"' in checkpoints and "step_completed" in checkpoints


def test_a_workflows_page_shows_its_cost_profile(admin_client, team):
    version = workflow_version(team=team)
    for spent in ("0.40", "0.80"):
        run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
        Run.objects.filter(pk=run.pk).update(status="completed", spent_usd=Decimal(spent))

    page = admin_client.get(reverse("admin:workflows_workflow_change", args=[version.workflow_id])).content.decode()
    assert "Cost profile: 2 completed of 2 runs" in page
    assert "$1.00" in page  # p95 $0.80 x 1.25
    assert "p95 of completed runs x 1.25, rounded up to the cent" in page
