"""Secrets at rest on the embedded default.

`make run` generates its own secret key and credentials key, each once per install and readable only
by the service's user, and its SQLite database is private too. An install upgraded from the old public
default still reads its teams' provider keys. The production environment documented in
docs/operations.md passes `check --deploy` without a warning.

Most tests here start processes with the settings of a fresh machine: no DJANGO_SECRET_KEY (the test
session sets one for its own processes, see tests/settings.py) and a var/ directory of their own.
"""

import base64
import hashlib
import io
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.conf import global_settings, settings
from django.core.management import call_command

from budgetsvc.private_files import install_secret
from tests.integration.conftest import service_env
from workflows.models import ProviderCredential
from workflows.services.credentials import credential_set, credentials_for

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
SECRET_VARIABLES = ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FALLBACKS", "CREDENTIALS_ENCRYPTION_KEYS")
# A process that reads the settings (nothing else, to start quickly) and prints its secret key and its
# generated credentials key.
SHOW_SECRETS = "from django.conf import settings; print(settings.SECRET_KEY); print(settings.CREDENTIALS_INSTALL_KEY)"


def without_secrets(env: dict) -> dict:
    return {name: value for name, value in env.items() if name not in SECRET_VARIABLES}


def fresh_machine_env(var_dir: Path) -> dict:
    """`make run` on a fresh machine: nothing set but where var/ is."""
    env = without_secrets(os.environ)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_FILESYSTEM_BROKER_DIR"):
        env.pop(name, None)
    return {**env, "DJANGO_SETTINGS_MODULE": "budgetsvc.settings", "BUDGETSVC_VAR_DIR": str(var_dir)}


def python(code: str, *, env: dict) -> str:
    """What the code printed."""
    return run([sys.executable, "-c", code], env=env).stdout


def manage(*arguments: str, env: dict) -> str:
    """What the command printed, and the warnings it reported."""
    done = run([sys.executable, "manage.py", *arguments], env=env)
    return done.stdout + done.stderr


def run(command: list[str], *, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_of_the_old_default() -> Fernet:
    """The credentials key of earlier releases with DJANGO_SECRET_KEY unset: derived from a published default."""
    digest = hashlib.sha256(b"budgetsvc credentials:insecure-development-key-change-me").digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def test_the_embedded_default_generates_its_own_secrets_once_private_to_its_user(tmp_path):
    var_dir = tmp_path / "install" / "var"
    # Processes that start at once on a fresh install (the web server, the workers, beat) agree on one value.
    starting = [
        subprocess.Popen([sys.executable, "-c", SHOW_SECRETS], cwd=settings.BASE_DIR, env=fresh_machine_env(var_dir), stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = {process.communicate(timeout=120)[0] for process in starting}
    assert len(outputs) == 1 and all(process.returncode == 0 for process in starting)
    secret_key, credentials_key = outputs.pop().split()

    assert len(secret_key) >= 50 and "insecure" not in secret_key
    Fernet(credentials_key)  # a valid key
    assert credentials_key not in secret_key
    assert (var_dir / "secret-key").read_text().strip() == secret_key
    assert (var_dir / "credentials-key").read_text().strip() == credentials_key
    assert mode(var_dir / "secret-key") == mode(var_dir / "credentials-key") == 0o600
    assert mode(var_dir) == 0o700
    assert not [path.name for path in var_dir.iterdir() if path.name.startswith(".tmp-")]

    # Reused on every later start; another install has secrets of its own.
    assert python(SHOW_SECRETS, env=fresh_machine_env(var_dir)).split() == [secret_key, credentials_key]
    other_secret_key, other_credentials_key = python(SHOW_SECRETS, env=fresh_machine_env(tmp_path / "other" / "var")).split()
    assert other_secret_key != secret_key and other_credentials_key != credentials_key


def test_threads_that_race_on_a_fresh_install_all_read_the_one_secret_that_was_kept(tmp_path):
    racers = 8
    all_generated = threading.Barrier(racers)
    results = []

    def generate() -> str:
        all_generated.wait(timeout=30)  # every racer has found no file before any of them keeps one
        return secrets.token_urlsafe(50)

    threads = [threading.Thread(target=lambda: results.append(install_secret(path=tmp_path / "secret", generate=generate))) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == racers and set(results) == {(tmp_path / "secret").read_text().strip()}
    assert [path.name for path in tmp_path.iterdir()] == ["secret"]
    assert mode(tmp_path / "secret") == 0o600


def test_secrets_set_in_the_environment_are_used_and_nothing_is_generated(tmp_path):
    var_dir = tmp_path / "var"
    env = {**fresh_machine_env(var_dir), "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}

    assert python(SHOW_SECRETS, env=env).split() == [env["DJANGO_SECRET_KEY"]]  # no generated credentials key
    assert not (var_dir / "secret-key").exists() and not (var_dir / "credentials-key").exists()


def test_the_sqlite_database_and_its_wal_and_shm_files_are_readable_by_the_service_alone(tmp_path):
    var_dir = tmp_path / "var"
    write_and_show_modes = (
        "import json, os, stat; from django.db import connection; "
        "cursor = connection.cursor(); cursor.execute('CREATE TABLE t (x)'); cursor.execute('INSERT INTO t VALUES (1)'); "
        "name = connection.settings_dict['NAME']; "
        "print(json.dumps({suffix: stat.S_IMODE(os.stat(f'{name}{suffix}').st_mode) for suffix in ('', '-wal', '-shm')}))"
    )
    assert json.loads(python(write_and_show_modes, env=fresh_machine_env(var_dir))) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}

    # A database that an earlier release created with the umask's mode is made private on the next start.
    (var_dir / "budgetsvc.sqlite3").chmod(0o644)
    (var_dir / "budgetsvc.sqlite3-wal").touch(mode=0o644)
    python("from django.conf import settings; settings.DATABASES", env=fresh_machine_env(var_dir))
    assert mode(var_dir / "budgetsvc.sqlite3") == mode(var_dir / "budgetsvc.sqlite3-wal") == 0o600


def test_check_deploy_warns_about_each_secret_generated_on_the_machine(tmp_path):
    var_dir = tmp_path / "var"
    output = manage("check", "--deploy", env=fresh_machine_env(var_dir))

    assert f"(workflows.W002) DJANGO_SECRET_KEY is not set: this machine signs sessions with the key generated in {var_dir / 'secret-key'}" in output
    assert f"(workflows.W001) CREDENTIALS_ENCRYPTION_KEYS is not set: teams' provider keys are encrypted with a key generated for this install and kept in {var_dir / 'credentials-key'}" in output


def documented_production_environment() -> dict:
    """The block under "## Production settings" in docs/operations.md, each placeholder filled with a new value."""
    text = (Path(settings.BASE_DIR) / "docs" / "operations.md").read_text()
    block = re.search(r"^## Production settings\n.*?^```sh\n(.*?)^```", text, re.S | re.M).group(1)
    fill = {
        "secret-key": lambda: secrets.token_urlsafe(50),
        "fernet-key": lambda: Fernet.generate_key().decode(),
        "password": lambda: secrets.token_urlsafe(16),
    }
    environment = {}
    for line in block.splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            environment[name] = re.sub(r"<([a-z-]+)>", lambda placeholder: fill[placeholder.group(1)](), value)
    return environment


def test_the_production_settings_in_operations_md_pass_check_deploy_without_a_warning(tmp_path):
    environment = documented_production_environment()
    assert {"DJANGO_SECRET_KEY", "CREDENTIALS_ENCRYPTION_KEYS", "DJANGO_SECURE_SSL_REDIRECT"} <= environment.keys()

    # Exactly the documented variables, plus where this machine may write and how to find Python.
    env = {"PATH": os.environ["PATH"], "BUDGETSVC_VAR_DIR": str(tmp_path / "var"), **environment}
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "System check identified no issues (0 silenced)."
    assert not (tmp_path / "var" / "secret-key").exists() and not (tmp_path / "var" / "credentials-key").exists()


# Every SECURE_* setting and every setting of the session and CSRF cookies Django has, with its
# variable and a value other than the default. The language cookie is left out: no view sets it.
SECURE_SETTINGS_FROM_THE_ENVIRONMENT = {
    "SECURE_CONTENT_TYPE_NOSNIFF": ("DJANGO_SECURE_CONTENT_TYPE_NOSNIFF", "false", False),
    "SECURE_CROSS_ORIGIN_OPENER_POLICY": ("DJANGO_SECURE_CROSS_ORIGIN_OPENER_POLICY", "same-origin-allow-popups", "same-origin-allow-popups"),
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": ("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", "true", True),
    "SECURE_HSTS_PRELOAD": ("DJANGO_SECURE_HSTS_PRELOAD", "true", True),
    "SECURE_HSTS_SECONDS": ("DJANGO_SECURE_HSTS_SECONDS", "3600", 3600),
    "SECURE_PROXY_SSL_HEADER": ("DJANGO_SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO,https", ["HTTP_X_FORWARDED_PROTO", "https"]),
    "SECURE_REDIRECT_EXEMPT": ("DJANGO_SECURE_REDIRECT_EXEMPT", "^healthz$,^status$", ["^healthz$", "^status$"]),
    "SECURE_REFERRER_POLICY": ("DJANGO_SECURE_REFERRER_POLICY", "no-referrer", "no-referrer"),
    "SECURE_SSL_HOST": ("DJANGO_SECURE_SSL_HOST", "secure.example.com", "secure.example.com"),
    "SECURE_SSL_REDIRECT": ("DJANGO_SECURE_SSL_REDIRECT", "true", True),
    "SESSION_COOKIE_SECURE": ("DJANGO_SESSION_COOKIE_SECURE", "true", True),
    "SESSION_COOKIE_HTTPONLY": ("DJANGO_SESSION_COOKIE_HTTPONLY", "false", False),
    "SESSION_COOKIE_SAMESITE": ("DJANGO_SESSION_COOKIE_SAMESITE", "None", "None"),
    "SESSION_COOKIE_AGE": ("DJANGO_SESSION_COOKIE_AGE", "3600", 3600),
    "SESSION_COOKIE_NAME": ("DJANGO_SESSION_COOKIE_NAME", "__Host-budgetsvc-session", "__Host-budgetsvc-session"),
    "SESSION_COOKIE_DOMAIN": ("DJANGO_SESSION_COOKIE_DOMAIN", "budget.example.com", "budget.example.com"),
    "SESSION_COOKIE_PATH": ("DJANGO_SESSION_COOKIE_PATH", "/admin/", "/admin/"),
    "SESSION_EXPIRE_AT_BROWSER_CLOSE": ("DJANGO_SESSION_EXPIRE_AT_BROWSER_CLOSE", "true", True),
    "CSRF_COOKIE_SECURE": ("DJANGO_CSRF_COOKIE_SECURE", "true", True),
    "CSRF_COOKIE_HTTPONLY": ("DJANGO_CSRF_COOKIE_HTTPONLY", "true", True),
    "CSRF_COOKIE_SAMESITE": ("DJANGO_CSRF_COOKIE_SAMESITE", "Strict", "Strict"),
    "CSRF_COOKIE_AGE": ("DJANGO_CSRF_COOKIE_AGE", "86400", 86400),
    "CSRF_COOKIE_NAME": ("DJANGO_CSRF_COOKIE_NAME", "__Host-budgetsvc-csrf", "__Host-budgetsvc-csrf"),
    "CSRF_COOKIE_DOMAIN": ("DJANGO_CSRF_COOKIE_DOMAIN", "budget.example.com", "budget.example.com"),
    "CSRF_COOKIE_PATH": ("DJANGO_CSRF_COOKIE_PATH", "/admin/", "/admin/"),
    "CSRF_USE_SESSIONS": ("DJANGO_CSRF_USE_SESSIONS", "true", True),
}


def test_every_secure_and_cookie_setting_is_read_from_the_environment(tmp_path):
    django_has = {name for name in dir(global_settings) if name.startswith(("SECURE_", "SESSION_COOKIE_", "CSRF_COOKIE_"))}
    assert django_has | {"SESSION_EXPIRE_AT_BROWSER_CLOSE", "CSRF_USE_SESSIONS"} <= SECURE_SETTINGS_FROM_THE_ENVIRONMENT.keys()
    env = {**fresh_machine_env(tmp_path / "var"), **{variable: value for variable, value, _ in SECURE_SETTINGS_FROM_THE_ENVIRONMENT.values()}}
    names = list(SECURE_SETTINGS_FROM_THE_ENVIRONMENT)

    shown = python(
        f"import json; from django.conf import settings; print(json.dumps({{name: getattr(settings, name) for name in {names!r}}}))",
        env=env,
    )

    assert json.loads(shown) == {name: expected for name, (_, _, expected) in SECURE_SETTINGS_FROM_THE_ENVIRONMENT.items()}


@pytest.mark.parametrize(
    ("variables", "refusal"),
    [
        ({"DJANGO_SESSION_COOKIE_SAMESITE": "lax"}, "DJANGO_SESSION_COOKIE_SAMESITE must be one of Lax, Strict, None."),
        ({"DJANGO_CSRF_COOKIE_SAMESITE": "None"}, "DJANGO_CSRF_COOKIE_SAMESITE=None needs DJANGO_CSRF_COOKIE_SECURE=true."),
        ({"DJANGO_SESSION_COOKIE_AGE": "0"}, "DJANGO_SESSION_COOKIE_AGE must be at least 60 seconds."),
    ],
)
def test_a_cookie_setting_a_browser_would_drop_or_misread_stops_the_service_at_start(tmp_path, variables, refusal):
    env = {**fresh_machine_env(tmp_path / "var"), **variables}

    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; settings.SESSION_COOKIE_AGE"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode != 0
    assert f"ImproperlyConfigured: {refusal}" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_an_install_upgraded_from_the_public_default_still_reads_its_teams_keys_and_rotates_them_to_its_own(team, tmp_path):
    # A row that an earlier release wrote while DJANGO_SECRET_KEY was unset.
    old_token = key_of_the_old_default().encrypt(KEY.encode()).decode()
    credential = ProviderCredential.objects.create(team=team, provider="openai", api_key_encrypted=old_token, api_key_hint="…0123")
    # The upgraded install: this test's database, and secrets generated in a var/ of its own.
    var_dir = tmp_path / "var"
    env = without_secrets(service_env(var_dir))

    read = f"import django; django.setup(); from workflows.services.credentials import credentials_for; print(credentials_for(team_id={team.pk}, provider='openai').api_key)"
    assert python(read, env=env).split()[-1] == KEY

    assert manage("rotate_credentials", env=env).split()[-1] == "1"
    credential.refresh_from_db()
    assert Fernet((var_dir / "credentials-key").read_text().strip()).decrypt(credential.api_key_encrypted.encode()).decode() == KEY
    with pytest.raises(InvalidToken):
        key_of_the_old_default().decrypt(credential.api_key_encrypted.encode())


@pytest.mark.django_db
def test_a_rotated_secret_key_still_reads_the_teams_keys_while_it_is_a_fallback(team, settings):
    settings.CREDENTIALS_ENCRYPTION_KEYS, settings.CREDENTIALS_INSTALL_KEY = [], ""
    settings.SECRET_KEY = "old-" + secrets.token_urlsafe(50)
    credential_set(team=team, provider="openai", api_key=KEY)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-" + secrets.token_urlsafe(50), [settings.SECRET_KEY]
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY
    call_command("rotate_credentials", stdout=io.StringIO())
    settings.SECRET_KEY_FALLBACKS = []
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY


def test_an_install_that_sets_a_secret_key_after_the_embedded_default_still_reads_its_teams_keys(
    team, settings, tmp_path
):
    install_key = Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS, settings.CREDENTIALS_INSTALL_KEY = [], install_key
    settings.CREDENTIALS_INSTALL_KEY_FILE = tmp_path / "credentials-key"
    settings.CREDENTIALS_INSTALL_KEY_FILE.write_text(install_key)
    credential_set(team=team, provider="openai", api_key=KEY)

    # The operator sets DJANGO_SECRET_KEY: the install key is no longer generated or used to encrypt.
    settings.SECRET_KEY, settings.CREDENTIALS_INSTALL_KEY = "set-" + secrets.token_urlsafe(50), ""
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY
    call_command("rotate_credentials", stdout=io.StringIO())
    settings.CREDENTIALS_INSTALL_KEY_FILE.unlink()
    assert credentials_for(team_id=team.pk, provider="openai").api_key == KEY
