"""The event streams' settings, as the environment sets them (budgetsvc/settings.py)."""

import os
import subprocess
import sys

import pytest


def settings_load(tmp_path, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENT_STREAM_")}
    env.update(BUDGETSVC_VAR_DIR=str(tmp_path), **environment)
    return subprocess.run([sys.executable, "-c", "import budgetsvc.settings"], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "variable,value",
    [
        ("EVENT_STREAM_POLL_SECONDS", "0"),
        ("EVENT_STREAM_KEEP_ALIVE_SECONDS", "0.5"),
        ("EVENT_STREAM_MAX_SECONDS", "0"),
        ("EVENT_STREAM_MAX_SECONDS", "3601"),
        ("EVENT_STREAM_MAX_PER_TEAM", "-1"),
    ],
)
def test_a_value_out_of_range_stops_the_service_from_starting(tmp_path, variable, value):
    loaded = settings_load(tmp_path, **{variable: value})

    assert loaded.returncode != 0
    assert "EVENT_STREAM_POLL_SECONDS must be 0.05 to 60" in loaded.stderr


def test_the_limits_at_their_ends_are_taken(tmp_path):
    loaded = settings_load(
        tmp_path,
        EVENT_STREAM_POLL_SECONDS="0.05",
        EVENT_STREAM_KEEP_ALIVE_SECONDS="300",
        EVENT_STREAM_MAX_SECONDS="3600",
        EVENT_STREAM_MAX_PER_TEAM="0",
    )

    assert loaded.returncode == 0, loaded.stderr
