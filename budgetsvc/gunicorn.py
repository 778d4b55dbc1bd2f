"""Gunicorn's settings for the web process: `gunicorn budgetsvc.asgi --config python:budgetsvc.gunicorn`.

Used by `manage.py serve` and the Docker image; command-line options (bind, workers) still apply.

The workers are uvicorn's: each serves the ASGI application on an event loop, so that an open event
stream (GET /runs/<id>/events/stream) waits there instead of holding a worker (docs/operations.md).
"""

import asyncio
import logging
import os
import signal

import uvicorn_worker
from prometheus_client import multiprocess

worker_class = "budgetsvc.gunicorn.UvicornWorker"


class UvicornWorker(uvicorn_worker.UvicornWorker):
    """uvicorn's gunicorn worker, which exits when its master is gone, as gunicorn's own workers do: a
    master killed with SIGKILL would otherwise leave its workers serving on the port, unsupervised, and a
    new master beside them. Stopping, it gives open streams gunicorn's graceful timeout, no longer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    async def _serve(self) -> None:
        watch = asyncio.create_task(self._stop_when_orphaned())
        try:
            await super()._serve()
        finally:
            watch.cancel()

    async def _stop_when_orphaned(self) -> None:
        while os.getppid() == self.ppid:
            await asyncio.sleep(1)
        self.log.info("Parent changed, shutting down: %s", self)
        # uvicorn's server stops on SIGTERM as on gunicorn's own signal.
        os.kill(os.getpid(), signal.SIGTERM)


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
