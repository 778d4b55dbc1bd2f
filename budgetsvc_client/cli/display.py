"""How the command shows things: money as the admin shows it, a run's events and its state at rest, on a
terminal (rich), in a log (plain lines) or as JSON. Every string that came from the API goes out through
`printable`, so that no escape sequence a tenant or a model wrote reaches the user's terminal."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table
from rich.text import Text

from budgetsvc_client.client import Event, Run, money_or_none

# C0 and C1 controls (but tab and newline), DEL, and the bidirectional overrides that reorder what a line shows.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with its control characters written out (`\\x1b`), never sent to the terminal."""
    return _CONTROLS.sub(lambda match: f"\\x{ord(match[0]):02x}" if ord(match[0]) < 0x100 else f"\\u{ord(match[0]):04x}", text)


def json_text(data: Any) -> str:
    """JSON for --json: JSON escapes C0 controls itself; the others are escaped too (still valid JSON)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _CONTROLS.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


# Money, as the admin shows it: summaries to the cent, table cells and step lines exact


def usd(amount: Decimal | None) -> str:
    """To the cent; exact when the cents would show a nonzero amount as $0.00."""
    if amount is None:
        return "none"
    if amount and abs(amount) < Decimal("0.005"):
        return usd_exact(amount)
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def usd_exact(amount: Decimal | None) -> str:
    return "unpriced" if amount is None else f"{'-' if amount < 0 else ''}${abs(amount):,.6f}"


def spend_against_budget(run: Run) -> str:
    limit = run.limits.budget_usd
    of = f" of {usd(limit)} ({run.limits.budget_mode})" if limit is not None else " (no budget)"
    return f"{usd(run.spent_usd)}{of}"


class Line(NamedTuple):
    text: str
    style: str = ""


class Display:
    """Where a command's results go: rich on a terminal (tables, a live progress bar), plain lines
    elsewhere (CI logs), or JSON alone with --json. Errors go to stderr."""

    def __init__(self, *, as_json: bool):
        self.as_json = as_json
        self.out = Console(markup=False, highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            # A log has no width: a table is as wide as its cells, never cut at 80 columns.
            self.out = Console(markup=False, highlight=False, soft_wrap=True, width=10_000)
        self.err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
        self.live = self.out.is_terminal and not as_json

    def line(self, text: str = "", style: str = "", *, console: Console | None = None) -> None:
        if not self.as_json:
            (console or self.out).print(Text(printable(text), style=style))

    def lines(self, lines: list[Line], *, console: Console | None = None) -> None:
        for line in lines:
            self.line(line.text, line.style, console=console)

    def table(self, table: Table) -> None:
        if not self.as_json:
            self.out.print(table)

    def json(self, data: Any) -> None:
        print(json_text(data))

    def error(self, message: str, details: list[str] = ()) -> None:
        self.err.print(Text(printable(f"budgetsvc: error: {message}"), style="bold red"))
        for detail in details:
            self.err.print(Text(printable(f"  {detail}")))


def cells(*values: Any) -> list[str]:
    """A table row's cells, printable."""
    return [printable(str(value)) for value in values]


def event_line(event: Event) -> Line | None:
    """What a follower shows of an event; None for what says nothing to a person watching."""
    p = event.payload
    match event.type:
        case "agent_completed":
            where = f" [{p['group']}/{p.get('branch')}]" if p.get("group") else ""
            cost, spent = usd_exact(money_or_none(p.get("cost_usd"))), usd_exact(money_or_none(p.get("spent_usd")))
            return Line(f"  ✓ step {p.get('step')} {p.get('agent')}{where}  {cost}  (run at {spent})")
        case "budget_exceeded":
            verb = "stopped before" if p.get("budget_mode") == "enforce" else "would have stopped before"
            of = usd_exact(money_or_none(p.get("budget_usd")))
            projected = usd_exact(money_or_none(p.get("projected_usd")))
            return Line(
                f"  ! {p.get('scope', 'run')} budget of {of} exceeded: {verb} {p.get('current_agent')} "
                f"(projected {projected}, {p.get('budget_mode')})",
                "yellow",
            )
        case "budget_threshold_crossed":
            of_budget = usd(money_or_none(p.get("budget_usd")))
            return Line(f"  · {p.get('threshold_pct')}% of the {p.get('scope')} budget of {of_budget} spent")
        case "input_requested":
            return Line(f"  ? {p.get('agent')} waits for a person: {p.get('prompt', '')}", "cyan")
        case "input_received":
            return Line(f"  · {p.get('agent')} answered by {p.get('by')}")
        case "run_resumed":
            return Line(f"  ↻ resumed by {p.get('by')}: {p.get('reason') or 'no reason given'}")
        case "run_failed":
            return Line(f"  ✗ {p.get('type')}: {p.get('message')}", "red")
        case "iteration_limit" | "timed_out":
            return Line(f"  ! {p.get('message')}", "yellow")
        case "run_cancelled":
            return Line(f"  ✗ cancelled by {p.get('by')}: {p.get('reason') or 'no reason given'}", "red")
        case "provider_retry" | "step_redelivered" | "usage_estimated":
            return Line(f"  · {event.type.replace('_', ' ')}: {p.get('agent')} (attempt {p.get('attempt')})")
    return None


def request_lines(run_id: int, request: Event) -> list[Line]:
    """How to answer what an `input_requested` event asks (docs/api.md#post-runsidinput): a human gate's
    options, a questions step's ids, or a dialog's reply."""
    p = request.payload
    command = f"budgetsvc answer {run_id}"
    if isinstance(p.get("options"), list):
        lines = [Line(f"  answer: {command} CHOICE, where CHOICE is one of:")]
        for option in p["options"]:
            option = option if isinstance(option, dict) else {"value": option}
            needs = f"  (with --text: {option['prompt_for']})" if option.get("prompt_for") else ""
            label = option.get("label") or ""
            lines.append(Line(f"    {option.get('value')}  {label}{needs}".rstrip()))
        return lines
    if isinstance(p.get("questions"), list):
        lines = [Line(f"  answer: {command} --answer ID=TEXT for each question:")]
        for question in p["questions"]:
            question = question if isinstance(question, dict) else {"text": question}
            choices = question.get("choices")
            one_of = f"  (one of: {', '.join(str(choice) for choice in choices)})" if isinstance(choices, list) else ""
            lines.append(Line(f"    {question.get('id')}  {question.get('text', '')}{one_of}"))
        if p.get("allow_abort"):
            lines.append(Line(f"  or: {command} --abort"))
        return lines
    if p.get("dialog"):
        return [Line(f'  answer: {command} --text "REPLY", or {command} --decline')]
    return [Line(f"  answer: {command} CHOICE (its options are in the run's input_requested event)")]


def at_rest_lines(run: Run, *, request: Event | None = None) -> list[Line]:
    """The run at rest, told: its spend, error, what to do next and its output."""
    style = {"completed": "bold green", "failed": "bold red", "cancelled": "bold red"}.get(run.status, "bold yellow")
    error = run.error if isinstance(run.error, dict) else {}
    team_stop = run.status == "budget_exceeded" and error.get("scope") == "team"
    if team_stop:
        team_spent, team_budget = money_or_none(error.get("spent_usd")), money_or_none(error.get("budget_usd"))
        head = (
            f"run {run.id} budget_exceeded: stopped by the team's period budget ({usd(team_spent)} of "
            f"{usd(team_budget)} spent); the run itself spent {spend_against_budget(run)}"
        )
    else:
        head = f"run {run.id} {run.status}: spent {spend_against_budget(run)}"
    lines = [Line(head, style)]
    if run.estimated_usd:
        lines.append(Line(f"  of which {usd_exact(run.estimated_usd)} estimated, awaiting usage"))
    if run.unpriced_steps:
        lines.append(Line(f"  {run.unpriced_steps} step(s) had no price: their cost is unknown, not $0"))
    if error:
        lines.append(Line(f"  {error.get('type')}: {error.get('message')}"))
    if team_stop:
        lines.append(
            Line(
                "  next: the team's period budget has no room until its period resets or an operator raises it; "
                f'then budgetsvc resume {run.id} --reason "..."'
            )
        )
    elif run.status == "budget_exceeded":
        lines.append(Line(f'  next: budgetsvc resume {run.id} --budget AMOUNT --reason "..."'))
    elif run.status == "waiting_for_input":
        if request is not None:
            lines.extend(request_lines(run.id, request))
        else:
            lines.append(Line(f"  {run.current_agent} waits for a person: budgetsvc answer {run.id} CHOICE"))
    elif run.status in ("iteration_limit", "timed_out"):
        lines.append(Line(f'  next: budgetsvc resume {run.id} --max-iterations N or --timeout-seconds S --reason "..."'))
    elif run.status == "cancelled" and run.reserved_usd:
        lines.append(
            Line(
                f"  a step that was running when it was cancelled may still be charged: {usd_exact(run.reserved_usd)} "
                f"is held for it (budgetsvc status {run.id} shows the final spend)"
            )
        )
    if run.output is not None:
        lines.append(Line("output:"))
        lines.append(Line(json.dumps(run.output, indent=2, ensure_ascii=False)))
    return lines
