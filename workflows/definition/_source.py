"""Turning a definition's source into plain data without letting it exhaust time or memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import yaml
from yaml.composer import ComposerError

from ._values import kind_of
from .errors import DefinitionError, Problem
from .text import unsafe_text_in

MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_ALIASES = 1_000
MAX_EXPANDED_BYTES = 1024 * 1024
# What a value adds to the stored JSON beyond its text: quotes, a separator, brackets.
_NODE_OVERHEAD_BYTES = 4
_MERGE_TAG = "tag:yaml.org,2002:merge"
_FILE_TAG = "!file"
_FILE_INCLUDE = (
    "'!file' includes are not supported: a definition is uploaded as one document, and the service "
    "reads no files; write the file's text in place"
)


class _GuardedLoader(yaml.SafeLoader):
    """The pure-Python SafeLoader (its composer can be hooked) with depth and alias limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                self._refuse(f"it uses more than {MAX_ALIASES:,} aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                self._refuse(f"it is nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _refuse(self, problem: str) -> NoReturn:
        raise ComposerError(None, None, problem, self.peek_event().start_mark)


# Dates stay strings: definitions are stored as JSON, and `version: 2024-05-01` means the text.
_GuardedLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def read_source(
    source: str | bytes | Mapping[str, Any], *, max_bytes: int, max_expanded_bytes: int = MAX_EXPANDED_BYTES
) -> Any:
    """Plain data from YAML text or an already-parsed mapping; DefinitionError if unsafe or unreadable.

    YAML is measured after alias expansion, on the composed nodes and before any Python value is
    built: a few kilobytes of anchors can stand for hundreds of megabytes of definition."""
    if isinstance(source, Mapping):
        _check_data(source, max_bytes=max_bytes)
        _check_text(source)
        return source
    if not isinstance(source, (str, bytes)):
        raise _refusal(f"must be YAML text or a mapping, not {kind_of(source)}")
    data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    if len(data) > max_bytes:
        raise _refusal(f"is {len(data):,} bytes; the limit is {max_bytes:,}")
    try:
        text = data.decode("utf-8") if isinstance(source, bytes) else source
    except UnicodeDecodeError as exc:
        raise _refusal(f"is not valid UTF-8 (byte {exc.start})") from None
    return _load_yaml(text, max_expanded_bytes=max_expanded_bytes)


def _load_yaml(text: str, *, max_expanded_bytes: int) -> Any:
    try:
        return _compose_and_construct(text, max_expanded_bytes=max_expanded_bytes)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _refusal(f"is not valid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise _refusal(f"is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError:  # the safe constructors' only ValueError: Python's limit on integer digits
        raise _refusal("holds an integer with too many digits") from None


def _compose_and_construct(text: str, *, max_expanded_bytes: int) -> Any:
    loader = _GuardedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root, max_bytes=max_expanded_bytes)
        problems = list(_node_problems(root))
        if problems:
            raise DefinitionError(problems)
        document = loader.construct_document(root)
    finally:
        loader.dispose()
    # YAML's escapes ("\0", "\ud800") spell text that no column or JSON answer can hold.
    _check_text(document)
    return document


def _check_text(data: Any) -> None:
    unsafe = unsafe_text_in(data)
    if unsafe:
        raise DefinitionError([Problem(unsafe[0] or "definition", unsafe[1])])


def _check_expansion(root: yaml.Node, *, max_bytes: int) -> None:
    """Refuse documents whose aliases expand to too many nodes, too many bytes, too deep, or into
    themselves."""
    measured: dict[int, tuple[int, int, int]] = {}  # id(node) -> (expanded node count, depth, bytes)
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    # Iterative post-order walk: aliases share node objects, so memoising by id keeps it linear.
    while stack:
        node, children_done = stack.pop()
        if children_done:
            children = _children(node)
            count = 1 + sum(measured[id(child)][0] for child in children)
            depth = 1 + max((measured[id(child)][1] for child in children), default=0)
            size = _NODE_OVERHEAD_BYTES + sum(measured[id(child)][2] for child in children)
            if isinstance(node, yaml.ScalarNode):
                size += len(node.value.encode("utf-8", "surrogatepass"))
            if count > MAX_NODES:
                raise _refusal(f"expands to more than {MAX_NODES:,} nodes (too many aliases)")
            if size > max_bytes:
                raise _refusal(f"expands to more than {max_bytes:,} bytes (the expanded size limit)")
            if depth > MAX_DEPTH:
                raise _refusal(f"expands to nesting deeper than {MAX_DEPTH} levels")
            measured[id(node)] = (count, depth, size)
            in_progress.discard(id(node))
        elif id(node) in in_progress:
            raise _refusal("contains an alias to an anchor that encloses it")
        elif id(node) not in measured:
            in_progress.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _node_problems(root: yaml.Node) -> Iterator[Problem]:
    """Duplicate keys, and conductor's `!file` includes, each at its path."""
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if node.tag == _FILE_TAG:
            yield Problem(path or "definition", _FILE_INCLUDE)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    continue
                key_path = f"{path}.{key.value}" if path else key.value
                if (key.tag, key.value) in seen:
                    yield Problem(key_path, f"duplicate key '{key.value}' (line {key.start_mark.line + 1})")
                seen.add((key.tag, key.value))
                stack.append((value, key_path))


def _check_data(data: Mapping[str, Any], *, max_bytes: int) -> None:
    """The same depth and size limits for data that arrived already parsed (a JSON request body)."""
    nodes = chars = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise _refusal(f"is nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise _refusal(f"has more than {MAX_NODES:,} values")
        if isinstance(value, str):
            chars += len(value)
            if chars > max_bytes:
                raise _refusal(f"holds more than {max_bytes:,} characters of text")
        elif isinstance(value, Mapping):
            stack.extend((child, depth + 1) for pair in value.items() for child in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((child, depth + 1) for child in value)


def _refusal(message: str) -> DefinitionError:
    return DefinitionError([Problem("definition", message)])
