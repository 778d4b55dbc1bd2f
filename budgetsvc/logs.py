"""What every log line carries besides its message: the request id and, inside a Celery task, the
task's name and id and the run and step it works on (docs/operations.md#logs).

The handlers of LOGGING (budgetsvc/settings.py) apply `ContextFilter`; the web process's access log
(budgetsvc/asgi.py) sets its fields itself, from the response it sent.
"""

import logging
from collections.abc import Mapping
from contextvars import ContextVar

from celery import current_task
from django_guid import get_guid

_bound_fields: ContextVar[Mapping[str, int] | None] = ContextVar("log_fields", default=None)


def log_context_bind(**fields: int) -> None:
    """Adds `fields` (such as run_id=, step_id=) to every log line of the current task from now on."""
    _bound_fields.set({**(_bound_fields.get() or {}), **fields})


def log_context_clear() -> None:
    """Forgets the bound fields, so that none carry over to the next task on the same worker."""
    _bound_fields.set(None)


class ContextFilter(logging.Filter):
    """Sets `request_id`, and in a task `task_name`, `task_id` and the bound fields, on each record.

    A field is set only when known, so that the plain format's defaults and the JSON format's nulls
    show what is missing; a request_id the record already carries is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None and (request_id := get_guid()) is not None:
            record.request_id = request_id
        if current_task and current_task.request.id:
            record.task_name = current_task.name
            record.task_id = current_task.request.id
        for name, value in (_bound_fields.get() or {}).items():
            setattr(record, name, value)
        return True
