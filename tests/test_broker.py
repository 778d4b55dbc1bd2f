"""The embedded broker's transport: a consumer never sees a message before it is whole."""

from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem
from kombu.utils import json

from django.conf import settings

from budgetsvc import broker
from budgetsvc.celery import app
from budgetsvc.settings import filesystem_transport_options

QUEUE = "budgetsvc-broker-test"
TRANSPORT = "budgetsvc.broker:Transport"


@pytest.fixture
def channel(tmp_path):
    connection = Connection(
        "filesystem://", transport=TRANSPORT, transport_options=filesystem_transport_options(tmp_path)
    )
    channel = connection.channel()
    yield channel
    connection.release()


def test_a_message_is_invisible_to_consumers_until_it_is_written_whole(channel, monkeypatch):
    seen_while_writing = []
    real_dumps = json.dumps

    def dumps_while_a_consumer_looks(payload):
        # The producer has created its file and is about to write the message: the instant in which
        # kombu's own transport let a polling worker take an empty file and stop on JSONDecodeError.
        try:
            seen_while_writing.append(channel._get(QUEUE))
        except Empty:
            pass
        return real_dumps(payload)

    monkeypatch.setattr(broker, "dumps", dumps_while_a_consumer_looks)
    monkeypatch.setattr(filesystem, "dumps", dumps_while_a_consumer_looks)
    channel._put(QUEUE, {"body": "whole"})

    assert seen_while_writing == []
    assert channel._get(QUEUE) == {"body": "whole"}


def test_a_message_left_half_written_by_a_killed_producer_is_never_delivered(channel, tmp_path):
    (tmp_path / "queue" / f"1_dead.{QUEUE}.msg{broker.PARTIAL_SUFFIX}").write_bytes(b'{"body": "x')
    channel._put(QUEUE, {"number": 1})

    assert channel._get(QUEUE) == {"number": 1}
    with pytest.raises(Empty):
        channel._get(QUEUE)


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="the embedded broker only")
def test_the_celery_app_uses_this_transport_on_the_embedded_broker():
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
