import random

import pytest

from workflows.providers.retries import retry_delay_seconds


@pytest.mark.parametrize("retry,low,high", [(1, 1, 2), (2, 2, 4), (3, 4, 8), (10, 30, 60)])
def test_the_backoff_doubles_with_jitter_and_is_capped(retry, low, high):
    rng = random.Random(7)
    delays = [retry_delay_seconds(retry=retry, base_seconds=2, max_seconds=60, rng=rng) for _ in range(50)]
    assert all(low <= delay <= high for delay in delays)
    assert len(set(delays)) > 1


def test_a_longer_retry_after_is_honoured_up_to_the_cap():
    assert retry_delay_seconds(retry=1, base_seconds=1, max_seconds=60, retry_after_seconds=30) == 30
    assert retry_delay_seconds(retry=1, base_seconds=1, max_seconds=60, retry_after_seconds=600) == 60
