"""Every name a template or a condition uses, resolved at upload against what can exist where it is
rendered, so that no run pays for steps and then fails on a name the definition could never supply.

Where a template renders decides what it may name:
- every template: ``workflow.input.<declared input>``, ``workflow.name``, ``context.iteration``,
  ``budget.*`` and Jinja's globals (``range``, ``namespace``, ...);
- an agent's prompts: the agents, steps and groups that can have run before it, that is, that lie on
  some path of routes from the entry point that reaches it afterwards (on a loop, itself included);
  a branch of a group sees what its group's entry sees, and a for_each branch its item, ``_index``
  and ``_key``;
- a route's ``when`` and ``output``: those, the step or group that just ended, and ``output``, its own
  output; a bare condition sees them under conductor's flattened names too (conditions.py);
- the workflow's ``output``: whatever can have run before the run ends.

Below a name, fields are checked as far as their shape is known: an agent's ``output`` schema, a
group's result, an input's type. A field of a value whose shape is not declared (an agent without an
``output`` schema, an array item, an object input) is not checked.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import meta, nodes

from .conditions import FUNCTIONS, LITERALS, is_jinja, parsed_condition
from .context_modes import declared_roots
from .errors import Problem
from .model import END, AgentSpec, ForEachSpec, ParallelSpec, RouteSpec, WorkflowDefinition
from .reasoning import is_template
from .step_kinds import step_reader
from .subworkflows import output_fields
from .templates import jinja_globals, parsed_template

BUDGET_FIELDS = ("budget_usd", "spent_usd", "remaining_usd", "mode", "team_remaining_usd")
TEAM_BUDGET_FIELD = "team_remaining_usd"
_NOT_HERE = {
    "dir": "conductor's workflow.dir is the folder of its YAML file; a run of this service has no files",
    "file": "conductor's workflow.file is the path of its YAML file; a run of this service has no files",
}
_NO_HISTORY = {"history": "context.history (the agents run so far, in order) is not supported; use context.iteration"}


@dataclass(frozen=True)
class Shape:
    """What a value is known to hold: its fields (None when any may exist) and fields refused with a reason."""

    fields: Mapping[str, Shape] | None
    what: str = "it"
    refused: Mapping[str, str] = field(default_factory=dict)


ANY = Shape(None)
SCALAR = Shape({}, "a plain value")


@dataclass(frozen=True)
class GroupNames:
    """What a kind of group adds to what templates see: names its branches see beside the run's, and
    its result's fields (None: conductor's result for groups of its kind)."""

    branch_names: tuple[str, ...] = ()
    result_fields: tuple[str, ...] | None = None


_group_names: dict[str, GroupNames] = {}


def register_group_names(kind: str, names: GroupNames) -> None:
    """Tell the reference check what the groups of `kind` (ParallelSpec.kind, ForEachSpec.kind) show."""
    _group_names[kind] = names


@dataclass(frozen=True)
class Reads:
    """What a definition's templates read of the budget (the run's figures, and the team's), and
    which inputs of a workflow that declares none."""

    budget: bool = False
    team_budget: bool = False
    inputs: frozenset[str] = frozenset()


@dataclass
class _Checker:
    definition: WorkflowDefinition
    problems: list[Problem] = field(default_factory=list)
    reads_budget: bool = False
    reads_team_budget: bool = False
    reads_inputs: set[str] = field(default_factory=set)

    def check_template(self, source: str, path: str, scope: Mapping[str, Shape]) -> None:
        tree = parsed_template(source)
        undeclared = meta.find_undeclared_variables(tree)
        bound = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
        for root, parts, called in _jinja_chains(tree):
            if root in undeclared:
                self.resolve(root, [] if root in bound else parts, called, path, scope)

    def check_condition(self, when: str, path: str, scope: Mapping[str, Shape]) -> None:
        if is_jinja(when):
            self.check_template(when, path, scope)
            return
        flat = _flat_names(scope)
        lenient = scope["output"].fields is None
        for root, parts, called in _python_chains(parsed_condition(when)):
            if root in flat:
                base, head = flat[root]
                self.resolve(base, [*head, *parts], called, path, scope)
            elif root in scope or self._is_node(root):
                self.resolve(root, parts, called, path, scope)
            elif not lenient:
                self.problems.append(Problem(path, _unknown(root, [*flat, *scope], "condition")))

    def resolve(self, root: str, parts: list, called: bool, path: str, scope: Mapping[str, Shape]) -> None:
        if root not in scope:
            self.problems.append(Problem(path, self.absent(root, scope)))
            return
        if root == "budget":
            self.reads_budget = True
            self.reads_team_budget |= not parts or parts[0] == TEAM_BUDGET_FIELD
        if root == "workflow" and not self.definition.inputs and parts[:1] == ["input"] and len(parts) > 1:
            # A workflow without an input block takes whatever inputs a run gives, as in conductor:
            # the ones its templates read are then required of every run (services/runs.py).
            if isinstance(parts[1], str):
                self.reads_inputs.add(parts[1])
        shape, walked = scope[root], root
        for index, part in enumerate(parts):
            if shape.fields is None or isinstance(part, int):
                return
            if part in shape.fields:
                shape, walked = shape.fields[part], f"{walked}.{part}"
                continue
            if part in shape.refused:
                self.problems.append(Problem(path, f"'{walked}.{part}': {shape.refused[part]}"))
            elif not (called and index == len(parts) - 1):  # a method, like `.items()` or `.upper()`
                known = ", ".join(shape.fields) or "no fields"
                self.problems.append(Problem(path, f"'{walked}' has no '{part}' ({shape.what} has {known})"))
            return

    def _is_node(self, name: str) -> bool:
        definition = self.definition
        return name in definition.agents or name in definition.steps or name in definition.group_names

    def absent(self, root: str, scope: Mapping[str, Shape]) -> str:
        """Why `root` is not a name that `scope` sees."""
        definition = self.definition
        if self._is_node(root):
            return f"'{root}' cannot have run before this is rendered: no path of routes from the entry point passes through it first"
        for group in definition.parallel.values():
            if root in group.agents:
                return f"'{root}' runs in parallel group '{group.name}': its output is '{group.name}.outputs.{root}'"
        for group in definition.for_each.values():
            if root == group.agent.name:
                return f"'{root}' is the agent of for_each group '{group.name}': its outputs are '{group.name}.outputs'"
        if root == "output":
            return "'output' (a step's own output) is only seen by its routes' 'when' and 'output'"
        return _unknown(root, scope, "template")


def check_references(definition: WorkflowDefinition, paths: Mapping[str, str]) -> tuple[list[Problem], Reads]:
    """Every reference problem of a valid definition, each at its path, and what it reads of the
    budget. `paths` gives where each agent, step and group is written (``agents[2]``, ``parallel[0]``)."""
    checker = _Checker(definition)
    before = _may_have_run_before(definition)
    shapes = _node_shapes(definition)
    base = _base_scope(definition)

    def scope_of(names: frozenset[str] | None) -> dict[str, Shape]:
        visible = shapes if names is None else {name: shapes[name] for name in names}
        return {**visible, **base}

    just_before = _just_before(definition)
    always_before = _always_before(definition, just_before)
    agent_paths = {id(agent): paths[name] for name, agent in definition.agents.items()}
    agent_paths.update({id(group.agent): f"{paths[group.name]}.agent" for group in definition.for_each.values()})

    def agent_scope(agent: AgentSpec, entered: list[str], names: frozenset[str] | None) -> dict[str, Shape]:
        """What an agent entered as `entered` (itself, or its group) sees, in the workflow's context mode."""
        if definition.context_mode == "last_only":
            previous = set().union(*(just_before.get(place, set()) for place in entered))
            # Only what ran just before is seen, and only a name that is always that can be read.
            names = frozenset(previous) if len(previous) == 1 and END not in previous else frozenset()
        elif definition.context_mode == "explicit":
            _check_always_ran(checker, agent, entered, always_before, path=agent_paths[id(agent)])
            declared, inputs = declared_roots(agent.input)
            names = declared if names is None else declared & names
            scope = scope_of(names)
            scope["workflow"] = _workflow_shape(definition, inputs)
            return scope
        return scope_of(names)

    for name, agent in definition.agents.items():
        groups = [group for group in definition.parallel.values() if name in group.agents]
        places = [before[name]] if name in before else []
        places += [before[group.name] for group in groups if group.name in before]
        names = frozenset().union(*places) if places else None  # an agent that never runs: names only need to exist
        scope = agent_scope(agent, [name, *(group.name for group in groups)], names)
        scope.update({extra: ANY for group in groups for extra in _names_of(group).branch_names})
        _check_agent(checker, agent, paths[name], scope)
    for group in definition.for_each.values():
        if isinstance(group.agent, AgentSpec):
            scope = agent_scope(group.agent, [group.name], before.get(group.name))
        else:  # a sub-workflow's step, which, as any step not an agent's, sees every output
            scope = scope_of(before.get(group.name))
        scope.update({group.as_name: ANY, "_index": SCALAR, "_key": SCALAR})
        scope.update({extra: ANY for extra in _names_of(group).branch_names})
        if isinstance(group.agent, AgentSpec):
            _check_agent(checker, group.agent, f"{paths[group.name]}.agent", scope)
        else:
            for key, template in step_reader(group.agent.kind).templates(group.agent.params):
                checker.check_template(template, f"{paths[group.name]}.agent.{key}", scope)
        _check_source(checker, group, paths[group.name], scope_of(before.get(group.name)))
    for step in definition.steps.values():
        reader = step_reader(step.kind)
        if reader is None:
            continue
        names = before.get(step.name)
        for key, template in reader.templates(step.params):
            checker.check_template(template, f"{paths[step.name]}.{key}", scope_of(names))
        for key, template in reader.route_templates(step.params):
            checker.check_template(template, f"{paths[step.name]}.{key}", scope_of(None if names is None else names | {step.name}))
    sources = [*definition.agents.values(), *definition.steps.values(), *definition.parallel.values(), *definition.for_each.values()]
    for source in sources:
        names = before.get(source.name)
        scope = scope_of(None if names is None else names | {source.name})
        scope["output"] = _own_output(source, shapes)
        _check_routes(checker, source.routes, paths[source.name], scope)
    for name, template in definition.output.items():
        checker.check_template(template, f"output.{name}", scope_of(before.get(END)))
    unique = list(dict.fromkeys(checker.problems))  # a name used twice in one template is one problem
    return unique, Reads(
        budget=checker.reads_budget, team_budget=checker.reads_team_budget, inputs=frozenset(checker.reads_inputs)
    )


def _check_agent(checker: _Checker, agent: AgentSpec, path: str, scope: Mapping[str, Shape]) -> None:
    for key in ("system_prompt", "prompt"):
        if getattr(agent, key):
            checker.check_template(getattr(agent, key), f"{path}.{key}", scope)
    # Only the agent's own may be templates; the runtime's defaults are literals.
    for value, key in ((agent.reasoning_effort, "reasoning.effort"), (agent.context_tier, "context_tier")):
        if is_template(value):
            checker.check_template(value, f"{path}.{key}", scope)


def _check_routes(checker: _Checker, routes: tuple[RouteSpec, ...], path: str, scope: Mapping[str, Shape]) -> None:
    for index, route in enumerate(routes):
        if isinstance(route.when, str):
            checker.check_condition(route.when, f"{path}.routes[{index}].when", scope)
        for name, template in (route.output or {}).items():
            checker.check_template(template, f"{path}.routes[{index}].output.{name}", scope)


def _check_source(checker: _Checker, group: ForEachSpec, path: str, scope: Mapping[str, Shape]) -> None:
    parts = group.source.split(".")
    root = parts[0]
    if root == "workflow":
        checker.resolve(root, parts[1:3], False, f"{path}.source", scope)  # an input a run must give
    elif root not in scope:
        checker.problems.append(Problem(f"{path}.source", checker.absent(root, scope)))


def _successors(definition: WorkflowDefinition) -> dict[str, set[str]]:
    """Where each agent, step or group can route: its routes, and a kind's own (a gate's options)."""
    successors = {
        source.name: {route.to for route in source.routes} or {END}
        for source in (*definition.agents.values(), *definition.parallel.values(), *definition.for_each.values())
    }
    for step in definition.steps.values():
        reader = step_reader(step.kind)
        named = {target for _, target in reader.targets(step.params)} if reader else set()
        successors[step.name] = ({route.to for route in step.routes} | named) or {END}
    return successors


def always_run_before(definition: WorkflowDefinition, name: str) -> set[str]:
    """What runs before the agent, step or group `name` on every way to it from the entry point."""
    return _always_before(definition, _just_before(definition)).get(name, set())


def ran_just_before(definition: WorkflowDefinition, name: str) -> str | None:
    """What always runs just before the agent, step or group `name`, or None when that is not one
    thing: the one output an agent sees in the last_only mode (upload lets its templates read no other)."""
    previous = _just_before(definition).get(name, set())
    return next(iter(previous)) if len(previous) == 1 and END not in previous else None


def _just_before(definition: WorkflowDefinition) -> dict[str, set[str]]:
    """For each agent, step or group, what can have run just before it (END for a run's first)."""
    previous: dict[str, set[str]] = {definition.entry_point: {END}}
    for name, following in _successors(definition).items():
        for target in following:
            previous.setdefault(target, set()).add(name)
    return previous


def _always_before(definition: WorkflowDefinition, just_before: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """For each agent, step or group the run can reach, what has run before it on every way there."""
    names = set(just_before) | {definition.entry_point}
    always = {name: set(names) for name in names}
    always[definition.entry_point] = set()
    changed = True
    while changed:
        changed = False
        for name in names - {definition.entry_point}:
            ways = [always[previous] | {previous} for previous in just_before.get(name, ()) if previous in always]
            now = set.intersection(*ways) if ways else set()
            if now != always[name]:
                always[name], changed = now, True
    return always


def _check_always_ran(
    checker: _Checker, agent: AgentSpec, entered: list[str], always_before: Mapping[str, set[str]], *, path: str
) -> None:
    """In the explicit mode, an input declared without '?' must have run on every way to the agent."""
    places = [place for place in entered if place in always_before]  # a group's member: the group
    if not places:
        return  # it never runs
    ran = set.intersection(*(always_before[place] for place in places))
    for index, reference in enumerate(agent.input):
        root = reference.split(".")[0]
        if not reference.endswith("?") and root != "workflow" and root not in ran:
            checker.problems.append(
                Problem(
                    f"{path}.input[{index}]",
                    f"'{root}' does not run before '{agent.name}' on every way there: end the reference with '?' "
                    "to make it optional",
                )
            )


def _workflow_shape(definition: WorkflowDefinition, inputs: frozenset[str]) -> Shape:
    """`workflow` as an agent in the explicit context mode sees it: only its declared inputs."""
    if not definition.inputs:  # no input block: a run may give any, and those declared are read
        fields = dict.fromkeys(inputs, ANY)
    else:
        fields = {name: _type_shape(spec.type) for name, spec in definition.inputs.items() if name in inputs}
    return Shape({"input": Shape(fields, "the inputs it declares"), "name": SCALAR}, "workflow", _NOT_HERE)


def _may_have_run_before(definition: WorkflowDefinition) -> dict[str, frozenset[str]]:
    """For each agent, step or group the run can reach, and for END, what can have run before it."""
    successors = _successors(definition)
    after = {name: _reach(successors, successors[name]) for name in successors}
    reachable = _reach(successors, {definition.entry_point}) - {END}
    before: dict[str, set[str]] = {name: set() for name in reachable | {END}}
    for name in reachable:
        for later in after[name] & before.keys():
            before[later].add(name)
    return {name: frozenset(names) for name, names in before.items()}


def _reach(successors: Mapping[str, set[str]], start: set[str]) -> set[str]:
    seen, stack = set(start), list(start)
    while stack:
        for following in successors.get(stack.pop(), ()):
            if following not in seen:
                seen.add(following)
                stack.append(following)
    return seen


def _base_scope(definition: WorkflowDefinition) -> dict[str, Shape]:
    inputs = (
        Shape({name: _type_shape(spec.type) for name, spec in definition.inputs.items()}, "the workflow's input")
        if definition.inputs
        else ANY  # no input block: a run may give any inputs (Reads.inputs)
    )
    return {
        **{name: ANY for name in jinja_globals()},
        "workflow": Shape({"input": inputs, "name": SCALAR}, "workflow", _NOT_HERE),
        "context": Shape({"iteration": SCALAR}, "context", _NO_HISTORY),
        "budget": Shape({name: SCALAR for name in BUDGET_FIELDS}, "budget"),
    }


def _node_shapes(definition: WorkflowDefinition) -> dict[str, Shape]:
    shapes = {name: Shape({"output": _output_shape(agent, f"agent '{name}'")}, f"agent '{name}'") for name, agent in definition.agents.items()}
    shapes.update({name: Shape({"output": ANY}, f"step '{name}'") for name in definition.steps})
    for name, child in definition.subworkflows.items():
        if name in definition.group_steps:
            continue  # a for_each group's: its branches' outputs are the group's
        # What a caller sees of a sub-workflow is its output, with the fields it has however it ends.
        what = f"the output of the sub-workflow '{child.name}'"
        shapes[name] = Shape({"output": Shape({field: ANY for field in output_fields(child)}, what)}, f"step '{name}'")
    for name, group in definition.parallel.items():
        outputs = {member: _output_shape(definition.agents[member], f"agent '{member}'") for member in group.agents}
        shapes[name] = Shape({"outputs": Shape(outputs, f"group '{name}' outputs"), "errors": ANY}, f"group '{name}'")
    for name in definition.for_each:
        shapes[name] = Shape({"outputs": ANY, "errors": ANY, "count": SCALAR}, f"group '{name}'")
    for name in definition.group_names:
        fields = _names_of(definition.group(name)).result_fields
        if fields is not None:
            shapes[name] = Shape({field: ANY for field in fields}, f"group '{name}'")
    return shapes


def _names_of(group: ParallelSpec | ForEachSpec) -> GroupNames:
    return _group_names.get(group.kind, GroupNames())


def _own_output(source: Any, shapes: Mapping[str, Shape]) -> Shape:
    shape = shapes[source.name]
    return shape if isinstance(source, (ParallelSpec, ForEachSpec)) else shape.fields["output"]


def _output_shape(agent: AgentSpec, what: str) -> Shape:
    if agent.output is None:
        return ANY
    return Shape({name: _schema_shape(schema) for name, schema in agent.output.items()}, f"the output of {what}")


def _schema_shape(schema: Mapping[str, Any]) -> Shape:
    if schema.get("type") == "object" and schema.get("properties"):
        return Shape({name: _schema_shape(inner) for name, inner in schema["properties"].items()}, "the object")
    return _type_shape(schema.get("type", "string"))


def _type_shape(type_name: str) -> Shape:
    return ANY if type_name in ("array", "object") else SCALAR


def _flat_names(scope: Mapping[str, Shape]) -> dict[str, tuple[str, list[str]]]:
    """Conductor's flattened names for a bare condition, each as the reference it stands for."""
    flat: dict[str, tuple[str, list[str]]] = {}
    for root, shape in (*((r, s) for r, s in scope.items() if r != "output"), ("output", scope["output"])):
        for name in shape.fields or ():
            flat[f"{root}_{name}"] = (root, [name])
    for name in scope["output"].fields or ():
        flat[name] = ("output", [name])
    return flat


def _unknown(name: str, known: Any, what: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    hint = f"did you mean '{close[0]}'?" if close else "not an input, agent, group, or one of workflow, context, budget"
    return f"unknown name '{name}' in {what} ({hint})"


def _jinja_chains(tree: nodes.Node) -> Iterator[tuple[str, list, bool]]:
    """Each name a template reads, with the constant fields and indexes after it and whether the last is called."""

    def visit(node: nodes.Node, called: bool = False) -> Iterator[tuple[str, list, bool]]:
        if isinstance(node, nodes.Call):
            yield from visit(node.node, called=True)
            for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if child is not None:
                    yield from visit(child)
            return
        if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)):
            parts: list = []
            while True:
                if isinstance(node, nodes.Getattr):
                    parts.insert(0, node.attr)
                    node = node.node
                elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
                    parts.insert(0, node.arg.value)
                    node = node.node
                elif isinstance(node, nodes.Getitem):
                    yield from visit(node.arg)
                    parts, called = [], False  # what follows a computed index is not known
                    node = node.node
                else:
                    break
            if isinstance(node, nodes.Name) and node.ctx == "load":
                yield node.name, parts, called
            elif not isinstance(node, nodes.Name):
                yield from visit(node)
            return
        for child in node.iter_child_nodes():
            yield from visit(child)

    yield from visit(tree)


def _python_chains(tree: ast.Expression) -> Iterator[tuple[str, list, bool]]:
    """The same for a bare condition's Python syntax tree."""

    def visit(node: ast.AST, called: bool = False) -> Iterator[tuple[str, list, bool]]:
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                yield from visit(node.func, called=True)
            for child in (*node.args, *(keyword.value for keyword in node.keywords)):
                yield from visit(child)
            return
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Name)):
            parts: list = []
            while True:
                if isinstance(node, ast.Attribute):
                    parts.insert(0, node.attr)
                    node = node.value
                elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, (str, int)):
                    parts.insert(0, node.slice.value)
                    node = node.value
                elif isinstance(node, ast.Subscript):
                    yield from visit(node.slice)
                    parts, called = [], False
                    node = node.value
                else:
                    break
            if isinstance(node, ast.Name):
                if node.id not in LITERALS or parts:
                    yield node.id, parts, called
            else:
                yield from visit(node)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)
