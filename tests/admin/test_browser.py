"""The Spend page in a real browser: the chart is drawn, styled and visible, not only present in the HTML."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.admin.chromium import CHROMIUM, Chromium, png_distinct_bytes
from tests.admin.conftest import ledger_entry, utc_days_ago
from tests.factories import TeamFactory, workflow_version
from workflows.admin.base import format_usd
from workflows.models import Period, Run, RunStatus, Team
from workflows.services.periods import period_window

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)"
)

CHART_STATE = """(() => {
  const svg = document.querySelector("svg.spend-chart");
  if (!svg) return {title: document.title};
  const drawn = [...svg.querySelectorAll("rect.bar")].filter(bar => {
    const box = bar.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  });
  return {
    title: svg.querySelector(".chart-title").textContent,
    bars: drawn.length,
    yLabels: [...svg.querySelectorAll(".y-label")].map(label => label.textContent),
    width: svg.getBoundingClientRect().width,
    styled: [...document.styleSheets].some(
      sheet => sheet.href && sheet.href.endsWith("reports.css") && sheet.cssRules.length > 0
    ),
  };
})()"""


def test_the_spend_chart_is_drawn_in_chromium(transactional_db, live_server, spend_ledger, django_user_model, tmp_path):
    # Logged in as the browser would be: a session made by the test client, handed over as its cookie.
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("viewer", password="unused"))
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value}
    today = datetime.now(UTC).date()
    spend_url = reverse("admin:workflows_ledgerentry_spend")
    url = f"{live_server.url}{spend_url}?since={today - timedelta(days=6)}&until={today}"

    with Chromium(profile=tmp_path / "profile", log=tmp_path / "chromium.log") as browser:
        browser.command("Storage.setCookies", cookies=[{**cookie, "url": live_server.url}])
        page = browser.open_page(width=1280, height=1700)
        browser.navigate(page, url)
        chart = browser.evaluate(page, CHART_STATE)
        screenshot = browser.screenshot(page)

    (tmp_path / "spend.png").write_bytes(screenshot)
    assert chart["title"].startswith("Daily spend"), chart  # else the login page or an error was shown
    assert chart["bars"] == 3  # the three days with priced spend
    assert chart["yLabels"][0] == "$0.00" and chart["yLabels"][-1].startswith("$")
    assert chart["width"] > 600
    assert chart["styled"]
    assert png_distinct_bytes(screenshot) > 50, f"the screenshot looks blank: {tmp_path / 'spend.png'}"


FORECAST_STATE = """(() => {
  const visible = element => {
    if (!element) return false;
    const box = element.getBoundingClientRect();
    return box.width > 0 || box.height > 0;
  };
  const chart = document.querySelector("svg.period-budget");
  const labels = svg => [...svg.querySelectorAll(".x-label")].map(label => label.textContent);
  return {
    forecast: document.querySelector("#spend-forecast")?.innerText,
    method: document.querySelector(".spend-forecast-method")?.innerText,
    budgetLine: visible(chart?.querySelector("line.budget")),
    budgetLabel: chart?.querySelector(".budget-label")?.textContent,
    today: visible(chart?.querySelector("circle.today")),
    projection: chart?.querySelector("polyline.projection")?.getAttribute("points").split(" ").length,
    periodLabels: chart ? labels(chart) : [],
    dailyLabels: labels(document.querySelector("svg.daily-spend")),
  };
})()"""


def test_the_spend_page_shows_a_teams_budget_line_and_reads_its_forecast_in_chromium(transactional_db, live_server, admin_browser):
    browser, page = admin_browser
    team = TeamFactory(name="initech")
    run = Run.objects.create(team=team, workflow_version=workflow_version(team=team), status=RunStatus.COMPLETED)
    for days in range(1, 8):  # $1 on each of the last 7 full days: a rate of $1 a day
        ledger_entry(run=run, agent="researcher", model="sim-model", cost="1.00", at=utc_days_ago(days))
    ledger_entry(run=run, agent="researcher", model="sim-model", cost="0.25", at=datetime.now(UTC))
    window = period_window(Period.MONTH)
    spent = Decimal("0.25") + sum(
        (Decimal(1) for days in range(1, 8) if utc_days_ago(days) >= window.start), Decimal(0)
    )
    Team.objects.filter(pk=team.pk).update(period_budget_usd=spent + Decimal("0.5"), period=Period.MONTH)
    today = datetime.now(UTC).date()
    last_day = window.end.date() - timedelta(days=1)

    query = f"team={team.pk}&since={today - timedelta(days=29)}&until={today}"  # the default 30 days, for one team
    browser.navigate(page, f"{live_server.url}{reverse('admin:workflows_ledgerentry_spend')}?{query}")
    browser.wait_until(page, "document.querySelector('#spend-forecast') !== null")
    state = browser.evaluate(page, FORECAST_STATE)

    # At $1 a day, spend $0.50 under the budget passes it by the end of tomorrow, if the month has a tomorrow.
    if today < last_day:
        assert state["forecast"].endswith(f"the budget runs out on {today + timedelta(days=1)}."), state
    else:
        assert state["forecast"].endswith("the budget does not run out before the period ends."), state
    assert state["forecast"].startswith(f"Forecast: At $1.00 a day, spend reaches {format_usd(spent + (last_day - today).days)}")
    assert "Mean daily spend over the last 7 full UTC days" in state["method"]
    assert state["budgetLine"] and state["today"]
    assert state["budgetLabel"] == f"Budget {format_usd(spent + Decimal('0.5'))}"
    assert state["projection"] == (last_day - today).days + 1
    assert state["periodLabels"][0] == f"{window.start:%b %d}" and state["periodLabels"][-1] == f"{last_day:%b %d}"
    assert state["dailyLabels"][0] == f"{today - timedelta(days=29):%b %d}" and state["dailyLabels"][-1] == f"{today:%b %d}"
