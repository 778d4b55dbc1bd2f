"""The run and ledger lists: they fit the screen, filter by date, and export what they select as CSV."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.admin.conftest import ledger_entry, utc_days_ago
from tests.factories import TeamFactory, workflow_version
from tests.security.test_admin_scoping import staff_client
from workflows.models import LedgerEntry, Run, RunStatus

RUNS = reverse("admin:workflows_run_changelist")
LEDGER = reverse("admin:workflows_ledgerentry_changelist")
RUNS_CSV = reverse("admin:workflows_run_export")
LEDGER_CSV = reverse("admin:workflows_ledgerentry_export")


def rows_of(response) -> list[dict]:
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"] == "text/csv"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def shown_ids(response) -> set[int]:
    assert response.status_code == 200, response.status_code  # a refused filter redirects with ?e=1
    return {row.pk for row in response.context["cl"].result_list}


@pytest.fixture
def two_teams(db):
    """acme: a run 10 days ago and one today; globex: one today. Each run has one ledger entry."""
    acme, globex = TeamFactory(name="acme"), TeamFactory(name="globex")
    made = {}
    for name, team, days in (("acme_old", acme, 10), ("acme_new", acme, 0), ("globex_new", globex, 0)):
        run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
        Run.objects.filter(pk=run.pk).update(created_at=utc_days_ago(days))
        made[name] = (run, ledger_entry(run=run, agent="researcher", model="sim-model", cost="1.234567", at=utc_days_ago(days)))
    return made


@pytest.mark.django_db
def test_both_lists_filter_by_a_date_range_in_utc(admin_client, two_teams):
    since = (utc_days_ago(3)).date().isoformat()
    runs = admin_client.get(RUNS, {"created_at__gte": since})
    assert shown_ids(runs) == {two_teams["acme_new"][0].pk, two_teams["globex_new"][0].pk}
    before = admin_client.get(RUNS, {"created_at__lt": since})
    assert shown_ids(before) == {two_teams["acme_old"][0].pk}
    ledger = admin_client.get(LEDGER, {"booked_at__gte": since, "booked_at__lt": (datetime.now(UTC) + timedelta(days=1)).date()})
    assert shown_ids(ledger) == {two_teams["acme_new"][1].pk, two_teams["globex_new"][1].pk}
    assert 'name="booked_at__gte" value="' + since + '"' in ledger.content.decode()


@pytest.mark.django_db
def test_a_bad_date_is_refused_not_a_server_error(admin_client, two_teams):
    assert admin_client.get(RUNS, {"created_at__gte": "yesterday"}).url.endswith("?e=1")
    assert admin_client.get(LEDGER_CSV, {"booked_at__lt": "2026-13-01"}).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_a_datetime_whose_offset_leaves_the_date_range_is_refused_not_a_server_error(admin_client, two_teams, moment):
    assert admin_client.get(RUNS, {"created_at__gte": moment}).url.endswith("?e=1")
    assert admin_client.get(LEDGER, {"booked_at__lt": moment}).url.endswith("?e=1")
    assert admin_client.get(RUNS_CSV, {"created_at__gte": moment}).status_code == 400
    assert admin_client.get(LEDGER_CSV, {"booked_at__gte": moment}).status_code == 400


def test_the_date_input_shows_the_utc_day_of_a_datetime_bound(admin_client, two_teams):
    page = admin_client.get(LEDGER, {"booked_at__gte": "2026-03-01T22:00:00-05:00"}).content.decode()
    assert 'name="booked_at__gte" value="2026-03-02"' in page


def test_the_ledger_list_takes_the_spend_reports_drill_down_parameters(admin_client, two_teams):
    run, entry = two_teams["acme_new"]
    params = {
        "booked_at__gte": utc_days_ago(1).date().isoformat(),
        "booked_at__lt": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
        "team__id__exact": run.team_id,
        "model__exact": "sim-model",
        "agent__exact": "researcher",
        "run__workflow_version__workflow__id__exact": run.workflow_version.workflow_id,
    }
    assert shown_ids(admin_client.get(LEDGER, params)) == {entry.pk}
    assert [row["id"] for row in rows_of(admin_client.get(LEDGER_CSV, params))] == [str(entry.pk)]


@pytest.mark.django_db
def test_the_csv_has_every_selected_row_not_only_the_page_with_exact_plain_decimals(admin_client, two_teams, monkeypatch):
    monkeypatch.setattr(admin.site._registry[LedgerEntry], "list_per_page", 1)
    monkeypatch.setattr(admin.site._registry[Run], "list_per_page", 1)
    runs = rows_of(admin_client.get(RUNS_CSV, {"team__id__exact": two_teams["acme_new"][0].team_id, "o": "1"}))
    assert [row["id"] for row in runs] == sorted(str(two_teams[name][0].pk) for name in ("acme_old", "acme_new"))
    assert {row["spent_usd"] for row in runs} == {"1.234567"}
    entries = rows_of(admin_client.get(LEDGER_CSV, {"q": "sim-model"}))
    assert len(entries) == 3
    assert {row["cost_usd"] for row in entries} == {"1.234567"}
    assert entries[0]["workflow"] == "research-pipeline"


def test_the_runs_csv_reads_no_json_of_the_runs_or_their_definitions(admin_client, two_teams):
    runs = rows_of(admin_client.get(RUNS_CSV))
    assert len(runs) == 3 and {row["workflow"] for row in runs} == {"research-pipeline"}
    # The statement the export streams (PostgreSQL runs it on a server-side cursor, out of a query log's sight).
    run_admin = admin.site._registry[Run]
    rows_query = str(run_admin.csv_queryset(Run.objects.select_related(*run_admin.list_select_related)).query)
    assert '"workflows_workflow"."name"' in rows_query  # what a column reads is still joined
    for column in ("definition", "source", "inputs", "provider_routes", "output", "error", "limit_sources"):
        assert f'."{column}"' not in rows_query


@pytest.mark.django_db
def test_staff_of_one_team_never_export_another_teams_rows(two_teams):
    acme_run, acme_entry = two_teams["acme_new"]
    globex_run = two_teams["globex_new"][0]
    acme_staff = staff_client("acme-ops", acme_run.team)

    assert {row["team"] for row in rows_of(acme_staff.get(LEDGER_CSV))} == {"acme"}
    assert {row["team"] for row in rows_of(acme_staff.get(RUNS_CSV))} == {"acme"}
    # Asking for the other team by its id brings none of its rows.
    for url in (RUNS_CSV, LEDGER_CSV):
        assert {row["team"] for row in rows_of(acme_staff.get(url, {"team__id__exact": globex_run.team_id}))} <= {"acme"}
    assert acme_entry.pk in {int(row["id"]) for row in rows_of(acme_staff.get(LEDGER_CSV))}


@pytest.mark.django_db
def test_a_cell_that_a_spreadsheet_would_run_is_written_as_text(admin_client, team):
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team))
    ledger_entry(run=run, agent="=HYPERLINK(\"http://x\")", model="+sim", cost="0.000001", at=utc_days_ago(0))
    (row,) = rows_of(admin_client.get(LEDGER_CSV))
    assert (row["agent"], row["model"], row["cost_usd"]) == ("'=HYPERLINK(\"http://x\")", "'+sim", "0.000001")


@pytest.mark.django_db
def test_the_export_link_carries_the_lists_filters(admin_client, two_teams):
    page = admin_client.get(LEDGER, {"q": "sim-model", "booked_at__gte": "2026-01-01"}).content.decode()
    assert f'href="{LEDGER_CSV}?booked_at__gte=2026-01-01&amp;q=sim-model"' in page
    assert f'href="{RUNS_CSV}?' in admin_client.get(RUNS).content.decode()


FIT = """(() => {
  const table = document.querySelector("#result_list");
  if (!table) return {title: document.title};
  const results = document.querySelector(".results");
  const money = [...table.querySelectorAll("td.field-%s")];
  return {
    right: table.getBoundingClientRect().right,
    viewport: window.innerWidth,
    scrolls: results.scrollWidth > results.clientWidth,
    columns: [...table.querySelectorAll("thead th")].map(th => [th.textContent.trim(), Math.round(th.getBoundingClientRect().width)]),
    tableLeft: table.getBoundingClientRect().left,
    money: money.map(td => td.textContent),
    alignedRight: money.every(td => getComputedStyle(td).textAlign === "right"),
    moneyVisible: money.every(td => td.getBoundingClientRect().right <= window.innerWidth),
  };
})()"""


def test_both_lists_fit_1400px_with_their_money_columns_in_view(transactional_db, admin_browser, live_server, tmp_path):
    browser, page = admin_browser
    team = TeamFactory(name="acme-research-platform")
    version = workflow_version(team=team, name="quarterly-market-research-pipeline")
    for n in range(5):
        run = Run.objects.create(
            team=team, workflow_version=version, status=RunStatus.BUDGET_EXCEEDED, budget_usd=Decimal("12345.678901"),
            budget_mode="enforce", reserved_usd=Decimal("123.456789"), current_agent="researcher",
        )
        ledger_entry(
            run=run, agent="senior-financial-analyst", model="claude-3-5-sonnet-20241022", cost="1234.567891",
            at=utc_days_ago(n), tokens=(1_234_567, 98_765),
        )

    for url, money, expected in ((RUNS, "spent", "$1,234.567891"), (LEDGER, "cost", "$1,234.567891")):
        browser.navigate(page, f"{live_server.url}{url}")
        state = browser.evaluate(page, FIT % money)
        (tmp_path / f"{money}.png").write_bytes(browser.screenshot(page))
        assert "right" in state, state  # else the login page or an error was shown
        assert state["right"] <= state["viewport"] == 1400, state
        assert not state["scrolls"], state
        assert state["money"] and all(cell == expected for cell in state["money"]), state
        assert state["alignedRight"] and state["moneyVisible"], state


def test_the_date_range_form_filters_the_list_and_keeps_the_other_filters(transactional_db, admin_browser, live_server):
    browser, page = admin_browser
    team = TeamFactory(name="acme")
    version = workflow_version(team=team)
    for days, status in ((0, RunStatus.COMPLETED), (5, RunStatus.COMPLETED), (0, RunStatus.FAILED)):
        run = Run.objects.create(team=team, workflow_version=version, status=status)
        Run.objects.filter(pk=run.pk).update(created_at=utc_days_ago(days))

    browser.navigate(page, f"{live_server.url}{RUNS}?status__exact=completed")
    since = utc_days_ago(2).date().isoformat()
    browser.fill(page, 'input[name="created_at__gte"]', since)
    browser.click(page, ".date-range button[type=submit]")

    browser.wait_until(page, 'location.search.includes("created_at__gte") && !!document.querySelector("#result_list")')
    state = browser.evaluate(
        page, '({url: location.search, rows: document.querySelectorAll("#result_list tbody tr").length})'
    )
    assert "status__exact=completed" in state["url"] and f"created_at__gte={since}" in state["url"]
    assert state["rows"] == 1
