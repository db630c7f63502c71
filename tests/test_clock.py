"""A step of the host's clock never makes a swept session's window longer (issue 20,
finding 4): a session's record and its heartbeat are on one clock that no step moves, and
a sweep moves a window's end back by a step back it sees, never forward.

The host's clocks are the tests' own (``HostClocks``): the boot clock runs, and the wall
clock is it plus an offset that a step changes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.coordination.clock import Clock, boot_id
from pytest_imageprune.coordination.evidence import Arrival, within_lifetime
from pytest_imageprune.coordination.records import DEFERRED, SessionRecord
from pytest_imageprune.coordination.registry import Registry
from pytest_imageprune.kinds.filters import parse_kind_filters
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline, Image, Snapshot
from pytest_imageprune.session.lifecycle import PruneSession
from tests.fakes import FakeEngine
from tests.test_records import record
from tests.test_sessions import _network, _stamp

_clock_gettime_ns = time.clock_gettime_ns


class HostClocks:
    """The host's clocks as a test sets them: ``run`` moves both, ``step`` the wall clock
    alone (``time.time_ns``), as an NTP step or a ``date -s`` does; the boot clock
    (``time.CLOCK_BOOTTIME``) never steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.boot_ns = 1000 * NANOS
        self.offset_ns = time.time_ns() - self.boot_ns  # the wall clock starts at now
        monkeypatch.setattr(time, "time_ns", self.wall)
        monkeypatch.setattr(time, "clock_gettime_ns", self._gettime)

    def wall(self) -> int:
        return self.boot_ns + self.offset_ns

    def _gettime(self, clock: int) -> int:
        if clock == getattr(time, "CLOCK_BOOTTIME", None):
            return self.boot_ns
        return _clock_gettime_ns(clock)

    def run(self, seconds: float) -> None:
        self.boot_ns += round(seconds * NANOS)

    def step(self, seconds: float) -> None:
        self.offset_ns += round(seconds * NANOS)


def _session(engine: FakeEngine, lock: Path) -> PruneSession:
    """A session pruning the images and networks of label s=a."""
    networks = {"networks": parse_kind_filters("networks", ["label=s=a"])}
    session = PruneSession(
        parse_filters(["label=s=a"]), lock_path=lock, engine=engine, kinds=networks
    )
    session.start()
    assert session.coordinator is not None, session.lines
    return session


def _die(session: PruneSession) -> None:
    """SIGKILL: its locks go, its record stays."""
    coordinator = session.coordinator
    assert coordinator is not None
    coordinator.stop_heartbeat()
    coordinator.close()


def _arrives(engine: FakeEngine, name: str, clocks: HostClocks) -> None:
    """An image of label s=a comes to the engine now (an import: made and tagged now), and
    a network of that name and label is made."""
    now = clocks.wall()
    engine.listed["networks"].append(_network(name, "a", now))
    engine.add(
        Image(
            name,
            labels={"s": "a"},
            created_s=now // NANOS,
            created_ns=now,
            last_tag_ns=now,
            has_config=True,
        )
    )


def _beat(session: PruneSession) -> None:
    """The session's heartbeat, now (its thread beats once a second of real time)."""
    assert session.coordinator is not None
    session.coordinator.registry.beat()


def _left(engine: FakeEngine) -> set[str]:
    """What is left of what came: the images, and the networks beside them."""
    networks = {n["Name"] for n in engine.listed["networks"]}
    assert networks == set(engine.refs), (networks, set(engine.refs))
    return networks


def _sweep(engine: FakeEngine, lock: Path) -> PruneSession:
    """A later session, which finds the dead one and sweeps it."""
    sweeper = _session(engine, lock)
    sweeper.finish()
    assert sweeper.report is not None
    assert sweeper.report.status == "completed", sweeper.lines
    return sweeper


@pytest.mark.parametrize("when", ["before the death", "after the death"])
def test_a_step_back_never_lets_a_sweep_take_what_came_after_the_death(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The issue's scenario, through the real ``PruneSession``: a record written, the host's
    clock stepped back 50 s (while the session lived, or once it was dead), the session
    killed, an image imported 49.5 s after its death. The sweep deleted it, and the network
    made with it: it judged the window's end on the wall clock before the step, 50 s ahead
    of the one they were stamped by."""
    clocks = HostClocks(monkeypatch)
    engine = FakeEngine(Snapshot.of([]), last_tag=True)
    lock = tmp_path / "prune.lock"
    dead = _session(engine, lock)
    if when == "before the death":
        clocks.step(-50)
    clocks.run(1)
    _beat(dead)
    _die(dead)
    if when == "after the death":
        clocks.step(-50)
    clocks.run(49.5)
    _arrives(engine, "imported-after-the-death", clocks)
    clocks.run(10)
    sweeper = _sweep(engine, lock)
    assert _left(engine) == {"imported-after-the-death"}, sweeper.lines


def test_a_step_forward_never_lengthens_a_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock steps 50 s forward once the session is dead: its end stays where its
    clock put it (moved with the step, it would take what came between the death and the
    step); what it made still goes, what came after its death stays."""
    clocks = HostClocks(monkeypatch)
    engine = FakeEngine(Snapshot.of([]), last_tag=True)
    lock = tmp_path / "prune.lock"
    dead = _session(engine, lock)
    clocks.run(0.5)
    _arrives(engine, "made-while-it-lived", clocks)
    clocks.run(0.5)
    _beat(dead)
    _die(dead)
    clocks.run(5)
    _arrives(engine, "before-the-step", clocks)
    clocks.step(50)
    clocks.run(1)
    _arrives(engine, "after-the-step", clocks)
    clocks.run(10)
    sweeper = _sweep(engine, lock)
    assert _left(engine) == {"before-the-step", "after-the-step"}, sweeper.lines


@pytest.mark.parametrize("record", ["this version's", "an older version's"])
def test_without_a_step_a_sweep_takes_what_the_dead_session_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    """No step: the window is what it always was, for this version's records and for an
    older version's (no ``clock``), read on the wall clock as before."""
    clocks = HostClocks(monkeypatch)
    engine = FakeEngine(Snapshot.of([]), last_tag=True)
    lock = tmp_path / "prune.lock"
    dead = _session(engine, lock)
    assert dead.coordinator is not None
    assert dead.record is not None
    if record == "an older version's":
        path = dead.coordinator.registry.directory / f"{dead.record.id}.json"
        data = json.loads(path.read_text())
        assert data.pop("clock") is not None
        path.write_text(json.dumps(data))
    clocks.run(0.5)
    _arrives(engine, "made-while-it-lived", clocks)
    clocks.run(0.5)
    _beat(dead)
    _die(dead)
    clocks.run(2.5)  # its heartbeat, and 2 s of slack: it was dead by then
    _arrives(engine, "after-the-death", clocks)
    clocks.run(10)
    sweeper = _sweep(engine, lock)
    assert _left(engine) == {"after-the-death"}, sweeper.lines


# -- the clock ------------------------------------------------------------------------------
BOOT = "3b1f6c1e-9a51-4c57-9d0e-6c2f3a1b2c3d"
OTHER_BOOT = "8d2e4f60-1b3c-4d5e-8f70-91a2b3c4d5e6"


def test_the_clock_is_the_boot_clock_plus_the_offset_when_it_was_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = HostClocks(monkeypatch)
    clock = Clock.read()
    assert clock is not None
    assert clock.boot == boot_id()
    assert clock.now_ns() == clocks.wall()
    clocks.run(3)
    clocks.step(-50)
    assert clock.now_ns() == clocks.wall() + 50 * NANOS  # no step moves it
    assert clock.stepped_back(Clock.read()) == 50 * NANOS
    clocks.step(80)
    assert clock.stepped_back(Clock.read()) == 0  # a step forward is never a step back
    assert clock.stepped_back(Clock(OTHER_BOOT, 0)) is None
    assert clock.stepped_back(None) is None
    assert Clock(OTHER_BOOT, 0).now_ns() is None  # another boot's clock is gone
    monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    assert Clock.read() is None  # not Linux: the wall clock, as before


def test_a_session_keeps_its_times_on_its_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its heartbeat (its ``.alive`` file's mtime) and its end read its record's clock, not
    the stepped wall clock; so does the heartbeat it starts with."""
    clocks = HostClocks(monkeypatch)
    listed = clocks.wall()
    clocks.run(1)
    clocks.step(-50)  # between its listing and its record
    rec = SessionRecord.new(Baseline({}), {}, "session", listed)
    assert rec.clock is not None
    assert rec.heartbeat_ns == listed + NANOS - 50 * NANOS  # never later than its clock
    registry = Registry(tmp_path / "reg")
    registry.register(rec)
    alive = tmp_path / "reg" / f"{rec.id}.alive"
    assert alive.stat().st_mtime_ns == rec.now_ns()  # its first heartbeat, at once
    clocks.run(1)
    clocks.step(-30)
    registry.beat()
    assert alive.stat().st_mtime_ns == rec.now_ns() == clocks.wall() + 30 * NANOS
    registry.settle(rec, done=False, end_ns=rec.now_ns())
    (kept,) = Registry(tmp_path / "reg").classify(None).deferred
    assert kept.finished_ns == clocks.wall() + 30 * NANOS
    # Earlier than its start, the listing's wall-clock time before the first step: still
    # a good record, whose window is empty, so nothing is taken for it.
    assert kept.finished_ns < kept.started_ns
    assert kept.clock == rec.clock
    registry.close()


# -- the window, as a sweep judges it ---------------------------------------------------------
def _dead_on(clock: Clock | None) -> SessionRecord:
    """A session that started at 100 s and beat last at 101 s, on ``clock``."""
    return record(set(), started_ns=100 * NANOS, heartbeat_ns=101 * NANOS, clock=clock)


def _made_at(seconds: float) -> Image:
    return Image("sha256:x", created_s=int(seconds), created_ns=round(seconds * NANOS))


def test_a_window_seen_after_a_step_back_ends_that_much_earlier() -> None:
    """The issue's numbers, as a sweep judges the record: its clock read with the wall clock
    at the boot clock (offset 0); the wall clock stepped back 50 s since; an image imported
    49.5 s after the death is stamped 100.5 s on the stepped clock. Without the move, the
    window ends at 103 s and takes it."""
    dead = _dead_on(Clock(BOOT, 0))
    window = dead.seen_at(Clock(BOOT, -50 * NANOS))
    assert window.end_ns == dead.death_ns - 50 * NANOS == 53 * NANOS
    assert window.started_ns == dead.started_ns  # a start is never moved
    imported = _made_at(101 + 49.5 - 50)
    assert within_lifetime(window, lambda image: None)(imported) == (
        "created after that session ended"
    )
    assert within_lifetime(dead, lambda image: None)(imported) is None  # as it was

    def inspect(image_id: str) -> dict[str, Any]:  # imported: made and tagged then
        then = _stamp(round((101 + 49.5 - 50) * NANOS))
        return {"Created": then, "Metadata": {"LastTagTime": then}}

    arrival = Arrival(inspect, Snapshot.of([imported]), lambda a, b: [])
    assert arrival.doubt(imported, window) == "arrived after that session ended"
    # A deferred session's end moves the same way.
    deferred = dataclasses.replace(dead, state=DEFERRED, finished_ns=101 * NANOS)
    assert deferred.seen_at(Clock(BOOT, -50 * NANOS)).end_ns == 51 * NANOS


def test_a_step_forward_or_none_leaves_a_window_as_it_is() -> None:
    dead = _dead_on(Clock(BOOT, 0))
    for offset in (0, 50 * NANOS):
        window = dead.seen_at(Clock(BOOT, offset))
        assert (window.started_ns, window.end_ns) == (dead.started_ns, dead.end_ns)
        keep = within_lifetime(window, lambda image: None)
        assert keep(_made_at(100.5)) is None  # made while it lived: it goes
        assert keep(_made_at(103.5)) is not None  # after its death: it stays


def test_another_boots_record_or_an_older_versions_is_judged_as_before() -> None:
    """Their clock tells nothing now: the wall clock, as before (this boot began at 200 s,
    after that session's end)."""
    for dead in (_dead_on(Clock(OTHER_BOOT, 0)), _dead_on(None)):
        window = dead.seen_at(Clock(BOOT, 200 * NANOS))
        assert (window.started_ns, window.end_ns, window.clock) == (100 * NANOS, 103 * NANOS, None)


def test_another_boots_session_ended_before_this_boot_began() -> None:
    """A review found it: the wall clock stepped back 10 minutes while a session ran, then
    the host rebooted, which killed it. Its heartbeat, on its record's clock, lies 10
    minutes ahead of this boot's wall clock; read as before, its window took an image
    imported 2 minutes after the reboot. A session of another boot ended before this one
    began: its end goes no later than that."""
    began = 1000 * NANOS  # this boot's start, on the wall clock as it reads now
    ahead = record(
        set(),
        started_ns=began - 300 * NANOS,
        heartbeat_ns=began + 480 * NANOS,  # 10 min ahead of the stepped clock
        clock=Clock(OTHER_BOOT, 0),
    )
    window = ahead.seen_at(Clock(BOOT, began))
    assert window.end_ns == began
    imported = _made_at(1000 + 120)
    assert within_lifetime(window, lambda image: None)(imported) == (
        "created after that session ended"
    )
    deferred = dataclasses.replace(ahead, state=DEFERRED, finished_ns=began + 480 * NANOS)
    assert deferred.seen_at(Clock(BOOT, began)).end_ns == began
    data = _dead_on(None).to_json()
    assert data.pop("clock") is None
    assert SessionRecord.from_json(data).clock is None  # a record without the field reads


def test_a_step_back_after_the_window_was_judged_leaves_the_log_unbelieved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window is judged once the images are listed; the wall clock steps back 100 s
    before the event log is asked. On the wall clock the death would be in the future
    ("nothing can have come after yet"), and a load after it unseen: the boot clock says
    otherwise, and the log, which cannot be asked past now, is not believed."""
    clocks = HostClocks(monkeypatch)
    start = clocks.wall()
    dead = record(set(), started_ns=start, heartbeat_ns=start + NANOS)
    clocks.run(30)
    window = dead.seen_at(Clock.read())
    loaded = Image("sha256:loaded", created_s=(start + NANOS // 2) // NANOS)
    asked: list[tuple[int, int]] = []

    def events(since_ns: int, until_ns: int) -> list[Any]:
        asked.append((since_ns, until_ns))
        return []

    def inspect(image_id: str) -> dict[str, Any]:  # only Created speaks for it
        return {"Created": _stamp(loaded.created_s * NANOS)}

    believed = Arrival(inspect, Snapshot.of([loaded]), events)
    assert believed.doubt(loaded, window) is None  # no step: the log shows no load after
    assert len(asked) == 1
    clocks.step(-100)
    doubted = Arrival(inspect, Snapshot.of([loaded]), events)
    why = doubted.doubt(loaded, window) or ""
    assert why.startswith("no evidence it arrived while that session lived"), why
    assert len(asked) == 1


def test_a_record_ahead_by_a_step_back_its_clock_shows_is_still_read() -> None:
    """A step back of more than the skew allowed since the record was written: its times
    are ahead of the wall clock by the step, and its clock shows it; only by the step."""
    now = 10**18
    data = record(
        set(),
        started_ns=now + 100 * NANOS,
        heartbeat_ns=now + 100 * NANOS,
        clock=Clock(BOOT, 7 * NANOS),
    ).to_json()
    stepped = Clock(BOOT, 7 * NANOS - 120 * NANOS)
    assert SessionRecord.from_json(data, now_ns=now, now=stepped).started_ns == now + 100 * NANOS
    for clock in (Clock(BOOT, 7 * NANOS), Clock(OTHER_BOOT, -(10**12)), None):
        with pytest.raises(ValueError, match="started_ns is out of range"):
            SessionRecord.from_json(data, now_ns=now, now=clock)
    data["started_ns"] = now + 200 * NANOS  # ahead by more than the step and the skew
    with pytest.raises(ValueError, match="started_ns is out of range"):
        SessionRecord.from_json(data, now_ns=now, now=stepped)
