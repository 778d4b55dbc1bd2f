"""The sweeper: finds steps that nothing will finish and sends them on.

Celery beat runs it every SWEEP_INTERVAL_SECONDS. It covers what late acknowledgement cannot:
- a whole worker killed mid-step (nothing rejects its message; Redis returns it only after the
  visibility timeout, the filesystem transport never), so the step stays `running` with its
  reservation held: it is sent again, and the delivery ends the crashed attempt, charging it its
  reservation as an estimate (`step_begin`), then runs the step again within STEP_MAX_REDELIVERIES,
  or sets it aside when the run has stopped meanwhile;
- a message lost before any attempt (the send failed after commit, or a filesystem-transport worker
  died after taking it), so the step stays `pending`: it is sent again.

Sending again is safe: a duplicate delivery finds the attempt lock held or the step done.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from workflows import metrics
from workflows.models import ACTIVE_RUN_STATUSES, Step, StepStatus
from workflows.services.dispatch import step_schedule
from workflows.services.health import sweep_heartbeat_record
from workflows.services.locks import without_live_attempt

logger = logging.getLogger(__name__)

# Steps handled per kind per sweep; the next sweep takes the rest.
SWEEP_BATCH_SIZE = 100
# A step admitted this recently is never judged dead, whatever its lock says.
RUNNING_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class SweepReport:
    crashed_resent: int  # running steps whose attempt died, sent again to end that attempt
    lost_resent: int  # pending steps of active runs whose message was lost, sent again


def sweep_stuck_steps(*, now: datetime | None = None) -> SweepReport:
    """One sweep: send stuck steps again, and note that it ran (for /readyz)."""
    now = now or timezone.now()
    crashed, lost = _resend(now=now)
    report = SweepReport(crashed_resent=crashed, lost_resent=lost)
    sweep_heartbeat_record()
    metrics.sweep_recorded(report=report)
    if crashed or lost:
        logger.warning("Swept stuck steps: %s", report)
    return report


def _resend(*, now: datetime) -> tuple[int, int]:
    """Send the stuck steps again. Returns (crashed, lost) counts."""
    resend_before = now - timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS)
    # A crashed step already sent for takeover waits for that message, unless it was lost too. A
    # stopped run's too: its delivery charges the attempt and sets the step aside.
    crashed = Step.objects.filter(status=StepStatus.RUNNING, started_at__lt=now - RUNNING_GRACE).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=F("started_at")) | Q(enqueued_at__lt=resend_before)
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
