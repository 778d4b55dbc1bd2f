"""What the command line and the client make of what they are given: no service needed."""

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx2
import pytest

from budgetsvc_client.cli import parser
from budgetsvc_client.cli.exits import EXIT_OF_STATUS, Exit
from budgetsvc_client.cli import parsing
from budgetsvc_client.cli.parsing import UsageError, budget, conductor_input_flags, input_value, parse_inputs, spend_date
from budgetsvc_client.client import RESTING_STATUSES, RUN_STATUSES, ApiError, BudgetsvcClient, Run, workflow_name_of
from workflows.definition import bounds
from workflows.models import RunStatus


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("tides", "tides"),
        ("", ""),
        ("True", True),
        ("false", False),
        ("null", None),
        ("42", 42),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e3", "1e3"),  # conductor: a number without a `.` that is not an int stays text
        ("nan.", "nan."),  # JSON has no NaN
        ("[1, 2]", [1, 2]),
        ('{"a": "b"}', {"a": "b"}),
        ("[not json", "[not json"),
        ("a=b", "a=b"),
    ],
)
def test_an_input_value_is_read_as_conductor_reads_it(text, value):
    assert input_value(text) == value
    assert type(input_value(text)) is type(value)


def test_inputs_split_at_the_first_equals_sign_and_override_the_input_file(tmp_path):
    file = tmp_path / "inputs.json"
    file.write_text(json.dumps({"topic": "from the file", "depth": 2}))
    assert parse_inputs(["topic=a=b", " depth = 3 "], input_file=file) == {"topic": "a=b", "depth": 3}


@pytest.mark.parametrize("pair", ["topic", "=value", " =x"])
def test_an_input_without_a_name_and_a_value_is_a_usage_error(pair):
    with pytest.raises(UsageError, match="--input takes NAME=VALUE"):
        parse_inputs([pair])


@pytest.mark.parametrize(("content", "message"), [("[1]", "must hold a JSON object"), ("{", "is not JSON")])
def test_an_input_file_must_be_a_json_object(tmp_path, content, message):
    file = tmp_path / "inputs.json"
    file.write_text(content)
    with pytest.raises(UsageError, match=message):
        parse_inputs([], input_file=file)


def test_conductors_input_dot_name_spelling_is_read_too():
    read = conductor_input_flags(["run", "w.yaml", "--input.topic=a b", "--input.verbose", "--input.depth", "2"])
    assert read == ["run", "w.yaml", "--input", "topic=a b", "--input", "verbose=true", "--input", "depth=2"]
    args = parser().parse_args(conductor_input_flags(["run", "w.yaml", "--input.topic=tides", "-i", "n=1"]))
    assert parse_inputs(args.input) == {"topic": "tides", "n": 1}


NOW = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("7d", "2026-11-30"),
        ("24h", "2026-12-06"),
        ("1h", "2026-12-07"),
        ("2h", "2026-12-06"),  # the UTC day that moment falls in
        ("2w", "2026-11-23"),
        ("today", "2026-12-07"),
        ("2026-03-01", "2026-03-01"),
        ("2026-03-01T23:30:00-02:00", "2026-03-02"),  # its UTC date
        ("2026-03-01T10:00:00", "2026-03-01"),
    ],
)
def test_spend_dates_are_the_apis_utc_days(text, day):
    assert spend_date(text, now=NOW) == day


@pytest.mark.parametrize("text", ["7", "7 days", "last tuesday", "2026-13-01", "-1d"])
def test_a_spend_date_that_is_none_of_those_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        spend_date(text, now=NOW)


def test_a_budget_is_a_positive_decimal_of_dollars_as_strict_as_the_apis():
    assert budget("0.50") == Decimal("0.50")
    assert budget("$1") == Decimal("1")
    assert budget("0.000001") == Decimal("0.000001")
    assert budget("1000000000") == Decimal("1000000000")
    for text in ("0", "-1", "NaN", "Infinity", "lots", "1e9999", "0.0000001", "1000000001", "1_000"):
        with pytest.raises(argparse.ArgumentTypeError):
            budget(text)


def test_the_commands_bounds_are_the_apis():
    assert (parsing.MAX_BUDGET_USD, parsing.MAX_ITERATIONS, parsing.MAX_TIMEOUT_SECONDS) == (
        bounds.MAX_BUDGET_USD,
        bounds.MAX_ITERATIONS,
        bounds.MAX_TIMEOUT_SECONDS,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "w.yaml", "--max-iterations", "0"],
        ["run", "w.yaml", "--max-iterations", "501"],
        ["run", "w.yaml", "--timeout-seconds", "-5"],
        ["run", "w.yaml", "--max-wait", "0"],
        ["run", "w.yaml", "--max-wait", "soon"],
        ["runs", "--limit", "0"],
        ["--timeout", "-1", "runs"],
        ["--timeout", "nan", "runs"],
    ],
)
def test_a_limit_out_of_range_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2


def test_durations_read_as_seconds():
    assert [parsing.seconds(text) for text in ("30", "30s", "1.5m", "2h")] == [30, 30, 90, 7200]


@pytest.mark.parametrize("text", ["[NaN]", '{"n": Infinity}', "[1e999]", '{"a": [-Infinity]}'])
def test_json_the_api_cannot_be_sent_is_a_usage_error_not_text(text):
    with pytest.raises(UsageError, match="JSON has no|too large"):
        input_value(text)


def test_an_input_file_with_nan_is_a_usage_error(tmp_path):
    file = tmp_path / "inputs.json"
    file.write_text('{"threshold": NaN}')
    with pytest.raises(UsageError, match="is not JSON: JSON has no NaN"):
        parse_inputs([], input_file=file)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"])
def test_a_spend_time_whose_utc_day_is_out_of_range_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="outside the years"):
        spend_date(text, now=NOW)


def test_every_run_status_has_an_exit_code_and_the_resting_ones_are_told_apart():
    assert set(RUN_STATUSES) == set(RunStatus.values) == set(EXIT_OF_STATUS)
    resting = {EXIT_OF_STATUS[status] for status in RESTING_STATUSES}
    assert Exit.STILL_GOING not in resting
    told_apart = ("completed", "failed", "budget_exceeded", "waiting_for_input", "cancelled")
    assert {EXIT_OF_STATUS[status] for status in told_apart} == {0, 1, 3, 5, 6}


def test_the_api_error_carries_the_apis_one_shape():
    body = {
        "error": {
            "type": "validation_error",
            "message": "The limits are invalid.",
            "details": [{"path": "limits.budget_usd", "message": "must be greater than 0, not 0"}],
        }
    }
    error = ApiError.from_response(httpx2.Response(400, json=body))
    assert (error.status_code, error.type, error.message) == (400, "validation_error", "The limits are invalid.")
    assert error.details == body["error"]["details"]
    assert str(error) == "The limits are invalid. (400 validation_error)"


def test_an_error_not_in_the_apis_shape_is_still_an_api_error():
    error = ApiError.from_response(httpx2.Response(502, text="<html>Bad Gateway</html>\n<body>"))
    assert (error.status_code, error.type) == (502, "http_error")
    assert error.message == "HTTP 502: <html>Bad Gateway</html>"


def test_the_run_object_reads_money_as_decimals():
    run = Run.from_json(
        {
            "id": 3,
            "workflow": 1,
            "workflow_name": "research-pipeline",
            "workflow_version": 1,
            "status": "budget_exceeded",
            "inputs": {"topic": "tides"},
            "limits": {"budget_usd": "0.500000", "budget_mode": "enforce", "max_iterations": 10, "timeout_seconds": None},
            "spent_usd": "0.300000",
            "estimated_usd": "0.000000",
            "reserved_usd": "0.000000",
            "unpriced_steps": 0,
            "current_agent": "writer",
            "iterations": 1,
            "output": None,
            "error": {"type": "BudgetExceededError"},
            "created_at": "2026-11-28T17:51:11.541385Z",
            "finished_at": None,
            "a_field_added_later": 1,
        }
    )
    assert run.spent_usd == Decimal("0.300000") and run.limits.budget_usd == Decimal("0.5")
    assert run.resting
    assert run.raw["a_field_added_later"] == 1


def test_the_client_reads_its_url_and_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("BUDGETSVC_URL", "https://budgets.example:9000/")
    monkeypatch.setenv("BUDGETSVC_API_KEY", "bsk_test")
    with BudgetsvcClient() as client:
        assert client.url == "https://budgets.example:9000"
        assert client._http.headers["Authorization"] == "Bearer bsk_test"
    monkeypatch.delenv("BUDGETSVC_URL")
    with BudgetsvcClient(api_key="") as client:
        assert client.url == "http://127.0.0.1:8000"
        assert "Authorization" not in client._http.headers


def test_the_workflow_name_comes_from_the_definition():
    assert workflow_name_of("workflow:\n  name: research-pipeline\n") == "research-pipeline"
    assert workflow_name_of("agents: []") is None
    assert workflow_name_of("workflow: [unclosed") is None
    # Stripped, as the API stores it: an unchanged file with `name: "wf "` is found, not uploaded again.
    assert workflow_name_of('workflow:\n  name: " research-pipeline "\n') == "research-pipeline"
