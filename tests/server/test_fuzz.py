"""Deterministic fuzzing of every server endpoint, on each backend.

Every endpoint (but `auth.login`, which takes HTTP Basic credentials) gets a body that would
succeed — real ids of a task, queue, model, project and worker made for it, a fresh name —
with ONE field replaced by a hostile value (wrong types, huge and negative numbers, an integer
past 64 bits, NUL characters, 5000-character strings, nested containers). The fields fuzzed
are the ones every service reads plus those its own endpoints read; `events.add` and
`events.add_batch` are fuzzed field by field of one log event and of one scalar event.

Two things are checked:

* the server never answers 5xx (nor drops the connection): a bad value is the client's error
  and must be answered 4xx; and, so that the matrix stays sharp, each endpoint answers 200 to
  some of its fuzzed calls (those whose field it ignores), so its base body really gets past
  validation and "not found" to the endpoint's work;
* whatever the fuzzed calls stored (tasks created or edited with odd fields, odd events,
  queues, models, projects, workers) breaks no later read: every task is read back by id, its
  hyperparameters, configuration and events read (and the tasks this module made cloned and
  reset), and every model, queue, project and worker listed and read, with no 5xx answer.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bosun.server.routing import endpoint_table
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

HOSTILE: tuple[Any, ...] = (
    5, -1, 2**70, 1.5, True, None, "", "x" * 5000, "a\u0000b", [1, 2], ["a", 5], {"a": 1},
    {"a": {"b": [1]}}, "\u0000",
)
SKIPPED = frozenset({"auth.login"})  # takes HTTP Basic credentials, not a JSON body
CLIENT_TIMEOUT_S = 60.0
SHOWN = 30  # failures spelled out in an assertion message

# Fields fuzzed on every endpoint, then those that one service's endpoints read or store.
COMMON_FIELDS = (
    "task", "tasks", "id", "ids", "name", "queue", "project", "model", "worker", "tags",
    "system_tags", "status_reason", "status_message", "force", "only_fields", "order_by",
    "page_size",
)
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "tasks": (
        "status", "type", "names", "new_status", "queue_name", "parent", "models",
        "hyperparams", "configuration", "execution", "script", "artifacts", "requirements",
        "execution_overrides", "last_metrics", "container", "output", "new_task_name",
        "new_task_parent", "replace_hyperparams", "replace_configuration", "publish_model",
        "iteration", "search_hidden", "last_iteration",
    ),
    "events": (
        "scroll_id", "batch_size", "iters", "metrics", "event_type", "from_timestamp",
        "navigate_earlier", "order", "key", "metric", "variants",
    ),
    "models": (
        "uri", "metadata", "ready", "framework", "design", "labels", "parent",
        "override_model_id", "keys", "replace_metadata", "publish_task", "names",
    ),
    "queues": ("queues", "queue_name", "wait_sec", "get_task_info", "metadata"),
    "workers": (
        "queues", "timeout", "machine_stats", "runtime_properties", "last_seen",
        "worker_pattern", "restarted",
    ),
    "projects": ("description", "default_output_destination", "names", "parent",
                 "search_hidden"),
    "auth": ("access_key", "expiration_sec"),
}
# Each auth call hashes a new secret (~35 ms): those endpoints get only their own fields.
OWN_FIELDS_ONLY = frozenset({"auth"})
# Event ingestion is fuzzed through the fields of the event itself.
EVENT_INGEST = ("events.add", "events.add_batch")
EVENT_FIELDS = (
    "task", "type", "msg", "level", "timestamp", "iter", "metric", "variant", "value",
    "worker", "stream", "seq", "url",
)
# The status the endpoint's task is put in first, so that a call can get past the status check.
PREP: dict[str, tuple[str, ...]] = {
    "queued": ("tasks.dequeue", "queues.get_next_task", "queues.remove_task",
               "queues.move_task_to_front", "queues.move_task_to_back"),
    "in_progress": ("tasks.stopped", "tasks.completed", "tasks.failed", "tasks.ping",
                    "tasks.stop", "workers.status_report"),
    "stopped": ("tasks.close", "tasks.publish"),
}
PREP_OF = {endpoint: state for state, endpoints in PREP.items() for endpoint in endpoints}


@dataclass(frozen=True)
class Failure:
    endpoint: str
    field: str
    value: Any
    status: int  # 0: no answer at all (the connection dropped or timed out)
    message: str

    def line(self) -> str:
        return (f"{self.endpoint} {self.field}={repr(self.value)[:40]} -> {self.status} "
                f"{self.message[:100]!r}")


def _report(failures: list[Failure], what: str) -> str:
    """A count per endpoint, then up to SHOWN failures taken round-robin over the endpoints."""
    by_endpoint: dict[str, list[Failure]] = {}
    for failure in failures:
        by_endpoint.setdefault(failure.endpoint, []).append(failure)
    counts = Counter({endpoint: len(items) for endpoint, items in by_endpoint.items()})
    interleaved = [f for row in itertools.zip_longest(*by_endpoint.values()) for f in row if f]
    lines = [f.line() for f in interleaved[:SHOWN]]
    if len(failures) > SHOWN:
        lines.append(f"... and {len(failures) - SHOWN} more")
    summary = ", ".join(f"{endpoint} ({n})" for endpoint, n in counts.most_common())
    return (f"{len(failures)} {what} answered 5xx or not at all, on {len(by_endpoint)} "
            f"endpoint(s): {summary}\n" + "\n".join(lines))


@dataclass
class World:
    """The objects one endpoint's fuzzed calls refer to."""

    task: str = ""
    queue: str = ""
    model: str = ""
    project: str = ""
    worker: str = ""
    access_key: str = ""


@dataclass
class Fuzzer:
    client: httpx.Client
    prefix: str = field(default_factory=lambda: f"fz-{uuid.uuid4().hex[:10]}")
    failures: list[Failure] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)
    origins: dict[str, str] = field(default_factory=dict)  # task id -> the call that made it
    accepted: set[str] = field(default_factory=set)  # endpoints that answered a fuzzed call 200
    requests: int = 0
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, what: str = "") -> str:
        return f"{self.prefix}{what}-{next(self.numbers)}"

    def post(self, endpoint: str, body: Any) -> tuple[int, str, Any]:
        """(HTTP status, result_msg, data); status 0 when no answer came."""
        self.requests += 1
        try:
            response = self.client.post(f"/{endpoint}", content=json.dumps(body),
                                        headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}", None
        try:
            envelope = response.json()
            return response.status_code, str(envelope["meta"]["result_msg"]), envelope["data"]
        except (ValueError, KeyError, TypeError):
            return response.status_code, response.text, None

    def send(self, endpoint: str, body: Any, field_name: str, value: Any,
             label: str = "") -> tuple[int, Any]:
        """Post, recording a 5xx (or no answer) as a failure; (status, data)."""
        status, message, data = self.post(endpoint, body)
        if status >= 500 or status == 0:
            self.failures.append(Failure(label or endpoint, field_name, value, status, message))
        if status == 200 and isinstance(data, dict) and endpoint in ("tasks.create",
                                                                     "tasks.clone"):
            self.task_ids.add(str(data.get("id")))
            self.origins[str(data.get("id"))] = f"{endpoint} {field_name}={repr(value)[:30]}"
        return status, data

    def ok(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """A setup call with a valid body: it must succeed."""
        status, message, data = self.post(endpoint, body)
        assert status == 200, f"setup call {endpoint} {body} answered {status}: {message}"
        return data if isinstance(data, dict) else {}

    # --- the objects the fuzzed calls refer to ---------------------------------------------

    def new_task(self, world: World, endpoint: str) -> None:
        world.task = self.ok("tasks.create", {"name": self.unique("-task")})["id"]
        self.task_ids.add(world.task)
        self.origins[world.task] = f"the base task of {endpoint}"
        state = PREP_OF.get(endpoint)
        if state == "queued":
            self.ok("tasks.enqueue", {"task": world.task, "queue": world.queue})
        elif state in ("in_progress", "stopped"):
            self.ok("tasks.started", {"task": world.task})
            if state == "stopped":
                self.ok("tasks.stopped", {"task": world.task})

    def new_queue(self, world: World) -> None:
        world.queue = self.ok("queues.create", {"name": self.unique("-queue")})["id"]

    def new_model(self, world: World) -> None:
        world.model = self.ok("models.create", {
            "name": self.unique("-model"), "uri": "file:///fz/model.bin", "task": world.task,
            "project": world.project})["id"]

    def new_worker(self, world: World) -> None:
        world.worker = self.unique("-worker")
        self.ok("workers.register", {"worker": world.worker, "queues": [world.queue]})

    def new_credentials(self, world: World) -> None:
        world.access_key = self.ok("auth.create_credentials", {})["credentials"]["access_key"]

    def world(self, endpoint: str) -> World:
        world = World(project=self.ok("projects.create", {"name": self.unique("-project")})["id"])
        self.new_queue(world)
        self.new_task(world, endpoint)
        self.new_model(world)
        if endpoint.startswith("workers."):
            self.new_worker(world)
        else:
            world.worker = self.unique("-worker")
        if endpoint.startswith("auth."):
            self.new_credentials(world)
        return world

    def restore(self, endpoint: str, world: World, data: Any) -> None:
        """After a call that succeeded: undo what would stop the next call from getting as far
        (a deleted object, a task taken off its queue)."""
        if endpoint == "tasks.delete":
            self.new_task(world, endpoint)
        elif endpoint == "tasks.enqueue":
            self.send("tasks.dequeue", {"task": world.task}, "(restore)", None)
        elif endpoint == "tasks.dequeue":
            self.send("tasks.enqueue", {"task": world.task, "queue": world.queue}, "(restore)",
                      None)
        elif endpoint == "queues.remove_task" or (
                endpoint == "queues.get_next_task" and isinstance(data, dict) and data):
            self.send("queues.add_task", {"task": world.task, "queue": world.queue},
                      "(restore)", None)
        elif endpoint == "queues.delete":
            self.new_queue(world)
        elif endpoint == "models.delete":
            self.new_model(world)
        elif endpoint == "workers.unregister":
            self.new_worker(world)
        elif endpoint == "auth.revoke_credentials":
            self.new_credentials(world)


# --- the bodies -----------------------------------------------------------------------------


def _extra(endpoint: str, world: World) -> dict[str, Any]:
    """What one endpoint needs besides the common ids to get past its validation."""
    if endpoint.startswith("models."):
        return {"uri": "file:///fz/model.bin", "ids": [world.model],
                "keys": ["k"], "metadata": [{"key": "k", "type": "str", "value": "v"}]}
    return {
        "auth.revoke_credentials": {"access_key": world.access_key},
        "events.debug_images": {"metrics": [{"task": world.task, "metric": "m"}]},
        "queues.get_next_task": {"wait_sec": 0},
        "tasks.add_or_update_artifacts": {"artifacts": [
            {"key": "a", "type": "custom", "mode": "output", "uri": "file:///fz/a"}]},
        "tasks.delete_artifacts": {"artifacts": [{"key": "a", "mode": "output"}]},
        "tasks.add_or_update_model": {"type": "output"},
        "tasks.delete_models": {"models": [{"name": "n", "type": "output"}]},
        "tasks.set_requirements": {"requirements": {"pip": "numpy"}},
        "tasks.edit_hyper_params": {"hyperparams": [
            {"section": "Args", "name": "lr", "value": "0.1"}]},
        "tasks.delete_hyper_params": {"hyperparams": [{"section": "Args", "name": "lr"}]},
        "tasks.edit_configuration": {"configuration": [{"name": "cfg", "value": "a: 1"}]},
        "tasks.delete_configuration": {"configuration": ["cfg"]},
        "workers.set_runtime_properties": {"runtime_properties": [{"key": "k", "value": "v"}]},
    }.get(endpoint, {})


# tasks.get_all refuses a key it does not filter by: its base body keeps only its own keys.
OWN_KEYS_ONLY = {"tasks.get_all": ("project", "name")}


def _base(fz: Fuzzer, endpoint: str, world: World) -> dict[str, Any]:
    body = {"task": world.task, "tasks": [world.task], "queue": world.queue,
            "model": world.model, "project": world.project, "worker": world.worker,
            "name": fz.unique(), **_extra(endpoint, world)}
    own = OWN_KEYS_ONLY.get(endpoint)
    return body if own is None else {k: v for k, v in body.items() if k in own}


def _event(kind: str, world: World) -> dict[str, Any]:
    if kind == "log":
        return {"task": world.task, "type": "log", "msg": "m"}
    return {"task": world.task, "type": "training_stats_scalar", "metric": "loss",
            "variant": "train", "value": 0.5, "iter": 1}


def _fields(endpoint: str) -> tuple[str, ...]:
    if endpoint in EVENT_INGEST:
        return EVENT_FIELDS
    service = endpoint.partition(".")[0]
    common = () if service in OWN_FIELDS_ONLY else COMMON_FIELDS
    return common + SERVICE_FIELDS.get(service, ())


def _fuzz_endpoint(fz: Fuzzer, endpoint: str) -> list[str]:
    """Sends the endpoint's matrix; returns the labels its failures are recorded under."""
    kinds: tuple[str, ...] = ("log", "scalar") if endpoint in EVENT_INGEST else ("",)
    labels = []
    for kind in kinds:
        world = fz.world(endpoint)
        label = f"{endpoint}[{kind} event]" if kind else endpoint
        labels.append(label)
        for field_name in _fields(endpoint):
            for value in HOSTILE:
                body: Any
                if kind:
                    body = {**_event(kind, world), field_name: value}
                    if endpoint == "events.add_batch":
                        body = [body]
                else:
                    body = {**_base(fz, endpoint, world), field_name: value}
                status, data = fz.send(endpoint, body, field_name, value, label)
                if status == 200:
                    if endpoint != "events.add_batch" or data.get("added"):
                        fz.accepted.add(label)  # add_batch answers 200 for refused events too
                    fz.restore(endpoint, world, data)
    return labels


# --- the run, once per backend ------------------------------------------------------------


@dataclass
class FuzzRun:
    failures: list[Failure]
    task_ids: set[str]
    origins: dict[str, str]
    labels: set[str]  # the endpoints fuzzed (event ingestion once per kind of event)
    accepted: set[str]
    requests: int
    seconds: float


@pytest.fixture(scope="module")
def fuzz_run(server: ServerProcess) -> FuzzRun:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
        fz = Fuzzer(client)
        labels: set[str] = set()
        for endpoint in sorted(endpoint_table()):
            if endpoint not in SKIPPED:
                labels |= set(_fuzz_endpoint(fz, endpoint))
    return FuzzRun(fz.failures, fz.task_ids, fz.origins, labels, fz.accepted, fz.requests,
                   time.monotonic() - started)


def test_no_hostile_field_gets_a_5xx(fuzz_run: FuzzRun) -> None:
    assert len(fuzz_run.labels) == len(endpoint_table()) - len(SKIPPED) + len(EVENT_INGEST)
    assert fuzz_run.requests > 30_000  # the whole matrix ran
    if fuzz_run.failures:
        pytest.fail(_report(fuzz_run.failures, "fuzzed calls"), pytrace=False)
    # Each base body is valid: with a field the endpoint ignores, the call succeeds, so the
    # hostile values reach the endpoint's real work instead of an early "not found".
    assert fuzz_run.labels <= fuzz_run.accepted, \
        f"never accepted a fuzzed call: {sorted(fuzz_run.labels - fuzz_run.accepted)}"


def test_what_the_fuzzing_stored_reads_back(fuzz_run: FuzzRun, server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
        fz = Fuzzer(client)

        def read(endpoint: str, body: dict[str, Any], task_id: str = "") -> Any:
            """A failure names the task read and the fuzzed call that made it."""
            made_by = fuzz_run.origins.get(task_id, "another test")
            where = f"[task made by {made_by}]" if task_id else "(read back)"
            status, data = fz.send(endpoint, body, where, task_id or body)
            return data if status == 200 and isinstance(data, dict) else {}

        listed = read("tasks.get_all", {"only_fields": ["id"], "search_hidden": True})
        read("tasks.get_all", {"search_hidden": True})
        # Every task there is (the fuzzed ones among them); the ids the fuzzing made if the
        # listing itself failed (its failure is recorded).
        task_ids = {str(t.get("id")) for t in listed.get("tasks", [])} or fuzz_run.task_ids
        assert len(task_ids & fuzz_run.task_ids) > 500  # the fuzzing stored what it meant to
        for task_id in sorted(task_ids):
            read("tasks.get_by_id", {"task": task_id}, task_id)
            read("tasks.get_hyper_params", {"tasks": [task_id]}, task_id)
            read("tasks.get_configurations", {"tasks": [task_id]}, task_id)
            read("events.get_task_log", {"task": task_id}, task_id)
            read("events.get_task_events", {"task": task_id}, task_id)
            if task_id in fuzz_run.task_ids:  # other tests' tasks on this server are only read
                read("tasks.clone", {"task": task_id}, task_id)
                read("tasks.reset", {"task": task_id, "force": True}, task_id)
        for service, key, id_field in (("models", "models", "model"),
                                       ("queues", "queues", "queue"),
                                       ("projects", "projects", "project")):
            for item in read(f"{service}.get_all", {}).get(key, []):
                read(f"{service}.get_by_id", {id_field: item.get("id")})
        for worker in read("workers.get_all", {}).get("workers", []):
            read("workers.get_runtime_properties", {"worker": worker.get("id")})
    if fz.failures:
        pytest.fail(_report(fz.failures, "read-back calls"), pytrace=False)
