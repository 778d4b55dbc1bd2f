"""`budgetsvc`: run workflows under a budget from a terminal or CI, as `conductor run` does locally.

Built on budgetsvc.client; see docs/cli.md. The exit codes are in EXIT_CODES_HELP below.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from budgetsvc.client import ApiError, BudgetsvcClient, ConnectionFailed, Event, Run, money_or_none


class Exit(IntEnum):
    COMPLETED = 0  # also: any other command that did what it was asked
    FAILED = 1
    USAGE = 2  # argparse's own
    BUDGET_EXCEEDED = 3
    OTHER_LIMIT = 4  # iteration_limit, timed_out
    WAITING_FOR_INPUT = 5
    CANCELLED = 6
    API_ERROR = 7
    UNREACHABLE = 8
    STILL_GOING = 9  # `status` of a queued or running run
    INTERRUPTED = 130  # Ctrl-C while following; the run goes on


EXIT_OF_STATUS = {
    "completed": Exit.COMPLETED,
    "failed": Exit.FAILED,
    "budget_exceeded": Exit.BUDGET_EXCEEDED,
    "iteration_limit": Exit.OTHER_LIMIT,
    "timed_out": Exit.OTHER_LIMIT,
    "waiting_for_input": Exit.WAITING_FOR_INPUT,
    "cancelled": Exit.CANCELLED,
    "queued": Exit.STILL_GOING,
    "running": Exit.STILL_GOING,
}

EXIT_CODES_HELP = """\
exit codes (of `run`, and of `resume`/`answer --follow` and `status`, by the run's status):
  0  completed (any other command: done)
  1  failed
  2  usage error: a bad option, a missing file, an --input that is not NAME=VALUE
  3  budget_exceeded: stopped by its enforce budget (resume it with a larger --budget)
  4  iteration_limit or timed_out: stopped by another limit
  5  waiting_for_input: a person must answer (budgetsvc answer RUN CHOICE)
  6  cancelled
  7  the API refused the request (a bad API key, invalid input, a run in the wrong state)
  8  the service cannot be reached, or did not answer in time
  9  `status` only: the run is still queued or running
130  interrupted while following: the run itself goes on

environment: BUDGETSVC_URL (default http://127.0.0.1:8000), BUDGETSVC_API_KEY.
"""


class UsageError(Exception):
    """A command line the arguments' types could not tell apart: exits 2 like argparse's."""


# Inputs, as `conductor run --input NAME=VALUE` reads them


def input_value(text: str) -> Any:
    """conductor's reading of a `--input` value: true/false (any case) are booleans, null is None, text
    starting with [ or { that is JSON is that JSON, a whole number is an int, a number with a `.` a
    float, and anything else (`1e3` included) the string as typed."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    try:
        number = float(text) if "." in text else int(text)
    except ValueError:
        return text
    # JSON has no NaN or infinity ("nan." or "inf." would read as one): those stay text.
    return number if not isinstance(number, float) or math.isfinite(number) else text


def parse_inputs(pairs: Sequence[str], *, input_file: Path | None = None) -> dict[str, Any]:
    """`--input-file`'s JSON object, then each `--input NAME=VALUE` over it (split at the first `=`)."""
    inputs: dict[str, Any] = {}
    if input_file is not None:
        try:
            loaded = json.loads(input_file.read_text(encoding="utf-8"))
        except OSError as error:
            raise UsageError(f"--input-file: cannot read {input_file}: {error.strerror}") from None
        except ValueError as error:
            raise UsageError(f"--input-file: {input_file} is not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--input-file: {input_file} must hold a JSON object of inputs")
        inputs.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--input takes NAME=VALUE, not {pair!r}")
        inputs[name.strip()] = input_value(value.strip())
    return inputs


def conductor_input_flags(argv: Sequence[str]) -> list[str]:
    """conductor's other spelling, `--input.NAME=VALUE` (or `--input.NAME VALUE`), as `--input NAME=VALUE`."""
    args: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        match = re.fullmatch(r"--input\.([^=]+)(?:=(.*))?", arg, flags=re.DOTALL)
        if not match:
            args.append(arg)
            continue
        name, value = match.groups()
        if value is None:
            # conductor: the next argument is the value, unless it is an option; a bare flag is true.
            if index < len(argv) and not argv[index].startswith("-"):
                value = argv[index]
                index += 1
            else:
                value = "true"
        args += ["--input", f"{name}={value}"]
    return args


# Dates of `spend`

_AGO = re.compile(r"(\d{1,5})([hdw])")


def spend_date(text: str, *, now: datetime | None = None) -> str:
    """`--since`/`--until` as the API's UTC date: `7d`, `24h`, `2w` (the UTC day that long ago falls
    in), `today`, or an ISO 8601 date or time (its UTC date)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "today":
        return now.date().isoformat()
    if match := _AGO.fullmatch(text):
        count, unit = int(match[1]), match[2]
        delta = {"h": timedelta(hours=count), "d": timedelta(days=count), "w": timedelta(weeks=count)}[unit]
        return (now - delta).date().isoformat()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 7d, 24h, 2w, today or an ISO date") from None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date().isoformat()


def budget(text: str) -> Decimal:
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in dollars") from None
    if not amount.is_finite() or amount <= 0:
        raise argparse.ArgumentTypeError(f"the budget must be above $0, not {text}")
    return amount


# Money, as the admin shows it: summaries to the cent, table cells and step lines exact


def usd(amount: Decimal | None) -> str:
    return "none" if amount is None else f"${amount:,.2f}"


def usd_exact(amount: Decimal | None) -> str:
    return "unpriced" if amount is None else f"${amount:,.6f}"


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

    def line(self, text: str | Text = "") -> None:
        if not self.as_json:
            self.out.print(text)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False))

    def error(self, message: str) -> None:
        self.err.print(Text(f"budgetsvc: error: {message}", style="bold red"))


def event_line(event: Event) -> Text | None:
    """What a follower shows of an event; None for what says nothing to a person watching."""
    p = event.payload
    match event.type:
        case "agent_completed":
            where = f" [{p['group']}/{p.get('branch')}]" if p.get("group") else ""
            return Text(
                f"  ✓ step {p.get('step')} {p.get('agent')}{where}  {usd_exact(money_or_none(p.get('cost_usd')))}"
                f"  (run at {usd_exact(money_or_none(p.get('spent_usd')))})"
            )
        case "budget_exceeded":
            verb = "stopped before" if p.get("budget_mode") == "enforce" else "would have stopped before"
            return Text(
                f"  ! {p.get('scope', 'run')} budget of {usd_exact(money_or_none(p.get('budget_usd')))} exceeded: "
                f"{verb} {p.get('current_agent')} (projected {usd_exact(money_or_none(p.get('projected_usd')))}, "
                f"{p.get('budget_mode')})",
                style="yellow",
            )
        case "budget_threshold_crossed":
            of_budget = usd(money_or_none(p.get("budget_usd")))
            return Text(f"  · {p.get('threshold_pct')}% of the {p.get('scope')} budget of {of_budget} spent")
        case "input_requested":
            return Text(f"  ? {p.get('agent')} waits for a person: {p.get('prompt', '')}", style="cyan")
        case "input_received":
            return Text(f"  · {p.get('agent')} answered by {p.get('by')}")
        case "run_resumed":
            return Text(f"  ↻ resumed by {p.get('by')}: {p.get('reason') or 'no reason given'}")
        case "run_failed":
            return Text(f"  ✗ {p.get('type')}: {p.get('message')}", style="red")
        case "iteration_limit" | "timed_out":
            return Text(f"  ! {p.get('message')}", style="yellow")
        case "run_cancelled":
            return Text(f"  ✗ cancelled by {p.get('by')}: {p.get('reason') or 'no reason given'}", style="red")
        case "provider_retry" | "step_redelivered" | "usage_estimated":
            return Text(f"  · {event.type.replace('_', ' ')}: {p.get('agent')} (attempt {p.get('attempt')})")
    return None


def spend_against_budget(run: Run) -> str:
    limit = run.limits.budget_usd
    of = f" of {usd(limit)} ({run.limits.budget_mode})" if limit is not None else " (no budget)"
    return f"{usd(run.spent_usd)}{of}"


def follow_run(client: BudgetsvcClient, display: Display, run: Run, *, after: int = 0) -> Run:
    """Follow a run until it rests, showing its steps as they finish; the run at rest."""
    if display.live:
        columns = (
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[spend]}"),
        )  # fmt: skip
        with Progress(*columns, console=display.out, transient=True) as progress:
            bar = progress.add_task(run.current_agent, total=None, spend="")
            for item in client.follow(run.id, after=after):
                if isinstance(item, Run):
                    run = item
                    limit = run.limits.budget_usd
                    progress.update(
                        bar, description=f"run {run.id} {run.status}: {run.current_agent or '-'}",
                        # Floats only to draw the bar; the text beside it is the Decimal.
                        total=float(limit) if limit is not None else None,
                        completed=float(min(run.spent_usd, limit)) if limit is not None else 0,
                        spend=spend_against_budget(run),
                    )  # fmt: skip
                elif line := event_line(item):
                    progress.console.print(line)
        return run
    for item in client.follow(run.id, after=after):
        if isinstance(item, Run):
            run = item
        elif line := event_line(item):
            display.line(line)
    return run


def summary(display: Display, run: Run) -> int:
    """The run at rest, told; its exit code."""
    if display.as_json:
        display.json(run.raw)
        return EXIT_OF_STATUS[run.status]
    head = f"run {run.id} {run.status}: spent {spend_against_budget(run)}"
    style = {"completed": "green", "failed": "red", "cancelled": "red"}.get(run.status, "yellow")
    display.line(Text(head, style=f"bold {style}"))
    if run.estimated_usd:
        display.line(f"  of which {usd_exact(run.estimated_usd)} estimated, awaiting usage")
    if run.unpriced_steps:
        display.line(f"  {run.unpriced_steps} step(s) had no price: their cost is unknown, not $0")
    if run.error:
        display.line(f"  {run.error.get('type')}: {run.error.get('message')}")
    if run.status == "budget_exceeded":
        display.line(f"  next: budgetsvc resume {run.id} --budget AMOUNT --reason \"...\"")
    elif run.status == "waiting_for_input":
        display.line(f"  {run.current_agent} waits for a person: budgetsvc answer {run.id} CHOICE")
    elif run.status in ("iteration_limit", "timed_out"):
        display.line(f"  next: budgetsvc resume {run.id} --max-iterations N or --timeout-seconds S --reason \"...\"")
    if run.output is not None:
        display.line("output:")
        display.line(json.dumps(run.output, indent=2, ensure_ascii=False))
    return EXIT_OF_STATUS[run.status]


# Commands


def cmd_run(client: BudgetsvcClient, display: Display, args) -> int:
    path = Path(args.workflow)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the workflow {path}: {getattr(error, 'strerror', None) or error}") from None
    inputs = parse_inputs(args.input, input_file=args.input_file)
    version = client.upload_workflow(source, name=args.name)
    display.line(f"workflow {version.name} v{version.version} ({'uploaded' if version.created else 'unchanged'})")
    run = client.start_run(
        version.id, version=version.version, inputs=inputs, budget_usd=args.budget, budget_mode=args.mode,
        max_iterations=args.max_iterations, timeout_seconds=args.timeout_seconds,
    )  # fmt: skip
    display.line(f"run {run.id} {run.status}: spent {spend_against_budget(run)}")
    if args.no_follow:
        if display.as_json:
            display.json(run.raw)
        return Exit.COMPLETED
    return summary(display, follow_run(client, display, run))


def cmd_resume(client: BudgetsvcClient, display: Display, args) -> int:
    last_event = _last_event_id(client, args.run) if args.follow else 0
    run = client.resume(
        args.run, reason=args.reason, budget_usd=args.budget, budget_mode=args.mode,
        max_iterations=args.max_iterations, timeout_seconds=args.timeout_seconds,
    )  # fmt: skip
    display.line(f"run {run.id} resumed: spent {spend_against_budget(run)}")
    if not args.follow:
        if display.as_json:
            display.json(run.raw)
        return Exit.COMPLETED
    return summary(display, follow_run(client, display, run, after=last_event))


def cmd_answer(client: BudgetsvcClient, display: Display, args) -> int:
    if any("=" not in pair for pair in args.answer):
        raise UsageError("--answer takes ID=TEXT")
    answers = dict(pair.partition("=")[::2] for pair in args.answer)
    last_event = _last_event_id(client, args.run) if args.follow else 0
    run = client.answer(
        args.run, choice=args.choice, text=args.text, answers=answers, abort=args.abort or None,
        decline=args.decline or None,
    )  # fmt: skip
    display.line(f"run {run.id} answered: {run.status}")
    if not args.follow:
        if display.as_json:
            display.json(run.raw)
        return Exit.COMPLETED
    return summary(display, follow_run(client, display, run, after=last_event))


def _last_event_id(client: BudgetsvcClient, run_id: int) -> int:
    events = client.events(run_id)
    return events[-1].id if events else 0


def cmd_cancel(client: BudgetsvcClient, display: Display, args) -> int:
    run = client.cancel(args.run, reason=args.reason)
    if display.as_json:
        display.json(run.raw)
    display.line(f"run {run.id} {run.status}: spent {spend_against_budget(run)}")
    return Exit.COMPLETED


def cmd_status(client: BudgetsvcClient, display: Display, args) -> int:
    run = client.get_run(args.run)
    if display.as_json:
        display.json(run.raw)
        return EXIT_OF_STATUS[run.status]
    display.line(f"run {run.id}: {run.workflow_name} v{run.workflow_version}, {run.iterations} step(s), started {run.created_at}")
    if run.resting:
        return summary(display, run)
    display.line(f"run {run.id} {run.status} at {run.current_agent or '-'}: spent {spend_against_budget(run)}")
    return Exit.STILL_GOING


def cmd_runs(client: BudgetsvcClient, display: Display, args) -> int:
    runs = client.list_runs(status=args.status, workflow=args.workflow, limit=args.limit)
    if display.as_json:
        display.json([run.raw for run in runs])
        return Exit.COMPLETED
    table = Table("run", "workflow", "status", "spent", "budget", "mode", "agent", "created", box=box.SIMPLE_HEAD)
    for run in runs:
        table.add_row(
            str(run.id), f"{run.workflow_name} v{run.workflow_version}", run.status, usd_exact(run.spent_usd),
            usd_exact(run.limits.budget_usd) if run.limits.budget_usd is not None else "none", run.limits.budget_mode,
            run.current_agent, run.created_at[:19].replace("T", " "),
        )  # fmt: skip
    display.line(table)
    return Exit.COMPLETED


def cmd_spend(client: BudgetsvcClient, display: Display, args) -> int:
    query = {"group_by": args.group_by, "since": args.since, "until": args.until}
    if args.csv:
        sys.stdout.write(client.spend_csv(**query))
        return Exit.COMPLETED
    report = client.spend(**query)
    if display.as_json:
        display.json(report.raw)
        return Exit.COMPLETED
    table = Table(
        args.group_by, "spent", "estimated", "runs", "steps", "input tokens", "output tokens", "unpriced steps",
        box=box.SIMPLE_HEAD,
    )
    for row in report.groups:
        table.add_row(
            row.key or "-", usd_exact(row.spent_usd), usd_exact(row.estimated_usd), str(row.runs), str(row.steps),
            f"{row.input_tokens:,}", f"{row.output_tokens:,}", str(row.unpriced_steps),
        )  # fmt: skip
    window = f"{args.since or 'the start'} to {args.until or 'today'}"
    display.line(table)
    display.line(f"total {usd(report.total_usd)} from {window} (UTC days)")
    if report.estimated_usd:
        display.line(f"  of which {usd(report.estimated_usd)} estimated, awaiting usage")
    if report.unpriced_steps:
        display.line(f"  and {report.unpriced_steps} step(s) of unknown cost (no price)")
    return Exit.COMPLETED


# The command line


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="budgetsvc",
        description="Run and govern budgetsvc workflow runs: start and follow runs, resume, answer, cancel, read spend.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--url", help="the service (default: $BUDGETSVC_URL, else http://127.0.0.1:8000)")
    top.add_argument("--api-key", help="a team API key (default: $BUDGETSVC_API_KEY; prefer the variable)")
    top.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help, description=help, epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print the result as JSON, and nothing else")
        return sub

    def limits(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--budget", type=budget, metavar="USD", help="budget in dollars, e.g. 0.50")
        sub.add_argument("--mode", choices=("audit", "enforce"), help="budget mode")
        sub.add_argument("--max-iterations", type=int, metavar="N")
        sub.add_argument("--timeout-seconds", type=int, metavar="S", help="active run time limit")

    run = command("run", "Upload a workflow (a new version only if it changed), start a run and follow it.", cmd_run)
    run.add_argument("workflow", metavar="WORKFLOW.yaml")
    run.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE",
        help="an input, repeatable; as conductor reads it: true/false, null, JSON [..] or {..}, numbers, else text",
    )  # fmt: skip
    run.add_argument("--input-file", type=Path, metavar="FILE.json", help="inputs as a JSON object (--input wins)")
    run.add_argument("--name", help="the workflow's name (default: the definition's workflow.name)")
    limits(run)
    run.add_argument("--no-follow", action="store_true", help="start the run and return at once")

    resume = command("resume", "Resume a stopped run, with new limits.", cmd_resume)
    resume.add_argument("run", type=int, metavar="RUN")
    limits(resume)
    resume.add_argument("--reason", required=True, help="why, recorded in the run's run_resumed event")
    resume.add_argument("--follow", action="store_true", help="follow the run until it rests")

    answer = command("answer", "Answer the human gate, questions or dialog a waiting run waits at.", cmd_answer)
    answer.add_argument("run", type=int, metavar="RUN")
    answer.add_argument("choice", nargs="?", metavar="CHOICE", help="a human gate's option (its value)")
    answer.add_argument("--text", help="the text an option's prompt_for asks for, or a dialog's reply")
    answer.add_argument("--answer", action="append", default=[], metavar="ID=TEXT", help="a question's answer, repeatable")
    answer.add_argument("--abort", action="store_true", help="abort the questions (where the step allows it)")
    answer.add_argument("--decline", action="store_true", help="decline a dialog's question")
    answer.add_argument("--follow", action="store_true", help="follow the run until it rests")

    cancel = command("cancel", "Cancel a run for good.", cmd_cancel)
    cancel.add_argument("run", type=int, metavar="RUN")
    cancel.add_argument("--reason", default="", help="why, recorded in the run_cancelled event")

    status = command("status", "Show a run; the exit code tells its status.", cmd_status)
    status.add_argument("run", type=int, metavar="RUN")

    runs = command("runs", "List the team's runs, newest first.", cmd_runs)
    runs.add_argument("--status", help="only runs in this status")
    runs.add_argument("--workflow", type=int, metavar="ID", help="only runs of this workflow id")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (default 20)")

    spend = command("spend", "The team's spend, grouped: a table, CSV or JSON.", cmd_spend)
    spend.add_argument("--group-by", default="workflow", help="workflow (default), model, agent, tool, run or day")
    spend.add_argument("--since", type=spend_date, help="from this UTC day: 7d, 24h, 2w, today or an ISO date")
    spend.add_argument("--until", type=spend_date, help="up to this UTC day, included; as --since")
    spend.add_argument("--csv", action="store_true", help="the API's CSV, as it comes")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(conductor_input_flags(sys.argv[1:] if argv is None else argv))
    display = Display(as_json=args.json)
    try:
        with BudgetsvcClient(args.url, args.api_key, timeout=args.timeout) as client:
            return int(args.handler(client, display, args))
    except UsageError as error:
        display.error(str(error))
        return Exit.USAGE
    except ApiError as error:
        display.error(error.message)
        for line in _details(error.details):
            display.err.print(f"  {line}")
        if error.status_code == 401:
            display.err.print("  (set BUDGETSVC_API_KEY to a key of your team: manage.py create_api_key --team NAME)")
        return Exit.API_ERROR
    except ConnectionFailed as error:
        display.error(str(error))
        return Exit.UNREACHABLE
    except KeyboardInterrupt:
        display.err.print("interrupted: a run already started goes on (budgetsvc status RUN, budgetsvc cancel RUN)")
        return Exit.INTERRUPTED


def _details(details: Any) -> list[str]:
    if isinstance(details, list):
        return [f"{item.get('path')}: {item.get('message')}" if isinstance(item, dict) else str(item) for item in details]
    if isinstance(details, dict):
        return [f"{key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in details.items()]
    return []


if __name__ == "__main__":
    sys.exit(main())
