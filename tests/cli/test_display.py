"""What the command shows of runs and events: no service needed."""

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from budgetsvc_client.cli.display import at_rest_lines, event_line, json_text, printable, request_lines, usd, usd_exact
from budgetsvc_client.cli.exits import EXIT_CODES, Exit, exit_of_status
from budgetsvc_client.client import Event, Run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def a_run(status: str = "running", **changes) -> Run:
    data = {
        "id": 3,
        "workflow": 1,
        "workflow_name": "wf",
        "workflow_version": 1,
        "status": status,
        "inputs": {},
        "limits": {"budget_usd": "5.000000", "budget_mode": "enforce", "max_iterations": 10, "timeout_seconds": None},
        "spent_usd": "0.100000",
        "estimated_usd": "0.000000",
        "reserved_usd": "0.000000",
        "unpriced_steps": 0,
        "current_agent": "writer",
        "iterations": 1,
        "output": None,
        "error": None,
        "created_at": "2026-12-07T00:00:00Z",
        "finished_at": None,
    }
    return Run.from_json({**data, **changes})


def an_event(type: str, **payload) -> Event:
    return Event.from_json({"id": 10, "type": type, "payload": payload, "actor": "system", "created_at": ""})


def texts(lines) -> str:
    return "\n".join(line.text for line in lines)


HOSTILE = "Publish?\x1b[2J\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\ \x9b31m \u202egnp.exe\r"


def test_no_control_character_from_the_api_reaches_the_terminal():
    shown = printable(HOSTILE)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", shown)
    assert shown.startswith("Publish?\\x1b[2J\\x1b]8;;https://evil.example/")
    assert printable("two\nlines\tand a tab") == "two\nlines\tand a tab"
    # --json stays JSON, with every control escaped.
    assert json.loads(json_text({"prompt": HOSTILE})) == {"prompt": HOSTILE}
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e]", json_text({"prompt": HOSTILE}).replace("\n", ""))


def test_the_display_writes_every_api_string_through_the_sanitiser(capsys):
    from budgetsvc_client.cli.display import Display

    display = Display(as_json=False)
    display.line(event_line(an_event("run_cancelled", by="api_key:bsk_x", reason="\x1b[8mhidden")).text)
    display.error("\x1b]0;owned\x07", ["path: \x1b[2J"])
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err
    assert "cancelled by api_key:bsk_x: \\x1b[8mhidden" in out


def test_a_gates_options_are_shown_with_what_needs_text():
    request = an_event(
        "input_requested",
        agent="approval",
        prompt="Publish the draft?",
        options=[
            {"label": "Publish", "value": "approve", "route": "publish", "prompt_for": "A note for the editor"},
            {"label": "Drop it", "value": "reject", "route": "$end"},
        ],
    )
    shown = texts(at_rest_lines(a_run("waiting_for_input", current_agent="approval"), request=request))
    assert "answer: budgetsvc answer 3 CHOICE, where CHOICE is one of:" in shown
    assert "    approve  Publish  (with --text: A note for the editor)" in shown
    assert "    reject  Drop it" in shown


def test_questions_are_shown_by_id_and_a_dialog_with_its_reply():
    questions = an_event(
        "input_requested",
        agent="intake",
        prompt="A few questions",
        questions=[{"id": "region", "text": "Which region?", "choices": ["eu-west", "us-east"]}, {"id": "q2", "text": "Why?"}],
        allow_skip=False,
        allow_abort=True,
    )
    shown = texts(request_lines(3, questions))
    assert "answer: budgetsvc answer 3 --answer ID=TEXT for each question:" in shown
    assert "    region  Which region?  (one of: eu-west, us-east)" in shown
    assert "    q2  Why?" in shown
    assert "or: budgetsvc answer 3 --abort" in shown

    dialog = an_event("input_requested", agent="writer", dialog=True, prompt="Which blender?", reason="", output={})
    assert texts(request_lines(3, dialog)) == '  answer: budgetsvc answer 3 --text "REPLY", or budgetsvc answer 3 --decline'


def test_a_stop_by_the_teams_period_budget_is_not_told_as_the_runs_own():
    error = {
        "type": "BudgetExceededError",
        "scope": "team",
        "message": "The next step would bring the team's week to $10.300000, over its budget of $10.000000.",
        "budget_usd": "10.000000",
        "spent_usd": "9.900000",
        "current_agent": "writer",
    }
    shown = texts(at_rest_lines(a_run("budget_exceeded", error=error)))
    assert shown.splitlines()[0] == (
        "run 3 budget_exceeded: stopped by the team's period budget ($9.90 of $10.00 spent); "
        "the run itself spent $0.10 of $5.00 (enforce)"
    )
    assert "--budget AMOUNT" not in shown
    assert "until its period resets or an operator raises it" in shown

    own = texts(at_rest_lines(a_run("budget_exceeded", error={**error, "scope": "run"})))
    assert 'next: budgetsvc resume 3 --budget AMOUNT --reason "..."' in own


def test_a_cancelled_run_with_a_step_still_held_says_it_may_still_be_charged():
    shown = texts(at_rest_lines(a_run("cancelled", reserved_usd="0.300000")))
    assert "may still be charged: $0.300000 is held for it" in shown
    assert "may still be charged" not in texts(at_rest_lines(a_run("cancelled")))


def test_money_shows_its_sign_before_the_dollar_and_a_tiny_amount_exactly():
    assert usd(Decimal("-0.28")) == "-$0.28"
    assert usd_exact(Decimal("-0.28")) == "-$0.280000"
    assert usd(Decimal("1234.5")) == "$1,234.50"
    assert usd(Decimal("0.001")) == "$0.001000"  # not "$0.00" for a budget that is not zero
    assert usd(Decimal("0")) == "$0.00"


def test_a_status_this_command_does_not_know_is_neither_success_nor_a_crash():
    run = a_run("paused_for_review")
    assert run.resting  # a follower stops, rather than waiting for a status it cannot tell
    assert exit_of_status(run.status) == Exit.UNEXPECTED_ANSWER
    assert texts(at_rest_lines(run)).startswith("run 3 paused_for_review: spent $0.10 of $5.00")


def test_the_docs_exit_code_table_is_the_commands():
    section = DOCS.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    documented = [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]
    assert documented == [(str(int(code)), of_runs, of_others) for code, of_runs, of_others in EXIT_CODES]


@pytest.mark.parametrize("code", list(Exit))
def test_every_exit_code_is_in_the_table(code):
    assert code in [row[0] for row in EXIT_CODES]
