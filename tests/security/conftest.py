from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from rest_framework.test import APIClient

from tests.conftest import client_for
from tests.factories import THREE_STEP_YAML, TeamFactory, workflow_version
from workflows.models import LedgerEntry, Run, Step, StepStatus, Team
from workflows.services.runs import run_start


@dataclass
class TeamWorld:
    team: Team
    api: APIClient
    workflow_id: int
    run_id: int


def team_world(*, name: str) -> TeamWorld:
    """A team with a workflow named `<name>-flow`, and a run of it with one settled step in the ledger."""
    team = TeamFactory(name=name)
    version = workflow_version(team=team, source=THREE_STEP_YAML, name=f"{name}-flow")
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "tides"})
    step = Step.objects.create(
        run=run, sequence=99, agent="researcher", iteration=1, status=StepStatus.SUCCEEDED, model="sim-model"
    )
    ledger_entry(run=run, step=step, cost=Decimal("0.300000"))
    return TeamWorld(team=team, api=client_for(team), workflow_id=version.workflow_id, run_id=run.pk)


def ledger_entry(*, run: Run, step: Step, cost: Decimal) -> LedgerEntry:
    entry = LedgerEntry.objects.create(
        team=run.team,
        run=run,
        step=step,
        attempt=1,
        agent=step.agent,
        provider="fake",
        model=step.model,
        input_tokens=10,
        output_tokens=1000,
        price_source="workflow",
        cost_usd=cost,
    )
    Run.objects.filter(pk=run.pk).update(spent_usd=run.spent_usd + cost)
    return entry


@pytest.fixture
def acme(db) -> TeamWorld:
    return team_world(name="acme")


@pytest.fixture
def globex(db) -> TeamWorld:
    return team_world(name="globex")


def row_counts() -> dict[str, int]:
    """How many rows every model of the project holds, Django's own included."""
    return {model._meta.label: model._base_manager.count() for model in apps.get_models()}


def team_reads(world: TeamWorld) -> dict[str, int]:
    """The status of each read a team relies on."""
    paths = [
        "/api/v1/runs",
        f"/api/v1/runs/{world.run_id}",
        f"/api/v1/runs/{world.run_id}/events",
        f"/api/v1/runs/{world.run_id}/steps",
        f"/api/v1/runs/{world.run_id}/ledger",
        f"/api/v1/runs/{world.run_id}/checkpoints",
        "/api/v1/workflows",
        f"/api/v1/workflows/{world.workflow_id}",
        f"/api/v1/workflows/{world.workflow_id}/cost-profile",
        "/api/v1/spend",
        "/api/v1/spend?format=csv",
        "/api/v1/team",
    ]
    return {path: world.api.get(path).status_code for path in paths}


def admin_reads(admin_client) -> dict[str, int]:
    """The status of every admin changelist and of the spend report."""
    urls = [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    ]
    urls += [reverse("admin:workflows_ledgerentry_spend"), reverse("admin:workflows_ledgerentry_spend_csv")]
    return {url: admin_client.get(url).status_code for url in urls}


def all_ok(statuses: dict[str, int]) -> dict[str, int]:
    """The reads that did not answer 200 (empty when all did)."""
    return {url: status for url, status in statuses.items() if status != 200}
