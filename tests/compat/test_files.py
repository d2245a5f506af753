"""The real `clearml` SDK's default uploads against bosun's files server (`/files`): artifacts,
models and debug images stored there and fetched back byte for byte by another process, a
Dataset made by one process and read by another, and Task.delete() taking the files with it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bosun.client import Session
from tests.compat.conftest import marker, run_sdk, unique
from tests.support.clearml_clients import ClearmlClients
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

PRODUCE = """\
import os
from clearml import OutputModel, Task
# output_uri=True: models go to the default files server too (artifacts always do).
task = Task.init(project_name={project!r}, task_name="files", output_uri=True)
os.makedirs("folder/sub", exist_ok=True)
open("folder/a.txt", "w").write("alpha")
open("folder/sub/b.bin", "wb").write(bytes(range(256)) * 40)
open("blob.bin", "wb").write(os.urandom(3 << 20))
task.upload_artifact("params", artifact_object={{"lr": 0.1, "layers": [1, 2]}}, wait_on_upload=True)
task.upload_artifact("blob", artifact_object="blob.bin", wait_on_upload=True)
task.upload_artifact("folder", artifact_object="folder", wait_on_upload=True)
open("weights.bin", "wb").write(os.urandom(1 << 20))
model = OutputModel(task=task, framework="PyTorch", name="files-model")
model.update_weights(weights_filename="weights.bin", auto_delete_file=False)
from PIL import Image
Image.new("RGB", (8, 8), (255, 0, 0)).save("red.png")
task.get_logger().report_image("samples", "red", iteration=1, local_path="red.png")
task.flush(wait_for_uploads=True)
print("TASK_ID=" + task.id)
print("MODEL_URL=" + model.url)
task.close()
"""

FETCH = """\
import hashlib, os
from clearml import Task
task = Task.get_task(task_id={task_id!r})
print("PARAMS=" + repr(task.artifacts["params"].get()))
blob = task.artifacts["blob"].get_local_copy()
print("BLOB_SHA=" + hashlib.sha256(open(blob, "rb").read()).hexdigest())
folder = task.artifacts["folder"].get_local_copy()
print("FOLDER=" + repr(sorted(os.path.relpath(os.path.join(d, f), folder)
                               for d, _, fs in os.walk(folder) for f in fs)))
print("B_SIZE=" + str(os.path.getsize(os.path.join(folder, "sub", "b.bin"))))
from clearml import StorageManager
weights = StorageManager.get_local_copy({model_url!r})
print("WEIGHTS_SHA=" + hashlib.sha256(open(weights, "rb").read()).hexdigest())
samples = task.get_debug_samples("samples", "red")
print("SAMPLES=" + str(len(samples)))
from clearml import StorageManager
print("IMAGE_BYTES=" + str(os.path.getsize(StorageManager.get_local_copy(samples[0]["url"]))))
"""

DELETE = """\
from clearml import Task
task = Task.get_task(task_id={task_id!r})
print("DELETED=" + str(bool(task.delete(delete_artifacts_and_models=True, raise_on_error=True))))
"""

DATASET_MAKE = """\
import os
from clearml import Dataset
os.makedirs("data/images", exist_ok=True)
for n in range(5):
    open(f"data/images/{{n}}.bin", "wb").write(os.urandom(1000 + n))
open("data/labels.csv", "w").write("id,label\\n1,cat\\n")
ds = Dataset.create(dataset_project={project!r}, dataset_name="pets")
ds.add_files("data")
ds.upload()
ds.finalize()
print("DATASET_ID=" + ds.id)
"""

DATASET_READ = """\
import hashlib, os
from clearml import Dataset
ds = Dataset.get(dataset_id={dataset_id!r})
root = ds.get_local_copy()
for d, _, fs in sorted(os.walk(root)):
    for f in sorted(fs):
        path = os.path.join(d, f)
        print("FILE " + os.path.relpath(path, root) + " "
              + hashlib.sha256(open(path, "rb").read()).hexdigest())
print("FILES=" + repr(sorted(ds.list_files())))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stored(files_dir: Path) -> list[Path]:
    return [p for p in files_dir.rglob("*") if p.is_file() and ".incoming" not in p.parts]


def test_artifacts_models_and_debug_images_round_trip_and_go_with_the_task(
        clients: ClearmlClients, compat_server: ServerProcess, api: Session, tmp_path: Path,
        log_mark: int) -> None:
    files_dir = Path(compat_server.db).parent / "files"
    project = unique("files")
    out = run_sdk(clients, compat_server, tmp_path, "produce.py", PRODUCE.format(project=project))
    task_id = marker(out, "TASK_ID")
    assert marker(out, "MODEL_URL").startswith(f"{compat_server.url}/files/")
    stored = [p for p in _stored(files_dir) if task_id in str(p)]
    assert len(stored) >= 4, stored  # params, blob, folder (zip), the image (+ the model)

    fetch_dir = tmp_path / "other"
    fetch_dir.mkdir()
    fetched = run_sdk(clients, compat_server, fetch_dir, "fetch.py", FETCH.format(task_id=task_id,
                                                      model_url=marker(out, "MODEL_URL")))
    assert marker(fetched, "PARAMS") == "{'layers': [1, 2], 'lr': 0.1}"  # stored as JSON
    assert marker(fetched, "BLOB_SHA") == _sha(tmp_path / "blob.bin")
    assert marker(fetched, "FOLDER") == "['a.txt', 'sub/b.bin']"
    assert marker(fetched, "B_SIZE") == str(256 * 40)
    assert marker(fetched, "WEIGHTS_SHA") == _sha(tmp_path / "weights.bin")
    assert marker(fetched, "SAMPLES") == "1"
    assert marker(fetched, "IMAGE_BYTES") == str(os.path.getsize(tmp_path / "red.png"))

    deleted = run_sdk(clients, compat_server, fetch_dir, "delete.py",
                      DELETE.format(task_id=task_id))
    assert marker(deleted, "DELETED") == "True"
    assert api.call("tasks.get_all", {"id": [task_id]})["tasks"] == []
    left = [p for p in _stored(files_dir) if task_id in str(p)]
    assert left == [], f"files of the deleted task are still stored: {left}"


def test_a_dataset_made_by_one_process_is_read_back_by_another(
        clients: ClearmlClients, compat_server: ServerProcess, tmp_path: Path,
        log_mark: int) -> None:
    maker = tmp_path / "maker"
    maker.mkdir()
    out = run_sdk(clients, compat_server, maker, "make.py",
                  DATASET_MAKE.format(project=unique("datasets")))
    dataset_id = marker(out, "DATASET_ID")
    reader = tmp_path / "reader"
    reader.mkdir()
    read = run_sdk(clients, compat_server, reader, "read.py",
                   DATASET_READ.format(dataset_id=dataset_id))
    source = maker / "data"
    expected = sorted(f"FILE {p.relative_to(source)} {_sha(p)}"
                      for p in source.rglob("*") if p.is_file())
    got = sorted(line for line in read.splitlines() if line.startswith("FILE "))
    assert got == expected
