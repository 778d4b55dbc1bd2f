"""Gunicorn's settings for the web process: `gunicorn budgetsvc.asgi --config python:budgetsvc.gunicorn`.

Used by `manage.py serve` and the Docker image; command-line options (bind, workers) still apply.

The workers are uvicorn's: each serves the ASGI application on an event loop, so that an open event
stream (GET /runs/<id>/events/stream) waits there instead of holding a worker (docs/operations.md).
"""

import logging
import os

from prometheus_client import multiprocess

worker_class = "uvicorn_worker.UvicornWorker"


def post_worker_init(worker) -> None:
    """The ASGI application writes the access log (budgetsvc/asgi.py): only when gunicorn was given one
    (--access-logfile), as gunicorn does with its own. uvicorn's own access lines, which lack the request
    id and the duration, are not written: its worker gave uvicorn.access the very list of gunicorn.access's
    handlers; a list of its own, empty, tells uvicorn it has none."""
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("gunicorn.access").disabled = not worker.cfg.accesslog


def child_exit(server, worker) -> None:
    """A worker that exited is marked dead in the metrics directory, so that no live gauge of its
    stays in /metrics; its counters stay summed, as counters must."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
