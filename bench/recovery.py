"""Recovery from a dead agent: `kill -9` a bosun agent daemon while its task runs, and time how
long until the task runs again on another agent. Two ways an agent is lost:

1. the machine is gone: nothing restarts; the server notices the silence after
   `--worker-timeout` and requeues the task to the front of its queue, where another agent
   (another machine: its own state dir) is waiting;
2. the agent process died and comes back (systemd, a supervisor): the new daemon, with the
   same worker id, tells the server at start, and the task is requeued at once.

The peer column is what ClearML Server does (documented, not measured here: there is no ClearML
Server on this machine, and clearml-agent against a bosun server would measure bosun's server):
it marks a task whose worker went silent `stopped` after 2 hours and never requeues it.

Run: `.venv/bin/python bench/recovery.py [--rounds N] [--worker-timeout S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bosun.client import Session  # noqa: E402
from tests.support.agent_env import DaemonProcess, wait_for, write_config  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

TASK = """\
import os, time
with open(os.path.join({marks!r}, os.environ["CLEARML_TASK_ID"]), "a") as out:
    out.write(f"{{time.time()}}\\n")
print("running", flush=True)
time.sleep(120)
"""


def log(message: str) -> None:
    print(f"[recovery] {message}", file=sys.stderr, flush=True)


def starts(marks: Path, task_id: str) -> list[float]:
    path = marks / task_id
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def daemon(config: Path, work: Path, queue: str, state: Path, machine: str) -> DaemonProcess:
    proc = DaemonProcess(config, work, "--queue", queue, "--create-queue")
    proc.env["BOSUN_AGENT_STATE_DIR"] = str(state)
    proc.env["CLEARML_WORKER_NAME"] = machine  # worker ids differ between machines
    return proc.start()


def one_round(server: ServerProcess, config: Path, work: Path, restart: bool,
              number: int) -> dict[str, float]:
    marks = work / f"marks-{number}-{restart}"
    marks.mkdir()
    queue = f"recovery-{number}-{'restart' if restart else 'lost'}"
    first_state, other_state = work / f"state-a-{number}", work / f"state-b-{number}"
    victim = daemon(config, work, queue, first_state, "machine-a")
    others: list[DaemonProcess] = []
    try:
        with Session(server.url, "k", "s") as api:
            wait_for(lambda: api.call("queues.get_all", {"name": f"^{queue}$"})["queues"], 60,
                     "the queue", interval=0.02)
            queue_id = api.call("queues.get_all", {"name": f"^{queue}$"})["queues"][0]["id"]
            task_id = api.call("tasks.create", {"name": "victim", "script": {
                "diff": TASK.format(marks=str(marks)), "entry_point": "task.py",
                "binary": "python3"}})["id"]
            api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
            wait_for(lambda: starts(marks, task_id), 120, "the task to start", interval=0.02)
            if not restart:  # another machine waits on the queue
                others.append(daemon(config, work, queue, other_state, "machine-b"))
                time.sleep(2.0)
            assert victim.proc is not None
            killed = time.time()
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            if restart:
                others.append(daemon(config, work, queue, first_state, "machine-a"))
            again = wait_for(lambda: len(s := starts(marks, task_id)) >= 2 and s[1], 600,
                             "the task to run again", interval=0.02)
            reason = api.call("tasks.get_by_id", {"task": task_id})["task"]["status_reason"]
            api.call("tasks.stop", {"task": task_id})
        log(f"round {number} ({'restart' if restart else 'machine lost'}): running again "
            f"{again - killed:.2f} s after the kill ({reason})")
        return {"seconds": again - killed}
    finally:
        for proc in [victim, *others]:
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker-timeout", type=float, default=10.0,
                        help="the server's --worker-timeout for this run (default 10 s)")
    parser.add_argument("--json", type=Path, help="write the samples as JSON here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bosun-bench-recovery-"))
    subprocess.run(["git", "--version"], check=True, capture_output=True)
    results: dict[str, list[float]] = {"lost": [], "restart": []}
    with ServerProcess(str(work / "server.db"), extra_args=[
            "--worker-timeout", str(args.worker_timeout)]) as server:
        config = write_config(work / "clearml.conf", server.url, work)
        for number in range(args.rounds):
            for restart in (False, True):
                sample = one_round(server, config, work, restart, number)
                results["restart" if restart else "lost"].append(sample["seconds"])
    timeout = args.worker_timeout

    def cell(values: list[float]) -> str:
        return (f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"
                if values else "n/a")

    lost_ok = bool(results["lost"]) and statistics.median(results["lost"]) <= timeout + 5
    print("| metric | bosun | ClearML Server (documented) | target | verdict |")
    print("|---|---|---|---|---|")
    print(f"| agent killed, machine gone -> task running again on another agent "
          f"(--worker-timeout {timeout:g} s) | {cell(results['lost'])} | never (marked "
          f"`stopped` after 2 h) | <= timeout + 5 s | {'met' if lost_ok else '**missed**'} |")
    print(f"| agent killed and restarted -> task running again | {cell(results['restart'])} "
          "| never | | |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "recovery", "worker_timeout": timeout,
                                         "cpus": os.cpu_count(), "samples": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
