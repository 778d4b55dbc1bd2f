import re
from datetime import date, timedelta
from decimal import Decimal

import pytest

from workflows.admin.charts import daily_spend_svg, nice_step


@pytest.mark.parametrize(
    ("maximum", "step"),
    [("4.35", "1"), ("10", "2"), ("0.00034", "0.0001"), ("0.0009", "0.0002"), ("123", "50"), ("0.000001", "0.0000002")],
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

    assert svg.startswith('<svg class="spend-chart"') and svg.endswith("</svg>")
    assert "Daily spend &lt;acme&gt;" in svg and "<acme>" not in svg
    assert re.findall(r"<title>([^<]+)</title></rect>", svg) == ["2025-03-01: $0.30", "2025-03-03: $1.25"]
    assert re.findall(r'class="y-label"[^>]*>([^<]+)<', svg) == ["$0.00", "$0.50", "$1.00", "$1.50"]
    assert re.findall(r'class="x-label"[^>]*>([^<]+)<', svg) == ["Mar 01", "Mar 02", "Mar 03"]
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[1] == pytest.approx(heights[0] * 1.25 / 0.30, rel=0.01)


def test_long_ranges_thin_out_the_date_labels():
    points = [(date(2025, 1, 1) + timedelta(days=n), Decimal("1")) for n in range(90)]
    svg = daily_spend_svg(title="t", points=points)
    assert len(re.findall('class="x-label"', svg)) <= 12
    assert len(re.findall('class="bar"', svg)) == 90


def test_a_range_without_spend_still_has_its_axes():
    svg = daily_spend_svg(title="t", points=[(date(2025, 1, 1), Decimal("0"))])
    assert 'class="bar"' not in svg
    assert "$0.00" in svg and "Spend (USD)" in svg
