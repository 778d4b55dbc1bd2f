import pytest
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
