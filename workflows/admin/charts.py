"""Server-side SVG charts for the admin: no JavaScript, no assets, and testable as text."""

import math
from datetime import date
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.admin.base import format_usd

WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 44, 56  # room for $ labels, the title and the date labels
MAX_DATE_LABELS = 12
Y_TICKS = 5


def nice_step(maximum: Decimal, ticks: int = Y_TICKS) -> Decimal:
    """The smallest 1, 2 or 5 x 10^n step that covers `maximum` in `ticks` steps."""
    raw = maximum / ticks
    magnitude = Decimal(1).scaleb(raw.adjusted())
    return next(magnitude * m for m in (1, 2, 5, 10) if magnitude * m >= raw)


def daily_spend_svg(*, title: str, points: list[tuple[date, Decimal]]) -> SafeString:
    """A bar per day, a $ axis with gridlines and date labels; each bar's <title> gives its exact amount."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((amount for _, amount in points), default=Decimal(0))
    step = nice_step(peak) if peak > 0 else Decimal("0.25")
    top = step * math.ceil(peak / step) if peak > 0 else step * Y_TICKS
    ticks = int(top / step)
    # One decimal count for the whole axis, so the labels line up: as many as the step needs, 2 to 6.
    places = min(6, max(2, -step.normalize().as_tuple().exponent))
    slot = plot_w / max(len(points), 1)
    label_every = math.ceil(len(points) / MAX_DATE_LABELS) or 1

    parts = [
        f'<svg class="spend-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="spend-chart-title" font-family="sans-serif" font-size="12">',
        f'<title id="spend-chart-title">{escape(title)}</title>',
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
    for i, (day, amount) in enumerate(points):
        x = LEFT + slot * i
        if amount > 0:
            height = plot_h * float(amount / top)
            parts.append(
                f'<rect class="bar" x="{x + slot * 0.1:.1f}" y="{TOP + plot_h - height:.1f}" '
                f'width="{max(slot * 0.8, 1):.1f}" height="{height:.1f}" fill="#417690">'
                f"<title>{day.isoformat()}: {format_usd(amount)}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text class="x-label" x="{x + slot / 2:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle" '
                f'fill="#333">{day:%b %d}</text>'
            )
    parts += [
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<text class="axis-title" x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">'
        "Day (UTC)</text>",
        f'<text class="axis-title" transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#333">Spend (USD)</text>',
        "</svg>",
    ]
    return mark_safe("".join(parts))  # every text in it went through escape() or is a number or date


def burn_down_svg(
    *, title: str, points: list[tuple[date, Decimal]], period_days: list[date], budget: Decimal | None
) -> SafeString:
    """Cumulative spend by day (a line with a dot a day, each dot's <title> its exact amount) across the
    whole period's days, and the period budget as a dashed line; the $ axis reaches past both."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max([amount for _, amount in points] + ([budget] if budget else []), default=Decimal(0))
    step = nice_step(peak) if peak > 0 else Decimal("0.25")
    top = step * math.ceil(peak / step) if peak > 0 else step * Y_TICKS
    if budget is not None and top == budget:
        top += step  # room above the budget line, so that spend reaching it stays visible
    ticks = int(top / step)
    places = min(6, max(2, -step.normalize().as_tuple().exponent))
    slot = plot_w / max(len(period_days) - 1, 1)
    label_every = math.ceil(len(period_days) / MAX_DATE_LABELS) or 1

    def x(index: int) -> float:
        return LEFT + slot * index if len(period_days) > 1 else LEFT + plot_w / 2

    def y(amount: Decimal) -> float:
        return TOP + plot_h - plot_h * float(amount / top)

    parts = [
        f'<svg class="burn-down" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="burn-down-title" font-family="sans-serif" font-size="12">',
        f'<title id="burn-down-title">{escape(title)}</title>',
        f'<text class="chart-title" x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold" fill="#333">{escape(title)}</text>',
    ]
    for n in range(ticks + 1):
        tick_y = TOP + plot_h - plot_h * n / ticks
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{tick_y:.1f}" y2="{tick_y:.1f}" stroke="#ddd"/>'
            f'<text class="y-label" x="{LEFT - 8}" y="{tick_y + 4:.1f}" text-anchor="end" fill="#333">'
            f"{format_usd(step * n, places)}</text>"
        )
    for i, day in enumerate(period_days):
        if i % label_every == 0 or i == len(period_days) - 1:
            parts.append(
                f'<text class="x-label" x="{x(i):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle" '
                f'fill="#333">{day:%b %d}</text>'
            )
    if budget is not None:
        parts.append(
            f'<line class="budget-line" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(budget):.1f}" y2="{y(budget):.1f}" '
            f'stroke="#ba2121" stroke-dasharray="6 4" stroke-width="2"><title>Period budget: {format_usd(budget)}'
            f"</title></line>"
            f'<text class="budget-label" x="{WIDTH - RIGHT}" y="{y(budget) - 6:.1f}" text-anchor="end" '
            f'fill="#ba2121">budget {format_usd(budget)}</text>'
        )
    index = {day: i for i, day in enumerate(period_days)}
    coordinates = [(x(index[day]), y(amount), day, amount) for day, amount in points if day in index]
    if coordinates:
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _, _ in coordinates)
        parts.append(f'<polyline class="spend-line" points="{path}" fill="none" stroke="#417690" stroke-width="2"/>')
        parts += [
            f'<circle class="spend-point" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="#417690">'
            f"<title>{day.isoformat()}: {format_usd(amount)} so far</title></circle>"
            for cx, cy, day, amount in coordinates
        ]
    parts += [
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<text class="axis-title" x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">'
        "Day (UTC)</text>",
        f'<text class="axis-title" transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#333">Spent this period (USD)</text>',
        "</svg>",
    ]
    return mark_safe("".join(parts))  # every text in it went through escape() or is a number or date
