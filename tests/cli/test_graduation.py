"""The conductor graduation path, no budget -> audit -> enforce -> resume, run entirely from the `budgetsvc`
command against the live service and a real worker (examples/research-pipeline.yaml: $0.30 a step)."""

import json

import pytest

from tests.cli.conftest import EXAMPLE
from tests.invariants import assert_invariants
from workflows.models import Event, EventType, Run, WorkflowVersion

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def budget_exceeded_events(run_id: int) -> list[dict]:
    return [e.payload for e in Event.objects.filter(run_id=run_id, type=EventType.BUDGET_EXCEEDED).order_by("pk")]


def test_the_graduation_path_from_no_budget_to_audit_to_enforce_to_resume(cli):
    # No budget: the run completes at $0.90, each step shown as it finishes.
    unbudgeted = cli("run", str(EXAMPLE), "--input", "topic=tides")
    assert unbudgeted.code == 0, unbudgeted.err
    assert "workflow research-pipeline v1 (uploaded)" in unbudgeted.out
    for sequence, agent in enumerate(("researcher", "writer", "reviewer"), start=1):
        assert f"✓ step {sequence} {agent}  $0.300000" in unbudgeted.out
    assert "completed: spent $0.90 (no budget)" in unbudgeted.out
    assert '"draft": "a draft"' in unbudgeted.out
    first = Run.objects.get()
    assert (first.status, str(first.spent_usd)) == ("completed", "0.900000")

    # Audit at $0.50: the same unchanged file is not uploaded again; the run completes, and reports where
    # enforce would have stopped.
    audited = cli("run", str(EXAMPLE), "--input", "topic=tides", "--budget", "0.50", "--mode", "audit")
    assert audited.code == 0, audited.err
    assert "workflow research-pipeline v1 (unchanged)" in audited.out
    assert WorkflowVersion.objects.count() == 1
    assert "would have stopped before writer (projected $0.600000, audit)" in audited.out
    assert "completed: spent $0.90 of $0.50 (audit)" in audited.out
    audit_run = Run.objects.latest("pk")
    assert str(audit_run.spent_usd) == "0.900000"
    assert [(p["budget_mode"], p["current_agent"]) for p in budget_exceeded_events(audit_run.pk)] == [("audit", "writer")]

    # Enforce at $0.50: stopped after the first step, with its own exit code; --json prints the run alone.
    enforced = cli("run", str(EXAMPLE), "--input", "topic=tides", "--budget", "0.50", "--mode", "enforce", "--json")
    assert enforced.code == 3, enforced.err
    stopped = json.loads(enforced.out)
    assert stopped["status"] == "budget_exceeded"
    assert stopped["spent_usd"] == "0.300000"
    assert stopped["error"]["current_agent"] == "writer"

    # Resume with a raise and a reason, followed to the end: $0.90 in all, the first step not run again.
    resumed = cli("resume", str(stopped["id"]), "--budget", "1.00", "--reason", "approved by finance", "--follow")
    assert resumed.code == 0, resumed.err
    assert "✓ step 1 researcher" not in resumed.out
    assert "✓ step 2 writer  $0.300000  (run at $0.600000)" in resumed.out
    assert "completed: spent $0.90 of $1.00 (enforce)" in resumed.out
    run = Run.objects.get(pk=stopped["id"])
    assert (run.status, str(run.spent_usd)) == ("completed", "0.900000")
    resume_event = Event.objects.get(run=run, type=EventType.RUN_RESUMED)
    assert resume_event.payload["reason"] == "approved by finance"
    assert resume_event.payload["new_limits"]["budget_usd"] == "1.000000"
    for each in Run.objects.all():
        assert_invariants(each)

    # The status of a run at rest exits as `run` did.
    assert cli("status", str(run.pk)).code == 0
    assert cli("status", str(audit_run.pk), "--json").code == 0
