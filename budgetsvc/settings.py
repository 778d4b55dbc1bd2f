"""Settings for budgetsvc, read from the environment (see .env.example and docs/configuration.md).

With nothing set, the service runs on embedded defaults: a SQLite file and Celery's filesystem
transport under ``var/``. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to PostgreSQL and Redis.
"""

from pathlib import Path

import environ
from kombu import Queue
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

VAR_DIR = Path(env("BUDGETSVC_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-development-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

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
# Persistent connections: a worker process keeps its connection from task to task instead of paying
# for a new one (a few ms over loopback) on every step. Each is checked before its first use in a
# task or request, so a connection the server dropped is replaced, not used. 0 closes after each.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
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
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
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
# On PostgreSQL, the common case of a step's two transactions runs as one database function call
# each (workflows/services/step_functions.py). Off, every step takes the general path in Python.
STEP_FUNCTIONS = env.bool("STEP_FUNCTIONS", default=True)

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
# Transient errors (429, 5xx, timeouts, lost connections) are retried this many times per step,
# with exponential backoff and jitter from the base, capped at the max.
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=3)
PROVIDER_RETRY_BASE_SECONDS = env.float("PROVIDER_RETRY_BASE_SECONDS", default=2)
PROVIDER_RETRY_MAX_SECONDS = env.float("PROVIDER_RETRY_MAX_SECONDS", default=60)
# Fernet keys (comma-separated, newest first) that encrypt team provider credentials. Unset, one
# key is derived from DJANGO_SECRET_KEY, which suits development only.
CREDENTIALS_ENCRYPTION_KEYS = env.list("CREDENTIALS_ENCRYPTION_KEYS", default=[])
# Used when a team has no credentials of its own for a provider.
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL", default="")
PRICES_FILE = Path(env("PRICES_FILE", default=str(BASE_DIR / "workflows" / "data" / "prices.json")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
