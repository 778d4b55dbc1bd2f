"""Renders done before a transaction and answered inside it (workflows/services/renders.py)."""

import pytest

from workflows.services.renders import RENDER_TRIES, rendered, rendered_ahead


class Renderer:
    """A render that counts its calls and records which phase made them."""

    def __init__(self):
        self.calls: list[str] = []
        self.phase = "outside"

    def __call__(self, context: dict, *, key: tuple = ("t",)) -> str:
        def render() -> str:
            self.calls.append(self.phase)
            if context.get("fail"):
                raise ValueError("bad template")
            return f"hello {context['name']}"

        return rendered(key, context, render)


def test_without_a_transaction_around_it_a_render_just_renders():
    renderer = Renderer()

    assert renderer({"name": "a"}) == "hello a"
    assert renderer.calls == ["outside"]


def test_the_transaction_gets_the_kept_render_when_its_context_is_unchanged():
    renderer = Renderer()

    def locked() -> str:
        renderer.phase = "locked"
        return renderer({"name": "a"})

    assert rendered_ahead(prerender=lambda: renderer({"name": "a"}), locked=locked) == "hello a"
    assert renderer.calls == ["outside"]  # nothing rendered under the locks


def test_a_kept_failure_is_raised_again_inside_the_transaction():
    renderer = Renderer()

    def locked() -> None:
        renderer.phase = "locked"
        renderer({"name": "a", "fail": True})

    with pytest.raises(ValueError, match="bad template"):
        rendered_ahead(prerender=lambda: renderer({"name": "a", "fail": True}), locked=locked)
    assert renderer.calls == ["outside"]


def test_a_changed_context_renders_again_before_the_transaction_a_bounded_number_of_times():
    renderer = Renderer()
    versions = iter(range(100))

    def prerender() -> None:
        renderer.phase = "outside"
        renderer({"name": "a", "version": next(versions)})

    def locked() -> str:
        renderer.phase = "locked"
        return renderer({"name": "a", "version": next(versions)})  # always newer than the kept one

    assert rendered_ahead(prerender=prerender, locked=locked) == "hello a"
    assert renderer.calls == ["outside"] * RENDER_TRIES + ["locked"]


def test_a_context_that_settles_is_answered_on_the_next_try():
    renderer = Renderer()
    seen = {"version": 0}

    def prerender() -> None:
        renderer.phase = "outside"
        renderer({"name": "a", "version": seen["version"]})

    def locked() -> str:
        renderer.phase = "locked"
        seen["version"] = 1  # changed once, between the first read and the locks
        return renderer({"name": "a", "version": 1})

    assert rendered_ahead(prerender=prerender, locked=locked) == "hello a"
    assert renderer.calls == ["outside", "outside"]


def test_a_render_the_first_phase_did_not_foresee_renders_under_the_locks():
    renderer = Renderer()

    def locked() -> str:
        renderer.phase = "locked"
        return renderer({"name": "b"}, key=("other",))

    assert rendered_ahead(prerender=lambda: renderer({"name": "a"}), locked=locked) == "hello b"
    assert renderer.calls == ["outside", "locked"]
