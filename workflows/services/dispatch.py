"""Sending work to the Celery workers, once the transaction that decided it commits.

The services name tasks here by their registered names and never import `workflows.tasks`: the tasks
call the services, so an import the other way would close a cycle. `tests/test_dispatch.py` checks
that each name is a registered task. A message is sent only after commit, so a rolled-back
transaction sends nothing and a worker never looks for a row before it exists.
"""

from datetime import datetime, timedelta
from functools import partial

from celery import current_app
from django.db import transaction
from django.utils import timezone

from workflows.models import Step

EXECUTE_STEP = "workflows.execute_step"
DELIVER_WEBHOOK = "workflows.deliver_webhook"


def step_schedule(step: Step, *, now: datetime | None = None, countdown: float = 0) -> None:
    """Send the step's task when this transaction commits, to run `countdown` seconds from now.

    The step is stamped as sent, for when it is due, in this transaction: a pending step whose stamp
    grows old lost its message, and the sweeper sends it again.
    """
    step.enqueued_at = (now or timezone.now()) + timedelta(seconds=countdown)
    step.save(update_fields=["enqueued_at"])
    step_send(step.pk, countdown=countdown)


def step_send(step_id: int, *, countdown: float = 0) -> None:
    """`step_schedule` for a step whose row already carries its `enqueued_at` stamp: a step this
    transaction creates is stamped in its INSERT, a saved one in the UPDATE that makes it pending."""
    transaction.on_commit(partial(current_app.send_task, EXECUTE_STEP, (step_id,), countdown=countdown or None))


def webhook_send(delivery_id: int) -> None:
    # robust: a broker hiccup sending an alert must not stop the callbacks that enqueue the next step;
    # the webhook sweep sends the delivery again.
    transaction.on_commit(partial(current_app.send_task, DELIVER_WEBHOOK, (delivery_id,)), robust=True)
