"""The run page's chart: the run's spend, one ledger entry after another, against its budget, with the
points where a budget was reported exceeded (audit) and where the run was stopped (enforce)."""

import math
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.admin.base import format_usd
from workflows.admin.charts import HEIGHT, WIDTH, Y_TICKS, nice_step
from workflows.models import BudgetScope
from workflows.reports.run_story import RunStory

LEFT, RIGHT, TOP, BOTTOM = 90, 30, 44, 56
MAX_X_LABELS = 12
AUDIT_COLOUR, ENFORCE_COLOUR, BUDGET_COLOUR, SPEND_COLOUR = "#d28800", "#ba2121", "#ba2121", "#417690"


def run_spend_svg(story: RunStory) -> SafeString:
    """Cumulative spend (a line with a dot per point, whose <title> names its entry) over the budget (a
    dashed line, stepped where a resume changed it), and a vertical line per `budget_exceeded` event.
    A team budget's mark is a line and a label only: its figures are the team's, on another scale."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = story.entries_total
    amounts = [point.spent_usd for point in story.spend]
    amounts += [budget for _, budget in story.budgets if budget is not None]
    amounts += [mark.projected_usd for mark in story.marks if mark.scope == BudgetScope.RUN]
    peak = max(amounts, default=Decimal(0))
    step = nice_step(peak) if peak > 0 else Decimal("0.25")
    top = step * math.ceil(peak / step) if peak > 0 else step * Y_TICKS
    ticks = int(top / step)
    places = min(6, max(2, -step.normalize().as_tuple().exponent))

    def x(entries: int) -> float:
        return LEFT + plot_w * entries / max(count, 1)

    def y(amount: Decimal) -> float:
        return TOP + plot_h - plot_h * float(amount / top)

    title = "Spend against the budget"
    parts = [
        f'<svg class="run-spend-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="run-spend-chart-title" font-family="sans-serif" font-size="12">',
        f'<title id="run-spend-chart-title">{title}</title>',
        f'<text class="chart-title" x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold" fill="#333">{title}</text>',
    ]
    for n in range(ticks + 1):
        level = TOP + plot_h - plot_h * n / ticks
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}" stroke="#ddd"/>'
            f'<text class="y-label" x="{LEFT - 8}" y="{level + 4:.1f}" text-anchor="end" fill="#333">'
            f"{format_usd(step * n, places)}</text>"
        )
    label_every = math.ceil(count / MAX_X_LABELS) or 1
    for n in range(0, count + 1, label_every):
        parts.append(
            f'<text class="x-label" x="{x(n):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle" fill="#333">{n}</text>'
        )

    for i, (after, budget) in enumerate(story.budgets):
        if budget is None:
            continue
        # The latest budget holds on, to the right edge.
        until = x(story.budgets[i + 1][0]) if i + 1 < len(story.budgets) else WIDTH - RIGHT
        parts.append(
            f'<line class="budget-line" x1="{x(after):.1f}" x2="{until:.1f}" '
            f'y1="{y(budget):.1f}" y2="{y(budget):.1f}" stroke="{BUDGET_COLOUR}" stroke-width="2" '
            f'stroke-dasharray="6 4"><title>Budget {format_usd(budget)}</title></line>'
            f'<text class="budget-label" x="{x(after) + 4:.1f}" y="{y(budget) - 6:.1f}" fill="{BUDGET_COLOUR}">'
            f"budget {format_usd(budget)}</text>"
        )

    line = [f"{x(0):.1f},{y(Decimal(0)):.1f}"] + [f"{x(p.entries):.1f},{y(p.spent_usd):.1f}" for p in story.spend]
    parts.append(f'<polyline class="spend-line" points="{" ".join(line)}" fill="none" stroke="{SPEND_COLOUR}" stroke-width="2"/>')
    for point in story.spend:
        cost = format_usd(point.cost_usd, 6) if point.cost_usd is not None else "unpriced"
        parts.append(
            f'<circle class="spend-point" cx="{x(point.entries):.1f}" cy="{y(point.spent_usd):.1f}" r="3" fill="{SPEND_COLOUR}">'
            f"<title>Entry {point.entry_id} ({escape(point.agent)}): {cost}, "
            f"{format_usd(point.spent_usd, 6)} in all</title></circle>"
        )

    for n, mark in enumerate(story.marks):
        colour = ENFORCE_COLOUR if mark.stopped else AUDIT_COLOUR
        if mark.scope == BudgetScope.RUN:
            what = "enforce stopped before" if mark.stopped else "audit: over budget at"
            figures = "spent"
        else:
            what = f"{escape(mark.scope)} budget {'stopped the run before' if mark.stopped else 'reported over at'}"
            figures = f"the {escape(mark.scope)}'s period spend"
        at = x(mark.after_entries)
        # Past the middle the label reads leftwards from its line, so that it stays inside the chart.
        label_x, anchor = (at - 4, "end") if at > LEFT + plot_w / 2 else (at + 4, "start")
        parts.append(
            f'<line class="mark {"mark-enforce" if mark.stopped else "mark-audit"}" x1="{at:.1f}" x2="{at:.1f}" '
            f'y1="{TOP}" y2="{TOP + plot_h}" stroke="{colour}" stroke-width="2">'
            f"<title>{what} {escape(mark.agent)}: {figures} {format_usd(mark.spent_usd)}, projected "
            f"{format_usd(mark.projected_usd)}, budget {format_usd(mark.budget_usd)}</title></line>"
            f'<text class="mark-label" x="{label_x:.1f}" y="{TOP + 14 + 14 * (n % 3)}" text-anchor="{anchor}" '
            f'fill="{colour}">{what} {escape(mark.agent)}</text>'
        )

    parts += [
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#333"/>',
        f'<text class="axis-title" x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">'
        "Ledger entries, in the order written</text>",
        f'<text class="axis-title" transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#333">Spent (USD)</text>',
        "</svg>",
    ]
    return mark_safe("".join(parts))  # every text in it went through escape() or is a number or an amount
