"""`bosun agent daemon|execute|list|config|init`, with clearml-agent's flags."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import getpass
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bosun.agent import worker_id as worker_ids
from bosun.agent.config import Config, default_config_path, masked
from bosun.agent.gpus import GpuSpecError, parse_queue_gpus, resolve_gpus, visible_devices_env
from bosun.agent.schedule import Schedule, ScheduleError, schedule_from
from bosun.api.errors import ApiError
from bosun.cli import agent_build_cmd, daemon_stop
from bosun.cli.agent_build_cmd import load_agent_config
from bosun.cli.connection import open_session
from bosun.cli.errors import UserError

log = logging.getLogger("bosun.agent")



def _seconds(text: str) -> float:
    """--timeout: a number of seconds, 0 or more (argparse turns the error into one line)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def add_parser(commands: Any) -> None:
    agent = commands.add_parser(
        "agent", help="run tasks from queues on this machine (clearml-agent compatible)",
        description="The bosun agent: pulls tasks from queues and reproduces them (code, "
        "environment, run), reading the same clearml.conf as clearml-agent.")
    agent.add_argument("--config-file", type=Path, default=None,
                       help="configuration file (default: $CLEARML_CONFIG_FILE or ~/clearml.conf)")
    sub = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)
    _add_daemon(sub)
    _add_execute(sub)
    agent_build_cmd.add_parsers(sub)  # build, container-task
    sub.add_parser("list", help="list the workers known to the server and what they run"
                   ).set_defaults(run=run_list)
    sub.add_parser("config", help="print the effective configuration (secrets masked)"
                   ).set_defaults(run=run_config)
    sub.add_parser("init", help="interactive setup wizard: writes ~/clearml.conf"
                   ).set_defaults(run=run_init)


def _add_daemon(sub: Any) -> None:
    daemon = sub.add_parser(
        "daemon", help="listen on queues and run their tasks",
        description="Listen on one or more queues (first = highest priority) and run each task "
        "pulled: fetch its code, build its environment (cached), run it, report the outcome.")
    daemon.add_argument("--queue", nargs="+", default=None, metavar="QUEUE",
                        help="queue names or ids, highest priority first (default: the default "
                        "queue); with --dynamic-gpus NAME=N or NAME=MIN-MAX GPUs per task")
    daemon.add_argument("--foreground", action="store_true",
                        help="also print the tasks' output to this console")
    daemon.add_argument("--detached", action="store_true",
                        help="run in the background; the log file path is printed")
    daemon.add_argument("--stop", nargs="*", default=None, metavar="WORKER_ID",
                        help="stop daemons running on this machine (all, or the given ids): "
                        "each gets SIGTERM, finishes its running task(s) and exits; waits for "
                        "that (see --timeout) and exits 0 only once they are all gone")
    daemon.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="with --stop: how long to wait for the daemons to exit (default "
                        f"{daemon_stop.STOP_TIMEOUT_SECONDS:.0f} s, for a running task to end); a "
                        "daemon still running then is named and the exit code is 1 (it stops later "
                        "all the same; --stop again waits more, without signalling it again)")
    daemon.add_argument("--abort", action="store_true",
                        help="with --stop: send SIGTERM twice (0.5 s apart), so the daemons "
                        "abort their running tasks (they end 'stopped') and exit at once")
    daemon.add_argument("--create-queue", action="store_true",
                        help="create the queues if they do not exist")
    daemon.add_argument("--order-fairness", action="store_true",
                        help="pull from the queues round-robin instead of by priority")
    daemon.add_argument("--polling-interval", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between polls against a server without long polling")
    gpus = daemon.add_mutually_exclusive_group()
    gpus.add_argument("--gpus", default=None, help="GPUs the tasks may use: 0 / 0,1 / 0-3 / all")
    gpus.add_argument("--cpu-only", action="store_true", help="tasks see no GPU")
    daemon.add_argument("--dynamic-gpus", action="store_true",
                        help="run several tasks at once, each on the number of free GPUs its "
                        "queue asks for (--queue quad=4 dual=2 opportunistic=1-4)")
    daemon.add_argument("--services-mode", nargs="?", type=int, const=0, default=None,
                        metavar="N", help="run up to N long-running tasks at once (no N: no "
                        "limit), each under its own worker id <id>:service:<task>")
    hours = daemon.add_mutually_exclusive_group()
    hours.add_argument("--uptime", nargs="+", default=None, metavar="SPEC",
                       help='pull tasks only in these hours, e.g. "17-20 SUN-TUE" "13-22 WED" '
                       "(overrides agent.uptime / agent.downtime)")
    hours.add_argument("--downtime", nargs="+", default=None, metavar="SPEC",
                       help='pull no tasks in these hours, e.g. "09-18 MON-FRI"')
    daemon.add_argument("--status", action="store_true",
                        help="print the daemons running on this machine, their schedule and "
                        "whether they pull tasks now")
    daemon.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    agent_build_cmd.add_container_flags(daemon)
    daemon.set_defaults(run=run_daemon)


def _add_execute(sub: Any) -> None:
    execute = sub.add_parser(
        "execute", help="run one task now, without a queue",
        description="Run one task on this machine right away, as the daemon would.")
    execute.add_argument("--id", required=True, help="the task id")
    execute.add_argument("--clone", action="store_true", help="run a clone of the task instead")
    execute.add_argument("--log-file", type=Path, default=None,
                         help="also write the task's console output to this file")
    execute.add_argument("--require-queue", action="store_true",
                         help="fail unless the task is queued (it is taken out of its queue)")
    execute.add_argument("--gpus", default=None, help="GPUs the task may use")
    execute.add_argument("--cpu-only", action="store_true", help="the task sees no GPU")
    agent_build_cmd.add_container_flags(execute)
    execute.set_defaults(run=run_execute)


def _gpus(args: argparse.Namespace) -> list[str]:
    from bosun.agent.device_discovery import discover_gpus

    spec = args.gpus
    if getattr(args, "dynamic_gpus", False) and spec is None:
        found = discover_gpus()
        if not found:
            raise UserError("--dynamic-gpus: no GPU found on this machine (NVML reports none or "
                            "is not available); give them with --gpus, e.g. --gpus 0-7")
        return found
    try:
        return resolve_gpus(spec, discover_gpus() if spec is not None else None)
    except GpuSpecError as exc:
        raise UserError(str(exc)) from exc


def _gpu_env(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    gpus = _gpus(args)
    return gpus, visible_devices_env(gpus, args.cpu_only)


def _schedule(args: argparse.Namespace, config: Config) -> Schedule | None:
    """--uptime / --downtime, else agent.uptime / agent.downtime."""
    try:
        if args.uptime or args.downtime:
            return schedule_from(args.uptime, args.downtime)
        return schedule_from(config.agent.uptime, config.agent.downtime)
    except ScheduleError as exc:
        raise UserError(f"schedule: {exc}") from exc


def _queue_specs(args: argparse.Namespace, gpus: list[str]
                 ) -> tuple[list[str], dict[str, tuple[int, int]] | None]:
    """Queue names, and with --dynamic-gpus each one's (min, max) GPUs."""
    names = args.queue or ["default"]
    if not args.dynamic_gpus:
        for name in names:
            if re.fullmatch(r".+=\d+(-\d+)?", name):
                raise UserError(f"--queue {name}: a GPU count per queue needs --dynamic-gpus")
        return names, None
    if args.cpu_only:
        raise UserError("--dynamic-gpus and --cpu-only exclude each other")
    if args.services_mode is not None:
        raise UserError("--dynamic-gpus and --services-mode exclude each other")
    wants: dict[str, tuple[int, int]] = {}
    plain = []
    for spec in names:
        try:
            name, low, high = parse_queue_gpus(spec)
        except GpuSpecError as exc:
            raise UserError(str(exc)) from exc
        if low > len(gpus):
            raise UserError(f"--dynamic-gpus: queue {name} needs {low} GPUs per task, the "
                            f"daemon has {len(gpus)} (--gpus {','.join(gpus)})")
        wants[name] = (low, high)
        plain.append(name)
    return plain, wants


# --- daemon ------------------------------------------------------------------------------------


def run_daemon(args: argparse.Namespace) -> int:
    if args.stop is not None:
        timeout = daemon_stop.STOP_TIMEOUT_SECONDS if args.timeout is None else args.timeout
        return daemon_stop.stop_daemons(args.stop, timeout, args.abort)
    if args.timeout is not None or args.abort:
        raise UserError("--timeout and --abort go with --stop")
    if args.status:
        return _print_status(args)
    if args.services_mode is not None and args.services_mode < 0:
        raise UserError("--services-mode N: N must be 0 (no limit) or more")
    if args.detached:
        config = load_agent_config(args)  # refuse a bad schedule or GPU list before going away
        _queue_specs(args, _gpus(args))
        _schedule(args, config)
        return _detach(args)
    from bosun.agent.daemon import Daemon
    from bosun.agent.queue_names import QueueNotFound, resolve_queues

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per API call otherwise
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stderr may not be a file
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    config = load_agent_config(args)
    gpus = _gpus(args)
    queue_names, queue_gpus = _queue_specs(args, gpus)
    schedule = _schedule(args, config)
    mode = "dynamic" if queue_gpus is not None else \
        "services" if args.services_mode is not None else "single"
    try:
        slot = worker_ids.claim(config.agent.worker_id or None, config.agent.worker_name,
                                [] if args.cpu_only else gpus, queue_names,
                                os.environ.get("BOSUN_AGENT_LOG_FILE", ""),
                                extra={"mode": mode, "gpus": gpus,
                                       "schedule": schedule.describe() if schedule else ""})
    except RuntimeError as exc:
        raise UserError(str(exc)) from exc
    try:
        session = open_session(config, worker=slot.worker_id)
        try:
            queues = resolve_queues(session, queue_names, args.create_queue)
        except QueueNotFound as exc:
            raise UserError(str(exc)) from exc
        dynamic = None
        if queue_gpus is not None:
            dynamic = {q["id"]: queue_gpus[name] for q, name in zip(queues, queue_names,
                                                                    strict=True)}
        echo = (lambda line: print(line, flush=True)) if args.foreground else None
        daemon = Daemon(session, config, slot.worker_id, queues,
                        order_fairness=args.order_fairness,
                        polling_interval=args.polling_interval, echo=echo,
                        gpus=gpus, cpu_only=args.cpu_only, dynamic_gpus=dynamic,
                        services=args.services_mode, schedule=schedule,
                        on_state=lambda state: slot.update(**state))
        daemon.container = agent_build_cmd.checked_container_mode(args)
        daemon.install_signal_handlers()
        daemon.run()
    finally:
        slot.release()
    return 0


def _print_status(args: argparse.Namespace) -> int:
    """The daemons on this machine (from their lock files), and what the given flags or the
    configuration would schedule."""
    from datetime import datetime

    from bosun.agent.gpu_allocator import GpuLocks

    config = load_agent_config(args)
    schedule = _schedule(args, config)
    now = datetime.now()
    print(f"now: {now:%a %Y-%m-%d %H:%M} (local time)")
    if schedule is None:
        print("schedule: none (always on)")
    else:
        up = schedule.is_up(now)
        change = schedule.next_change(now)
        print(f"schedule: {schedule.describe()}: {'on' if up else 'off'} now"
              + (f", {'off' if up else 'on'} from {change:%a %H:%M}" if change else ""))
    daemons = worker_ids.running_daemons()
    if not daemons:
        print("no bosun agent daemon is running on this machine")
        return 0
    gpus_seen: list[str] = []
    for daemon in daemons:
        info = daemon.info
        print(f"worker {daemon.worker_id} (pid {daemon.pid}): queues "
              f"{', '.join(daemon.queues)}; mode {info.get('mode', 'single')}")
        print(f"  schedule: {info.get('schedule') or 'none'}")
        state = info.get("state")
        if state:
            print(f"  state: {info.get('state_reason') or state}")
        if info.get("waiting"):
            print(f"  waiting: {info['waiting']}")
        for task in info.get("running") or []:
            gpus = f" on GPUs {','.join(task['gpus'])}" if task.get("gpus") else ""
            print(f"  running task {task['task']}{gpus} as worker {task['worker']}")
        gpus_seen += [g for g in info.get("gpus") or [] if g not in gpus_seen]
    if gpus_seen:
        for gpu, holder in GpuLocks().holders(gpus_seen).items():
            print(f"GPU {gpu}: {holder}")
    return 0


def _detach(args: argparse.Namespace) -> int:
    argv = [a for a in sys.argv[1:] if a != "--detached"]
    log_dir = worker_ids.state_dir().parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"agent-{int(time.time())}-{os.getpid()}.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bosun", *argv], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "BOSUN_AGENT_LOG_FILE": str(log_path)})
    # Wait until it has claimed its worker id (or died) so that the user sees the outcome.
    for _ in range(100):
        if proc.poll() is not None:
            raise UserError(f"the daemon exited at once (code {proc.returncode}); see "
                            f"{log_path}:\n{log_path.read_text()[-2000:]}")
        mine = [d for d in worker_ids.running_daemons() if d.pid == proc.pid]
        if mine:
            print(f"bosun agent daemon running in the background: worker {mine[0].worker_id}, "
                  f"pid {proc.pid}, log {log_path}")
            return 0
        time.sleep(0.1)
    print(f"bosun agent daemon started in the background: pid {proc.pid}, log {log_path}")
    return 0


# --- execute -----------------------------------------------------------------------------------

# How long `execute` keeps trying to send what a previous agent owed before it runs its task.
OWED_PATIENCE_SECONDS = 60.0


def run_execute(args: argparse.Namespace) -> int:
    from bosun.agent import outbox, task_records
    from bosun.agent.delivery import Patience
    from bosun.agent.task_run import TaskRun

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_agent_config(args)
    gpus, gpu_env = _gpu_env(args)
    container = agent_build_cmd.checked_container_mode(args)  # before the task is touched
    slot = worker_ids.claim(None, config.agent.worker_name, gpus, [], "")
    log_file = args.log_file.open("a") if args.log_file else None
    try:
        session = open_session(config, worker=slot.worker_id)
        task_records.reap()  # what an agent killed before left running
        outbox.deliver(session.for_worker, Patience(OWED_PATIENCE_SECONDS))
        task_id = _prepare_task(session, args)
        echo_target = log_file

        def echo(line: str) -> None:
            print(line, flush=True)
            if echo_target is not None:
                echo_target.write(line + "\n")
                echo_target.flush()

        run = TaskRun(session, config, slot.worker_id, task_id, echo=echo, extra_env=gpu_env,
                      container=container, numbered=session.is_bosun())
        signal.signal(signal.SIGTERM, lambda *_: run.abort("agent shut down"))
        outcome = run.execute()
    finally:
        slot.release()
        if log_file is not None:
            log_file.close()
    return {"completed": 0, "failed": 1, "stopped": 2}[outcome.status]


def _prepare_task(session: Any, args: argparse.Namespace) -> str:
    try:
        task = session.call("tasks.get_by_id", {"task": args.id})["task"]
    except ApiError as exc:
        raise UserError(f"task {args.id}: {exc.msg}") from exc
    task_id = task["id"]
    if args.clone:
        task_id = session.call("tasks.clone", {"task": task_id})["id"]
        print(f"bosun: running clone {task_id} of task {args.id}")
    elif task["status"] == "queued":
        session.call("tasks.dequeue", {"task": task_id})
    elif args.require_queue:
        raise UserError(f"task {task_id} is {task['status']}, not queued (--require-queue)")
    session.call("tasks.started", {"task": task_id, "force": True,
                                   "status_reason": "started by bosun agent execute"})
    return task_id


# --- list / config / init ----------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    config = load_agent_config(args)
    with open_session(config) as session:
        workers = session.call("workers.get_all")["workers"]
    if not workers:
        print("no workers")
        return 0
    rows = [("WORKER", "QUEUES", "TASK", "LAST ACTIVITY")]
    for worker in workers:
        task = worker.get("task") or {}
        rows.append((worker["id"], ",".join(q["name"] for q in worker.get("queues") or []),
                     f"{task.get('id', '')} {task.get('name', '')}".strip() or "-",
                     worker.get("last_activity_time") or "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_config(args: argparse.Namespace) -> int:
    config = load_agent_config(args)
    print(f"# configuration file: {config.source or '(none found; defaults)'}")
    print(json.dumps(masked(config), indent=2, default=str))
    return 0


def run_init(args: argparse.Namespace) -> int:
    from bosun.agent.init_wizard import run_init as wizard
    from bosun.client import ConnectionFailed, Session

    def verify(api: Any) -> str | None:
        try:
            with Session(api.api_server, api.access_key, api.secret_key, timeout=10) as session:
                session.login()
                session.call("queues.get_default")
        except ConnectionFailed as exc:
            return str(exc)
        except ApiError as exc:
            return f"the server refused the credentials: {exc.msg}"
        return None

    path = args.config_file or default_config_path()
    return wizard(input, print, path, verify, ask_secret=getpass.getpass)
