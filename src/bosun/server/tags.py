"""Tags are stored joined in one text column so that every engine can filter them with LIKE."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

SEP = "\x1f"


def join_tags(tags: Iterable[str] | None) -> str:
    tags = [t for t in tags or [] if isinstance(t, str)]
    return SEP + SEP.join(tags) + SEP if tags else ""


@dataclass
class TagFilter:
    """ClearML's tag filter: plain tags match any, `-tag` excludes; `__$all` makes the plain tags
    all required, `__$not` negates the next tag."""

    include: list[str]
    exclude: list[str]
    match_all: bool

    @classmethod
    def parse(cls, wanted: list[str]) -> TagFilter:
        parsed = cls([], [], False)
        negate_next = False
        for tag in wanted:
            if tag in ("__$all", "__$and"):
                parsed.match_all = True
            elif tag in ("__$any", "__$or"):
                parsed.match_all = False
            elif tag == "__$not":
                negate_next = True
            elif tag.startswith("-") or negate_next:
                parsed.exclude.append(tag[1:] if tag.startswith("-") else tag)
                negate_next = False
            else:
                parsed.include.append(tag)
        return parsed

    def matches(self, have: list[str]) -> bool:
        if any(t in have for t in self.exclude):
            return False
        if not self.include:
            return True
        found = (t in have for t in self.include)
        return all(found) if self.match_all else any(found)

    def clause(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[bool] | None:
        clauses: list[sa.ColumnElement[bool]] = []
        if self.include:
            hits = [column.contains(SEP + t + SEP, autoescape=True) for t in self.include]
            clauses.append(sa.and_(*hits) if self.match_all else sa.or_(*hits))
        clauses.extend(~column.contains(SEP + t + SEP, autoescape=True) for t in self.exclude)
        return sa.and_(*clauses) if clauses else None
