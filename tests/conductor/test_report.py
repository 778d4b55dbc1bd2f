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

    assert (found["files"], found["workflows"]) == (10, 9)
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
        # It names its endpoint, and the team has no credentials pointing there.
        "local_answer.yaml": {("workflow.runtime.provider.base_url", "endpoint the team's credentials do not point at")},
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
        **{kind: (1, 1) for kind in ("instructions", "!file include", "endpoint the team's credentials do not point at")},
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
        f"{FOLDER}: 10 files, 9 conductor workflows, 1 skipped",
        "2 of 9 upload; 7 are refused.",
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


def test_with_credentials_pointing_at_its_endpoint_a_workflow_that_names_it_uploads():
    found = json.loads(report("--json", "--base-urls", "openai=http://LOCALHOST:11434/v1/"))

    assert "local_answer.yaml" in found["uploads"] and "local_answer.yaml" not in found["refused"]

    elsewhere = json.loads(report("--json", "--base-urls", "openai=https://gateway.example/v1"))
    [problem] = elsewhere["refused"]["local_answer.yaml"]
    assert problem["path"] == "workflow.runtime.provider.base_url"
    assert "the base URL of the team's 'openai' credentials is 'https://gateway.example/v1'" in problem["message"]
    # Routed to anthropic, the openai credentials are not those of its calls, and its wire is not anthropic's.
    routed_away = json.loads(report("--json", "--routes", "copilot=anthropic", "--base-urls", "openai=http://localhost:11434/v1"))
    assert {p["path"] for p in routed_away["refused"]["local_answer.yaml"]} == {
        f"workflow.runtime.provider.{key}" for key in ("base_url", "type", "wire_api")
    }


def test_base_urls_name_backends_only():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "conductor_report.py"), str(FOLDER), "--base-urls", "copilot=http://localhost/v1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )

    assert done.returncode == 2
    assert "--base-urls: copilot is not a backend (anthropic, openai)" in done.stderr
