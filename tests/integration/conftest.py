import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from budgetsvc.celery import app
from tests.conftest import wait_until

ON_POSTGRESQL = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
ON_REDIS = settings.CELERY_BROKER_URL.startswith("redis://")


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker consuming the configured broker, on a thread of the test process."""
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker


@pytest.fixture
def webhook_sweep_beat(celery_process):
    """A real `celery beat` sending the webhook sweep every half second (to the test's queue, where the
    test's worker runs it): every webhook retry and every lost delivery goes through it."""
    yield celery_process("beat", env={"WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.5"})


def service_env(var_dir: Path) -> dict:
    """Environment for service processes started by a test: the test's own database, broker and queue."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        database_url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        database_url = f"sqlite:///{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "budgetsvc.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "BUDGETSVC_VAR_DIR": str(var_dir),
        # As in the test process (tests/settings.py): tests poll as fast as they like.
        **{f"API_THROTTLE_{scope}": "off" for scope in ("READ", "WRITE", "REPORT", "STAFF")},
    }
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        env["CELERY_FILESYSTEM_BROKER_DIR"] = str(Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).parent)
    return env


def skip_unless_redis() -> None:
    if not ON_REDIS:
        pytest.skip(
            "needs CELERY_BROKER_URL=redis://...: Celery's filesystem transport deletes a message when a worker "
            "takes it, so it never delivers a step twice"
        )


@pytest.fixture
def celery_process(transactional_db, tmp_path: Path):
    """Starts a Celery process in a session of its own, so a test can kill it with all its children.

    `start("worker", ..., env={...})` adds `env` to the service environment. `prefix` runs the command
    through another, such as `ip netns exec <namespace>`, which must exec it, so that the process is
    Celery's. The process's log is at `process.log_path`; every process still alive at the end is
    stopped with its children.
    """
    started = []

    def start(*command: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        log_path = tmp_path / f"{command[0]}-{len(started)}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "celery", "-A", "budgetsvc", *command, "--loglevel", "INFO"],
            cwd=settings.BASE_DIR,
            env={**service_env(tmp_path), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = log_path
        started.append((process, log))
        return process

    yield start
    for process, _ in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process, log in started:
        stop_process_group(process)
        log.close()


def stop_process_group(process: subprocess.Popen, *, timeout: float = 30) -> None:
    """Stop a process started in a session of its own, with its children: SIGTERM, then SIGKILL
    after `timeout` seconds to whatever of its group is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    kill_process_group(process)


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL what is left of the process's group: the process, and any child of it that outlived
    it (a pool child whose worker was killed), so none takes a later test's messages."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left
    process.wait()


def wait_for_ready(process: subprocess.Popen, *, timeout: float = 60) -> None:
    """Wait until a worker started by `celery_process` says it is ready to take tasks."""
    wait_until(
        lambda: process.poll() is not None or " ready." in process.log_path.read_text(),
        timeout=timeout,
        message=f"the worker logging to {process.log_path} to be ready",
    )
    assert process.poll() is None, process.log_path.read_text()[-3000:]


# The `workers` fixture: several worker processes, so steps really race between processes.
WORKER_PROCESSES = 3
WORKER_CONCURRENCY = 3


@pytest.fixture
def workers(celery_process) -> list[subprocess.Popen]:
    """WORKER_PROCESSES prefork workers of WORKER_CONCURRENCY children each, all consuming before the test."""
    token = uuid.uuid4().hex[:6]
    processes = [
        celery_process(
            "worker", "--pool", "prefork", "--concurrency", str(WORKER_CONCURRENCY),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"race-{token}-{index}@%h",
        )  # fmt: skip
        for index in range(WORKER_PROCESSES)
    ]
    # Started only once every worker consumes, so the steps really race rather than queue up for one.
    for process in processes:
        wait_for_ready(process)
    return processes
