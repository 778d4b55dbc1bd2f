"""A webhook endpoint on 127.0.0.1 for tests, and a signature check written from the Standard Webhooks
spec (https://www.standardwebhooks.com/), independent of workflows/webhook_signing.py."""

import base64
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next of `answers` (the last one repeats): a status code, or
    `(302, location)` for a redirect, after `delay` seconds. Keeps every request it got."""

    def __init__(self, *answers: int | tuple[int, str], delay: float = 0):
        self.answers = list(answers) or [204]
        self.delay = delay
        self.received: list[Received] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/budget"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received = self.server.received
        received.append(Received(self.path, {name.lower(): value for name, value in self.headers.items()}, body))
        time.sleep(self.server.delay)
        answers = self.server.answers
        answer = answers[min(len(received), len(answers)) - 1]
        status, location = answer if isinstance(answer, tuple) else (answer, None)
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def receiving(*answers: int | tuple[int, str], delay: float = 0) -> Iterator[Receiver]:
    server = Receiver(*answers, delay=delay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def spec_signature(*, secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,` and the base64 HMAC-SHA256, keyed by the base64-decoded secret after `whsec_`, of
    `{msg_id}.{timestamp}.{body}`."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    digest = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signatures_by(received: Received, *secrets: str) -> list[str]:
    """The request's `webhook-signature` entries, each named by the secret that made it ("?" if none)."""
    expected = {
        spec_signature(
            secret=secret, msg_id=received.headers["webhook-id"], timestamp=received.headers["webhook-timestamp"],
            body=received.body,
        ): secret
        for secret in secrets
    }  # fmt: skip
    return [expected.get(signature, "?") for signature in received.headers["webhook-signature"].split(" ")]


@contextmanager
def dripping(*, seconds: float) -> Iterator[str]:
    """A URL whose endpoint reads the request and sends its answer's status line and one header a byte
    at a time for `seconds`: each read arrives within any timeout, the answer never ends in time."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 204 No Content\r\nX-Drip: ")
                ends = time.monotonic() + seconds
                while time.monotonic() < ends:
                    connection.sendall(b"a")
                    time.sleep(0.1)
                connection.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return  # the sender gave up

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks/budget"
    finally:
        listener.close()
