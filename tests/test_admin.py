import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import workflow_version
from workflows.models import ApiKey, Team
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


def test_team_defaults_are_editable(admin_client, team):
    response = admin_client.post(
        reverse("admin:workflows_team_change", args=[team.pk]),
        {"name": team.name, "default_budget_usd": "3.5", "default_budget_mode": "enforce",
         "default_max_iterations": "12", "default_timeout_seconds": ""},
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert (str(team.default_budget_usd), team.default_budget_mode, team.default_max_iterations) == (
        "3.500000",
        "enforce",
        12,
    )


def test_a_team_default_budget_of_zero_is_refused(admin_client, team):
    response = admin_client.post(
        reverse("admin:workflows_team_change", args=[team.pk]), {"name": team.name, "default_budget_usd": "0"}
    )
    assert response.status_code == 200
    assert Team.objects.get(pk=team.pk).default_budget_usd is None


def test_adding_an_api_key_shows_it_once_and_stores_only_its_hash(admin_client, team):
    response = admin_client.post(reverse("admin:workflows_apikey_add"), {"team": team.pk, "name": "ci"}, follow=True)
    [message] = [str(m) for m in response.context["messages"] if "The new key is" in str(m)]
    raw_key = message.split("The new key is ")[1].split(" ")[0]
    api_key = ApiKey.objects.get(name="ci")
    assert raw_key.startswith(api_key.prefix)
    assert raw_key not in (api_key.key_hash, api_key.prefix)
