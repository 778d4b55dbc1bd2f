"""Settings for budgetsvc, read from the environment (see .env.example and docs/configuration.md).

With nothing set, the service runs on embedded defaults: a SQLite file and Celery's filesystem
transport under ``var/``, and a secret key and credentials key generated for the install and kept
there. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to PostgreSQL and Redis.
"""

import ipaddress
import re
import secrets
from pathlib import Path

import environ
from kombu import Queue
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django_guid.integrations import CeleryIntegration

from budgetsvc.database import postgresql_dead_peer_options
from budgetsvc.private_files import install_secret, private_directory, private_sqlite_file
from workflows.definition.providers import route_problems

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

VAR_DIR = Path(env("BUDGETSVC_VAR_DIR", default=str(BASE_DIR / "var")))
private_directory(path=VAR_DIR)

# Unset, a key generated on the install's first start and kept in VAR_DIR/secret-key (mode 0600).
# No two installs share it. Every machine of a deployment needs the same key, so production sets it
# (docs/operations.md#production-settings). SECRET_KEY_FILE names the file, for the deploy checks.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
SECRET_KEY_FILE = None if SECRET_KEY else VAR_DIR / "secret-key"
if SECRET_KEY_FILE:
    SECRET_KEY = install_secret(path=SECRET_KEY_FILE, generate=lambda: secrets.token_urlsafe(50))
# Earlier keys, still accepted for signatures while a new DJANGO_SECRET_KEY is rolled out.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. The defaults suit `make run` on http://127.0.0.1. A production deployment behind a proxy that
# terminates TLS sets them as docs/operations.md#production-settings shows; then `check --deploy`
# reports nothing.
SECURE_PROXY_SSL_HEADER = env.tuple("DJANGO_SECURE_PROXY_SSL_HEADER", default=None)
if SECURE_PROXY_SSL_HEADER is not None and len(SECURE_PROXY_SSL_HEADER) != 2:
    raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER must be a header and a value, e.g. HTTP_X_FORWARDED_PROTO,https.")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_SSL_HOST = env("DJANGO_SECURE_SSL_HOST", default=None)
SECURE_REDIRECT_EXEMPT = env.list("DJANGO_SECURE_REDIRECT_EXEMPT", default=[])
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured("DJANGO_SECURE_HSTS_SECONDS must be 0 (no HSTS header) or more.")
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = env.bool("DJANGO_SECURE_CONTENT_TYPE_NOSNIFF", default=True)
SECURE_REFERRER_POLICY = env("DJANGO_SECURE_REFERRER_POLICY", default="same-origin")
SECURE_CROSS_ORIGIN_OPENER_POLICY = env("DJANGO_SECURE_CROSS_ORIGIN_OPENER_POLICY", default="same-origin")

# The admin's two cookies, each setting from DJANGO_<setting>; the defaults are Django's, except that
# the session ends after 12 hours rather than two weeks (an admin session can adjust the ledger).
SAME_SITE_VALUES = ("Lax", "Strict", "None")
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
SESSION_COOKIE_HTTPONLY = env.bool("DJANGO_SESSION_COOKIE_HTTPONLY", default=True)
SESSION_COOKIE_SAMESITE = env("DJANGO_SESSION_COOKIE_SAMESITE", default="Lax")
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_COOKIE_AGE", default=12 * 3600)
SESSION_COOKIE_NAME = env("DJANGO_SESSION_COOKIE_NAME", default="sessionid")
SESSION_COOKIE_DOMAIN = env("DJANGO_SESSION_COOKIE_DOMAIN", default=None)
SESSION_COOKIE_PATH = env("DJANGO_SESSION_COOKIE_PATH", default="/")
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("DJANGO_SESSION_EXPIRE_AT_BROWSER_CLOSE", default=False)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)
CSRF_COOKIE_HTTPONLY = env.bool("DJANGO_CSRF_COOKIE_HTTPONLY", default=False)
CSRF_COOKIE_SAMESITE = env("DJANGO_CSRF_COOKIE_SAMESITE", default="Lax")
CSRF_COOKIE_AGE = env.int("DJANGO_CSRF_COOKIE_AGE", default=52 * 7 * 24 * 3600)
CSRF_COOKIE_NAME = env("DJANGO_CSRF_COOKIE_NAME", default="csrftoken")
CSRF_COOKIE_DOMAIN = env("DJANGO_CSRF_COOKIE_DOMAIN", default=None)
CSRF_COOKIE_PATH = env("DJANGO_CSRF_COOKIE_PATH", default="/")
CSRF_USE_SESSIONS = env.bool("DJANGO_CSRF_USE_SESSIONS", default=False)


def check_cookie(name: str, *, same_site: str, secure: bool, age: int) -> None:
    if same_site not in SAME_SITE_VALUES:
        raise ImproperlyConfigured(f"DJANGO_{name}_COOKIE_SAMESITE must be one of {', '.join(SAME_SITE_VALUES)}.")
    # Browsers drop a SameSite=None cookie that is not Secure, which would make the admin unusable.
    if same_site == "None" and not secure:
        raise ImproperlyConfigured(f"DJANGO_{name}_COOKIE_SAMESITE=None needs DJANGO_{name}_COOKIE_SECURE=true.")
    if age < 60:
        raise ImproperlyConfigured(f"DJANGO_{name}_COOKIE_AGE must be at least 60 seconds.")


check_cookie("SESSION", same_site=SESSION_COOKIE_SAMESITE, secure=SESSION_COOKIE_SECURE, age=SESSION_COOKIE_AGE)
check_cookie("CSRF", same_site=CSRF_COOKIE_SAMESITE, secure=CSRF_COOKIE_SECURE, age=CSRF_COOKIE_AGE)

DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
THIRD_PARTY_APPS = ["rest_framework", "django_filters", "django_guid", "drf_spectacular", "drf_spectacular_sidecar"]
LOCAL_APPS = ["workflows"]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer whatever the Host header (workflows/api/probes.py).
    "workflows.api.probes.ProbeMiddleware",
    # Next, so that every other response carries the request id and every log line of the request has it.
    "budgetsvc.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "workflows.api.middleware.UnsafeTextMiddleware",
]

ROOT_URLCONF = "budgetsvc.urls"
WSGI_APPLICATION = "budgetsvc.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'budgetsvc.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker both write: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30),
    }
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        private_sqlite_file(path=Path(DATABASES["default"]["NAME"]))
# Persistent connections: a worker process keeps its connection from task to task instead of paying
# for a new one (a few ms over loopback) on every step. Each is checked before its first use in a
# task or request, so a connection the server dropped is replaced, not used. 0 closes after each.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
# How long a PostgreSQL connection's peer may stay silent before either end gives up on it: TCP
# keepalives and libpq's tcp_user_timeout on the worker's side, the session's keepalives on the
# server's. Without them a worker cut off from the network waits on a query, and PostgreSQL keeps its
# session and its steps' attempt locks, for as long as the operating system retransmits: hours.
DATABASE_DEAD_PEER_SECONDS = env.int("DATABASE_DEAD_PEER_SECONDS", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_DEAD_PEER_SECONDS:
    # 0 leaves it to the operating system and postgresql.conf: for a pooler that refuses `options`.
    if DATABASE_DEAD_PEER_SECONDS < 3:
        raise ImproperlyConfigured("DATABASE_DEAD_PEER_SECONDS must be 0 (off) or at least 3.")
    DATABASES["default"]["OPTIONS"] = postgresql_dead_peer_options(
        DATABASES["default"].get("OPTIONS", {}), seconds=DATABASE_DEAD_PEER_SECONDS
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["workflows.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["workflows.api.auth.HasTeamApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["workflows.api.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "workflows.api.pagination.NewestFirstCursorPagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    "EXCEPTION_HANDLER": "workflows.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_METADATA_CLASS": "workflows.api.metadata.InputMetadata",
}

# The OpenAPI schema (/api/v1/schema/) and its Swagger UI (/api/v1/docs/), which any caller may read: they
# describe the API, not any team's data. Swagger UI's files come from the sidecar app through the static
# files, never a CDN. The schema lives in workflows/api/schema.py (docs/api.md, "The schema").
SPECTACULAR_SETTINGS = {
    "TITLE": "budgetsvc API",
    "DESCRIPTION": "Budget-governed execution of conductor-compatible LLM-agent workflows.",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # The staff endpoint's scheme, which its view names itself (workflows/api/staff.py).
    "APPEND_COMPONENTS": {"securitySchemes": {"staffBasic": {"type": "http", "scheme": "basic"}}},
    # One name for the budget modes, whichever field carries them (budget_mode, a period budget's mode).
    "ENUM_NAME_OVERRIDES": {"BudgetModeEnum": "workflows.models.BudgetMode"},
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
# Longest a step may run; the broker's visibility timeout must outlast it (docs/operations.md).
STEP_SOFT_TIME_LIMIT_SECONDS = env.int("STEP_SOFT_TIME_LIMIT_SECONDS", default=300)
CELERY_VISIBILITY_TIMEOUT_SECONDS = env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=3600)


def filesystem_transport_options(folder: Path) -> dict:
    """Options for Celery's filesystem transport, with every folder it uses under `folder`."""
    # The transport needs its folders to exist before the first message.
    for name in ("queue", "rejected", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        # Files that are not messages go here (budgetsvc/broker.py); a rename, so on the queue's filesystem.
        "rejected_folder": str(folder / "rejected"),
        "control_folder": str(folder / "control"),
        # Workers look for new message files this often (seconds); kombu's default of 1 s is
        # noticeable when every step of a run waits for it.
        "polling_interval": 0.1,
    }


if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and not CELERY_BROKER_URL.startswith("filesystem://"):
    # A broker that redelivers needs the PostgreSQL lock that tells a crashed step from a live one.
    raise ImproperlyConfigured(
        "A CELERY_BROKER_URL other than filesystem:// needs DATABASE_URL to name a PostgreSQL database; "
        "SQLite goes with the embedded filesystem:// broker only."
    )
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's transport, with messages written whole before a worker can see them (budgetsvc/broker.py).
    CELERY_BROKER_TRANSPORT = "budgetsvc.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_transport_options(
        Path(env("CELERY_FILESYSTEM_BROKER_DIR", default=str(VAR_DIR / "broker")))
    )
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The API's filters and throttles (docs/api.md#filters, docs/api.md#throttling).
REST_FRAMEWORK["DEFAULT_FILTER_BACKENDS"] = ["workflows.api.filters.FilterBackend"]
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["workflows.api.throttles.ApiKeyRateThrottle"]


def throttle_rate(variable: str, *, default: str) -> str | None:
    """A rate such as 120/minute from the environment; None, for no throttling, from "0" or "off"."""
    given = env(variable, default=default).strip()
    if given.lower() in ("0", "off"):
        return None
    if not re.fullmatch(r"[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)", given):
        raise ImproperlyConfigured(f"{variable} must be a rate such as 120/minute, or 0 or off; not {given!r}.")
    return given


# Requests per API key, by scope; `staff` counts per user on the staff endpoint.
API_THROTTLE_RATES = {
    "read": throttle_rate("API_THROTTLE_READ", default="1200/minute"),
    "write": throttle_rate("API_THROTTLE_WRITE", default="120/minute"),
    "report": throttle_rate("API_THROTTLE_REPORT", default="60/minute"),
    "staff": throttle_rate("API_THROTTLE_STAFF", default="60/minute"),
}


# Server-sent events of a run's events (GET /api/v1/runs/<id>/events/stream, the admin's run page;
# workflows/api/streams.py). A stream polls the database every EVENT_STREAM_POLL_SECONDS, says it is alive
# after EVENT_STREAM_KEEP_ALIVE_SECONDS of silence, and is closed after EVENT_STREAM_MAX_SECONDS, for its
# client to reconnect with Last-Event-ID. A team holds at most EVENT_STREAM_MAX_PER_TEAM at once, counted
# in the default cache.
EVENT_STREAM_POLL_SECONDS = env.float("EVENT_STREAM_POLL_SECONDS", default=0.5)
EVENT_STREAM_KEEP_ALIVE_SECONDS = env.float("EVENT_STREAM_KEEP_ALIVE_SECONDS", default=15)
EVENT_STREAM_MAX_SECONDS = env.int("EVENT_STREAM_MAX_SECONDS", default=300)
EVENT_STREAM_MAX_PER_TEAM = env.int("EVENT_STREAM_MAX_PER_TEAM", default=10)
if not (
    0.05 <= EVENT_STREAM_POLL_SECONDS <= 60
    and 1 <= EVENT_STREAM_KEEP_ALIVE_SECONDS <= 300
    and 1 <= EVENT_STREAM_MAX_SECONDS <= 3600
    and 0 <= EVENT_STREAM_MAX_PER_TEAM <= 1000
):
    raise ImproperlyConfigured(
        "EVENT_STREAM_POLL_SECONDS must be 0.05 to 60, EVENT_STREAM_KEEP_ALIVE_SECONDS 1 to 300, "
        "EVENT_STREAM_MAX_SECONDS 1 to 3600 and EVENT_STREAM_MAX_PER_TEAM 0 to 1000."
    )


def cache_from_url(url: str) -> dict:
    """django-environ's reading of a cache URL, with its ?key_prefix=, ?timeout= and ?version= where Django
    reads them: django-environ leaves them in lower case for Django's Redis backend, which ignores them so."""
    config = environ.Env.cache_url_config(url)
    for option in ("key_prefix", "timeout", "version"):
        if option in config:
            config[option.upper()] = config.pop(option)
    return config


# The throttles count in the default cache, which every web process must share: unset, the Redis of a
# redis:// broker (its keys apart by their prefix), else files under VAR_DIR.
if env("CACHE_URL", default=""):
    CACHES = {"default": cache_from_url(env("CACHE_URL"))}
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "budgetsvc-cache",
            # A Redis that does not answer holds a request this long at most; the throttles then let it through.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # Django culls a third of the entries past its default of 300, throttle counts included.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }


def celery_queues(default_queue: str) -> tuple[tuple[Queue, ...], dict]:
    """Steps on the default queue; webhook alerts on a queue of their own, so a slow endpoint
    never holds up a step. A worker started without -Q consumes both."""
    alerts_queue = f"{default_queue}-alerts"
    return (Queue(default_queue), Queue(alerts_queue)), {"workflows.deliver_webhook": {"queue": alerts_queue}}


CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="budgetsvc")
CELERY_TASK_QUEUES, CELERY_TASK_ROUTES = celery_queues(CELERY_TASK_DEFAULT_QUEUE)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = STEP_SOFT_TIME_LIMIT_SECONDS
CELERY_TASK_TIME_LIMIT = STEP_SOFT_TIME_LIMIT_SECONDS + 30
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection around every task, whatever CONN_MAX_AGE
# says, unless DB_REUSE_MAX is set; then it closes them only every that many tasks.
# budgetsvc/celery.py applies CONN_MAX_AGE and the health checks around each task instead.
CELERY_DB_REUSE_MAX = 1000 if DATABASES["default"]["CONN_MAX_AGE"] else None

# A step whose worker dies is delivered again; after this many redeliveries its run fails.
STEP_MAX_REDELIVERIES = env.int("STEP_MAX_REDELIVERIES", default=3)
# Under an enforced team budget, a run draws a slice of it for this many steps like the next one, so
# that most of its steps are admitted without locking the team (workflows/services/escrow.py).
TEAM_SLICE_STEPS = env.int("TEAM_SLICE_STEPS", default=16)

# The sweeper (workflows/services/sweeper.py) sends stuck steps on. Run exactly one `celery beat`.
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=15)
# A pending step sent longer ago than this lost its message; keep it above the longest queue wait.
SWEEP_PENDING_AFTER_SECONDS = env.int("SWEEP_PENDING_AFTER_SECONDS", default=60)
# Webhook deliveries (workflows/services/webhooks.py): the sweep sends each due attempt, and sends
# again a delivery whose message has not started an attempt WEBHOOK_LOST_AFTER_SECONDS after it was sent.
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=5)
WEBHOOK_LOST_AFTER_SECONDS = env.int("WEBHOOK_LOST_AFTER_SECONDS", default=300)
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-steps": {
        "task": "workflows.sweep_stuck_steps",
        "schedule": SWEEP_INTERVAL_SECONDS,
        # A sweep still queued when the next is due is dropped, so none pile up while no worker runs.
        "options": {"expires": SWEEP_INTERVAL_SECONDS},
    },
    "purge-idempotency-keys": {
        "task": "workflows.purge_idempotency_keys",
        "schedule": 3600,
        "options": {"expires": 3600},
    },
    # Webhook deliveries: every retry, and every first attempt whose message was lost.
    "sweep-webhook-deliveries": {
        "task": "workflows.sweep_webhook_deliveries",
        "schedule": WEBHOOK_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": WEBHOOK_SWEEP_INTERVAL_SECONDS},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Health and metrics (docs/operations.md#health-and-metrics). Each readiness check, and each source
# /metrics reads at scrape time, is given up on after HEALTH_CHECK_TIMEOUT_SECONDS. /readyz fails once
# the last sweep is older than HEALTH_SWEEP_MAX_AGE_SECONDS (a few sweep intervals). /metrics answers
# only a request bearing METRICS_TOKEN, and is off (404) while it is unset; teams are named in its
# labels only when listed in METRICS_TEAMS, every other team as "other".
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2)
HEALTH_SWEEP_MAX_AGE_SECONDS = env.float("HEALTH_SWEEP_MAX_AGE_SECONDS", default=max(60, 4 * SWEEP_INTERVAL_SECONDS))
if not 0 < HEALTH_CHECK_TIMEOUT_SECONDS <= 30 or HEALTH_SWEEP_MAX_AGE_SECONDS <= SWEEP_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        "HEALTH_CHECK_TIMEOUT_SECONDS must be above 0 and at most 30, and HEALTH_SWEEP_MAX_AGE_SECONDS above SWEEP_INTERVAL_SECONDS."
    )
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_TEAMS = env.list("METRICS_TEAMS", default=[])
# A Celery worker's own /metrics, for workers on machines or in containers of their own, whose counters
# the web's /metrics cannot sum: served on this port by the worker's main process (0: not served).
METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", default=0)
if METRICS_WORKER_PORT and not METRICS_TOKEN:
    raise ImproperlyConfigured("METRICS_WORKER_PORT needs METRICS_TOKEN: a worker's /metrics answers only with it.")
if not 0 <= METRICS_WORKER_PORT <= 65535:
    raise ImproperlyConfigured("METRICS_WORKER_PORT must be a TCP port, or 0 for none.")
if len(METRICS_TEAMS) > 100:
    raise ImproperlyConfigured("METRICS_TEAMS may list at most 100 teams: each is a label of its own.")
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5)
# The longest one attempt may take in all (DNS, each address tried, an answer sent a byte at a time):
# the delivery task's soft time limit; its hard limit ends the process 5 s later.
WEBHOOK_ATTEMPT_SECONDS = 4 * WEBHOOK_TIMEOUT_SECONDS
# Twelve attempts, the waits doubling from 10 s, span about 5 hours and 40 minutes.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=12)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=10)
# After a rotation the previous webhook secret signs beside the new one for this long.
WEBHOOK_SECRET_ROTATION_HOURS = env.float("WEBHOOK_SECRET_ROTATION_HOURS", default=24)
if WEBHOOK_MAX_ATTEMPTS < 1 or WEBHOOK_SECRET_ROTATION_HOURS < 0 or WEBHOOK_SWEEP_INTERVAL_SECONDS <= 0:
    raise ImproperlyConfigured(
        "WEBHOOK_MAX_ATTEMPTS must be at least 1, WEBHOOK_SECRET_ROTATION_HOURS at least 0, and "
        "WEBHOOK_SWEEP_INTERVAL_SECONDS above 0."
    )
DEFINITION_MAX_BYTES = env.int("DEFINITION_MAX_BYTES", default=256 * 1024)
# The largest a YAML definition may be once its aliases are expanded (what is stored and loaded).
DEFINITION_MAX_EXPANDED_BYTES = env.int("DEFINITION_MAX_EXPANDED_BYTES", default=1024 * 1024)
# CPU seconds one template render (a prompt, an output, a route condition) may take before it fails
# as a TemplateError. Renders run outside transactions; this bounds how long one holds a worker.
TEMPLATE_RENDER_SECONDS = env.float("TEMPLATE_RENDER_SECONDS", default=2.0)
# The most items a for_each source may hold: refused at POST /runs when the source is an input,
# and failing the run (ForEachSourceError) before any branch runs when it is an agent's output.
FOR_EACH_MAX_ITEMS = env.int("FOR_EACH_MAX_ITEMS", default=1000)

# Real providers (docs/providers.md). A call is abandoned after PROVIDER_TIMEOUT_SECONDS, which must
# leave the step's soft time limit room to record the failure.
PROVIDER_TIMEOUT_SECONDS = env.float("PROVIDER_TIMEOUT_SECONDS", default=min(120.0, STEP_SOFT_TIME_LIMIT_SECONDS * 0.8))
if not 0 < PROVIDER_TIMEOUT_SECONDS < STEP_SOFT_TIME_LIMIT_SECONDS:
    raise ImproperlyConfigured("PROVIDER_TIMEOUT_SECONDS must be above 0 and below STEP_SOFT_TIME_LIMIT_SECONDS.")
# The backend each of conductor's runtime provider names reaches for a team that has not routed it
# itself, as "copilot=openai,claude-agent-sdk=anthropic" (docs/providers.md#provider-routes).
PROVIDER_ROUTES = env.dict("PROVIDER_ROUTES", default={})
if unroutable := route_problems(PROVIDER_ROUTES):
    raise ImproperlyConfigured(
        "PROVIDER_ROUTES: " + "; ".join(f"'{provider}' {message}" for provider, message in unroutable)
    )
# Conductor's script steps (docs/workflows.md#script). Off unless the operator turns them on for the
# service, and then only for the teams allowed to: a script runs as the worker's user and can read
# what it can (docs/operations.md#script-steps). Then the longest a script may run, the memory and the
# output it may use, and where its command is looked up.
SCRIPT_STEPS_ENABLED = env.bool("SCRIPT_STEPS_ENABLED", default=False)
SCRIPT_TIMEOUT_SECONDS = env.int("SCRIPT_TIMEOUT_SECONDS", default=max(1, min(60, STEP_SOFT_TIME_LIMIT_SECONDS // 2)))
if not 0 < SCRIPT_TIMEOUT_SECONDS < STEP_SOFT_TIME_LIMIT_SECONDS:
    raise ImproperlyConfigured("SCRIPT_TIMEOUT_SECONDS must be above 0 and below STEP_SOFT_TIME_LIMIT_SECONDS.")
SCRIPT_MAX_MEMORY_MB = env.int("SCRIPT_MAX_MEMORY_MB", default=512)
SCRIPT_MAX_OUTPUT_BYTES = env.int("SCRIPT_MAX_OUTPUT_BYTES", default=1024 * 1024)
SCRIPT_PATH = env.str("SCRIPT_PATH", default="/usr/local/bin:/usr/bin:/bin")
# MCP tool servers an agent's tools come from (workflows/toolservers): the longest one exchange with a
# server (listing its tools, or one call) may take, and the most bytes one answer (an HTTP response
# body, an SSE stream, a line from a stdio server) may hold. A stdio server is started like a script:
# on SCRIPT_PATH, with SCRIPT_MAX_MEMORY_MB of address space.
MCP_TIMEOUT_SECONDS = env.float("MCP_TIMEOUT_SECONDS", default=min(60.0, STEP_SOFT_TIME_LIMIT_SECONDS * 0.8))
if not 0 < MCP_TIMEOUT_SECONDS < STEP_SOFT_TIME_LIMIT_SECONDS:
    raise ImproperlyConfigured("MCP_TIMEOUT_SECONDS must be above 0 and below STEP_SOFT_TIME_LIMIT_SECONDS.")
MCP_MAX_RESPONSE_BYTES = env.int("MCP_MAX_RESPONSE_BYTES", default=4 * 1024 * 1024)
if MCP_MAX_RESPONSE_BYTES < 1024:
    raise ImproperlyConfigured("MCP_MAX_RESPONSE_BYTES must be at least 1024.")
# Transient errors (429, 5xx, timeouts, lost connections) are retried this many times per step,
# with exponential backoff and jitter from the base, capped at the max.
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=3)
PROVIDER_RETRY_BASE_SECONDS = env.float("PROVIDER_RETRY_BASE_SECONDS", default=2)
PROVIDER_RETRY_MAX_SECONDS = env.float("PROVIDER_RETRY_MAX_SECONDS", default=60)
# The most tokens one call may report, each count and all four together: usage above it (or negative,
# or not a whole number) is billed at the step's worst-case estimate instead. At most 10,000,000, which
# keeps every count far below the ledger's 2^31 and is above any model's context window.
PROVIDER_USAGE_MAX_TOKENS = env.int("PROVIDER_USAGE_MAX_TOKENS", default=10_000_000)
if not 1 <= PROVIDER_USAGE_MAX_TOKENS <= 10_000_000:
    raise ImproperlyConfigured("PROVIDER_USAGE_MAX_TOKENS must be from 1 to 10000000.")
# The most tool calls one answer of a tool loop's model may ask for, and the largest the arguments of
# one may be (their JSON text): a broken or hostile server could ask for thousands, or send megabytes,
# each of which the loop would run and keep. An answer over either fails its step (billed, not retried).
PROVIDER_TOOL_CALLS_MAX = env.int("PROVIDER_TOOL_CALLS_MAX", default=64)
PROVIDER_TOOL_ARGUMENTS_MAX_BYTES = env.int("PROVIDER_TOOL_ARGUMENTS_MAX_BYTES", default=64 * 1024)
if PROVIDER_TOOL_CALLS_MAX < 1 or PROVIDER_TOOL_ARGUMENTS_MAX_BYTES < 1:
    raise ImproperlyConfigured("PROVIDER_TOOL_CALLS_MAX and PROVIDER_TOOL_ARGUMENTS_MAX_BYTES must be at least 1.")
# Fernet keys (comma-separated, newest first) that encrypt team provider credentials. Unset, one key is
# derived from DJANGO_SECRET_KEY (and one from each of its fallbacks, to decrypt). With DJANGO_SECRET_KEY
# unset too (the embedded default), a key generated on the first start and kept in
# VAR_DIR/credentials-key (mode 0600) is used instead (workflows/services/credentials.py).
CREDENTIALS_ENCRYPTION_KEYS = env.list("CREDENTIALS_ENCRYPTION_KEYS", default=[])
CREDENTIALS_INSTALL_KEY_FILE = VAR_DIR / "credentials-key"
CREDENTIALS_INSTALL_KEY = (
    install_secret(path=CREDENTIALS_INSTALL_KEY_FILE, generate=lambda: Fernet.generate_key().decode())
    if SECRET_KEY_FILE and not CREDENTIALS_ENCRYPTION_KEYS
    else ""
)
# Used when a team has no credentials of its own for a provider.
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL", default="")
# Outbound requests (webhooks, provider calls, the base URLs above included) never reach loopback,
# private, link-local, CGNAT, multicast, reserved or cloud metadata addresses, except these hosts
# ("host" or "host:port") and networks (CIDRs), comma-separated (docs/operations.md#outbound-requests).
OUTBOUND_ALLOWED_HOSTS = env.list("OUTBOUND_ALLOWED_HOSTS", default=[])
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=[])
try:
    [ipaddress.ip_network(network, strict=False) for network in OUTBOUND_ALLOWED_NETWORKS]
except ValueError as exc:
    raise ImproperlyConfigured(f"OUTBOUND_ALLOWED_NETWORKS must list networks such as 10.0.0.0/8: {exc}") from None
# The output cap, and so the estimate, of an agent step whose agent and runtime set no max_tokens
# (docs/budgets.md#the-output-cap); lowered to the model's max_output_tokens when that is smaller.
DEFAULT_MAX_TOKENS = env.int("DEFAULT_MAX_TOKENS", default=4096)
if not 1 <= DEFAULT_MAX_TOKENS <= 1_000_000:
    raise ImproperlyConfigured("DEFAULT_MAX_TOKENS must be from 1 to 1000000.")
PRICES_FILE = Path(env("PRICES_FILE", default=str(BASE_DIR / "workflows" / "data" / "prices.json")))

# The request id (budgetsvc/request_id.py): django-guid holds it, and its CeleryIntegration passes it
# to every task in the task's headers. Celery's processes log as LOGGING says (use_django_logging).
DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "INTEGRATIONS": [CeleryIntegration(use_django_logging=True)],
}

# One line per record on stderr: a JSON object (the default, for log collectors), or plain text for a
# terminal (docs/operations.md#logs). gunicorn's error and access logs and Celery's own loggers go the
# same way; LOG_LEVEL applies to all of them (Celery's --loglevel is not used).
LOG_FORMAT = env("LOG_FORMAT", default="json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or plain.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "budgetsvc.logs.ContextFilter"},
    },
    "formatters": {
        # "timestamp" named in the format only puts it first; timestamp=True fills it in (ISO 8601, UTC).
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{timestamp}{levelname}{name}{message}{request_id}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
        "plain": {
            "()": "logging.Formatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            "defaults": {"request_id": "-"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Each MCP exchange logs every request it sends, URL and query (which may carry a token) included.
        **{name: {"level": "WARNING"} for name in ("httpx2", "mcp")},
        # django-guid logs each id it sets or clears.
        "django_guid": {"level": "WARNING"},
        # gunicorn's and uvicorn's loggers, once the app is loaded in a worker (the master logs as gunicorn's
        # own configuration says). The access log is the app's (budgetsvc/asgi.py), written only when gunicorn
        # is given one (--access-logfile); uvicorn's own, without the request id or the duration, is off
        # (budgetsvc/gunicorn.py).
        "gunicorn.error": {"handlers": ["console"], "propagate": False},
        "uvicorn.error": {"handlers": ["console"], "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "propagate": False},
    },
}
