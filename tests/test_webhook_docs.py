"""The receiver example of docs/api.md ("Webhook alerts"), run as it is written there against real
deliveries, so the documentation cannot drift from what the service sends."""

import re
from pathlib import Path

import pytest

from tests.webhook_receiver import receiving
from workflows.models import Event, EventType
from workflows.services.webhooks import webhook_attempt, webhook_delivery_create, webhook_secret_rotate

pytestmark = pytest.mark.django_db

API_DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


@pytest.fixture(scope="module")
def example() -> dict:
    """The namespace of the docs' one Python block that defines `verify_webhook`."""
    [snippet] = [
        block for block in re.findall(r"```python\n(.*?)```", API_DOCS.read_text(), re.DOTALL) if "def verify_webhook(" in block
    ]
    namespace = {}
    exec(compile(snippet, str(API_DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def delivered(team):
    """A real attempt of a real delivery: the request the team's endpoint received."""
    event = Event.objects.create(team=team, type=EventType.BUDGET_EXCEEDED, payload={"scope": "run"})
    with receiving(204) as receiver:
        team.webhook_url = receiver.url
        team.save(update_fields=["webhook_url"])
        delivery = webhook_delivery_create(team=team, event=event, body='{"id": %d, "type": "budget_exceeded"}' % event.pk)
        webhook_attempt(delivery_id=delivery.pk)
    [request] = receiver.received
    return request


def test_the_example_accepts_a_delivery_once_and_refuses_it_replayed_later(team, example):
    request = delivered(team)
    sent_at = int(request.headers["webhook-timestamp"])
    seen = set()

    def verify(*, secrets=(team.webhook_secret,), body=request.body, now=sent_at + 1, seen_ids=seen):
        return example["verify_webhook"](secrets=list(secrets), headers=request.headers, body=body, seen_ids=seen_ids, now=now)

    assert verify()["type"] == "budget_exceeded"
    # Replayed within the tolerance: recognised by its id and not processed again.
    assert verify(now=sent_at + 60) is None
    # Replayed later, even to a receiver that has forgotten the id: its signed timestamp is too old.
    with pytest.raises(example["WebhookRefused"], match="timestamp"):
        verify(now=sent_at + 5 * 60 + 1, seen_ids=set())
    with pytest.raises(example["WebhookRefused"], match="no valid signature"):
        verify(body=request.body.replace(b"budget_exceeded", b"budget_ok"), seen_ids=set())
    other = webhook_secret_rotate(team=team, actor="user:ops").secret
    with pytest.raises(example["WebhookRefused"], match="no valid signature"):
        verify(secrets=[other], seen_ids=set())


def test_during_a_rotation_the_example_accepts_either_secret(team, example):
    old = team.webhook_secret
    new = webhook_secret_rotate(team=team, actor="user:ops").secret
    request = delivered(team)
    now = int(request.headers["webhook-timestamp"])

    for secrets in ([old], [new], [new, old]):
        alert = example["verify_webhook"](secrets=secrets, headers=request.headers, body=request.body, seen_ids=set(), now=now)
        assert alert["type"] == "budget_exceeded"
