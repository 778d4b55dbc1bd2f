"""The commands: each takes the client, the display and its parsed arguments, and returns its exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich import box
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from budgetsvc_client.cli.display import (
    Display,
    Line,
    at_rest_lines,
    cells,
    event_line,
    printable,
    spend_against_budget,
    usd,
    usd_exact,
)
from budgetsvc_client.cli.exits import EXIT_OF_STATUS, Exit, exit_of_status
from budgetsvc_client.cli.parsing import UsageError, answers, parse_inputs
from budgetsvc_client.client import BudgetsvcClient, Event, Run, StillGoing


def follow_run(client: BudgetsvcClient, display: Display, run: Run, *, after: int = 0, max_wait: float | None) -> Run:
    """Follow a run until it rests, showing its steps as they finish; the run at rest. StillGoing when
    `max_wait` seconds passed first."""
    if not display.live:
        for item in client.follow(run.id, after=after, max_wait=max_wait):
            if isinstance(item, Run):
                run = item
            elif line := event_line(item):
                display.line(*line)
        return run
    # No markup: an agent's name is the tenant's text, never rich's markup.
    description, spend = TextColumn("{task.description}", markup=False), TextColumn("{task.fields[spend]}", markup=False)
    columns = (SpinnerColumn(), description, BarColumn(), spend)
    with Progress(*columns, console=display.out, transient=True) as progress:
        bar = progress.add_task(printable(run.current_agent), total=None, spend="")
        for item in client.follow(run.id, after=after, max_wait=max_wait):
            if isinstance(item, Event):
                if line := event_line(item):
                    display.line(*line, console=progress.console)
                continue
            run = item
            limit = run.limits.budget_usd
            # Floats only to draw the bar; the text beside it is the Decimal.
            progress.update(
                bar,
                description=printable(f"run {run.id} {run.status}: {run.current_agent or '-'}"),
                total=float(limit) if limit is not None else None,
                completed=float(min(run.spent_usd, limit)) if limit is not None else 0,
                spend=spend_against_budget(run),
            )
            # Drawn now, not at the next tick: a quick run would otherwise end before its bar is seen.
            progress.refresh()
    return run


def waiting_request(client: BudgetsvcClient, run: Run) -> Event | None:
    """What a waiting run waits for: its latest `input_requested` event."""
    if run.status != "waiting_for_input":
        return None
    requests = [event for event in client.events(run.id) if event.type == "input_requested"]
    return requests[-1] if requests else None


def tell_at_rest(client: BudgetsvcClient, display: Display, run: Run, *, with_prompt: bool = False) -> int:
    """The run at rest (or --json's run), told; its exit code. `with_prompt` shows a waiting run's
    question too, which a follower showed as it came."""
    if display.as_json:
        display.json(run.raw)
        return exit_of_status(run.status)
    request = waiting_request(client, run)
    if with_prompt and request is not None and (line := event_line(request)):
        display.line(*line)
    display.lines(at_rest_lines(run, request=request))
    if run.status not in EXIT_OF_STATUS:
        display.line(f"  status {run.status} is not one this command knows: a newer budgetsvc command knows it", "yellow")
    return exit_of_status(run.status)


def follow_and_tell(client: BudgetsvcClient, display: Display, run: Run, args: argparse.Namespace, *, after: int = 0) -> int:
    try:
        run = follow_run(client, display, run, after=after, max_wait=args.max_wait)
    except StillGoing as still:
        if display.as_json:
            display.json(still.run.raw)
        display.line(
            f"run {still.run.id} is still {still.run.status} after {args.max_wait:g}s: it goes on "
            f"(budgetsvc status {still.run.id}, budgetsvc cancel {still.run.id})",
            "yellow",
        )
        return Exit.STILL_GOING
    return tell_at_rest(client, display, run)


def _last_event_id(client: BudgetsvcClient, run_id: int) -> int:
    """The id of the run's last event so far: a follower after an answer or a resume shows what comes next."""
    events = client.events(run_id)
    return events[-1].id if events else 0


def _accepted(display: Display, run: Run) -> int:
    """What a command that does not follow shows once its request was accepted."""
    if display.as_json:
        display.json(run.raw)
    return Exit.COMPLETED


def cmd_run(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    path = Path(args.workflow)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the workflow {path}: {getattr(error, 'strerror', None) or error}") from None
    # Everything the command line says is checked before anything is uploaded.
    inputs = parse_inputs(args.input, input_file=args.input_file)
    version = client.upload_workflow(source, name=args.name)
    display.line(f"workflow {version.name} v{version.version} ({'uploaded' if version.created else 'unchanged'})")
    run = client.start_run(
        version.id,
        version=version.version,
        inputs=inputs,
        budget_usd=args.budget,
        budget_mode=args.mode,
        max_iterations=args.max_iterations,
        timeout_seconds=args.timeout_seconds,
    )
    display.line(f"run {run.id} {run.status}: spent {spend_against_budget(run)}")
    if args.no_follow:
        return _accepted(display, run)
    return follow_and_tell(client, display, run, args)


def cmd_resume(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    last_event = _last_event_id(client, args.run) if args.follow else 0
    run = client.resume(
        args.run,
        reason=args.reason,
        budget_usd=args.budget,
        budget_mode=args.mode,
        max_iterations=args.max_iterations,
        timeout_seconds=args.timeout_seconds,
    )
    display.line(f"run {run.id} resumed: spent {spend_against_budget(run)}")
    if not args.follow:
        return _accepted(display, run)
    return follow_and_tell(client, display, run, args, after=last_event)


def cmd_answer(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    given = answers(args.answer)
    last_event = _last_event_id(client, args.run) if args.follow else 0
    run = client.answer(
        args.run, choice=args.choice, text=args.text, answers=given, abort=args.abort or None, decline=args.decline or None
    )
    display.line(f"run {run.id} answered: {run.status}")
    if not args.follow:
        return _accepted(display, run)
    return follow_and_tell(client, display, run, args, after=last_event)


def cmd_cancel(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    run = client.cancel(args.run, reason=args.reason)
    if display.as_json:
        display.json(run.raw)
    display.line(f"run {run.id} {run.status}: spent {spend_against_budget(run)}")
    return Exit.COMPLETED


def cmd_status(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    run = client.get_run(args.run)
    started = f"run {run.id}: {run.workflow_name} v{run.workflow_version}, {run.iterations} step(s), started {run.created_at}"
    display.line(started)
    if run.resting:
        return tell_at_rest(client, display, run, with_prompt=True)
    if display.as_json:
        display.json(run.raw)
    display.line(f"run {run.id} {run.status} at {run.current_agent or '-'}: spent {spend_against_budget(run)}")
    return Exit.STILL_GOING


def cmd_runs(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    runs = client.list_runs(status=args.status, workflow=args.workflow, limit=args.limit)
    if display.as_json:
        display.json([run.raw for run in runs])
        return Exit.COMPLETED
    table = Table("run", "workflow", "status", "spent", "budget", "mode", "agent", "created", box=box.SIMPLE_HEAD)
    for run in runs:
        budget = usd_exact(run.limits.budget_usd) if run.limits.budget_usd is not None else "none"
        workflow = f"{run.workflow_name} v{run.workflow_version}"
        created = run.created_at[:19].replace("T", " ")
        table.add_row(
            *cells(run.id, workflow, run.status, usd_exact(run.spent_usd), budget, run.limits.budget_mode, run.current_agent, created)
        )
    display.table(table)
    return Exit.COMPLETED


def cmd_spend(client: BudgetsvcClient, display: Display, args: argparse.Namespace) -> int:
    query = {"group_by": args.group_by, "since": args.since, "until": args.until}
    if args.csv:
        sys.stdout.write(client.spend_csv(**query))
        return Exit.COMPLETED
    report = client.spend(**query)
    if display.as_json:
        display.json(report.raw)
        return Exit.COMPLETED
    headers = ("spent", "estimated", "runs", "steps", "input tokens", "output tokens", "unpriced steps")
    table = Table(printable(args.group_by), *headers, box=box.SIMPLE_HEAD)
    for row in report.groups:
        tokens = (f"{row.input_tokens:,}", f"{row.output_tokens:,}")
        table.add_row(
            *cells(row.key or "-", usd_exact(row.spent_usd), usd_exact(row.estimated_usd), row.runs, row.steps, *tokens, row.unpriced_steps)
        )
    display.table(table)
    summary = [Line(f"total {usd(report.total_usd)} from {args.since or 'the start'} to {args.until or 'today'} (UTC days)")]
    if report.estimated_usd:
        summary.append(Line(f"  of which {usd(report.estimated_usd)} estimated, awaiting usage"))
    if report.unpriced_steps:
        summary.append(Line(f"  and {report.unpriced_steps} step(s) of unknown cost (no price)"))
    display.lines(summary)
    return Exit.COMPLETED
