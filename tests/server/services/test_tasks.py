"""tasks.*: create and read, filters, edit and clone, queueing, the status machine, stop, delete,
requirements, hyperparameters and configuration, all against a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.support.server_process import ServerProcess

HEX = set("0123456789abcdef")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _project(api: Session) -> str:
    return api.call("projects.create", {"name": _unique("proj")})["id"]


def _task(api: Session, project: str | None = None, name: str = "t", **fields: Any) -> str:
    body: dict[str, Any] = {"name": name, **fields}
    if project is not None:
        body["project"] = project
    return api.call("tasks.create", body)["id"]


def _queue(api: Session) -> str:
    return api.call("queues.create", {"name": _unique("q")})["id"]


def _get(api: Session, task_id: str) -> dict[str, Any]:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


def _status(api: Session, task_id: str) -> str:
    return _get(api, task_id)["status"]


def _entries(api: Session, queue_id: str) -> list[str]:
    queue = api.call("queues.get_by_id", {"queue": queue_id})["queue"]
    return [e["task"] for e in queue["entries"]]


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


def _names(api: Session, project: str, **body: Any) -> list[str]:
    tasks = api.call("tasks.get_all", {"project": [project], **body})["tasks"]
    return [t["name"] for t in tasks]


def _log_count(api: Session, task_id: str) -> int:
    return api.call("events.get_task_log", {"task": task_id})["total"]


@pytest.fixture
def project(api: Session) -> str:
    return _project(api)


@pytest.fixture
def worker_api(server: ServerProcess) -> Iterator[Session]:
    """A session that sends X-ClearML-Worker, as an agent does."""
    with Session(server.url, "k", "s", worker=_unique("worker")) as session:
        yield session


# --- create / get_by_id ----------------------------------------------------------------------


def test_create_starts_with_clearml_defaults(api: Session, project: str) -> None:
    task_id = _task(api, project, name="fresh")
    assert len(task_id) == 32 and set(task_id) <= HEX
    task = _get(api, task_id)
    assert task["id"] == task_id
    assert task["name"] == "fresh"
    assert task["project"] == project
    assert task["status"] == "created"
    assert task["execution"] == {"artifacts": []}  # ClearML answers a list, even empty
    assert task["script"] == {}
    assert task["hyperparams"] == {}
    assert task["configuration"] == {}
    assert task["container"] == {}
    assert task["runtime"] == {}
    assert task["tags"] == [] and task["system_tags"] == []
    assert task["type"] == "training"
    assert task["parent"] is None
    assert task["started"] is None and task["completed"] is None
    assert task["status_message"] == "" and task["status_reason"] == ""
    assert task["created"].startswith("20") and task["created"] == task["last_update"]
    assert task["user"] and task["company"]


def test_create_stores_client_fields_but_not_server_fields(api: Session, project: str) -> None:
    task_id = _task(
        api, project, name="full", type="testing", comment="a comment", tags=["a", "b"],
        system_tags=["x"], script={"repository": "https://g/r.git", "entry_point": "train.py"},
        hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}},
        container={"image": "python:3.12"}, status="completed", id="f" * 32,
        created="1999-01-01T00:00:00+00:00", started="1999-01-01T00:00:00+00:00",
    )
    assert task_id != "f" * 32
    task = _get(api, task_id)
    assert task["type"] == "testing"
    assert task["comment"] == "a comment"
    assert task["tags"] == ["a", "b"] and task["system_tags"] == ["x"]
    assert task["script"] == {"repository": "https://g/r.git", "entry_point": "train.py"}
    assert task["hyperparams"]["Args"]["lr"]["value"] == "0.1"
    assert task["container"] == {"image": "python:3.12"}
    assert task["status"] == "created"
    assert task["created"] != "1999-01-01T00:00:00+00:00"
    assert task["started"] is None
    with pytest.raises(ApiError) as err:
        _get(api, "f" * 32)
    assert err.value.subcode == 101


def test_create_without_project_is_allowed(api: Session) -> None:
    task = _get(api, _task(api, name=_unique("loose")))
    assert task["project"] is None


def test_create_in_unknown_project_is_refused_and_stores_nothing(api: Session) -> None:
    name = _unique("orphan")
    err = _error(api, "tasks.create", {"name": name, "project": "0" * 32})
    assert (err.code, err.subcode) == (400, 401)
    assert api.call("tasks.get_all", {"name": f"^{name}$"})["tasks"] == []


def test_create_requires_a_name(api: Session) -> None:
    err = _error(api, "tasks.create", {"project": None})
    assert (err.code, err.subcode) == (400, 11)
    assert "name" in err.msg


def test_get_by_id_of_unknown_task(api: Session) -> None:
    err = _error(api, "tasks.get_by_id", {"task": uuid.uuid4().hex})
    assert (err.code, err.subcode) == (400, 101)


# --- get_all ---------------------------------------------------------------------------------


def test_get_all_by_id_list(api: Session, project: str) -> None:
    ids = [_task(api, project, name=f"t{i}") for i in range(3)]
    found = api.call("tasks.get_all", {"id": [ids[0], ids[2]]})["tasks"]
    assert sorted(t["id"] for t in found) == sorted([ids[0], ids[2]])
    one = api.call("tasks.get_all", {"id": ids[1]})["tasks"]
    assert [t["id"] for t in one] == [ids[1]]


def test_get_all_name_is_a_case_insensitive_regex(api: Session, project: str) -> None:
    for name in ("Alpha-one", "alpha-two", "beta-alpha", "gamma"):
        _task(api, project, name=name)
    assert sorted(_names(api, project, name="^ALPHA")) == ["Alpha-one", "alpha-two"]
    assert sorted(_names(api, project, name="alpha")) == ["Alpha-one", "alpha-two", "beta-alpha"]
    assert _names(api, project, name="^gam+a$") == ["gamma"]
    assert _names(api, project, name="^delta") == []


def test_get_all_malformed_name_regex(api: Session) -> None:
    err = _error(api, "tasks.get_all", {"name": "[unclosed"})
    assert (err.code, err.subcode) == (400, 21)


def test_get_all_by_status(api: Session, project: str) -> None:
    _task(api, project, name="c")
    running = _task(api, project, name="r")
    api.call("tasks.started", {"task": running})
    done = _task(api, project, name="d")
    api.call("tasks.started", {"task": done})
    api.call("tasks.completed", {"task": done})
    assert _names(api, project, status=["in_progress"]) == ["r"]
    assert sorted(_names(api, project, status=["created", "completed"])) == ["c", "d"]
    assert _names(api, project, status="completed") == ["d"]
    assert _names(api, project, status=["failed"]) == []


def test_get_all_by_project(api: Session) -> None:
    first, second, third = _project(api), _project(api), _project(api)
    _task(api, first, name="in-first")
    _task(api, second, name="in-second")
    _task(api, third, name="in-third")
    found = api.call("tasks.get_all", {"project": [first, second]})["tasks"]
    assert sorted(t["name"] for t in found) == ["in-first", "in-second"]
    assert {t["project"] for t in found} == {first, second}


def test_get_all_by_tags_any_all_and_excluded(api: Session, project: str) -> None:
    _task(api, project, name="ab", tags=["a", "b"])
    _task(api, project, name="a", tags=["a"])
    _task(api, project, name="b", tags=["b"])
    _task(api, project, name="none")
    _task(api, project, name="prefix", tags=["aa"])
    assert sorted(_names(api, project, tags=["a"])) == ["a", "ab"]
    assert sorted(_names(api, project, tags=["a", "b"])) == ["a", "ab", "b"]
    assert sorted(_names(api, project, tags=["__$all", "a", "b"])) == ["ab"]
    assert sorted(_names(api, project, tags=["-a"])) == ["b", "none", "prefix"]
    assert sorted(_names(api, project, tags=["b", "-a"])) == ["b"]
    assert sorted(_names(api, project, tags=["__$not", "b"])) == ["a", "none", "prefix"]


def test_get_all_by_system_tags_and_hidden(api: Session, project: str) -> None:
    _task(api, project, name="dev", system_tags=["development"])
    _task(api, project, name="plain")
    _task(api, project, name="hidden", system_tags=["hidden"])
    assert _names(api, project, system_tags=["development"]) == ["dev"]
    assert _names(api, project, system_tags=["-development"]) == ["plain"]
    assert sorted(_names(api, project)) == ["dev", "plain"]
    assert sorted(_names(api, project, search_hidden=True)) == ["dev", "hidden", "plain"]


def test_get_all_only_fields_projects_dotted_paths(api: Session, project: str) -> None:
    task_id = _task(api, project, name="proj",
                    script={"repository": "r", "branch": "main", "diff": "big"},
                    container={"image": "img"})
    tasks = api.call("tasks.get_all", {"id": [task_id],
                                       "only_fields": ["name", "script.repository", "status",
                                                       "container.image", "no.such.field"]})
    assert tasks["tasks"] == [{"id": task_id, "name": "proj", "status": "created",
                               "script": {"repository": "r"}, "container": {"image": "img"}}]
    whole = api.call("tasks.get_all", {"id": [task_id]})["tasks"][0]
    assert whole["script"] == {"repository": "r", "branch": "main", "diff": "big"}


def test_get_all_order_by(api: Session, project: str) -> None:
    for name in ("b", "c", "a"):
        _task(api, project, name=name)
        time.sleep(0.003)  # timestamps have millisecond resolution
    assert _names(api, project) == ["a", "c", "b"]  # newest first by default
    assert _names(api, project, order_by=["-created"]) == ["a", "c", "b"]
    assert _names(api, project, order_by=["created"]) == ["b", "c", "a"]
    assert _names(api, project, order_by=["name"]) == ["a", "b", "c"]
    assert _names(api, project, order_by=["-name"]) == ["c", "b", "a"]
    assert _names(api, project, order_by=["no_such_field", "name"]) == ["a", "b", "c"]


def test_get_all_order_by_status_then_name(api: Session, project: str) -> None:
    for name in ("z", "y"):
        _task(api, project, name=name)
    x = _task(api, project, name="x")
    api.call("tasks.started", {"task": x})
    assert _names(api, project, order_by=["status", "name"]) == ["y", "z", "x"]
    assert _names(api, project, order_by=["-status", "-name"]) == ["x", "z", "y"]


def test_get_all_pages(api: Session, project: str) -> None:
    for name in "edcba":
        _task(api, project, name=name)
    pages = [_names(api, project, order_by=["name"], page=page, page_size=2)
             for page in range(4)]
    assert pages == [["a", "b"], ["c", "d"], ["e"], []]
    assert _names(api, project, order_by=["name"], page_size=3) == ["a", "b", "c"]


# --- edit ------------------------------------------------------------------------------------


def test_edit_merges_script_one_level_deep(api: Session, project: str) -> None:
    task_id = _task(api, project, script={"repository": "https://g/r.git", "branch": "main",
                                          "entry_point": "train.py",
                                          "requirements": {"pip": "a==1"}})
    result = api.call("tasks.edit", {"task": task_id, "script": {"version_num": "abc123"}})
    assert result["updated"] == 1
    assert result["fields"] == {"script": {"version_num": "abc123"}}
    assert _get(api, task_id)["script"] == {
        "repository": "https://g/r.git", "branch": "main", "entry_point": "train.py",
        "requirements": {"pip": "a==1"}, "version_num": "abc123"}
    api.call("tasks.edit", {"task": task_id, "script": {"requirements": {"conda": "c"}}})
    script = _get(api, task_id)["script"]
    assert script["requirements"] == {"conda": "c"}  # one level deep only
    assert script["repository"] == "https://g/r.git"


def test_edit_merges_container_and_execution(api: Session, project: str) -> None:
    task_id = _task(api, project, container={"image": "img", "arguments": "--x"},
                    execution={"docker_cmd": "img", "parameters": {"a": 1}})
    api.call("tasks.edit", {"task": task_id, "container": {"setup_shell_script": "echo"},
                            "execution": {"artifacts": []}})
    task = _get(api, task_id)
    assert task["container"] == {"image": "img", "arguments": "--x", "setup_shell_script": "echo"}
    assert task["execution"] == {"docker_cmd": "img", "parameters": {"a": 1}, "artifacts": []}


def test_edit_replaces_hyperparams_configuration_and_runtime_whole(api: Session,
                                                                    project: str) -> None:
    task_id = _task(
        api, project,
        hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "1"}},
                     "General": {"x": {"section": "General", "name": "x", "value": "2"}}},
        configuration={"cfg": {"name": "cfg", "value": "a: 1"}},
        runtime={"progress": 10, "gpu": "0"},
    )
    new_params = {"Args": {"bs": {"section": "Args", "name": "bs", "value": "32"}}}
    api.call("tasks.edit", {"task": task_id, "hyperparams": new_params,
                            "configuration": {"other": {"name": "other", "value": "b"}},
                            "runtime": {"progress": 50}})
    task = _get(api, task_id)
    assert task["hyperparams"] == new_params
    assert task["configuration"] == {"other": {"name": "other", "value": "b"}}
    assert task["runtime"] == {"progress": 50}


def test_edit_plain_fields_and_last_update(api: Session, project: str) -> None:
    task_id = _task(api, project, name="before", tags=["old"])
    before = _get(api, task_id)
    time.sleep(0.003)
    api.call("tasks.edit", {"task": task_id, "name": "after", "comment": "c", "tags": ["new"]})
    after = _get(api, task_id)
    assert (after["name"], after["comment"], after["tags"]) == ("after", "c", ["new"])
    assert after["last_update"] > before["last_update"]
    assert _names(api, project, tags=["new"]) == ["after"]
    assert _names(api, project, name="^before$") == []


def test_edit_can_not_touch_server_fields(api: Session, project: str) -> None:
    task_id = _task(api, project)
    result = api.call("tasks.edit", {"task": task_id, "status": "completed", "id": "0" * 32,
                                     "started": "2000-01-01T00:00:00+00:00", "comment": "ok"})
    assert result["fields"] == {"comment": "ok"}
    task = _get(api, task_id)
    assert task["status"] == "created"
    assert task["id"] == task_id
    assert task["started"] is None
    assert _names(api, project, status=["completed"]) == []


def test_edit_of_a_started_task_needs_force(api: Session, project: str) -> None:
    task_id = _task(api, project, script={"repository": "r"})
    api.call("tasks.started", {"task": task_id})
    err = _error(api, "tasks.edit", {"task": task_id, "script": {"version_num": "v1"}})
    assert (err.code, err.subcode) == (400, 110)
    assert "version_num" not in _get(api, task_id)["script"]
    api.call("tasks.edit", {"task": task_id, "force": True, "script": {"version_num": "v1"}})
    task = _get(api, task_id)
    assert task["script"] == {"repository": "r", "version_num": "v1"}
    assert task["status"] == "in_progress"


def test_edit_moving_to_unknown_project_is_refused(api: Session, project: str) -> None:
    task_id = _task(api, project)
    err = _error(api, "tasks.edit", {"task": task_id, "project": "0" * 32})
    assert err.subcode == 401
    assert _get(api, task_id)["project"] == project
    other = _project(api)
    api.call("tasks.edit", {"task": task_id, "project": other})
    assert _get(api, task_id)["project"] == other


def test_edit_unknown_task(api: Session) -> None:
    assert _error(api, "tasks.edit", {"task": uuid.uuid4().hex, "name": "x"}).subcode == 101


# --- clone -----------------------------------------------------------------------------------


def test_clone_copies_the_recipe_and_starts_fresh(api: Session, project: str) -> None:
    queue = _queue(api)
    script = {"repository": "r", "version_num": "v", "requirements": {"pip": "x"}}
    hyperparams = {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}}
    configuration = {"cfg": {"name": "cfg", "value": "a: 1"}}
    container = {"image": "img", "arguments": "-e A=1"}
    source = _task(api, project, name="src", script=script, hyperparams=hyperparams,
                   configuration=configuration, container=container, tags=["t1"],
                   execution={"docker_cmd": "img"}, comment="hello")
    api.call("tasks.enqueue", {"task": source, "queue": queue})
    api.call("queues.get_next_task", {"queue": queue})
    api.call("tasks.started", {"task": source})
    api.call("tasks.edit", {"task": source, "force": True, "runtime": {"progress": 90}})
    api.call("tasks.completed", {"task": source})

    clone_id = api.call("tasks.clone", {"task": source, "new_task_name": "copy"})["id"]
    assert clone_id != source and len(clone_id) == 32
    clone = _get(api, clone_id)
    assert clone["name"] == "copy"
    assert clone["status"] == "created"
    assert clone["parent"] == source
    assert clone["project"] == project
    assert clone["script"] == script
    assert clone["hyperparams"] == hyperparams
    assert clone["configuration"] == configuration
    assert clone["container"] == container
    assert clone["tags"] == ["t1"]
    assert clone["comment"] == "hello"
    # execution.queue dropped
    assert clone["execution"] == {"docker_cmd": "img", "artifacts": []}
    assert clone["runtime"] == {}
    assert clone["started"] is None and clone["completed"] is None
    assert _get(api, source)["execution"]["queue"] == queue  # the source keeps its own


def test_clone_default_name_and_independence(api: Session, project: str) -> None:
    source = _task(api, project, name="orig", script={"repository": "r"},
                   system_tags=["development"])
    clone_id = api.call("tasks.clone", {"task": source})["id"]
    clone = _get(api, clone_id)
    assert clone["name"] == "orig (clone)"
    assert "development" not in clone["system_tags"]
    api.call("tasks.edit", {"task": clone_id, "script": {"repository": "changed"}})
    assert _get(api, source)["script"] == {"repository": "r"}


def test_clone_overrides(api: Session, project: str) -> None:
    other = _project(api)
    source = _task(api, project, hyperparams={"A": {"a": {"section": "A", "name": "a"}}})
    clone_id = api.call("tasks.clone", {
        "task": source, "new_task_project": other, "new_task_tags": ["n"],
        "new_task_comment": "cc", "new_task_hyperparams": {},
        "execution_overrides": {"docker_cmd": "other"},
    })["id"]
    clone = _get(api, clone_id)
    assert clone["project"] == other
    assert clone["tags"] == ["n"]
    assert clone["comment"] == "cc"
    assert clone["hyperparams"] == {}
    assert clone["execution"] == {"docker_cmd": "other", "artifacts": []}


def test_clone_of_unknown_task(api: Session) -> None:
    assert _error(api, "tasks.clone", {"task": uuid.uuid4().hex}).subcode == 101


# --- enqueue / dequeue -----------------------------------------------------------------------


def test_enqueue_by_queue_id(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project, execution={"docker_cmd": "img"},
                    system_tags=["development", "keep"])
    result = api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    assert result["queued"] == 1
    assert result["fields"]["status"] == "queued"
    assert result["fields"]["execution.queue"] == queue
    task = _get(api, task_id)
    assert task["status"] == "queued"
    assert task["execution"] == {"docker_cmd": "img", "queue": queue, "artifacts": []}
    assert task["system_tags"] == ["keep"]  # an enqueued task is no longer a development run
    assert _entries(api, queue) == [task_id]


def test_enqueue_by_queue_name_creates_the_queue_once(api: Session, project: str) -> None:
    name = _unique("named")
    first, second = _task(api, project, name="1"), _task(api, project, name="2")
    api.call("tasks.enqueue", {"task": first, "queue_name": name})
    queues = api.call("queues.get_all", {"name": f"^{name}$"})["queues"]
    assert len(queues) == 1
    queue_id = queues[0]["id"]
    assert _get(api, first)["execution"]["queue"] == queue_id
    api.call("tasks.enqueue", {"task": second, "queue_name": name})
    assert len(api.call("queues.get_all", {"name": f"^{name}$"})["queues"]) == 1
    assert _entries(api, queue_id) == [first, second]


def test_enqueue_without_a_queue_uses_the_default(api: Session, project: str) -> None:
    default = api.call("queues.get_default")["id"]
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id})
    try:
        assert _get(api, task_id)["execution"]["queue"] == default
        assert task_id in _entries(api, default)
    finally:
        api.call("tasks.dequeue", {"task": task_id})  # leave the shared default queue clean
    assert task_id not in _entries(api, default)


def test_enqueue_twice_is_refused(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    err = _error(api, "tasks.enqueue", {"task": task_id, "queue": queue})
    assert (err.code, err.subcode) == (400, 110)
    assert _entries(api, queue) == [task_id]


def test_enqueue_refusals_leave_the_task_alone(api: Session, project: str) -> None:
    task_id = _task(api, project)
    assert _error(api, "tasks.enqueue", {"task": task_id, "queue": "0" * 32}).subcode == 701
    both = _error(api, "tasks.enqueue", {"task": task_id, "queue": _queue(api),
                                         "queue_name": _unique("q")})
    assert both.subcode == 12
    task = _get(api, task_id)
    assert task["status"] == "created" and task["execution"] == {"artifacts": []}
    assert _error(api, "tasks.enqueue", {"task": uuid.uuid4().hex,
                                         "queue": _queue(api)}).subcode == 101


def test_enqueue_of_a_running_task_is_refused(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    err = _error(api, "tasks.enqueue", {"task": task_id, "queue": queue})
    assert err.subcode == 110
    assert _status(api, task_id) == "in_progress"
    assert _entries(api, queue) == []


def test_dequeue_goes_back_to_created(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    result = api.call("tasks.dequeue", {"task": task_id})
    assert result["dequeued"] == 1
    assert result["fields"]["status"] == "created"
    assert _status(api, task_id) == "created"
    assert _entries(api, queue) == []
    # and can be queued again
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    assert _entries(api, queue) == [task_id]


def test_dequeue_returns_to_the_status_before_enqueue(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.stopped", {"task": task_id})
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    api.call("tasks.dequeue", {"task": task_id})
    assert _status(api, task_id) == "stopped"


def test_dequeue_of_a_task_not_queued_is_refused(api: Session, project: str) -> None:
    task_id = _task(api, project)
    err = _error(api, "tasks.dequeue", {"task": task_id})
    assert (err.code, err.subcode) == (400, 110)
    assert _status(api, task_id) == "created"


# --- reset -----------------------------------------------------------------------------------


def test_reset_queued_task_removes_the_entry_and_events(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    added = api.add_events([{"type": "log", "task": task_id, "msg": f"line {i}", "level": "info",
                             "timestamp": 1_700_000_000_000 + i} for i in range(3)])
    assert added["added"] == 3
    assert _log_count(api, task_id) == 3
    result = api.call("tasks.reset", {"task": task_id})
    assert result["dequeued"] == {"removed": 1}
    assert result["fields"]["status"] == "created"
    task = _get(api, task_id)
    assert task["status"] == "created"
    assert "queue" not in task["execution"]
    assert _entries(api, queue) == []
    assert _log_count(api, task_id) == 0


def test_reset_finished_task_clears_the_run(api: Session, project: str) -> None:
    task_id = _task(api, project, script={"repository": "r"})
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.edit", {"task": task_id, "force": True, "runtime": {"progress": 3}})
    api.add_events([{"type": "training_stats_scalar", "task": task_id, "iter": 7,
                     "metric": "loss", "variant": "train", "value": 0.5}])
    api.call("tasks.completed", {"task": task_id})
    done = _get(api, task_id)
    assert done["completed"] and done["last_iteration"] == 7
    api.call("tasks.reset", {"task": task_id})
    task = _get(api, task_id)
    assert task["status"] == "created"
    assert task["started"] is None and task["completed"] is None
    assert task["runtime"] == {} and task["last_iteration"] == 0
    assert task["script"] == {"repository": "r"}  # the recipe stays
    assert api.call("events.get_task_events", {"task": task_id})["total"] == 0


def test_reset_running_task(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    result = api.call("tasks.reset", {"task": task_id})
    assert result["dequeued"] == {"removed": 0}
    assert _status(api, task_id) == "created"


# --- the status machine ----------------------------------------------------------------------


def test_happy_path_created_queued_in_progress_completed(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    assert _status(api, task_id) == "queued"
    handed = api.call("queues.get_next_task", {"queue": queue})
    assert handed["entry"]["task"] == task_id
    result = api.call("tasks.started", {"task": task_id, "status_reason": "pulled by agent"})
    assert result["started"] == 1
    task = _get(api, task_id)
    assert task["status"] == "in_progress"
    assert task["status_reason"] == "pulled by agent"
    assert task["started"]
    api.call("tasks.completed", {"task": task_id, "status_reason": "completed",
                                 "status_message": "done"})
    task = _get(api, task_id)
    assert task["status"] == "completed"
    assert (task["status_reason"], task["status_message"]) == ("completed", "done")
    assert task["completed"] >= task["started"]


@pytest.mark.parametrize("end", ["completed", "failed", "stopped"])
def test_in_progress_can_end(api: Session, project: str, end: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    result = api.call(f"tasks.{end}", {"task": task_id})
    assert result["updated"] == 1
    assert result["fields"]["status"] == end
    assert _status(api, task_id) == end


def test_started_twice_is_allowed_and_keeps_the_first_start(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    first = _get(api, task_id)["started"]
    time.sleep(0.003)
    api.call("tasks.started", {"task": task_id})
    task = _get(api, task_id)
    assert task["status"] == "in_progress"
    assert task["started"] == first


def test_started_needs_a_hand_out_unless_forced(api: Session, project: str) -> None:
    """A queued task is started by the worker it was handed to; forcing takes it off its
    queue."""
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    err = _error(api, "tasks.started", {"task": task_id})
    assert (err.code, err.subcode) == (400, 110)
    assert "not handed out" in err.msg
    assert (_status(api, task_id), _entries(api, queue)) == ("queued", [task_id])
    api.call("tasks.started", {"task": task_id, "force": True})
    assert (_status(api, task_id), _entries(api, queue)) == ("in_progress", [])


def test_started_records_the_worker(api: Session, worker_api: Session, project: str) -> None:
    task_id = _task(api, project)
    worker_api.call("tasks.started", {"task": task_id})
    assert _get(api, task_id)["last_worker"].startswith("worker-")


def _drive(api: Session, task_id: str, path: list[str]) -> None:
    for action in path:
        api.call(f"tasks.{action}", {"task": task_id})


@pytest.mark.parametrize(
    ("path", "action", "status"),
    [
        ([], "completed", "created"),
        ([], "stopped", "created"),
        ([], "failed", "created"),
        ([], "close", "created"),
        (["started", "completed"], "stopped", "completed"),
        (["started", "completed"], "failed", "completed"),
        (["started", "failed"], "completed", "failed"),
        (["started", "stopped", "close"], "started", "closed"),
    ],
)
def test_illegal_transitions_are_refused_unless_forced(api: Session, project: str,
                                                       path: list[str], action: str,
                                                       status: str) -> None:
    task_id = _task(api, project)
    _drive(api, task_id, path)
    assert _status(api, task_id) == status
    err = _error(api, f"tasks.{action}", {"task": task_id})
    assert (err.code, err.subcode) == (400, 110)
    assert status in err.msg
    assert _status(api, task_id) == status
    target = {"completed": "completed", "stopped": "stopped", "failed": "failed",
              "close": "closed", "started": "in_progress"}[action]
    api.call(f"tasks.{action}", {"task": task_id, "force": True})
    assert _status(api, task_id) == target


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (["started", "stopped", "close"], "closed"),
        (["started", "completed", "started"], "in_progress"),
        (["started", "failed", "stopped"], "stopped"),
        (["started", "stopped", "completed"], "completed"),
    ],
)
def test_legal_transitions(api: Session, project: str, path: list[str], status: str) -> None:
    task_id = _task(api, project)
    _drive(api, task_id, path)
    assert _status(api, task_id) == status


def test_status_change_of_unknown_task(api: Session) -> None:
    assert _error(api, "tasks.started", {"task": uuid.uuid4().hex}).subcode == 101


# --- stop ------------------------------------------------------------------------------------


def test_stop_queued_task_stops_it_and_leaves_the_queue(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    result = api.call("tasks.stop", {"task": task_id})
    assert result["fields"]["status"] == "stopped"
    task = _get(api, task_id)
    assert task["status"] == "stopped"
    assert task["status_message"].startswith("Stopped by")
    assert _entries(api, queue) == []
    assert api.call("queues.get_next_task", {"queue": queue}) == {}


def test_stop_task_run_by_worker_header_asks_the_worker(api: Session, worker_api: Session,
                                                        project: str) -> None:
    task_id = _task(api, project)
    worker_api.call("workers.register", {"worker": worker_api.worker, "queues": []})
    worker_api.call("tasks.started", {"task": task_id})
    result = api.call("tasks.stop", {"task": task_id})
    assert result["fields"]["status"] == "in_progress"
    polled = api.call("tasks.get_all", {"id": [task_id],
                                        "only_fields": ["status", "status_message"]})
    assert polled["tasks"] == [{"id": task_id, "status": "in_progress",
                                "status_message": "stopping"}]
    worker_api.call("tasks.stopped", {"task": task_id})
    assert _status(api, task_id) == "stopped"


def test_stop_task_with_worker_status_report_asks_the_worker(api: Session,
                                                             project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})  # no worker header
    worker = _unique("reporter")
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time() * 1000),
                                       "task": task_id, "machine_stats": {}})
    api.call("tasks.stop", {"task": task_id})
    task = _get(api, task_id)
    assert (task["status"], task["status_message"]) == ("in_progress", "stopping")
    assert task["last_worker"] == worker
    api.call("tasks.stopped", {"task": task_id})
    assert _status(api, task_id) == "stopped"


def test_stop_task_of_an_unregistered_worker_stops_at_once(api: Session, worker_api: Session,
                                                           project: str) -> None:
    """Nobody would ever see "stopping": the task is stopped, and that worker can not report
    another outcome or start it again."""
    task_id = _task(api, project)
    worker_api.call("tasks.started", {"task": task_id})
    api.call("tasks.stop", {"task": task_id})
    assert _status(api, task_id) == "stopped"
    for action in ("started", "completed", "failed"):
        err = _error(worker_api, f"tasks.{action}", {"task": task_id})
        assert (err.code, err.subcode) == (400, 110), action
    assert _status(api, task_id) == "stopped"


def test_stop_running_task_without_worker_stops_at_once(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.stop", {"task": task_id})
    assert _status(api, task_id) == "stopped"


def test_stop_development_run_stops_at_once(api: Session, worker_api: Session,
                                            project: str) -> None:
    task_id = _task(api, project, system_tags=["development"])
    worker_api.call("tasks.started", {"task": task_id})
    api.call("tasks.stop", {"task": task_id})
    assert _status(api, task_id) == "stopped"


def test_stop_created_task_needs_force(api: Session, project: str) -> None:
    task_id = _task(api, project)
    assert _error(api, "tasks.stop", {"task": task_id}).subcode == 110
    assert _status(api, task_id) == "created"
    api.call("tasks.stop", {"task": task_id, "force": True})
    assert _status(api, task_id) == "stopped"


# --- ping ------------------------------------------------------------------------------------


def test_ping_touches_last_update(api: Session, worker_api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    before = _get(api, task_id)
    time.sleep(0.003)
    assert worker_api.call("tasks.ping", {"task": task_id}) == {}
    after = _get(api, task_id)
    assert after["last_update"] > before["last_update"]
    assert after["status"] == "in_progress"
    assert after["last_worker"].startswith("worker-")
    assert _error(api, "tasks.ping", {"task": uuid.uuid4().hex}).subcode == 101


# --- delete ----------------------------------------------------------------------------------


def test_delete_created_task(api: Session, project: str) -> None:
    task_id = _task(api, project)
    result = api.call("tasks.delete", {"task": task_id})
    assert result["deleted"] == 1
    assert _error(api, "tasks.get_by_id", {"task": task_id}).subcode == 101
    assert _names(api, project) == []


@pytest.mark.parametrize("path", [["started"], ["started", "completed"]])
def test_delete_of_a_started_task_needs_force(api: Session, project: str,
                                              path: list[str]) -> None:
    task_id = _task(api, project)
    _drive(api, task_id, path)
    api.add_events([{"type": "log", "task": task_id, "msg": "x"}])
    err = _error(api, "tasks.delete", {"task": task_id})
    assert (err.code, err.subcode) == (400, 123)
    assert _get(api, task_id)["id"] == task_id
    result = api.call("tasks.delete", {"task": task_id, "force": True})
    assert result["deleted"] == 1
    assert result["events"] == {"deleted": 1}
    assert _error(api, "tasks.get_by_id", {"task": task_id}).subcode == 101


def test_delete_archived_task_without_force(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.edit", {"task": task_id, "force": True, "system_tags": ["archived"]})
    assert api.call("tasks.delete", {"task": task_id})["deleted"] == 1


def test_force_delete_of_queued_task_leaves_the_queue(api: Session, project: str) -> None:
    queue = _queue(api)
    task_id = _task(api, project)
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    assert _error(api, "tasks.delete", {"task": task_id}).subcode == 123
    api.call("tasks.delete", {"task": task_id, "force": True})
    assert _entries(api, queue) == []


# --- set_requirements ------------------------------------------------------------------------


def test_set_requirements_pip_as_string(api: Session, project: str) -> None:
    task_id = _task(api, project, script={"repository": "r", "entry_point": "a.py"})
    reqs = {"pip": "numpy==2.0\ntorch\n"}
    result = api.call("tasks.set_requirements", {"task": task_id, "requirements": reqs})
    assert result["updated"] == 1
    assert _get(api, task_id)["script"] == {"repository": "r", "entry_point": "a.py",
                                            "requirements": reqs}


def test_set_requirements_pip_as_list_replaces_the_old(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.set_requirements", {"task": task_id,
                                        "requirements": {"pip": "a", "conda": "c"}})
    api.call("tasks.started", {"task": task_id})  # the agent sets them on a running task
    reqs = {"org_pip": "a", "pip": ["a==1.0", "b==2.0"]}
    api.call("tasks.set_requirements", {"task": task_id, "requirements": reqs})
    assert _get(api, task_id)["script"]["requirements"] == reqs
    polled = api.call("tasks.get_all", {"id": [task_id], "only_fields": ["script.requirements"]})
    assert polled["tasks"][0]["script"]["requirements"]["pip"] == ["a==1.0", "b==2.0"]


def test_set_requirements_needs_requirements(api: Session, project: str) -> None:
    task_id = _task(api, project)
    assert _error(api, "tasks.set_requirements", {"task": task_id}).subcode == 11
    bad = _error(api, "tasks.set_requirements", {"task": task_id, "requirements": "x"})
    assert bad.subcode == 12


# --- hyperparameters -------------------------------------------------------------------------


def _param(section: str, name: str, value: str) -> dict[str, str]:
    return {"section": section, "name": name, "value": value, "type": "str"}


def _flat(api: Session, task_id: str) -> set[tuple[str, str, str]]:
    params = api.call("tasks.get_hyper_params", {"tasks": [task_id]})["params"]
    assert [p["task"] for p in params] == [task_id]
    return {(p["section"], p["name"], p["value"]) for p in params[0]["hyperparams"]}


def test_edit_hyper_params_merges_by_default(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": [
        _param("Args", "lr", "0.1"), _param("Args", "bs", "32")]})
    result = api.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": [
        _param("Args", "lr", "0.2"), _param("Env", "X", "1")]})
    assert result["updated"] == 1
    assert _flat(api, task_id) == {("Args", "lr", "0.2"), ("Args", "bs", "32"),
                                   ("Env", "X", "1")}
    stored = _get(api, task_id)["hyperparams"]
    assert stored["Args"]["lr"] == _param("Args", "lr", "0.2")
    assert set(stored) == {"Args", "Env"}


def test_edit_hyper_params_replace_section(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": [
        _param("Args", "lr", "0.1"), _param("Args", "bs", "32"), _param("Env", "X", "1")]})
    api.call("tasks.edit_hyper_params", {"task": task_id, "replace_hyperparams": "section",
                                         "hyperparams": [_param("Args", "epochs", "3")]})
    assert _flat(api, task_id) == {("Args", "epochs", "3"), ("Env", "X", "1")}


def test_edit_hyper_params_replace_all(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": [
        _param("Args", "lr", "0.1"), _param("Env", "X", "1")]})
    api.call("tasks.edit_hyper_params", {"task": task_id, "replace_hyperparams": "all",
                                         "hyperparams": [_param("New", "k", "v")]})
    assert _flat(api, task_id) == {("New", "k", "v")}


def test_edit_hyper_params_without_section_goes_to_general(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_hyper_params", {"task": task_id,
                                         "hyperparams": [{"name": "x", "value": "1"}]})
    assert _flat(api, task_id) == {("General", "x", "1")}


def test_get_hyper_params_of_several_tasks(api: Session, project: str) -> None:
    first = _task(api, project, hyperparams={"A": {"a": _param("A", "a", "1")}})
    second = _task(api, project)
    params = api.call("tasks.get_hyper_params", {"tasks": [second, first]})["params"]
    assert params == [{"task": second, "hyperparams": []},
                      {"task": first, "hyperparams": [_param("A", "a", "1")]}]
    assert _error(api, "tasks.get_hyper_params", {}).subcode == 11
    assert _error(api, "tasks.get_hyper_params", {"tasks": [uuid.uuid4().hex]}).subcode == 101


def test_edit_hyper_params_status_rules(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.edit_hyper_params", {"task": task_id,
                                         "hyperparams": [_param("A", "run", "1")]})
    api.call("tasks.completed", {"task": task_id})
    err = _error(api, "tasks.edit_hyper_params", {"task": task_id,
                                                  "hyperparams": [_param("A", "late", "1")]})
    assert (err.code, err.subcode) == (400, 110)
    assert _flat(api, task_id) == {("A", "run", "1")}
    api.call("tasks.edit_hyper_params", {"task": task_id, "force": True,
                                         "hyperparams": [_param("A", "late", "1")]})
    assert _flat(api, task_id) == {("A", "run", "1"), ("A", "late", "1")}


def test_edit_hyper_params_rejects_items_without_name(api: Session, project: str) -> None:
    task_id = _task(api, project)
    err = _error(api, "tasks.edit_hyper_params", {"task": task_id,
                                                  "hyperparams": [{"section": "A"}]})
    assert err.subcode == 12
    assert _flat(api, task_id) == set()


# --- configuration ---------------------------------------------------------------------------


def _config(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value, "type": "yaml", "description": ""}


def _config_names(api: Session, task_id: str, names: list[str] | None = None) -> list[str]:
    body: dict[str, Any] = {"tasks": [task_id]}
    if names is not None:
        body["names"] = names
    configs = api.call("tasks.get_configurations", body)["configurations"]
    assert [c["task"] for c in configs] == [task_id]
    return sorted(c["name"] for c in configs[0]["configuration"])


def test_edit_configuration_merges_by_name(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_configuration", {"task": task_id, "configuration": [
        _config("a", "1"), _config("b", "2")]})
    result = api.call("tasks.edit_configuration", {"task": task_id, "configuration": [
        _config("b", "3"), _config("c", "4")]})
    assert result["updated"] == 1
    assert _config_names(api, task_id) == ["a", "b", "c"]
    stored = _get(api, task_id)["configuration"]
    assert stored["b"] == _config("b", "3")
    assert stored["a"] == _config("a", "1")


def test_edit_configuration_replace(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_configuration", {"task": task_id, "configuration": [
        _config("a", "1"), _config("b", "2")]})
    api.call("tasks.edit_configuration", {"task": task_id, "replace_configuration": True,
                                          "configuration": [_config("z", "9")]})
    assert _get(api, task_id)["configuration"] == {"z": _config("z", "9")}


def test_get_configurations_names_filter(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.edit_configuration", {"task": task_id, "configuration": [
        _config("a", "1"), _config("b", "2"), _config("c", "3")]})
    assert _config_names(api, task_id, ["a", "c", "missing"]) == ["a", "c"]
    assert _config_names(api, task_id) == ["a", "b", "c"]
    items = api.call("tasks.get_configurations",
                     {"tasks": [task_id], "names": ["b"]})["configurations"][0]["configuration"]
    assert items == [_config("b", "2")]


def test_edit_configuration_status_rules(api: Session, project: str) -> None:
    task_id = _task(api, project)
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.failed", {"task": task_id})
    err = _error(api, "tasks.edit_configuration", {"task": task_id,
                                                   "configuration": [_config("a", "1")]})
    assert (err.code, err.subcode) == (400, 110)
    assert _get(api, task_id)["configuration"] == {}
    api.call("tasks.edit_configuration", {"task": task_id, "force": True,
                                          "configuration": [_config("a", "1")]})
    assert _config_names(api, task_id) == ["a"]
