"""Server-sent events of a run's events: GET /api/v1/runs/<id>/events/stream and the admin's run page.

A stream sends every event after the one its client names, then the new ones as they are written, and
ends with an `end` event once the run waits for a person (any status but queued or running) and all its
events are sent. It polls the database, which works the same on SQLite and PostgreSQL and needs no
broker. Served under ASGI (budgetsvc/asgi.py), a stream is a coroutine that holds no worker while it
sleeps; its queries run in the request's own thread, on the request's own database connection.

A team holds at most EVENT_STREAM_MAX_PER_TEAM streams: each holds one of that many slots, a key in the
default cache that expires on its own soon after the longest a stream lives, so a process killed with
its streams open cannot leak them for long.
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import StreamingHttpResponse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from workflows.api.serializers import EventOutputSerializer
from workflows.api.filters import IdField
from workflows.api.query import invalid_query_params
from workflows.errors import TooManyStreams, ValidationFailed
from workflows.models import ACTIVE_RUN_STATUSES, Event, Run

logger = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
# How long an EventSource waits before it reconnects after the server closed the stream.
RETRY_MILLISECONDS = 2000
# The most events one poll reads; a run with more is sent in several polls, without waiting between them.
BATCH = 200
# Events of one run written at once (a worker's step and a cancel) may commit in another order than their
# ids (docs/api.md): each poll reads again the events of the last few seconds and sends those it has not.
SETTLE = timedelta(seconds=5)
# A slot outlives the longest stream by this much before it expires on its own.
SLOT_MARGIN_SECONDS = 60


def event_frame(item: dict) -> bytes:
    """One event as the events list shows it (compact JSON, as the API renders it), with its id and type."""
    data = JSONRenderer().render(item)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (item["id"], item["type"].encode(), data)


def end_frame(status: str) -> bytes:
    return b'event: end\ndata: {"status": "%s"}\n\n' % status.encode()


def stream_start(*, last_event_id: str | None, after: str | None) -> int:
    """The id of the last event the client has: its Last-Event-ID header, which an EventSource sends when it
    reconnects to the URL it first opened (?after= included), else ?after=, else 0 (from the start). Both
    are checked, whichever wins."""
    try:
        after_id = IdField(required=False).clean(after)
    except ValidationError as exc:
        raise invalid_query_params([("after", exc.messages[0])]) from None
    if last_event_id is None:
        return after_id or 0
    try:
        return IdField(required=False).clean(last_event_id.strip()) or 0
    except ValidationError as exc:
        message = f"The Last-Event-ID header {exc.messages[0]}."
        raise ValidationFailed(message, details=[{"path": "Last-Event-ID", "message": exc.messages[0]}]) from None


def _poll(*, run_id: int, floor: int, sent: set[int]) -> tuple[str | None, list[dict], int]:
    """The run's status, then its events above `floor` not yet `sent` (at most BATCH), and the floor to
    read from next time: past every event older than SETTLE. The status is read first, so that once it
    says the run has stopped, the events read after it are all the run will have."""
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    rows = list(Event.objects.filter(run_id=run_id, id__gt=floor).order_by("id")[: BATCH + len(sent)])
    new = [event for event in rows if event.id not in sent][:BATCH]
    delivered = sent | {event.id for event in new}
    settled_before = timezone.now() - SETTLE
    for event in rows:
        if event.id not in delivered or event.created_at >= settled_before:
            break
        floor = event.id
    return status, [EventOutputSerializer(event).data for event in new], floor


async def run_event_stream(*, run_id: int, after: int) -> AsyncIterator[bytes]:
    """The frames of the run's events after the event `after` (0 for all), until the run stops, the
    stream has lived EVENT_STREAM_MAX_SECONDS, or the client goes (ASGI cancels the coroutine then)."""
    loop = asyncio.get_running_loop()
    closes_at = loop.time() + settings.EVENT_STREAM_MAX_SECONDS
    quiet_since = loop.time()
    floor, sent = after, set()
    yield b"retry: %d\n\n" % RETRY_MILLISECONDS
    while True:
        status, new, next_floor = await sync_to_async(_poll)(run_id=run_id, floor=floor, sent=sent)
        for item in new:
            yield event_frame(item)
            sent.add(item["id"])
        floor = next_floor
        sent = {event_id for event_id in sent if event_id > floor}
        if new:
            quiet_since = loop.time()
        if len(new) == BATCH:
            continue
        if status is None:
            return
        if status not in ACTIVE_RUN_STATUSES:
            yield end_frame(status)
            return
        now = loop.time()
        if now >= closes_at:
            return
        if now - quiet_since >= settings.EVENT_STREAM_KEEP_ALIVE_SECONDS:
            yield KEEP_ALIVE
            quiet_since = now
        await asyncio.sleep(min(settings.EVENT_STREAM_POLL_SECONDS, closes_at - now))


def stream_slot_take(*, team_id: int) -> str | None:
    """One of the team's EVENT_STREAM_MAX_PER_TEAM slots, as its cache key; TooManyStreams when all are
    taken. None when the cache does not answer: streams then go on uncounted, as requests go unthrottled."""
    limit = settings.EVENT_STREAM_MAX_PER_TEAM
    expires = settings.EVENT_STREAM_MAX_SECONDS + SLOT_MARGIN_SECONDS
    try:
        for slot in range(limit):
            key = f"event-stream:team-{team_id}:slot-{slot}"
            if cache.add(key, secrets.token_hex(8), timeout=expires):
                return key
    except Exception:  # noqa: BLE001 - the cache's client raises its own errors
        logger.warning("The cache did not answer; an event stream of team %s goes uncounted.", team_id, exc_info=True)
        return None
    raise TooManyStreams(
        f"The team has {limit} event streams open, as many as it may; close one, or retry later.",
        details={"max_streams": limit},
    )


def stream_slot_give_back(key: str | None) -> None:
    if key is None:
        return
    try:
        cache.delete(key)
    except Exception:  # noqa: BLE001 - the slot expires on its own
        logger.warning("The cache did not answer; the event stream slot %s expires on its own.", key, exc_info=True)


class EventStreamResponse(StreamingHttpResponse):
    """`text/event-stream` that no cache or proxy keeps or buffers, and that gives its slot back when it
    closes, whether the stream ended, the server closed it or the client went."""

    def __init__(self, frames: AsyncIterator[bytes], *, on_close: Callable[[], None]):
        super().__init__(frames, content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        # Django closes a response once; a test client may close it again.
        on_close, self._on_close = self._on_close, None
        try:
            super().close()
        finally:
            if on_close is not None:
                on_close()


def event_stream_response(*, team_id: int, run_id: int, after: int) -> EventStreamResponse:
    """The stream of the run's events after `after`, counted against the team's slots; the caller has
    checked that the run is the team's (or that the user may see it)."""
    key = stream_slot_take(team_id=team_id)
    return EventStreamResponse(run_event_stream(run_id=run_id, after=after), on_close=lambda: stream_slot_give_back(key))
