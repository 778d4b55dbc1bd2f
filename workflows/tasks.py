"""Celery tasks: they take ids, call one service, and own the retry policy. Nothing else."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from workflows.services import sweeper
from workflows.services.idempotency import idempotency_keys_purge
from workflows.services.locks import step_attempt_lock
from workflows.services.steps import step_execute
from workflows.services.webhooks import WEBHOOK_HARD_LIMIT_MARGIN_SECONDS, webhook_attempt, webhook_deliveries_sweep

# A duplicate delivery of a step whose attempt is alive elsewhere looks again this often, for as
# long as that attempt may run, so the step is never left with no delivery that can finish it.
BUSY_STEP_RETRY_SECONDS = 2

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="workflows.execute_step",
    acks_late=True,
    reject_on_worker_lost=True,
    # A lost database connection: the next delivery takes the attempt over, within the step's own
    # redelivery bound (STEP_MAX_REDELIVERIES).
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def execute_step(self, step_id: int) -> None:
    with step_attempt_lock(step_id) as acquired:
        if acquired:
            step_execute(step_id=step_id)
            return
    # A second delivery of a step that is still running: the sweeper's, or the broker's after a
    # visibility timeout shorter than the step (docs/operations.md).
    logger.warning(
        "Step %s is being executed by a live attempt elsewhere; this delivery looks again in %s s.",
        step_id,
        BUSY_STEP_RETRY_SECONDS,
    )
    raise self.retry(
        countdown=BUSY_STEP_RETRY_SECONDS,
        max_retries=settings.CELERY_TASK_TIME_LIMIT // BUSY_STEP_RETRY_SECONDS + 1,
    )


# No retries: the next beat tick is the retry.
@shared_task(name="workflows.sweep_stuck_steps")
def sweep_stuck_steps() -> None:
    sweeper.sweep_stuck_steps()


@shared_task(name="workflows.purge_idempotency_keys")
def purge_idempotency_keys() -> None:
    idempotency_keys_purge()


# No retries: a failed attempt sets when the next is due, and the webhook sweep sends it then. The time
# limits bound an attempt a slow endpoint drags out, so it ends before its lease (services/webhooks.py).
@shared_task(
    name="workflows.deliver_webhook",
    acks_late=True,
    soft_time_limit=settings.WEBHOOK_ATTEMPT_SECONDS,
    time_limit=settings.WEBHOOK_ATTEMPT_SECONDS + WEBHOOK_HARD_LIMIT_MARGIN_SECONDS,
)
def deliver_webhook(delivery_id: int) -> None:
    webhook_attempt(delivery_id=delivery_id)


@shared_task(name="workflows.sweep_webhook_deliveries")
def sweep_webhook_deliveries() -> None:
    webhook_deliveries_sweep()
