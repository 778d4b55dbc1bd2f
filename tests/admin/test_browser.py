"""The Spend page in a real browser: the chart is drawn, styled and visible, not only present in the HTML."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.admin.chromium import CHROMIUM, Chromium, png_distinct_bytes

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
