import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils.html import escape

from tests.admin.conftest import ledger_entry
from tests.factories import TeamFactory, workflow_version
from tests.reports.ledger import taken_over
from workflows.admin.base import format_usd, format_usd_exact
from workflows.models import LedgerEntry, Run, RunStatus, Team
from workflows.services.periods import period_window
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db

SPEND_URL = reverse("admin:workflows_ledgerentry_spend")
CSV_URL = reverse("admin:workflows_ledgerentry_spend_csv")
LEDGER_URL = reverse("admin:workflows_ledgerentry_changelist")
FIGURE_COLUMNS = ["spend_usd", "runs", "steps", "input_tokens", "output_tokens", "unpriced_steps"]


def today():
    return datetime.now(UTC).date()


def in_days(entries, first, last):
    return [e for e in entries if first <= e.created_at.date() <= last]


def dollars(entries) -> Decimal:
    return sum((e.cost_usd for e in entries if e.cost_usd is not None), Decimal("0"))


def table(response, by):
    if by == "day":
        return response.context["days"]
    return next(t for t in response.context["tables"] if t["by"] == by)


def test_the_index_links_to_the_spend_page(admin_client):
    assert SPEND_URL in admin_client.get(reverse("admin:index")).content.decode()


def test_a_first_visit_reports_the_last_30_days(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL)
    assert response.status_code == 200
    recent = in_days(spend_ledger, today() - timedelta(days=29), today())
    assert len(recent) == 6  # the entry of 40 days ago is left out
    assert response.context["totals"] == {
        "Spend": format_usd(dollars(recent)),
        "Runs": "3",
        "Steps": "6",
        "Input tokens": f"{1000 * 6:,}",
        "Output tokens": f"{200 * 6:,}",
        "Unpriced steps": "1",
    }
    assert response.context["totals"]["Spend"] == "$4.35"  # 0.30 + 0.30 + 1.25 + 0.000150 + 2.50, to the cent
    page = response.content.decode()
    assert '<td class="figure">$4.350150</td>' in page  # a table's total: the exact micro-dollars
    assert '<svg class="spend-chart daily-spend"' in page
    assert page.count('<rect class="bar"') == 3  # three days with priced spend


def test_the_totals_tell_the_settled_spend_from_what_rests_on_estimates_awaiting_usage(admin_client, spend_ledger):
    assert admin_client.get(SPEND_URL).context["estimated"] == ""  # nothing estimated: no sentence
    run = spend_ledger[0].run
    version = run.workflow_version
    crashed = run_start(team=run.team, workflow=version.workflow_id, inputs={"topic": "x"})
    taken_over(crashed, sequence=1)  # $0.30 estimated for the attempt taken over

    response = admin_client.get(SPEND_URL)

    assert response.context["totals"]["Spend"] == "$4.65"  # the estimate is spend
    assert "Of the spend: $4.35 settled, $0.30 estimated, awaiting usage." in response.content.decode()
    narrowed = admin_client.get(SPEND_URL, {"team": spend_ledger[-2].team_id, "since": "", "until": ""})
    assert narrowed.context["estimated"] == ""  # the other team's spend rests on no estimate


def test_breakdowns_equal_the_ledger_sums(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": today() - timedelta(days=60), "until": today()})
    by_model = {row["labels"][0]: row["figures"] for row in table(response, "model")["rows"]}
    assert by_model == {
        "sim-model": ["$10.100150", "4", "5", "5,000", "1,000", "0"],
        "big-model": ["$1.250000", "1", "1", "1,000", "200", "0"],
        "mystery-model": ["$0.000000", "1", "1", "1,000", "200", "1"],
    }
    research = spend_ledger[0].run.workflow_version
    by_workflow = {row["labels"][0]: row["figures"][0] for row in table(response, "workflow")["rows"]}
    assert by_workflow == {
        "acme/research-pipeline": format_usd_exact(
            dollars(e for e in spend_ledger if e.run.workflow_version == research)
        ),
        "globex/research-pipeline": "$2.500000",
        "acme/loop": "$0.000150",
    }
    by_agent = [(row["labels"], row["figures"][0]) for row in table(response, "agent")["rows"]]
    assert by_agent[0] == (["acme/research-pipeline", "researcher"], "$7.300000")
    assert table(response, "model")["totals"][0] == format_usd_exact(dollars(spend_ledger)) == "$11.350150"


def test_filters_narrow_every_figure(admin_client, spend_ledger):
    acme = spend_ledger[0].team
    yesterday = today() - timedelta(days=1)
    response = admin_client.get(
        SPEND_URL, {"team": acme.pk, "model": "sim-model", "since": yesterday - timedelta(days=1), "until": yesterday}
    )
    expected = [
        e
        for e in in_days(spend_ledger, yesterday - timedelta(days=1), yesterday)
        if e.team == acme and e.model == "sim-model"
    ]
    assert response.context["totals"]["Spend"] == format_usd(dollars(expected)) == "$0.60"
    assert [row["labels"][0] for row in table(response, "workflow")["rows"]] == ["acme/research-pipeline", "acme/loop"]
    days = {row["labels"][0]: row["figures"][0] for row in table(response, "day")["rows"]}
    assert days == {str(yesterday - timedelta(days=1)): "$0.600000", str(yesterday): "$0.000150"}

    loop = spend_ledger[3].run.workflow_version.workflow
    response = admin_client.get(SPEND_URL, {"workflow": loop.pk, "since": "", "until": ""})
    assert response.context["totals"]["Spend"] == "$0.00"  # a summary, to the cent
    assert table(response, "workflow")["totals"][0] == "$0.000150"  # a table: what the ledger holds
    assert response.context["totals"]["Unpriced steps"] == "1"


def test_the_most_expensive_runs_link_to_their_pages(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": "", "until": ""})
    rows = response.context["top_runs"]
    assert [row["spend"] for row in rows] == ["$7.000000", "$2.500000", "$1.850000", "$0.000150"]
    assert rows[0]["url"] == reverse("admin:workflows_run_change", args=[spend_ledger[-1].run_id])
    assert f'href="{rows[0]["url"]}"' in response.content.decode()


def test_the_csv_has_one_row_per_day_in_micro_dollars(admin_client, spend_ledger):
    response = admin_client.get(CSV_URL, {"by": "day", "since": today() - timedelta(days=2), "until": today()})
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="spend-by-day-')
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["day", *FIGURE_COLUMNS],
        [str(today() - timedelta(days=2)), "0.600000", "1", "2", "2000", "400", "0"],
        [str(today() - timedelta(days=1)), "1.250150", "2", "2", "2000", "400", "0"],
        [str(today()), "2.500000", "2", "2", "2000", "400", "1"],
    ]


def test_the_page_links_a_csv_per_breakdown_under_its_filters(admin_client, spend_ledger):
    acme = spend_ledger[0].team
    response = admin_client.get(SPEND_URL, {"team": acme.pk, "since": "", "until": ""})
    query = table(response, "agent")["csv_query"]
    assert escape(f"{CSV_URL}?{query}") in response.content.decode()
    rows = list(csv.reader(io.StringIO(admin_client.get(f"{CSV_URL}?{query}").content.decode())))
    assert rows[0] == ["workflow", "agent", *FIGURE_COLUMNS]
    assert rows[1] == ["acme/research-pipeline", "researcher", "7.300000", "2", "2", "2000", "400", "0"]
    assert sum(Decimal(row[2]) for row in rows[1:]) == dollars([e for e in spend_ledger if e.team == acme])


def test_csv_names_never_open_as_spreadsheet_formulas(admin_client, spend_ledger):
    run = spend_ledger[0].run
    ledger_entry(run=run, agent="researcher", model="@SUM(A1:A9)", cost="0.01", at=spend_ledger[0].created_at)

    response = admin_client.get(CSV_URL, {"by": "model", "since": "", "until": ""})

    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert ["'@SUM(A1:A9)", "0.010000"] in [row[:2] for row in rows]


def test_a_reversed_range_is_a_form_error(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": today(), "until": today() - timedelta(days=1)})
    assert response.status_code == 200
    assert "must not be after" in response.content.decode()
    assert "totals" not in response.context
    assert admin_client.get(CSV_URL, {"since": today(), "until": today() - timedelta(days=1)}).status_code == 400


@pytest.mark.parametrize("url", [SPEND_URL, CSV_URL])
def test_only_staff_see_spend(client, url):
    assert client.get(url).status_code == 302
    client.force_login(User.objects.create_user("outsider", password="x"))
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_ledger_permission_are_refused(client):
    client.force_login(User.objects.create_user("clerk", password="x", is_staff=True))
    assert client.get(SPEND_URL).status_code == 403


def test_an_unbounded_range_charts_only_the_days_with_entries(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": "0001-01-01", "until": "9999-12-31"})
    assert response.context["totals"]["Spend"] == "$11.35"
    assert "Daily spend, " + str(today() - timedelta(days=40)) + " to " + str(today()) in response.content.decode()


def staff_of(*teams, name="ops"):
    user = User.objects.create_user(name, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="workflows"))
    for team in teams:
        team.staff.add(user)
    return user


def listed(client, href) -> list[LedgerEntry]:
    """The ledger entries the ledger list shows at `href`, all of them, not one page."""
    response = client.get(href)
    assert response.status_code == 200, (href, response.status_code, response.get("Location"))  # ?e=1 is a 302
    return list(response.context["cl"].queryset.order_by("pk"))


@pytest.mark.parametrize(
    "filters",
    [
        {},  # the first visit's last 30 days
        {"since": "", "until": ""},
        {"team": "acme", "model": "sim-model", "since": "", "until": ""},
        {"workflow": "loop", "since": "", "until": ""},
    ],
)
def test_every_breakdown_row_links_to_exactly_the_ledger_entries_behind_its_figures(admin_client, spend_ledger, filters):
    acme = spend_ledger[0].team
    loop = spend_ledger[3].run.workflow_version.workflow
    query = filters | ({"team": acme.pk} if "team" in filters else {}) | ({"workflow": loop.pk} if "workflow" in filters else {})
    response = admin_client.get(SPEND_URL, query)
    in_range = in_days(spend_ledger, today() - timedelta(days=29), today()) if not filters else spend_ledger
    behind_the_report = {
        e.pk
        for e in in_range
        if ("team" not in filters or e.team == acme)
        and ("model" not in filters or e.model == filters["model"])
        and ("workflow" not in filters or e.run.workflow_version.workflow == loop)
    }

    for by in ("day", "team", "workflow", "model", "agent", "tool"):
        breakdown, seen = table(response, by), set()
        assert breakdown["rows"], by
        for row in breakdown["rows"]:
            assert escape(row["entries_href"]) in response.content.decode()
            entries = listed(admin_client, row["entries_href"])
            assert entries, (by, row["labels"])
            assert row["figures"][0] == format_usd_exact(dollars(entries)), (by, row["labels"])
            assert row["figures"][2] == str(len({e.step_id for e in entries})), (by, row["labels"])
            assert seen.isdisjoint(e.pk for e in entries)
            seen |= {e.pk for e in entries}
        assert seen == behind_the_report, by  # the rows of a breakdown split the report's entries among them


def test_superusers_see_spend_by_team_and_a_team_row_narrows_the_report_to_it(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": "", "until": ""})
    rows = table(response, "team")["rows"]
    assert [(row["labels"], row["figures"][:3]) for row in rows] == [
        (["acme"], ["$8.850150", "3", "6"]),
        (["globex"], ["$2.500000", "1", "1"]),
    ]
    assert rows[1]["href"] == f"?team={spend_ledger[-2].team_id}"
    assert table(response, "team")["totals"][0] == "$11.350150"
    csv_rows = list(csv.reader(io.StringIO(admin_client.get(CSV_URL, {"by": "team", "since": "", "until": ""}).content.decode())))
    assert csv_rows[0] == ["team", *FIGURE_COLUMNS]
    assert [row[:2] for row in csv_rows[1:]] == [["acme", "8.850150"], ["globex", "2.500000"]]


def test_staff_of_several_teams_see_spend_by_their_teams_and_staff_of_one_team_see_no_such_table(client, spend_ledger):
    acme, globex = spend_ledger[0].team, spend_ledger[-2].team
    initech = TeamFactory(name="initech")
    version = workflow_version(team=initech)
    run = Run.objects.create(team=initech, workflow_version=version, status=RunStatus.COMPLETED)
    ledger_entry(run=run, agent="researcher", model="sim-model", cost="4.00", at=spend_ledger[0].created_at)

    client.force_login(staff_of(acme, globex))
    response = client.get(SPEND_URL, {"since": "", "until": ""})
    assert [row["labels"] for row in table(response, "team")["rows"]] == [["acme"], ["globex"]]
    assert "initech" not in response.content.decode()

    client.force_login(staff_of(initech, name="initech-ops"))
    response = client.get(SPEND_URL, {"since": "", "until": ""})
    assert [t["by"] for t in response.context["tables"]] == ["workflow", "model", "agent", "tool"]
    assert 'id="spend-by-team"' not in response.content.decode()
    # The links' lookups typed in for another team's workflow or team list nothing of theirs.
    workflow_lookup = "run__workflow_version__workflow__id__exact"
    assert listed(client, f"{LEDGER_URL}?{workflow_lookup}={version.workflow_id}") == [run.ledger_entries.get()]
    assert listed(client, f"{LEDGER_URL}?{workflow_lookup}={spend_ledger[0].run.workflow_version.workflow_id}") == []
    assert all(entry.team == initech for entry in listed(client, f"{LEDGER_URL}?team__id__exact={acme.pk}"))


def test_a_team_with_a_period_budget_gets_its_budget_line_and_forecast(admin_client, spend_ledger):
    acme = spend_ledger[0].team
    Team.objects.filter(pk=acme.pk).update(period_budget_usd=Decimal("2"), period="month")
    window = period_window("month")

    response = admin_client.get(SPEND_URL, {"team": acme.pk, "since": "", "until": ""})

    forecast = response.context["forecast"]
    acme_entries = [e for e in spend_ledger if e.team == acme]
    in_period = [e for e in acme_entries if window.start <= e.booked_at < window.end]
    last_7_full_days = in_days(acme_entries, today() - timedelta(days=7), today() - timedelta(days=1))
    assert forecast.budget_usd == Decimal("2")
    assert forecast.spent_usd == dollars(in_period)
    assert forecast.daily_rate_usd == (dollars(last_7_full_days) / 7).quantize(Decimal("0.000001"))  # $0.264307
    page = response.content.decode()
    assert 'class="spend-chart period-budget"' in page and "Budget $2.00" in page
    assert escape(response.context["forecast_sentence"]) in page
    assert "Mean daily spend over the last 7 full UTC days" in page
    assert "what runs in flight reserve is not counted until charged" in page
    if forecast.runs_out_on is not None:
        assert f"runs out on {forecast.runs_out_on:%Y-%m-%d}" in response.context["forecast_sentence"]
    else:
        assert "does not run out before the period ends" in response.context["forecast_sentence"]


def test_no_forecast_without_a_team_filter_or_for_a_team_without_a_period_budget(admin_client, spend_ledger):
    acme = spend_ledger[0].team
    Team.objects.filter(pk=acme.pk).update(period_budget_usd=Decimal("2"))
    for query in ({"since": "", "until": ""}, {"team": spend_ledger[-2].team_id, "since": "", "until": ""}):
        response = admin_client.get(SPEND_URL, query)
        assert "forecast" not in response.context
        assert "period-budget" not in response.content.decode()


def test_the_forecast_says_when_spend_is_already_over_the_budget(admin_client, spend_ledger):
    acme = spend_ledger[0].team
    run = spend_ledger[0].run
    Team.objects.filter(pk=acme.pk).update(period_budget_usd=Decimal("0.50"), period="day")
    ledger_entry(run=run, agent="writer", model="sim-model", cost="0.75", at=datetime.now(UTC))

    response = admin_client.get(SPEND_URL, {"team": acme.pk})

    assert response.context["forecast_sentence"] == f"Over budget since {today()}: $0.75 spent of $0.50."
    assert "Over budget " + f"{today():%b %d}" in response.content.decode()  # marked on the chart
