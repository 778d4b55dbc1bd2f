"""The kinds of step, by the `type` a definition gives them: 'agent' and each registered kind; and
the kinds of group, 'parallel' and 'for_each'.

A kind is one module (see `base.StepKind`, `base.GroupKind`); registering it here is the only other
change a kind of step needs. Registration also teaches the definition parser the step kind's fields,
so a workflow that uses it uploads. A group's fields are read by the parser itself.
"""

from workflows.definition import (
    DIALOG_ROLE,
    MODEL_CALL_ROLE,
    REPLY_ROLE,
    TOOL_CALL_ROLE,
    VALIDATOR_ROLE,
    AgentSpec,
    GroupNames,
    GroupSpec,
    StepSpec,
    register_group_names,
    register_step_reader,
    unregister_step_reader,
)
from workflows.services.steps.kinds.agent import AgentKind
from workflows.services.steps.kinds.base import (
    Charged,
    GroupKind,
    PreparedStep,
    StepAttempt,
    StepKind,
    StepWorkFailed,
)
from workflows.services.steps.kinds.dialog import DialogKind, DialogReplyKind
from workflows.services.steps.kinds.for_each import ForEachKind
from workflows.services.steps.kinds.human_gate import HumanGateKind
from workflows.services.steps.kinds.parallel import ParallelKind
from workflows.services.steps.kinds.questions import QuestionsKind
from workflows.services.steps.kinds.script import ScriptKind
from workflows.services.steps.kinds.set import SetKind
from workflows.services.steps.kinds.terminate import TerminateKind
from workflows.services.steps.kinds.tools import ModelCallKind, ToolCallKind, ToolListKind
from workflows.services.steps.kinds.validator import ValidatorKind
from workflows.services.steps.kinds.wait import WaitKind
from workflows.services.steps.kinds.workflow import WorkflowKind

AGENT = AgentKind()
# Not step types a definition names: an agent with tools runs its own step as a tool listing, and
# progression enters the steps of its tool loop after it, or those of its validator or dialog.
TOOL_LIST = ToolListKind()
VALIDATOR = ValidatorKind()
DIALOG = DialogKind()
DIALOG_REPLY = DialogReplyKind()
_ROLE_KINDS: dict[str, StepKind] = {
    VALIDATOR_ROLE: VALIDATOR,
    DIALOG_ROLE: DIALOG,
    REPLY_ROLE: DIALOG_REPLY,
    MODEL_CALL_ROLE: ModelCallKind(),
    TOOL_CALL_ROLE: ToolCallKind(),
}

_kinds: dict[str, StepKind] = {kind.name: kind for kind in (AGENT, TOOL_LIST, *_ROLE_KINDS.values())}
_group_kinds: dict[str, GroupKind] = {kind.name: kind for kind in (ParallelKind(), ForEachKind())}


class UnknownStepKind(LookupError):
    """A stored definition names a kind this process has not registered."""


def register_step_kind(kind: StepKind) -> None:
    _kinds[kind.name] = kind
    register_step_reader(kind)


def unregister_step_kind(name: str) -> None:
    _kinds.pop(name, None)
    unregister_step_reader(name)


def register_builtin_step_kinds() -> None:
    """The kinds of conductor's step types that this service runs; the app registers them at start."""
    for kind in (HumanGateKind(), QuestionsKind(), ScriptKind(), SetKind(), TerminateKind(), WaitKind(), WorkflowKind()):
        register_step_kind(kind)


def register_group_kind(kind: GroupKind) -> None:
    """Run the definition's groups whose `kind` is `kind.name` with `kind`; uploads then resolve the
    names its branches see and its result's fields as it declares them."""
    _group_kinds[kind.name] = kind
    register_group_names(kind.name, GroupNames(branch_names=kind.branch_names, result_fields=kind.result_fields))


def kind_of(node: AgentSpec | StepSpec | GroupSpec) -> StepKind | GroupKind:
    """The kind of whatever a route can name: an agent, a step of another kind, or a group."""
    if isinstance(node, AgentSpec):
        return TOOL_LIST if node.uses_tools else AGENT
    if isinstance(node, StepSpec):
        return kind_named(node.kind)
    return group_kind_of(node)


def kind_for_step(node: AgentSpec | StepSpec, role: str) -> StepKind:
    """The kind of a step of `node` in `role`: its validator's, its dialog's evaluator, a person's
    reply to it, a model or tool call of its tool loop, or, for the node's own step and a re-run,
    the node's."""
    return _ROLE_KINDS.get(role) or kind_of(node)


def kind_named(name: str) -> StepKind:
    try:
        return _kinds[name]
    except KeyError:
        raise UnknownStepKind(f"Steps of kind '{name}' are not known to this process.") from None


def group_kind_of(group: GroupSpec) -> GroupKind:
    return _group_kinds[group.kind]


__all__ = [
    "VALIDATOR",
    "Charged",
    "GroupKind",
    "PreparedStep",
    "StepAttempt",
    "StepKind",
    "StepWorkFailed",
    "UnknownStepKind",
    "group_kind_of",
    "kind_for_step",
    "kind_named",
    "kind_of",
    "register_builtin_step_kinds",
    "register_group_kind",
    "register_step_kind",
    "unregister_step_kind",
]
