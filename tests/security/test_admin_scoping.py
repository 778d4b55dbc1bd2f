"""Staff scoped to teams: a staff user who is not a superuser sees and changes only their teams' rows.

Two teams, each with a row of every kind the admin shows, every row carrying a marker unique to its team
(ALPHA, OMEGA). A staff user of ALPHA's team, with every permission of the app, must never get a page, CSV,
dropdown or autocomplete answer that contains OMEGA, and must be unable to move a row into OMEGA's team.
"""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from tests.admin.conftest import ledger_entry
from tests.admin.test_teams import form_data
from tests.factories import TeamFactory, workflow_version
from workflows.admin.base import SHARED_MODELS, TEAM_PATHS, TeamScopedAdmin, TeamScopedInline
from workflows.models import (
    ApiKey,
    BudgetChange,
    BudgetScope,
    Checkpoint,
    Event,
    EventType,
    LedgerEntry,
    ProviderCredential,
    Run,
    RunStatus,
    Step,
    Team,
    ThresholdCrossing,
    ToolPrice,
    WebhookDelivery,
    Workflow,
    WorkflowVersion,
)
from workflows.services.credentials import credential_set
from workflows.services.teams import api_key_create, team_budgets_update

pytestmark = pytest.mark.django_db

ALPHA, OMEGA = "alpha7q", "omega9z"  # in no word of the admin's own pages
APP_MODELS = [model for model in admin.site._registry if model._meta.app_label == "workflows"]
SPEND_URL = reverse("admin:workflows_ledgerentry_spend")
CSV_URL = reverse("admin:workflows_ledgerentry_spend_csv")
EVERY_DAY = {"since": "", "until": ""}


def team_rows(marker: str, cost: str) -> dict:
    """A team with one row of every kind the admin lists, each row showing `marker` on its list page."""
    team = TeamFactory(name=f"{marker}-team", webhook_url=f"https://{marker}.example.com/alerts")
    version = workflow_version(team=team, name=f"{marker}-wf")
    run = Run.objects.create(team=team, workflow_version=version, status=RunStatus.COMPLETED)
    entry = ledger_entry(run=run, agent=f"{marker}-agent", model=f"{marker}-model", cost=cost, at=datetime.now(UTC))
    event = Event.objects.create(team=team, run=run, type=EventType.BUDGET_THRESHOLD_CROSSED, actor=f"{marker}-actor")
    api_key, _ = api_key_create(team=team, name=f"{marker}-key")
    team_budgets_update(team=team, changes={"default_budget_usd": "5"}, actor="user:ops", reason=f"{marker}-reason")
    return {
        Team: team,
        Workflow: version.workflow,
        WorkflowVersion: version,
        Run: run,
        Step: entry.step,
        LedgerEntry: entry,
        Event: event,
        Checkpoint: Checkpoint.objects.create(
            run=run, reason="stop", next_agent=f"{marker}-agent", iterations=1, spent_usd=entry.cost_usd,
            active_time=timedelta(seconds=1),
        ),  # fmt: skip
        ApiKey: api_key,
        BudgetChange: BudgetChange.objects.get(team=team),
        ThresholdCrossing: ThresholdCrossing.objects.create(
            team=team, run=run, scope=BudgetScope.RUN, threshold_pct=50, budget_usd=Decimal("1"), spent_usd=entry.cost_usd
        ),
        ProviderCredential: credential_set(
            team=team, provider="openai", api_key="sk-" + marker * 4, base_url=f"https://{marker}.example.com/v1"
        ),
        WebhookDelivery: WebhookDelivery.objects.create(
            team=team, event=event, url=f"https://{marker}.example.com/hook", body="{}"
        ),
        ToolPrice: ToolPrice.objects.create(
            team=team, server=f"https://{marker}.example.com/mcp", tool="search", usd_per_call=Decimal("0.01")
        ),
    }


@pytest.fixture
def alpha(db):
    return team_rows(ALPHA, "0.250001")


@pytest.fixture
def omega(db):
    return team_rows(OMEGA, "7.000003")


def staff_client(name: str, *teams: Team) -> Client:
    """A staff user who is not a superuser, with every permission of the app, staff of `teams`."""
    user = User.objects.create_user(name, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="workflows"))
    for team in teams:
        team.staff.add(user)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alpha_staff(alpha, omega) -> Client:
    return staff_client("alpha-ops", alpha[Team])


def changelist(model) -> str:
    return reverse(f"admin:workflows_{model._meta.model_name}_changelist")


def page_of(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode().lower()


def test_every_admin_and_inline_of_the_app_is_scoped_and_every_model_has_a_team_path():
    from django.apps import apps

    for model in APP_MODELS:
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, TeamScopedAdmin), model
        assert all(issubclass(inline, TeamScopedInline) for inline in model_admin.inlines), model
    models = set(apps.get_app_config("workflows").get_models())
    assert models == set(TEAM_PATHS) | set(SHARED_MODELS)


@pytest.mark.parametrize("model", APP_MODELS, ids=lambda m: m.__name__)
def test_every_changelist_shows_only_the_staff_users_teams(alpha_staff, model):
    page = page_of(alpha_staff.get(changelist(model)))
    assert OMEGA not in page
    if model not in SHARED_MODELS:
        assert ALPHA in page  # the rows are listed, so the absence above means something
    if admin.site._registry[model].search_fields:  # a search for the other team's rows finds none
        assert alpha_staff.get(changelist(model), {"q": OMEGA}).context["cl"].result_count == 0


@pytest.mark.parametrize("model", [m for m in APP_MODELS if m not in SHARED_MODELS], ids=lambda m: m.__name__)
def test_another_teams_row_does_not_exist_for_them(alpha_staff, omega, model):
    row = omega[model]
    name = model._meta.model_name
    for view in ("change", "history", "delete"):
        response = alpha_staff.get(reverse(f"admin:workflows_{name}_{view}", args=[row.pk]), follow=True)
        if view == "delete" and response.status_code == 403:
            continue  # a read-only admin refuses any delete before it looks the row up
        assert response.redirect_chain == [(reverse("admin:index"), 302)], view
        page = page_of(response)
        assert "doesn’t exist" in page and OMEGA not in page


def test_another_teams_entry_cannot_be_adjusted_and_their_own_can(alpha_staff, alpha, omega):
    def adjust(entry: LedgerEntry) -> str:
        return reverse("admin:workflows_ledgerentry_adjust", args=[entry.pk])

    refund = {"amount_usd": "-0.000001", "reason": "refund"}
    for response in (
        alpha_staff.get(adjust(omega[LedgerEntry]), follow=True),
        alpha_staff.post(adjust(omega[LedgerEntry]), refund, follow=True),
    ):
        assert response.redirect_chain == [(reverse("admin:index"), 302)]
        page = page_of(response)
        assert "doesn’t exist" in page and OMEGA not in page
    assert alpha_staff.post(adjust(alpha[LedgerEntry]), refund).status_code == 302

    adjusted = LedgerEntry.objects.filter(basis="adjustment").values_list("corrects", flat=True)
    assert list(adjusted) == [alpha[LedgerEntry].pk]


def test_the_spend_report_its_chart_and_csvs_count_only_their_teams(alpha_staff, alpha):
    response = alpha_staff.get(SPEND_URL, EVERY_DAY)
    page = page_of(response)
    assert OMEGA not in page and ALPHA in page
    assert response.context["totals"]["Spend"] == "$0.25"
    assert '<svg class="spend-chart' in page and "$0.250001" in page
    assert [row["run"].pk for row in response.context["top_runs"]] == [alpha[Run].pk]
    assert "spend-by-team" not in page  # staff of one team: its spend is the totals
    for breakdown in response.context["tables"]:
        for row in breakdown["rows"]:
            assert OMEGA not in page_of(alpha_staff.get(row["entries_href"]))

    for by in ("day", "team", "workflow", "model", "agent", "tool"):
        response = alpha_staff.get(CSV_URL, {"by": by, **EVERY_DAY})
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert OMEGA not in response.content.decode()
        assert [row[len(rows[0]) - 6] for row in rows[1:]] == ["0.250001"]


def test_filtering_the_report_on_another_teams_team_or_workflow_is_a_form_error(alpha_staff, omega):
    for name in ("team", "workflow"):
        other = omega[Team if name == "team" else Workflow].pk
        response = alpha_staff.get(SPEND_URL, {name: other, **EVERY_DAY})
        assert "totals" not in response.context
        assert OMEGA not in page_of(response)
        assert alpha_staff.get(CSV_URL, {"by": "day", name: other}).status_code == 400
    response = alpha_staff.get(SPEND_URL, {"model": f"{OMEGA}-model", **EVERY_DAY})
    assert "totals" not in response.context


def test_dropdowns_and_autocompletes_offer_only_their_teams_rows(alpha_staff, alpha):
    for model in (ApiKey, ProviderCredential):
        form = alpha_staff.get(reverse(f"admin:workflows_{model._meta.model_name}_add")).context["adminform"].form
        assert list(form.fields["team"].queryset) == [alpha[Team]]

    autocomplete = reverse("admin:autocomplete")
    for source, field, expected in (
        ("apikey", "team", alpha[Team]),
        ("budgetchange", "run", alpha[Run]),
        ("workflowversion", "workflow", alpha[Workflow]),
    ):
        response = alpha_staff.get(autocomplete, {"app_label": "workflows", "model_name": source, "field_name": field})
        assert response.status_code == 200
        assert [result["id"] for result in response.json()["results"]] == [str(expected.pk)]


def test_posts_that_would_reach_into_another_team_change_nothing(alpha_staff, alpha, omega):
    # A new key or credential for the other team: the form refuses the choice, nothing is saved.
    response = alpha_staff.post(reverse("admin:workflows_apikey_add"), {"team": omega[Team].pk, "name": "sneaky"})
    assert response.status_code == 200 and "team" in response.context["adminform"].form.errors
    response = alpha_staff.post(
        reverse("admin:workflows_providercredential_add"),
        {"team": omega[Team].pk, "provider": "anthropic", "api_key": "sk-ant-" + "x" * 20, "base_url": ""},
    )
    assert response.status_code == 200 and "team" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="sneaky").exists()
    assert not ProviderCredential.objects.filter(provider="anthropic").exists()

    # Their own key, posted with the other team: the team is not a field of the change form.
    key = alpha[ApiKey]
    response = alpha_staff.post(reverse("admin:workflows_apikey_change", args=[key.pk]), {"team": omega[Team].pk, "name": "renamed"})
    assert response.status_code == 302
    assert ApiKey.objects.filter(pk=key.pk).values_list("team", "name").get() == (alpha[Team].pk, "renamed")

    # The other team's rows, changed, deleted or acted on by id: all untouched.
    before = Team.objects.filter(pk=omega[Team].pk).values().get()
    alpha_staff.post(reverse("admin:workflows_team_change", args=[omega[Team].pk]), {"name": "taken-over"})
    alpha_staff.post(reverse("admin:workflows_apikey_delete", args=[omega[ApiKey].pk]), {"post": "yes"})
    alpha_staff.post(
        changelist(ApiKey), {"action": "revoke", "_selected_action": [omega[ApiKey].pk, key.pk]}
    )
    alpha_staff.post(
        changelist(Team), {"action": "rotate_webhook_secret", "_selected_action": [omega[Team].pk]}
    )
    alpha_staff.post(
        changelist(ApiKey), {"action": "delete_selected", "_selected_action": [omega[ApiKey].pk], "post": "yes"}
    )
    assert Team.objects.filter(pk=omega[Team].pk).values().get() == before
    assert ApiKey.objects.get(pk=omega[ApiKey].pk).revoked_at is None
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None  # the action did run, on their own key


def test_a_form_that_offers_every_team_still_cannot_save_into_another(alpha_staff, omega, monkeypatch):
    # A form field declared by hand skips the scoped dropdown; the save itself is refused all the same.
    class EveryTeamForm(forms.ModelForm):
        team = forms.ModelChoiceField(Team.objects.all())

    monkeypatch.setattr(admin.site._registry[ApiKey], "form", EveryTeamForm)
    response = alpha_staff.post(reverse("admin:workflows_apikey_add"), {"team": omega[Team].pk, "name": "sneaky"})

    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_they_cannot_add_teams_name_staff_or_change_prices(alpha_staff, alpha):
    other_user = User.objects.create_user("someone", is_staff=True)
    assert alpha_staff.get(reverse("admin:workflows_team_add")).status_code == 403
    form = alpha_staff.get(reverse("admin:workflows_team_change", args=[alpha[Team].pk])).context["adminform"].form
    assert "staff" not in form.fields
    assert alpha_staff.get(reverse("admin:workflows_price_add")).status_code == 403
    assert page_of(alpha_staff.get(changelist(Team))).count('name="_selected_action"') == 1

    data = form_data(alpha_staff, alpha[Team], staff=[other_user.pk])
    assert alpha_staff.post(reverse("admin:workflows_team_change", args=[alpha[Team].pk]), data).status_code == 302
    assert list(alpha[Team].staff.values_list("username", flat=True)) == ["alpha-ops"]


def test_staff_of_no_team_see_nothing(alpha, omega):
    client = staff_client("nobody-ops")
    for model in APP_MODELS:
        page = page_of(client.get(changelist(model)))
        assert ALPHA not in page and OMEGA not in page
    page = page_of(client.get(SPEND_URL, EVERY_DAY))
    assert ALPHA not in page and OMEGA not in page
    assert client.get(CSV_URL, {"by": "model", **EVERY_DAY}).content.decode().splitlines()[1:] == []
    assert client.get(reverse("admin:workflows_apikey_add")).status_code == 403


def test_staff_of_two_teams_see_both_and_superusers_see_every_team(admin_client, alpha, omega):
    both = staff_client("both-ops", alpha[Team], omega[Team])
    for client in (both, admin_client):
        for model in (Run, LedgerEntry, Team):
            page = page_of(client.get(changelist(model)))
            assert ALPHA in page and OMEGA in page
        response = client.get(SPEND_URL, EVERY_DAY)
        assert response.context["totals"]["Spend"] == "$7.25"
        by_team = next(table for table in response.context["tables"] if table["by"] == "team")
        assert [(row["labels"], row["figures"][0]) for row in by_team["rows"]] == [
            ([f"{OMEGA}-team"], "$7.000003"),
            ([f"{ALPHA}-team"], "$0.250001"),
        ]


@pytest.mark.parametrize("model", [ApiKey, ProviderCredential, Workflow], ids=lambda m: m.__name__)
def test_a_rows_team_is_fixed_once_it_exists_for_superusers_too(admin_client, alpha, omega, model):
    row = alpha[model]
    change = reverse(f"admin:workflows_{model._meta.model_name}_change", args=[row.pk])
    form = admin_client.get(change).context["adminform"].form
    assert "team" not in form.fields

    data = {name: "" if form[name].value() is None else form[name].value() for name in form.fields}
    data |= {"team": omega[Team].pk, "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"}
    assert admin_client.post(change, data).status_code == 302
    assert model.objects.get(pk=row.pk).team_id == alpha[Team].pk


def test_a_superuser_names_a_teams_staff_on_its_page_and_they_see_it_at_once(admin_client, alpha, omega):
    client = staff_client("new-ops")
    assert ALPHA not in page_of(client.get(changelist(Run)))
    user = User.objects.get(username="new-ops")

    data = form_data(admin_client, alpha[Team], staff=[user.pk])
    assert admin_client.post(reverse("admin:workflows_team_change", args=[alpha[Team].pk]), data).status_code == 302

    assert list(user.staff_teams.all()) == [alpha[Team]]
    page = page_of(client.get(changelist(Run)))
    assert ALPHA in page and OMEGA not in page
