"""Webhook signatures as Standard Webhooks defines them (https://www.standardwebhooks.com/). Pure: no
database, no settings.

A secret is `whsec_` followed by the base64 of the key's bytes, and the key is those decoded bytes.
Each attempt carries `webhook-id` (the delivery's, the same on every retry), `webhook-timestamp` (the
attempt's, in unix seconds) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}`, once per secret, separated by spaces. The timestamp is signed, so a
receiver that refuses old timestamps and remembers the ids it has seen cannot be replayed to.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_KEY_BYTES = 32
SIGNATURE_VERSION = "v1"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_KEY_BYTES)).decode()


def webhook_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for; ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"A webhook secret starts with {SECRET_PREFIX}.")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("A webhook secret is whsec_ followed by base64.") from None


def webhook_signature(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the message under `secret`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def webhook_headers(*, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with each of `secrets` in order."""
    signatures = (webhook_signature(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body) for secret in secrets)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: " ".join(signatures)}
