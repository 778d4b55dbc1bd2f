"""Test settings: the same settings as production, isolated from a `make run` sharing the machine."""

import os
import secrets
import tempfile
import uuid
from pathlib import Path

# Set before the product's settings are read. No test writes into the repository's var/ (the
# product's settings would generate the install's secrets there). The test process and the service
# processes that tests start share one secret key, as a deployment's machines do. Tests of the
# embedded default's generated secrets start processes without it (tests/security/test_secrets.py).
os.environ["BUDGETSVC_VAR_DIR"] = tempfile.mkdtemp(prefix="budgetsvc-test-var-")
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

from budgetsvc.settings import *  # noqa: E402, F403
from budgetsvc.settings import CACHES, CELERY_BROKER_URL, DATABASES, celery_queues, filesystem_transport_options

TEST_RUN_ID = uuid.uuid4().hex[:8]

# A queue of its own, so a worker of `make run` on the same broker never takes a test's messages.
CELERY_TASK_DEFAULT_QUEUE = f"budgetsvc-test-{TEST_RUN_ID}"
CELERY_TASK_QUEUES, CELERY_TASK_ROUTES = celery_queues(CELERY_TASK_DEFAULT_QUEUE)
WEBHOOK_RETRY_BASE_SECONDS = 0.2
PROVIDER_RETRY_BASE_SECONDS = 0.05
PROVIDER_RETRY_MAX_SECONDS = 0.2
# Tests give providers their credentials themselves; none leak in from the machine's environment.
OPENAI_API_KEY = OPENAI_BASE_URL = ANTHROPIC_API_KEY = ANTHROPIC_BASE_URL = ""
CREDENTIALS_ENCRYPTION_KEYS = []
# The tests' stand-in providers and webhook receivers listen on 127.0.0.1, which outbound requests
# may not reach unless allowed; tests/security/test_outbound.py takes this away to test the refusal.
OUTBOUND_ALLOWED_HOSTS = []
OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: the worker in the tests reads and writes the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"budgetsvc-test-{TEST_RUN_ID}.sqlite3")}
else:
    # A database of its own, so two test sessions on one server never drop each other's.
    DATABASES["default"]["TEST"] = {"NAME": f"test_budgetsvc_{TEST_RUN_ID}"}

# The test process's own threads (the in-process Celery worker, the concurrency tests) close their
# connections after each task or request, or the test database could not be dropped at the end.
# Worker processes that tests start keep the production setting.
DATABASES["default"]["CONN_MAX_AGE"] = 0

if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_transport_options(Path(tempfile.mkdtemp(prefix="budgetsvc-test-broker-")))

# No test is throttled but those of throttling (tests/api/test_throttles.py), which set their rates: a
# test polls the API as fast as it likes. Counts kept in Redis are apart from another session's.
API_THROTTLE_RATES = {}
if "KEY_PREFIX" in CACHES["default"]:
    CACHES["default"]["KEY_PREFIX"] += f"-test-{TEST_RUN_ID}"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# WhiteNoise warns on every request when STATIC_ROOT does not exist; tests never collect static files.
STATIC_ROOT = Path(tempfile.mkdtemp(prefix="budgetsvc-test-static-"))
