"""Webhook deliveries on a real worker, with a real beat sending the sweep: a delivery whose message was
lost is delivered, and an endpoint down for longer than the attempts leaves a dead delivery that an
operator resends from the admin."""

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.conftest import wait_until
from tests.integration.conftest import wait_for_ready
from tests.webhook_receiver import dripping, receiving, signatures_by
from workflows.models import Event, EventType, WebhookDelivery
from workflows.services.webhooks import webhook_delivery_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def an_event(team) -> Event:
    return Event.objects.create(team=team, type=EventType.BUDGET_EXCEEDED, payload={"scope": "run"})


def test_a_delivery_whose_message_was_lost_is_delivered_by_the_beat_sweep(team, settings, celery_worker, webhook_sweep_beat):
    settings.WEBHOOK_LOST_AFTER_SECONDS = 1
    with receiving(204) as receiver:
        team.webhook_url = receiver.url
        team.save(update_fields=["webhook_url"])
        now = timezone.now()
        # Recorded as alert_send records it, and its message never sent.
        lost = WebhookDelivery.objects.create(
            team=team, event=an_event(team), url=receiver.url, body='{"lost": true}', next_attempt_at=now, enqueued_at=now
        )

        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(pk=lost.pk, status="delivered").first(),
            timeout=30,
            message="the sweep to deliver the lost delivery",
        )

    assert delivery.attempts == 1
    [received] = receiver.received
    assert (received.headers["webhook-id"], received.body) == (str(lost.pk), b'{"lost": true}')
    assert signatures_by(received, team.webhook_secret) == [team.webhook_secret]


def test_an_endpoint_down_past_the_attempts_leaves_a_dead_delivery_that_the_admin_resends(
    team, settings, admin_client, celery_worker, webhook_sweep_beat
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with receiving(503, 503, 503, 204) as receiver:
        team.webhook_url = receiver.url
        team.save(update_fields=["webhook_url"])
        created = webhook_delivery_create(team=team, event=an_event(team), body='{"down": true}')

        wait_until(
            lambda: WebhookDelivery.objects.filter(pk=created.pk, status="dead").exists(),
            timeout=30,
            message="the delivery to use its attempts",
        )
        changelist = reverse("admin:workflows_webhookdelivery_changelist")
        listed = admin_client.get(changelist, {"status__exact": "dead"})
        assert [row.pk for row in listed.context["cl"].result_list] == [created.pk]
        admin_client.post(changelist, {"action": "resend", "_selected_action": [created.pk]})
        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(pk=created.pk, status="delivered").first(),
            timeout=30,
            message="the resent delivery",
        )

    assert (delivery.attempts, delivery.resent_after_attempts, delivery.resent_by) == (4, 3, "user:admin")
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(1, 503), (2, 503), (3, 503), (4, 204)]
    assert {received.headers["webhook-id"] for received in receiver.received} == {str(created.pk)}
    assert len(receiver.received) == 4


def test_an_attempt_an_endpoint_drags_out_ends_at_the_tasks_time_limit_before_its_lease(team, celery_process):
    """An endpoint answering a byte at a time never trips the per-read timeout; the delivery task's soft
    time limit (4 x WEBHOOK_TIMEOUT_SECONDS: 2 s for this worker, 20 s by default) ends the attempt,
    recorded as failed, long before the endpoint would have finished, and no second attempt overlaps it."""
    worker = celery_process(
        "worker", "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle",
        env={"WEBHOOK_TIMEOUT_SECONDS": "0.5", "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32"},
    )  # fmt: skip
    wait_for_ready(worker)
    with dripping(seconds=45) as url:
        team.webhook_url = url
        team.save(update_fields=["webhook_url"])
        delivery = webhook_delivery_create(team=team, event=an_event(team), body="{}")

        failed = wait_until(
            lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status="failed").first(),
            timeout=40,
            message="the dragged-out attempt to end",
        )

    [attempt] = failed.attempt_log.all()
    assert attempt.error.startswith("SoftTimeLimitExceeded")
    # Ended by a soft time limit (this worker's, or the default's of another worker of the session's
    # queues), not by the endpoint, which drips for 45 s.
    assert attempt.duration_ms < 30_000
