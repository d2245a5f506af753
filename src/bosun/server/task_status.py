"""ClearML's task status machine: which status may follow which."""

from bosun.api import errors

CREATED = "created"
QUEUED = "queued"
IN_PROGRESS = "in_progress"
STOPPED = "stopped"
COMPLETED = "completed"
FAILED = "failed"
CLOSED = "closed"
PUBLISHING = "publishing"
PUBLISHED = "published"

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({QUEUED, IN_PROGRESS}),
    QUEUED: frozenset({CREATED, IN_PROGRESS, STOPPED}),
    IN_PROGRESS: frozenset({STOPPED, FAILED, CREATED, COMPLETED}),
    STOPPED: frozenset(
        {CLOSED, CREATED, FAILED, QUEUED, IN_PROGRESS, PUBLISHED, PUBLISHING, COMPLETED}
    ),
    CLOSED: frozenset({CREATED, FAILED, PUBLISHED, PUBLISHING, STOPPED}),
    FAILED: frozenset({CREATED, STOPPED, PUBLISHED, QUEUED}),
    PUBLISHING: frozenset({PUBLISHED}),
    PUBLISHED: frozenset(),
    COMPLETED: frozenset({PUBLISHED, IN_PROGRESS, CREATED, QUEUED}),
}
ALL = frozenset(TRANSITIONS)


def check_transition(
    current: str, new: str, *, force: bool = False, allow_same: bool = True
) -> None:
    """Raise InvalidTaskStatus unless `current -> new` is allowed (anything goes with force)."""
    if force:
        return
    if current == new:
        if allow_same:
            return
        raise errors.InvalidTaskStatus(
            f"task is already {current}", current_status=current, new_status=new
        )
    if new not in TRANSITIONS.get(current, frozenset()):
        raise errors.InvalidTaskStatus(
            f"invalid status change from {current} to {new} (use force=true to override)",
            current_status=current,
            new_status=new,
        )
