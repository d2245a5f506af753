"""`only_fields`: return just the asked-for (dotted) fields of a document, and its id.

As ClearML (MongoDB projections) does: an embedded object on the way to an asked-for leaf is
kept even when the leaf is absent (`runtime.version` of a task without one gives
`runtime: {}`); a list of objects on the way is projected item by item
(`execution.artifacts.key` gives each artifact's key); a path through a value that is not an
object (or a missing one) gives nothing. A path that is a prefix of another asked-for path
wins: `runtime` and `runtime.version` together give the whole `runtime`.
"""

from __future__ import annotations

from typing import Any

# A projection tree: field -> WHOLE (take it all) or the tree of its own asked-for fields.
Tree = dict[str, Any]
WHOLE = True
_NOTHING = object()


def tree(only_fields: list[str]) -> Tree:
    root: Tree = {}
    for path in only_fields:
        node = root
        parts = [p for p in path.split(".") if p]
        for depth, part in enumerate(parts):
            if depth == len(parts) - 1:
                node[part] = WHOLE
                break
            child = node.get(part)
            if child is WHOLE:
                break  # a shorter path already takes this field whole
            node = node.setdefault(part, {})
    return root


def _apply(value: Any, node: Tree | bool) -> Any:
    if node is WHOLE:
        return value  # the documents are fresh objects per query: no copy needed
    assert isinstance(node, dict)
    if isinstance(value, dict):
        out = {}
        for key, child in node.items():
            if key in value:
                projected = _apply(value[key], child)
                if projected is not _NOTHING:
                    out[key] = projected
        return out
    if isinstance(value, list):
        return [_apply(item, node) for item in value if isinstance(item, dict)]
    return _NOTHING


def project(doc: dict[str, Any], only_fields: list[str] | None) -> dict[str, Any]:
    if not only_fields:
        return doc
    out = _apply(doc, tree(only_fields))
    return {"id": doc.get("id"), **out}
