"""Alerts: spend crossing a budget threshold, recorded once each, and sent to the team's webhook."""

import hashlib
import hmac
import json
import time
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from workflows import metrics, outbound
from workflows.errors import OutboundRefused, OutboundUnresolved
from workflows.models import (
    BudgetChange,
    BudgetScope,
    DeliveryStatus,
    Event,
    EventType,
    Run,
    Team,
    ThresholdCrossing,
    WebhookAttempt,
    WebhookDelivery,
    new_webhook_secret,
)
from workflows.services.credentials import key_hint
from workflows.services.dispatch import webhook_send
from workflows.services.events import event_record, usd
from workflows.services.locks import lock_rows
from workflows.services.periods import PeriodWindow, period_window, team_period_spent

SIGNATURE_HEADER = "X-Budgetsvc-Signature"


def alerts_after_spend(*, team: Team, run: Run, unrecorded: Decimal | None = None) -> Decimal | None:
    """Record every threshold the run's or the team period's spend has newly crossed, under the run's
    lock; the team's period spend judged, when it has a period budget.

    `unrecorded` is a charge on the run whose ledger entry is not written yet: it is added to the
    period spend the ledger's daily sums give. A settlement checks so before its events, so an alert
    comes before the `agent_completed` and `run_completed` of the step that raised it, and again,
    with `alerts_after_entry`, once its entry is written."""
    if run.budget_usd:
        _cross_thresholds(team=team, run=run, scope=BudgetScope.RUN, budget=run.budget_usd, spent=run.spent_usd)
    if not team.period_budget_usd:
        return None
    window = period_window(team.period)
    spent = team_period_spent(team=team, window=window) + (unrecorded or 0)
    _cross_team_thresholds(team=team, run=run, window=window, spent=spent)
    return spent


def alerts_after_entry(*, team: Team, run: Run, judged: Decimal | None) -> None:
    """The team's thresholds again, once the settlement's ledger entry is written: a threshold that
    only this settlement and another of the team reach together. The entry's trigger locks the team's
    daily sum until commit, so settlements of a team on one UTC day are ordered by it and the later
    sees the spend the earlier committed. Nothing more to record when the spend is what `judged`
    (the earlier check's figure) said."""
    if not team.period_budget_usd:
        return
    window = period_window(team.period)
    spent = team_period_spent(team=team, window=window)
    if judged is not None and spent == judged:
        return
    _cross_team_thresholds(team=team, run=run, window=window, spent=spent)


def _cross_team_thresholds(*, team: Team, run: Run, window: PeriodWindow, spent: Decimal) -> None:
    period = {"period_start": window.start, "resets_at": window.end}
    _cross_thresholds(
        team=team, run=run, scope=BudgetScope.TEAM, budget=team.period_budget_usd, spent=spent, period=period
    )


def _cross_thresholds(
    *, team: Team, run: Run, scope: str, budget: Decimal, spent: Decimal, period: dict | None = None
) -> None:
    reached = sorted(pct for pct in set(team.alert_thresholds) if spent * 100 >= budget * pct)
    if not reached:
        return
    crossings = ThresholdCrossing.objects.filter(scope=scope, team=team)
    crossings = crossings.filter(run=run) if scope == BudgetScope.RUN else crossings.filter(period_start=period["period_start"])
    already = set(crossings.values_list("threshold_pct", flat=True))
    for pct in (pct for pct in reached if pct not in already):
        try:
            # A savepoint: two settlements of one team on either side of UTC midnight update different
            # daily rows, so nothing orders them, and both may reach a team threshold. The second
            # insert breaks the unique constraint; it must not abort the settlement that charges a call.
            with transaction.atomic():
                ThresholdCrossing.objects.create(
                    team=team,
                    run=run if scope == BudgetScope.RUN else None,
                    scope=scope,
                    threshold_pct=pct,
                    period_start=period["period_start"] if period else None,
                    budget_usd=budget,
                    spent_usd=spent,
                )
        except IntegrityError:
            continue  # recorded by the other, which alerts
        payload = {"scope": scope, "threshold_pct": pct, "budget_usd": usd(budget), "spent_usd": usd(spent)}
        if period:
            payload.update({key: moment.isoformat() for key, moment in period.items()})
        alert_send(team=team, event=event_record(run=run, type=EventType.BUDGET_THRESHOLD_CROSSED, payload=payload))


def check_webhook_url(*, url: str) -> None:
    """Refuse a webhook URL that is not http(s) or whose host resolves to an address outbound
    requests may not reach; checked again whenever a delivery connects."""
    if url:
        outbound.check_url(url, path="webhook_url")


def alert_send(*, team: Team, event: Event) -> WebhookDelivery | None:
    """Queue the event for the team's webhook, if it has one; delivery runs on a worker after commit."""
    if not team.webhook_url:
        return None
    body = json.dumps(
        {
            "id": event.pk,
            "type": event.type,
            "team": team.name,
            "run": event.run_id,
            "created_at": event.created_at.isoformat(),
            "payload": event.payload,
        },
        sort_keys=True,
    )
    delivery = WebhookDelivery.objects.create(team=team, event=event, url=team.webhook_url, body=body)
    webhook_send(delivery)
    return delivery


def webhook_secret_rotate(*, team: Team, actor: str) -> str:
    """Give the team a new webhook secret and return it, to be shown once.

    Alerts are signed when each attempt is sent, so from the commit on every attempt, retries of earlier
    alerts included, is signed with the new secret. The audit trail keeps who rotated it and when, with
    the secrets' last characters only.
    """
    secret = new_webhook_secret()
    with transaction.atomic():
        locked = lock_rows(team_id=team.pk).team
        BudgetChange.objects.create(
            team=locked,
            field="webhook_secret",
            old_value=key_hint(locked.webhook_secret),
            new_value=key_hint(secret),
            actor=actor,
            reason="webhook secret rotated",
        )
        locked.webhook_secret = secret
        locked.save(update_fields=["webhook_secret"])
    return secret


def webhook_signature(*, secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_attempt(*, delivery_id: int) -> bool:
    """POST the delivery once and record the attempt. False when it should be tried again later."""
    delivery = WebhookDelivery.objects.select_related("team", "event").get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return True
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "budgetsvc-webhooks",
        "X-Budgetsvc-Event": delivery.event.type,
        "X-Budgetsvc-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: webhook_signature(secret=delivery.team.webhook_secret, body=body),
    }
    status_code, error, refused = None, "", False
    started = time.monotonic()
    try:
        with (
            outbound.http_client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as client,
            # Streamed and never read: only the status counts, and an endless body must not hold the worker.
            client.stream("POST", delivery.url, content=body, headers=headers) as response,
        ):
            status_code = response.status_code
        if 300 <= status_code < 400:
            error = f"HTTP {status_code} {outbound.status_phrase(status_code)}: redirects are not followed"
        elif not 200 <= status_code < 300:
            error = f"HTTP {status_code} {outbound.status_phrase(status_code)}"
    except OutboundUnresolved as exc:
        error = exc.message  # DNS may answer next time: tried again like any failure
    except OutboundRefused as exc:
        # The address will not become allowed by trying again: the delivery fails now.
        error, refused = f"Refused: {exc.message}", True
    except Exception as exc:  # noqa: BLE001 - any failure of the endpoint is a failed attempt, tried again
        error = f"{type(exc).__name__}: {exc}"
    delivered = status_code is not None and 200 <= status_code < 300
    delivery.attempts += 1
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        status_code=status_code,
        error=error[:2000],
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    if delivered or refused or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.DELIVERED if delivered else DeliveryStatus.FAILED
        delivery.finished_at = timezone.now()
    delivery.save(update_fields=["attempts", "status", "finished_at"])
    metrics.webhook_attempted(status=delivery.status)
    return delivery.status != DeliveryStatus.PENDING
