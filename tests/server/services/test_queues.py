"""queues.*: create, find, update, delete, entries and their order, and the hand-out to agents."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.support.server_process import ServerProcess


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _queue(api: Session, prefix: str = "q", **fields: Any) -> str:
    return api.call("queues.create", {"name": _unique(prefix), **fields})["id"]


def _task(api: Session, name: str = "t") -> str:
    return api.call("tasks.create", {"name": _unique(name)})["id"]


def _queued_task(api: Session, queue_id: str, name: str = "t") -> str:
    task_id = _task(api, name)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
    return task_id


def _entry_tasks(api: Session, queue_id: str) -> list[str]:
    queue = api.call("queues.get_by_id", {"queue": queue_id})["queue"]
    return [e["task"] for e in queue["entries"]]


def _status(api: Session, task_id: str) -> str:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]["status"]


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


def _drain(api: Session, body: dict[str, Any]) -> list[str]:
    """Pop until empty; return the task ids in hand-out order."""
    handed = []
    for _ in range(50):
        data = api.call("queues.get_next_task", body)
        if not data:
            return handed
        handed.append(data["entry"]["task"])
    raise AssertionError("the queue never ran empty")


# --- create / get -----------------------------------------------------------------------------


def test_create_then_get_by_id_returns_the_stored_queue(api: Session) -> None:
    name = _unique("create")
    queue_id = api.call("queues.create", {"name": name, "tags": ["gpu", "a100"],
                                          "system_tags": ["sys"]})["id"]
    assert len(queue_id) == 32
    assert all(c in "0123456789abcdef" for c in queue_id)
    queue = api.call("queues.get_by_id", {"queue": queue_id})["queue"]
    assert queue["id"] == queue_id
    assert queue["name"] == name
    assert queue["tags"] == ["gpu", "a100"]
    assert queue["system_tags"] == ["sys"]
    assert queue["entries"] == []
    assert queue["created"]


def test_create_with_a_taken_name_is_refused(api: Session) -> None:
    name = _unique("dup")
    first = api.call("queues.create", {"name": name})["id"]
    err = _error(api, "queues.create", {"name": name})
    assert (err.code, err.subcode) == (400, 801)
    assert name in err.msg
    assert [q["id"] for q in api.call("queues.get_all", {"name": f"^{name}$"})["queues"]] == [first]
    err = _error(api, "queues.create", {"name": "default"})
    assert (err.code, err.subcode) == (400, 801)


def test_create_without_a_name_is_refused(api: Session) -> None:
    err = _error(api, "queues.create", {})
    assert (err.code, err.subcode) == (400, 11)


def test_get_all_name_is_a_regex(api: Session) -> None:
    base = _unique("rx")
    exact = api.call("queues.create", {"name": base})["id"]
    longer = api.call("queues.create", {"name": f"{base}-2"})["id"]
    found = api.call("queues.get_all", {"name": f"^{base}$"})["queues"]
    assert [q["id"] for q in found] == [exact]
    found = api.call("queues.get_all", {"name": f"^{base}"})["queues"]
    assert [q["id"] for q in found] == [exact, longer]
    assert api.call("queues.get_all", {"name": f"^{base}-3$"})["queues"] == []


def test_get_all_exact_default_finds_the_one_default_queue(api: Session) -> None:
    found = api.call("queues.get_all", {"name": "^default$"})["queues"]
    assert len(found) == 1
    assert found[0]["name"] == "default"
    assert found[0]["id"] == api.call("queues.get_default")["id"]


def test_get_all_malformed_regex_is_a_clear_error(api: Session) -> None:
    err = _error(api, "queues.get_all", {"name": "(unclosed"})
    assert (err.code, err.subcode) == (400, 21)


def test_get_all_by_id_list_and_single_id(api: Session) -> None:
    first, second, third = _queue(api), _queue(api), _queue(api)
    found = api.call("queues.get_all", {"id": [third, first]})["queues"]
    assert sorted(q["id"] for q in found) == sorted([first, third])
    assert second not in {q["id"] for q in found}
    assert [q["id"] for q in api.call("queues.get_all", {"id": second})["queues"]] == [second]
    assert api.call("queues.get_all", {"id": ["f" * 32]})["queues"] == []


def test_get_all_filters_by_tags(api: Session) -> None:
    red, blue = _unique("red"), _unique("blue")
    only_red = _queue(api, tags=[red])
    both = _queue(api, tags=[red, blue])
    only_blue = _queue(api, tags=[blue], system_tags=[red])
    ours = [only_red, both, only_blue]

    def ids(**query: Any) -> list[str]:
        found = api.call("queues.get_all", {"id": ours, **query})["queues"]
        return [q["id"] for q in found]

    assert ids(tags=[red]) == [only_red, both]
    assert ids(tags=[blue]) == [both, only_blue]
    assert ids(tags=[red, blue]) == ours
    assert ids(tags=["__$all", red, blue]) == [both]
    assert ids(tags=[f"-{red}"]) == [only_blue]
    assert ids(tags=[blue, f"-{red}"]) == [only_blue]
    assert ids(system_tags=[red]) == [only_blue]
    assert api.call("queues.get_all", {"tags": [_unique("none")]})["queues"] == []


def test_get_all_only_fields_projects_each_queue(api: Session) -> None:
    name = _unique("proj")
    queue_id = api.call("queues.create", {"name": name, "tags": ["x"]})["id"]
    found = api.call("queues.get_all", {"id": [queue_id], "only_fields": ["name", "tags"]})
    assert found["queues"] == [{"id": queue_id, "name": name, "tags": ["x"]}]
    found = api.call("queues.get_all", {"id": [queue_id], "only_fields": ["id"]})
    assert found["queues"] == [{"id": queue_id}]


def test_get_all_includes_entries(api: Session) -> None:
    queue_id = _queue(api)
    task_id = _queued_task(api, queue_id)
    [queue] = api.call("queues.get_all", {"id": [queue_id]})["queues"]
    assert [e["task"] for e in queue["entries"]] == [task_id]


def test_get_by_id_lists_entries_in_enqueue_order(api: Session) -> None:
    queue_id = _queue(api)
    task_ids = [_queued_task(api, queue_id, f"order-{n}") for n in range(4)]
    entries = api.call("queues.get_by_id", {"queue": queue_id})["queue"]["entries"]
    assert [e["task"] for e in entries] == task_ids
    assert all(e["added"] for e in entries)
    assert [e["added"] for e in entries] == sorted(e["added"] for e in entries)


def test_get_by_id_unknown_queue(api: Session) -> None:
    err = _error(api, "queues.get_by_id", {"queue": "0" * 32})
    assert (err.code, err.subcode) == (400, 701)
    err = _error(api, "queues.get_by_id", {})
    assert (err.code, err.subcode) == (400, 11)


def test_get_default_is_the_queue_named_default_with_its_system_tag(api: Session) -> None:
    data = api.call("queues.get_default")
    assert data["name"] == "default"
    assert len(data["id"]) == 32
    queue = api.call("queues.get_by_id", {"queue": data["id"]})["queue"]
    assert queue["name"] == "default"
    assert queue["system_tags"] == ["default"]
    assert api.call("queues.get_default") == data


def test_enqueue_without_a_queue_goes_to_the_default_queue(api: Session) -> None:
    task_id = _task(api)
    api.call("tasks.enqueue", {"task": task_id})
    default_id = api.call("queues.get_default")["id"]
    assert task_id in _entry_tasks(api, default_id)
    api.call("tasks.dequeue", {"task": task_id})
    assert task_id not in _entry_tasks(api, default_id)


# --- update / delete --------------------------------------------------------------------------


def test_update_name_and_tags(api: Session) -> None:
    old, new = _unique("old"), _unique("new")
    queue_id = api.call("queues.create", {"name": old, "tags": ["a"]})["id"]
    data = api.call("queues.update", {"queue": queue_id, "name": new, "tags": ["b", "c"]})
    assert data["updated"] == 1
    assert data["fields"] == {"name": new, "tags": ["b", "c"]}
    queue = api.call("queues.get_by_id", {"queue": queue_id})["queue"]
    assert (queue["name"], queue["tags"]) == (new, ["b", "c"])
    assert queue["last_update"] >= queue["created"]
    assert [q["id"] for q in api.call("queues.get_all", {"name": f"^{new}$"})["queues"]] == [
        queue_id]
    assert api.call("queues.get_all", {"name": f"^{old}$"})["queues"] == []
    # the old name is free again
    again = api.call("queues.create", {"name": old})["id"]
    assert again != queue_id


def test_update_tags_only_keeps_the_name(api: Session) -> None:
    name = _unique("keep")
    queue_id = api.call("queues.create", {"name": name})["id"]
    api.call("queues.update", {"queue": queue_id, "tags": ["z"]})
    queue = api.call("queues.get_by_id", {"queue": queue_id})["queue"]
    assert (queue["name"], queue["tags"]) == (name, ["z"])


def test_update_to_a_taken_name_is_refused(api: Session) -> None:
    taken = _unique("taken")
    api.call("queues.create", {"name": taken})
    mine = _unique("mine")
    queue_id = api.call("queues.create", {"name": mine})["id"]
    err = _error(api, "queues.update", {"queue": queue_id, "name": taken})
    assert (err.code, err.subcode) == (400, 801)
    assert api.call("queues.get_by_id", {"queue": queue_id})["queue"]["name"] == mine
    # renaming to its own name is not a conflict
    assert api.call("queues.update", {"queue": queue_id, "name": mine})["updated"] == 1


def test_update_unknown_queue(api: Session) -> None:
    err = _error(api, "queues.update", {"queue": "0" * 32, "name": _unique("x")})
    assert (err.code, err.subcode) == (400, 701)


def test_delete_an_empty_queue(api: Session) -> None:
    name = _unique("gone")
    queue_id = api.call("queues.create", {"name": name})["id"]
    assert api.call("queues.delete", {"queue": queue_id}) == {"deleted": 1}
    err = _error(api, "queues.get_by_id", {"queue": queue_id})
    assert (err.code, err.subcode) == (400, 701)
    assert api.call("queues.get_all", {"name": f"^{name}$"})["queues"] == []
    err = _error(api, "queues.delete", {"queue": queue_id})
    assert (err.code, err.subcode) == (400, 701)


def test_delete_a_non_empty_queue_needs_force(api: Session) -> None:
    queue_id = _queue(api)
    task_ids = [_queued_task(api, queue_id) for _ in range(2)]
    err = _error(api, "queues.delete", {"queue": queue_id})
    assert (err.code, err.subcode) == (400, 702)
    assert _entry_tasks(api, queue_id) == task_ids
    assert [_status(api, t) for t in task_ids] == ["queued", "queued"]


def test_delete_with_force_returns_queued_tasks_to_created(api: Session) -> None:
    queue_id = _queue(api)
    task_ids = [_queued_task(api, queue_id) for _ in range(2)]
    assert api.call("queues.delete", {"queue": queue_id, "force": True}) == {"deleted": 1}
    assert [_status(api, t) for t in task_ids] == ["created", "created"]
    err = _error(api, "queues.get_by_id", {"queue": queue_id})
    assert err.subcode == 701
    # back in `created`, a task can be enqueued again and is handed out from its new queue
    other = _queue(api)
    api.call("tasks.enqueue", {"task": task_ids[0], "queue": other})
    assert _drain(api, {"queue": other}) == [task_ids[0]]


# --- entries: add, remove, move ---------------------------------------------------------------


def test_add_task_and_remove_task(api: Session) -> None:
    home, extra = _queue(api, "home"), _queue(api, "extra")
    task_id = _queued_task(api, home)
    assert api.call("queues.add_task", {"queue": extra, "task": task_id})["added"] == 1
    assert _entry_tasks(api, extra) == [task_id]
    # adding it again does not make a second entry
    api.call("queues.add_task", {"queue": extra, "task": task_id})
    assert _entry_tasks(api, extra) == [task_id]
    assert api.call("queues.remove_task", {"queue": extra, "task": task_id}) == {"removed": 1}
    assert _entry_tasks(api, extra) == []
    assert _entry_tasks(api, home) == [task_id]  # only that queue's entry went
    assert api.call("queues.remove_task", {"queue": extra, "task": task_id}) == {"removed": 0}


def test_add_task_appends_at_the_back(api: Session) -> None:
    queue_id, other = _queue(api), _queue(api)
    first = _queued_task(api, queue_id)
    later = _queued_task(api, other)
    api.call("queues.add_task", {"queue": queue_id, "task": later})
    assert _entry_tasks(api, queue_id) == [first, later]
    assert _drain(api, {"queue": queue_id}) == [first, later]


def test_add_task_checks_queue_and_task(api: Session) -> None:
    queue_id = _queue(api)
    err = _error(api, "queues.add_task", {"queue": queue_id, "task": "0" * 32})
    assert (err.code, err.subcode) == (400, 101)
    err = _error(api, "queues.add_task", {"queue": "0" * 32, "task": _task(api)})
    assert (err.code, err.subcode) == (400, 701)
    err = _error(api, "queues.remove_task", {"queue": "0" * 32, "task": _task(api)})
    assert (err.code, err.subcode) == (400, 701)
    assert _entry_tasks(api, queue_id) == []


def test_move_task_to_front_and_back(api: Session) -> None:
    queue_id = _queue(api)
    a, b, c, d = (_queued_task(api, queue_id, n) for n in "abcd")
    assert api.call("queues.move_task_to_front", {"queue": queue_id, "task": c}) == {
        "position": 0}
    assert _entry_tasks(api, queue_id) == [c, a, b, d]
    assert api.call("queues.move_task_to_back", {"queue": queue_id, "task": a}) == {
        "position": 3}
    assert _entry_tasks(api, queue_id) == [c, b, d, a]
    api.call("queues.move_task_to_front", {"queue": queue_id, "task": d})
    api.call("queues.move_task_to_front", {"queue": queue_id, "task": a})
    assert _entry_tasks(api, queue_id) == [a, d, c, b]
    api.call("queues.move_task_to_back", {"queue": queue_id, "task": d})
    assert _entry_tasks(api, queue_id) == [a, c, b, d]
    # moving the front one to the front (and the back one to the back) changes nothing
    assert api.call("queues.move_task_to_front", {"queue": queue_id, "task": a}) == {
        "position": 0}
    assert api.call("queues.move_task_to_back", {"queue": queue_id, "task": d}) == {
        "position": 3}
    new = _queued_task(api, queue_id, "e")
    assert _entry_tasks(api, queue_id) == [a, c, b, d, new]
    assert _drain(api, {"queue": queue_id}) == [a, c, b, d, new]


def test_move_in_a_one_entry_queue_then_enqueue_more(api: Session) -> None:
    queue_id = _queue(api)
    only = _queued_task(api, queue_id)
    assert api.call("queues.move_task_to_front", {"queue": queue_id, "task": only}) == {
        "position": 0}
    second = _queued_task(api, queue_id)
    third = _task(api)
    api.call("tasks.enqueue", {"task": third, "queue": queue_id})
    api.call("queues.move_task_to_front", {"queue": queue_id, "task": third})
    assert _drain(api, {"queue": queue_id}) == [third, only, second]


def test_move_a_task_that_is_not_in_the_queue(api: Session) -> None:
    queue_id, other = _queue(api), _queue(api)
    elsewhere = _queued_task(api, other)
    for action in ("queues.move_task_to_front", "queues.move_task_to_back"):
        err = _error(api, action, {"queue": queue_id, "task": elsewhere})
        assert (err.code, err.subcode) == (400, 703)
    assert _entry_tasks(api, queue_id) == []
    assert _entry_tasks(api, other) == [elsewhere]
    err = _error(api, "queues.move_task_to_front", {"queue": "0" * 32, "task": elsewhere})
    assert (err.code, err.subcode) == (400, 701)


# --- get_next_task ----------------------------------------------------------------------------


def test_get_next_task_is_fifo_and_empty_is_empty_data(api: Session) -> None:
    queue_id = _queue(api)
    task_ids = [_queued_task(api, queue_id, f"fifo-{n}") for n in range(3)]
    first = api.call("queues.get_next_task", {"queue": queue_id})
    assert first["entry"]["task"] == task_ids[0]
    assert first["entry"]["added"]
    assert "task_info" not in first
    assert _entry_tasks(api, queue_id) == task_ids[1:]
    assert _drain(api, {"queue": queue_id}) == task_ids[1:]
    assert api.call("queues.get_next_task", {"queue": queue_id}) == {}
    assert _entry_tasks(api, queue_id) == []
    # handing out does not change the status: the agent reports `started` itself
    assert [_status(api, t) for t in task_ids] == ["queued"] * 3


def test_get_next_task_with_task_info(api: Session) -> None:
    queue_id = _queue(api)
    task_id = _queued_task(api, queue_id)
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    data = api.call("queues.get_next_task", {"queue": queue_id, "get_task_info": True})
    assert data["entry"]["task"] == task_id
    assert data["task_info"] == {"user": task["user"], "company": task["company"]}
    assert task["user"] and task["company"]


def test_get_next_task_skips_entries_of_tasks_no_longer_queued(api: Session) -> None:
    queue_id = _queue(api)
    created = _task(api, "created")
    running = _task(api, "running")
    api.call("tasks.started", {"task": running})
    api.call("queues.add_task", {"queue": queue_id, "task": created})
    api.call("queues.add_task", {"queue": queue_id, "task": running})
    queued = _queued_task(api, queue_id, "queued")
    assert _entry_tasks(api, queue_id) == [created, running, queued]
    data = api.call("queues.get_next_task", {"queue": queue_id})
    assert data["entry"]["task"] == queued
    assert _entry_tasks(api, queue_id) == []  # the stale entries are dropped on the way
    assert api.call("queues.get_next_task", {"queue": queue_id}) == {}
    assert _status(api, created) == "created"
    assert _status(api, running) == "in_progress"


def test_enqueue_over_a_stale_entry_hands_the_task_out_once(api: Session) -> None:
    queue_id = _queue(api)
    first = _queued_task(api, queue_id, "first")
    task_id = _task(api, "stale")
    api.call("queues.add_task", {"queue": queue_id, "task": task_id})  # still `created`
    last = _queued_task(api, queue_id, "last")
    api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
    # one entry, at the back where the enqueue put it
    assert _entry_tasks(api, queue_id) == [first, last, task_id]
    assert _drain(api, {"queue": queue_id}) == [first, last, task_id]


def test_a_dequeued_task_is_not_handed_out(api: Session) -> None:
    queue_id = _queue(api)
    first, second = _queued_task(api, queue_id), _queued_task(api, queue_id)
    api.call("tasks.dequeue", {"task": first})
    assert _entry_tasks(api, queue_id) == [second]
    assert _drain(api, {"queue": queue_id}) == [second]


def test_get_next_task_takes_from_queues_in_priority_order(api: Session) -> None:
    high, low = _queue(api, "high"), _queue(api, "low")
    low_1 = _queued_task(api, low)
    high_1 = _queued_task(api, high)
    low_2 = _queued_task(api, low)
    high_2 = _queued_task(api, high)
    body = {"queues": [high, low]}
    taken = []
    for _ in range(4):
        data = api.call("queues.get_next_task", body)
        taken.append((data["entry"]["task"], data["queue"]))
    assert taken == [(high_1, high), (high_2, high), (low_1, low), (low_2, low)]
    assert api.call("queues.get_next_task", body) == {}


def test_get_next_task_unknown_queue(api: Session) -> None:
    err = _error(api, "queues.get_next_task", {"queue": "0" * 32})
    assert (err.code, err.subcode) == (400, 701)
    known = _queue(api)
    task_id = _queued_task(api, known)
    err = _error(api, "queues.get_next_task", {"queues": [known, "0" * 32]})
    assert (err.code, err.subcode) == (400, 701)
    assert _entry_tasks(api, known) == [task_id]  # nothing was taken by the refused call
    started = time.monotonic()
    err = _error(api, "queues.get_next_task", {"queue": "0" * 32, "wait_sec": 5})
    assert err.subcode == 701
    assert time.monotonic() - started < 2.0
    err = _error(api, "queues.get_next_task", {})
    assert (err.code, err.subcode) == (400, 11)


def test_wait_sec_returns_a_task_enqueued_while_waiting(server: ServerProcess,
                                                        api: Session) -> None:
    queue_id = _queue(api)
    task_id = _task(api)
    received: dict[str, Any] = {}
    with Session(server.url, "k", "s") as waiter_api:
        waiter_api.login()

        def wait() -> None:
            started = time.monotonic()
            received["data"] = waiter_api.call(
                "queues.get_next_task",
                {"queue": queue_id, "wait_sec": 10, "get_task_info": True})
            received["waited"] = time.monotonic() - started

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        assert "data" not in received  # still parked in the server
        api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
        waiter.join(12)
    assert not waiter.is_alive()
    assert received["data"]["entry"]["task"] == task_id
    assert received["data"]["task_info"]["user"]
    assert 0.25 < received["waited"] < 2.0
    assert _entry_tasks(api, queue_id) == []


def test_wait_sec_on_several_queues_wakes_for_any_of_them(server: ServerProcess,
                                                          api: Session) -> None:
    first, second = _queue(api), _queue(api)
    task_id = _task(api)
    received: dict[str, Any] = {}
    with Session(server.url, "k", "s") as waiter_api:
        waiter_api.login()

        def wait() -> None:
            received["data"] = waiter_api.call(
                "queues.get_next_task", {"queues": [first, second], "wait_sec": 10})
            received["at"] = time.monotonic()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        sent = time.monotonic()
        api.call("tasks.enqueue", {"task": task_id, "queue": second})
        waiter.join(12)
    assert received["data"]["entry"]["task"] == task_id
    assert received["data"]["queue"] == second
    assert received["at"] - sent < 0.9  # woken, not found by the once-a-second re-check


def test_two_waiters_and_two_tasks_each_get_one(server: ServerProcess, api: Session) -> None:
    queue_id = _queue(api)
    task_ids = [_task(api) for _ in range(2)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    sessions = [Session(server.url, "k", "s") for _ in range(2)]
    for session in sessions:
        session.login()

    def wait(session: Session) -> None:
        data = session.call("queues.get_next_task", {"queue": queue_id, "wait_sec": 10})
        with lock:
            results.append({**data, "at": time.monotonic()})

    waiters = [threading.Thread(target=wait, args=(s,)) for s in sessions]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)
    sent = time.monotonic()
    for task_id in task_ids:
        api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
    for waiter in waiters:
        waiter.join(12)
    for session in sessions:
        session.close()
    assert sorted(r["entry"]["task"] for r in results) == sorted(task_ids)
    assert max(r["at"] for r in results) - sent < 0.9


def test_wait_sec_gives_up_with_empty_data(api: Session) -> None:
    queue_id = _queue(api)
    started = time.monotonic()
    assert api.call("queues.get_next_task", {"queue": queue_id, "wait_sec": 1}) == {}
    assert 0.9 < time.monotonic() - started < 2.5


def test_without_wait_sec_an_empty_queue_answers_at_once(api: Session) -> None:
    queue_id = _queue(api)
    started = time.monotonic()
    assert api.call("queues.get_next_task", {"queue": queue_id}) == {}
    assert time.monotonic() - started < 0.5
