"""events.*: JSON-lines batches of logs and scalars, paging them back, and the scalar views."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.support.server_process import ServerProcess

SCALAR = "training_stats_scalar"
BASE_MS = 1_700_000_000_000


def _task(api: Session) -> str:
    return api.call("tasks.create", {"name": f"events-{uuid.uuid4().hex}"})["id"]


def _log(task_id: str, n: int, level: str = "info") -> dict[str, Any]:
    return {"type": "log", "task": task_id, "level": level, "worker": "w1",
            "msg": f"line {n}", "timestamp": BASE_MS + n}


def _scalar(task_id: str, metric: str, variant: str, it: int, value: float) -> dict[str, Any]:
    return {"type": SCALAR, "task": task_id, "iter": it, "metric": metric, "variant": variant,
            "value": value, "timestamp": BASE_MS + 1000 + it}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _error(api: Session, endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call(endpoint, body)
    return err.value


def _msgs(data: dict[str, Any]) -> list[str]:
    return [e["msg"] for e in data["events"]]


def _all_pages(api: Session, endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    pages = []
    scroll_id = None
    for _ in range(50):
        page = api.call(endpoint, {**body, "scroll_id": scroll_id})
        pages.append(page)
        if not page["events"]:
            return pages
        scroll_id = page["scroll_id"]
    raise AssertionError("paging never ended")


# --- add_batch --------------------------------------------------------------------------------


def test_add_batch_json_lines_logs_and_scalars(api: Session) -> None:
    task_id = _task(api)
    batch = [_log(task_id, 0), _scalar(task_id, "loss", "train", 0, 0.9), _log(task_id, 1),
             _scalar(task_id, "loss", "train", 1, 0.7)]
    data = api.add_events(batch)
    assert data["added"] == 4
    assert data["errors"] == 0
    log = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False})
    assert log["events"] == [
        {"type": "log", "task": task_id, "timestamp": BASE_MS, "level": "info", "worker": "w1",
         "msg": "line 0"},
        {"type": "log", "task": task_id, "timestamp": BASE_MS + 1, "level": "info",
         "worker": "w1", "msg": "line 1"},
    ]
    assert log["total"] == 2


def test_add_batch_keeps_unicode_line_separators_inside_a_message(server: ServerProcess,
                                                                   api: Session) -> None:
    task_id = _task(api)
    message = "a\u2028b\x1cc\u0085d \u00e9"
    # Raw UTF-8, as orjson and other encoders write it: only "\n" separates events.
    body = json.dumps({**_log(task_id, 1), "msg": message}, ensure_ascii=False).encode()
    response = httpx.post(f"{server.url}/events.add_batch", content=body + b"\n", timeout=10)
    assert response.json()["data"]["added"] == 1
    logged = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False})
    assert _msgs(logged) == [message]


def test_add_batch_counts_unknown_tasks_and_bad_lines_as_errors(server: ServerProcess,
                                                                api: Session) -> None:
    task_id = _task(api)
    lines = [
        json.dumps(_log(task_id, 0)),
        json.dumps(_log("0" * 32, 1)),
        "{this is not json",
        json.dumps({"task": task_id, "msg": "no type"}),
        json.dumps(_scalar("f" * 32, "loss", "train", 0, 1.0)),
        json.dumps(_log(task_id, 2)),
    ]
    response = httpx.post(f"{server.url}/events.add_batch", content="\n".join(lines),
                          headers={"Authorization": f"Bearer {api.token}",
                                   "Content-Type": "application/json-lines"}, timeout=10)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["added"] == 2
    assert data["errors"] == 4
    assert sum(data["errors_info"].values()) == 4
    assert data["errors_info"][f"invalid task id: {'0' * 32}"] == 1
    assert data["errors_info"][f"invalid task id: {'f' * 32}"] == 1
    assert data["errors_info"]["line 3 is not valid JSON"] == 1
    log = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False})
    assert _msgs(log) == ["line 0", "line 2"]


def test_add_batch_all_for_unknown_tasks_adds_nothing(api: Session) -> None:
    data = api.add_events([_log("1" * 32, 0), _log("2" * 32, 1)])
    assert (data["added"], data["errors"]) == (0, 2)


def test_add_batch_as_a_json_list_and_a_get_request(server: ServerProcess, api: Session) -> None:
    task_id = _task(api)
    response = httpx.request(
        "GET", f"{server.url}/v2.23/events.add_batch", timeout=10,
        content=json.dumps([_log(task_id, 0), _log(task_id, 1)]),
        headers={"Authorization": f"Bearer {api.token}"})
    assert response.json()["data"]["added"] == 2
    log = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False})
    assert _msgs(log) == ["line 0", "line 1"]


# --- get_task_log -----------------------------------------------------------------------------


def test_get_task_log_directions_and_total(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, n) for n in range(5)]
                   + [_scalar(task_id, "loss", "train", 0, 1.0)])
    latest_first = api.call("events.get_task_log", {"task": task_id})
    assert _msgs(latest_first) == [f"line {n}" for n in (4, 3, 2, 1, 0)]
    assert (latest_first["total"], latest_first["returned"]) == (5, 5)
    earlier = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": True})
    assert _msgs(earlier) == _msgs(latest_first)
    oldest_first = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False})
    assert _msgs(oldest_first) == [f"line {n}" for n in range(5)]
    assert oldest_first["total"] == 5
    # navigate_earlier with order=asc: the latest page, shown oldest first
    latest_asc = api.call("events.get_task_log",
                          {"task": task_id, "batch_size": 2, "order": "asc"})
    assert _msgs(latest_asc) == ["line 3", "line 4"]


def test_get_task_log_pages_forward_with_scroll_id(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, n) for n in range(23)])
    pages = _all_pages(api, "events.get_task_log",
                       {"task": task_id, "navigate_earlier": False, "batch_size": 5})
    assert [p["returned"] for p in pages] == [5, 5, 5, 5, 3, 0]
    assert all(p["total"] == 23 for p in pages)
    assert [m for p in pages for m in _msgs(p)] == [f"line {n}" for n in range(23)]
    # the empty last page keeps the position, so asking again is still empty
    again = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                             "batch_size": 5, "scroll_id": pages[-1]["scroll_id"]})
    assert again["events"] == []


def test_get_task_log_pages_backward_with_scroll_id(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, n) for n in range(12)])
    pages = _all_pages(api, "events.get_task_log",
                       {"task": task_id, "navigate_earlier": True, "batch_size": 5})
    assert [p["returned"] for p in pages] == [5, 5, 2, 0]
    assert [m for p in pages for m in _msgs(p)] == [f"line {n}" for n in range(11, -1, -1)]


def test_get_task_log_paging_sees_lines_added_meanwhile_once(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, n) for n in range(4)])
    body = {"task": task_id, "navigate_earlier": False, "batch_size": 3}
    first = api.call("events.get_task_log", body)
    assert _msgs(first) == ["line 0", "line 1", "line 2"]
    api.add_events([_log(task_id, n) for n in range(4, 6)])
    second = api.call("events.get_task_log", {**body, "scroll_id": first["scroll_id"]})
    assert _msgs(second) == ["line 3", "line 4", "line 5"]
    assert second["total"] == 6


def test_get_task_log_errors(api: Session) -> None:
    task_id = _task(api)
    err = _error(api, "events.get_task_log", {"task": task_id, "scroll_id": "not-a-cursor"})
    assert (err.code, err.subcode) == (400, 1104)
    err = _error(api, "events.get_task_log", {"task": "0" * 32})
    assert (err.code, err.subcode) == (400, 101)
    empty = api.call("events.get_task_log", {"task": task_id})
    assert (empty["events"], empty["total"], empty["returned"]) == ([], 0, 0)


# --- get_task_events --------------------------------------------------------------------------


def test_get_task_events_type_filter_and_order(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, 0), _scalar(task_id, "loss", "train", 0, 0.5),
                    _log(task_id, 1), _scalar(task_id, "acc", "val", 1, 0.25)])
    everything = api.call("events.get_task_events", {"task": task_id})
    assert [e["type"] for e in everything["events"]] == ["log", SCALAR, "log", SCALAR]
    assert everything["total"] == 4
    scalars = api.call("events.get_task_events", {"task": task_id, "event_type": SCALAR})
    assert scalars["events"] == [
        {"type": SCALAR, "task": task_id, "timestamp": BASE_MS + 1000, "iter": 0,
         "metric": "loss", "variant": "train", "value": 0.5, "worker": None},
        {"type": SCALAR, "task": task_id, "timestamp": BASE_MS + 1001, "iter": 1,
         "metric": "acc", "variant": "val", "value": 0.25, "worker": None},
    ]
    assert scalars["total"] == 2
    newest_first = api.call("events.get_task_events",
                            {"task": task_id, "event_type": SCALAR, "order": "desc"})
    assert [e["metric"] for e in newest_first["events"]] == ["acc", "loss"]
    logs = api.call("events.get_task_events", {"task": task_id, "event_type": "log"})
    assert _msgs(logs) == ["line 0", "line 1"]
    by_metric = api.call("events.get_task_events",
                         {"task": task_id, "metrics": [{"metric": "acc"}]})
    assert [(e["metric"], e["value"]) for e in by_metric["events"]] == [("acc", 0.25)]


def test_get_task_events_pages_with_scroll_id(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_scalar(task_id, "loss", "train", n, n / 10) for n in range(7)])
    for order, iters in (("asc", list(range(7))), ("desc", list(range(6, -1, -1)))):
        pages = _all_pages(api, "events.get_task_events",
                           {"task": task_id, "event_type": SCALAR, "batch_size": 3,
                            "order": order})
        assert [p["returned"] for p in pages] == [3, 3, 1, 0]
        assert [e["iter"] for p in pages for e in p["events"]] == iters


def test_other_event_types_come_back_whole(api: Session) -> None:
    task_id = _task(api)
    plot = {"type": "plot", "task": task_id, "iter": 3, "metric": "confusion",
            "variant": "val", "plot_str": '{"data": []}', "timestamp": BASE_MS}
    assert api.add_events([plot])["added"] == 1
    [event] = api.call("events.get_task_events", {"task": task_id, "event_type": "plot"})["events"]
    assert event == plot


# --- scalar views and the task's last metrics -------------------------------------------------


def _report_training(api: Session, task_id: str) -> None:
    api.add_events([_scalar(task_id, "loss", "train", it, v)
                    for it, v in enumerate([0.9, 0.6, 0.4])]
                   + [_scalar(task_id, "loss", "val", it, v) for it, v in ((0, 1.0), (2, 0.5))]
                   + [_scalar(task_id, "accuracy", "top1", 2, 0.75), _log(task_id, 0)])


def test_scalar_metrics_iter_histogram(api: Session) -> None:
    task_id = _task(api)
    _report_training(api, task_id)
    data = api.call("events.scalar_metrics_iter_histogram", {"task": task_id})
    assert data == {
        "loss": {
            "train": {"name": "train", "x": [0, 1, 2], "y": [0.9, 0.6, 0.4]},
            "val": {"name": "val", "x": [0, 2], "y": [1.0, 0.5]},
        },
        "accuracy": {"top1": {"name": "top1", "x": [2], "y": [0.75]}},
    }
    by_time = api.call("events.scalar_metrics_iter_histogram",
                       {"task": task_id, "key": "timestamp"})
    assert by_time["loss"]["train"]["x"] == [BASE_MS + 1000, BASE_MS + 1001, BASE_MS + 1002]
    err = _error(api, "events.scalar_metrics_iter_histogram", {"task": task_id, "key": "nope"})
    assert (err.code, err.subcode) == (400, 12)
    assert api.call("events.scalar_metrics_iter_histogram", {"task": _task(api)}) == {}


def test_get_scalar_metrics_and_variants(api: Session) -> None:
    task_id = _task(api)
    _report_training(api, task_id)
    data = api.call("events.get_scalar_metrics_and_variants", {"task": task_id})
    assert data == {"metrics": {
        "loss": {"train": {"name": "train"}, "val": {"name": "val"}},
        "accuracy": {"top1": {"name": "top1"}},
    }}
    assert api.call("events.get_scalar_metrics_and_variants", {"task": _task(api)}) == {
        "metrics": {}}
    err = _error(api, "events.get_scalar_metrics_and_variants", {"task": "0" * 32})
    assert (err.code, err.subcode) == (400, 101)


def test_scalars_update_last_iteration_and_last_metrics(api: Session) -> None:
    task_id = _task(api)
    _report_training(api, task_id)
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["last_iteration"] == 2
    last = task["last_metrics"]
    assert last[_md5("loss")][_md5("train")] == {
        "metric": "loss", "variant": "train", "value": 0.4, "min_value": 0.4, "max_value": 0.9}
    assert last[_md5("loss")][_md5("val")] == {
        "metric": "loss", "variant": "val", "value": 0.5, "min_value": 0.5, "max_value": 1.0}
    assert last[_md5("accuracy")] == {_md5("top1"): {
        "metric": "accuracy", "variant": "top1", "value": 0.75, "min_value": 0.75,
        "max_value": 0.75}}
    # a later batch moves value and the extremes on from what is stored
    api.add_events([_scalar(task_id, "loss", "train", 5, 0.1),
                    _scalar(task_id, "loss", "train", 7, 1.5)])
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["last_iteration"] == 7
    assert task["last_metrics"][_md5("loss")][_md5("train")] == {
        "metric": "loss", "variant": "train", "value": 1.5, "min_value": 0.1, "max_value": 1.5}
    assert task["last_metrics"][_md5("loss")][_md5("val")]["value"] == 0.5


def test_logs_do_not_touch_last_metrics(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, n) for n in range(3)])
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert not task.get("last_metrics")
    assert not task.get("last_iteration")


# --- delete_for_task --------------------------------------------------------------------------


def test_delete_for_task_removes_only_that_tasks_events(api: Session) -> None:
    doomed, kept = _task(api), _task(api)
    for task_id in (doomed, kept):
        _report_training(api, task_id)
    assert api.call("events.delete_for_task", {"task": doomed}) == {"deleted": 7}
    assert api.call("events.get_task_events", {"task": doomed})["total"] == 0
    assert api.call("events.get_task_log", {"task": doomed})["events"] == []
    assert api.call("events.scalar_metrics_iter_histogram", {"task": doomed}) == {}
    assert api.call("events.get_task_events", {"task": kept})["total"] == 7
    assert api.call("events.delete_for_task", {"task": doomed}) == {"deleted": 0}
    err = _error(api, "events.delete_for_task", {"task": "0" * 32})
    assert (err.code, err.subcode) == (400, 101)


def test_events_of_a_deleted_task_are_gone(api: Session) -> None:
    task_id = _task(api)
    api.add_events([_log(task_id, 0)])
    data = api.call("tasks.delete", {"task": task_id})
    assert data["events"] == {"deleted": 1}
    assert api.add_events([_log(task_id, 1)])["errors"] == 1


def test_timestamp_defaults_to_now(api: Session) -> None:
    task_id = _task(api)
    before = int(time.time() * 1000)
    api.add_events([{"type": "log", "task": task_id, "msg": "no time"}])
    [event] = api.call("events.get_task_log", {"task": task_id})["events"]
    assert before - 1000 <= event["timestamp"] <= int(time.time() * 1000) + 1000
    assert event["level"] == "info"


# --- numbered events (bosun agents): each (stream, seq) stored once --------------------------


def _numbered(task_id: str, stream: str, seq: int) -> dict[str, Any]:
    return {**_log(task_id, seq), "stream": stream, "seq": seq}


def test_a_numbered_batch_sent_again_is_stored_once(api: Session) -> None:
    task_id = _task(api)
    stream = uuid.uuid4().hex
    first = api.add_events([_numbered(task_id, stream, n) for n in range(1, 6)])
    again = api.add_events([_numbered(task_id, stream, n) for n in range(1, 6)])
    overlapping = api.add_events([_numbered(task_id, stream, n) for n in range(4, 9)])
    other_stream = api.add_events([_numbered(task_id, uuid.uuid4().hex, 1)])
    plain = api.add_events([_log(task_id, 1), _log(task_id, 1)])  # unnumbered: stored as sent
    assert [first["added"], again["added"], overlapping["added"], other_stream["added"],
            plain["added"]] == [5, 0, 3, 1, 2]
    data = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                            "batch_size": 100})
    assert _msgs(data) == [f"line {n}" for n in range(1, 9)] + ["line 1"] * 3


def test_copies_of_one_numbered_batch_sent_at_once_are_stored_once(api: Session,
                                                                  server: ServerProcess) -> None:
    task_id = _task(api)
    stream = uuid.uuid4().hex
    batch = [_numbered(task_id, stream, n) for n in range(1, 201)]
    barrier = threading.Barrier(6)
    added: list[int] = []

    def send() -> None:
        with Session(server.url, "key", "secret") as session:
            barrier.wait()
            added.append(session.add_events(batch)["added"])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(added) == [0, 0, 0, 0, 0, 200]
    data = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                            "batch_size": 1000})
    assert data["total"] == 200


def test_a_malformed_stream_or_seq_is_refused_per_event(api: Session) -> None:
    task_id = _task(api)
    result = api.add_events([
        {**_log(task_id, 1), "stream": "s", "seq": "1"},
        {**_log(task_id, 2), "stream": "x" * 65, "seq": 1},
        {**_log(task_id, 3), "stream": "s", "seq": -1},
        {**_log(task_id, 4), "seq": 4},
        _numbered(task_id, "s", 5),
    ])
    assert result["added"] == 1 and result["errors"] == 4, result
    assert any("'seq'" in message for message in result["errors_info"])
    assert any("'stream'" in message for message in result["errors_info"])


def test_deleting_a_tasks_log_forgets_its_streams(api: Session) -> None:
    task_id = _task(api)
    stream = uuid.uuid4().hex
    api.add_events([_numbered(task_id, stream, 1)])
    assert api.call("events.delete_for_task", {"task": task_id})["deleted"] == 1
    assert api.add_events([_numbered(task_id, stream, 1)])["added"] == 1
