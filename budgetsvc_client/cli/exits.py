"""The command's exit codes: one table, which --help prints and docs/cli.md shows (a test compares them)."""

from __future__ import annotations

from enum import IntEnum


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
    STILL_GOING = 9  # `status` of a queued or running run, or --max-wait passed while following
    UNEXPECTED_ANSWER = 10
    INTERNAL_ERROR = 11
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


def exit_of_status(status: str) -> Exit:
    """The exit code of a run in `status`; a status this command does not know (a newer service's) is
    an unexpected answer, never a success."""
    return EXIT_OF_STATUS.get(status, Exit.UNEXPECTED_ANSWER)


# (code, what it means for `run`, `resume --follow`, `answer --follow` and `status`, for the other commands)
EXIT_CODES: tuple[tuple[Exit, str, str], ...] = (
    (Exit.COMPLETED, "`completed`", "done"),
    (Exit.FAILED, "`failed`", ""),
    (
        Exit.USAGE,
        "usage error: a bad option or URL, a file that cannot be read, an `--input` that is not `NAME=VALUE`, "
        "a limit out of range",
        "the same",
    ),
    (Exit.BUDGET_EXCEEDED, "`budget_exceeded`: stopped by an enforce budget, the run's own or the team's period budget", ""),
    (Exit.OTHER_LIMIT, "`iteration_limit` or `timed_out`: stopped by another limit", ""),
    (Exit.WAITING_FOR_INPUT, "`waiting_for_input`: a person must answer", ""),
    (Exit.CANCELLED, "`cancelled`", ""),
    (Exit.API_ERROR, "the API refused a request: a bad API key, invalid input, a run in the wrong state", "the same"),
    (Exit.UNREACHABLE, "the service cannot be reached, or did not answer within `--timeout`", "the same"),
    (Exit.STILL_GOING, "the run is still `queued` or `running`: `status`, or `--max-wait` passed while following", ""),
    (
        Exit.UNEXPECTED_ANSWER,
        "the service answered what is not the API's: a redirect, a page that is not JSON, a status this command "
        "does not know",
        "the same",
    ),
    (Exit.INTERNAL_ERROR, "the command itself failed (a bug): `--debug` shows the traceback", "the same"),
    (Exit.INTERRUPTED, "interrupted (Ctrl-C) while following: the run itself goes on", ""),
)


def exit_codes_help() -> str:
    lines = ["exit codes (of `run`, `resume --follow`, `answer --follow` and `status`, by the run's status):"]
    for code, of_runs, of_others in EXIT_CODES:
        other = {"": "", "the same": " (any command)"}.get(of_others, f" (other commands: {of_others})")
        lines.append(f"{code:>3}  {of_runs.replace('`', '')}{other}")
    return "\n".join(lines)
