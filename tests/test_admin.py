from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import workflow_version
from workflows.models import Run
from workflows.services.runs import run_start

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


def test_a_runs_page_shows_its_budget_and_history_inline(admin_client, run):
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    assert "$1.000000 (audit)" in page
    for inline in ("steps", "ledger entries", "events", "checkpoints"):
        assert inline in page.lower()
    assert "researcher" in page


def test_a_workflows_page_shows_its_cost_profile(admin_client, team):
    version = workflow_version(team=team)
    for spent in ("0.40", "0.80"):
        run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
        Run.objects.filter(pk=run.pk).update(status="completed", spent_usd=Decimal(spent))

    page = admin_client.get(reverse("admin:workflows_workflow_change", args=[version.workflow_id])).content.decode()
    assert "Cost profile: 2 completed of 2 runs" in page
    assert "$1.00" in page  # p95 $0.80 x 1.25
    assert "p95 of completed runs x 1.25, rounded up to the cent" in page
