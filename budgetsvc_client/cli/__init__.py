"""`budgetsvc`: run workflows under a budget from a terminal or CI, as `conductor run` does locally.

Built on budgetsvc_client.client; see docs/cli.md. The command line is read here, the values checked in
parsing.py, the commands are in commands.py, what they show in display.py and their exit codes in exits.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from budgetsvc_client.cli.commands import (
    cmd_answer,
    cmd_cancel,
    cmd_resume,
    cmd_run,
    cmd_runs,
    cmd_spend,
    cmd_status,
)
from budgetsvc_client.cli.display import Display
from budgetsvc_client.cli.exits import Exit, exit_codes_help
from budgetsvc_client.cli.parsing import (
    MAX_ITERATIONS,
    MAX_TIMEOUT_SECONDS,
    UsageError,
    budget,
    conductor_input_flags,
    seconds,
    spend_date,
    whole_number,
)
from budgetsvc_client.client import (
    ALLOW_HTTP_VARIABLE,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_URL,
    RUNS_LIMIT,
    ApiError,
    BudgetsvcClient,
    ConnectionFailed,
    InvalidSettings,
    UnexpectedAnswer,
)

ENVIRONMENT_HELP = (
    f"environment: BUDGETSVC_URL (default {DEFAULT_URL}), BUDGETSVC_API_KEY, "
    f"{ALLOW_HTTP_VARIABLE}=1 (allow plain http to another machine)."
)

Handler = Callable[[BudgetsvcClient, Display, argparse.Namespace], int]


def parser() -> argparse.ArgumentParser:
    epilog = f"{exit_codes_help()}\n\n{ENVIRONMENT_HELP}\n"
    top = argparse.ArgumentParser(
        prog="budgetsvc",
        description="Run and govern budgetsvc workflow runs: start and follow runs, resume, answer, cancel, read spend.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--url", help=f"the service (default: $BUDGETSVC_URL, else {DEFAULT_URL})")
    top.add_argument("--api-key", help="a team API key (default: $BUDGETSVC_API_KEY; prefer the variable)")
    top.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    top.add_argument("--debug", action="store_true", help="show the traceback of a failure of the command itself")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print the result as JSON, and nothing else")
        return sub

    def limits(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--budget", type=budget, metavar="USD", help="budget in dollars, e.g. 0.50")
        sub.add_argument("--mode", choices=("audit", "enforce"), help="budget mode")
        sub.add_argument("--max-iterations", type=whole_number(MAX_ITERATIONS), metavar="N")
        sub.add_argument(
            "--timeout-seconds", type=whole_number(MAX_TIMEOUT_SECONDS), metavar="S", help="active run time limit"
        )

    def following(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--max-wait",
            type=seconds,
            metavar="DURATION",
            help="stop following after this long (30s, 5m, 2h): exit 9, the run goes on",
        )

    run = command("run", "Upload a workflow (a new version only if it changed), start a run and follow it.", cmd_run)
    run.add_argument("workflow", metavar="WORKFLOW.yaml")
    run.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input, repeatable; as conductor reads it: true/false, null, JSON [..] or {..}, numbers, else text",
    )
    run.add_argument("--input-file", type=Path, metavar="FILE.json", help="inputs as a JSON object (--input wins)")
    run.add_argument("--name", help="the workflow's name (default: the definition's workflow.name)")
    limits(run)
    run.add_argument("--no-follow", action="store_true", help="start the run and return at once")
    following(run)

    resume = command("resume", "Resume a stopped run, with new limits.", cmd_resume)
    resume.add_argument("run", type=int, metavar="RUN")
    limits(resume)
    resume.add_argument("--reason", required=True, help="why, recorded in the run's run_resumed event")
    resume.add_argument("--follow", action="store_true", help="follow the run until it rests")
    following(resume)

    answer = command("answer", "Answer the human gate, questions or dialog a waiting run waits at.", cmd_answer)
    answer.add_argument("run", type=int, metavar="RUN")
    answer.add_argument("choice", nargs="?", metavar="CHOICE", help="a human gate's option (its value)")
    answer.add_argument("--text", help="the text an option's prompt_for asks for, or a dialog's reply")
    answer.add_argument("--answer", action="append", default=[], metavar="ID=TEXT", help="a question's answer, repeatable")
    answer.add_argument("--abort", action="store_true", help="abort the questions (where the step allows it)")
    answer.add_argument("--decline", action="store_true", help="decline a dialog's question")
    answer.add_argument("--follow", action="store_true", help="follow the run until it rests")
    following(answer)

    cancel = command("cancel", "Cancel a run for good.", cmd_cancel)
    cancel.add_argument("run", type=int, metavar="RUN")
    cancel.add_argument("--reason", default="", help="why, recorded in the run_cancelled event")

    status = command("status", "Show a run; the exit code tells its status.", cmd_status)
    status.add_argument("run", type=int, metavar="RUN")

    runs = command("runs", "List the team's runs, newest first.", cmd_runs)
    runs.add_argument("--status", help="only runs in this status")
    runs.add_argument("--workflow", type=int, metavar="ID", help="only runs of this workflow id")
    runs.add_argument(
        "--limit", type=whole_number(), default=RUNS_LIMIT, metavar="N", help=f"at most N runs (default {RUNS_LIMIT})"
    )

    spend = command("spend", "The team's spend, grouped: a table, CSV or JSON.", cmd_spend)
    spend.add_argument("--group-by", default="workflow", help="workflow (default), model, agent, tool, run or day")
    spend.add_argument("--since", type=spend_date, help="from this UTC day: 7d, 24h, 2w, today or an ISO date")
    spend.add_argument("--until", type=spend_date, help="up to this UTC day, included; as --since")
    spend.add_argument("--csv", action="store_true", help="the API's CSV, as it comes")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(conductor_input_flags(sys.argv[1:] if argv is None else argv))
    display = Display(as_json=args.json)
    try:
        with BudgetsvcClient(args.url, args.api_key, timeout=args.timeout) as client:
            return int(args.handler(client, display, args))
    except (UsageError, InvalidSettings) as error:
        display.error(str(error))
        return Exit.USAGE
    except ApiError as error:
        details = _details(error.details)
        if error.status_code == 401:
            details.append("(set BUDGETSVC_API_KEY to a key of your team: manage.py create_api_key --team NAME)")
        display.error(error.message, details)
        return Exit.API_ERROR
    except ConnectionFailed as error:
        display.error(str(error))
        return Exit.UNREACHABLE
    except UnexpectedAnswer as error:
        display.error(str(error))
        return Exit.UNEXPECTED_ANSWER
    except KeyboardInterrupt:
        display.err.print("interrupted: a run already started goes on (budgetsvc status RUN, budgetsvc cancel RUN)")
        return Exit.INTERRUPTED
    except Exception as error:  # a bug of the command: said in a line, not as a traceback exiting 1 ("failed")
        if args.debug:
            traceback.print_exc()
        display.error(f"the command failed unexpectedly: {type(error).__name__}: {error} (--debug shows where)")
        return Exit.INTERNAL_ERROR


def _details(details: Any) -> list[str]:
    if isinstance(details, list):
        return [f"{item.get('path')}: {item.get('message')}" if isinstance(item, dict) else str(item) for item in details]
    if isinstance(details, dict):
        return [f"{key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in details.items()]
    return []
