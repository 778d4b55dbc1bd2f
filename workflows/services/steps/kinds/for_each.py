"""The for_each group: its agent runs once per item of a list, at most max_concurrent at a time. Its
agent may be a `workflow` step: each branch then runs the sub-workflow in a frame of its own
(definition/subworkflows.py, progression.py), and holds its slot until the sub-workflow ends."""

from django.conf import settings

from workflows.definition import ForEachSpec, TemplateFailure, resolve_reference
from workflows.services.steps.kinds.base import Branch, GroupKind, branch_error, branches_by_status


class ForEachKind(GroupKind):
    """Read by the definition parser (`for_each:`, definition/_groups.py)."""

    name = "for_each"
    entry_error_type = "ForEachSourceError"

    def branch_count(self, *, group: ForEachSpec, context: dict, entering: bool = False) -> int:
        return len(self._items(group, context, entering=entering))

    def branch(self, *, group: ForEachSpec, index: int, prefix: str = "") -> tuple[str, str]:
        return prefix + group.agent.name, str(index)

    def slots(self, *, group: ForEachSpec) -> int:
        return group.max_concurrent

    def branch_context(self, *, group: ForEachSpec, context: dict, index: int, key: str) -> dict:
        items = self._items(group, context)
        if index >= len(items):
            raise TemplateFailure(f"for_each '{group.name}' source", f"has no item {index} any more")
        return {**context, group.as_name: items[index], "_index": index, "_key": key}

    def result(self, *, group: ForEachSpec, ended: list[Branch]) -> dict:
        """Conductor's shape: the outputs as a list in item order (failed items left out), the
        errors by item key, and the item count."""
        succeeded, failed = branches_by_status(ended)
        return {
            "outputs": [branch.output for branch in succeeded],
            "errors": {branch.branch_key: branch_error(branch, key_field="item_key") for branch in failed},
            "count": len(ended),
        }

    def _items(self, group: ForEachSpec, context: dict, *, entering: bool = False) -> list:
        """The group's items. Their count is held to FOR_EACH_MAX_ITEMS when the group is entered; a
        group already entered keeps its items if the limit is lowered while it runs."""
        where = f"for_each '{group.name}' source"
        items = resolve_reference(group.source, context, where=where)
        if not isinstance(items, list):
            raise TemplateFailure(where, f"'{group.source}' is {type(items).__name__}, not a list")
        if entering and len(items) > settings.FOR_EACH_MAX_ITEMS:
            limit = settings.FOR_EACH_MAX_ITEMS
            message = f"'{group.source}' has {len(items):,} items; the limit is {limit:,} (FOR_EACH_MAX_ITEMS)"
            raise TemplateFailure(where, message)
        return items
