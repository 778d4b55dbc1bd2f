import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready

from budgetsvc.logs import log_context_clear

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")

app = Celery("budgetsvc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_connections(*, task, **kwargs) -> None:
    """What Django does around each request, done around each task: drop the connections that
    outlived CONN_MAX_AGE or had errors, and health-check the rest before their next use.

    Celery's own fix-up would close them all (see CELERY_DB_REUSE_MAX in the settings).
    """
    if getattr(task.request, "is_eager", False):
        return  # an eager task runs inside its caller's transaction
    from django.db import close_old_connections

    close_old_connections()


@task_prerun.connect
@task_postrun.connect
def forget_log_context(**kwargs) -> None:
    """The run and step a task bound to its log lines are its own, not the next task's on this worker."""
    log_context_clear()


@worker_ready.connect
def serve_worker_metrics(**kwargs) -> None:
    """A worker's counters at :METRICS_WORKER_PORT/metrics, when set (docs/operations.md#metrics)."""
    from django.conf import settings

    if settings.METRICS_WORKER_PORT:
        from workflows import metrics

        metrics.worker_exposition_start(port=settings.METRICS_WORKER_PORT)
