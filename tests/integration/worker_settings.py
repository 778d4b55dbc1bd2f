"""Settings for Celery processes that a fault test starts with a short visibility timeout.

The product's settings, plus Redis bookkeeping keys of their own. Kombu keeps every unacknowledged
message of a Redis database in one `unacked` hash, whatever its queue, and any consumer restores
the entries older than *its own* visibility timeout. A worker with a 3 s timeout on the shared keys
would hand other test sessions' (or a `make run`'s) long steps to second workers. Here it sees only
its own messages, and it looks for overdue ones every second instead of kombu's every ~100 s.
"""

import os

from budgetsvc.settings import *  # noqa: F403
from budgetsvc.settings import CELERY_BROKER_TRANSPORT_OPTIONS

_TAG = os.environ["TEST_UNACKED_TAG"]

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_key": f"unacked-{_TAG}",
    "unacked_index_key": f"unacked_index-{_TAG}",
    "unacked_mutex_key": f"unacked_mutex-{_TAG}",
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
