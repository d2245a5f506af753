"""Working hours: `--uptime` / `--downtime` (and `agent.uptime` / `agent.downtime`), the
`force` runtime property and the `force_workers:on|off` queue tags.

A spec is `"<hours> <days>"` as ClearML describes it:

- `<hours>`: a span `20-23` (8 PM to 11 PM), a single hour `20` (8 PM to midnight), or a `,`
  list of those (`20-00,00-08`). Hours are `00`-`23`; `00` at the end of a span is midnight at
  the end of the day. A span never crosses midnight (`22-02` is refused): use two spans,
  `"22-00 SUN" "00-02 MON"`.
- `<days>`: a span `SUN-TUE`, a single day `WED`, or a `,` list of those (`SUN,TUE`). Days are
  `SUN MON TUE WED THU FRI SAT`, any case; a span may wrap around the week (`FRI-MON`).

Several specs add up. The hours are local time of the agent's machine, taken from a clock
(`now`) that tests replace.

Which queues a worker pulls from, highest precedence first:
1. the queue's tag `force_workers:on` / `force_workers:off` (per queue);
2. the worker's runtime property `force` = `on` / `off` (until it expires);
3. the schedule: inside uptime (or outside downtime) on, else off; no schedule: on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
FORCE_ON_TAG = "force_workers:on"
FORCE_OFF_TAG = "force_workers:off"

Clock = Callable[[], datetime]


class ScheduleError(ValueError):
    """A spec that does not follow the format; the message quotes it and says what is wrong."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = SUN ... 6 = SAT
    start: int  # hour, 0-23
    end: int  # hour, 1-24 (24: midnight at the end of the day)

    def contains(self, moment: datetime) -> bool:
        return day_index(moment) in self.days and self.start <= moment.hour < self.end


def day_index(moment: datetime) -> int:
    """0 = Sunday ... 6 = Saturday (Python's weekday() starts on Monday)."""
    return (moment.weekday() + 1) % 7


def _hour(text: str, spec: str) -> int:
    if not re.fullmatch(r"\d{1,2}", text) or not 0 <= int(text) <= 23:
        raise ScheduleError(f"{spec!r}: {text!r} is not an hour (00-23)")
    return int(text)


def _hours(text: str, spec: str) -> list[tuple[int, int]]:
    spans = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ScheduleError(f"{spec!r}: empty item in the hours {text!r}")
        if "-" in part:
            low, _, high = part.partition("-")
            start, end = _hour(low.strip(), spec), _hour(high.strip(), spec)
            if end == 0:
                end = 24
            if end < start:
                raise ScheduleError(
                    f"{spec!r}: the hours {part} cross midnight; use two spans, e.g. "
                    f"'{start:02d}-00 <day>' '00-{end:02d} <next day>'")
            if end == start:
                raise ScheduleError(f"{spec!r}: the hours {part} are an empty span")
        else:
            start, end = _hour(part, spec), 24
        spans.append((start, end))
    return spans


def _day(text: str, spec: str) -> int:
    name = text.strip().upper()
    if name not in DAYS:
        raise ScheduleError(f"{spec!r}: {text.strip()!r} is not a day "
                            f"(use {', '.join(DAYS)})")
    return DAYS.index(name)


def _days(text: str, spec: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            raise ScheduleError(f"{spec!r}: empty item in the days {text!r}")
        if "-" in part:
            low, _, high = part.partition("-")
            first, last = _day(low, spec), _day(high, spec)
            day = first
            days.add(day)
            while day != last:
                day = (day + 1) % 7
                days.add(day)
        else:
            days.add(_day(part, spec))
    return frozenset(days)


def parse_spec(spec: str) -> list[Window]:
    """One `"<hours> <days>"` spec -> its windows; ScheduleError when malformed."""
    if not isinstance(spec, str):
        raise ScheduleError(f"{spec!r}: expected a string like '17-20 SUN-TUE'")
    parts = spec.split()
    if len(parts) != 2:
        raise ScheduleError(f"{spec!r}: expected '<hours> <days>', e.g. '17-20 SUN-TUE' or "
                            "'20 SUN' (use SUN-SAT for every day)")
    hours, days = parts
    day_set = _days(days, spec)
    return [Window(day_set, start, end) for start, end in _hours(hours, spec)]


@dataclass(frozen=True)
class Schedule:
    kind: str  # "uptime" | "downtime"
    specs: tuple[str, ...]
    windows: tuple[Window, ...]

    @classmethod
    def parse(cls, kind: str, specs: Iterable[str]) -> Schedule:
        if kind not in ("uptime", "downtime"):
            raise ScheduleError(f"unknown schedule kind {kind!r}")
        specs = tuple(specs)
        if not specs:
            raise ScheduleError(f"{kind}: no time span given")
        windows = [w for spec in specs for w in parse_spec(spec)]
        return cls(kind, specs, tuple(windows))

    def in_window(self, moment: datetime) -> bool:
        return any(w.contains(moment) for w in self.windows)

    def is_up(self, moment: datetime) -> bool:
        inside = self.in_window(moment)
        return inside if self.kind == "uptime" else not inside

    def next_change(self, moment: datetime) -> datetime | None:
        """The next full hour at which `is_up` changes, within a week; None if it never does."""
        now_up = self.is_up(moment)
        hour = moment.replace(minute=0, second=0, microsecond=0)
        for step in range(1, 24 * 7 + 1):
            candidate = hour + timedelta(hours=step)
            if self.is_up(candidate) != now_up:
                return candidate
        return None

    def describe(self) -> str:
        return f"{self.kind} " + "; ".join(self.specs)


def schedule_from(uptime: Sequence[str] | None, downtime: Sequence[str] | None
                  ) -> Schedule | None:
    """The schedule from uptime or downtime specs (only one may be given); None: always on."""
    if uptime and downtime:
        raise ScheduleError("give either uptime or downtime, not both")
    if uptime:
        return Schedule.parse("uptime", uptime)
    if downtime:
        return Schedule.parse("downtime", downtime)
    return None


# --- the on/off decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    on: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    worker_on: bool  # before queue tags
    worker_reason: str
    queues: dict[str, QueueState]  # queue id -> state, in the worker's queue order

    @property
    def active(self) -> list[str]:
        return [q for q, state in self.queues.items() if state.on]

    def summary(self, names: Mapping[str, str] | None = None) -> str:
        """`on (inside uptime 17-20 SUN-TUE)`, `off (...)`, or queue by queue when tags make
        them differ (`names`: queue id -> name, for the text)."""
        if all(s.reason == self.worker_reason for s in self.queues.values()):
            return f"{'on' if self.worker_on else 'off'} ({self.worker_reason})"
        names = names or {}
        return "; ".join(f"{names.get(q, q)}: {'on' if s.on else 'off'} ({s.reason})"
                         for q, s in self.queues.items())


def force_value(properties: Iterable[Mapping[str, object]]) -> str | None:
    """The `force` runtime property ("on" / "off"), None when absent or another value."""
    for item in properties:
        if item.get("key") == "force":
            value = str(item.get("value") or "").strip().lower()
            if value in ("on", "off"):
                return value
    return None


def queue_force(tags: Iterable[str]) -> str | None:
    """"on" / "off" from a queue's tags; when both are there, "off" wins."""
    found = {str(t).strip().lower() for t in tags}
    if FORCE_OFF_TAG in found:
        return "off"
    if FORCE_ON_TAG in found:
        return "on"
    return None


def decide(schedule: Schedule | None, force: str | None, queue_tags: Mapping[str, Iterable[str]],
           queue_ids: Sequence[str], moment: datetime) -> Decision:
    """Queue tag > runtime property `force` > schedule > on."""
    if force in ("on", "off"):
        worker_on, why = force == "on", f"runtime property force={force}"
    elif schedule is not None:
        worker_on = schedule.is_up(moment)
        inside = schedule.in_window(moment)
        why = f"{'inside' if inside else 'outside'} {schedule.describe()}"
    else:
        worker_on, why = True, "no schedule"
    states: dict[str, QueueState] = {}
    for queue in queue_ids:
        tag = queue_force(queue_tags.get(queue) or [])
        if tag is not None:
            states[queue] = QueueState(tag == "on", f"queue tag force_workers:{tag}")
        else:
            states[queue] = QueueState(worker_on, why)
    return Decision(worker_on, why, states)


# --- durations (`bosun worker force ... --for 24h`) ------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`90`, `90s`, `30m`, `24h`, `7d`, `1w`, `1h30m` -> seconds (> 0)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+", value):
        seconds = int(value)
    else:
        parts = re.findall(r"(\d+)\s*([smhdw])", value)
        if not parts or re.sub(r"\d+\s*[smhdw]", "", value).strip():
            raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 24h, 7d)")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than 0 seconds")
    return seconds
