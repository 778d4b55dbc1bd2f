"""Sub-workflows: a `type: workflow` step runs another workflow as a black box, inside its own run.

At upload the step's workflow is resolved (another workflow of the team, by name, or one written
inline) and kept whole in its caller's definition, so a version runs what it was uploaded with
whatever later happens to the other workflow. At run time the sub-workflow's steps are steps of
the caller's run, named by their path (`research/answerer`): they pass the run's gate and count
against its budgets and limits like any other. Each entry of a sub-workflow sees only its own
inputs and its own agents' outputs (a frame); its caller sees only its output.

A frame is named by the path of the step that entered it, and its nodes' outputs are kept in the
run's outputs under their paths: `research` holds what the step `research` bound (the frame's
inputs) and `research/search` the output of its agent `search`. `frame_outputs` reads a frame's by
their prefix, and `frame_left` drops them when the sub-workflow ends.

A for_each group may run a sub-workflow as its agent: each branch is then a frame of its own, whose
caller is the group's agent with the item's index (`branch_caller`): `replier[2]` holds what the
branch of item 2 bound and `replier[2]/drafter` its drafter's output. Concurrent branches
therefore never read or overwrite each other's outputs, and everything that follows a frame's
prefix (its inputs, its outputs, its steps' paths, its end) works for a branch unchanged. The
index adds at most BRANCH_SUFFIX_CHARS to a path. The steps of a branch's sub-workflow carry their
branch's group, entry, index and key, and run one at a time, so a branch's sub-workflow may hold
no group, nor wait for a person while its group's other branches run (both refused at upload); it
may run sub-workflows of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ._section import Section
from ._values import show
from .bounds import MAX_COUNT_COLUMN, MAX_PATH_CHARS
from .errors import Problem
from .inputs import check_inputs
from .model import (
    BRANCH_CLOSE,
    BRANCH_OPEN,
    SUBWORKFLOW_SEPARATOR,
    ForEachSpec,
    StepSpec,
    WorkflowDefinition,
    branch_caller,
    step_of_caller,
)
from .providers import provider_problem
from .templates import compile_check

KIND = "workflow"
KEYS = ("workflow", "input_mapping", "max_depth")
MAX_DEPTH = 10  # as conductor: sub-workflows in sub-workflows, at most this deep
MAX_REFERENCE_CHARS = 500
# What a branch's index adds to the paths of its sub-workflow's steps: the index of a row's branch
# is a count column, so never longer than this.
BRANCH_SUFFIX_CHARS = len(f"{BRANCH_OPEN}{MAX_COUNT_COLUMN}{BRANCH_CLOSE}")


@dataclass(frozen=True)
class Frame:
    """Where a step's node is: the workflow it belongs to, and the path of the steps that entered it."""

    definition: WorkflowDefinition
    # "" in the run's own workflow; "research/" in the one its step `research` runs; "replier[2]/"
    # in the one the branch of item 2 of a for_each group whose agent is `replier` runs
    prefix: str
    name: str  # the node's name in `definition`

    @property
    def path(self) -> str:
        return self.prefix + self.name

    @property
    def caller(self) -> str:
        """The path of the step whose sub-workflow this is, with its branch's index in a for_each
        branch's (`replier[2]`); "" in the run's own workflow."""
        return self.prefix[: -len(SUBWORKFLOW_SEPARATOR)]


def frame_at(definition: WorkflowDefinition, path: str) -> Frame:
    """The frame of the node at `path` in the run's workflow `definition`."""
    *callers, name = path.split(SUBWORKFLOW_SEPARATOR)
    prefix = ""
    for caller in callers:
        definition = definition.subworkflows[step_of_caller(caller)]
        prefix += caller + SUBWORKFLOW_SEPARATOR
    return Frame(definition, prefix, name)


def frame_outputs(outputs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The outputs a frame's templates see: its own nodes', by their names in it (not what a for_each
    branch's sub-workflow bound, which only that sub-workflow sees)."""
    return {
        path[len(prefix) :]: output
        for path, output in outputs.items()
        if path.startswith(prefix) and not any(mark in path[len(prefix) :] for mark in (SUBWORKFLOW_SEPARATOR, BRANCH_OPEN))
    }


def frame_inputs(outputs: Mapping[str, Any], frame: Frame, run_inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """A frame's `workflow.input`: the run's, or what the step that entered the frame bound (its output)."""
    return outputs[frame.caller] if frame.prefix else run_inputs


def frame_left(outputs: Mapping[str, Any], frame: Frame, result: dict[str, Any]) -> dict[str, Any]:
    """The run's outputs once the sub-workflow of `frame` ended with `result`: its caller's output is
    the result, and its own nodes' outputs are gone, so that a later entry starts afresh."""
    kept = {path: output for path, output in outputs.items() if not path.startswith(frame.prefix)}
    return {**kept, frame.caller: result}


def branch_caller_of(definition: WorkflowDefinition, group: str, index: int) -> str | None:
    """The caller of the sub-workflow frame of the branch at `index` of the group at path `group`
    (`replier[2]`), when its agent is a sub-workflow; None when it is an agent."""
    frame = frame_at(definition, group)
    found = frame.definition.group(frame.name)
    if not isinstance(found, ForEachSpec) or found.agent.name not in frame.definition.group_steps:
        return None
    return branch_caller(frame.prefix + found.agent.name, index)


def branch_frame_left(outputs: Mapping[str, Any], caller: str) -> dict[str, Any]:
    """The run's outputs once the sub-workflow of a branch (its caller `caller`) ended: its frame's
    are gone; its output is its branch's."""
    inside = caller + SUBWORKFLOW_SEPARATOR
    return {path: output for path, output in outputs.items() if path != caller and not path.startswith(inside)}


def branch_frames_left(outputs: Mapping[str, Any], agent: str) -> dict[str, Any]:
    """The run's outputs once a for_each group whose agent at path `agent` is a sub-workflow ended:
    no branch's frame is left, not even a failed one's."""
    return {path: output for path, output in outputs.items() if not path.startswith(agent + BRANCH_OPEN)}


def run_input_frames(definition: WorkflowDefinition, prefix: str = "") -> list[tuple[str, WorkflowDefinition]]:
    """(prefix, definition) of the workflows whose `workflow.input` is the run's own: the run's, and
    each sub-workflow entered by a step without `input_mapping` from one of those (it forwards them)."""
    frames = [(prefix, definition)]
    for name, child in definition.subworkflows.items():
        if definition.node(name).params["input_mapping"] is None:
            frames.extend(run_input_frames(child, prefix + name + SUBWORKFLOW_SEPARATOR))
    return frames


def depth(definition: WorkflowDefinition) -> int:
    """How many sub-workflows deep it runs: 0 with none."""
    return max((1 + depth(child) for child in definition.subworkflows.values()), default=0)


def longest_path(definition: WorkflowDefinition) -> int:
    """The length of the longest name or path of a step or group it runs (a for_each group's agent
    included: its branches' steps carry it)."""
    names = [*definition.agent_names, *definition.steps, *definition.group_names]
    longest = max(map(len, names), default=0)
    for name, child in definition.subworkflows.items():
        longest = max(longest, _caller_chars(definition, name) + len(SUBWORKFLOW_SEPARATOR) + longest_path(child))
    return longest


def _caller_chars(definition: WorkflowDefinition, name: str) -> int:
    """How long the caller of the sub-workflow its step `name` runs may be: the name, and the index of
    a for_each branch when a group runs it."""
    return len(name) + (BRANCH_SUFFIX_CHARS if name in definition.group_steps else 0)


def output_fields(definition: WorkflowDefinition) -> frozenset[str]:
    """The fields a sub-workflow's output has however it ends: its `output` section's, unless a
    `terminate` step that completes it replaces that with its `output_template` (a route's own
    `output` only adds fields)."""
    fields = frozenset(definition.output)
    for step in definition.steps.values():
        if step.kind == "terminate" and step.params["status"] == "success" and step.params["output_template"] is not None:
            fields &= frozenset(step.params["output_template"])
    return fields


def forwarded_inputs(definition: WorkflowDefinition) -> set[str]:
    """The inputs its sub-workflows need of a run's own inputs: those a sub-workflow requires (or,
    with no input block, reads) where its step forwards the caller's inputs, having no mapping."""
    needed: set[str] = set()
    for name, child in definition.subworkflows.items():
        if definition.node(name).params["input_mapping"] is None:
            needed.update(needed_inputs(child))
    return needed


def forwarded_input_problems(definition: WorkflowDefinition, inputs: Mapping[str, Any]) -> list[Problem]:
    """A workflow with no input block takes a run's inputs as they are, and forwards them to each
    sub-workflow whose step has no mapping: what such a sub-workflow declares must be of its type,
    checked as the run starts, before anything is spent."""
    if definition.inputs:
        return []
    problems: dict[str, Problem] = {}
    for name, child in definition.subworkflows.items():
        if definition.node(name).params["input_mapping"] is None and child.inputs:
            given = {input_name: value for input_name, value in inputs.items() if input_name in child.inputs}
            _, found = check_inputs(child.inputs, given)
            problems.update((problem.path, problem) for problem in found)
    return list(problems.values())


def needed_inputs(child: WorkflowDefinition) -> list[str]:
    """The inputs a workflow cannot run without."""
    needed = [spec.name for spec in child.inputs.values() if spec.required and not spec.has_default]
    return needed + [name for name in child.reads_inputs if name not in needed]


def workflow_name(reference: str) -> str:
    """The team's workflow a reference names: conductor writes a file's path (`./simple-qa.yaml`),
    which names the workflow uploaded under the file's name without its extension."""
    path = PurePosixPath(reference.strip())
    return path.stem if path.suffix in (".yaml", ".yml") else path.name


def read_workflow_step(section: Section) -> dict[str, Any] | None:
    """A `type: workflow` step's own fields, checked: `workflow` (a reference, or a definition written
    inline), `input_mapping` (input name -> template) and `max_depth`."""
    problems_before = len(section.problems)
    reference = section.data.get("workflow")
    if reference is None:
        section.missing("workflow")
    elif isinstance(reference, str):
        if not workflow_name(reference) or len(reference) > MAX_REFERENCE_CHARS:
            section.report("workflow", f"must name a workflow of the team, like './research.yaml', not {show(reference)}")
    elif not isinstance(reference, Mapping):
        section.report("workflow", "must name a workflow of the team, or be a workflow definition written inline")
    mapping = section.data.get("input_mapping")
    if mapping is not None:
        if not isinstance(mapping, Mapping):
            section.report("input_mapping", "must map the sub-workflow's input names to templates")
        else:
            for name, template in mapping.items():
                if not isinstance(template, str):
                    section.report(f"input_mapping.{name}", f"must be a template string, not {type(template).__name__}")
                elif error := compile_check(template):
                    section.report(f"input_mapping.{name}", f"template does not compile: {error}")
    max_depth = section.integer("max_depth", minimum=1, maximum=MAX_DEPTH)
    if len(section.problems) > problems_before:
        return None
    return {
        "workflow": reference,
        "input_mapping": None if mapping is None else dict(mapping),
        "max_depth": max_depth,
    }


def attach_subworkflows(
    definition: WorkflowDefinition,
    paths: Mapping[str, str],
    *,
    resolve: Callable[[str], WorkflowDefinition | None],
    load_inline: Callable[[Mapping[str, Any], str], WorkflowDefinition | None],
    provider_routes: Mapping[str, str],
    refused_kinds: Mapping[str, str],
    problems: list[Problem],
) -> dict[str, WorkflowDefinition]:
    """The workflow each `type: workflow` step runs, by step name, with a problem for each that
    cannot run there. `resolve` answers the team's workflow of a name (None: it has none);
    `load_inline` parses a definition written inline, reporting its problems under the path given."""
    children: dict[str, WorkflowDefinition] = {}
    resolved: dict[str, WorkflowDefinition | None] = {}  # many steps may name one workflow: read it once
    for step, path in _workflow_steps(definition, paths):
        at = f"{path}.workflow"
        reference = step.params["workflow"]
        if isinstance(reference, Mapping):
            child = load_inline(reference, at)
        else:
            name = workflow_name(reference)
            if name not in resolved:
                resolved[name] = resolve(name)
            child = resolved[name]
            if child is None:
                problems.append(
                    Problem(
                        at,
                        f"the team has no workflow named '{name}': upload it first, under "
                        "that name (a path names the workflow uploaded under its file's name, without .yaml)",
                    )
                )
        if child is None:
            continue
        problems.extend(_child_problems(step, child, at, definition, provider_routes, refused_kinds, path))
        children[step.name] = child
    return children


def _workflow_steps(definition: WorkflowDefinition, paths: Mapping[str, str]) -> list[tuple[StepSpec, str]]:
    """Each `type: workflow` step and where it is written: listed, or a for_each group's agent."""
    listed = [(step, paths[step.name]) for step in definition.steps.values() if step.kind == KIND]
    return listed + [
        (group.agent, f"{paths[group.name]}.agent")
        for group in definition.for_each.values()
        if isinstance(group.agent, StepSpec)
    ]


def _child_problems(
    step: StepSpec,
    child: WorkflowDefinition,
    at: str,
    caller: WorkflowDefinition,
    provider_routes: Mapping[str, str],
    refused_kinds: Mapping[str, str],
    path: str,
) -> list[Problem]:
    name = f"the sub-workflow '{child.name}'"
    problems = []
    limit = step.params["max_depth"] or MAX_DEPTH
    if 1 + depth(child) > limit:
        problems.append(Problem(at, f"{name} runs sub-workflows {1 + depth(child)} deep; at most {limit} may"))
    in_group = step.name in caller.group_steps
    caller_chars = _caller_chars(caller, step.name)
    if (longest := caller_chars + len(SUBWORKFLOW_SEPARATOR) + longest_path(child)) > MAX_PATH_CHARS:
        with_index = f" and a branch's index (up to {BRANCH_SUFFIX_CHARS})" if in_group else ""
        problems.append(
            Problem(
                at,
                f"the paths of {name}'s steps reach {longest} characters with this step's name{with_index}; "
                f"at most {MAX_PATH_CHARS} fit",
            )
        )
    grouped = sorted({group for nested in child.nested() for group in nested.group_names})
    if in_group and grouped:
        problems.append(
            Problem(
                at,
                f"{name} has groups ({', '.join(grouped)}): a for_each group's sub-workflow runs one step at a "
                "time in its branch, so neither it nor a sub-workflow it runs may hold a parallel or for_each group",
            )
        )
    if in_group:
        problems += _waits_problems(child, at, name)
    for nested in child.nested():
        for kind in sorted({nested_step.kind for nested_step in nested.steps.values()} & set(refused_kinds)):
            problems.append(Problem(at, f"{name} has {kind} steps: {refused_kinds[kind]}"))
    for provider in sorted(child.providers()):
        if problem := provider_problem(provider, provider_routes):
            problems.append(Problem(at, f"{name}: {problem}"))
    problems.extend(_input_problems(step, child, caller, path))
    return problems


# What may not run in a branch's sub-workflow: a run waits for a person one step at a time, and a
# group's other branches go on meanwhile.
_WAITS_FOR_A_PERSON = ("human_gate", "questions")


def _waits_problems(child: WorkflowDefinition, at: str, name: str) -> list[Problem]:
    """A branch's sub-workflow may not wait for a person, as a group's agent may not."""
    waits = sorted(
        {step.kind for nested in child.nested() for step in nested.steps.values() if step.kind in _WAITS_FOR_A_PERSON}
        | {"dialog" for nested in child.nested() for agent in nested.agents.values() if agent.dialog is not None}
    )
    if not waits:
        return []
    return [
        Problem(
            at,
            f"{name} waits for a person ({', '.join(waits)}): a for_each group's branches run at once, so "
            "its sub-workflow may not (a sub-workflow that waits for a person works outside groups)",
        )
    ]


def _input_problems(step: StepSpec, child: WorkflowDefinition, caller: WorkflowDefinition, path: str) -> list[Problem]:
    """What `input_mapping` binds must be inputs the sub-workflow takes, and cover those it needs.
    Without a mapping it gets its caller's inputs, as in conductor."""
    mapping = step.params["input_mapping"]
    name = f"the sub-workflow '{child.name}'"
    needed = needed_inputs(child)
    if mapping is None:
        if not caller.inputs:
            return []  # its caller takes whatever inputs a run gives: a run must give these (forwarded_inputs)
        given, where = set(caller.inputs), f"{path}.workflow"
        how = "its caller has no such input: give it in input_mapping"
        problems = [
            Problem(where, f"{name} takes input '{input_name}' as {spec.type}, and its caller's is {caller.inputs[input_name].type}")
            for input_name, spec in child.inputs.items()
            if input_name in caller.inputs and caller.inputs[input_name].type != spec.type
        ]
    else:
        given, where = set(mapping), f"{path}.input_mapping"
        how = "input_mapping must bind it"
        problems = []
    problems += [Problem(where, f"{name} needs input '{input_name}': {how}") for input_name in needed if input_name not in given]
    if mapping is not None and child.inputs:
        problems += [
            Problem(f"{path}.input_mapping.{input_name}", f"{name} takes no input '{input_name}' (it takes: {', '.join(child.inputs)})")
            for input_name in mapping
            if input_name not in child.inputs
        ]
    return problems

