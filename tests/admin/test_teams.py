from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils.html import escape
from django.urls import reverse

from tests.admin.conftest import ledger_entry, utc_days_ago
from tests.factories import TeamFactory, workflow_version
from workflows.admin.teams import TeamAdmin
from workflows.models import ApiKey, BudgetChange, Run, Team
from workflows.services.periods import period_window
from workflows.webhook_signing import webhook_key

pytestmark = pytest.mark.django_db


def change_url(team):
    return reverse("admin:workflows_team_change", args=[team.pk])


def form_data(admin_client, team, **changes) -> dict:
    """What the browser posts from the team's change page, with `changes` typed in."""
    context = admin_client.get(change_url(team)).context
    form = context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    for inline in context["inline_admin_formsets"]:
        formset = inline.formset
        data |= {f"{formset.prefix}-{key}": value for key, value in formset.management_form.initial.items()}
        for row in formset.forms:
            data |= {row.add_prefix(name): row[name].value() for name in row.fields}
    return {name: "" if value is None else value for name, value in (data | changes).items()}


def test_the_team_page_shows_period_spend_against_the_budget(admin_client, team):
    Team.objects.filter(pk=team.pk).update(period_budget_usd=Decimal("2"), period="week")
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), reserved_usd=Decimal("0.25"))
    ledger_entry(run=run, agent="researcher", model="sim-model", cost="0.50", at=datetime.now(UTC))
    ledger_entry(run=run, agent="writer", model="sim-model", cost="3.00", at=utc_days_ago(40))

    page = admin_client.get(change_url(team)).content.decode()

    assert 'class="budget-bar"' in page
    assert '<div class="spent" style="width: 25.0%"></div>' in page
    assert '<div class="reserved" style="left: 25.0%; width: 12.5%"></div>' in page
    assert page.count('class="threshold"') == 3  # the default alerts at 50, 80 and 100%
    assert "$0.50 of $2.00 spent (25.0%)" in page
    resets_at = period_window("week").end
    assert f'<td id="budget-resets-at">{resets_at:%Y-%m-%d %H:%M} UTC</td>' in page
    assert "<th scope=\"row\">Reserved (steps in flight)</th><td>$0.25</td>" in page
    assert "<th scope=\"row\">Lifetime spend</th><td>$3.50</td>" in page
    assert f"?team={team.pk}" in page  # the spend report, narrowed to the team


def test_a_team_over_its_period_budget_shows_a_full_red_bar(admin_client, team):
    Team.objects.filter(pk=team.pk).update(period_budget_usd=Decimal("0.10"))
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team))
    ledger_entry(run=run, agent="researcher", model="sim-model", cost="0.30", at=datetime.now(UTC))
    page = admin_client.get(change_url(team)).content.decode()
    assert 'class="budget-bar over"' in page
    assert '<div class="spent" style="width: 100%"></div>' in page
    assert "(300.0%), over budget" in page


def test_a_team_without_a_period_budget_shows_its_spend_without_a_bar(admin_client, team):
    page = admin_client.get(change_url(team)).content.decode()
    assert "budget-bar" not in page.replace("budget-bar-legend", "")
    assert "No period budget is set" in page
    assert f"{period_window('month').end:%Y-%m-%d %H:%M} UTC" in page


def test_budget_edits_go_to_the_audit_trail_with_who_and_why(admin_client, team):
    response = admin_client.post(
        change_url(team),
        form_data(
            admin_client,
            team,
            default_budget_usd="3.5",
            default_budget_mode="enforce",
            default_max_iterations="12",
            period_budget_usd="50",
            period="week",
            alert_thresholds="90, 75",
            webhook_url="https://hooks.example.com/budget",
            change_reason="Q3 planning",
        ),
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert (team.default_budget_usd, team.default_budget_mode, team.default_max_iterations) == (
        Decimal("3.5"),
        "enforce",
        12,
    )
    assert (team.period_budget_usd, team.period, team.alert_thresholds) == (Decimal("50"), "week", [75, 90])
    assert team.webhook_url == "https://hooks.example.com/budget"
    trail = {change.field: change for change in BudgetChange.objects.filter(team=team)}
    assert set(trail) == {
        "default_budget_usd",
        "default_budget_mode",
        "default_max_iterations",
        "period_budget_usd",
        "period",
        "alert_thresholds",
    }
    assert (trail["period"].old_value, trail["period"].new_value) == ("month", "week")
    assert {(change.actor, change.reason) for change in trail.values()} == {("user:admin", "Q3 planning")}

    page = admin_client.get(change_url(team)).content.decode()
    assert "Budget audit trail" in page and "Q3 planning" in page


def test_a_change_the_service_refuses_is_a_form_error(admin_client, team):
    response = admin_client.post(
        change_url(team), form_data(admin_client, team, default_budget_usd="0", alert_thresholds="half")
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"default_budget_usd", "alert_thresholds"}
    assert not BudgetChange.objects.exists()
    assert Team.objects.get(pk=team.pk).default_budget_usd is None


def test_a_rename_alone_saves_without_an_audit_row(admin_client, team):
    response = admin_client.post(change_url(team), form_data(admin_client, team, name="acme-corp"))
    assert response.status_code == 302
    assert Team.objects.get(pk=team.pk).name == "acme-corp"
    assert not BudgetChange.objects.exists()


def test_saving_a_team_never_writes_back_what_workers_wrote_meanwhile(admin_client, team, monkeypatch):
    save_model = TeamAdmin.save_model

    def an_audit_report_re_arms_meanwhile(self, request, obj, form, change):
        Team.objects.filter(pk=obj.pk).update(period_audit_rearm_at_usd=Decimal("0.300000"))
        save_model(self, request, obj, form, change)

    monkeypatch.setattr(TeamAdmin, "save_model", an_audit_report_re_arms_meanwhile)
    data = form_data(admin_client, team, webhook_url="https://hooks.example.com/b")
    data["initial-alert_thresholds"] = data["alert_thresholds"]  # as a browser posts it: the field is unchanged
    assert admin_client.post(change_url(team), data).status_code == 302

    team.refresh_from_db()
    assert (team.webhook_url, team.period_audit_rearm_at_usd) == ("https://hooks.example.com/b", Decimal("0.300000"))


def test_the_audit_trail_lists_who_changed_what(admin_client, team):
    BudgetChange.objects.create(
        team=team, field="period_budget_usd", old_value="", new_value="50.000000", actor="user:ops", reason="launch"
    )
    page = admin_client.get(reverse("admin:workflows_budgetchange_changelist"), {"q": "launch"}).content.decode()
    assert "Budget audit trail" in page
    assert "user:ops" in page and "50.000000" in page


def test_adding_an_api_key_shows_it_once_and_stores_only_its_hash(admin_client, team):
    response = admin_client.post(reverse("admin:workflows_apikey_add"), {"team": team.pk, "name": "ci"}, follow=True)
    [message] = [str(m) for m in response.context["messages"] if "The new key is" in str(m)]
    raw_key = message.split("The new key is ")[1].split(" ")[0]
    api_key = ApiKey.objects.get(name="ci")
    assert raw_key.startswith(api_key.prefix)
    assert raw_key not in (api_key.key_hash, api_key.prefix)


def test_a_new_team_gets_a_webhook_secret(admin_client):
    response = admin_client.post(
        reverse("admin:workflows_team_add"),
        {"name": "initech", "period": "month", "period_mode": "audit", "alert_thresholds": "[50, 100]"},
    )
    assert response.status_code == 302
    assert len(webhook_key(Team.objects.get(name="initech").webhook_secret)) == 32


def test_an_operator_routes_a_teams_copilot_on_its_page_and_the_api_shows_it(admin_client, team, api):
    data = form_data(
        admin_client,
        team,
        **{
            "provider_routes-TOTAL_FORMS": "1",
            "provider_routes-0-provider": "copilot",
            "provider_routes-0-backend": "anthropic",
            "change_reason": "",
        },
    )
    response = admin_client.post(change_url(team), data)

    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert api.get("/api/v1/team/provider-routes").json()["routes"] == {"copilot": "anthropic"}

    data = form_data(admin_client, team, **{"provider_routes-0-backend": "fake"})
    refused = admin_client.post(change_url(team), data)
    assert refused.status_code == 200
    assert "fake is not one of the available choices" in str(refused.context["inline_admin_formsets"][0].formset.errors)


def test_thresholds_are_edited_as_a_list_of_percentages(admin_client, team):
    page = admin_client.get(change_url(team)).content.decode()
    assert 'name="alert_thresholds" value="50, 80, 100"' in page

    response = admin_client.post(
        change_url(team), form_data(admin_client, team, alert_thresholds="120%, 25 ,75", change_reason="earlier warning")
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.alert_thresholds == [25, 75, 120]
    change = BudgetChange.objects.get(team=team, field="alert_thresholds")
    assert (change.old_value, change.new_value, change.reason) == ("[50, 80, 100]", "[25, 75, 120]", "earlier warning")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("50, eighty", "“eighty” is not a whole percentage"),
        ("50, 80.5", "“80.5” is not a whole percentage"),
        ("0, 50", "0% is out of range: each threshold must be from 1 to 1000."),
        ("50, 1001", "1001% is out of range"),
        ("-5", "“-5” is not a whole percentage"),
        ("80, 50, 80", "80% is given more than once."),
    ],
)
def test_a_bad_threshold_is_named_in_the_fields_error_and_nothing_changes(admin_client, team, typed, message):
    response = admin_client.post(change_url(team), form_data(admin_client, team, alert_thresholds=typed))
    assert response.status_code == 200
    assert any(message in error for error in response.context["adminform"].form.errors["alert_thresholds"])
    assert Team.objects.get(pk=team.pk).alert_thresholds == [50, 80, 100]
    assert not BudgetChange.objects.exists()


def test_no_thresholds_means_no_alerts(admin_client, team):
    assert admin_client.post(change_url(team), form_data(admin_client, team, alert_thresholds=" ")).status_code == 302
    assert Team.objects.get(pk=team.pk).alert_thresholds == []


def test_the_team_page_links_to_its_runs_and_its_ledger(admin_client, team):
    page = admin_client.get(change_url(team)).content.decode()
    runs, ledger = reverse("admin:workflows_run_changelist"), reverse("admin:workflows_ledgerentry_changelist")
    assert f'id="team-runs" href="{runs}?team__id__exact={team.pk}"' in page
    assert f'id="team-ledger" href="{ledger}?team__id__exact={team.pk}"' in page
    other = Run.objects.create(team=TeamFactory(name="other"), workflow_version=workflow_version(team=team))
    mine = Run.objects.create(team=team, workflow_version=workflow_version(team=team))
    listed = admin_client.get(runs, {"team__id__exact": team.pk}).context["cl"].result_list
    assert [run.pk for run in listed] == [mine.pk] and other.pk != mine.pk


def test_the_team_page_draws_the_period_burn_down_against_its_budget_with_the_forecast(admin_client, team):
    Team.objects.filter(pk=team.pk).update(period_budget_usd=Decimal("10"), period="month")
    window = period_window("month")
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team))
    today = datetime.now(UTC)
    ledger_entry(run=run, agent="researcher", model="sim-model", cost="1.234567", at=window.start + timedelta(hours=1))
    ledger_entry(run=run, agent="writer", model="sim-model", cost="2.000001", at=today)
    ledger_entry(run=run, agent="writer", model="sim-model", cost="5.00", at=window.start - timedelta(days=1))  # last period

    response = admin_client.get(change_url(team))
    page = response.content.decode()

    forecast = response.context["forecast"]
    assert forecast.spent_usd == Decimal("3.234568")  # this period's two entries, not last period's
    assert forecast.budget_usd == Decimal("10")
    assert '<svg class="spend-chart period-budget"' in page and 'class="budget"' in page and "Budget $10.00" in page
    assert f"{forecast.today.isoformat()}: $3.234568 spent in the period" in page
    assert 'id="team-forecast"' in page and escape(forecast.method) in page


def test_a_team_without_a_period_budget_has_no_burn_down(admin_client, team):
    page = admin_client.get(change_url(team)).content.decode()
    assert 'id="team-forecast"' not in page and 'period-budget' not in page

