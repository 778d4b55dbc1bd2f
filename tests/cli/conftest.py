import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests.integration.conftest import celery_worker  # noqa: F401 (a fixture)
from workflows.services.teams import api_key_create

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "research-pipeline.yaml"


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """The `budgetsvc` command as a user runs it: a process of its own, its output not a terminal (as in CI),
    against the live web app, whose runs a real worker executes."""

    url: str
    key: str

    def __call__(self, *args: str, key: str | None = None, url: str | None = None, timeout: float = 90) -> Result:
        env = {**os.environ, "BUDGETSVC_URL": url or self.url, "BUDGETSVC_API_KEY": self.key if key is None else key}
        command = [sys.executable, "-m", "budgetsvc_client", *args]
        done = subprocess.run(command, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(live_server, celery_worker, team) -> Cli:  # noqa: F811 (celery_worker is the fixture imported)
    _, key = api_key_create(team=team, name="cli")
    return Cli(url=live_server.url, key=key)
