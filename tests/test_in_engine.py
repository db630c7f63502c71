"""The engine's meeting place (``coordination.in_engine``) on a fake engine's volumes.

The fake answers as the four engines were seen to (``benchmarks/bench_engine_meeting.py``,
docs/performance.md): ``CreatedAt`` and ``Date`` in whole seconds of the engine's clock, a
second create of a name answered with the volume that has it, a label filter. The engine
tests (test_engine_meeting.py) hold the same on real engines, in separate mount namespaces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.coordination.evidence import Arrival, protect_live
from pytest_imageprune.coordination.in_engine import (
    FINISHED,
    LEASE,
    RECORD,
    ROLE,
    ROOM,
    STATE,
    EngineMeeting,
    Refused,
    lease_from_env,
)
from pytest_imageprune.coordination.place import place_of_lock
from pytest_imageprune.coordination.protocol import Coordinator
from pytest_imageprune.coordination.records import (
    DEAD,
    DEFERRED,
    FINISHING,
    RUNNING,
    UNSEEN_ID,
    BadRecord,
    SessionRecord,
)
from pytest_imageprune.engine.api import MEETING_LABEL, EngineError, Gone, http_date_ns
from pytest_imageprune.kinds.table import VOLUMES
from pytest_imageprune.kinds.things import listing
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline, Image, Snapshot
from pytest_imageprune.session.lifecycle import PruneSession
from tests.fakes import FakeEngine

T0 = 1_800_000_000  # the engine's clock, in seconds


class FakeVolumes:
    """An engine's volumes and clock, as the meeting place sees them."""

    def __init__(self) -> None:
        self.now_s = T0
        self.volumes: dict[str, dict[str, Any]] = {}
        self.refuse = False
        self.requests = 0
        self.guard = threading.Lock()

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now_s))

    def meeting_volumes(self) -> tuple[list[Mapping[str, Any]], int | None]:
        with self.guard:
            self.requests += 1
            found: list[Mapping[str, Any]] = [
                dict(v) for v in self.volumes.values() if MEETING_LABEL in (v["Labels"] or {})
            ]
            return found, self.now_s * NANOS

    def make_volume(
        self, name: str, labels: Mapping[str, str]
    ) -> tuple[Mapping[str, Any], int | None]:
        with self.guard:
            self.requests += 1
            if self.refuse:
                raise EngineError("403 Forbidden: volumes are not allowed", status=403)
            if name not in self.volumes:
                self.volumes[name] = {
                    "Name": name,
                    "Labels": dict(labels),
                    "CreatedAt": self._stamp(),
                    "Driver": "local",
                }
            return dict(self.volumes[name]), self.now_s * NANOS

    def drop_volume(self, name: str) -> None:
        with self.guard:
            self.requests += 1
            if self.volumes.pop(name, None) is None:
                raise Gone(name)

    def spawn(self, count: int) -> list[Any]:
        return [self]

    def ours(self, ident: str) -> list[str]:
        return sorted(n for n, v in self.volumes.items() if v["Labels"][MEETING_LABEL] == ident)


def _record(**fields: Any) -> SessionRecord:
    baseline = Baseline({"sha256:" + "a" * 64: ("old:1",)}, taken_ns=1)
    return SessionRecord.new(baseline, {"label": ["ci"]}, "session", time.time_ns(), **fields)


def _meeting(engine: FakeVolumes, lease_s: float = 60, room: str = "r") -> EngineMeeting:
    return EngineMeeting(engine, lease_s=lease_s, room=room)


def _others(meeting: EngineMeeting) -> list[tuple[SessionRecord, str] | BadRecord]:
    return list(meeting.others())


def test_a_session_is_seen_running_from_elsewhere_with_its_start_on_the_engines_clock() -> None:
    engine = FakeVolumes()
    mine, theirs = _meeting(engine), _meeting(engine)
    record = _record()
    mine.join(record)
    try:
        ((seen, state),) = _others(theirs)  # type: ignore[misc]
        assert state == RUNNING
        assert seen.id == record.id
        assert seen.baseline == record.baseline
        assert seen.filters == record.filters
        # Its start is the engine's, a little before its first answer; not its host's.
        assert seen.started_ns == T0 * NANOS - 2 * NANOS
        assert seen.clock is None
        assert seen.engine == ""
        mine.finishing()
        ((seen, state),) = _others(theirs)  # type: ignore[misc]
        assert (seen.state, state) == (FINISHING, RUNNING)
    finally:
        mine.close()


def test_a_lease_that_runs_out_is_a_dead_session_ended_soon_after_its_last_sign() -> None:
    engine = FakeVolumes()
    mine, theirs = _meeting(engine, lease_s=60), _meeting(engine)
    mine.join(_record())
    mine.stop()  # no more renewals: as if killed
    engine.now_s += 62  # within the lease and its rounding: still live
    ((_, state),) = _others(theirs)  # type: ignore[misc]
    assert state == RUNNING
    engine.now_s += 1
    ((seen, state),) = _others(theirs)  # type: ignore[misc]
    assert state == DEAD
    # It lived at its last lease (whole seconds: up to 1 s later), and at most one
    # renewal (5 s) after it; then the slack every death gets.
    assert seen.heartbeat_ns == (T0 + 1 + 5) * NANOS
    assert seen.death_ns == (T0 + 8) * NANOS


def test_a_lease_is_renewed_and_only_the_newest_stays() -> None:
    engine = FakeVolumes()
    mine = _meeting(engine, lease_s=3)  # renewed every 0.25 s
    record = _record()
    mine.join(record)
    try:
        deadline = time.monotonic() + 10
        while not any(n.endswith("-lease-3") for n in engine.volumes):
            assert time.monotonic() < deadline, engine.volumes
            time.sleep(0.05)
    finally:
        mine.stop()
    leases = [n for n in engine.ours(record.id) if "-lease-" in n]
    assert len(leases) == 1


def test_a_finished_session_leaves_nothing_and_a_deferred_one_only_its_record() -> None:
    engine = FakeVolumes()
    done, deferred = _meeting(engine), _meeting(engine)
    first, second = _record(), _record()
    done.join(first)
    deferred.join(second)
    done.settle(first, done=True)
    assert engine.ours(first.id) == []
    engine.now_s += 30
    deferred.settle(second, done=False, present=frozenset({"sha256:" + "b" * 64}))
    (left,) = engine.ours(second.id)
    assert left.endswith("-record-1")
    labels = engine.volumes[left]["Labels"]
    assert labels[STATE] == DEFERRED
    assert int(labels[FINISHED]) == (T0 + 31) * NANOS
    watcher = _meeting(engine)
    ((seen, state),) = _others(watcher)  # type: ignore[misc]
    assert state == DEFERRED
    assert seen.finished_ns == (T0 + 31) * NANOS
    assert seen.present == frozenset({"sha256:" + "b" * 64})
    # Swept to the end by another: nothing stays.
    watcher.settle(seen, done=True)
    assert engine.volumes == {}


def test_a_dead_session_swept_but_still_owed_is_left_deferred_at_its_death() -> None:
    engine = FakeVolumes()
    mine, sweeper = _meeting(engine), _meeting(engine)
    record = _record()
    mine.join(record)
    mine.stop()
    engine.now_s += 100
    ((seen, state),) = _others(sweeper)  # type: ignore[misc]
    assert state == DEAD
    sweeper.settle(seen, done=False, end_ns=seen.death_ns)
    ((again, state),) = _others(sweeper)  # type: ignore[misc]
    assert state == DEFERRED
    assert again.finished_ns == seen.death_ns
    assert again.started_ns == seen.started_ns
    assert [n for n in engine.ours(record.id) if "-lease-" in n] == []


def test_one_prune_at_a_time_on_the_engine_and_a_dead_holders_claim_goes() -> None:
    engine = FakeVolumes()
    first, second = _meeting(engine), _meeting(engine)
    one, two = _record(), _record()
    first.join(one)
    second.join(two)
    try:
        assert first.claim(one.id)
        assert not second.claim(two.id)  # held: tried again twice, still held
        assert second.holder == f"pid {one.pid} on {one.host} (seen in the engine)"
        assert not any(n.endswith(f"{two.id}-lock") for n in engine.volumes)
        first.unclaim()
        assert second.claim(two.id)
        second.unclaim()
        # A holder that dies holding it: its claim holds as long as its lease.
        assert first.claim(one.id)
        first.stop()
        assert not second.claim(two.id)
        engine.now_s += 100
        second._renew()  # the second lives on: its lease is renewed
        assert second.claim(two.id)
        assert not any(n.endswith(f"{one.id}-lock") for n in engine.volumes)
    finally:
        first.close()
        second.close()


def test_two_claims_at_once_never_both_hold() -> None:
    engine = FakeVolumes()
    meetings = [_meeting(engine) for _ in range(4)]
    records = [_record() for _ in meetings]
    for meeting, record in zip(meetings, records, strict=True):
        meeting.join(record)
    holders: list[int] = []
    start = threading.Barrier(len(meetings))

    def claim(index: int) -> None:
        start.wait()
        if meetings[index].claim(records[index].id):
            holders.append(index)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(meetings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for meeting in meetings:
        meeting.close()
    assert len(holders) <= 1


def test_sessions_of_another_room_are_never_seen() -> None:
    engine = FakeVolumes()
    mine = _meeting(engine, room="one")
    mine.join(_record())
    try:
        assert _others(_meeting(engine, room="two")) == []
        assert all(v["Labels"][ROOM] == "one" for v in engine.volumes.values())
    finally:
        mine.close()


def test_a_record_that_does_not_decode_is_a_live_unknown_session_or_removed() -> None:
    engine = FakeVolumes()
    mine, theirs = _meeting(engine), _meeting(engine)
    record = _record()
    mine.join(record)
    mine.stop()
    (name,) = [n for n in engine.volumes if "-record-" in n]
    engine.volumes[name]["Labels"][RECORD] = "not base64!"
    bad, (seen, state) = _others(theirs)  # type: ignore[misc]
    assert isinstance(bad, BadRecord)
    assert bad.live
    assert state == RUNNING
    assert seen.pid == 0
    engine.now_s += 100
    (bad,) = _others(theirs)
    assert isinstance(bad, BadRecord)
    assert bad.removed
    assert engine.volumes == {}


def test_a_lease_with_no_record_is_a_live_session_and_is_removed_once_run_out() -> None:
    engine = FakeVolumes()
    mine = _meeting(engine)
    record = _record()
    mine.join(record)
    mine.stop()
    for name in [n for n in engine.volumes if "-record-" in n]:
        del engine.volumes[name]  # docker volume rm, say
    ((seen, state),) = _others(_meeting(engine))  # type: ignore[misc]
    assert state == RUNNING
    assert seen.id == record.id
    assert seen.pid == 0
    engine.now_s += 100
    assert _others(_meeting(engine)) == []
    assert engine.volumes == {}


def test_a_volume_of_that_name_that_is_someone_elses_is_refused() -> None:
    engine = FakeVolumes()
    record = _record()
    engine.volumes[f"pytest-imageprune-{record.id}-lease-0"] = {
        "Name": f"pytest-imageprune-{record.id}-lease-0",
        "Labels": {MEETING_LABEL: "f" * 32},
        "CreatedAt": "2027-01-15T08:00:00Z",
    }
    with pytest.raises(Refused, match="someone else's"):
        _meeting(engine).join(record)


def _coordinator(tmp_path: Path, engine: FakeVolumes) -> Coordinator:
    place = place_of_lock(tmp_path / "prune.lock", "tcp://engine:2376")
    coordinator = Coordinator(place, meeting=_meeting(engine))
    coordinator.open()
    return coordinator


def test_a_session_seen_only_in_the_engine_is_protected_and_swept_like_one_in_the_files(
    tmp_path: Path,
) -> None:
    engine = FakeVolumes()
    elsewhere = _meeting(engine)
    theirs = _record()
    elsewhere.join(theirs)  # a job in another container: no file of it here
    here = _coordinator(tmp_path / "here", engine)
    try:
        here.join(_record())
        (live,) = here.live()
        assert live.id == theirs.id
        image = Image(id="sha256:" + "c" * 64, created_s=T0)
        kept = protect_live(here.live())(image)
        assert kept is not None
        assert "may belong to a live session" in str(kept)
        # It dies: once its lease runs out, the lock holder sweeps it, and its volumes go.
        elsewhere.stop()
        engine.now_s += 100
        here.meeting._renew()  # type: ignore[union-attr]  # this one lives on
        assert here.take_lock()
        swept: list[tuple[str, str]] = []

        def sweep(record: SessionRecord, keep: object, state: str) -> bool:
            swept.append((record.id, state))
            here.swept(record, done=True)
            return True

        here.sweep_owed(sweep)
        here.release_lock()
        assert swept == [(theirs.id, "died")]
        assert engine.ours(theirs.id) == []
    finally:
        here.close()


def test_a_session_the_files_show_is_judged_by_its_files_not_its_lease(tmp_path: Path) -> None:
    engine = FakeVolumes()
    first = _coordinator(tmp_path, engine)
    second = _coordinator(tmp_path, engine)
    try:
        one = _record()
        first.join(one)
        second.join(_record())
        first.meeting.stop()  # type: ignore[union-attr]
        engine.now_s += 100  # its lease ran out, but its .alive lock is held: it runs
        (live,) = second.live()
        assert live.id == one.id
        assert live.pid == one.pid
        assert second._others().dead == []
    finally:
        first.close()
        second.close()


def test_an_engine_that_refuses_the_volumes_keeps_everything_and_says_why(tmp_path: Path) -> None:
    engine = FakeVolumes()
    engine.refuse = True
    coordinator = _coordinator(tmp_path, engine)
    try:
        coordinator.join(_record())
        assert coordinator.unmet is not None
        assert "403" in coordinator.unmet
        (live,) = coordinator.live()
        assert live.id == UNSEEN_ID
        kept = protect_live(coordinator.live())(Image(id="sha256:" + "d" * 64, created_s=T0))
        assert kept is not None
        assert "elsewhere on this engine" in str(kept)
        assert coordinator.take_lock()
        coordinator.release_lock()
    finally:
        coordinator.close()


def test_the_meeting_volumes_are_never_a_volume_prunes_to_take() -> None:
    engine = FakeVolumes()
    meeting = _meeting(engine)
    meeting.join(_record())
    meeting.stop()

    class Objects:
        podman = False
        api_version = "1.41"

        def objects(self, kind: str) -> list[Mapping[str, Any]]:
            if kind == "volumes":
                return [*engine.volumes.values(), {"Name": "a" * 64, "Labels": None}]
            return []

    assert [t.name for t in listing(Objects(), VOLUMES)] == ["a" * 64]  # type: ignore[arg-type]


def test_the_engines_date_is_read_in_whole_seconds() -> None:
    assert http_date_ns("Mon, 07 Dec 2026 06:25:26 GMT") == 1796624726 * NANOS
    assert http_date_ns("Mon, 07 Dec 2026 06:25:26 CET") is None
    assert http_date_ns("yesterday") is None
    assert http_date_ns(None) is None


def test_the_roles_are_labelled_for_a_user_to_see() -> None:
    engine = FakeVolumes()
    meeting = _meeting(engine)
    record = _record()
    meeting.join(record)
    meeting.stop()
    roles = {v["Labels"][ROLE] for v in engine.volumes.values()}
    assert roles == {"lease", "record"}
    assert all(n.startswith(f"pytest-imageprune-{record.id}-") for n in engine.volumes)


class RefusingEngine(FakeEngine):
    """A fake engine behind a proxy that forbids volumes (``docker-socket-proxy`` with
    ``VOLUMES=0``): it answers every other question."""

    def meeting_volumes(self) -> tuple[list[Mapping[str, Any]], int | None]:
        raise EngineError("403 Forbidden", status=403)

    def make_volume(
        self, name: str, labels: Mapping[str, str]
    ) -> tuple[Mapping[str, Any], int | None]:
        raise EngineError("403 Forbidden", status=403)

    def drop_volume(self, name: str) -> None:
        raise EngineError("403 Forbidden", status=403)

    def spawn(self, count: int) -> list[Any]:
        return [self, self]


def test_a_session_the_engine_will_not_let_meet_keeps_its_images_and_says_so(
    tmp_path: Path,
) -> None:
    engine = RefusingEngine(Snapshot.of([Image("old", labels={"s": "a"}, created_s=1)]))
    session = PruneSession(parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine)
    session.start()
    now = time.time_ns()
    engine.add(
        Image("new", labels={"s": "a"}, created_s=now // NANOS, created_ns=now, has_config=True)
    )
    session.finish()
    assert session.report is not None
    assert session.report.deleted_ids == []
    assert "new" in session.report.kept
    (line,) = [x for x in session.voice.lines if "could not meet the other sessions" in x]
    assert "403" in line
    assert "every image and object in this session's scope was kept" in line
    # Nothing is left owed: every later session would keep it all the same.
    assert list((tmp_path / "l.sessions").glob("*.json")) == []


def test_a_record_on_the_engines_clock_asks_the_log_by_the_engines_now() -> None:
    """A sweeping host whose clock is a minute behind the engine's: the dead session's end
    (engine's clock) looks later than this host's now. Judged by this host's clock, the log
    was not asked ("nothing can have come after yet"), and an image loaded after the death,
    whose Created lies in the lifetime, was deleted; judged by the engine's now, the log is
    asked up to it, and shows the load."""
    host_now = time.time_ns()
    engine_now = host_now + 60 * NANOS
    record = replace(
        _record(),
        started_ns=engine_now - 100 * NANOS,
        heartbeat_ns=engine_now - 20 * NANOS,
        clock=None,
        engine_clock=True,
    )
    loaded = "sha256:" + "e" * 64
    asked: list[tuple[int, int]] = []

    def events(since: int, until: int) -> list[Mapping[str, Any]]:
        asked.append((since, until))
        load = {"Type": "image", "Action": "load", "Actor": {"ID": loaded}}
        return [{**load, "timeNano": record.death_ns + 5 * NANOS}]

    def inspect(image_id: str) -> Mapping[str, Any]:
        created = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime((engine_now - 50 * NANOS) // NANOS)
        )
        return {"Id": image_id, "Created": created}

    arrival = Arrival(inspect, None, events, None, lambda: engine_now)
    kept = arrival.doubt(Image(id=loaded, created_s=0), record)
    assert kept is not None
    assert "after that session ended" in str(kept)
    assert asked == [(record.death_ns, engine_now)]
    # Without the engine's now, the log cannot be asked rightly: doubt, never a guess.
    blind = Arrival(inspect, None, events, None, None)
    assert blind.doubt(Image(id=loaded, created_s=0), record) is not None


def test_a_lease_that_is_no_number_is_the_default_and_blinds_nothing() -> None:
    """A hostile probe: a lease volume labelled ``lease=nan`` made every session's look
    fail (``int(nan)``), so each kept everything, said to allow volumes, and left its own
    volumes behind; ``PYTEST_IMAGEPRUNE_ENGINE_LEASE=nan`` made the renewals spin."""
    assert lease_from_env({"PYTEST_IMAGEPRUNE_ENGINE_LEASE": "nan"}) == 300
    assert lease_from_env({"PYTEST_IMAGEPRUNE_ENGINE_LEASE": "inf"}) == 300
    assert lease_from_env({"PYTEST_IMAGEPRUNE_ENGINE_LEASE": "1"}) == 3
    engine = FakeVolumes()
    other = "a" * 32
    engine.volumes[f"pytest-imageprune-{other}-lease-0"] = {
        "Name": f"pytest-imageprune-{other}-lease-0",
        "Labels": {MEETING_LABEL: other, ROOM: "r", ROLE: "lease", LEASE: "nan"},
        "CreatedAt": "2027-01-15T08:00:00Z",
    }
    mine = _meeting(engine)
    record = _record()
    mine.join(record)
    mine.stop()
    ((seen, state),) = _others(mine)  # type: ignore[misc]
    assert (seen.id, state) == (other, RUNNING)  # a live session: its lease, the default's
    engine.now_s += 400
    assert _others(mine) == []  # run out: removed
    mine.settle(record, done=True)
    assert engine.volumes == {}


def test_a_session_keeps_its_claim_while_it_sweeps_after_its_own_prune() -> None:
    """A hostile probe: a session's own settling removed its claim before it swept the
    others' work, and another session elsewhere swept the same dead record meanwhile."""
    engine = FakeVolumes()
    mine, theirs = _meeting(engine), _meeting(engine)
    one, two = _record(), _record()
    mine.join(one)
    theirs.join(two)
    try:
        assert mine.claim(one.id)
        mine.settle(one, done=True)  # its own prune done; it now sweeps the others'
        # Its record is gone; its claim, and the lease that keeps the claim, stay.
        left = engine.ours(one.id)
        assert f"pytest-imageprune-{one.id}-lock" in left
        assert not any("-record-" in n for n in left)
        assert not theirs.claim(two.id)
        engine.now_s += 30  # a claim unrenewed for three renewals holds no longer
        assert theirs.claim(two.id)
        theirs.unclaim()
        engine.now_s -= 30
        mine._renew()
        mine.unclaim()
        assert engine.ours(one.id) == []
        assert theirs.claim(two.id)
    finally:
        mine.close()
        theirs.close()


def test_a_lease_left_unrenewed_past_its_length_is_told() -> None:
    """A session stopped (SIGSTOP, a paused container) or starved (one call holding the
    GIL) longer than its lease may be taken for dead elsewhere: it cannot undo that, but
    it says so."""
    engine = FakeVolumes()
    meeting = _meeting(engine, lease_s=3)
    meeting.join(_record())
    try:
        with engine.guard:  # the engine does not answer its renewals for 3.5 s
            time.sleep(3.5)
        deadline = time.monotonic() + 10
        while not meeting.lapsed_s:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        meeting.stop()
    assert meeting.lapsed_s > 3


def test_a_record_of_uses_is_no_sessions_and_is_kept_in_its_room_only() -> None:
    """The record of what containers used (``budget.record``) stays in the meeting place by
    design: it is never taken for a session (one with no record and a lease that holds
    would be a live one of unknown baseline, keeping everything), nor read in another room,
    nor removed by a look."""
    from pytest_imageprune.budget import record

    engine = FakeVolumes()
    writer, other_room = _meeting(engine), _meeting(engine, room="elsewhere")
    record.keep(writer, {"sha256:" + "a" * 64: 5 * NANOS}, frozenset(), 0)
    (name,) = engine.volumes
    assert name.endswith("-uses")
    assert _others(writer) == []
    assert list(engine.volumes) == [name]
    assert record.recorded(writer, 0) == {"sha256:" + "a" * 64: 5 * NANOS}
    assert record.recorded(other_room, 0) == {}
    writer.drop_uses([name, "pytest-imageprune-" + "b" * 32 + "-lease-1"])
    assert engine.volumes == {}


@pytest.mark.parametrize("forged", ["bomb", "nested"])
def test_a_record_that_inflates_past_any_or_nests_too_deep_is_a_bad_one(forged: str) -> None:
    """A record volume anyone who reaches the engine can make: one that would inflate to a
    gigabyte is not inflated, one nested past Python's depth is not parsed; each is a bad
    record (a live session of unknown baseline, which keeps everything), never an error."""
    import base64
    import zlib

    engine = FakeVolumes()
    mine, theirs = _meeting(engine), _meeting(engine)
    mine.join(_record())
    mine.stop()
    (name,) = [n for n in engine.volumes if "-record-" in n]
    if forged == "bomb":
        squeezer = zlib.compressobj(9)
        packed = b"".join(squeezer.compress(b" " * (1 << 24)) for _ in range(64))
        raw = packed + squeezer.flush()  # a gigabyte of spaces, about a megabyte packed
    else:
        raw = zlib.compress(b"[" * 200_000 + b"]" * 200_000, 9)
    engine.volumes[name]["Labels"][RECORD] = base64.b64encode(raw).decode()
    bad, (_, state) = _others(theirs)  # type: ignore[misc]
    assert isinstance(bad, BadRecord), bad
    assert "does not decode" in bad.reason
    assert bad.live
    assert state == RUNNING
