"""The workflow page: applying the cost profile's recommended budget as the enforce budget, and clearing it."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from tests.factories import TeamFactory, workflow_version
from tests.security.test_admin_scoping import staff_client
from workflows.models import BudgetChange, Event, EventType, Run, Workflow
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiled(team) -> Workflow:
    """A workflow whose two completed runs cost $0.40 and $0.80: p95 $0.80, recommended $1.00."""
    version = workflow_version(team=team)
    for spent in ("0.40", "0.80"):
        run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
        Run.objects.filter(pk=run.pk).update(status="completed", spent_usd=Decimal(spent))
    return version.workflow


def budget_url(workflow) -> str:
    return reverse("admin:workflows_workflow_budget", args=[workflow.pk])


def page_of(client, workflow) -> str:
    return client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])).content.decode()


def shown_figure(client, workflow) -> str:
    """What the apply button posts: the recommended budget the page shows."""
    return re.search(r'name="apply" value="([^"]*)"', page_of(client, workflow)).group(1)


def test_apply_the_recommended_budget_sets_the_enforce_budget_in_the_users_name(admin_client, admin_user, profiled):
    assert "Apply the recommended budget: $1.000000, enforce" in page_of(admin_client, profiled)

    response = admin_client.post(budget_url(profiled), {"apply": shown_figure(admin_client, profiled), "reason": "p95 of last month"}, follow=True)

    profiled.refresh_from_db()
    assert (profiled.budget_usd, profiled.budget_mode) == (Decimal("1.00"), "enforce")
    assert "Budget set to $1.000000, enforce" in response.content.decode()
    assert set(BudgetChange.objects.filter(workflow=profiled).values_list("actor", "reason")) == {
        (f"user:{admin_user.username}", "p95 of last month")
    }
    assert '<p id="budget-setting">$1.000000, enforce' in page_of(admin_client, profiled)
    run = run_start(team=profiled.team, workflow=profiled.pk, inputs={"topic": "x"})
    assert (run.budget_usd, run.budget_mode, run.limit_sources["budget_usd"]) == (Decimal("1"), "enforce", "workflow_setting")

    admin_client.post(budget_url(profiled), {"clear": "1", "reason": "too tight"})
    profiled.refresh_from_db()
    assert (profiled.budget_usd, profiled.budget_mode) == (None, "")


def test_without_a_reason_nothing_changes_and_the_page_says_why(admin_client, profiled):
    response = admin_client.post(budget_url(profiled), {"apply": shown_figure(admin_client, profiled), "reason": " "}, follow=True)

    profiled.refresh_from_db()
    assert profiled.budget_usd is None and not BudgetChange.objects.exists()
    assert "reason is required" in response.content.decode()


def test_without_a_recommendation_there_is_no_button_and_a_post_is_refused(admin_client, team):
    workflow = workflow_version(team=team).workflow
    assert "apply-recommended" not in page_of(admin_client, workflow)
    response = admin_client.post(budget_url(workflow), {"apply": "1", "reason": "try"}, follow=True)
    assert "There is no recommended budget yet" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.budget_usd is None


def test_the_change_form_cannot_set_the_budget_around_the_reason(admin_client, profiled):
    form = admin_client.get(reverse("admin:workflows_workflow_change", args=[profiled.pk])).context["adminform"].form
    assert not {"budget_usd", "budget_mode"} & set(form.fields)


def test_staff_of_another_team_can_neither_see_nor_set_the_budget(profiled):
    other = staff_client("other-ops", TeamFactory(name="other"))
    assert other.post(budget_url(profiled), {"apply": "1", "reason": "mine now"}).status_code == 403
    profiled.refresh_from_db()
    assert profiled.budget_usd is None
    own = staff_client("acme-ops", profiled.team)
    own.post(budget_url(profiled), {"apply": shown_figure(own, profiled), "reason": "ours"})
    profiled.refresh_from_db()
    assert profiled.budget_usd == Decimal("1")


def test_applying_the_budget_in_force_or_clearing_none_is_refused_as_nothing_to_change(admin_client, profiled):
    cleared = admin_client.post(budget_url(profiled), {"clear": "1", "reason": "tidy"}, follow=True)
    assert "Nothing to change: the workflow&#x27;s budget is already unset." in cleared.content.decode()
    admin_client.post(budget_url(profiled), {"apply": shown_figure(admin_client, profiled), "reason": "p95"})
    again = admin_client.post(budget_url(profiled), {"apply": shown_figure(admin_client, profiled), "reason": "p95 again"}, follow=True)
    assert "Nothing to change: the workflow&#x27;s budget is already 1.000000, enforce." in again.content.decode()
    assert Event.objects.filter(type=EventType.WORKFLOW_BUDGET_SET).count() == 1
    assert BudgetChange.objects.filter(workflow=profiled).count() == 2  # budget_usd and budget_mode, once


def test_the_budget_url_answers_get_with_method_not_allowed(admin_client, profiled):
    assert admin_client.get(budget_url(profiled)).status_code == 405


def test_a_recommended_budget_changed_since_the_page_was_shown_is_refused_with_refresh(admin_client, profiled):
    response = admin_client.post(budget_url(profiled), {"apply": "0.75", "reason": "as shown an hour ago"}, follow=True)

    assert "The recommended budget is now $1.000000: refresh the page to apply it." in response.content.decode()
    profiled.refresh_from_db()
    assert profiled.budget_usd is None
