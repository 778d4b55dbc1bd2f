"""The embedded broker's transport: a consumer never sees a message before it is whole, every message is
taken by exactly one consumer, and a file that is not a message is moved aside rather than stopping one."""

import json
import logging
import subprocess
import sys
import time
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
# The time part of a message file's name that sorts before any message sent since the machine started.
OLDEST = "0" * 15


def message(body: str) -> dict:
    """A message as kombu's virtual channel stores it, with the properties it reads first."""
    return {"body": body, "properties": {"delivery_tag": body}}


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
    channel._put(QUEUE, message("whole"))

    assert seen_while_writing == []
    assert channel._get(QUEUE) == message("whole")


def test_a_message_left_half_written_by_a_killed_producer_is_never_delivered(channel, tmp_path):
    (tmp_path / "queue" / f"{OLDEST}_dead.{QUEUE}.msg{broker.PARTIAL_SUFFIX}").write_bytes(b'{"body": "x')
    channel._put(QUEUE, message("1"))

    assert channel._get(QUEUE) == message("1")
    with pytest.raises(Empty):
        channel._get(QUEUE)


@pytest.mark.parametrize(
    "content",
    [
        b"", b'{"body": "cut sho', b"\xff\xfe", b"[1, 2]", b'{"body": "no properties"}', b'{"properties": {}}',
        b'{"body": "abcde", "properties": {"delivery_tag": "t", "body_encoding": "base64"}}',
        b'{"body": "x", "properties": {"delivery_tag": "t", "body_encoding": "rot13"}}',
    ],
    ids=["empty", "cut short", "not utf-8", "not an object", "no properties", "no delivery tag", "bad base64", "unknown encoding"],
)  # fmt: skip
def test_a_file_that_is_not_a_message_is_moved_aside_and_the_next_message_taken(channel, tmp_path, caplog, content):
    # Named as an older message of the queue, so the consumer meets it first.
    (tmp_path / "queue" / f"{OLDEST}_bad.{QUEUE}.msg").write_bytes(content)
    channel._put(QUEUE, message("good"))

    with caplog.at_level(logging.ERROR, logger="budgetsvc.broker"):
        assert channel._get(QUEUE) == message("good")
    assert (tmp_path / "rejected" / f"{OLDEST}_bad.{QUEUE}.msg").read_bytes() == content
    assert f"Broker file {OLDEST}_bad.{QUEUE}.msg is not a message; moved to " in caplog.text
    assert sorted(path.name for path in (tmp_path / "queue").iterdir()) == []


def test_messages_are_taken_in_the_order_they_were_sent(channel, monkeypatch):
    # 999,999 ms and 1,000,000 ms after boot: kombu's unpadded names sorted the later one first.
    for milliseconds in (999_999, 1_000_000):
        monkeypatch.setattr(broker, "monotonic", lambda: milliseconds / 1000)
        channel._put(QUEUE, message(str(milliseconds)))
    assert [channel._get(QUEUE)["body"] for _ in range(2)] == ["999999", "1000000"]


def test_a_file_left_by_a_dead_process_is_moved_aside_once_it_is_old(channel, tmp_path, caplog, monkeypatch):
    partial = tmp_path / "queue" / f"{OLDEST}_dead.{QUEUE}.msg{broker.PARTIAL_SUFFIX}"
    partial.write_bytes(b'{"body": "x')
    with pytest.raises(Empty):
        channel._get(QUEUE)
    assert partial.exists()  # young: it may be a write in progress

    monkeypatch.setattr(broker, "LEFTOVER_SECONDS", 0)
    time.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="budgetsvc.broker"), pytest.raises(Empty):
        channel._get(QUEUE)
    assert not partial.exists()
    assert (tmp_path / "rejected" / partial.name).read_bytes() == b'{"body": "x'
    assert "was left by a process that died" in caplog.text


# Producers put numbered messages with a body long enough to take more than one write, and a checksum
# of it; consumers take messages until told the producers are done and then find the queue empty, and
# print each message's producer, number, and whether the body matched its checksum.
_PRODUCER = """
import hashlib, sys
from kombu import Connection
from budgetsvc.settings import filesystem_transport_options
from pathlib import Path
folder, queue, producer, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
connection = Connection("filesystem://", transport="budgetsvc.broker:Transport",
                        transport_options=filesystem_transport_options(Path(folder)))
channel = connection.channel()
for number in range(count):
    body = f"{producer}:{number}:" + "x" * (200_000 + number)
    digest = hashlib.sha256(body.encode()).hexdigest()
    channel._put(queue, {"body": body, "properties": {"delivery_tag": f"{producer}-{number}", "sha256": digest}})
"""

_CONSUMER = """
import hashlib, json, os, sys, time
from queue import Empty
from kombu import Connection
from budgetsvc.settings import filesystem_transport_options
from pathlib import Path
folder, queue, done = sys.argv[1], sys.argv[2], sys.argv[3]
connection = Connection("filesystem://", transport="budgetsvc.broker:Transport",
                        transport_options=filesystem_transport_options(Path(folder)))
channel = connection.channel()
while True:
    try:
        message = channel._get(queue)
    except Empty:
        if os.path.exists(done):
            try:
                message = channel._get(queue)
            except Empty:
                break
        else:
            time.sleep(0.001)
            continue
    producer, number, _ = message["body"].split(":", 2)
    whole = hashlib.sha256(message["body"].encode()).hexdigest() == message["properties"]["sha256"]
    print(json.dumps([int(producer), int(number), whole]), flush=True)
"""


def test_many_producers_and_consumers_on_one_queue_deliver_every_message_once_and_whole(tmp_path):
    producers, per_producer, consumers = 6, 150, 4
    folder, done = tmp_path / "broker", tmp_path / "producers-done"
    filesystem_transport_options(folder)

    def start(script, *args):
        return subprocess.Popen(
            [sys.executable, "-c", script, str(folder), QUEUE, *map(str, args)],
            cwd=settings.BASE_DIR, stdout=subprocess.PIPE, text=True,
        )

    consuming = [start(_CONSUMER, done) for _ in range(consumers)]
    producing = [start(_PRODUCER, producer, per_producer) for producer in range(producers)]
    for process in producing:
        assert process.wait(timeout=120) == 0
    done.touch()
    taken = []
    for process in consuming:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        taken.append([tuple(json.loads(line)) for line in output.splitlines()])

    everything = [message for by_one in taken for message in by_one]
    assert len(everything) == producers * per_producer
    assert {(producer, number) for producer, number, _ in everything} == {
        (producer, number) for producer in range(producers) for number in range(per_producer)
    }
    assert all(whole for _, _, whole in everything)
    assert all(by_one for by_one in taken), "every consumer took a share"
    assert list((folder / "queue").iterdir()) == list((folder / "rejected").iterdir()) == []


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="the embedded broker only")
def test_the_celery_app_uses_this_transport_on_the_embedded_broker():
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
