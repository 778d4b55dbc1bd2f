import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils.html import escape

from tests.admin.conftest import ledger_entry
from tests.reports.ledger import taken_over
from workflows.admin.base import format_usd
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db

SPEND_URL = reverse("admin:workflows_ledgerentry_spend")
CSV_URL = reverse("admin:workflows_ledgerentry_spend_csv")
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
    page = response.content.decode()
    assert "$4.35015" in page  # 0.30 + 0.30 + 1.25 + 0.000150 + 2.50
    assert '<svg class="spend-chart"' in page
    assert page.count('<rect class="bar"') == 3  # three days with priced spend


def test_the_totals_tell_the_settled_spend_from_what_rests_on_estimates_awaiting_usage(admin_client, spend_ledger):
    assert admin_client.get(SPEND_URL).context["estimated"] == ""  # nothing estimated: no sentence
    run = spend_ledger[0].run
    version = run.workflow_version
    crashed = run_start(team=run.team, workflow=version.workflow_id, inputs={"topic": "x"})
    taken_over(crashed, sequence=1)  # $0.30 estimated for the attempt taken over

    response = admin_client.get(SPEND_URL)

    assert response.context["totals"]["Spend"] == "$4.65015"  # the estimate is spend
    assert "Of the spend: $4.35015 settled, $0.30 estimated, awaiting usage." in response.content.decode()
    narrowed = admin_client.get(SPEND_URL, {"team": spend_ledger[-2].team_id, "since": "", "until": ""})
    assert narrowed.context["estimated"] == ""  # the other team's spend rests on no estimate


def test_breakdowns_equal_the_ledger_sums(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": today() - timedelta(days=60), "until": today()})
    by_model = {row["labels"][0]: row["figures"] for row in table(response, "model")["rows"]}
    assert by_model == {
        "sim-model": ["$10.10015", "4", "5", "5,000", "1,000", "0"],
        "big-model": ["$1.25", "1", "1", "1,000", "200", "0"],
        "mystery-model": ["$0.00", "1", "1", "1,000", "200", "1"],
    }
    research = spend_ledger[0].run.workflow_version
    by_workflow = {row["labels"][0]: row["figures"][0] for row in table(response, "workflow")["rows"]}
    assert by_workflow == {
        "acme/research-pipeline": format_usd(dollars(e for e in spend_ledger if e.run.workflow_version == research)),
        "globex/research-pipeline": "$2.50",
        "acme/loop": "$0.00015",
    }
    by_agent = [(row["labels"], row["figures"][0]) for row in table(response, "agent")["rows"]]
    assert by_agent[0] == (["acme/research-pipeline", "researcher"], "$7.30")
    assert table(response, "model")["totals"][0] == format_usd(dollars(spend_ledger)) == "$11.35015"


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
    assert response.context["totals"]["Spend"] == format_usd(dollars(expected)) == "$0.60015"
    assert [row["labels"][0] for row in table(response, "workflow")["rows"]] == ["acme/research-pipeline", "acme/loop"]
    days = {row["labels"][0]: row["figures"][0] for row in table(response, "day")["rows"]}
    assert days == {str(yesterday - timedelta(days=1)): "$0.60", str(yesterday): "$0.00015"}

    loop = spend_ledger[3].run.workflow_version.workflow
    response = admin_client.get(SPEND_URL, {"workflow": loop.pk, "since": "", "until": ""})
    assert response.context["totals"]["Spend"] == "$0.00015"
    assert response.context["totals"]["Unpriced steps"] == "1"


def test_the_most_expensive_runs_link_to_their_pages(admin_client, spend_ledger):
    response = admin_client.get(SPEND_URL, {"since": "", "until": ""})
    rows = response.context["top_runs"]
    assert [row["spend"] for row in rows] == ["$7.00", "$2.50", "$1.85", "$0.00015"]
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
    assert response.context["totals"]["Spend"] == "$11.35015"
    assert "Daily spend, " + str(today() - timedelta(days=40)) + " to " + str(today()) in response.content.decode()
