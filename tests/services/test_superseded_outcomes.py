"""What a superseded attempt's worker knows when it comes back settles its estimate."""


import pytest

from tests.invariants import assert_invariants
from tests.services.test_unknown_outcomes import ESTIMATE, entries, first_step, run  # noqa: F401
from workflows.providers import ProviderError
from workflows.reports.spend import spend_by
from workflows.services.steps import execute, step_begin

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("OpenAI could not be reached: connection refused", retryable=True),  # never sent
        ProviderError("OpenAI refused the request: 400 invalid_request_error", status_code=400),
    ],
    ids=["refused-while-connecting", "400-no-usage"],
)
def test_a_superseded_attempt_whose_call_is_known_unbilled_settles_its_estimate(run, error):
    """An attempt that owns its step and fails with these errors is charged nothing
    (test_a_call_refused_before_it_was_sent_costs_nothing). The same attempt cut off, taken over and
    charged its $0.30 estimate, then back with the same error: _provider_failed_under_locks records
    nothing when the error has no usage, so the estimate is never corrected. The run keeps $0.30 it
    did not spend, and every report shows it "estimated, awaiting usage" for ever, though the worker
    knew the outcome: a call that cost $0."""
    cut_off = step_begin(step_id=first_step(run).pk, worker="host:1")
    step_begin(step_id=first_step(run).pk, worker="host:2")  # the takeover charges attempt 1's estimate

    execute.step_provider_failed(attempt=cut_off, error=error)

    (group,) = spend_by(team=run.team, group_by="run", since=None, until=None).groups
    assert group.estimated_usd == 0, entries(run)
    assert entries(run) == [(1, "estimated", ESTIMATE), (1, "correction", -ESTIMATE)]
    assert_invariants(run)
