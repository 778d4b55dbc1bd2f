"""Gunicorn's settings for the web process: `gunicorn --config python:budgetsvc.gunicorn budgetsvc.wsgi`.

Used by `manage.py serve` and the Docker image; command-line options (bind, workers) still apply.
"""

import os

from prometheus_client import multiprocess


def child_exit(server, worker) -> None:
    """A worker that exited is marked dead in the metrics directory, so that no live gauge of its
    stays in /metrics; its counters stay summed, as counters must."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
