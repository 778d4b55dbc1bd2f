"""Templates render before a transaction, never while it holds locks.

A service that renders under its locks (a step's prompts, a route's conditions, the run's output)
runs in two phases through `rendered_ahead`. First, with no transaction open, `prerender` reads what
the renders need without locks and renders it: each render's outcome is kept with the context it saw.
Then the transaction runs the service's ordinary code; each render it asks for is answered from what
was kept when its context is still equal to the one kept, which is a comparison of data, not a render.

When the data changed in between (another transaction wrote a checkpoint, a branch ended), a kept
render no longer answers: the transaction rolls back and both phases run again, at most
`RENDER_TRIES` times. On the last try, and for a render the first phase did not foresee, the render
runs under the locks: still bounded by TEMPLATE_RENDER_SECONDS, and rare. Each phase's renders
share one TEMPLATE_RENDER_SECONDS budget, however many templates the phase renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workflows.definition import render, render_budget

T = TypeVar("T")

RENDER_TRIES = 3


class StaleRender(Exception):
    """A render kept from before the transaction saw data that has changed since."""


@dataclass
class _Kept:
    recording: bool = True
    last_try: bool = False
    outcomes: dict[tuple, tuple[dict, Any, BaseException | None]] = field(default_factory=dict)


_kept: ContextVar[_Kept | None] = ContextVar("kept_renders", default=None)


def rendered(key: tuple, context: Mapping[str, Any], render: Callable[[], T]) -> T:
    """`render()`, whose result depends only on `key` (what is rendered) and `context` (from what):
    kept while recording, answered from what was kept inside the transaction."""
    kept = _kept.get()
    if kept is None:
        return render()
    if kept.recording:
        try:
            value, error = render(), None
        except Exception as exc:  # kept, and raised again where the transaction asks for it
            value, error = None, exc
        kept.outcomes[key] = (dict(context), value, error)
        if error is not None:
            raise error
        return value
    outcome = kept.outcomes.get(key)
    if outcome is not None and outcome[0] == context:
        _, value, error = outcome
        if error is not None:
            raise error
        return value
    if outcome is not None and not kept.last_try:
        raise StaleRender(key)
    return render()


def render_kept(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """A template rendered as `rendered` says: before the transaction that asks for it."""
    return rendered(("render", where, source), context, lambda: render(source, context, where=where))


@contextmanager
def _phase(kept: _Kept) -> Iterator[None]:
    token = _kept.set(kept)
    try:
        yield
    finally:
        _kept.reset(token)


def rendered_ahead(*, prerender: Callable[[], None], locked: Callable[[], T]) -> T:
    """`locked()` (which opens its own transaction), with the renders it will ask for done first by
    `prerender()` outside any transaction. `prerender` must not write; its exceptions are ignored
    (the transaction meets the same situation and handles it)."""
    for attempt in range(1, RENDER_TRIES + 1):
        kept = _Kept()
        with _phase(kept), render_budget():
            try:
                prerender()
            except Exception:  # noqa: BLE001 - whatever it found, `locked` finds under its locks
                pass
        kept.recording = False
        kept.last_try = attempt == RENDER_TRIES
        try:
            with _phase(kept), render_budget():
                return locked()
        except StaleRender:
            continue
    raise AssertionError("unreachable: the last try renders under the locks")
