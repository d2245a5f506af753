"""The real `clearml` SDK (from PyPI) against a real bosun server: as a producer of tasks
(flow 1), inside a training script (flow 2), and across the wider surface a training script
touches: models, artifacts, configuration, single values, plots (flow 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bosun.client import Session
from tests.compat.conftest import hyperparams, marker, run_sdk, task_log, unique
from tests.support.agent_env import make_repo
from tests.support.clearml_clients import ClearmlClients
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

PRODUCER = """\
import json
from clearml import Task
task = Task.create(project_name={project!r}, task_name="producer", repo={repo!r},
                   script="train.py", working_directory=".", packages=["six==1.16.0"],
                   add_task_init_call=False)
Task.enqueue(task, queue_name={queue!r})
again = Task.get_task(task_id=task.id)
print("TASK_ID=" + task.id)
print("STATUS=" + again.get_status())
print("NAME=" + again.name)
"""

TRAINING = """\
from clearml import Task
task = Task.init(project_name={project!r}, task_name="training")
params = task.connect({{"lr": 0.1, "epochs": 3}})
print("hello from the training script", params["lr"])
for i in range(3):
    task.get_logger().report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
print("TASK_ID=" + task.id)
task.close()
"""

SURFACE = """\
from clearml import Model, OutputModel, Task
# bosun has no file server: uploads go to a storage destination the user names.
task = Task.init(project_name={project!r}, task_name="surface", output_uri={store!r})
task.connect_configuration({{"layers": 2}}, name="model-config")
task.set_user_properties(owner="bosun")
log = task.get_logger()
log.report_scalar("loss", "train", value=0.5, iteration=1)
log.report_single_value("accuracy", 0.9)
log.report_table("table", "t", iteration=0, table_plot=[["a", "b"], [1, 2]])
log.report_histogram("hist", "h", values=[1, 2, 3], iteration=0)
task.add_tags(["compat"])
open("weights.bin", "wb").write(b"weights")
model = OutputModel(task=task, framework="PyTorch", name="compat-model")
model.update_weights(weights_filename="weights.bin", auto_delete_file=False)
model.set_metadata("epochs", "3")
task.upload_artifact("numbers", artifact_object={{"a": 1}}, wait_on_upload=True)
task.flush(wait_for_uploads=True)
print("CONFIG=" + task.get_configuration_object("model-config").replace("\\n", " "))
print("PROPS=" + str(task.get_user_properties(value_only=True)))
print("SINGLE=" + str(task.get_reported_single_values()))
print("PLOTS=" + str(len(task.get_reported_plots())))
print("LAST=" + str(task.get_last_scalar_metrics()["loss"]["train"]["last"]))
print("MODELS=" + ",".join(m.id for m in Model.query_models(project_name={project!r})))
print("TASK_MODELS=" + ",".join(m.id for m in task.models["output"]))
print("ARTIFACTS=" + ",".join(Task.get_task(task_id=task.id).artifacts))
print("TASK_ID=" + task.id)
task.mark_completed()
"""


def test_producer_creates_and_enqueues(clients: ClearmlClients, compat_server: ServerProcess,
                                       api: Session, tmp_path: Path, log_mark: int) -> None:
    """Flow 1: Task.create + Task.enqueue, read back with Task.get_task."""
    repo, sha = make_repo(tmp_path, {"train.py": "print('hi')\n"})
    project, queue = unique("producer"), unique("queue")
    queue_id = api.call("queues.create", {"name": queue})["id"]
    out = run_sdk(clients, compat_server, tmp_path, "producer.py",
                  PRODUCER.format(project=project, repo=str(repo), queue=queue))
    task_id = marker(out, "TASK_ID")
    assert marker(out, "STATUS") == "queued"
    assert marker(out, "NAME") == "producer"
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "queued" and task["execution"]["queue"] == queue_id
    script = task["script"]
    assert script["entry_point"] == "train.py" and script["version_num"] == sha
    assert "six==1.16.0" in script["requirements"]["pip"]
    entries = api.call("queues.get_by_id", {"queue": queue_id})["queue"]["entries"]
    assert [e["task"] for e in entries] == [task_id]
    projects = api.call("projects.get_all", {"name": f"^{project}$"})["projects"]
    assert [p["id"] for p in projects] == [task["project"]]


def test_training_script_reports_to_bosun(clients: ClearmlClients, compat_server: ServerProcess,
                                          api: Session, tmp_path: Path, log_mark: int) -> None:
    """Flow 2: Task.init in a script run by hand; its console, scalars and parameters."""
    project = unique("training")
    out = run_sdk(clients, compat_server, tmp_path, "train.py", TRAINING.format(project=project))
    task_id = marker(out, "TASK_ID")
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed"
    assert task["script"]["entry_point"] == "train.py"
    assert "hello from the training script 0.1" in task_log(api, task_id)
    series = api.call("events.scalar_metrics_iter_histogram", {"task": task_id})
    assert series["loss"]["train"]["x"] == [0, 1, 2]
    assert series["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert hyperparams(api, task_id) == {"General/lr": "0.1", "General/epochs": "3"}
    in_project = api.call("tasks.get_all", {"project": [task["project"]]})["tasks"]
    assert [t["id"] for t in in_project] == [task_id]


def test_wider_sdk_surface(clients: ClearmlClients, compat_server: ServerProcess, api: Session,
                           tmp_path: Path, log_mark: int) -> None:
    """Flow 5: models, configuration objects, user properties, single values, plots and
    artifacts go through without an error the SDK does not expect."""
    project = unique("surface")
    store = tmp_path / "store"
    store.mkdir()
    out = run_sdk(clients, compat_server, tmp_path, "surface.py",
                  SURFACE.format(project=project, store=str(store)))
    task_id = marker(out, "TASK_ID")
    assert marker(out, "CONFIG") == "layers = 2"
    assert marker(out, "PROPS") == "{'owner': 'bosun'}"
    assert marker(out, "SINGLE") == "{'accuracy': 0.9}"
    assert marker(out, "PLOTS") == "2"
    assert marker(out, "LAST") == "0.5"
    model_id = marker(out, "MODELS")
    assert marker(out, "TASK_MODELS") == model_id
    assert marker(out, "ARTIFACTS") == "numbers"
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed" and "compat" in task["tags"]
    model = api.call("models.get_by_id", {"model": model_id})["model"]
    assert model["task"] == task_id and model["framework"] == "PyTorch"
    assert model["metadata"]["epochs"]["value"] == "3"
    assert model["uri"].startswith(f"file://{store}/")
    assert Path(model["uri"].removeprefix("file://")).read_bytes() == b"weights"
    [artifact] = task["execution"]["artifacts"]
    assert artifact["key"] == "numbers" and artifact["uri"].startswith(f"file://{store}/")
