"""Celery tasks: they take ids, call one service, and own the retry policy. Nothing else."""

from celery import shared_task

from workflows.services.locks import step_attempt_lock
from workflows.services.steps import step_execute

# A duplicate delivery of a step whose attempt is alive on another worker waits this long and
# looks again; the live attempt's own message is redelivered if that worker dies meanwhile.
BUSY_STEP_RETRY_SECONDS = 2
BUSY_STEP_MAX_RETRIES = 30


@shared_task(
    bind=True,
    name="workflows.execute_step",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=BUSY_STEP_MAX_RETRIES,
)
def execute_step(self, step_id: int) -> None:
    # Redelivery is safe: the step row records each attempt, and the attempt lock keeps a
    # duplicate message from running a step that is still in flight elsewhere.
    with step_attempt_lock(step_id) as acquired:
        if acquired:
            step_execute(step_id=step_id)
            return
    raise self.retry(countdown=BUSY_STEP_RETRY_SECONDS)
