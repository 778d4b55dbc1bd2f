"""The parallel group: each of its agents runs once, all at once; its result names them."""

from workflows.definition import ParallelSpec
from workflows.services.steps.kinds.base import Branch, GroupKind, branch_error, branches_by_status


class ParallelKind(GroupKind):
    """Read by the definition parser (`parallel:`, definition/_groups.py)."""

    name = "parallel"
    refused_whole_past_max_iterations = True  # as conductor

    def branch_count(self, *, group: ParallelSpec, context: dict, entering: bool = False) -> int:
        return len(group.agents)

    def branch(self, *, group: ParallelSpec, index: int, prefix: str = "") -> tuple[str, str]:
        return prefix + group.agents[index], group.agents[index]

    def slots(self, *, group: ParallelSpec) -> int:
        return len(group.agents)

    def result(self, *, group: ParallelSpec, ended: list[Branch]) -> dict:
        """Conductor's shape: outputs and errors by agent."""
        succeeded, failed = branches_by_status(ended)
        return {
            "outputs": {branch.branch_key: branch.output for branch in succeeded},
            "errors": {branch.branch_key: branch_error(branch, key_field="agent_name") for branch in failed},
        }
