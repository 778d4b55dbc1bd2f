"""Metrics of real runs: executed by a real worker and scraped from /metrics, in one process and
across the processes `manage.py serve` starts (gunicorn's workers, Celery's pool children)."""

import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for_run, wait_until
from tests.factories import workflow_version
from tests.integration.conftest import service_env, stop_process_group, wait_for_ready
from tests.integration.test_make_run import free_port
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-test-token-0123456789"
# The research pipeline under $0.50: its first step ($0.30) is admitted, its second stopped.
ENFORCED = {"budget_usd": "0.50", "budget_mode": "enforce"}


def samples_of(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scraped() -> dict:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return samples_of(response.content.decode())


def gained(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_a_run_on_a_real_worker_shows_in_the_scrape(team, celery_worker, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_TEAMS = [team.name]
    version = workflow_version(team=team)
    before = scraped()

    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "metrics"}, limits=ENFORCED)
    assert wait_for_run(run.pk, "budget_exceeded").spent_usd == Decimal("0.3")

    after = scraped()
    assert gained(before, after, "budgetsvc_gate_decisions_total", outcome="admitted", scope="none") == 1
    assert gained(before, after, "budgetsvc_gate_decisions_total", outcome="budget_exceeded", scope="run") == 1
    assert gained(before, after, "budgetsvc_steps_finished_total", kind="agent", status="succeeded") == 1
    assert gained(before, after, "budgetsvc_steps_finished_total", kind="agent", status="blocked") == 1
    assert gained(before, after, "budgetsvc_spend_usd_total", team=team.name) == pytest.approx(0.3)
    assert gained(before, after, "budgetsvc_spend_usd_total", team="other") == 0
    assert gained(before, after, "budgetsvc_provider_call_seconds_count", provider="fake") == 1
    assert after[("budgetsvc_reserved_usd", ())] == 0


def test_a_team_not_listed_counts_as_other(team, celery_worker, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_TEAMS = ["someone-else"]
    version = workflow_version(team=team)
    before = scraped()

    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "metrics"}, limits=ENFORCED)
    wait_for_run(run.pk, "budget_exceeded")

    after = scraped()
    assert gained(before, after, "budgetsvc_spend_usd_total", team="other") == pytest.approx(0.3)
    assert gained(before, after, "budgetsvc_spend_usd_total", team=team.name) == 0


def test_a_worker_on_a_machine_of_its_own_serves_its_pools_counters_with_the_token(team, celery_process, tmp_path):
    """A worker whose counters the web's /metrics cannot sum (another container or machine) serves
    them itself: its pool's two children write them, its main process serves the sum."""
    port = free_port()
    (tmp_path / "metrics").mkdir()
    worker = celery_process(
        "worker", "--pool", "prefork", "--concurrency", "2", "--without-gossip", "--without-mingle",
        env={
            "METRICS_WORKER_PORT": str(port), "METRICS_TOKEN": TOKEN, "METRICS_TEAMS": team.name,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        },
    )  # fmt: skip
    wait_for_ready(worker)
    url = f"http://127.0.0.1:{port}/metrics"
    version = workflow_version(team=team)

    for topic in ("one", "two"):
        run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": topic}, limits=ENFORCED)
        wait_for_run(run.pk, "budget_exceeded")

    status, text = get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    counters = samples_of(text)
    assert counters[("budgetsvc_gate_decisions_total", (("outcome", "budget_exceeded"), ("scope", "run")))] == 2
    assert counters[("budgetsvc_spend_usd_total", (("team", team.name),))] == pytest.approx(0.6)
    assert get(url)[0] == 401
    assert get(url, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert get(f"http://127.0.0.1:{port}/")[0] == 404


@pytest.fixture
def served(transactional_db, tmp_path, team):
    """`manage.py serve`: gunicorn with two workers, a prefork step worker of two children, the
    alerts worker and beat, all writing metrics to the one directory serve empties and names."""
    port = free_port()
    env = {
        **service_env(tmp_path / "var"),
        "PORT": str(port),
        "WORKER_CONCURRENCY": "2",
        "METRICS_TOKEN": TOKEN,
        "METRICS_TEAMS": team.name,
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(base_url + "/healthz")[0] == 200, timeout=120, message="serve to answer")
        yield base_url, tmp_path / "var" / "metrics"
    finally:
        stop_process_group(process)
        log.close()
        print((tmp_path / "serve.log").read_text()[-5000:])  # pytest shows it when the test failed


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def test_serve_sums_the_metrics_of_its_processes_and_gets_ready(served, team):
    base_url, metrics_dir = served
    version = workflow_version(team=team)
    runs = [
        run_start(team=team, workflow=version.workflow_id, inputs={"topic": str(n)}, limits=ENFORCED) for n in range(3)
    ]
    for run in runs:
        wait_for_run(run.pk, "budget_exceeded", timeout=60)

    assert get(base_url + "/metrics")[0] == 401
    # Each scrape may be answered by either gunicorn worker; each sums the files of every process.
    for _ in range(4):
        status, text = get(base_url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        samples = samples_of(text)
        assert samples[("budgetsvc_gate_decisions_total", (("outcome", "admitted"), ("scope", "none")))] == 3
        assert samples[("budgetsvc_gate_decisions_total", (("outcome", "budget_exceeded"), ("scope", "run")))] == 3
        assert samples[("budgetsvc_steps_finished_total", (("kind", "agent"), ("status", "succeeded")))] == 3
        assert samples[("budgetsvc_spend_usd_total", (("team", team.name),))] == pytest.approx(0.9)
    assert any(metrics_dir.glob("*.db"))

    # Probed by an address ALLOWED_HOSTS does not list, ready once beat's first sweep has run.
    by_address = {"Host": "10.20.30.40"}
    wait_until(lambda: get(base_url + "/readyz", by_address)[0] == 200, timeout=60, message="/readyz to answer 200")
