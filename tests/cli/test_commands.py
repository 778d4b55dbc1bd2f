"""The `budgetsvc` commands and their exit codes, against the live service and a real worker."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings

from tests.cli.conftest import EXAMPLE, Cli
from tests.integration.test_make_run import free_port
from workflows.models import Event, EventType, Run, WorkflowVersion
from workflows.services.teams import api_key_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

GATED = """
workflow:
  name: gated-note
  entry_point: draft
  input: {topic: {type: string, required: true}}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 300}}}
agents:
  - name: draft
    prompt: "Draft a note on {{ workflow.input.topic }}."
    mock: {output: {text: v1}, output_tokens: 50}
    routes: [{to: approval}]
  - name: approval
    type: human_gate
    prompt: "Publish the draft '{{ draft.output.text }}'?"
    options:
      - {label: Publish, value: approve, route: publish}
      - {label: Drop it, value: reject, route: $end}
  - name: publish
    prompt: "Publish {{ draft.output.text }}."
    mock: {output: {url: "https://example.com/n"}, output_tokens: 50}
output:
  decision: "{{ approval.output.selected }}"
"""

# The only route wants an approval the mock never gives: the run fails with a RouteError.
UNROUTED = """
workflow:
  name: unrouted
  entry_point: judge
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 300}}}
agents:
  - name: judge
    prompt: "Judge."
    output: {ok: {type: boolean}}
    mock: {output: {ok: false}, output_tokens: 10}
    routes: [{to: $end, when: "{{ judge.output.ok }}"}]
"""


@pytest.fixture
def gated(tmp_path):
    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    return str(path)


def test_a_waiting_run_exits_5_and_is_answered_from_the_command_line(cli: Cli, gated):
    waiting = cli("run", gated, "--input", "topic=caps")
    assert waiting.code == 5, waiting.err
    assert "? approval waits for a person: Publish the draft 'v1'?" in waiting.out
    run = Run.objects.get()
    assert f"answer: budgetsvc answer {run.pk} CHOICE, where CHOICE is one of:\n    approve  Publish\n    reject  Drop it" in waiting.out
    status = cli("status", str(run.pk))
    assert status.code == 5
    assert "? approval waits for a person: Publish the draft 'v1'?" in status.out
    assert "    approve  Publish" in status.out

    wrong = cli("answer", str(run.pk), "maybe")
    assert wrong.code == 7
    assert "choice" in wrong.err

    answered = cli("answer", str(run.pk), "approve", "--follow")
    assert answered.code == 0, answered.err
    assert "✓ step 3 publish" in answered.out
    assert '"decision": "approve"' in answered.out
    received = Event.objects.get(run=run, type=EventType.INPUT_RECEIVED)
    assert received.payload["selected"] == "approve"


def test_a_cancelled_run_exits_6_and_cannot_be_cancelled_twice(cli: Cli, gated):
    started = cli("run", gated, "--input", "topic=caps", "--no-follow", "--json")
    assert started.code == 0, started.err
    run_id = json.loads(started.out)["id"]
    going = cli("status", str(run_id))
    assert going.code in (9, 5), going.err  # still going, or waiting at the gate already

    cancelled = cli("cancel", str(run_id), "--reason", "not needed")
    assert cancelled.code == 0, cancelled.err
    assert f"run {run_id} cancelled" in cancelled.out
    assert cli("status", str(run_id)).code == 6
    again = cli("cancel", str(run_id))
    assert again.code == 7
    assert "Cannot cancel a run that is in 'cancelled' status." in again.err
    assert Event.objects.get(run_id=run_id, type=EventType.RUN_CANCELLED).payload["reason"] == "not needed"


def test_a_failed_run_exits_1_and_an_iteration_limit_4(cli: Cli, tmp_path):
    unrouted = tmp_path / "unrouted.yaml"
    unrouted.write_text(UNROUTED)
    failed = cli("run", str(unrouted))
    assert failed.code == 1, failed.out + failed.err
    assert "RouteError" in failed.out

    limited = cli("run", str(EXAMPLE), "--input.topic=tides", "--max-iterations", "2")
    assert limited.code == 4, limited.out + limited.err
    assert "iteration_limit: spent $0.60" in limited.out


def test_runs_lists_the_teams_runs_and_spend_writes_the_apis_csv(cli: Cli):
    assert cli("run", str(EXAMPLE), "-i", "topic=tides").code == 0
    stopped = cli("run", str(EXAMPLE), "-i", "topic=tides", "--budget", "0.5", "--mode", "enforce", "--json")
    assert stopped.code == 3

    listed = cli("runs", "--json")
    assert [(r["status"], r["spent_usd"]) for r in json.loads(listed.out)] == [
        ("budget_exceeded", "0.300000"),
        ("completed", "0.900000"),
    ]
    only = cli("runs", "--status", "completed", "--limit", "5")
    assert only.code == 0
    assert "completed" in only.out and "budget_exceeded" not in only.out
    assert "$0.900000" in only.out
    assert cli("runs", "--status", "done").code == 7

    spend = cli("spend", "--group-by", "agent", "--since", "7d", "--csv")
    assert spend.code == 0, spend.err
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(spend.out))}
    assert {key: row["spent_usd"] for key, row in rows.items()} == {
        "researcher": "0.600000",
        "writer": "0.300000",
        "reviewer": "0.300000",
    }
    table = cli("spend", "--group-by", "model", "--since", "24h", "--until", "today")
    assert table.code == 0, table.err
    assert "sim-model" in table.out and "$1.200000" in table.out
    assert "total $1.20" in table.out
    refused = cli("spend", "--group-by", "colour")
    assert refused.code == 7
    assert "Unknown group_by 'colour'." in refused.err
    assert "group_by: one of" in refused.err


def test_a_bad_key_says_so_and_exits_7(cli: Cli):
    refused = cli("runs", key="bsk_not-a-key")
    assert refused.code == 7
    assert refused.out == ""
    assert "budgetsvc: error: The API key is unknown or revoked." in refused.err
    assert "BUDGETSVC_API_KEY" in refused.err
    assert cli("runs", key="").code == 7


def test_an_unreachable_service_exits_8(cli: Cli):
    unreachable = cli("status", "1", url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.code == 8
    assert "Cannot reach budgetsvc at http://127.0.0.1:" in unreachable.err


def test_usage_errors_exit_2_and_upload_and_start_nothing(cli: Cli, tmp_path):
    assert cli("run", str(tmp_path / "missing.yaml")).code == 2
    no_value = cli("run", str(EXAMPLE), "--input", "topic")
    assert no_value.code == 2
    assert "--input takes NAME=VALUE, not 'topic'" in no_value.err
    assert cli("run", str(EXAMPLE), "--budget", "0").code == 2
    assert cli("run", str(EXAMPLE), "--budget", "0.0000001").code == 2
    assert cli("run", str(EXAMPLE), "--max-iterations", "0").code == 2
    not_json = cli("run", str(EXAMPLE), "--input", "topic=tides", "--input", "weights=[NaN]")
    assert not_json.code == 2
    assert "JSON has no NaN" in not_json.err
    assert cli("spend", "--since", "last tuesday").code == 2
    assert cli("spend", "--since", "0001-01-01T00:00:00+01:00").code == 2
    assert cli("resume", "1", "--budget", "1").code == 2  # --reason is required
    with_password = cli("status", "1", url=cli.url.replace("http://", "http://ci:s3cr3t@"))
    assert with_password.code == 2 and "s3cr3t" not in with_password.err
    assert Run.objects.count() == 0
    assert WorkflowVersion.objects.count() == 0


def test_a_name_with_surrounding_spaces_is_uploaded_once(cli: Cli, tmp_path):
    spaced = tmp_path / "spaced.yaml"
    spaced.write_text(EXAMPLE.read_text().replace("name: research-pipeline", 'name: " research-pipeline "'))
    first = cli("run", str(spaced), "-i", "topic=tides", "--no-follow")
    again = cli("run", str(spaced), "-i", "topic=tides", "--no-follow")
    assert (first.code, again.code) == (0, 0), first.err + again.err
    assert "workflow research-pipeline v1 (unchanged)" in again.out
    assert WorkflowVersion.objects.count() == 1


def test_status_exits_9_while_a_run_is_still_queued(live_server, team):
    # No worker here: the run stays queued.
    _, key = api_key_create(team=team, name="cli")
    queued_cli = Cli(url=live_server.url, key=key)
    started = queued_cli("run", str(EXAMPLE), "-i", "topic=tides", "--no-follow")
    assert started.code == 0, started.err
    run = Run.objects.get()
    status = queued_cli("status", str(run.pk))
    assert status.code == 9
    assert f"run {run.pk} queued at researcher: spent $0.00 (no budget)" in status.out


def test_following_stops_at_max_wait_with_exit_9_and_the_run_goes_on(live_server, team):
    # No worker here: the run stays queued.
    _, key = api_key_create(team=team, name="cli")
    started = Cli(url=live_server.url, key=key)("run", str(EXAMPLE), "-i", "topic=tides", "--max-wait", "2s")
    run = Run.objects.get()
    assert started.code == 9, started.err
    assert f"run {run.pk} is still queued after 2s: it goes on (budgetsvc status {run.pk}" in started.out
    assert run.status == "queued"


def test_on_a_terminal_the_run_is_followed_with_a_live_progress_bar(cli: Cli):
    """The live display, as a person at a terminal sees it: the command's output is a pseudo-terminal."""
    primary, secondary = os.openpty()
    env = {**os.environ, "BUDGETSVC_URL": cli.url, "BUDGETSVC_API_KEY": cli.key, "TERM": "xterm", "COLUMNS": "120"}
    args = ["run", str(EXAMPLE), "-i", "topic=tides", "--budget", "0.50", "--mode", "audit"]
    command = subprocess.Popen(
        [sys.executable, "-m", "budgetsvc_client", *args],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the command closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert command.wait(timeout=120) == 0
    text = shown.decode()
    assert "\x1b[" in text  # styled for a terminal, not the plain lines of a log
    # The bar, its run's status and agent (queued, running or done by then), and its spend beside it.
    assert re.search(r"run \d+ \w+: \w+ .*━.* \$0\.\d\d of \$0\.50 \(audit\)", text)
    assert "✓ step 3 reviewer  $0.300000  (run at $0.900000)" in text
    assert "completed: spent $0.90 of $0.50 (audit)" in text
    assert "Traceback" not in text
