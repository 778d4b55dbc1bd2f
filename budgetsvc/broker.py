"""Celery's filesystem transport, the embedded broker of `make run`, with messages that appear whole.

kombu's own transport creates a message file under its final name and then writes into it. A worker
polling the folder in that instant moves and reads an empty or partial file, fails to decode it, and
stops with "Unrecoverable error: JSONDecodeError". Here a message is written under a name no consumer
looks for and then renamed, which is atomic within one folder: a consumer sees the whole file or none.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

# Consumers take only files named "<time>_<uuid>.<queue>.msg"; a file being written carries this suffix.
PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # The name sorts by send time, as kombu's does, so consumers still take messages in order.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + PARTIAL_SUFFIX, "wb") as partial:
                partial.write(dumps(payload).encode())
            os.replace(path + PARTIAL_SUFFIX, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
