"""Celery's filesystem transport, the embedded broker of `make run`, with messages that appear whole and
are taken by exactly one consumer.

kombu's own transport has three holes, all closed here by renames within the queue folder, which are
atomic on one filesystem: a name is either the old file's or the new one's, and of several processes
renaming the same file exactly one succeeds.

- Its producer creates a message file under its final name and then writes into it, so a worker polling
  the folder in that instant reads an empty or partial file and stops with "Unrecoverable error:
  JSONDecodeError". Here a message is written under a name no consumer looks for (`.partial`) and
  renamed when whole.
- Its consumer takes a file with `shutil.move` to the system's temporary folder, which is a copy and a
  delete when that folder is on another filesystem (a tmpfs /tmp): two consumers may both copy the file,
  to the same path, and one reads it while the other rewrites it. Here a consumer takes a file by
  renaming it in place (`.taken`), reads it and deletes it.
- A file that does not decode stops the worker. Here it is moved to the rejected folder with an ERROR
  log, and the consumer goes on with the next message.

A file that stays `.partial` or `.taken` for `LEFTOVER_SECONDS` was left by a process killed
mid-write or mid-read (a write or a read takes milliseconds) and is moved to the rejected folder with a
WARNING. A `.partial` file was never sent: its producer died before `_put` returned. A `.taken` file was
a message its consumer died with, as it would have with any message it had taken and not finished;
for steps, the sweeper finds the step such a message was for (docs/operations.md).
"""

import logging
import os
import uuid
from queue import Empty
from time import monotonic, time

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# Consumers take only files named "<time>_<uuid>.<queue>.msg"; a file being written or read carries one
# of these suffixes.
PARTIAL_SUFFIX = ".partial"
TAKEN_SUFFIX = ".taken"
LEFTOVER_SECONDS = 600


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # Consumers take the file whose name sorts first. kombu's names start with the time in ms, which
        # sorts by send time only while that has the same number of digits; zero-padded, it always does.
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + PARTIAL_SUFFIX, "wb") as partial:
                partial.write(dumps(payload).encode())
            os.replace(path + PARTIAL_SUFFIX, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc

    def _get(self, queue):
        for name in sorted(os.listdir(self.data_folder_in)):
            path = os.path.join(self.data_folder_in, name)
            if name.endswith((PARTIAL_SUFFIX, TAKEN_SUFFIX)):
                self._reject_if_left_over(path)
                continue
            if name.partition(".")[2] != f"{queue}.msg":
                continue
            try:
                os.rename(path, path + TAKEN_SUFFIX)
            except FileNotFoundError:
                continue  # another consumer took it first
            try:
                with open(path + TAKEN_SUFFIX, "rb") as taken:
                    data = taken.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
            message = self._decoded(data)
            if message is None:
                self._reject(path + TAKEN_SUFFIX, "is not a message", name=name)
                continue
            os.remove(path + TAKEN_SUFFIX)
            return message
        raise Empty()

    def _decoded(self, data: bytes) -> dict | None:
        """The message in a file's bytes, or None when they are not one: not UTF-8 JSON, or not a
        message kombu can hand on (its properties, its delivery tag, a body its encoding decodes)."""
        try:
            message = loads(data.decode())
        except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
            return None
        if not isinstance(message, dict) or not isinstance(message.get("properties"), dict):
            return None
        try:
            # What the worker does with it next: a message that fails here would stop the worker.
            self.Message(message, channel=self)
        except Exception:  # noqa: BLE001 - whatever kombu refuses, the file is not a message
            return None
        return message

    @property
    def rejected_folder(self) -> str:
        return self.transport_options["rejected_folder"]

    def _reject_if_left_over(self, path: str) -> None:
        try:
            # The inode's change time, which a rename sets: a message taken after waiting in the queue
            # an hour is not a leftover.
            age = time() - os.stat(path).st_ctime
        except FileNotFoundError:
            return  # renamed or rejected meanwhile
        if age > LEFTOVER_SECONDS:
            self._reject(path, f"was left by a process that died {age:.0f} s ago", level=logging.WARNING)

    def _reject(self, path: str, why: str, *, name: str | None = None, level: int = logging.ERROR) -> None:
        name = name or os.path.basename(path)
        rejected = os.path.join(self.rejected_folder, name)
        try:
            os.rename(path, rejected)
        except FileNotFoundError:
            return  # another consumer moved it first
        logger.log(level, "Broker file %s %s; moved to %s.", name, why, rejected)




class Transport(filesystem.Transport):
    Channel = Channel
