"""The client and the command are a package of their own, usable where the service is not installed."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_and_the_command_import_nothing_of_the_service():
    probe = (
        "import os, sys; import budgetsvc_client.client, budgetsvc_client.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'celery', 'budgetsvc', 'workflows'}), "
        "os.environ.get('DJANGO_SETTINGS_MODULE'))"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] None"


def test_the_budgetsvc_script_and_python_m_run_the_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["budgetsvc"] == "budgetsvc_client.cli:main"
    assert "budgetsvc_client" in project["tool"]["setuptools"]["packages"]["find"]["include"]

    shown = subprocess.run([sys.executable, "-m", "budgetsvc_client", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert shown.returncode == 0
    for line in ("  0  completed", "  3  budget_exceeded", "  5  waiting_for_input", "  7  the API refused", "  8  the service cannot"):
        assert line in shown.stdout
    assert "  9  the run is still queued or running: status, or --max-wait passed while following" in shown.stdout
