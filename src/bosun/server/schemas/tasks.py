"""tasks.*: the task document fields a client may set, and each action's body."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictStr

from bosun.server.schemas.types import (
    Body,
    Flag,
    Id,
    Ids,
    Integer,
    Line,
    Listing,
    ManyTasks,
    Name,
    Number,
    Object,
    Objects,
    StatusChange,
    Strings,
    Tags,
    TaskRef,
    Text,
    Times,
)

Kind = Annotated[StrictStr, Field(max_length=64)]  # training, testing, ... (a short column)


class Script(Body):
    repository: Line | None = None
    branch: Line | None = None
    tag: Line | None = None
    version_num: Line | None = None
    entry_point: Line | None = None
    working_dir: Line | None = None
    binary: Line | None = None
    diff: Text | None = None
    requirements: Object | None = None


class Models(Body):
    input: Objects | None = None
    output: Objects | None = None


class Execution(Body):
    queue: Id | None = None
    parameters: Object | None = None
    artifacts: Objects | None = None
    docker_cmd: Line | None = None


class Output(Body):
    destination: Line | None = None
    model: Id | None = None
    result: Line | None = None
    error: Line | None = None


# section -> name -> {section, name, value, type, description}
Hyperparams = dict[str, dict[str, Object]]
# name -> {name, value, type, description}
Configuration = dict[str, Object]
# metric hash -> variant hash -> {metric, variant, value, min_value, max_value}
LastMetrics = dict[str, dict[str, Object]]


class TaskFields(Body):
    """What tasks.create and tasks.edit store on the task, typed so that every later reader
    (get_hyper_params, clone, reset, the agents) finds the shape it expects. A field whose
    default is None but whose type has no None may be left out, but not sent as null."""

    name: Name = None  # type: ignore[assignment]
    type: Kind = None  # type: ignore[assignment]
    comment: Text | None = None
    project: Id | None = None
    parent: Id | None = None
    tags: Tags = None  # type: ignore[assignment]
    system_tags: Tags = None  # type: ignore[assignment]
    script: Script = None  # type: ignore[assignment]
    execution: Execution = None  # type: ignore[assignment]
    hyperparams: Hyperparams = None  # type: ignore[assignment]
    configuration: Configuration = None  # type: ignore[assignment]
    container: dict[str, Text | None] = None  # type: ignore[assignment]
    runtime: Object = None  # type: ignore[assignment]
    models: Models = None  # type: ignore[assignment]
    output: Output = None  # type: ignore[assignment]
    output_dest: Line | None = None  # the SDK's way to set output.destination
    last_metrics: LastMetrics = None  # type: ignore[assignment]
    last_iteration: Integer = None  # type: ignore[assignment]
    status_reason: Line | None = None
    status_message: Line | None = None


class Edit(TaskFields):
    task: Id | None = None
    force: Flag | None = None


class Clone(TaskRef):
    new_task_name: Name | None = None
    new_task_comment: Text | None = None
    new_task_tags: Tags | None = None
    new_task_system_tags: Tags | None = None
    new_task_parent: Id | None = None
    new_task_project: Id | None = None
    new_task_hyperparams: Hyperparams | None = None
    new_task_configuration: Configuration | None = None
    new_task_container: dict[str, Text | None] | None = None
    execution_overrides: Object | None = None


class MultiField(Body):
    """`_any_` / `_all_`: a pattern searched in each field, or a time condition on each."""

    fields: Strings | None = None
    pattern: Line | None = None
    datetime: Times | None = None


# A numeric range [low, high] (ClearML takes numbers given as strings too).
Bounds = list[Number | Line | None]


class GetAll(Listing):
    """The typed filters; keys with dots (last_metrics.*, hyperparams.*, runtime.*) are checked
    by the handler, which also refuses any key it does not know."""

    status: Strings | None = None
    project: Ids | None = None
    type: Strings | None = None
    user: Strings | None = None
    parent: Ids | None = None
    comment: Line | None = None
    search_text: Line | None = None
    search_hidden: Flag | None = None
    status_changed: Times | None = None
    last_update: Times | None = None
    last_change: Times | None = None
    created: Times | None = None
    started: Times | None = None
    completed: Times | None = None
    published: Times | None = None
    last_iteration: Bounds | None = None
    any_: MultiField | None = Field(None, alias="_any_")
    all_: MultiField | None = Field(None, alias="_all_")
    or_: MultiField | None = Field(None, alias="_or_")
    and_: MultiField | None = Field(None, alias="_and_")
    execution_queue: Ids | None = Field(None, alias="execution.queue")
    scroll_id: Line | None = None
    refresh_scroll: Flag | None = None
    pipeline_project: Strings | None = None
    task_types: Strings | None = None


class Enqueue(StatusChange):
    queue: Id | None = None
    queue_name: Line | None = None


class Dequeue(StatusChange):
    new_status: Line | None = None


class Reset(StatusChange):
    clear_all: Flag | None = None


class Publish(StatusChange):
    publish_model: Flag | None = None


class Delete(StatusChange):
    delete_output_models: Flag | None = None
    return_file_urls: Flag | None = None
    move_to_trash: Flag | None = None
    delete_external_artifacts: Flag | None = None


class Requirements(TaskRef):
    requirements: Object | None = None


class Artifacts(TaskRef):
    artifacts: Objects | None = None


class ModelLink(TaskRef):
    name: Name | None = None
    model: Id | None = None
    type: Line | None = None
    iteration: Integer | None = None


class ModelLinks(TaskRef):
    models: Objects | None = None


class TaskIds(ManyTasks):
    task: Ids | None = None  # tasks.get_* take one task under this name too


class HyperParams(TaskRef):
    hyperparams: list[Object] | None = None
    replace_hyperparams: Line | None = None
    force: Flag | None = None


class DeleteHyperParams(TaskRef):
    hyperparams: list[Object] | None = None
    force: Flag | None = None


class GetConfigurations(TaskIds):
    names: Strings | None = None


class EditConfiguration(TaskRef):
    configuration: list[Object] | None = None
    replace_configuration: Flag | None = None
    force: Flag | None = None


class DeleteConfiguration(TaskRef):
    configuration: Strings | None = None
    force: Flag | None = None


SCHEMAS: dict[str, type[Body]] = {
    "tasks.create": TaskFields,
    "tasks.edit": Edit,
    "tasks.clone": Clone,
    "tasks.get_by_id": TaskRef,
    "tasks.get_all": GetAll,
    "tasks.enqueue": Enqueue,
    "tasks.dequeue": Dequeue,
    "tasks.reset": Reset,
    "tasks.stop": StatusChange,
    "tasks.started": StatusChange,
    "tasks.stopped": StatusChange,
    "tasks.completed": StatusChange,
    "tasks.failed": StatusChange,
    "tasks.close": StatusChange,
    "tasks.publish": Publish,
    "tasks.ping": TaskRef,
    "tasks.delete": Delete,
    "tasks.set_requirements": Requirements,
    "tasks.add_or_update_artifacts": Artifacts,
    "tasks.delete_artifacts": Artifacts,
    "tasks.add_or_update_model": ModelLink,
    "tasks.delete_models": ModelLinks,
    "tasks.get_hyper_params": TaskIds,
    "tasks.edit_hyper_params": HyperParams,
    "tasks.delete_hyper_params": DeleteHyperParams,
    "tasks.get_configurations": GetConfigurations,
    "tasks.edit_configuration": EditConfiguration,
    "tasks.delete_configuration": DeleteConfiguration,
}
