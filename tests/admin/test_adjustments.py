"""The ledger in the admin: an entry shows what its cost rests on, a charge is adjusted on its Adjust page
with the API's rules and messages, and a run's page tells its settled spend from its estimates."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.urls import reverse

from tests.factories import workflow_version
from tests.reports.ledger import answer, start_run, taken_over
from tests.security.test_admin_scoping import staff_client
from workflows.models import EventType, LedgerEntry, Run
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team) -> Run:
    """A run whose researcher's first attempt was taken over: $0.30 estimated, awaiting its usage."""
    run = start_run(team=team, version=workflow_version(team=team), limits={"budget_usd": "5"})
    taken_over(run, sequence=1)
    return run


def estimate_of(run: Run) -> LedgerEntry:
    return run.ledger_entries.get(basis="estimated")


def adjust_url(entry: LedgerEntry) -> str:
    return reverse("admin:workflows_ledgerentry_adjust", args=[entry.pk])


def entry_page(client, entry: LedgerEntry) -> str:
    return client.get(reverse("admin:workflows_ledgerentry_change", args=[entry.pk])).content.decode()


def text_of(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_an_estimates_page_shows_what_it_rests_on_and_links_its_adjust_page(admin_client, run):
    page = entry_page(admin_client, estimate_of(run))

    assert "the reservation, as the attempt&#x27;s outcome is unknown" in page
    assert "Attempt 1 lost its worker before it settled." in page
    assert f'href="{adjust_url(estimate_of(run))}"' in page


def test_an_adjustment_is_made_in_the_staff_users_name_and_the_run_shows_its_spend_settled_and_estimated(
    admin_client, admin_user, run
):
    estimate = estimate_of(run)
    run_page = reverse("admin:workflows_run_change", args=[run.pk])
    assert "$0.00 settled, $0.30 estimated, awaiting usage" in text_of(admin_client.get(run_page))

    response = admin_client.post(adjust_url(estimate), {"amount_usd": "-0.28", "reason": "Provider console: $0.02"})

    assert (response.status_code, response["Location"]) == (302, run_page)
    made = run.ledger_entries.get(basis="adjustment")
    assert (made.corrects_id, made.cost_usd, made.actor, made.reason) == (
        estimate.pk,
        Decimal("-0.280000"),
        f"user:{admin_user.username}",
        "Provider console: $0.02",
    )
    assert run.events.get(type=EventType.LEDGER_ADJUSTED).actor == f"user:{admin_user.username}"
    page = text_of(admin_client.get(run_page))
    # The estimate as the operator adjusted it still awaits its usage.
    assert "Spent $0.02" in page and "$0.00 settled, $0.02 estimated, awaiting usage" in page
    # Its entries are listed on its page and in the ledger, with their basis; the rows stay read-only.
    ledger = text_of(admin_client.get(reverse("admin:workflows_ledgerentry_changelist")))
    assert "an operator's correction" in ledger.replace("&#x27;", "'")
    assert 'name="cost_usd"' not in entry_page(admin_client, made)


@pytest.mark.parametrize(
    "posted,message,field_errors",
    [
        (
            {"amount_usd": "-0.300001", "reason": "refund"},
            "would take it below $0.",
            {"amount_usd": ["must be at least -0.300000"]},
        ),
        (
            {"amount_usd": "0", "reason": ""},
            "The adjustment is invalid.",
            {"amount_usd": ["must not be 0"], "reason": ["say why the entry is adjusted"]},
        ),
    ],
)
def test_a_refused_adjustment_shows_the_apis_messages_and_saves_nothing(admin_client, run, posted, message, field_errors):
    response = admin_client.post(adjust_url(estimate_of(run)), posted)

    assert response.status_code == 200
    assert any(message in str(shown) for shown in get_messages(response.wsgi_request))
    assert response.context["form"].errors == field_errors
    assert not run.ledger_entries.filter(basis="adjustment").exists()
    assert not run.events.filter(type=EventType.LEDGER_ADJUSTED).exists()


def test_a_correction_has_no_adjust_link_and_its_adjustment_is_refused(admin_client, team):
    run = start_run(team=team, version=workflow_version(team=team))
    late, _ = taken_over(run, sequence=1)
    step_settle(attempt=late, result=answer({"findings": "late"}, output_tokens=500))
    correction = run.ledger_entries.get(basis="correction")

    assert adjust_url(correction) not in entry_page(admin_client, correction)
    response = admin_client.post(adjust_url(correction), {"amount_usd": "0.1", "reason": "why"})

    assert "adjust that one" in str(list(get_messages(response.wsgi_request)))
    assert not run.ledger_entries.filter(basis="adjustment").exists()


def test_staff_who_may_only_read_the_ledger_get_no_adjust_page(team, run):
    reader = staff_client("reader", team)
    User.objects.get(username="reader").user_permissions.remove(Permission.objects.get(codename="add_ledgerentry"))

    assert adjust_url(estimate_of(run)) not in entry_page(reader, estimate_of(run))
    assert reader.get(adjust_url(estimate_of(run))).status_code == 403
    assert reader.post(adjust_url(estimate_of(run)), {"amount_usd": "-0.1", "reason": "x"}).status_code == 403
    assert not run.ledger_entries.filter(basis="adjustment").exists()


def test_the_ledger_lists_the_estimates_awaiting_usage(admin_client, team, run):
    corrected = start_run(team=team, version=workflow_version(team=team))
    late, _ = taken_over(corrected, sequence=1)
    step_settle(attempt=late, result=answer({"findings": "late"}))

    listed = admin_client.get(reverse("admin:workflows_ledgerentry_changelist"), {"usage": "awaiting"})

    assert list(listed.context["cl"].result_list) == [estimate_of(run)]


def test_the_run_list_shows_under_a_runs_spend_the_part_resting_on_estimates(admin_client, run, team):
    start_run(team=team, version=workflow_version(team=team), limits={"budget_usd": "5"})  # nothing estimated

    page = admin_client.get(reverse("admin:workflows_run_changelist")).content.decode()

    assert "$0.300000<br><small>$0.300000 est.</small>" in page
    assert page.count("est.</small>") == 1
