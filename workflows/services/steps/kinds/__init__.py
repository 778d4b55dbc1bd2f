"""The kinds of step, by the `type` a definition gives them: 'agent' and each registered kind.

A kind is one module (see `base.StepKind`); registering it here is the only other change it needs.
Registration also teaches the definition parser the kind's fields, so a workflow that uses it uploads.
"""

from workflows.definition import AgentSpec, StepSpec, register_step_reader, unregister_step_reader
from workflows.services.steps.kinds.agent import AgentKind
from workflows.services.steps.kinds.base import Charged, PreparedStep, StepAttempt, StepKind

AGENT = AgentKind()

_kinds: dict[str, StepKind] = {AGENT.name: AGENT}


class UnknownStepKind(LookupError):
    """A stored definition names a kind this process has not registered."""


def register_step_kind(kind: StepKind) -> None:
    _kinds[kind.name] = kind
    register_step_reader(kind)


def unregister_step_kind(name: str) -> None:
    _kinds.pop(name, None)
    unregister_step_reader(name)


def kind_of(node: AgentSpec | StepSpec) -> StepKind:
    return AGENT if isinstance(node, AgentSpec) else kind_named(node.kind)


def kind_named(name: str) -> StepKind:
    try:
        return _kinds[name]
    except KeyError:
        raise UnknownStepKind(f"Steps of kind '{name}' are not known to this process.") from None


__all__ = [
    "Charged",
    "PreparedStep",
    "StepAttempt",
    "StepKind",
    "UnknownStepKind",
    "kind_named",
    "kind_of",
    "register_step_kind",
    "unregister_step_kind",
]
