"""The API's rates and the cache that counts them, as the environment sets them (budgetsvc/settings.py)."""

import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from budgetsvc.settings import throttle_rate


@pytest.mark.parametrize("given,rate", [("120/minute", "120/minute"), (" 5/s ", "5/s"), ("0", None), ("off", None), ("OFF", None)])
def test_a_rate_is_taken_as_given_and_0_or_off_turn_its_scope_off(monkeypatch, given, rate):
    monkeypatch.setenv("API_THROTTLE_READ", given)

    assert throttle_rate("API_THROTTLE_READ", default="1/minute") == rate


@pytest.mark.parametrize("given", ["120", "fast", "0/minute", "-1/minute", "10/fortnight", "1.5/minute", "120/minute,"])
def test_a_rate_that_is_not_one_stops_the_service_from_starting(monkeypatch, given):
    monkeypatch.setenv("API_THROTTLE_READ", given)

    with pytest.raises(ImproperlyConfigured, match="API_THROTTLE_READ must be a rate such as 120/minute"):
        throttle_rate("API_THROTTLE_READ", default="1/minute")


SHOW_CACHE = "import json, budgetsvc.settings as s; print(json.dumps(s.CACHES['default']))"


def cache_of(tmp_path, **environment: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("CACHE_URL", "DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(BUDGETSVC_VAR_DIR=str(tmp_path), **environment)
    shown = subprocess.run([sys.executable, "-c", SHOW_CACHE], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_unset_the_cache_is_files_under_the_var_dir_which_every_process_shares(tmp_path):
    cache = cache_of(tmp_path)

    assert cache["BACKEND"] == "django.core.cache.backends.filebased.FileBasedCache"
    assert cache["LOCATION"] == str(tmp_path / "cache")


def test_unset_with_a_redis_broker_the_cache_is_that_redis_with_keys_apart(tmp_path):
    cache = cache_of(
        tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/budgetsvc", CELERY_BROKER_URL="redis://127.0.0.1:6379/4"
    )

    assert cache == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/4",
        "KEY_PREFIX": "budgetsvc-cache",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }


def test_cache_url_wins(tmp_path):
    cache = cache_of(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/budgetsvc",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/4",
        CACHE_URL="redis://127.0.0.1:6379/5?key_prefix=throttles",
    )

    assert (cache["BACKEND"], cache["LOCATION"], cache["KEY_PREFIX"]) == (
        "django.core.cache.backends.redis.RedisCache",
        "redis://127.0.0.1:6379/5",
        "throttles",
    )
