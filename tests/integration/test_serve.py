"""`manage.py serve` heals: a child killed with SIGKILL is started again and the service works on, and
SIGTERM to serve stops every child."""

import os
import re
import signal
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import wait_for_run, wait_until
from tests.factories import workflow_version
from tests.integration.conftest import kill_process_group, service_env
from tests.webhook_receiver import receiving
from tests.integration.test_make_run import answers, free_port, group_alive
from workflows.models import WebhookDelivery
from workflows.services.runs import run_start
from workflows.services.teams import team_budgets_update

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Serve:
    """`manage.py serve` in a session of its own, logging to a file the test reads."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.log_path = tmp_path / "serve.log"
        self.log = self.log_path.open("w")
        env = {
            **service_env(tmp_path / "var"),
            "PORT": str(self.port),
            # The webhook receiver listens on loopback.
            "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=settings.BASE_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def answers(self) -> bool:
        return answers(f"http://127.0.0.1:{self.port}/api/v1/runs")

    def pids(self, name: str) -> list[int]:
        """The pids the supervisor has started `name` with, in order."""
        return [int(pid) for pid in re.findall(rf"Started {name} \(pid (\d+)\)", self.log_path.read_text())]

    def restarted(self, name: str, *, killed: int) -> int:
        """Wait for `name` to be started again after `killed`; its new pid."""
        wait_until(lambda: self.pids(name)[-1] != killed, timeout=60, message=f"{name} to be started again")
        return self.pids(name)[-1]

    def close(self) -> None:
        kill_process_group(self.process)
        self.log.close()
        print(self.log_path.read_text()[-5000:])  # pytest shows it when the test failed


@pytest.fixture
def serve(transactional_db, tmp_path):
    service = Serve(tmp_path)
    try:
        wait_until(service.answers, timeout=120, message="serve to answer")
        yield service
    finally:
        service.close()


@pytest.fixture
def receiver():
    with receiving(204) as server:
        yield server


def test_a_killed_child_is_restarted_and_sigterm_stops_them_all(serve, team, receiver):
    team_budgets_update(team=team, changes={"alert_thresholds": [50]}, actor="user:test")
    team.webhook_url = receiver.url
    team.save(update_fields=["webhook_url"])
    workflow = workflow_version(team=team).workflow_id

    alerts_worker = wait_until(lambda: serve.pids("alerts-worker"), message="the alerts worker")[-1]
    web = serve.pids("web")[-1]
    os.kill(alerts_worker, signal.SIGKILL)
    serve.restarted("alerts-worker", killed=alerts_worker)
    assert f"alerts-worker (pid {alerts_worker}) was killed by SIGKILL" in serve.log_path.read_text()
    assert serve.pids("web") == [web]  # the rest never stopped
    assert serve.answers()

    # The new alerts worker sends the webhook of a run the steps worker ran.
    run = run_start(team=team, workflow=workflow, inputs={"topic": "x"}, limits={"budget_usd": "1"})
    wait_for_run(run.pk, "completed", timeout=60)
    wait_until(
        lambda: WebhookDelivery.objects.filter(team=team, status="delivered").exists(), timeout=60, message="the webhook"
    )
    assert len(receiver.received) == 1

    os.kill(web, signal.SIGKILL)
    serve.restarted("web", killed=web)
    wait_until(serve.answers, timeout=60, message="the restarted web server to answer")

    children = [serve.pids(name)[-1] for name in ("web", "worker", "alerts-worker", "beat")]
    os.kill(serve.process.pid, signal.SIGTERM)
    assert serve.process.wait(timeout=60) == 0
    for pid in children:
        wait_until(lambda: not _alive(pid), timeout=30, message=f"child {pid} to stop")
    wait_until(lambda: not group_alive(serve.process.pid), timeout=30, message="every process of serve to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
