"""What a task makes and where it goes: the output destination (`output_dest` as the SDK sends
it, read back as `output.destination`, older databases' top-level `output_dest` included),
and Task.delete's calls (models.get_all by task, the debug-image events, tasks.delete with
force, models.delete) for a task with artifacts, models and events; against a real server on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from bosun.api.errors import ApiError
from bosun.client import Session
from bosun.server.store import open_store, schema
from tests.support.server_process import ServerProcess


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _get(api: Session, task_id: str) -> dict[str, Any]:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


# --- the output destination --------------------------------------------------------------


def test_output_dest_is_read_back_as_output_destination(api: Session) -> None:
    """SDK: `task.output_uri = "/path"` sends tasks.edit {output_dest}; reading it back reads
    task.output.destination; Task.clone creates with output_dest."""
    created = api.call("tasks.create", {"name": "o", "output_dest": "s3://bucket/a"})["id"]
    task = _get(api, created)
    assert task["output"] == {"destination": "s3://bucket/a"} and "output_dest" not in task
    edited = api.call("tasks.edit", {"task": created, "force": True,
                                     "output_dest": "/mnt/out"})
    assert edited["fields"]["output"] == {"destination": "/mnt/out"}
    api.call("tasks.edit", {"task": created, "output": {"result": "success"}})
    assert _get(api, created)["output"] == {"destination": "/mnt/out", "result": "success"}
    [found] = api.call("tasks.get_all", {"id": [created],
                                         "only_fields": ["output.destination"]})["tasks"]
    assert found == {"id": created, "output": {"destination": "/mnt/out"}}
    api.call("tasks.edit", {"task": created, "output_dest": ""})  # the SDK's reset clears it
    assert _get(api, created)["output"]["destination"] == ""
    api.call("tasks.edit", {"task": created, "output": {"destination": "gs://b/c"}})
    clone = api.call("tasks.clone", {"task": created})["id"]
    assert _get(api, clone)["output"] == {"destination": "gs://b/c"}


def test_output_dest_must_be_a_string(api: Session) -> None:
    with pytest.raises(ApiError) as err:
        api.call("tasks.create", {"name": "o", "output_dest": 5})
    assert (err.value.code, err.value.subcode) == (400, 12)
    assert "output_dest" in err.value.msg


def test_an_older_database_output_dest_still_reads(api: Session,
                                                   server: ServerProcess) -> None:
    """bosun before this change stored a client's `output_dest` as it came."""
    task_id = api.call("tasks.create", {"name": "legacy"})["id"]
    store = open_store(server.db)
    try:
        with store.write() as conn:
            doc = conn.execute(sa.select(schema.tasks.c.doc)
                               .where(schema.tasks.c.id == task_id)).scalar_one()
            doc.pop("output", None)
            doc["output_dest"] = "file:///old/place"
            conn.execute(schema.tasks.update().where(schema.tasks.c.id == task_id)
                         .values(doc=doc))
    finally:
        store.dispose()
    task = _get(api, task_id)
    assert task["output"] == {"destination": "file:///old/place"}
    assert "output_dest" not in task
    api.call("tasks.edit", {"task": task_id, "comment": "touched"})
    assert _get(api, task_id)["output"] == {"destination": "file:///old/place"}
    clone = api.call("tasks.clone", {"task": task_id})["id"]
    assert _get(api, clone)["output"]["destination"] == "file:///old/place"


# --- Task.delete ---------------------------------------------------------------------------


def _model(api: Session, task_id: str, name: str, **fields: Any) -> str:
    return api.call("models.create", {"name": name, "uri": f"file:///m/{name}.bin",
                                      "task": task_id, **fields})["id"]


def _made_task(api: Session) -> tuple[str, list[str]]:
    """A completed task with an output artifact, two output models and a debug image."""
    task_id = api.call("tasks.create", {"name": _unique("made")})["id"]
    api.call("tasks.started", {"task": task_id})
    api.call("tasks.add_or_update_artifacts", {"task": task_id, "artifacts": [
        {"key": "data", "type": "custom", "mode": "output", "uri": "file:///a/data.csv"},
        {"key": "given", "type": "custom", "mode": "input", "uri": "file:///a/in.csv"}]})
    models = [_model(api, task_id, "first"), _model(api, task_id, "second")]
    api.call("tasks.add_or_update_model", {"task": task_id, "name": "first",
                                           "model": models[0], "type": "output"})
    api.add_events([{"type": "training_debug_image", "task": task_id, "metric": "img",
                     "variant": "v", "iter": 1, "url": "file:///e/img.png",
                     "timestamp": 1_700_000_000_000}])
    api.call("tasks.completed", {"task": task_id})
    return task_id, models


def test_task_delete_calls_of_the_sdk(api: Session) -> None:
    task_id, models = _made_task(api)
    task = _get(api, task_id)
    outputs = [a["uri"] for a in task["execution"]["artifacts"] if a["mode"] == "output"]
    assert outputs == ["file:///a/data.csv"]
    found = api.call("models.get_all", {"task": [task_id], "only_fields": ["id", "uri"]})
    assert sorted(found["models"], key=lambda m: m["uri"]) == [
        {"id": models[0], "uri": "file:///m/first.bin"},
        {"id": models[1], "uri": "file:///m/second.bin"}]
    # _get_all_events(event_type="training_debug_image", batch_size=100), then "plot"
    images = api.call("events.get_task_events", {
        "task": task_id, "order": "asc", "batch_size": 100,
        "event_type": "training_debug_image", "model_events": False})
    assert [e["url"] for e in images["events"]] == ["file:///e/img.png"]
    assert images["returned"] == images["total"] == 1
    plots = api.call("events.get_task_events", {"task": task_id, "order": "asc",
                                                "batch_size": 100, "event_type": "plot"})
    assert plots["events"] == [] and plots["total"] == 0
    deleted = api.call("tasks.delete", {"task": task_id, "force": True, "move_to_trash": False,
                                        "delete_external_artifacts": True,
                                        "return_file_urls": True})
    assert deleted["deleted"] is True
    assert deleted["deleted_models"] == 2
    assert deleted["urls"] == {"model_urls": ["file:///m/first.bin", "file:///m/second.bin"],
                               "event_urls": ["file:///e/img.png"],
                               "artifact_urls": ["file:///a/data.csv"]}
    with pytest.raises(ApiError) as err:
        api.call("tasks.get_by_id", {"task": task_id})
    assert err.value.subcode == 101
    # the SDK then deletes each model it listed; the output ones are gone already (400/201,
    # which it takes as deleted)
    with pytest.raises(ApiError) as err:
        api.call("models.delete", {"model": models[0], "force": False})
    assert (err.value.code, err.value.subcode) == (400, 201)


def test_models_delete_answers_deleted(api: Session) -> None:
    model = _model(api, api.call("tasks.create", {"name": "t"})["id"], "alone")
    assert api.call("models.delete", {"model": model, "force": False}) == {
        "deleted": True, "url": "file:///m/alone.bin"}


def test_task_delete_keeps_what_others_need(api: Session) -> None:
    task_id, models = _made_task(api)
    published = _model(api, task_id, "published", ready=True)
    user = api.call("tasks.create", {"name": "user", "models": {
        "input": [{"name": "in", "model": models[1]}], "output": []}})["id"]
    child = api.call("tasks.create", {"name": "child", "parent": task_id})["id"]
    api.call("tasks.reset", {"task": task_id, "force": True})  # created again, models stay
    with pytest.raises(ApiError) as err:  # a published output model needs force
        api.call("tasks.delete", {"task": task_id})
    assert err.value.subcode == 123
    deleted = api.call("tasks.delete", {"task": task_id, "force": True})
    assert deleted["deleted_models"] == 1 and deleted["updated_models"] == 2
    assert deleted["updated_children"] == 1 and "urls" not in deleted
    remaining = api.call("models.get_all", {"id": [models[0], models[1], published]})["models"]
    assert {m["id"]: m["task"] for m in remaining} == {models[1]: None, published: None}
    assert _get(api, child)["parent"] == f"__DELETED__{task_id}"
    assert _get(api, user)["models"]["input"][0]["model"] == models[1]


def test_delete_output_models_false_keeps_them(api: Session) -> None:
    task_id, models = _made_task(api)
    deleted = api.call("tasks.delete", {"task": task_id, "force": True,
                                        "delete_output_models": False})
    assert deleted["deleted_models"] == 0 and deleted["updated_models"] == 2
    assert len(api.call("models.get_all", {"id": models})["models"]) == 2
