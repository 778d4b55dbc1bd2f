"""Idempotency-Key: a retried request gets the first request's response instead of doing the work twice.

A key belongs to a team and to the first request made with it (its method, path and canonical JSON
body) for IDEMPOTENCY_KEY_TTL; after that it is new again. The key is claimed in a short transaction
of its own, the request runs, and then its response is recorded. These cannot be one transaction:
run_start and run_resume commit in durable transactions of their own. So while the first request
runs, its key is visibly "in progress" and a concurrent request with it is refused (409), never run.

Only successes are recorded. A refusal (4xx) changed nothing and a failure (5xx) may be transient, so
either releases the key and a retry with it runs afresh, as if the key had never been used.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from workflows.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, ValidationFailed
from workflows.models import IdempotencyKey, Team

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
# Far longer than any request may run (`make run`'s gunicorn kills a silent worker after 60 s): a claim this old
# without a response was left by a process that died mid-request, and the key may be used again.
IDEMPOTENCY_CLAIM_TIMEOUT = timedelta(minutes=5)
KEY_MAX_LENGTH = IdempotencyKey._meta.get_field("key").max_length
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class IdempotentResponse:
    status: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True)
class _Claim:
    key_id: int
    # Identifies this claim of the row: a takeover or an expiry re-claims the same row with a new time.
    claimed_at: datetime


def check_idempotency_key(*, key: str) -> None:
    if not (len(key) <= KEY_MAX_LENGTH and _PRINTABLE_ASCII.fullmatch(key)):
        message = f"must be 1 to {KEY_MAX_LENGTH} printable ASCII characters"
        raise ValidationFailed(
            f"The Idempotency-Key header {message}.", details=[{"path": "Idempotency-Key", "message": message}]
        )


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    """SHA-256 of the method, the path and the body as canonical JSON (sorted keys, no spaces, ASCII)."""
    # The API's trailing slash is optional, so `/runs` and `/runs/` are the same request.
    canonical = json.dumps([method.upper(), path.rstrip("/"), body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def idempotency_key_execute(
    *, team: Team, key: str, fingerprint: str, execute: Callable[[], IdempotentResponse]
) -> IdempotentResponse:
    """`execute()` once per key: its response, or the recorded response of the first request with the key.

    Raises IdempotencyKeyReused when the key was first used for another request, and
    IdempotencyKeyInProgress while the first request with it is still running.
    """
    claim = _claim(team=team, key=key, fingerprint=fingerprint)
    if isinstance(claim, IdempotentResponse):
        return claim
    try:
        response = execute()
    except BaseException:  # an error, or the worker told to stop: either way nothing is recorded
        _release(claim=claim)
        raise
    if 200 <= response.status < 300:
        _record(claim=claim, response=response)
    else:
        _release(claim=claim)
    return response


def idempotency_keys_purge(*, now: datetime | None = None) -> int:
    """Delete the keys that have expired; returns how many."""
    cutoff = (now or timezone.now()) - IDEMPOTENCY_KEY_TTL
    # A key re-claimed meanwhile has a new created_at, which the delete re-checks under its row lock;
    # a claim that finds its row purged inserts it afresh.
    deleted, _ = IdempotencyKey.objects.filter(created_at__lte=cutoff).delete()
    return deleted


def _claim(*, team: Team, key: str, fingerprint: str) -> _Claim | IdempotentResponse:
    while True:
        with transaction.atomic():
            try:
                # Insert first: the unique (team, key) constraint picks the one request that claims
                # the key. A concurrent insert of the same key waits here until this one commits.
                with transaction.atomic():
                    row = IdempotencyKey.objects.create(team=team, key=key, request_fingerprint=fingerprint)
                return _Claim(key_id=row.pk, claimed_at=row.created_at)
            except IntegrityError:
                pass
            row = IdempotencyKey.objects.select_for_update().filter(team=team, key=key).first()
            if row is None:
                continue  # its request failed and released it after our insert saw it: claim again
            now = timezone.now()
            if row.created_at > now - IDEMPOTENCY_KEY_TTL:
                if row.request_fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        f"The Idempotency-Key '{key}' was used for a different request (method, path or "
                        "body); use a new key for a new request.",
                        details={"key": key},
                    )
                if row.response_status is not None:
                    return IdempotentResponse(status=row.response_status, body=row.response_body, replayed=True)
                if row.created_at > now - IDEMPOTENCY_CLAIM_TIMEOUT:
                    raise IdempotencyKeyInProgress(
                        f"A request with the Idempotency-Key '{key}' is still in progress; retry it shortly.",
                        details={"key": key},
                    )
            # Expired, or claimed by a request that died: the key starts afresh with this request.
            row.request_fingerprint = fingerprint
            row.response_status = None
            row.response_body = None
            row.created_at = now
            row.save(update_fields=["request_fingerprint", "response_status", "response_body", "created_at"])
            return _Claim(key_id=row.pk, claimed_at=now)


def _record(*, claim: _Claim, response: IdempotentResponse) -> None:
    recorded = IdempotencyKey.objects.filter(
        pk=claim.key_id, created_at=claim.claimed_at, response_status__isnull=True
    ).update(response_status=response.status, response_body=response.body)
    if not recorded:
        logger.warning("Idempotency key %s was claimed again before its request finished.", claim.key_id)


def _release(*, claim: _Claim) -> None:
    IdempotencyKey.objects.filter(pk=claim.key_id, created_at=claim.claimed_at, response_status__isnull=True).delete()
