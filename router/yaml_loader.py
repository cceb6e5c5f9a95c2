"""Reading routes.yaml as it is written: YAML 1.2 booleans, and no duplicate key kept silently.

PyYAML implements YAML 1.1, where ``on``, ``off``, ``yes``, ``no``, ``y`` and
``n`` are booleans: ``retry: {on: [5xx]}`` would read as ``{True: ["5xx"]}``
and ``alias: no`` as ``False``.  Here only ``true`` and ``false`` (any case
YAML 1.2 allows: true, True, TRUE) are booleans; the rest are strings.  A bare
date or time (``version: 2026-11-01``) is a string too, as in YAML 1.2.

A mapping that names a key twice is refused with the key's path and the line
of its second appearance (``models.chat: line 12: duplicate key (first on
line 5)``), where PyYAML would keep the last one without a word.

``load_yaml`` is what every reader of routes.yaml uses (``load_table``, and so
``check``, ``serve``, SIGHUP, --watch and ``POST /admin/reload``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml import YAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["DuplicateKeyError", "RoutesLoader", "YAMLError", "load_yaml"]

# Implicit types YAML 1.2's core schema does not have: a bare 2026-11-01 is a string there, as written
# (a price's version stays "2026-11-01"; expires_at reads ISO strings itself).
_YAML_1_1_ONLY = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
# YAML 1.2's core schema: only these are booleans.
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice; ``path`` is where (``models.chat``), ``line`` is 1-based."""

    def __init__(self, path: str, line: int, first_line: int) -> None:
        self.path = path
        self.line = line
        self.first_line = first_line
        self.message = f"line {line}: duplicate key (first on line {first_line}); each key may appear once"
        super().__init__(f"{path}: {self.message}")


class RoutesLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans and duplicate mapping keys refused."""

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            _refuse_duplicates(node, "", set())
        return node


# PyYAML's resolvers are class-level lists: copy them before removing the YAML 1.1 boolean one,
# so yaml.SafeLoader itself is left as it was.
RoutesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_1_1_ONLY] for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RoutesLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))


def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else f"<{node.id}>"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _refuse_duplicates(node: Node, path: str, walked: set[int]) -> None:
    """Walk the composed tree (before construction, while every node knows its line)."""
    if id(node) in walked:  # an anchor used twice (or a recursive one) is walked once
        return
    walked.add(id(node))
    if isinstance(node, MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" merges; keys it brings are overridden by design
            key = _key_text(key_node)
            identity = (key_node.tag, key)
            line = key_node.start_mark.line + 1
            if identity in seen:
                raise DuplicateKeyError(_join(path, key), line, seen[identity])
            seen[identity] = line
            _refuse_duplicates(value_node, _join(path, key), walked)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path}[{i}]", walked)


def load_yaml(text: str) -> Any:
    """One YAML document read with ``RoutesLoader``; raises ``yaml.YAMLError`` (``DuplicateKeyError`` included)."""
    return yaml.load(text, Loader=RoutesLoader)  # noqa: S506 - RoutesLoader is a SafeLoader
