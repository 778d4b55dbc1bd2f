import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from workflows.admin.charts import MAX_DATE_LABELS, daily_spend_svg, label_indices, nice_step, period_budget_svg
from workflows.reports.forecast import budget_forecast
from workflows.services.periods import PeriodWindow


@pytest.mark.parametrize(
    ("maximum", "step"),
    [("4.35", "1"), ("10", "2"), ("0.00034", "0.0001"), ("0.0009", "0.0002"), ("123", "50"), ("0.000001", "0.000001")],  # never finer than a micro-dollar
)
def test_axis_steps_are_1_2_or_5_times_a_power_of_ten(maximum, step):
    assert nice_step(Decimal(maximum)) == Decimal(step)


def test_the_chart_draws_a_labelled_bar_per_day_with_spend():
    start = date(2025, 3, 1)
    points = [
        (start, Decimal("0.30")),
        (start + timedelta(days=1), Decimal("0")),
        (start + timedelta(days=2), Decimal("1.25")),
    ]

    svg = daily_spend_svg(title="Daily spend <acme>", points=points)

    assert svg.startswith('<svg class="spend-chart daily-spend"') and svg.endswith("</svg>")
    assert "Daily spend &lt;acme&gt;" in svg and "<acme>" not in svg
    assert re.findall(r"<title>([^<]+)</title></rect>", svg) == ["2025-03-01: $0.300000", "2025-03-03: $1.250000"]
    assert re.findall(r'class="y-label"[^>]*>([^<]+)<', svg) == ["$0.00", "$0.50", "$1.00", "$1.50"]
    assert re.findall(r'class="x-label"[^>]*>([^<]+)<', svg) == ["Mar 01", "Mar 02", "Mar 03"]
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[1] == pytest.approx(heights[0] * 1.25 / 0.30, rel=0.01)


def test_long_ranges_thin_out_the_date_labels():
    points = [(date(2025, 1, 1) + timedelta(days=n), Decimal("1")) for n in range(90)]
    svg = daily_spend_svg(title="t", points=points)
    labels = re.findall(r'class="x-label"[^>]*>([^<]+)<', svg)
    assert len(labels) <= 12
    assert labels[0] == "Jan 01" and labels[-1] == "Mar 31"
    assert len(re.findall('class="bar"', svg)) == 90


def test_a_range_without_spend_still_has_its_axes():
    svg = daily_spend_svg(title="t", points=[(date(2025, 1, 1), Decimal("0"))])
    assert 'class="bar"' not in svg
    assert "$0.00" in svg and "Spend (USD)" in svg


@pytest.mark.parametrize("count", [1, 2, 3, 11, 12, 13, 24, 25, 30, 31, 90, 400])
def test_the_first_and_the_last_day_are_always_labelled_and_labels_never_crowd(count):
    indices = label_indices(count)
    assert indices[0] == 0 and indices[-1] == count - 1
    assert len(indices) <= MAX_DATE_LABELS
    every = -(-count // MAX_DATE_LABELS)  # the spacing that keeps at most MAX_DATE_LABELS labels
    assert all(b - a >= every for a, b in zip(indices, indices[1:], strict=False))


def test_the_default_30_day_window_labels_today():
    today = date(2026, 12, 7)
    points = [(today - timedelta(days=29 - n), Decimal("1")) for n in range(30)]
    labels = re.findall(r'class="x-label"[^>]*>([^<]+)<', daily_spend_svg(title="t", points=points))
    assert labels[0] == "Nov 08" and labels[-1] == "Dec 07"


def test_the_period_chart_draws_spend_to_date_the_forecast_and_the_budget_line():
    window = PeriodWindow(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    today = date(2026, 12, 9)
    spend = {today - timedelta(days=n): Decimal("1") for n in range(1, 9)}
    forecast = budget_forecast(budget_usd=Decimal("20"), window=window, today=today, daily_spend=spend)

    svg = period_budget_svg(title="acme <month>", forecast=forecast)

    assert "acme &lt;month&gt;" in svg and "<month>" not in svg
    assert re.search(r'<text class="budget-label"[^>]*>Budget \$20.00<', svg)
    cumulative = re.search(r'<polyline class="cumulative" points="([^"]+)"', svg).group(1).split()
    projection = re.search(r'<polyline class="projection" points="([^"]+)"', svg).group(1).split()
    assert len(cumulative) == 9  # Dec 1 to today
    assert len(projection) == 31 - 9 + 1  # today to Dec 31
    assert cumulative[-1] == projection[0]  # the forecast starts where spend stands
    budget_y = float(re.search(r'<line class="budget"[^>]*y1="([\d.]+)"', svg).group(1))
    assert float(projection[-1].split(",")[1]) < budget_y  # the forecast ends above the line (SVG y grows down)
    assert "Over budget Dec 22" in svg
    labels = re.findall(r'class="x-label"[^>]*>([^<]+)<', svg)
    assert labels[0] == "Dec 01" and labels[-1] == "Dec 31"


def test_a_forecast_that_stays_under_the_budget_marks_no_day():
    window = PeriodWindow(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    forecast = budget_forecast(budget_usd=Decimal("20"), window=window, today=date(2026, 12, 9), daily_spend={})
    svg = period_budget_svg(title="t", forecast=forecast)
    assert 'class="runs-out"' not in svg and "Budget $20.00" in svg
