"""tools/conductor_report.py, run as a user runs it, on the workflows in tests/conductor/report/."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(__file__).resolve().parent / "report"


def report(*args: str) -> str:
    # A variable the refused workflow reads with ${NOTES_MODEL:-...}: the report must not see it.
    env = {**os.environ, "NOTES_MODEL": "model-from-the-environment"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "conductor_report.py"), str(FOLDER), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_with_every_runtime_routed_it_counts_the_uploads_and_names_every_reason():
    found = json.loads(report("--json"))

    assert (found["files"], found["workflows"]) == (9, 8)
    assert found["skipped"] == {"labels.yaml": "no top-level 'workflow:' key"}
    # briefing.yaml runs summary.yaml as a sub-workflow, which the report uploads first under its file's name.
    assert found["uploads"] == ["nested/briefing.yaml", "nested/code_review.yaml", "summary.yaml", "translate.yaml"]
    refused = {path: {(p["path"], p["kind"]) for p in problems} for path, problems in found["refused"].items()}
    release_notes = {
        ("agents[0].type", "script steps not allowed for the team"),
        ("agents[1].tools", "tools the top level does not list"),
        ("workflow.runtime.mcp_servers.tracker.command", "stdio MCP servers not allowed for the team"),
        ("workflow.runtime.skills", "skills"),
        ("workflow.runtime.default_model", "${VAR} interpolation"),
    }
    assert refused == {
        # Its agent's session_key is accepted: only the workspace instructions refuse it.
        "handover.yaml": {("workflow.instructions", "instructions")},
        "include.yaml": {("agents[0].prompt", "!file include")},
        "nested/release_notes.yml": release_notes,
        # A refused sub-workflow refuses its caller, with its problems at the caller's step.
        "nested/weekly.yaml": {(f"agents[0](./release_notes.yml).{path}", kind) for path, kind in release_notes},
    }
    messages = {p["path"]: p["message"] for p in found["refused"]["nested/release_notes.yml"]}
    assert "'may run scripts'" in messages["agents[0].type"]
    assert messages["workflow.runtime.skills"].startswith("'skills' is not supported: skills are files a coding-agent")
    assert "its default here is 'gpt-4o'" in messages["workflow.runtime.default_model"]
    assert "model-from-the-environment" not in json.dumps(found)
    assert {row["kind"]: (row["files"], row["problems"]) for row in found["by_kind"]} == {
        **{kind: (1, 1) for kind in ("instructions", "!file include")},
        **{
            kind: (2, 2)
            for kind in (
                "script steps not allowed for the team",
                "tools the top level does not list",
                "stdio MCP servers not allowed for the team",
                "skills",
                "${VAR} interpolation",
            )
        },
    }


def test_a_runtime_the_team_has_not_routed_refuses_the_workflows_that_use_it():
    text = report("--routes", "copilot=openai")

    assert text.splitlines()[:2] == [
        f"{FOLDER}: 9 files, 8 conductor workflows, 1 skipped",
        "2 of 8 upload; 6 are refused.",
    ]
    assert (
        "  nested/code_review.yaml (1 problem)\n"
        "    workflow.runtime.provider: provider 'claude-agent-sdk' is not routed to a backend: map it to one of "
        "anthropic, openai with PUT /api/v1/team/provider-routes, or on the team's page in the admin\n"
    ) in text
    assert "    workflow.runtime.provider.name: provider 'hermes' is not routed" in text
    assert "    2    2  unrouted provider" in text.splitlines()


def test_with_scripts_allowed_a_script_step_and_a_stdio_server_are_no_longer_reasons():
    found = json.loads(report("--json", "--scripts"))

    paths = {p["path"] for p in found["refused"]["nested/release_notes.yml"]}
    assert "agents[0].type" not in paths and "workflow.runtime.mcp_servers.tracker.command" not in paths
    assert "agents[1].tools" in paths
