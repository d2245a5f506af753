"""`only_fields`: return just the asked-for (dotted) fields of a document, and its id."""

from __future__ import annotations

from typing import Any


def project(doc: dict[str, Any], only_fields: list[str] | None) -> dict[str, Any]:
    if not only_fields:
        return doc
    out: dict[str, Any] = {"id": doc.get("id")}
    for path in only_fields:
        parts = path.split(".")
        src: Any = doc
        for part in parts:
            if not isinstance(src, dict) or part not in src:
                break
            src = src[part]
        else:
            dst = out
            for part in parts[:-1]:
                dst = dst.setdefault(part, {})
                if not isinstance(dst, dict):
                    break
            else:
                dst[parts[-1]] = src
    return out
