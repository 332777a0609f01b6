"""Argo CD sync windows: whether a sync may start now, by Argo CD's own rules.

Argo CD's API server refuses a manual sync inside a blocking window ("cannot sync: blocked
by sync window", ``SyncWindows.Matches(app).CanSync(true, nil)`` in
``server/application/application.go``). Core mode writes the Application's ``operation``
itself and so skips that check: the controller would park the operation ``Running`` ("Sync
operation blocked by sync window") until the window opens, and every later sync would fail
"another operation is already in progress". So core mode asks this module first and writes
nothing when the answer is no.

What follows reproduces Argo CD 3.x (``pkg/apis/application/v1alpha1/types.go``, read at
v3.5.1) and the cron library it uses (robfig/cron v3, five fields, no descriptors):

* ``matching``: the AppProject's windows that apply to an Application — by application
  name, destination cluster (name or server) and destination namespace, glob patterns,
  any of the three (``andOperator: false``, the default) or all that are set (``true``);
* a window is active when its schedule fired within the last ``duration``, judged on a
  clock shifted by the offset of ``timeZone`` (as Argo CD does, the offset of the current
  moment; an unknown zone counts as UTC);
* ``can_sync``: an active deny window blocks, unless the sync is manual and every active
  deny window has ``manualSync``; else an active allow window allows; else inactive allow
  windows block (a manual sync passes when all of them have ``manualSync``); no window:
  allowed. ``syncOverrun`` concerns operations already running, which a new sync never
  is; it is read for the record only. A window that does not parse blocks, as it blocks in
  Argo CD, with the parse error.

Pure: no I/O. Used by ``actions.argocd``.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

UTC = datetime.UTC
# Go's zero time.Time: what robfig's Next answers for a schedule with no time in five years
# (e.g. February 30th); Argo CD then finds the window active, since zero is before now.
ZERO = datetime.datetime(1, 1, 1, tzinfo=UTC)


class WindowError(ValueError):
    """A schedule, duration or kind Argo CD cannot read (Argo CD then blocks the sync)."""


# -- durations, as Go's time.ParseDuration reads them -----------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str) -> datetime.timedelta:
    """``1h30m``, ``90m``, ``1.5h``, ``300ms``, ``-2h``...; ``WindowError`` otherwise."""
    rest, sign = text, 1
    if rest[:1] in ("-", "+"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return datetime.timedelta(0)
    if not rest:
        raise WindowError(f'time: invalid duration "{text}"')
    total = 0
    while rest:
        found = _PART.match(rest)
        assert found is not None  # the pattern matches any text, possibly empty
        whole, fraction, unit = found.group(1), found.group(2), found.group(3)
        if not whole and not fraction:
            raise WindowError(f'time: invalid duration "{text}"')
        if not unit:
            raise WindowError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise WindowError(f'time: unknown unit "{unit}" in duration "{text}"')
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        rest = rest[found.end() :]
    return datetime.timedelta(microseconds=sign * total / 1000)


# -- cron schedules, as robfig/cron v3's standard parser reads them ---------------------------

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (low, high, names) of minute, hour, day of month, month, day of week
_BOUNDS: list[tuple[int, int, dict[str, int]]] = [
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 6, _DAYS),
]


@dataclass(frozen=True)
class Field:
    values: frozenset[int]
    star: bool  # written as * or ? (without a step): day matching then uses AND


def _number(text: str, names: dict[str, int], spec: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise WindowError(f"failed to parse int from {text}: in schedule {spec!r}")
    return int(text)


def _field(expr: str, index: int, spec: str) -> Field:
    low, high, names = _BOUNDS[index]
    values: set[int] = set()
    star = False
    for part in expr.split(","):
        range_step = part.split("/")
        low_high = range_step[0].split("-")
        single = len(low_high) == 1
        extra_star = False
        if low_high[0] in ("*", "?"):
            start, end, extra_star = low, high, True
        else:
            start = _number(low_high[0], names, spec)
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                end = _number(low_high[1], names, spec)
            else:
                raise WindowError(f"too many hyphens: {part}")
        if len(range_step) == 1:
            step = 1
        elif len(range_step) == 2:
            if not range_step[1].isdigit():
                raise WindowError(f"failed to parse int from {range_step[1]}: in {part}")
            step = int(range_step[1])
            if single:  # "N/step" is "N-max/step"
                end = high
            if step > 1:
                extra_star = False
        else:
            raise WindowError(f"too many slashes: {part}")
        if start < low:
            raise WindowError(f"beginning of range ({start}) below minimum ({low}): {part}")
        if end > high:
            raise WindowError(f"end of range ({end}) above maximum ({high}): {part}")
        if start > end:
            raise WindowError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        if step == 0:
            raise WindowError(f"step of range should be a positive number: {part}")
        values.update(range(start, end + 1, step))
        star = star or extra_star
    return Field(frozenset(values), star)


@dataclass(frozen=True)
class Schedule:
    minute: Field
    hour: Field
    dom: Field
    month: Field
    dow: Field
    zone: zoneinfo.ZoneInfo | None  # from a TZ= or CRON_TZ= prefix

    @classmethod
    def parse(cls, spec: str) -> Schedule:
        text = spec
        zone = None
        if text.startswith(("TZ=", "CRON_TZ=")):
            name, _, text = text.partition(" ")
            try:
                zone = zoneinfo.ZoneInfo(name.split("=", 1)[1])
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise WindowError(f"provided bad location {name}: {exc}") from None
        if text.startswith("@"):
            raise WindowError(f"parser does not accept descriptors: {spec}")
        fields = text.split()
        if len(fields) != 5:
            raise WindowError(f"expected exactly 5 fields, found {len(fields)}: [{text}]")
        minute, hour, dom, month, dow = (_field(expr, i, spec) for i, expr in enumerate(fields))
        return cls(minute, hour, dom, month, dow, zone)

    def _day_matches(self, t: datetime.datetime) -> bool:
        dom = t.day in self.dom.values
        dow = (t.isoweekday() % 7) in self.dow.values
        if self.dom.star or self.dow.star:
            return dom and dow
        return dom or dow

    def next(self, after: datetime.datetime) -> datetime.datetime:
        """The first whole minute strictly after ``after`` that the schedule names; ``ZERO``
        when none comes within five years (robfig's answer)."""
        origin = after.tzinfo or UTC
        # Wall-clock arithmetic in the schedule's zone (``after``'s own when none is given).
        t = (after.astimezone(self.zone) if self.zone else after).replace(tzinfo=None)
        zone = self.zone or origin
        t = t.replace(microsecond=0) + datetime.timedelta(seconds=1)
        added = False
        year_limit = t.year + 5
        while True:  # robfig's WRAP
            if t.year > year_limit:
                return ZERO
            wrapped = False
            while t.month not in self.month.values:
                if not added:
                    added, t = True, t.replace(day=1, hour=0, minute=0, second=0)
                t = (t.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
                if t.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(t):
                if not added:
                    added, t = True, t.replace(hour=0, minute=0, second=0)
                t += datetime.timedelta(days=1)
                if t.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while t.hour not in self.hour.values:
                if not added:
                    added, t = True, t.replace(minute=0, second=0)
                t += datetime.timedelta(hours=1)
                if t.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while t.minute not in self.minute.values:
                if not added:
                    added, t = True, t.replace(second=0)
                t += datetime.timedelta(minutes=1)
                if t.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while t.second != 0:
                if not added:
                    added = True
                t += datetime.timedelta(seconds=1)
                if t.second == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            return t.replace(tzinfo=zone).astimezone(origin)


# -- globs, as gobwas/glob reads them (no separators) ------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    out, i, depth = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                return None
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            if not body:
                return None
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        return None
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return None


def glob_match(pattern: str, value: str) -> bool:
    """Argo CD's ``globMatch``: ``*`` matches anything; a pattern that does not compile
    matches nothing."""
    if pattern == "*":
        return True
    compiled = _glob_regex(pattern)
    return bool(compiled and compiled.fullmatch(value))


# -- windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One entry of an AppProject's ``spec.syncWindows``."""

    kind: str
    schedule: str
    duration: str
    applications: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    manual_sync: bool = False
    time_zone: str = ""
    and_operator: bool = False
    sync_overrun: bool = False
    description: str = ""

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Window:
        def names(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in raw.get(key) or [])

        return cls(
            kind=str(raw.get("kind") or ""),
            schedule=str(raw.get("schedule") or ""),
            duration=str(raw.get("duration") or ""),
            applications=names("applications"),
            namespaces=names("namespaces"),
            clusters=names("clusters"),
            manual_sync=bool(raw.get("manualSync")),
            time_zone=str(raw.get("timeZone") or ""),
            and_operator=bool(raw.get("andOperator")),
            sync_overrun=bool(raw.get("syncOverrun")),
            description=str(raw.get("description") or ""),
        )

    def offset(self, now: datetime.datetime) -> datetime.timedelta:
        """The zone's UTC offset at ``now`` (Argo CD shifts the clock by it)."""
        try:
            zone = zoneinfo.ZoneInfo(self.time_zone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return datetime.timedelta(0)  # Argo CD: invalid zone, UTC
        return now.astimezone(zone).utcoffset() or datetime.timedelta(0)

    def _parts(self) -> tuple[Schedule, datetime.timedelta]:
        try:
            schedule = Schedule.parse(self.schedule)
        except WindowError as exc:
            raise WindowError(f"cannot parse schedule '{self.schedule}': {exc}") from None
        try:
            duration = parse_duration(self.duration)
        except WindowError as exc:
            raise WindowError(f"cannot parse duration '{self.duration}': {exc}") from None
        return schedule, duration

    def started(self, at: datetime.datetime, now: datetime.datetime) -> datetime.datetime:
        """Argo CD's test: the schedule's first time after ``at`` minus the duration (on the
        shifted clock); the window is active at ``at`` when that is before ``at``."""
        schedule, duration = self._parts()
        shift = self.offset(now)
        return schedule.next(at.astimezone(UTC) + shift - duration)

    def active(self, at: datetime.datetime, now: datetime.datetime) -> bool:
        return self.started(at, now) < at.astimezone(UTC) + self.offset(now)

    def ends(self, at: datetime.datetime, now: datetime.datetime) -> datetime.datetime:
        """When this active window closes (UTC)."""
        _, duration = self._parts()
        return self.started(at, now) + duration - self.offset(now)

    def opens(self, at: datetime.datetime, now: datetime.datetime) -> datetime.datetime:
        """When this window next opens after ``at`` (UTC)."""
        schedule, _ = self._parts()
        shift = self.offset(now)
        return schedule.next(at.astimezone(UTC) + shift) - shift

    def describe(self) -> str:
        scope = ", ".join(
            f"{key} {','.join(values)}"
            for key, values in (
                ("applications", self.applications),
                ("namespaces", self.namespaces),
                ("clusters", self.clusters),
            )
            if values
        )
        text = f"{self.kind} window '{self.schedule}' for {self.duration}"
        if self.time_zone and self.time_zone != "UTC":
            text += f" ({self.time_zone})"
        if scope:
            text += f" [{scope}]"
        if self.description:
            text += f" ({self.description})"
        return text


def windows_of(project: dict[str, Any]) -> list[Window]:
    return [Window.of(w) for w in (project.get("spec") or {}).get("syncWindows") or [] if w]


def matching(windows: Iterable[Window], app: dict[str, Any]) -> list[Window]:
    """The windows that apply to ``app`` (``SyncWindows.Matches``, its logic kept whole)."""
    name = str((app.get("metadata") or {}).get("name") or "")
    destination = (app.get("spec") or {}).get("destination") or {}
    dst_name = str(destination.get("name") or "")
    dst_server = str(destination.get("server") or "")
    dst_namespace = str(destination.get("namespace") or "")
    found = []
    for window in windows:
        matched = is_set = False
        if window.applications:
            is_set = True
            matched = any(glob_match(a, name) for a in window.applications)
        if window.and_operator and not matched and is_set:
            continue
        if not window.and_operator and matched:
            found.append(window)
            continue
        if window.clusters:
            is_set = True
            matched = any(
                (dst_name and glob_match(c, dst_name)) or (dst_server and glob_match(c, dst_server))
                for c in window.clusters
            )
        if is_set and window.and_operator and not matched:
            continue
        if not window.and_operator and matched:
            found.append(window)
            continue
        if window.namespaces:
            matched = any(glob_match(n, dst_namespace) for n in window.namespaces)
        if matched:
            found.append(window)
    return found


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # why not, naming the windows and when that changes; "" when allowed


def _fmt(moment: datetime.datetime) -> str:
    if moment <= ZERO + datetime.timedelta(days=1):
        return "never (the schedule names no time)"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def can_sync(windows: list[Window], *, manual: bool, now: datetime.datetime) -> Verdict:
    """``SyncWindows.CanSync(isManual, nil)`` over the windows matching an app (a new sync:
    no operation start time)."""
    if not windows:
        return Verdict(True, "")
    try:
        active = [w for w in windows if w.active(now, now)]
        denies = [w for w in active if w.kind == "deny"]
        if denies:
            if manual and all(w.manual_sync for w in denies):
                return Verdict(True, "")
            until = max(w.ends(now, now) for w in denies)
            blocking = [w for w in denies if not (manual and w.manual_sync)] or denies
            return Verdict(
                False,
                f"blocked by the active {'; '.join(w.describe() for w in blocking)}"
                + ("" if manual else " (an automated sync)")
                + f"; it closes at {_fmt(until)}",
            )
        if any(w.kind == "allow" for w in active):
            return Verdict(True, "")
        inactive = [w for w in windows if w.kind == "allow" and w not in active]
        if inactive:
            if manual and all(w.manual_sync for w in inactive):
                return Verdict(True, "")
            opens = min(w.opens(now, now) for w in inactive)
            return Verdict(
                False,
                "outside every allow window ("
                + "; ".join(w.describe() for w in inactive)
                + f"); the next opens at {_fmt(opens)}",
            )
    except WindowError as exc:
        return Verdict(False, f"invalid sync window: {exc}; Argo CD blocks every sync until it "
                       "is fixed in the AppProject")  # fmt: skip
    return Verdict(True, "")
