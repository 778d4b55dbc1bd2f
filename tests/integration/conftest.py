import pytest
from celery.contrib.testing.worker import start_worker

from budgetsvc.celery import app


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker consuming the configured broker, on a thread of the test process."""
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker
