"""Alerts: spend crossing a budget threshold, recorded once each, and sent to the team's webhook."""

import json
from decimal import Decimal

from django.db import IntegrityError, transaction

from workflows import outbound
from workflows.models import BudgetScope, Event, EventType, Run, Team, ThresholdCrossing, WebhookDelivery
from workflows.services.events import event_record, usd
from workflows.services.periods import PeriodWindow, period_window, team_period_spent
from workflows.services.webhooks import webhook_delivery_create


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
    """Queue the event for the team's webhook, if it has one; delivery runs on a worker after commit
    (workflows/services/webhooks.py)."""
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
    return webhook_delivery_create(team=team, event=event, body=body)
