"""The endpoints added for the ClearML clients, called the way the clients call them, on SQLite
and PostgreSQL: models.*, task artifacts and models, parameter deletion, publish, the event
readers behind the SDK's `get_reported_*`, and the small ones (users, queue size, projects)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.support.server_process import ServerProcess

SINGLE_VALUE_ITER = -(2**31)


@pytest.fixture
def bosun(server: ServerProcess) -> Iterator[Session]:
    with Session(server.url, "key", "secret") as session:
        yield session


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _project(api: Session) -> str:
    return api.call("projects.create", {"name": _unique("p")})["id"]


def _task(api: Session, **fields: Any) -> str:
    return api.call("tasks.create", {"name": "t", "project": _project(api), **fields})["id"]


def _get(api: Session, task_id: str) -> dict[str, Any]:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


# --- models ----------------------------------------------------------------------------------


def test_model_create_edit_and_read_back(bosun: Session) -> None:
    project = _project(bosun)
    model_id = bosun.call("models.create", {
        "uri": "file:///uploading_file", "name": "m", "labels": {}, "ready": False,
        "public": False, "project": project, "method": "get"})["id"]
    assert len(model_id) == 32
    bosun.call("models.edit", {"model": model_id, "uri": "file:///w.bin", "name": "net",
                               "framework": "PyTorch", "design": {"design": "x"},
                               "task": "t1", "tags": ["a"]})
    bosun.call("models.add_or_update_metadata", {
        "model": model_id, "metadata": [{"key": "epochs", "type": "int", "value": "3"}]})
    model = bosun.call("models.get_by_id", {"model": model_id})["model"]
    assert model["uri"] == "file:///w.bin" and model["name"] == "net"
    assert model["framework"] == "PyTorch" and model["project"] == project
    assert model["metadata"] == {"epochs": {"key": "epochs", "type": "int", "value": "3"}}
    assert model["ready"] is False and model["tags"] == ["a"]
    bosun.call("models.delete_metadata", {"model": model_id, "keys": ["epochs"]})
    bosun.call("models.set_ready", {"model": model_id})
    model = bosun.call("models.get_by_id", {"model": model_id})["model"]
    assert model["metadata"] == {} and model["ready"] is True
    error = _error(bosun, "models.get_by_id", {"model": "0" * 32})
    assert (error.code, error.subcode) == (400, 201)
    error = _error(bosun, "models.create", {"uri": "u", "name": "m", "project": "0" * 32})
    assert (error.code, error.subcode) == (400, 401)


def test_model_get_all_filters_like_the_sdk_asks(bosun: Session) -> None:
    project = _project(bosun)
    ids = [bosun.call("models.create", {"uri": f"file:///{n}", "name": n, "project": project,
                                        "framework": fw})["id"]
           for n, fw in (("alpha", "PyTorch"), ("beta", "Keras"), ("alphabet", "PyTorch"))]
    bosun.call("models.archive_many", {"ids": [ids[1]]})
    # Model.query_models(project_name=..., include_archived=False)
    found = bosun.call("models.get_all", {
        "system_tags": ["-archived"], "only_fields": ["id", "created", "system_tags"],
        "page": 0, "page_size": 500, "project": [project], "order_by": ["-created"]})["models"]
    assert [m["id"] for m in found] == [ids[2], ids[0]]
    assert set(found[0]) == {"id", "created", "system_tags"}
    by_name = bosun.call("models.get_all", {"project": [project], "name": "^alpha$"})["models"]
    assert [m["id"] for m in by_name] == [ids[0]]
    keras = bosun.call("models.get_all", {"project": [project], "framework": ["Keras"]})
    assert [m["id"] for m in keras["models"]] == [ids[1]]
    bosun.call("models.unarchive_many", {"ids": [ids[1]]})
    all_three = bosun.call("models.get_all", {"project": [project], "order_by": ["name"]})
    assert [m["name"] for m in all_three["models"]] == ["alpha", "alphabet", "beta"]
    assert bosun.call("models.delete", {"model": ids[0]})["deleted"] is True
    assert len(bosun.call("models.get_all", {"project": [project]})["models"]) == 2


def test_update_for_task_registers_the_output_model(bosun: Session) -> None:
    task_id = _task(bosun)
    result = bosun.call("models.update_for_task", {"task": task_id, "uri": "file:///a.pt",
                                                   "iteration": 7})
    assert result["created"] is True
    task = _get(bosun, task_id)
    assert task["models"]["output"] == [{"name": "t", "model": result["id"]}]
    assert task["last_iteration"] == 7
    model = bosun.call("models.get_by_task_id", {"task": task_id})["model"]
    assert model["id"] == result["id"] and model["project"] == task["project"]
    again = bosun.call("models.update_for_task", {"task": task_id,
                                                  "override_model_id": result["id"]})
    assert again["created"] is False
    error = _error(bosun, "models.update_for_task", {"task": task_id})
    assert error.code == 400


# --- tasks: artifacts, models, parameters, publish --------------------------------------------


def test_artifacts_are_upserted_by_key_and_mode(bosun: Session) -> None:
    task_id = _task(bosun)
    artifact = {"key": "numbers", "type": "dict", "uri": "file:///a.json", "content_size": 14,
                "hash": "h", "timestamp": 1, "type_data": {"content_type": "application/json"}}
    bosun.call("tasks.add_or_update_artifacts", {"task": task_id, "artifacts": [artifact],
                                                 "force": True})
    bosun.call("tasks.add_or_update_artifacts", {"task": task_id, "artifacts": [
        {**artifact, "uri": "file:///b.json"}, {"key": "numbers", "mode": "input", "uri": "i"}]})
    artifacts = _get(bosun, task_id)["execution"]["artifacts"]
    assert [(a["key"], a["mode"], a["uri"]) for a in artifacts] == [
        ("numbers", "output", "file:///b.json"), ("numbers", "input", "i")]
    deleted = bosun.call("tasks.delete_artifacts", {"task": task_id,
                                                    "artifacts": [{"key": "numbers"}]})
    assert deleted == {"deleted": 1}
    assert [a["mode"] for a in _get(bosun, task_id)["execution"]["artifacts"]] == ["input"]


def test_task_models_and_publish(bosun: Session) -> None:
    task_id = _task(bosun)
    model_id = bosun.call("models.create", {"uri": "file:///w", "name": "w"})["id"]
    bosun.call("tasks.add_or_update_model", {"task": task_id, "name": "w", "model": model_id,
                                             "type": "output"})
    bosun.call("tasks.add_or_update_model", {"task": task_id, "name": "base", "model": "m0",
                                             "type": "input"})
    task = _get(bosun, task_id)
    assert task["models"] == {"input": [{"name": "base", "model": "m0"}],
                              "output": [{"name": "w", "model": model_id}]}
    bosun.call("tasks.delete_models", {"task": task_id,
                                       "models": [{"name": "base", "type": "input"}]})
    assert _get(bosun, task_id)["models"]["input"] == []
    assert _error(bosun, "tasks.publish", {"task": task_id}).subcode == 110  # still created
    bosun.call("tasks.started", {"task": task_id})
    bosun.call("tasks.completed", {"task": task_id})
    bosun.call("tasks.publish", {"task": task_id})
    assert _get(bosun, task_id)["status"] == "published"
    assert bosun.call("models.get_by_id", {"model": model_id})["model"]["ready"] is True


def test_delete_hyper_params_and_configuration(bosun: Session) -> None:
    task_id = _task(bosun)
    bosun.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": [
        {"section": "General", "name": "lr", "value": "0.1"},
        {"section": "General", "name": "bs", "value": "8"},
        {"section": "Args", "name": "x", "value": "1"}]})
    bosun.call("tasks.edit_configuration", {"task": task_id, "configuration": [
        {"name": "a", "value": "1"}, {"name": "b", "value": "2"}]})
    deleted = bosun.call("tasks.delete_hyper_params", {"task": task_id, "hyperparams": [
        {"section": "General", "name": "lr"}, {"section": "Args"}]})
    assert deleted == {"deleted": 2}
    assert set(_get(bosun, task_id)["hyperparams"]) == {"General"}
    assert bosun.call("tasks.delete_configuration", {"task": task_id,
                                                     "configuration": ["a", "zz"]}) == \
        {"deleted": 1}
    assert set(_get(bosun, task_id)["configuration"]) == {"b"}


def test_new_task_reads_with_empty_last_metrics(bosun: Session) -> None:
    task_id = _task(bosun)
    assert _get(bosun, task_id)["last_metrics"] == {}
    [task] = bosun.call("tasks.get_all", {"id": [task_id], "only_fields": ["last_metrics"]})[
        "tasks"]
    assert task["last_metrics"] == {}


# --- events ----------------------------------------------------------------------------------


def test_single_values_plots_and_debug_images(bosun: Session) -> None:
    task_id = _task(bosun)
    bosun.add_events([
        {"type": "training_stats_scalar", "task": task_id, "iter": SINGLE_VALUE_ITER,
         "metric": "Summary", "variant": "acc", "value": 0.8},
        {"type": "training_stats_scalar", "task": task_id, "iter": SINGLE_VALUE_ITER,
         "metric": "Summary", "variant": "acc", "value": 0.9},
        {"type": "training_stats_scalar", "task": task_id, "iter": 1, "metric": "loss",
         "variant": "train", "value": 0.5},
        *({"type": "plot", "task": task_id, "iter": i, "metric": "tbl", "variant": "t",
           "plot_str": f"{{\"i\": {i}}}"} for i in range(3)),
        *({"type": "training_debug_image", "task": task_id, "iter": i, "metric": "img",
           "variant": "v", "url": f"file:///{i}.png"} for i in range(3)),
    ])
    values = bosun.call("events.get_task_single_value_metrics", {"tasks": [task_id]})["tasks"]
    assert values[0]["task"] == task_id
    assert [(v["variant"], v["value"]) for v in values[0]["values"]] == [("acc", 0.9)]
    plots = bosun.call("events.get_task_plots", {"task": task_id, "iters": 2,
                                                 "no_scroll": True})["plots"]
    assert [p["plot_str"] for p in plots] == ['{"i": 1}', '{"i": 2}']
    first = bosun.call("events.debug_images", {"metrics": [
        {"task": task_id, "metric": "img", "variants": ["v"]}], "iters": 2})
    assert [i["iter"] for i in first["metrics"][0]["iterations"]] == [2, 1]
    assert first["metrics"][0]["iterations"][0]["events"][0]["url"] == "file:///2.png"
    more = bosun.call("events.debug_images", {"metrics": [{"task": task_id, "metric": "img"}],
                                              "iters": 2, "scroll_id": first["scroll_id"]})
    assert more["metrics"][0]["iterations"] == []


def test_events_add_takes_one_event(bosun: Session) -> None:
    task_id = _task(bosun)
    assert bosun.call("events.add", {"type": "log", "task": task_id, "msg": "one line",
                                     "level": "info"}) == {}
    events = bosun.call("events.get_task_log", {"task": task_id})["events"]
    assert [e["msg"] for e in events] == ["one line"]
    error = _error(bosun, "events.add", {"type": "log", "task": "0" * 32, "msg": "x"})
    assert (error.code, error.subcode) == (400, 101)


# --- users, queues, projects -----------------------------------------------------------------


def test_small_endpoints(bosun: Session) -> None:
    user = bosun.call("users.get_current_user", {})["user"]
    assert user["id"] and user["company"]["id"]
    assert bosun.call("users.get_vaults", {})["vaults"] == []
    queue = bosun.call("queues.create", {"name": _unique("q")})["id"]
    assert bosun.call("queues.get_num_entries", {"queue": queue}) == {"num": 0}
    bosun.call("tasks.enqueue", {"task": _task(bosun), "queue": queue})
    assert bosun.call("queues.get_num_entries", {"queue": queue}) == {"num": 1}
    project = _project(bosun)
    name = _unique("renamed")
    bosun.call("projects.update", {"project": project, "name": name, "description": "d",
                                   "default_output_destination": "file:///out"})
    doc = bosun.call("projects.get_by_id", {"project": project})["project"]
    assert (doc["name"], doc["description"], doc["default_output_destination"]) == \
        (name, "d", "file:///out")
    assert bosun.call("projects.get_all", {"name": f"^{name}$"})["projects"][0]["id"] == project


def test_reset_and_clone_drop_what_a_run_made(bosun: Session) -> None:
    task_id = _task(bosun)
    bosun.call("tasks.add_or_update_artifacts", {"task": task_id, "artifacts": [
        {"key": "out", "uri": "o"}, {"key": "in", "mode": "input", "uri": "i"}]})
    for kind in ("input", "output"):
        bosun.call("tasks.add_or_update_model", {"task": task_id, "name": kind,
                                                 "model": f"m-{kind}", "type": kind})
    clone = _get(bosun, bosun.call("tasks.clone", {"task": task_id})["id"])
    bosun.call("tasks.reset", {"task": task_id})
    for task in (clone, _get(bosun, task_id)):
        assert [a["key"] for a in task["execution"]["artifacts"]] == ["in"]
        assert task["models"] == {"input": [{"name": "input", "model": "m-input"}],
                                  "output": []}
