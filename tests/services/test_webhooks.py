"""Webhook deliveries through the service (workflows/services/webhooks.py), against real HTTP endpoints on
127.0.0.1 and a fake clock: the headers, rotation's grace period, redirects, the backoff schedule, the
sweep of lost messages, one attempt at a time, URL changes and resends."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from tests.webhook_receiver import receiving, signatures_by
from workflows.models import BudgetChange, Event, EventType, Team, WebhookDelivery
from workflows.services.dispatch import DELIVER_WEBHOOK
from workflows.services.webhooks import (
    webhook_attempt,
    webhook_deliveries_resend,
    webhook_deliveries_sweep,
    webhook_delivery_create,
    webhook_secret_rotate,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def alert(team: Team) -> WebhookDelivery:
    event = Event.objects.create(team=team, type=EventType.BUDGET_EXCEEDED, payload={"scope": "run"})
    return webhook_delivery_create(team=team, event=event, body='{"type": "budget_exceeded"}')


def point(team: Team, url: str) -> None:
    team.webhook_url = url
    team.save(update_fields=["webhook_url"])


def sweep_sends(capture, *, now: datetime) -> list[int]:
    """The deliveries a sweep at `now` sends a message for, when its transaction commits."""
    with capture(execute=False) as callbacks:
        webhook_deliveries_sweep(now=now)
    sent = [callback.args for callback in callbacks]
    assert all(name == DELIVER_WEBHOOK for name, _ in sent)
    return [delivery_id for _, (delivery_id,) in sent]


def attempt_in_flight(delivery: WebhookDelivery, receiver, outcomes: list) -> threading.Thread:
    """Start an attempt of the delivery on a thread of its own, and return once the receiver has its
    request, which it answers after its delay; the attempt's outcome goes to `outcomes`."""

    def attempt():
        try:
            outcomes.append(webhook_attempt(delivery_id=delivery.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=attempt)
    thread.start()
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread


def test_an_attempt_carries_the_standard_webhooks_headers(team):
    with receiving(204) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        with time_machine.travel(T0, tick=False):
            assert webhook_attempt(delivery_id=delivery.pk) == "delivered"

    [received] = receiver.received
    assert received.headers["webhook-id"] == str(delivery.pk)
    assert received.headers["webhook-timestamp"] == str(int(T0.timestamp()))
    assert signatures_by(received, team.webhook_secret) == [team.webhook_secret]
    assert received.headers["x-budgetsvc-event"] == "budget_exceeded"
    assert "x-budgetsvc-signature" not in received.headers
    assert received.body == b'{"type": "budget_exceeded"}'


def test_after_a_rotation_both_secrets_sign_until_the_grace_period_ends(team, settings):
    settings.WEBHOOK_SECRET_ROTATION_HOURS = 24
    old = team.webhook_secret
    with receiving(204) as receiver:
        point(team, receiver.url)
        with time_machine.travel(T0, tick=False):
            rotation = webhook_secret_rotate(team=team, actor="user:ops")
        new = rotation.secret
        for moment in (T0 + timedelta(hours=23, minutes=59), T0 + timedelta(hours=24, seconds=1)):
            delivery = alert(team)
            with time_machine.travel(moment, tick=False):
                assert webhook_attempt(delivery_id=delivery.pk) == "delivered"

    assert rotation.previous_signs_until == T0 + timedelta(hours=24)
    within, after = receiver.received
    assert signatures_by(within, new, old) == [new, old]
    assert signatures_by(after, new, old) == [new]
    [change] = BudgetChange.objects.filter(team=team, field="webhook_secret")
    assert (change.actor, change.new_value) == ("user:ops", f"…{new[-4:]}")
    assert change.reason == "webhook secret rotated; the previous one signs too until 2026-12-02T09:00:00+00:00"


def test_rotating_again_keeps_only_the_two_latest_secrets(team):
    first = team.webhook_secret
    second = webhook_secret_rotate(team=team, actor="user:ops").secret
    third = webhook_secret_rotate(team=team, actor="user:ops").secret
    with receiving(204) as receiver:
        point(team, receiver.url)
        webhook_attempt(delivery_id=alert(team).pk)

    assert signatures_by(receiver.received[0], third, second, first) == [third, second]


def test_with_no_grace_period_the_previous_secret_stops_at_once(team, settings):
    settings.WEBHOOK_SECRET_ROTATION_HOURS = 0
    rotation = webhook_secret_rotate(team=team, actor="user:ops")
    with receiving(204) as receiver:
        point(team, receiver.url)
        webhook_attempt(delivery_id=alert(team).pk)

    assert rotation.previous_signs_until is None
    assert signatures_by(receiver.received[0], rotation.secret) == [rotation.secret]
    assert BudgetChange.objects.get(field="webhook_secret").reason.endswith("stopped signing at once")


def test_a_redirect_is_not_followed_and_is_a_failed_attempt(team):
    with receiving(204) as elsewhere, receiving((302, elsewhere.url)) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        assert webhook_attempt(delivery_id=delivery.pk) == "failed"

    assert (len(receiver.received), elsewhere.received) == (1, [])
    [attempt] = delivery.attempt_log.all()
    assert (attempt.status_code, attempt.error) == (302, "HTTP 302 Found: redirects are not followed")


def test_the_backoff_doubles_after_each_failure_until_the_delivery_is_dead(team, settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    waits, now = [], T0
    with receiving(503) as receiver:
        point(team, receiver.url)
        with time_machine.travel(T0, tick=False):
            delivery = alert(team)
        while True:
            with time_machine.travel(now, tick=False):
                status = webhook_attempt(delivery_id=delivery.pk)
            delivery.refresh_from_db()
            if status == "dead":
                break
            assert status == "failed"
            waits.append((delivery.next_attempt_at - now).total_seconds())
            # Not due a moment before: neither the sweep nor a stray message attempts it.
            early = delivery.next_attempt_at - timedelta(seconds=1)
            assert sweep_sends(django_capture_on_commit_callbacks, now=early) == []
            with time_machine.travel(early, tick=False):
                assert webhook_attempt(delivery_id=delivery.pk) is None
            now = delivery.next_attempt_at
            assert sweep_sends(django_capture_on_commit_callbacks, now=now) == [delivery.pk]

    assert waits == [10, 20, 40]
    assert len(receiver.received) == 4
    assert {received.headers["webhook-id"] for received in receiver.received} == {str(delivery.pk)}
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 4, None)
    assert delivery.finished_at == T0 + timedelta(seconds=70)
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(n, 503) for n in (1, 2, 3, 4)]
    assert sweep_sends(django_capture_on_commit_callbacks, now=now + timedelta(days=1)) == []


def test_a_lost_message_is_sent_again_by_the_sweep_once_per_lost_period(team, settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_LOST_AFTER_SECONDS = 300
    with time_machine.travel(T0, tick=False):
        delivery = alert(team)  # its message is never sent: this test's transaction never commits

    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=299)) == []
    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=301)) == [delivery.pk]
    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=302)) == []
    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=602)) == [delivery.pk]


def test_an_attempt_whose_worker_died_is_sent_again_once_its_lease_passes(team, settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    with time_machine.travel(T0, tick=False):
        delivery = alert(team)
    # What a claimed attempt leaves when its worker dies before recording an outcome.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=1, next_attempt_at=T0 + timedelta(seconds=50))

    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=49)) == []
    assert sweep_sends(django_capture_on_commit_callbacks, now=T0 + timedelta(seconds=50)) == [delivery.pk]


def test_a_delivery_whose_last_attempt_died_with_its_worker_is_dead_without_another(team, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with receiving(204) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=3, next_attempt_at=T0)

        assert webhook_attempt(delivery_id=delivery.pk) == "dead"

    assert receiver.received == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 3, None)


@pytest.mark.django_db(transaction=True)
def test_two_messages_for_one_delivery_make_one_attempt(team):
    with receiving(204, delay=1) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        outcomes = []
        first = attempt_in_flight(delivery, receiver, outcomes)
        outcomes.append(webhook_attempt(delivery_id=delivery.pk))  # while the first attempt's request is still open
        first.join()

    assert sorted(outcomes, key=str) == [None, "delivered"]
    assert len(receiver.received) == 1
    assert list(WebhookDelivery.objects.get(pk=delivery.pk).attempt_log.values_list("number", "status_code")) == [(1, 204)]


def test_an_attempt_goes_to_the_teams_url_of_the_moment(team):
    with receiving(503) as before, receiving(204) as after:
        point(team, before.url)
        delivery = alert(team)
        assert webhook_attempt(delivery_id=delivery.pk) == "failed"
        point(team, after.url)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=T0)
        assert webhook_attempt(delivery_id=delivery.pk) == "delivered"

    assert (len(before.received), len(after.received)) == (1, 1)
    delivery.refresh_from_db()
    assert delivery.url == after.url


def test_a_delivery_whose_team_removed_its_url_is_dead_until_resent(team):
    with receiving(204) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        point(team, "")
        assert webhook_attempt(delivery_id=delivery.pk) == "dead"
        point(team, receiver.url)
        assert webhook_deliveries_resend(deliveries=[delivery.pk], by="user:ops") == 1
        assert webhook_attempt(delivery_id=delivery.pk) == "delivered"

    assert list(delivery.attempt_log.values_list("number", "status_code", "error")) == [
        (1, None, "Not sent: the team has no webhook URL any more."),
        (2, 204, ""),
    ]
    assert len(receiver.received) == 1


def test_a_resend_gives_a_dead_delivery_a_fresh_set_of_attempts(team, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    with receiving(503) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        pending = alert(team)
        for _ in range(2):
            WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=T0)
            webhook_attempt(delivery_id=delivery.pk)
        assert WebhookDelivery.objects.get(pk=delivery.pk).status == "dead"

        with time_machine.travel(T0, tick=False):
            assert webhook_deliveries_resend(deliveries=[delivery.pk, pending.pk], by="user:ops") == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.resent_by, delivery.resent_at, delivery.finished_at) == (
            "pending", "user:ops", T0, None
        )
        assert webhook_attempt(delivery_id=delivery.pk) == "failed"  # attempt 1 of 2 of the new set
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=T0)
        assert webhook_attempt(delivery_id=delivery.pk) == "dead"

    assert list(delivery.attempt_log.values_list("number", flat=True)) == [1, 2, 3, 4]
    assert WebhookDelivery.objects.get(pk=pending.pk).status == "pending"


@pytest.mark.django_db(transaction=True)
def test_a_late_outcome_of_an_attempt_from_before_a_resend_leaves_the_resent_delivery_alone(team, settings):
    """An attempt outlives its lease; the delivery is counted dead meanwhile and an operator resends it.
    The old attempt's answer comes last, and must not make the resent delivery dead again."""
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    with receiving(503, delay=1.5) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        outcomes = []
        first = attempt_in_flight(delivery, receiver, outcomes)
        # Its lease passes while it waits for the answer: a message finds it counted, and dead.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=T0)
        assert webhook_attempt(delivery_id=delivery.pk) == "dead"
        assert webhook_deliveries_resend(deliveries=[delivery.pk], by="user:ops") == 1
        first.join()

    delivery.refresh_from_db()
    assert outcomes == ["dead"]  # what the old attempt found; it wrote nothing over the resend
    assert (delivery.status, delivery.resent_by) == ("pending", "user:ops")


def test_a_delivery_an_older_release_left_without_a_time_is_swept_and_attempted(team, django_capture_on_commit_callbacks):
    with receiving(204) as receiver:
        point(team, receiver.url)
        delivery = alert(team)
        # Written during an upgrade by a process of the release before next_attempt_at existed.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=1, next_attempt_at=None, enqueued_at=None)

        assert sweep_sends(django_capture_on_commit_callbacks, now=T0) == [delivery.pk]
        assert webhook_attempt(delivery_id=delivery.pk) == "delivered"
