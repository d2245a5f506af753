"""tasks.get_all as the clearml SDK queries it: `parent`, ClearML's time conditions, ordering by
a last metric (HPO's ranking), `_any_` / `_all_` and `search_text`, dotted `only_fields`, the
shapes the SDK iterates over, and the refusal of a filter bosun does not know; against a real
server on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def project(api: Session) -> str:
    return api.call("projects.create", {"name": _unique("q")})["id"]


def _task(api: Session, project: str, name: str, **fields: Any) -> str:
    return api.call("tasks.create", {"name": name, "project": project, **fields})["id"]


def _names(api: Session, project: str, **body: Any) -> list[str]:
    found = api.call("tasks.get_all", {"project": [project], **body})["tasks"]
    return [t["name"] for t in found]


def _error(api: Session, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        api.call("tasks.get_all", body)
    return err.value


def _stored(api: Session, task_id: str, field: str) -> str:
    return api.call("tasks.get_by_id", {"task": task_id})["task"][field]


# --- the shapes the SDK iterates over --------------------------------------------------------


def test_execution_artifacts_is_always_a_list(api: Session, project: str) -> None:
    """Task.delete and PipelineDecorator do `for a in execution["artifacts"]`."""
    bare = _task(api, project, "bare")
    assert api.call("tasks.get_by_id", {"task": bare})["task"]["execution"]["artifacts"] == []
    for only in (["execution"], ["execution.artifacts"], ["id", "execution.artifacts"]):
        [found] = api.call("tasks.get_all", {"id": [bare], "only_fields": only})["tasks"]
        assert found == {"id": bare, "execution": {"artifacts": []}}, only
    [whole] = api.call("tasks.get_all", {"id": [bare]})["tasks"]
    assert whole["execution"]["artifacts"] == []
    made = _task(api, project, "made")
    artifact = {"key": "numbers", "type": "dict", "mode": "output", "uri": "file:///a.json"}
    api.call("tasks.add_or_update_artifacts", {"task": made, "artifacts": [artifact]})
    [found] = api.call("tasks.get_all", {"id": [made],
                                         "only_fields": ["execution.artifacts.key"]})["tasks"]
    assert found == {"id": made, "execution": {"artifacts": [{"key": "numbers"}]}}


def test_dotted_only_fields_keep_the_parent_object(api: Session, project: str) -> None:
    """ClearML answers `runtime: {}` for a task with a runtime but no runtime.version (the SDK's
    Dataset and PipelineController read `task.runtime.get("version")`)."""
    without = _task(api, project, "without", runtime={"other": "x"})
    with_version = _task(api, project, "with", runtime={"version": "1.2.0", "other": "y"})
    body = {"id": [without, with_version], "only_fields": ["id", "runtime.version"],
            "order_by": ["name"]}
    assert api.call("tasks.get_all", body)["tasks"] == [
        {"id": with_version, "runtime": {"version": "1.2.0"}},
        {"id": without, "runtime": {}},
    ]
    # a path through a missing or non-object value gives nothing; a shorter path wins
    [found] = api.call("tasks.get_all", {"id": [without], "only_fields": [
        "name.first", "container.image", "runtime", "runtime.other"]})["tasks"]
    assert found == {"id": without, "container": {}, "runtime": {"other": "x"}}


# --- parent ------------------------------------------------------------------------------------


def test_parent_filter_takes_an_id_or_a_list(api: Session, project: str) -> None:
    first, second = _task(api, project, "p1"), _task(api, project, "p2")
    _task(api, project, "c1", parent=first)
    _task(api, project, "c2", parent=second)
    _task(api, project, "orphan")
    assert _names(api, project, parent=first) == ["c1"]
    assert sorted(_names(api, project, parent=[first, second])) == ["c1", "c2"]
    assert _names(api, project, parent=[uuid.uuid4().hex]) == []


# --- times -------------------------------------------------------------------------------------


def _two_tasks_apart(api: Session, project: str) -> tuple[str, str, str, str]:
    early = _task(api, project, "early")
    time.sleep(0.02)
    late = _task(api, project, "late")
    return early, late, _stored(api, early, "last_update"), _stored(api, late, "last_update")


def test_last_update_with_clearml_operators(api: Session, project: str) -> None:
    _, _, t_early, t_late = _two_tasks_apart(api, project)
    assert _names(api, project, last_update=[f">{t_early}"]) == ["late"]
    assert sorted(_names(api, project, last_update=[f">={t_early}"])) == ["early", "late"]
    assert _names(api, project, last_update=[f"<{t_late}"]) == ["early"]
    assert _names(api, project, last_update=[f">={t_early}", f"<{t_late}"]) == ["early"]
    assert _names(api, project, last_update=f">{t_early}") == ["late"]  # one string
    assert _names(api, project, last_update=[t_early]) == ["early"]  # exactly that time
    assert sorted(_names(api, project, last_update=[t_early, t_late])) == ["early", "late"]
    assert _names(api, project, last_update=[None, t_early]) == ["early"]  # a range
    # times as other clients write them: microseconds, no offset (UTC), a space, a Z
    parsed = datetime.fromisoformat(t_early)
    assert _names(api, project, last_update=[f">{parsed.isoformat()}"]) == ["late"]
    naive = parsed.replace(tzinfo=None)
    assert _names(api, project, last_update=[f">{naive.isoformat(' ')}"]) == ["late"]
    assert _names(api, project, last_update=[f"<={naive.isoformat()}Z"]) == ["early"]
    finer = parsed.replace(microsecond=parsed.microsecond + 1)
    assert _names(api, project, last_update=[f">={finer.isoformat()}"]) == ["late"]
    assert _names(api, project, last_update=[f"<{finer.isoformat()}"]) == ["early"]
    assert _names(api, project, last_update=[f">{parsed.timestamp() - 3600}"]) != []  # epoch


def test_status_changed_created_and_started(api: Session, project: str) -> None:
    _, late, _, _ = _two_tasks_apart(api, project)
    api.call("tasks.started", {"task": late})
    changed = _stored(api, late, "status_changed")
    assert _names(api, project, status_changed=[f">={changed}"]) == ["late"]
    assert _names(api, project, created=[f"<{_stored(api, late, 'created')}"]) == ["early"]
    assert _names(api, project, started=[">2000-01-01"]) == ["late"]
    assert _names(api, project, last_change=[f"<{_stored(api, late, 'last_change')}"]) \
        == ["early"]


def test_a_time_that_is_not_one_is_refused_naming_the_field(api: Session) -> None:
    for value in (["yesterday"], [">not-a-date"], [5]):
        err = _error(api, {"status_changed": value})
        assert (err.code, err.subcode) == (400, 12) and "status_changed" in err.msg


def test_trigger_scheduler_sees_a_completed_task_once(api: Session, project: str) -> None:
    """clearml's TriggerScheduler against a 1.16.0 server: `last_update: ">{ref}"` with null
    name and tags, then `ref` moves to the newest last_update it got. Against a server that
    ignored the filter every poll returned the task again (it fired 3 times)."""
    task_id = _task(api, project, "watched")
    api.call("tasks.started", {"task": task_id})
    ref = datetime.fromisoformat(_stored(api, task_id, "last_update")).isoformat()
    api.call("tasks.completed", {"task": task_id})

    def poll(since: str) -> list[dict[str, Any]]:
        return api.call("tasks.get_all", {
            "name": None, "project": [project], "tags": None, "status": ["completed"],
            "last_update": f">{since}", "only_fields": ["id", "name", "last_update",
                                                        "last_change"]})["tasks"]

    first = poll(ref)
    assert [t["id"] for t in first] == [task_id]
    newest = max(datetime.fromisoformat(max(t["last_update"], t["last_change"]))
                 for t in first).isoformat()
    assert poll(newest) == [] and poll(newest) == []
    # the form it uses against servers >= 1.16.3: _or_ over last_update and last_change
    both = api.call("tasks.get_all", {"project": [project], "_or_": {
        "fields": ["last_update", "last_change"], "datetime": [f">{ref}"]}})["tasks"]
    assert [t["id"] for t in both] == [task_id]
    assert api.call("tasks.get_all", {"project": [project], "_or_": {
        "fields": ["last_update", "last_change"], "datetime": [f">{newest}"]}})["tasks"] == []


# --- last metrics: HPO's ranking ----------------------------------------------------------


def _report(api: Session, task_id: str, values: list[float]) -> None:
    api.add_events([{"type": "training_stats_scalar", "task": task_id, "iter": i,
                     "metric": "loss", "variant": "val", "value": v,
                     "timestamp": 1_700_000_000_000 + i} for i, v in enumerate(values)])


def test_order_by_a_last_metric_ranks_the_children(api: Session, project: str) -> None:
    """HyperParameterOptimizer.get_top_experiments: parent=<optimizer task>, page_size=top_k,
    order_by=["-last_metrics.<md5 title>.<md5 series>.max_value"] (or value / min_value)."""
    optimizer = _task(api, project, "optimizer")
    runs = {name: _task(api, project, name, parent=optimizer) for name in "abcd"}
    _report(api, runs["a"], [0.5, 0.2])  # last 0.2, min 0.2, max 0.5
    _report(api, runs["b"], [0.9, 0.4])  # last 0.4, min 0.4, max 0.9
    _report(api, runs["c"], [0.1, 0.3])  # last 0.3, min 0.1, max 0.3
    # "d" reported nothing: last when descending, first when ascending (as MongoDB sorts)
    key = f"last_metrics.{_md5('loss')}.{_md5('val')}"
    stored = api.call("tasks.get_by_id", {"task": runs["a"]})["task"]["last_metrics"]
    assert stored[_md5("loss")][_md5("val")]["max_value"] == 0.5  # keys: md5 of the names

    def ranked(order: str, **body: Any) -> list[str]:
        return _names(api, project, parent=optimizer, order_by=[order], **body)

    assert ranked(f"-{key}.max_value") == ["b", "a", "c", "d"]
    assert ranked(f"-{key}.value", page=0, page_size=2) == ["b", "c"]
    assert ranked(f"{key}.min_value") == ["d", "c", "a", "b"]
    assert ranked(f"{key}.value", page=1, page_size=2) == ["c", "b"]
    # TaskTrigger's threshold form: a [low, high] range on a last metric
    assert sorted(ranked("name", **{f"{key}.max_value": [0.45, None]})) == ["a", "b"]
    assert sorted(ranked("name", **{f"{key}.min_value": [None, "0.2"]})) == ["a", "c", "d"]
    assert ranked("name", last_iteration=[1, 1]) == ["a", "b", "c"]


# --- patterns and free text -------------------------------------------------------------------


def test_any_and_all_patterns_over_named_fields(api: Session, project: str) -> None:
    red = _task(api, project, "red-run", comment="first try")
    _task(api, project, "blue-run", comment="RED herring",
          script={"repository": "https://example.com/team/red.git"})
    _task(api, project, "green-run", comment="nothing")
    any_red = {"fields": ["name", "comment"], "pattern": "red"}
    assert sorted(_names(api, project, _any_=any_red)) == ["blue-run", "red-run"]
    all_red = {"fields": ["name", "script.repository"], "pattern": "red"}
    assert _names(api, project, _all_={"fields": ["name", "comment"], "pattern": "r"}) != []
    assert _names(api, project, _all_=all_red) == []
    assert _names(api, project, _any_={"fields": ["script.repository"],
                                       "pattern": "team/red"}) == ["blue-run"]
    assert _names(api, project, _any_={"fields": ["id"], "pattern": f"^{red}$"}) == ["red-run"]
    assert _names(api, project, comment="^first") == ["red-run"]
    err = _error(api, {"_any_": {"fields": ["name"], "pattern": "(unclosed"}})
    assert (err.code, err.subcode) == (400, 21)
    err = _error(api, {"_any_": {"fields": ["name"]}})
    assert err.subcode == 12 and "_any_" in err.msg


def test_search_text_finds_words_in_name_id_and_comment(api: Session, project: str) -> None:
    """The SDK's Dataset looks its users up with search_text=<hash> (ClearML: a text index
    over name, id, comment, models and script)."""
    one = _task(api, project, "alpha", comment="uses dsh0123abc as a parent")
    _task(api, project, "beta", comment="nothing to see")
    _task(api, project, "gamma", script={"entry_point": "Train_Model.py"})
    assert _names(api, project, search_text="dsh0123abc") == ["alpha"]
    assert sorted(_names(api, project, search_text="BETA train_model")) == ["beta", "gamma"]
    assert _names(api, project, search_text=one) == ["alpha"]
    assert _names(api, project, search_text="100%_") == []  # LIKE wildcards are literal


# --- the other list filters and paging --------------------------------------------------------


def test_dotted_list_filters(api: Session, project: str) -> None:
    queue = api.call("queues.create", {"name": _unique("fq")})["id"]
    queued = _task(api, project, "queued")
    api.call("tasks.enqueue", {"task": queued, "queue": queue})
    _task(api, project, "hashed", runtime={"_job_hash": "abc"})
    api.call("tasks.edit_hyper_params", {"task": _task(api, project, "tuned"), "hyperparams": [
        {"section": "Args", "name": "lr", "value": "0.1"}]})
    assert _names(api, project, **{"execution.queue": [queue]}) == ["queued"]
    assert _names(api, project, **{"runtime._job_hash": "abc"}) == ["hashed"]
    assert _names(api, project, **{"hyperparams.Args.lr.value": ["0.1", "0.2"]}) == ["tuned"]


def test_scroll_pages_through_with_size(api: Session, project: str) -> None:
    for i in range(5):
        _task(api, project, f"s{i}")
    body: dict[str, Any] = {"project": [project], "size": 2, "order_by": ["name"]}
    seen: list[str] = []
    for _ in range(4):
        data = api.call("tasks.get_all", body)
        seen += [t["name"] for t in data["tasks"]]
        body["scroll_id"] = data["scroll_id"]
    assert seen == ["s0", "s1", "s2", "s3", "s4"]
    again = api.call("tasks.get_all", {**body, "scroll_id": "2", "refresh_scroll": True})
    assert [t["name"] for t in again["tasks"]] == ["s0", "s1", "s2", "s3"]
    assert _error(api, {**body, "scroll_id": "nope"}).subcode == 1104


# --- what is refused, what is accepted -----------------------------------------------------


def test_an_unknown_filter_is_refused_naming_it(api: Session, project: str) -> None:
    for key, value in (("include_subprojects", True), ("status_message", "x"),
                       ("last_metrics.a.b", [0, 1]), ("filters", {"tags": {}}),
                       ("models.input.model", ["m"])):
        err = _error(api, {"project": [project], key: value})
        assert (err.code, err.subcode) == (400, 12), key
        assert f"'{key}'" in err.msg, err.msg


def test_what_the_clients_send_is_accepted(api: Session, project: str) -> None:
    _task(api, project, "sent")
    # the SDK's GetAllRequest (method, search_hidden), Task.get_tasks, the agent's polling
    # body, a null field, and two keys the SDK sends that ClearML Server ignores
    bodies = [
        {"id": [], "only_fields": ["status", "status_message", "id"], "method": "get"},
        {"project": [project], "name": None, "tags": None, "search_hidden": True,
         "only_fields": ["id", "name", "last_update", "system_tags"], "page": 0,
         "page_size": 500, "system_tags": ["-archived"], "order_by": ["-last_update"],
         "type": ["training"], "status": ["created"], "user": None},
        {"project": [project], "pipeline_project": ["p/.pipelines/x"]},
        {"project": [project], "task_types": ["data_processing"]},
    ]
    for body in bodies:
        api.call("tasks.get_all", body)
    assert _names(api, project, pipeline_project=["elsewhere"]) == ["sent"]
