"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard library only.

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and events to fd 4,
each a JSON message ended by a NUL byte: no WebSocket client and no extra test dependency.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--remote-debugging-pipe",
]


class DevToolsError(Exception):
    pass


def _fd_above_4(fd: int) -> int:
    # The child moves the pipe ends to fds 3 and 4; ends numbered 3 or 4 already could clobber each other.
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Chromium:
    def __init__(self, *, profile: Path, log: Path, timeout: float = 30):
        commands_in, self._commands = map(_fd_above_4, os.pipe())
        self._replies, replies_out = map(_fd_above_4, os.pipe())
        self.log = log
        self.timeout = timeout
        with log.open("wb") as log_file:
            # Python cannot place an inherited fd at a chosen number without preexec_fn, which is unsafe
            # beside the live server's threads; bash's redirections do it in the child instead.
            self.process = subprocess.Popen(
                [
                    "bash",
                    "-c",
                    f'exec "$@" 3<&{commands_in} 4>&{replies_out} {commands_in}<&- {replies_out}>&-',
                    "chromium",
                    CHROMIUM,
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                pass_fds=(commands_in, replies_out),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        os.close(commands_in)
        os.close(replies_out)
        self._buffer = b""
        self._unclaimed: list[dict] = []  # events that arrived while waiting for something else
        self._last_id = 0

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc_info):
        try:
            if self.process.poll() is None:
                self.command("Browser.close")
                self.process.wait(timeout=10)
        except (DevToolsError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._commands)
            os.close(self._replies)

    def command(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self._next(lambda m, wanted=self._last_id: m.get("id") == wanted)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, event: str, session: str | None = None) -> dict:
        return self._next(lambda m: m.get("method") == event and m.get("sessionId") == session)["params"]

    def open_page(self, *, width: int, height: int) -> str:
        """A new tab of the given viewport; the DevTools session to drive it with."""
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        session = self.command("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.command("Page.enable", session)
        self.command(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        return session

    def navigate(self, session: str, url: str) -> None:
        self.command("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)

    def evaluate(self, session: str, expression: str):
        result = self.command("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")  # none for a script whose value is undefined (a click)

    def wait_until(self, session: str, expression: str, *, timeout: float | None = None):
        """Evaluate `expression` until it is truthy (a page that updates itself, a form that submits); its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not (value := self.evaluate(session, expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true within {timeout or self.timeout}s: {expression}")
            time.sleep(0.1)
        return value

    def fill(self, session: str, selector: str, value: str) -> None:
        """Type `value` into the field, as far as the page's scripts can tell."""
        self.evaluate(
            session,
            f"""(() => {{
              const field = document.querySelector({json.dumps(selector)});
              field.value = {json.dumps(value)};
              field.dispatchEvent(new Event("input", {{bubbles: true}}));
              field.dispatchEvent(new Event("change", {{bubbles: true}}));
            }})()""",
        )

    def click(self, session: str, selector: str, *, navigates: bool = True) -> None:
        """Click the element; with `navigates`, wait for the page it leads to (a submitted form) to load."""
        self.evaluate(session, f"document.querySelector({json.dumps(selector)}).click()")
        if navigates:
            self.wait_for("Page.loadEventFired", session)

    def screenshot(self, session: str) -> bytes:
        return base64.b64decode(self.command("Page.captureScreenshot", session, format="png")["data"])

    def _next(self, wanted) -> dict:
        for message in self._unclaimed:
            if wanted(message):
                self._unclaimed.remove(message)
                return message
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                self._unclaimed.append(message)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._replies], [], [], remaining)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout}s; see {self.log}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise DevToolsError(f"Chromium exited; see {self.log}")
            self._buffer += chunk


def png_distinct_bytes(png: bytes) -> int:
    """How many byte values the decoded image data uses: a blank image uses a handful, a page hundreds."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    data, offset = b"", 8
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset : offset + 8])
        if kind == b"IDAT":
            data += png[offset + 8 : offset + 8 + length]
        offset += 12 + length  # length, type, data, CRC
    return len(set(zlib.decompress(data)))
