"""Settings for budgetsvc, read from the environment (see .env.example and docs/configuration.md).

With nothing set, the service runs on embedded defaults: a SQLite file and Celery's filesystem
transport under ``var/``, and a secret key and credentials key generated for the install and kept
there. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to PostgreSQL and Redis.
"""

import ipaddress
import secrets
from pathlib import Path

import environ
from kombu import Queue
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

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
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)

DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
THIRD_PARTY_APPS = ["rest_framework"]
LOCAL_APPS = ["workflows"]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

MIDDLEWARE = [
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
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=10)
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Each MCP exchange logs every request it sends, URL and query (which may carry a token) included.
    "loggers": {name: {"level": "WARNING"} for name in ("httpx2", "mcp")},
}
