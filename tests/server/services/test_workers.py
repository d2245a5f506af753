"""workers.*: register, report, list, unregister, and runtime properties that expire."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _queue(api: Session) -> tuple[str, str]:
    name = _unique("wq")
    return api.call("queues.create", {"name": name})["id"], name


def _workers(api: Session, pattern: str, **query: Any) -> dict[str, dict[str, Any]]:
    found = api.call("workers.get_all", {"worker_pattern": pattern, **query})["workers"]
    return {w["id"]: w for w in found}


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


def _stats(cpu: float, free: int) -> dict[str, Any]:
    return {"cpu_usage": [cpu, cpu / 2], "memory_used": 1024, "memory_free": free,
            "gpu_usage": [10.0]}


def test_register_with_queue_names_and_ids(api: Session) -> None:
    by_name_id, by_name = _queue(api)
    by_id, by_id_name = _queue(api)
    queued = []
    for _ in range(2):
        name = _unique("t")
        task_id = api.call("tasks.create", {"name": name})["id"]
        api.call("tasks.enqueue", {"task": task_id, "queue": by_name_id})
        queued.append({"id": task_id, "name": name})
    worker = _unique("agent:gpu0")
    registered = api.call("workers.register", {"worker": worker, "queues": [by_name, by_id]})
    assert registered == {"timeout": 60}  # the server's default --worker-timeout
    [entry] = _workers(api, f"^{worker}$").values()
    assert entry["id"] == worker
    assert entry["queues"] == [
        {"id": by_name_id, "name": by_name, "num_tasks": 2, "next_task": queued[0]},
        {"id": by_id, "name": by_id_name, "num_tasks": 0, "next_task": None},
    ]  # ClearML's QueueEntry
    assert entry["task"] is None
    assert entry["register_time"]
    assert entry["user"]["id"] and entry["company"]["id"]


def test_register_again_replaces_queues(api: Session) -> None:
    first, _ = _queue(api)
    second, second_name = _queue(api)
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker, "queues": [first]})
    api.call("workers.register", {"worker": worker, "queues": [second_name]})
    workers = _workers(api, f"^{worker}$")
    assert list(workers) == [worker]
    assert [q["id"] for q in workers[worker]["queues"]] == [second]


def test_register_needs_a_worker_id(api: Session) -> None:
    err = _error(api, "workers.register", {"queues": []})
    assert (err.code, err.subcode) == (400, 11)


def test_num_tasks_follows_the_queue(api: Session) -> None:
    queue_id, _ = _queue(api)
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker, "queues": [queue_id]})
    task_id = api.call("tasks.create", {"name": _unique("t")})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
    assert _workers(api, f"^{worker}$")[worker]["queues"][0]["num_tasks"] == 1
    api.call("queues.get_next_task", {"queue": queue_id})
    assert _workers(api, f"^{worker}$")[worker]["queues"][0]["num_tasks"] == 0


def test_status_report_keeps_the_latest_sample_and_shows_the_task(api: Session) -> None:
    queue_id, _ = _queue(api)
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker, "queues": [queue_id]})
    task_name = _unique("running")
    task_id = api.call("tasks.create", {"name": task_name})["id"]
    api.call("tasks.started", {"task": task_id})
    first = _stats(50.0, 2048)
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time() * 1000),
                                       "machine_stats": first, "task": task_id})
    second = {"cpu_usage": [5.0], "memory_free": 4096}
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time() * 1000),
                                       "machine_stats": second, "task": task_id,
                                       "queue": queue_id})
    entry = _workers(api, f"^{worker}$")[worker]
    assert entry["machine_stats"] == second  # the latest sample, not a merge with the first
    # ClearML's CurrentTaskEntry and QueueEntry objects (clearml's Worker model reads them)
    assert set(entry["task"]) == {"id", "name", "running_time", "last_iteration"}
    assert entry["task"]["id"] == task_id
    assert entry["task"]["name"] == task_name
    assert entry["task"]["last_iteration"] == 0
    assert 0 <= entry["task"]["running_time"] < 600_000  # milliseconds since it started
    assert entry["queue"]["id"] == queue_id and entry["queue"]["name"]
    assert entry["project"] is None  # the task has none
    assert entry["last_report_time"]
    assert entry["queues"][0]["id"] == queue_id  # a report without `queues` keeps them
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["last_worker"] == worker
    assert task["last_worker_report"]


def test_status_report_without_a_task_clears_it(api: Session) -> None:
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker})
    task_id = api.call("tasks.create", {"name": _unique("t")})["id"]
    api.call("workers.status_report", {"worker": worker, "machine_stats": {}, "task": task_id})
    assert _workers(api, f"^{worker}$")[worker]["task"]["id"] == task_id
    api.call("workers.status_report", {"worker": worker, "machine_stats": _stats(1.0, 1)})
    entry = _workers(api, f"^{worker}$")[worker]
    assert entry["task"] is None
    assert entry["machine_stats"] == _stats(1.0, 1)


def test_status_report_with_queues_and_tags_updates_them(api: Session) -> None:
    first, _ = _queue(api)
    second, second_name = _queue(api)
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker, "queues": [first], "tags": ["a"]})
    api.call("workers.status_report", {"worker": worker, "machine_stats": {},
                                       "queues": [second_name], "tags": ["b"]})
    entry = _workers(api, f"^{worker}$")[worker]
    assert [q["id"] for q in entry["queues"]] == [second]
    assert entry["tags"] == ["b"]


def test_status_report_from_an_unregistered_worker_registers_it(api: Session) -> None:
    worker = _unique("late")
    api.call("workers.status_report", {"worker": worker, "machine_stats": _stats(3.0, 7)})
    entry = _workers(api, f"^{worker}$")[worker]
    assert entry["machine_stats"] == _stats(3.0, 7)
    assert entry["queues"] == []


def test_status_report_about_an_unknown_task_is_accepted(api: Session) -> None:
    worker = _unique("agent")
    api.call("workers.status_report", {"worker": worker, "machine_stats": {},
                                       "task": "0" * 32})
    assert _workers(api, f"^{worker}$")[worker]["task"] == {
        "id": "0" * 32, "name": None, "running_time": None, "last_iteration": None}


def test_unregister_removes_the_worker(api: Session) -> None:
    prefix = _unique("unreg")
    staying, leaving = f"{prefix}-staying", f"{prefix}-leaving"
    for worker in (staying, leaving):
        api.call("workers.register", {"worker": worker})
    assert sorted(_workers(api, f"^{prefix}")) == sorted([staying, leaving])
    assert api.call("workers.unregister", {"worker": leaving}) == {}
    assert list(_workers(api, f"^{prefix}")) == [staying]
    all_ids = {w["id"] for w in api.call("workers.get_all")["workers"]}
    assert staying in all_ids
    assert leaving not in all_ids


def test_worker_pattern_is_a_regex(api: Session) -> None:
    prefix = _unique("pat")
    names = [f"{prefix}:gpu0", f"{prefix}:gpu1", f"{prefix}:cpu"]
    for worker in names:
        api.call("workers.register", {"worker": worker})
    assert sorted(_workers(api, f"^{prefix}:gpu")) == names[:2]
    assert list(_workers(api, f"{prefix}:cpu$")) == [names[2]]
    assert _workers(api, f"^{prefix}:tpu") == {}
    err = _error(api, "workers.get_all", {"worker_pattern": "(unclosed"})
    assert (err.code, err.subcode) == (400, 21)


def test_last_seen_and_timeout(api: Session) -> None:
    prefix = _unique("seen")
    quiet, short, fresh = f"{prefix}-quiet", f"{prefix}-short", f"{prefix}-fresh"
    api.call("workers.register", {"worker": quiet})
    api.call("workers.register", {"worker": short, "timeout": 1})
    assert sorted(_workers(api, f"^{prefix}")) == sorted([quiet, short])
    time.sleep(1.2)
    api.call("workers.register", {"worker": fresh})
    # `short` timed out; `quiet` is still registered but was not seen within the last second
    assert sorted(_workers(api, f"^{prefix}")) == sorted([quiet, fresh])
    assert list(_workers(api, f"^{prefix}", last_seen=1)) == [fresh]
    assert sorted(_workers(api, f"^{prefix}", last_seen=60)) == sorted([quiet, fresh])
    # a report makes the quiet one seen again
    api.call("workers.status_report", {"worker": quiet, "machine_stats": {}})
    assert sorted(_workers(api, f"^{prefix}", last_seen=1)) == sorted([quiet, fresh])


def test_runtime_properties_set_get_overwrite_and_expire(api: Session) -> None:
    worker = _unique("rt")
    api.call("workers.register", {"worker": worker})
    added = api.call("workers.set_runtime_properties", {
        "worker": worker,
        "runtime_properties": [{"key": "force", "value": "1"},
                               {"key": "brief", "value": "soon gone", "expiry": 1}],
    })
    assert added == {"added": ["force", "brief"], "removed": [], "errors": []}
    props = api.call("workers.get_runtime_properties", {"worker": worker})["runtime_properties"]
    assert [(p["key"], p["value"]) for p in props] == [("brief", "soon gone"), ("force", "1")]
    assert props[0]["expiry"] in (0, 1)
    assert props[1]["expiry"] is None
    api.call("workers.set_runtime_properties", {
        "worker": worker, "runtime_properties": [{"key": "force", "value": "2"}]})
    time.sleep(1.2)
    props = api.call("workers.get_runtime_properties", {"worker": worker})["runtime_properties"]
    assert [(p["key"], p["value"]) for p in props] == [("force", "2")]


def test_runtime_properties_of_an_unknown_worker_is_an_empty_list(api: Session) -> None:
    data = api.call("workers.get_runtime_properties", {"worker": _unique("nobody")})
    assert data == {"runtime_properties": []}


def test_runtime_properties_belong_to_one_worker(api: Session) -> None:
    one, two = _unique("one"), _unique("two")
    api.call("workers.set_runtime_properties", {
        "worker": one, "runtime_properties": [{"key": "k", "value": "v1"}]})
    api.call("workers.set_runtime_properties", {
        "worker": two, "runtime_properties": [{"key": "k", "value": "v2"}]})
    for worker, value in ((one, "v1"), (two, "v2")):
        props = api.call("workers.get_runtime_properties", {"worker": worker})
        assert [(p["key"], p["value"]) for p in props["runtime_properties"]] == [("k", value)]


def test_set_runtime_properties_reports_bad_items(api: Session) -> None:
    worker = _unique("rt")
    data = api.call("workers.set_runtime_properties", {
        "worker": worker, "runtime_properties": [{"value": "no key"}, {"key": "ok", "value": 3}]})
    assert data["added"] == ["ok"]
    assert len(data["errors"]) == 1
    assert "key" in data["errors"][0]["error"]
    props = api.call("workers.get_runtime_properties", {"worker": worker})["runtime_properties"]
    assert [(p["key"], p["value"]) for p in props] == [("ok", "3")]
    err = _error(api, "workers.set_runtime_properties", {"worker": worker})
    assert (err.code, err.subcode) == (400, 11)


def test_runtime_property_with_expiry_0_is_deleted_and_bad_expiry_is_reported(
        api: Session) -> None:
    worker = _unique("expiry0")
    api.call("workers.set_runtime_properties", {
        "worker": worker, "runtime_properties": [{"key": "force", "value": "on"},
                                                 {"key": "keep", "value": "x"}]})
    data = api.call("workers.set_runtime_properties", {
        "worker": worker, "runtime_properties": [{"key": "force", "value": "", "expiry": 0},
                                                 {"key": "keep", "value": "y", "expiry": -5}]})
    assert data["removed"] == ["force"] and data["added"] == []
    assert "expiry" in data["errors"][0]["error"]
    props = api.call("workers.get_runtime_properties", {"worker": worker})["runtime_properties"]
    assert [(p["key"], p["value"]) for p in props] == [("keep", "x")]


def test_a_busy_worker_answers_clearmls_objects(api: Session) -> None:
    """clearml's Worker model (the SDK's APIClient, the autoscaler, HPO's resource report)
    parses `queue` as a QueueEntry, `queues` as a list of them and `task` as a
    CurrentTaskEntry; a bare id there crashed it."""
    queue_id, queue_name = _queue(api)
    project_name = _unique("wp")
    project_id = api.call("projects.create", {"name": project_name})["id"]
    task_name = _unique("busy")
    task_id = api.call("tasks.create", {"name": task_name, "project": project_id})["id"]
    api.call("tasks.started", {"task": task_id})
    waiting_name = _unique("next")
    waiting = api.call("tasks.create", {"name": waiting_name})["id"]
    api.call("tasks.enqueue", {"task": waiting, "queue": queue_id})
    worker = _unique("agent")
    api.call("workers.register", {"worker": worker, "queues": [queue_name]})
    api.call("workers.status_report", {"worker": worker, "machine_stats": {}, "task": task_id,
                                       "queue": queue_name})  # a name, as some agents send
    entry = _workers(api, f"^{worker}$")[worker]
    queue_entry = {"id": queue_id, "name": queue_name, "num_tasks": 1,
                   "next_task": {"id": waiting, "name": waiting_name}}
    assert entry["queue"] == queue_entry
    assert entry["queues"] == [queue_entry]
    assert entry["task"]["id"] == task_id and entry["task"]["name"] == task_name
    assert isinstance(entry["task"]["running_time"], int)
    assert entry["project"] == {"id": project_id, "name": project_name}
