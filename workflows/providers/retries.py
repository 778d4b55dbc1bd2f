"""How long to wait before trying a step again after a transient provider error."""

import random


def retry_delay_seconds(
    *,
    retry: int,
    base_seconds: float,
    max_seconds: float,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter for the `retry`-th retry (1, 2, ...).

    The delay is drawn from the upper half of base x 2^(retry-1), capped at `max_seconds`: the jitter
    spreads out steps that failed together, and the lower bound keeps the backoff growing. A provider's
    Retry-After is honoured when it asks for longer, up to the cap.
    """
    ceiling = min(max_seconds, base_seconds * 2 ** (retry - 1))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after_seconds is not None:
        delay = max(delay, min(retry_after_seconds, max_seconds))
    return delay
