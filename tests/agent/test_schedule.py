"""Working hours: the uptime/downtime format (the seed's examples, table-driven), bad specs,
the on/off precedence (queue tag > runtime property > schedule) with a controllable clock, and
the configuration keys agent.uptime / agent.downtime."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bosun.agent import daemon as daemon_module
from bosun.agent.config import Config, ConfigError, load_config
from bosun.agent.daemon import Daemon
from bosun.agent.schedule import (
    Schedule,
    ScheduleError,
    Window,
    decide,
    force_value,
    parse_duration,
    parse_spec,
    queue_force,
    schedule_from,
)
from bosun.cli.main import main

# 2024-06-02 is a Sunday.
DAY = {name: datetime(2024, 6, 2) + timedelta(days=i)
       for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


def at(day: str, hour: int, minute: int = 0) -> datetime:
    return DAY[day].replace(hour=hour, minute=minute)


SUN, MON, TUE, WED = 0, 1, 2, 3


@pytest.mark.parametrize(("spec", "windows"), [
    ("20-23 SUN", [Window(frozenset({SUN}), 20, 23)]),
    ("20-23 SUN,TUE", [Window(frozenset({SUN, TUE}), 20, 23)]),
    ("20-23 SUN-TUE", [Window(frozenset({SUN, MON, TUE}), 20, 23)]),
    ("20 SUN", [Window(frozenset({SUN}), 20, 24)]),
    ("20-00,00-08 SUN", [Window(frozenset({SUN}), 20, 24), Window(frozenset({SUN}), 0, 8)]),
    ("20-00 SUN", [Window(frozenset({SUN}), 20, 24)]),
    ("00-08 MON", [Window(frozenset({MON}), 0, 8)]),
    ("17-20 SUN-TUE", [Window(frozenset({SUN, MON, TUE}), 17, 20)]),
    ("13-22 WED", [Window(frozenset({WED}), 13, 22)]),
    ("9-17 mon-fri", [Window(frozenset({1, 2, 3, 4, 5}), 9, 17)]),
    ("00-00 SUN-SAT", [Window(frozenset(range(7)), 0, 24)]),
    ("22 FRI-MON", [Window(frozenset({5, 6, 0, 1}), 22, 24)]),
    ("8,12-13 SAT", [Window(frozenset({6}), 8, 24), Window(frozenset({6}), 12, 13)]),
])
def test_parse_spec(spec: str, windows: list[Window]) -> None:
    assert parse_spec(spec) == windows


# The seed's examples: (specs, moments inside, moments outside).
EXAMPLES: list[tuple[list[str], list[datetime], list[datetime]]] = [
    (["20-23 SUN"], [at("SUN", 20), at("SUN", 22, 59)],
     [at("SUN", 19, 59), at("SUN", 23), at("MON", 21), at("SAT", 21)]),
    (["20-23 SUN,TUE"], [at("SUN", 21), at("TUE", 20)], [at("MON", 21), at("TUE", 23)]),
    (["20-23 SUN-TUE"], [at("SUN", 21), at("MON", 21), at("TUE", 22)],
     [at("WED", 21), at("SAT", 21)]),
    (["20 SUN"], [at("SUN", 20), at("SUN", 23, 59)], [at("SUN", 19), at("MON", 0)]),
    (["20-00,00-08 SUN"], [at("SUN", 23), at("SUN", 3), at("SUN", 0)],
     [at("SUN", 8), at("SUN", 12), at("MON", 3)]),
    (["20-00 SUN", "00-08 MON"], [at("SUN", 20), at("SUN", 23, 59), at("MON", 0), at("MON", 7)],
     [at("SUN", 3), at("MON", 8), at("MON", 21)]),
    (["17-20 SUN-TUE", "13-22 WED"], [at("SUN", 17), at("TUE", 19, 30), at("WED", 13),
                                      at("WED", 21, 59)],
     [at("TUE", 20), at("WED", 12), at("WED", 22), at("THU", 18)]),
]


@pytest.mark.parametrize(("specs", "inside", "outside"), EXAMPLES,
                         ids=[" + ".join(e[0]) for e in EXAMPLES])
def test_seed_examples_uptime_and_downtime(specs: list[str], inside: list[datetime],
                                           outside: list[datetime]) -> None:
    uptime = Schedule.parse("uptime", specs)
    downtime = Schedule.parse("downtime", specs)
    for moment in inside:
        assert uptime.is_up(moment), moment
        assert not downtime.is_up(moment), moment
    for moment in outside:
        assert not uptime.is_up(moment), moment
        assert downtime.is_up(moment), moment


@pytest.mark.parametrize(("spec", "message"), [
    ("", "expected '<hours> <days>'"),
    ("20-23", "expected '<hours> <days>'"),
    ("SUN", "expected '<hours> <days>'"),
    ("20-23 SUN TUE", "expected '<hours> <days>'"),
    ("25 SUN", "'25' is not an hour (00-23)"),
    ("20-24 SUN", "'24' is not an hour (00-23)"),
    ("8pm SUN", "'8pm' is not an hour"),
    ("20:00-23 SUN", "'20:00' is not an hour"),
    ("20-23 FUNDAY", "'FUNDAY' is not a day (use SUN, MON, TUE, WED, THU, FRI, SAT)"),
    ("20-23 SUNDAY", "'SUNDAY' is not a day"),
    ("22-02 SUN", "the hours 22-02 cross midnight; use two spans"),
    ("20-20 SUN", "the hours 20-20 are an empty span"),
    ("20-23 SUN,", "empty item in the days"),
    ("20-23, SUN", "empty item in the hours"),
    ("-5 SUN", "'' is not an hour"),
])
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_spec(spec)
    assert message in str(caught.value)
    assert repr(spec) in str(caught.value)  # the message quotes the spec


def test_uptime_and_downtime_exclude_each_other() -> None:
    with pytest.raises(ScheduleError, match="either uptime or downtime"):
        schedule_from(["20 SUN"], ["20 MON"])
    assert schedule_from(None, None) is None
    assert schedule_from([], ["20 MON"]) == Schedule.parse("downtime", ["20 MON"])


def test_next_change() -> None:
    schedule = Schedule.parse("uptime", ["17-20 SUN-TUE", "13-22 WED"])
    assert schedule.next_change(at("SUN", 10, 30)) == at("SUN", 17)
    assert schedule.next_change(at("SUN", 18, 5)) == at("SUN", 20)
    assert schedule.next_change(at("TUE", 21)) == at("WED", 13)
    assert Schedule.parse("uptime", ["00-00 SUN-SAT"]).next_change(at("MON", 1)) is None


# --- precedence --------------------------------------------------------------------------------


UPTIME = Schedule.parse("uptime", ["17-20 SUN-TUE"])
INSIDE, OUTSIDE = at("MON", 18), at("MON", 21)


@pytest.mark.parametrize(("schedule", "force", "tags", "moment", "on", "reason"), [
    (None, None, [], OUTSIDE, True, "no schedule"),
    (UPTIME, None, [], INSIDE, True, "inside uptime 17-20 SUN-TUE"),
    (UPTIME, None, [], OUTSIDE, False, "outside uptime 17-20 SUN-TUE"),
    (Schedule.parse("downtime", ["17-20 SUN-TUE"]), None, [], INSIDE, False,
     "inside downtime 17-20 SUN-TUE"),
    # runtime property beats the schedule
    (UPTIME, "on", [], OUTSIDE, True, "runtime property force=on"),
    (UPTIME, "off", [], INSIDE, False, "runtime property force=off"),
    (None, "off", [], INSIDE, False, "runtime property force=off"),
    # queue tag beats both
    (UPTIME, "off", ["force_workers:on"], INSIDE, True, "queue tag force_workers:on"),
    (UPTIME, None, ["force_workers:on"], OUTSIDE, True, "queue tag force_workers:on"),
    (UPTIME, "on", ["force_workers:off"], INSIDE, False, "queue tag force_workers:off"),
    (None, None, ["x", "force_workers:off"], INSIDE, False, "queue tag force_workers:off"),
    (None, None, ["force_workers:on", "force_workers:off"], INSIDE, False,
     "queue tag force_workers:off"),
])
def test_precedence(schedule: Schedule | None, force: str | None, tags: list[str],
                    moment: datetime, on: bool, reason: str) -> None:
    decision = decide(schedule, force, {"q": tags}, ["q"], moment)
    assert decision.queues["q"].on is on
    assert decision.queues["q"].reason == reason
    assert decision.active == (["q"] if on else [])


def test_queue_tags_act_per_queue() -> None:
    decision = decide(UPTIME, None, {"b": ["force_workers:on"], "c": ["force_workers:off"]},
                      ["a", "b", "c"], OUTSIDE)
    assert decision.active == ["b"]
    assert decision.summary({"a": "A", "b": "B", "c": "C"}) == (
        "A: off (outside uptime 17-20 SUN-TUE); B: on (queue tag force_workers:on); "
        "C: off (queue tag force_workers:off)")
    assert decide(UPTIME, None, {}, ["a"], INSIDE).summary() == \
        "on (inside uptime 17-20 SUN-TUE)"


def test_force_and_tag_values() -> None:
    assert force_value([{"key": "other", "value": "on"}, {"key": "force", "value": "OFF"}]) == \
        "off"
    assert force_value([{"key": "force", "value": "maybe"}]) is None
    assert force_value([{"key": "force", "value": ""}]) is None
    assert force_value([]) is None
    assert queue_force(["Force_Workers:On"]) == "on"
    assert queue_force(["force_workers"]) is None


class FakeServer:
    """Answers the two calls the daemon's decision makes."""

    def __init__(self) -> None:
        self.properties: list[dict[str, Any]] = []
        self.tags: dict[str, list[str]] = {}
        self.host = "http://fake"
        self.calls: list[str] = []

    def call(self, endpoint: str, data: dict[str, Any] | None = None,
             **_kwargs: Any) -> dict[str, Any]:
        self.calls.append(endpoint)
        if endpoint == "workers.get_runtime_properties":
            return {"runtime_properties": self.properties}
        if endpoint == "queues.get_all":
            assert data is not None
            return {"queues": [{"id": q, "tags": self.tags.get(q, [])} for q in data["id"]]}
        raise AssertionError(endpoint)


def test_daemon_decision_follows_the_clock_and_the_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "OVERRIDES_REFRESH_SECONDS", 0.0)
    clock = [at("MON", 16, 59)]
    server = FakeServer()
    states: list[dict[str, Any]] = []
    daemon = Daemon(server, Config(), "w", [{"id": "q1", "name": "one"},  # type: ignore[arg-type]
                                            {"id": "q2", "name": "two"}],
                    schedule=UPTIME, now=lambda: clock[0], on_state=states.append)
    assert daemon.decision().active == []
    assert states[-1]["state"] == "off"
    assert states[-1]["state_reason"] == "off (outside uptime 17-20 SUN-TUE)"
    clock[0] = at("MON", 17)
    assert daemon.decision().active == ["q1", "q2"]
    assert states[-1]["state"] == "on"
    server.properties = [{"key": "force", "value": "off", "expiry": 60}]
    assert daemon.decision().active == []
    server.tags = {"q2": ["force_workers:on"]}
    assert daemon.decision().active == ["q2"]
    assert states[-1]["active_queues"] == ["two"]
    assert "one: off (runtime property force=off)" in states[-1]["state_reason"]
    server.properties = []  # expired
    server.tags = {}
    clock[0] = at("MON", 20)
    assert daemon.decision().active == []
    clock[0] = at("SUN", 19, 59)
    assert daemon.decision().active == ["q1", "q2"]


def test_daemon_keeps_the_last_overrides_when_the_server_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bosun.client import ConnectionFailed

    monkeypatch.setattr(daemon_module, "OVERRIDES_REFRESH_SECONDS", 0.0)
    server = FakeServer()
    server.properties = [{"key": "force", "value": "off"}]
    daemon = Daemon(server, Config(), "w", [{"id": "q", "name": "q"}])  # type: ignore[arg-type]
    assert daemon.decision().active == []

    def down(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        raise ConnectionFailed("down")

    server.call = down  # type: ignore[method-assign]
    assert daemon.decision().active == []


# --- configuration and command line --------------------------------------------------------


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clearml.conf"
    path.write_text(text)
    return path


def test_config_keys(tmp_path: Path) -> None:
    config = load_config(_conf(tmp_path, 'agent.uptime: ["17-20 SUN-TUE", "13-22 WED"]\n'),
                         environ={"HOME": str(tmp_path)})
    assert config.agent.uptime == ["17-20 SUN-TUE", "13-22 WED"]
    assert config.agent.downtime == []
    assert not config.notices
    single = load_config(_conf(tmp_path, 'agent { downtime: "09-18 MON-FRI" }\n'),
                         environ={"HOME": str(tmp_path)})
    assert single.agent.downtime == ["09-18 MON-FRI"]
    from_env = load_config(None, environ={
        "HOME": str(tmp_path / "nohome"), "CLEARML_AGENT__AGENT__UPTIME": '["20 SUN"]'})
    assert from_env.agent.uptime == ["20 SUN"]


@pytest.mark.parametrize(("text", "message"), [
    ('agent.uptime: ["22-02 SUN"]\n', "agent.uptime: '22-02 SUN': the hours 22-02 cross midnight"),
    ('agent.downtime: "9-17"\n', "agent.downtime: '9-17': expected '<hours> <days>'"),
    ('agent { uptime: "20 SUN", downtime: "20 MON" }\n',
     "set only one of agent.uptime and agent.downtime"),
    ("agent.uptime: 5\n", "agent.uptime: expected a list of strings, got 5"),
])
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_conf(tmp_path, text), environ={"HOME": str(tmp_path)})
    assert message in str(caught.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1w", 604800),
    ("1h30m", 5400), (" 2H ", 7200),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "h", "1x", "1.5h", "24 hours", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("BOSUN_AGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BOSUN_FAKE_GPUS", "8")
    config = _conf(tmp_path, 'api.api_server: "http://127.0.0.1:9"\n')

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["agent", "--config-file", str(config), "daemon", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize(("args", "message"), [
    (["--uptime", "25 SUN"], "schedule: '25 SUN': '25' is not an hour"),
    (["--downtime", "20-23"], "schedule: '20-23': expected '<hours> <days>'"),
    (["--queue", "quad=4"], "--queue quad=4: a GPU count per queue needs --dynamic-gpus"),
    (["--services-mode", "-1"], "--services-mode N: N must be 0 (no limit) or more"),
    (["--dynamic-gpus", "--gpus", "0-3", "--queue", "quad"],
     "--dynamic-gpus: queue 'quad' needs its GPU count, e.g. quad=2 or quad=1-4"),
    (["--dynamic-gpus", "--gpus", "0-3", "--queue", "eight=8"],
     "--dynamic-gpus: queue eight needs 8 GPUs per task, the daemon has 4 (--gpus 0,1,2,3)"),
    (["--dynamic-gpus", "--gpus", "0-9", "--queue", "q=1"],
     "--gpus 0-9: GPU 8, 9 not found (this machine has GPUs 0, 1, 2, 3, 4, 5, 6, 7)"),
    (["--dynamic-gpus", "--services-mode", "--gpus", "0", "--queue", "q=1"],
     "--dynamic-gpus and --services-mode exclude each other"),
])
def test_daemon_flag_mistakes_are_one_line(run_cli: Run, args: list[str], message: str) -> None:
    code, _, err = run_cli(*args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_dynamic_gpus_need_gpus(run_cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSUN_FAKE_GPUS", "0")
    code, _, err = run_cli("--dynamic-gpus", "--queue", "q=1")
    assert code == 1 and "--dynamic-gpus: no GPU found on this machine" in err
    code, _, err = run_cli("--gpus", "all")
    assert code == 1 and "--gpus all: no GPU found on this machine" in err


def test_status_prints_the_schedule(run_cli: Run) -> None:
    code, out, _ = run_cli("--status", "--uptime", "17-20 SUN-TUE", "13-22 WED")
    assert code == 0
    assert "schedule: uptime 17-20 SUN-TUE; 13-22 WED: " in out
    assert "no bosun agent daemon is running on this machine" in out
    code, out, _ = run_cli("--status")
    assert "schedule: none (always on)" in out
