"""The healthcheck of docker/compose.yml's worker containers: a ping over the broker, by the worker's name."""

import subprocess
import sys

import pytest
from django.conf import settings

from tests.integration.conftest import service_env, wait_for_ready

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_worker_healthcheck_answers_for_a_live_worker_by_its_name_only(celery_process, tmp_path):
    worker = celery_process("worker", "--hostname", "celery@compose-worker", "--pool", "solo")
    wait_for_ready(worker)

    def ping(name: str) -> int:
        command = [sys.executable, "-m", "celery", "-A", "budgetsvc", "inspect", "ping", "--destination", name, "--timeout", "5"]
        return subprocess.run(command, cwd=settings.BASE_DIR, env=service_env(tmp_path), capture_output=True, timeout=120).returncode

    assert ping("celery@compose-worker") == 0
    assert ping("celery@no-such-worker") != 0
