import os
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from budgetsvc.supervisor import Supervisor


def celery_worker(queue: str, *, concurrency) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "budgetsvc", "worker",
        "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO", "--concurrency", str(concurrency),
    ]


def metrics_directory() -> Path:
    """Where every process started writes its metrics for /metrics to sum, emptied first: samples
    left by an earlier start belong to processes that no longer exist."""
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.VAR_DIR / "metrics")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for samples in directory.glob("*.db"):
        samples.unlink()
    return directory


def request_timeout_seconds() -> int:
    """Longer than a request may wait for SQLite's write lock, so a request that waits that long ends
    with the database's own error rather than gunicorn killing its worker mid-response."""
    return settings.DATABASES["default"].get("OPTIONS", {}).get("timeout", 0) + 30


class Command(BaseCommand):
    help = (
        "Serve the API and admin with gunicorn, Celery workers for steps and alerts, and Celery beat, in the "
        "foreground, restarting any of them that exits (budgetsvc/supervisor.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--worker-concurrency", default=os.environ.get("WORKER_CONCURRENCY", "2"))

    def handle(self, *args, **options):
        steps_queue, alerts_queue = settings.CELERY_TASK_QUEUES
        commands = {
            "web": [
                sys.executable, "-m", "gunicorn", "budgetsvc.asgi", "--config", "python:budgetsvc.gunicorn",
                "--bind", f"{options['host']}:{options['port']}",
                "--workers", "2", "--access-logfile", "-", "--timeout", str(request_timeout_seconds()),
            ],
            "worker": celery_worker(steps_queue.name, concurrency=options["worker_concurrency"]),
            # Webhook alerts get a worker of their own, so a slow endpoint never holds up a step.
            "alerts-worker": celery_worker(alerts_queue.name, concurrency=1),
            # Sends the sweeper that finds stuck steps; its schedule file is CELERY_BEAT_SCHEDULE_FILENAME.
            "beat": [sys.executable, "-m", "celery", "-A", "budgetsvc", "beat", "--loglevel", "INFO"],
        }
        supervisor = Supervisor(commands, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_directory())})
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGTERM, supervisor.stop)
        # The terminal closing stops the service too, rather than leaving its children unwatched.
        signal.signal(signal.SIGHUP, supervisor.stop)
        self.stdout.write(
            f"Starting the web server on http://{options['host']}:{options['port']}/ "
            "(API under /api/v1/, admin under /admin/). A process that exits is restarted; "
            "Ctrl-C stops them all."
        )
        supervisor.run()
