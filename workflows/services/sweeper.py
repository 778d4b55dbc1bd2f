"""The sweeper: finds steps that nothing will finish and sends them on, or frees what they hold.

Celery beat runs it every SWEEP_INTERVAL_SECONDS. It covers what late acknowledgement cannot:
- a whole worker killed mid-step (nothing rejects its message; Redis returns it only after the
  visibility timeout, the filesystem transport never), so the step stays `running` with its
  reservation held: it is sent again, and the delivery takes the crashed attempt over through
  `step_begin`, within STEP_MAX_REDELIVERIES;
- a message lost before any attempt (the send failed after commit, or a filesystem-transport worker
  died after taking it), so the step stays `pending`: it is sent again;
- a crashed attempt of a run that is no longer active, which no delivery will come for: its
  reservation is released and the step cancelled, as `step_begin` would.

Sending again is safe: a duplicate delivery finds the attempt lock held or the step done.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from workflows.models import ACTIVE_RUN_STATUSES, Step, StepStatus
from workflows.services.dispatch import step_schedule
from workflows.services.locks import lock_rows, without_live_attempt
from workflows.services.run_state import step_set_aside

logger = logging.getLogger(__name__)

# Steps handled per kind per sweep; the next sweep takes the rest.
SWEEP_BATCH_SIZE = 100
# A step admitted this recently is never judged dead, whatever its lock says.
RUNNING_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class SweepReport:
    crashed_resent: int  # running steps of active runs whose attempt died, sent again for takeover
    lost_resent: int  # pending steps whose message was lost, sent again
    crashed_released: int  # running steps of stopped runs whose attempt died, reservation released


def sweep_stuck_steps(*, now: datetime | None = None) -> SweepReport:
    """One sweep: send stuck steps of active runs again, and release those of stopped runs."""
    now = now or timezone.now()
    crashed, lost = _resend(now=now)
    released = _release_abandoned(now=now)
    report = SweepReport(crashed_resent=crashed, lost_resent=lost, crashed_released=released)
    if crashed or lost or released:
        logger.warning("Swept stuck steps: %s", report)
    return report


def _resend(*, now: datetime) -> tuple[int, int]:
    """Send the stuck steps of active runs again. Returns (crashed, lost) counts."""
    resend_before = now - timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS)
    # A crashed step already sent for takeover waits for that message, unless it was lost too.
    crashed = _crashed(now=now).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=F("started_at")) | Q(enqueued_at__lt=resend_before),
        run__status__in=ACTIVE_RUN_STATUSES,
    )
    lost = Step.objects.filter(
        Q(enqueued_at__lt=resend_before) | Q(enqueued_at__isnull=True, created_at__lt=resend_before),
        status=StepStatus.PENDING,
        run__status__in=ACTIVE_RUN_STATUSES,
    )
    # One transaction: each step is read, stamped and sent once, when it commits.
    with transaction.atomic(durable=True):
        return _send(crashed, now=now), _send(lost, now=now)


def _send(steps: QuerySet[Step], *, now: datetime) -> int:
    # A step locked by a worker or by another sweep is busy, so it is skipped; once that commits,
    # the fresh stamp keeps it out of the next sweep's batch.
    batch = without_live_attempt(steps, now=now).select_for_update(skip_locked=True, of=("self",), no_key=True)
    sent = 0
    for step in batch.order_by("pk")[:SWEEP_BATCH_SIZE]:
        step_schedule(step, now=now)
        sent += 1
    return sent


def _release_abandoned(*, now: datetime) -> int:
    """Release the reservations of crashed attempts in runs that are no longer active."""
    abandoned = without_live_attempt(_crashed(now=now).exclude(run__status__in=ACTIVE_RUN_STATUSES), now=now)
    released = 0
    for step_id, attempt, run_id, team_id in abandoned.order_by("pk").values_list(
        "pk", "attempts", "run_id", "run__team_id"
    )[:SWEEP_BATCH_SIZE]:
        with transaction.atomic(durable=True):
            locked = lock_rows(team_id=team_id, run_id=run_id, step_id=step_id, lock_team=False)
            run, step = locked.run, locked.step
            # A delivery that took the step over since, or ended it, owns it now.
            if step.status != StepStatus.RUNNING or step.attempts != attempt or run.status in ACTIVE_RUN_STATUSES:
                continue
            message = f"Attempt {attempt} lost its worker after the run stopped; its reservation was released."
            step_set_aside(run=run, step=step, error={"type": "StepCrashedError", "message": message})
            released += 1
    return released


def _crashed(*, now: datetime) -> QuerySet[Step]:
    """Running steps old enough to be judged; the caller excludes those with a live attempt."""
    return Step.objects.filter(status=StepStatus.RUNNING, started_at__lt=now - RUNNING_GRACE)
