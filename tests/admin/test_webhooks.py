from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse

from workflows.models import DeliveryStatus, Event, EventType, WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db


def test_a_delivery_shows_each_attempt_read_only(admin_client, team):
    event = Event.objects.create(team=team, type=EventType.BUDGET_THRESHOLD_CROSSED, payload={"threshold_pct": 80})
    delivery = WebhookDelivery.objects.create(
        team=team, event=event, url="https://hooks.example.com/x", body="{}", status=DeliveryStatus.DELIVERED
    )
    WebhookAttempt.objects.create(delivery=delivery, number=1, error="connection refused", duration_ms=12)
    WebhookAttempt.objects.create(delivery=delivery, number=2, status_code=204, duration_ms=80)

    response = admin_client.get(reverse("admin:workflows_webhookdelivery_change", args=[delivery.pk]))

    page = response.content.decode()
    assert "connection refused" in page and "204" in page
    assert not response.context["has_change_permission"]
    assert not any(inline.has_add_permission for inline in response.context["inline_admin_formsets"])


def dead_delivery(team, *, attempts: int = 12) -> WebhookDelivery:
    event = Event.objects.create(team=team, type=EventType.BUDGET_EXCEEDED, payload={})
    delivery = WebhookDelivery.objects.create(
        team=team, event=event, url="https://hooks.example.com/x", body="{}", status=DeliveryStatus.DEAD, attempts=attempts
    )
    for number in range(1, attempts + 1):
        WebhookAttempt.objects.create(delivery=delivery, number=number, status_code=503, duration_ms=5)
    return delivery


def test_dead_deliveries_are_filtered_counted_on_the_team_page_and_resent_by_a_named_user(
    admin_client, team, django_capture_on_commit_callbacks
):
    dead = dead_delivery(team)
    delivered = WebhookDelivery.objects.create(
        team=team, event=dead.event, url=dead.url, body="{}", status=DeliveryStatus.DELIVERED, attempts=1
    )
    changelist = reverse("admin:workflows_webhookdelivery_changelist")

    listed = admin_client.get(changelist, {"status__exact": "dead"})
    assert [row.pk for row in listed.context["cl"].result_list] == [dead.pk]
    team_page = admin_client.get(reverse("admin:workflows_team_change", args=[team.pk])).content.decode()
    assert f'{changelist}?team__id__exact={team.pk}&amp;status__exact=dead' in team_page
    assert "1 dead: no attempts left" in team_page

    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = admin_client.post(
            changelist, {"action": "resend", "_selected_action": [dead.pk, delivered.pk]}, follow=True
        )

    messages = [str(message) for message in response.context["messages"]]
    assert "1 dead deliveries resent, each with a fresh set of attempts." in messages
    assert "1 selected deliveries are not dead and were left as they are." in messages
    dead.refresh_from_db()
    assert (dead.status, dead.resent_by, dead.resent_after_attempts) == ("pending", "user:admin", 12)
    assert [callback.args[1] for callback in sent] == [(dead.pk,)]
    assert WebhookDelivery.objects.get(pk=delivered.pk).status == "delivered"
    assert "no attempts left" not in admin_client.get(reverse("admin:workflows_team_change", args=[team.pk])).content.decode()


def test_the_rotate_action_says_until_when_the_previous_secret_signs(admin_client, team, settings):
    settings.WEBHOOK_SECRET_ROTATION_HOURS = 24
    with time_machine.travel(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), tick=False):
        response = admin_client.post(
            reverse("admin:workflows_team_changelist"),
            {"action": "rotate_webhook_secret", "_selected_action": [team.pk]},
            follow=True,
        )

    [message] = [str(message) for message in response.context["messages"]]
    assert message.endswith(
        "The previous secret signs every attempt too, beside the new one, until 2026-12-02 09:00:00 UTC."
    )
