"""Provider calls in the metrics: each call timed, each failure counted by kind, on the real SDK
against a wire-compatible server."""

import json

import pytest
from prometheus_client import REGISTRY

from tests.providers.conftest import drive, start
from tests.providers.wire import openai_completion, openai_error, openai_usage

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold.", "score": 7})


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0


def test_each_call_is_timed_and_each_failure_counted_by_kind(team, wire, priced):
    before = {
        kind: sample("budgetsvc_provider_errors_total", provider="openai", kind=kind)
        for kind in ("rate_limited", "server_error", "client_error")
    }
    calls_before = sample("budgetsvc_provider_call_seconds_count", provider="openai")
    wire.script(
        openai_error(429, "Rate limit reached", headers={"retry-after": "0"}),
        openai_error(503, "Overloaded"),
        openai_completion(ANSWER, openai_usage(prompt=10, completion=10)),
    )

    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    assert sample("budgetsvc_provider_call_seconds_count", provider="openai") - calls_before == 3
    gained = {kind: sample("budgetsvc_provider_errors_total", provider="openai", kind=kind) - before[kind] for kind in before}
    assert gained == {"rate_limited": 1, "server_error": 1, "client_error": 0}
