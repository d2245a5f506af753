"""tasks.*: experiments as documents, their status machine, parameters and queueing."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.api.ids import new_id
from bosun.server import task_status as st
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required, str_list
from bosun.server.store.schema import projects
from bosun.server.store.schema import tasks as tasks_table
from bosun.server.tags import join_tags
from bosun.server.timestamps import now_iso

# Fields the server owns: a client can not set them through create or edit.
SERVER_FIELDS = frozenset({
    "id", "status", "status_reason", "status_message", "status_changed", "created", "started",
    "completed", "published", "last_update", "last_change", "user", "company", "last_worker",
    "last_worker_report", "enqueue_status", "method", "task", "force", "handout",
    "revoked_worker", "lost_worker_requeues",
})
# Embedded documents that `tasks.edit` merges one level deep; others are replaced whole.
MERGED_FIELDS = frozenset({"script", "execution", "container", "output", "models"})
DEVELOPMENT_TAG = "development"

# --- storage ---------------------------------------------------------------------------------


# Hot-path statements are built once: building a statement costs more than running it.
_LOAD = sa.select(tasks_table.c.doc).where(tasks_table.c.id == sa.bindparam("task_id"))
_LOAD_FOR_UPDATE = _LOAD.with_for_update()
_INSERT = tasks_table.insert()
_SAVE = tasks_table.update().where(tasks_table.c.id == sa.bindparam("task_id"))


def find(conn: Connection, task_id: str, for_update: bool = False) -> dict[str, Any] | None:
    row = conn.execute(_LOAD_FOR_UPDATE if for_update else _LOAD, {"task_id": task_id}).first()
    return None if row is None else row.doc  # a fresh object: the JSON is decoded per query


def load(conn: Connection, task_id: str, for_update: bool = False) -> dict[str, Any]:
    doc = find(conn, task_id, for_update)
    if doc is None:
        raise errors.InvalidTaskId(f"invalid task id: {task_id}", id=task_id)
    return doc


def _columns(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": doc.get("name") or "", "project": doc.get("project"), "status": doc["status"],
        "type": doc.get("type"), "user_id": doc.get("user"),
        "tags": join_tags(doc.get("tags")), "system_tags": join_tags(doc.get("system_tags")),
        "created": doc["created"], "started": doc.get("started"),
        "completed": doc.get("completed"), "last_update": doc["last_update"], "doc": doc,
    }


def insert(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(_INSERT, {"id": doc["id"], **_columns(doc)})


def save(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(_SAVE, {"task_id": doc["id"], **_columns(doc)})


def _check_project(conn: Connection, project_id: Any) -> None:
    if project_id is None:
        return
    if not isinstance(project_id, str):
        raise errors.ValidationError("field 'project' must be a string")
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)


def _client_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
    script = fields.get("script")
    if isinstance(script, dict):
        _no_credentials(script.get("repository"))
    return fields


# A lone user name in a URL is a token when it looks like one (GitHub, GitLab, Bitbucket).
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "glpat-", "x-token-auth")


def _no_credentials(repository: Any) -> None:
    """A repository URL with a password or token in it would be stored and shown to anyone
    who can read the task: refused, naming the place the agents take credentials from."""
    if not isinstance(repository, str) or not repository.lower().startswith(("http://",
                                                                             "https://")):
        return
    userinfo = urlsplit(repository).netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    if password or user.startswith(_TOKEN_PREFIXES) or len(user) >= 32:
        raise errors.ValidationError(
            "field 'script.repository' holds credentials (user:token@...), which would be "
            "stored and shown with the task: give the URL without them, and the credentials to "
            "the agents (agent.git_user / agent.git_pass in clearml.conf)",
            field="script.repository")


def change_status(
    conn: Connection, doc: dict[str, Any], new_status: str, *, force: bool = False,
    allow_same: bool = True, reason: str = "", message: str = "", **extra: Any,
) -> dict[str, Any]:
    """Move a task along the status machine, save it, and return the changed fields."""
    st.check_transition(doc["status"], new_status, force=force, allow_same=allow_same)
    now = now_iso()
    fields: dict[str, Any] = {
        "status": new_status, "status_reason": reason, "status_message": message,
        "status_changed": now, "last_update": now, **extra,
    }
    if new_status == st.QUEUED:
        doc["system_tags"] = [t for t in doc.get("system_tags", []) if t != DEVELOPMENT_TAG]
    doc.update(fields)
    save(conn, doc)
    return fields


# --- create / read ---------------------------------------------------------------------------


def new_doc(call: Call, name: str) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": new_id(), "name": name, "type": "training", "comment": "", "project": None,
        "parent": None, "user": call.identity.user, "company": call.identity.company,
        "status": st.CREATED, "status_reason": "", "status_message": "", "status_changed": now,
        "created": now, "last_update": now, "last_change": now, "started": None,
        "completed": None, "tags": [], "system_tags": [], "script": {}, "execution": {},
        "hyperparams": {}, "configuration": {}, "container": {}, "runtime": {},
        "models": {"input": [], "output": []}, "output": {}, "last_iteration": 0,
        "last_metrics": {}, "last_worker": None,
    }


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A task as the clients read it: fields they iterate over are never missing (the SDK's
    Task.delete and PipelineDecorator do `for a in execution["artifacts"]`), and the output
    destination is where ClearML keeps it."""
    out = {"last_metrics": {}, **doc}
    execution = out.get("execution")
    execution = dict(execution) if isinstance(execution, dict) else {}
    if not isinstance(execution.get("artifacts"), list):
        execution["artifacts"] = []
    out["execution"] = execution
    return normalize_output(out)


def normalize_output(doc: dict[str, Any]) -> dict[str, Any]:
    """ClearML keeps the output destination in `output.destination` (what the SDK's
    `task.output_uri` reads back). Older bosun versions stored a client's `output_dest` as
    it came: such a document is read (and saved again) the new way."""
    if "output_dest" not in doc:
        return doc
    legacy = doc.pop("output_dest")
    output = doc.get("output")
    output = dict(output) if isinstance(output, dict) else {}
    if isinstance(legacy, str) and output.get("destination") is None:
        output["destination"] = legacy
    doc["output"] = output
    return doc


def _output_dest(fields: dict[str, Any], doc: dict[str, Any]) -> None:
    """tasks.create / tasks.edit `output_dest` (the SDK's way to set the output URI) goes to
    `output.destination`, beside the rest of `output`; it wins over `output.destination`
    sent in the same call, as in ClearML."""
    if "output_dest" not in fields:
        return
    destination = fields.pop("output_dest")
    if destination is None:
        return
    output = fields.get("output")
    if not isinstance(output, dict):
        output = doc.get("output")
    output = dict(output) if isinstance(output, dict) else {}
    output["destination"] = destination
    fields["output"] = output


def create(call: Call) -> dict[str, Any]:
    name = required(call.body, "name", str)
    doc = new_doc(call, name)
    fields = _client_fields(call.body)
    _output_dest(fields, doc)
    doc.update(fields)
    with call.store.write() as conn:
        _check_project(conn, doc.get("project"))
        insert(conn, doc)
    return {"id": doc["id"]}


def get_by_id(call: Call) -> dict[str, Any]:
    task_id = required(call.body, "task", str)
    with call.store.read() as conn:
        return {"task": public(load(conn, task_id))}


# --- edit / clone / delete -------------------------------------------------------------------


def _editable(doc: dict[str, Any], force: bool) -> None:
    if doc["status"] != st.CREATED and not force:
        raise errors.InvalidTaskStatus(
            f"task is {doc['status']}: only a created task can be edited (use force=true)",
            status=doc["status"],
        )


def edit(call: Call) -> dict[str, Any]:
    task_id = required(call.body, "task", str)
    changes = _client_fields(call.body)
    with call.store.write() as conn:
        doc = normalize_output(load(conn, task_id, for_update=True))
        _editable(doc, flag(call.body, "force"))
        _output_dest(changes, doc)
        if "project" in changes:
            _check_project(conn, changes["project"])
        for key, value in changes.items():
            if key in MERGED_FIELDS and isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        now = now_iso()
        doc["last_update"] = doc["last_change"] = now
        save(conn, doc)
    return {"updated": 1, "fields": changes}


def clone(call: Call) -> dict[str, Any]:
    body = call.body
    source_id = required(body, "task", str)
    with call.store.write() as conn:
        source = load(conn, source_id)
        doc = new_doc(call, optional(body, "new_task_name", str, "") or f"{source['name']} (clone)")
        for key in ("type", "comment", "project", "tags", "system_tags", "script", "hyperparams",
                    "configuration", "container", "models"):
            if key in source:
                doc[key] = copy.deepcopy(source[key])
        destination = (normalize_output(dict(source)).get("output") or {}).get("destination")
        if destination is not None:  # as ClearML: a clone writes where its source did
            doc["output"] = {"destination": destination}
        execution = without_outputs(copy.deepcopy(source.get("execution") or {}))
        execution.pop("queue", None)
        execution.update(optional(body, "execution_overrides", dict, {}))
        doc["execution"] = execution
        # As ClearML: a clone keeps its input models and artifacts, not what the source made.
        doc["models"] = {**(doc.get("models") or {}), "output": []}
        doc["parent"] = optional(body, "new_task_parent", str, "") or source_id
        doc["system_tags"] = [t for t in doc["system_tags"] if t != DEVELOPMENT_TAG]
        overrides = {"comment": "new_task_comment", "tags": "new_task_tags",
                     "system_tags": "new_task_system_tags", "project": "new_task_project",
                     "hyperparams": "new_task_hyperparams",
                     "configuration": "new_task_configuration",
                     "container": "new_task_container"}
        for key, param in overrides.items():
            if body.get(param) is not None:
                doc[key] = body[param]
        _check_project(conn, doc.get("project"))
        insert(conn, doc)
    return {"id": doc["id"]}


def without_outputs(execution: dict[str, Any]) -> dict[str, Any]:
    """The execution section less the output artifacts of a run (input ones stay)."""
    if "artifacts" in execution:
        execution["artifacts"] = [a for a in execution["artifacts"] or []
                                  if isinstance(a, dict) and a.get("mode") == "input"]
    return execution


def set_requirements(call: Call) -> dict[str, Any]:
    task_id = required(call.body, "task", str)
    requirements = required(call.body, "requirements", dict)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        doc["script"] = {**(doc.get("script") or {}), "requirements": requirements}
        doc["last_update"] = doc["last_change"] = now_iso()
        save(conn, doc)
    return {"updated": 1, "fields": {"script.requirements": requirements}}


# --- artifacts and models -------------------------------------------------------------------


def _touch(conn: Connection, doc: dict[str, Any]) -> None:
    doc["last_update"] = doc["last_change"] = now_iso()
    save(conn, doc)


def _artifact_id(item: dict[str, Any]) -> tuple[str, str]:
    return str(item.get("key")), str(item.get("mode") or "output")


def add_or_update_artifacts(call: Call) -> dict[str, Any]:
    """Artifacts live in `execution.artifacts`, one per (key, mode); the SDK sends them after
    uploading the file itself (bosun keeps the record, not the file)."""
    body = call.body
    task_id = required(body, "task", str)
    items = required(body, "artifacts", list)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise errors.ValidationError("each artifact needs a string 'key'")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        execution = dict(doc.get("execution") or {})
        artifacts = {_artifact_id(a): a for a in execution.get("artifacts") or []
                     if isinstance(a, dict)}
        for item in items:
            artifacts[_artifact_id(item)] = {**item, "mode": item.get("mode") or "output"}
        execution["artifacts"] = list(artifacts.values())
        doc["execution"] = execution
        _touch(conn, doc)
    return {"updated": 1}


def delete_artifacts(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    wanted = {_artifact_id(a) for a in required(body, "artifacts", list) if isinstance(a, dict)}
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        execution = dict(doc.get("execution") or {})
        before = execution.get("artifacts") or []
        execution["artifacts"] = [a for a in before if _artifact_id(a) not in wanted]
        doc["execution"] = execution
        _touch(conn, doc)
    return {"deleted": len(before) - len(execution["artifacts"])}


def set_model(doc: dict[str, Any], kind: str, name: str, model_id: str) -> None:
    """Point the task's input or output model called `name` at `model_id`."""
    task_models = dict(doc.get("models") or {})
    entries = [m for m in task_models.get(kind) or [] if m.get("name") != name]
    task_models[kind] = [*entries, {"name": name, "model": model_id}]
    doc["models"] = task_models


def _model_kind(value: str) -> str:
    if value not in ("input", "output"):
        raise errors.ValidationError("field 'type' must be 'input' or 'output'")
    return value


def add_or_update_model(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    name = required(body, "name", str)
    model_id = required(body, "model", str)
    kind = _model_kind(required(body, "type", str))
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        set_model(doc, kind, name, model_id)
        iteration = optional(body, "iteration", int, 0)
        if iteration:
            doc["last_iteration"] = max(doc.get("last_iteration") or 0, iteration)
        _touch(conn, doc)
    return {"updated": 1}


def delete_models(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    wanted = {(m.get("name"), _model_kind(m.get("type", ""))) for m in
              required(body, "models", list) if isinstance(m, dict)}
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        task_models = dict(doc.get("models") or {})
        for kind in ("input", "output"):
            task_models[kind] = [m for m in task_models.get(kind) or []
                                 if (m.get("name"), kind) not in wanted]
        doc["models"] = task_models
        _touch(conn, doc)
    return {"updated": 1}


# --- hyperparameters and configuration ------------------------------------------------------


def _task_ids(body: dict[str, Any]) -> list[str]:
    ids = str_list(body, "tasks") or str_list(body, "task")
    if not ids:
        raise errors.MissingRequiredFields("missing required field 'tasks'", fields=["tasks"])
    return ids


def get_hyper_params(call: Call) -> dict[str, Any]:
    params = []
    with call.store.read() as conn:
        for task_id in _task_ids(call.body):
            doc = load(conn, task_id)
            flat = [
                {"section": section, "name": name, **value}
                for section, names in (doc.get("hyperparams") or {}).items()
                for name, value in names.items()
            ]
            params.append({"task": task_id, "hyperparams": flat})
    return {"params": params}


def _param_items(body: dict[str, Any], field: str) -> list[dict[str, Any]]:
    items = required(body, field, list)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.ValidationError(f"each item of '{field}' must be an object with a 'name'")
    return items


def _params_editable(doc: dict[str, Any], force: bool) -> None:
    # The SDK writes parameters while its task runs, so in_progress is allowed too.
    if doc["status"] not in (st.CREATED, st.IN_PROGRESS) and not force:
        raise errors.InvalidTaskStatus(
            f"task is {doc['status']}: parameters can only change while created or in_progress"
            " (use force=true)", status=doc["status"])


def edit_hyper_params(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    items = _param_items(body, "hyperparams")
    replace = optional(body, "replace_hyperparams", str, "none")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        _params_editable(doc, flag(body, "force"))
        params: dict[str, dict[str, Any]] = {} if replace == "all" else doc.get("hyperparams") or {}
        if replace == "section":
            for item in items:
                params[item.get("section", "General")] = {}
        for item in items:
            section = item.get("section") or "General"
            params.setdefault(section, {})[item["name"]] = {**item, "section": section}
        doc["hyperparams"] = params
        doc["last_update"] = doc["last_change"] = now_iso()
        save(conn, doc)
    return {"updated": 1}


def delete_hyper_params(call: Call) -> dict[str, Any]:
    """Each item names a section, and optionally a parameter in it; a section alone goes
    whole."""
    body = call.body
    task_id = required(body, "task", str)
    items = required(body, "hyperparams", list)
    deleted = 0
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        _params_editable(doc, flag(body, "force"))
        params: dict[str, dict[str, Any]] = doc.get("hyperparams") or {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("section"), str):
                raise errors.ValidationError("each item of 'hyperparams' needs a 'section'")
            section, name = item["section"], item.get("name")
            if name:
                deleted += params.get(section, {}).pop(name, None) is not None
                if section in params and not params[section]:
                    del params[section]
            elif section in params:
                deleted += len(params.pop(section))
        doc["hyperparams"] = params
        _touch(conn, doc)
    return {"deleted": deleted}


def get_configurations(call: Call) -> dict[str, Any]:
    names = str_list(call.body, "names")
    result = []
    with call.store.read() as conn:
        for task_id in _task_ids(call.body):
            config = load(conn, task_id).get("configuration") or {}
            items = [{"name": n, **v} for n, v in config.items() if not names or n in names]
            result.append({"task": task_id, "configuration": items})
    return {"configurations": result}


def edit_configuration(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    items = _param_items(body, "configuration")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        _params_editable(doc, flag(body, "force"))
        config = {} if flag(body, "replace_configuration") else doc.get("configuration") or {}
        for item in items:
            config[item["name"]] = dict(item)
        doc["configuration"] = config
        doc["last_update"] = doc["last_change"] = now_iso()
        save(conn, doc)
    return {"updated": 1}


def delete_configuration(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    names = str_list(body, "configuration") or []
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        _params_editable(doc, flag(body, "force"))
        config = doc.get("configuration") or {}
        deleted = sum(config.pop(name, None) is not None for name in names)
        doc["configuration"] = config
        _touch(conn, doc)
    return {"deleted": deleted}


ACTIONS = {
    "create": create, "get_by_id": get_by_id, "edit": edit,
    "clone": clone, "set_requirements": set_requirements,
    "get_hyper_params": get_hyper_params, "edit_hyper_params": edit_hyper_params,
    "get_configurations": get_configurations, "edit_configuration": edit_configuration,
    "delete_hyper_params": delete_hyper_params, "delete_configuration": delete_configuration,
    "add_or_update_artifacts": add_or_update_artifacts,
    "delete_artifacts": delete_artifacts, "add_or_update_model": add_or_update_model,
    "delete_models": delete_models,
}
