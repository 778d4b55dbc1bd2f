"""Webhook deliveries: each alert sent until a 2xx answers it or it has used its attempts, never two
attempts of one delivery at once, and the team's secrets rotated without a gap.

One path sends every attempt. `webhook_delivery_create` records a delivery, due now, and sends its
message when the transaction commits. A message makes one attempt, if the delivery is due
(`webhook_attempt`). A failed attempt sets when the next is due, WEBHOOK_RETRY_BASE_SECONDS doubling
with each attempt, and the beat's sweep (`webhook_deliveries_sweep`) sends a message for each delivery
that is due. The sweep also finds the lost ones: a delivery whose message, sent
WEBHOOK_LOST_AFTER_SECONDS ago, started no attempt, and an attempt whose worker died (its lease
passes with no outcome recorded). After WEBHOOK_MAX_ATTEMPTS a delivery is dead until an operator
resends it.

An attempt is claimed with a conditional UPDATE, so of two messages for one delivery (a duplicate, or
a sweep's and a late first one) only one attempts it. The request is made outside any transaction.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from workflows import metrics, outbound
from workflows.errors import OutboundRefused, OutboundUnresolved
from workflows.models import (
    UNDELIVERED_STATUSES,
    BudgetChange,
    DeliveryStatus,
    Event,
    Team,
    WebhookAttempt,
    WebhookDelivery,
    new_webhook_secret,
)
from workflows.services.credentials import key_hint
from workflows.services.dispatch import webhook_send
from workflows.services.locks import lock_rows
from workflows.webhook_signing import webhook_headers

logger = logging.getLogger(__name__)

# The event type, beside the Standard Webhooks headers: a receiver can route on it before parsing.
EVENT_HEADER = "X-Budgetsvc-Event"
# Deliveries sent per sweep; the next sweep takes the rest.
SWEEP_BATCH_SIZE = 100
# httpx's timeout bounds the connection, the upload and each read on its own, so an endpoint can drag
# an attempt out; the delivery task's time limits end it (workflows/tasks.py): the soft one at
# WEBHOOK_ATTEMPT_SECONDS, recorded as a failed attempt, the hard one this much later. The lease
# outlasts both, so no second attempt of a delivery starts while the first may still be sending.
WEBHOOK_HARD_LIMIT_MARGIN_SECONDS = 5
ATTEMPT_LEASE_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class SecretRotation:
    secret: str  # the new secret, to be shown once
    previous_signs_until: datetime | None  # None when the previous secret stopped signing at once


def webhook_retry_delay(*, attempt: int) -> timedelta:
    """The wait after the `attempt`th failed attempt of a delivery's set of attempts."""
    return timedelta(seconds=settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1))


def webhook_signing_secrets(*, team: Team, now: datetime) -> list[str]:
    """The secrets an attempt is signed with: the team's, then the previous one until it expires."""
    secrets = [team.webhook_secret]
    if team.webhook_previous_secret and team.webhook_previous_secret_expires_at > now:
        secrets.append(team.webhook_previous_secret)
    return secrets


def webhook_delivery_create(*, team: Team, event: Event, body: str) -> WebhookDelivery:
    """Record the delivery, due now, and send its message when this transaction commits."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        team=team, event=event, url=team.webhook_url, body=body, next_attempt_at=now, enqueued_at=now
    )
    webhook_send(delivery.pk)
    return delivery


def webhook_attempt(*, delivery_id: int) -> str | None:
    """Make the delivery's next attempt if it is due, and record it. Returns the delivery's status
    after the attempt; None when there was nothing to attempt (not due, taken, or finished)."""
    now = timezone.now()
    delivery = (
        WebhookDelivery.objects.select_related("team", "event")
        .filter(pk=delivery_id, status__in=UNDELIVERED_STATUSES)
        .first()
    )
    if delivery is None:
        return None
    # The first attempt of a set is due whatever the clock says: the message was sent for it, and a
    # worker whose clock is behind the creator's must not leave it to the sweep.
    first_of_set = delivery.attempts == delivery.resent_after_attempts
    # No time (a row an older release wrote during an upgrade) is due now.
    if not first_of_set and delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return None
    url = delivery.team.webhook_url
    number = delivery.attempts + 1
    claimed = WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts, status=delivery.status)
    if delivery.attempts - delivery.resent_after_attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        # Its last attempt's worker died before recording an outcome: that attempt counted.
        if claimed.update(status=DeliveryStatus.DEAD, next_attempt_at=None, finished_at=now):
            return DeliveryStatus.DEAD
        return None
    if not url:
        # Nowhere to send it: it waits, dead, for a resend once the team has a URL again.
        with transaction.atomic():
            if not claimed.update(attempts=number, status=DeliveryStatus.DEAD, next_attempt_at=None, finished_at=now):
                return None
            WebhookAttempt.objects.create(
                delivery=delivery, number=number, error="Not sent: the team has no webhook URL any more.", duration_ms=0
            )
        metrics.webhook_attempted(status=DeliveryStatus.DEAD)
        return DeliveryStatus.DEAD
    lease_end = now + timedelta(seconds=settings.WEBHOOK_ATTEMPT_SECONDS + WEBHOOK_HARD_LIMIT_MARGIN_SECONDS) + ATTEMPT_LEASE_MARGIN
    if not claimed.update(attempts=number, next_attempt_at=lease_end, url=url):
        return None  # another message's attempt took it
    status_code, error, refused, duration_ms = _post(delivery=delivery, url=url)
    return _attempt_record(
        delivery=delivery, number=number, status_code=status_code, error=error, refused=refused, duration_ms=duration_ms
    )


def _post(*, delivery: WebhookDelivery, url: str) -> tuple[int | None, str, bool, int]:
    """POST the delivery once: (status code, error, refused, duration in ms)."""
    body = delivery.body.encode()
    sent_at = timezone.now()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "budgetsvc-webhooks",
        EVENT_HEADER: delivery.event.type,
        **webhook_headers(
            secrets=webhook_signing_secrets(team=delivery.team, now=sent_at),
            msg_id=str(delivery.pk),
            timestamp=int(sent_at.timestamp()),
            body=body,
        ),
    }
    status_code, error, refused = None, "", False
    started = time.monotonic()
    try:
        with (
            outbound.http_client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as client,
            # Streamed and never read: only the status counts, and an endless body must not hold the worker.
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status_code = response.status_code
        if 300 <= status_code < 400:
            error = f"HTTP {status_code} {outbound.status_phrase(status_code)}: redirects are not followed"
        elif not 200 <= status_code < 300:
            error = f"HTTP {status_code} {outbound.status_phrase(status_code)}"
    except OutboundUnresolved as exc:
        error = exc.message  # DNS may answer next time: tried again like any failure
    except OutboundRefused as exc:
        # The address will not become allowed by trying again: the delivery is dead now.
        error, refused = f"Refused: {exc.message}", True
    except Exception as exc:  # noqa: BLE001 - any failure of the endpoint is a failed attempt, tried again
        error = f"{type(exc).__name__}: {exc}"
    return status_code, error, refused, round((time.monotonic() - started) * 1000)


def _attempt_record(
    *, delivery: WebhookDelivery, number: int, status_code: int | None, error: str, refused: bool, duration_ms: int
) -> str:
    now = timezone.now()
    delivered = status_code is not None and 200 <= status_code < 300
    if delivered:
        outcome = {"status": DeliveryStatus.DELIVERED, "next_attempt_at": None, "finished_at": now}
    elif refused or number - delivery.resent_after_attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        outcome = {"status": DeliveryStatus.DEAD, "next_attempt_at": None, "finished_at": now}
    else:
        delay = webhook_retry_delay(attempt=number - delivery.resent_after_attempts)
        outcome = {"status": DeliveryStatus.FAILED, "next_attempt_at": now + delay}
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery, number=number, status_code=status_code, error=error[:2000], duration_ms=duration_ms
        )
        # Only while this is still the latest attempt of the same set: past its lease another may have
        # started, or an operator resent the delivery, and then that one's outcome decides.
        WebhookDelivery.objects.filter(
            pk=delivery.pk, attempts=number, resent_after_attempts=delivery.resent_after_attempts
        ).update(**outcome)
    metrics.webhook_attempted(status=outcome["status"])
    return outcome["status"]


def webhook_deliveries_sweep(*, now: datetime | None = None) -> int:
    """Send a message for each delivery that is due and has none on its way; returns how many.

    Due and with none on its way: its next attempt's time has come and no message was sent since
    that time was set (a retry, or an attempt whose lease passed), or the last message was sent
    WEBHOOK_LOST_AFTER_SECONDS ago and has started no attempt (lost, or stuck behind a dead worker).
    """
    now = now or timezone.now()
    lost_before = now - timedelta(seconds=settings.WEBHOOK_LOST_AFTER_SECONDS)
    due = WebhookDelivery.objects.filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True), status__in=UNDELIVERED_STATUSES
    ).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=F("next_attempt_at")) | Q(enqueued_at__lt=lost_before)
    )
    sent = 0
    with transaction.atomic():
        # Rows another sweep holds are skipped on PostgreSQL; the conditional stamp below makes a
        # concurrent sweep on any database send each delivery once.
        batch = due.select_for_update(skip_locked=True).order_by("next_attempt_at", "pk")
        for delivery_id in batch.values_list("pk", flat=True)[:SWEEP_BATCH_SIZE]:
            if due.filter(pk=delivery_id).update(enqueued_at=now):
                webhook_send(delivery_id)
                sent += 1
    if sent:
        logger.info("Swept %s webhook deliveries due for an attempt.", sent)
    return sent


def webhook_deliveries_resend(*, deliveries: list[int], by: str) -> int:
    """Give each dead delivery among `deliveries` a fresh set of WEBHOOK_MAX_ATTEMPTS attempts, due now,
    recording who resent it; returns how many were dead. Others are left as they are."""
    now = timezone.now()
    resent = 0
    with transaction.atomic():
        for delivery_id in sorted(deliveries):
            if WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.DEAD).update(
                status=DeliveryStatus.PENDING,
                resent_after_attempts=F("attempts"),
                next_attempt_at=now,
                enqueued_at=now,
                finished_at=None,
                resent_at=now,
                resent_by=by,
            ):
                webhook_send(delivery_id)
                resent += 1
    logger.info("%s resent %s dead webhook deliveries.", by, resent)
    return resent


def webhook_secret_rotate(*, team: Team, actor: str) -> SecretRotation:
    """Give the team a new webhook secret, the one it replaces signing beside it for
    WEBHOOK_SECRET_ROTATION_HOURS, so that a receiver can switch at its own pace.

    Attempts are signed when each is sent, so from the commit on every attempt, retries of earlier
    alerts included, carries the new secret's signature first. A secret replaced while still signing
    as the previous one stops at once. The audit trail keeps who rotated it, when, and until when the
    previous one signs, with the secrets' last characters only.
    """
    secret = new_webhook_secret()
    grace = timedelta(hours=settings.WEBHOOK_SECRET_ROTATION_HOURS)
    with transaction.atomic():
        locked = lock_rows(team_id=team.pk).team
        now = timezone.now()
        signs_until = now + grace if grace else None
        BudgetChange.objects.create(
            team=locked,
            field="webhook_secret",
            old_value=key_hint(locked.webhook_secret),
            new_value=key_hint(secret),
            actor=actor,
            reason=(
                f"webhook secret rotated; the previous one signs too until {signs_until.isoformat(timespec='seconds')}"
                if signs_until
                else "webhook secret rotated; the previous one stopped signing at once"
            ),
        )
        locked.webhook_previous_secret = locked.webhook_secret if signs_until else ""
        locked.webhook_previous_secret_expires_at = signs_until
        locked.webhook_secret = secret
        locked.save(update_fields=["webhook_secret", "webhook_previous_secret", "webhook_previous_secret_expires_at"])
    return SecretRotation(secret=secret, previous_signs_until=signs_until)
