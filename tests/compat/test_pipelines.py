"""ClearML pipelines on bosun: a `PipelineController` of two function steps and the same with
`@PipelineDecorator`, the controller run locally, each step a task run remotely by bosun's
agent; the second step consumes the first one's return value, which travels through bosun's
files server as an artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.conftest import marker, run_sdk, unique
from tests.support.agent_env import DaemonProcess
from tests.support.clearml_clients import CLEARML_VERSION, ClearmlClients
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow
PIPELINE_TIMEOUT_S = 420

CONTROLLER = """\
from clearml import PipelineController, Task

def make(n):
    return list(range(n))

def total(values):
    return sum(values)

pipe = PipelineController(name="pipe", project={project!r}, version="1.0.0")
pipe.set_default_execution_queue({queue!r})
pipe.add_function_step(name="make", function=make, function_kwargs={{"n": 5}},
                       function_return=["values"], cache_executed_step=False,
                       packages=[{package!r}])
pipe.add_function_step(name="total", function=total,
                       function_kwargs={{"values": "${{make.values}}"}},
                       function_return=["result"], parents=["make"], cache_executed_step=False,
                       packages=[{package!r}])
pipe.start_locally(run_pipeline_steps_locally=False)
for name, node in pipe.get_pipeline_dag().items():
    print("STEP " + name + " " + str(node.executed) + " "
          + (Task.get_task(task_id=node.executed).get_status() if node.executed else "-"))
step = pipe.get_pipeline_dag()["total"].executed
# A list travels as an artifact (through the files server), a number as a "return" parameter.
made = Task.get_task(task_id=pipe.get_pipeline_dag()["make"].executed)
print("VALUES=" + str(made.artifacts["values"].get()))
print("VALUES_URI=" + made.artifacts["values"].url)
print("RESULT=" + str(Task.get_task(task_id=step).get_parameter("return/result")))
"""

DECORATED = """\
from clearml import PipelineDecorator

@PipelineDecorator.component(return_values=["values"], execution_queue={queue!r},
                             packages=[{package!r}], cache=False)
def make(n):
    return list(range(n))

@PipelineDecorator.component(return_values=["result"], execution_queue={queue!r},
                             packages=[{package!r}], cache=False)
def total(values):
    return sum(values)

@PipelineDecorator.pipeline(name="deco", project={project!r}, version="1.0.0",
                            pipeline_execution_queue=None)
def run(n=4):
    print("RESULT=" + str(total(make(n))))

run()
"""


def _run_pipeline(clients: ClearmlClients, server: ServerProcess, work: Path, name: str,
                  code: str) -> str:
    return run_sdk(clients, server, work, name, code, timeout=PIPELINE_TIMEOUT_S)


def test_pipeline_controller_steps_run_on_bosun_agents(
        clients: ClearmlClients, compat_server: ServerProcess,
        bosun_agent: tuple[DaemonProcess, str], tmp_path: Path, log_mark: int) -> None:
    daemon, queue = bosun_agent
    code = CONTROLLER.format(project=unique("pipelines"), queue=queue,
                             package=f"clearml=={CLEARML_VERSION}")
    out = _run_pipeline(clients, compat_server, tmp_path, "controller.py", code)
    assert marker(out, "RESULT") == "10", daemon.log()
    assert marker(out, "VALUES") == "[0, 1, 2, 3, 4]"
    assert marker(out, "VALUES_URI").startswith(f"{compat_server.url}/files/")
    assert out.count(" completed\n") == 2, out  # both steps ran and completed


def test_pipeline_decorator_steps_run_on_bosun_agents(
        clients: ClearmlClients, compat_server: ServerProcess,
        bosun_agent: tuple[DaemonProcess, str], tmp_path: Path, log_mark: int) -> None:
    daemon, queue = bosun_agent
    code = DECORATED.format(project=unique("decorated"), queue=queue,
                            package=f"clearml=={CLEARML_VERSION}")
    out = _run_pipeline(clients, compat_server, tmp_path, "decorated.py", code)
    assert marker(out, "RESULT") == "6", daemon.log()
