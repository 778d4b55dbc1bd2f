"""Server-side SVG charts for the admin: no JavaScript, no assets, and testable as text."""

import math
from datetime import date, timedelta
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.admin.base import format_usd, format_usd_exact
from workflows.reports.forecast import BudgetForecast

WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 44, 56  # room for $ labels, the title and the date labels
MAX_DATE_LABELS = 12
Y_TICKS = 5
MICRO_USD = Decimal("0.000001")


def nice_step(maximum: Decimal, ticks: int = Y_TICKS) -> Decimal:
    """The smallest 1, 2 or 5 x 10^n step that covers `maximum` in `ticks` steps, and a micro-dollar at
    least: amounts have no finer digit, so finer ticks would repeat their labels."""
    raw = max(maximum / ticks, MICRO_USD)
    magnitude = Decimal(1).scaleb(raw.adjusted())
    return next(magnitude * m for m in (1, 2, 5, 10) if magnitude * m >= raw)


def label_indices(count: int, most: int = MAX_DATE_LABELS) -> list[int]:
    """Which of `count` evenly spaced slots get a date label: the first and the last always, and every
    n-th between them, n chosen so that at most `most` labels show and no two are closer than n slots."""
    if count <= 0:
        return []
    every, last = math.ceil(count / most), count - 1
    between = [i for i in range(every, last, every) if last - i >= every]
    return sorted({0, *between, last})


def _y_scale(peak: Decimal) -> tuple[Decimal, Decimal, int, int]:
    """The axis top, its step, the number of steps, and the decimals every label shows."""
    step = nice_step(peak) if peak > 0 else Decimal("0.25")
    top = step * math.ceil(peak / step) if peak > 0 else step * Y_TICKS
    # One decimal count for the whole axis, so the labels line up: as many as the step needs, 2 to 6.
    places = min(6, max(2, -step.normalize().as_tuple().exponent))
    return top, step, int(top / step), places


def _frame(*, css_class: str, title: str, step: Decimal, ticks: int, places: int) -> list[str]:
    """The opening of a chart: its title, and the $ axis with gridlines."""
    plot_h = HEIGHT - TOP - BOTTOM
    title_id = f"{css_class}-title"
    parts = [
        f'<svg class="spend-chart {css_class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="{title_id}" font-family="sans-serif" font-size="12">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<text class="chart-title" x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold" fill="#333">{escape(title)}</text>',
    ]
    for n in range(ticks + 1):
        y = TOP + plot_h - plot_h * n / ticks
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text class="y-label" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#333">'
            f"{format_usd(step * n, places)}</text>"
        )
    return parts


def _date_labels(days: list[date], slot: float) -> list[str]:
    return [
        f'<text class="x-label" x="{LEFT + slot * i + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" '
        f'fill="#333">{days[i]:%b %d}</text>'
        for i in label_indices(len(days))
    ]


def _close() -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    return [
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<text class="axis-title" x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">'
        "Day (UTC)</text>",
        f'<text class="axis-title" transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#333">Spend (USD)</text>',
        "</svg>",
    ]


def daily_spend_svg(*, title: str, points: list[tuple[date, Decimal]]) -> SafeString:
    """A bar per day, a $ axis with gridlines and date labels; each bar's <title> gives its exact amount."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top, step, ticks, places = _y_scale(max((amount for _, amount in points), default=Decimal(0)))
    slot = plot_w / max(len(points), 1)
    parts = _frame(css_class="daily-spend", title=title, step=step, ticks=ticks, places=places)
    for i, (day, amount) in enumerate(points):
        if amount > 0:
            height = plot_h * float(amount / top)
            parts.append(
                f'<rect class="bar" x="{LEFT + slot * i + slot * 0.1:.1f}" y="{TOP + plot_h - height:.1f}" '
                f'width="{max(slot * 0.8, 1):.1f}" height="{height:.1f}" fill="#417690">'
                f"<title>{day.isoformat()}: {format_usd_exact(amount)}</title></rect>"
            )
    parts += _date_labels([day for day, _ in points], slot)
    return mark_safe("".join(parts + _close()))  # every text in it went through escape() or is a number or date


def period_budget_svg(*, title: str, forecast: BudgetForecast) -> SafeString:
    """The period's spend to date as a line rising against the budget's level line, the forecast from
    today to the period's end dashed, and the day the forecast passes the budget marked."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    first, last = forecast.period_first_day, forecast.period_last_day
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    top, step, ticks, places = _y_scale(max(forecast.budget_usd, forecast.projected_usd, forecast.spent_usd))
    slot = plot_w / len(days)

    def x(day: date) -> float:
        return LEFT + slot * (day - first).days + slot / 2

    def y(amount: Decimal) -> float:
        return TOP + plot_h - plot_h * float(amount / top)

    def polyline(css_class: str, points: list[tuple[date, Decimal]], dash: str = "") -> str:
        coordinates = " ".join(f"{x(day):.1f},{y(amount):.1f}" for day, amount in points)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<polyline class="{css_class}" points="{coordinates}" fill="none" stroke="#417690" stroke-width="2"{dashes}/>'

    budget_y = y(forecast.budget_usd)
    parts = _frame(css_class="period-budget", title=title, step=step, ticks=ticks, places=places)
    parts += [
        f'<line class="budget" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{budget_y:.1f}" y2="{budget_y:.1f}" '
        'stroke="#ba2121" stroke-width="2" stroke-dasharray="8 4"/>',
        f'<text class="budget-label" x="{LEFT + 6}" y="{budget_y - 6:.1f}" fill="#ba2121">'
        f"Budget {format_usd(forecast.budget_usd)}</text>",
        polyline("projection", forecast.projection, dash="4 4"),
        polyline("cumulative", forecast.cumulative),
        f'<circle class="today" cx="{x(forecast.today):.1f}" cy="{y(forecast.spent_usd):.1f}" r="4" fill="#417690">'
        f"<title>{forecast.today.isoformat()}: {format_usd_exact(forecast.spent_usd)} spent in the period</title></circle>",
    ]
    if forecast.runs_out_on is not None:
        runs_out_x = x(forecast.runs_out_on)
        parts += [
            f'<line class="runs-out" x1="{runs_out_x:.1f}" x2="{runs_out_x:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
            'stroke="#ba2121"/>',
            f'<text class="runs-out-label" x="{runs_out_x - 4:.1f}" y="{TOP + 14}" text-anchor="end" fill="#ba2121">'
            f"Over budget {forecast.runs_out_on:%b %d}</text>",
        ]
    parts += _date_labels(days, slot)
    return mark_safe("".join(parts + _close()))  # every text in it is a number, a date or an amount
