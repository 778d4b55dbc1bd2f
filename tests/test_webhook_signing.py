"""Standard Webhooks signing (workflows/webhook_signing.py) against the spec's published example, and
the migration that brought the secrets of before into its format."""

import base64
import importlib

import pytest
from django.apps import apps

from tests.factories import TeamFactory
from tests.webhook_receiver import spec_signature
from workflows.webhook_signing import new_webhook_secret, webhook_headers, webhook_key, webhook_signature

# The example published with the Standard Webhooks specification and its libraries' tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_of_the_specs_published_example():
    assert webhook_signature(secret=SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY) == SPEC_SIGNATURE


def test_each_secret_signs_in_order_separated_by_a_space():
    other = new_webhook_secret()
    headers = webhook_headers(secrets=[SPEC_SECRET, other], msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)

    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": SPEC_SIGNATURE
        + " "
        + spec_signature(secret=other, msg_id=SPEC_ID, timestamp="1614265330", body=SPEC_BODY),
    }


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes():
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(webhook_key(secret)) == 32
    assert new_webhook_secret() != secret


@pytest.mark.parametrize("secret", ["0" * 64, "whsec_not base64!"])
def test_anything_else_is_not_a_secret(secret):
    with pytest.raises(ValueError, match="webhook secret"):
        webhook_key(secret)


@pytest.mark.django_db
def test_a_secret_of_before_keeps_its_key_through_the_migration():
    """Secrets were 64 hex characters, used as the HMAC key as they were: the migration writes them in
    the whsec_ form of that same key, so a receiver keeps the secret it has."""
    legacy = "3f" * 32
    team = TeamFactory(name="legacy", webhook_secret=legacy)
    current = TeamFactory(name="current")
    migration = importlib.import_module("workflows.migrations.0026_webhook_delivery_schedule")

    migration.secrets_to_standard_webhooks(apps, None)

    team.refresh_from_db()
    assert team.webhook_secret == "whsec_" + base64.b64encode(legacy.encode()).decode()
    assert webhook_key(team.webhook_secret) == legacy.encode()
    issued = current.webhook_secret
    current.refresh_from_db()
    assert current.webhook_secret == issued
