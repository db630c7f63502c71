"""Sessions on one engine, through the real ``PruneSession``: the group rule.

A hypothesis state machine drives real sessions (``session.lifecycle.PruneSession``, their
own prune and their sweeps through the one pipeline, with the protocol's
``coordination.protocol.Coordinator``) on the tests' fake engine and a real registry
folder: sessions start, build images, networks and volumes, finish, die and hand work over
in any order while bad files land in the registry; nothing from before them, nothing a
live session started with and nothing it may have produced is ever deleted, and the last
one out leaves nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pytest_imageprune.coordination.place import PruneLock
from pytest_imageprune.coordination.protocol import Coordinator
from pytest_imageprune.coordination.records import (
    SessionRecord,
)
from pytest_imageprune.coordination.registry import Registry
from pytest_imageprune.engine.api import EngineError
from pytest_imageprune.errors import RegistryStuck
from pytest_imageprune.images.select import KeepRule
from pytest_imageprune.kinds.filters import parse_kind_filters
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.session.lifecycle import PruneSession
from pytest_imageprune.session.sweep import Sweeper
from tests.fakes import FakeEngine
from tests.test_records import BAD_RECORDS, _valid_json
from tests.test_registry import _plant

# -- the group rule, as a state machine ------------------------------------------------------
#: The other kinds the model's sessions prune beside their images.
KINDS = ("networks", "volumes")


def _stamp(ns: int) -> str:
    """``ns`` as the engine writes a time (RFC 3339, to the nanosecond)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NANOS)) + f".{ns % NANOS:09d}Z"


def _network(name: str, label: str, made_ns: int) -> dict[str, Any]:
    labels = {"s": label}
    return {
        "Name": name,
        "Id": name,
        "Created": _stamp(made_ns),
        "Labels": labels,
        "Scope": "local",
    }


def _volume(name: str, label: str, made_ns: int) -> dict[str, Any]:
    labels = {"s": label, "com.docker.volume.anonymous": ""}
    return {"Name": name, "CreatedAt": _stamp(made_ns), "Labels": labels, "Driver": "local"}


class Member:
    """One session of the model: a real ``PruneSession`` on the fake engine, pruning its
    images and its networks and volumes. ``finish(meanwhile)`` is its real end, with
    ``meanwhile(step)`` called at the steps where another session may finish while this
    one holds the lock: "holding" (the lock just taken), "pruned" (its own record
    settled), "sweeping" (before each owed record is swept)."""

    def __init__(self, engine: FakeEngine, root: Path, label: str) -> None:
        self.label = label
        filters = [f"label=s={label}"]
        self.session = PruneSession(
            parse_filters(filters),
            lock_path=root / "prune.lock",
            engine=engine,
            kinds={kind: parse_kind_filters(kind, filters) for kind in KINDS},
        )
        self.session.start()
        assert self.session.coordinator is not None, self.session.lines

    def finish(self, meanwhile: Callable[[str], None] | None = None) -> str:
        """The session's end: "completed", or "locked" when another held the lock."""
        coordinator = self.session.coordinator
        assert coordinator is not None
        if meanwhile is not None:
            _at_each_step(coordinator, meanwhile)
        self.session.finish()
        report = self.session.report
        assert report is not None, self.session.lines
        if report.status == "locked":
            return "locked"
        assert report.status == "completed", self.session.lines
        assert all(k.status == "completed" for k in self.session.kind_reports), self.session.lines
        return "completed"

    def die(self) -> None:
        """SIGKILL: the session's locks go, its record stays."""
        coordinator = self.session.coordinator
        assert coordinator is not None
        coordinator.stop_heartbeat()
        coordinator.close()


def _at_each_step(coordinator: Coordinator, meanwhile: Callable[[str], None]) -> None:
    """Call ``meanwhile`` at the steps of ``coordinator``'s finish where the lock is held
    (the coordinator's own methods, wrapped on this one object)."""
    take_lock, settle_own, sweep_owed = (
        coordinator.take_lock,
        coordinator.settle_own,
        coordinator.sweep_owed,
    )

    held: list[bool] = []

    def taking() -> bool:
        taken = take_lock()
        if taken:
            held.append(True)
            meanwhile("holding")
        return taken

    def settling(**kwargs: Any) -> None:
        settle_own(**kwargs)
        if held:  # not when it defers, the lock held elsewhere
            meanwhile("pruned")

    def sweeping(sweep: Callable[[SessionRecord, KeepRule, str], bool]) -> None:
        def step(record: SessionRecord, keep: KeepRule, state: str) -> bool:
            meanwhile("sweeping")
            return sweep(record, keep, state)

        sweep_owed(step)

    coordinator.take_lock = taking  # type: ignore[method-assign]
    coordinator.settle_own = settling  # type: ignore[method-assign]
    coordinator.sweep_owed = sweeping  # type: ignore[method-assign]


class Sessions(RuleBasedStateMachine):
    """Real sessions (``PruneSession``) start, build, finish, die and hand work over in any
    order, while bad files land in the registry; the protocol's promises hold throughout,
    for images and the other kinds alike."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="imageprune-sm-"))
        old = time.time_ns() - 3600 * NANOS
        self.engine = FakeEngine(
            Snapshot.of(
                [
                    Image("preexisting", labels={"s": "a"}),
                    Image("preexisting-b", labels={"s": "b"}, created_s=time.time_ns() // NANOS),
                ]
            ),
            networks=[_network("net-before", "a", old)],
            volumes=[_volume("vol-before", "b", time.time_ns())],
        )
        self.live: dict[int, Member] = {}
        #: What was on the engine when each session started.
        self.baseline: dict[int, set[str]] = {}
        self.dead: set[int] = set()
        #: Who made each image, network and volume.
        self.creator: dict[str, int] = {}
        self.counter = itertools.count()
        self.keys = itertools.count()

    @property
    def registry(self) -> Path:
        return self.root / "prune.lock.sessions"

    @initialize(labels=st.lists(st.sampled_from(["a", "b"]), min_size=2, max_size=3))
    def overlap(self, labels: list[str]) -> None:
        """Begin with sessions that overlap: every promise is about them."""
        for label in labels:
            self.start(label)

    @rule(label=st.sampled_from(["a", "b"]))
    def start(self, label: str) -> None:
        key = next(self.keys)
        self.baseline[key] = self._everything()
        self.live[key] = Member(self.engine, self.root, label)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), parented=st.booleans())
    def build(self, data: st.DataObject, parented: bool) -> None:
        """Some of the live sessions each build an image (on one of their own, maybe), a
        network or a volume, or several of them."""
        keys = data.draw(st.sets(st.sampled_from(sorted(self.live)), min_size=1))
        for key in sorted(keys):
            label = self.live[key].label
            what = data.draw(st.sets(st.sampled_from(["image", *KINDS]), min_size=1))
            now, n = time.time_ns(), next(self.counter)
            if "networks" in what:
                self.engine.listed["networks"].append(_network(f"net{n}", label, now))
                self.creator[f"net{n}"] = key
            if "volumes" in what:
                self.engine.listed["volumes"].append(_volume(f"vol{n}", label, now))
                self.creator[f"vol{n}"] = key
            if "image" not in what:
                continue
            parent = None
            if parented:
                mine = [i for i, c in self.creator.items() if c == key and i in self.engine.refs]
                parent = data.draw(st.sampled_from(mine)) if mine else None
            image = Image(
                f"img{n}",
                parent=parent,
                labels={"s": label},
                created_s=now // NANOS,
                created_ns=now,
                has_config=True,
            )
            self.engine.add(image)
            self.creator[image.id] = key

    @precondition(lambda self: self.live)
    @rule(data=st.data(), how=st.sampled_from(["finish", "die", "finish-while-locked"]))
    def end(self, data: st.DataObject, how: str) -> None:
        """A session finishes, dies (SIGKILL: its locks go, its record stays), or finishes
        while the lock is held elsewhere (it deletes nothing and defers its work)."""
        key = data.draw(st.sampled_from(sorted(self.live)))
        member = self.live.pop(key)
        if how == "die":
            member.die()
            self.dead.add(key)
        elif how == "finish":
            assert member.finish() == "completed"
            if not self.live:  # the last one out: nothing owed is left
                assert self._records() == [], self._records()
        else:
            holder = PruneLock(self.root / "prune.lock")
            assert holder.acquire()
            try:
                before = self._everything()
                assert member.finish() == "locked"
            finally:
                holder.release()
            assert self._everything() == before
            assert self._records(), "the deferred record is gone"

    @precondition(lambda self: len(self.live) >= 2)
    @rule(data=st.data(), when=st.sampled_from(["holding", "pruned", "sweeping"]))
    def hand_over(self, data: st.DataObject, when: str) -> None:
        """One session finishes while another holds the lock: it defers to the holder,
        which sweeps its work before it lets go (or once more after)."""
        holder_key, deferring_key = data.draw(
            st.lists(st.sampled_from(sorted(self.live)), min_size=2, max_size=2, unique=True)
        )
        holder = self.live.pop(holder_key)
        deferring = self.live.pop(deferring_key)
        outcome: list[str] = []

        def meanwhile(step: str) -> None:
            if step == when and not outcome:
                self._lost_by(deferring_key)  # still live until now
                outcome.append(deferring.finish())

        assert holder.finish(meanwhile) == "completed"
        if not outcome:  # nothing to sweep: the step never came; it finishes after
            outcome.append(deferring.finish())
            return
        assert outcome == ["locked"]
        if not self.live:  # no one left to protect: the holder swept the deferred work
            assert self._records() == [], self._records()

    @rule(kind=st.sampled_from(["garbage", "fifo", "symlink", "wrong-id"]), n=st.integers(0, 99))
    def plant_a_bad_file(self, kind: str, n: int) -> None:
        """Whatever lands in the registry, no promise may break."""
        if not self.registry.is_dir():
            return
        path = self.registry / f"{n:032x}.json"
        if path.exists() or path.is_symlink():
            return
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            path.symlink_to(self.root / "elsewhere.json")
        elif kind == "wrong-id":
            path.write_text(json.dumps(_valid_json(id="../../elsewhere")))
        else:
            path.write_text('{"filters": []}')

    @invariant()
    def nothing_from_before_any_session_is_deleted(self) -> None:
        assert {"preexisting", "preexisting-b", "net-before", "vol-before"} <= self._everything()

    @invariant()
    def nothing_a_live_session_has_or_may_have_produced_is_deleted(self) -> None:
        for key in self.live:
            self._lost_by(key)

    def _lost_by(self, key: int) -> None:
        """Nothing session ``key`` made is gone, nor anything there when it started (its
        tests may use it: the first version let another session's prune take that, and a
        live session's build failed)."""
        present = self._everything()
        lost = [i for i, c in self.creator.items() if c == key and i not in present]
        assert lost == [], f"deleted while their session lived: {lost}"
        gone = sorted(self.baseline[key] - present)
        assert gone == [], f"deleted from a live session's baseline: {gone}"

    def _everything(self) -> set[str]:
        """The images, networks and volumes on the engine."""
        listed = self.engine.listed
        return {*self.engine.refs, *(o["Name"] for o in (*listed["networks"], *listed["volumes"]))}

    def _records(self) -> list[str]:
        """What the registry holds (a bad file is removed by the next session that looks)."""
        return sorted(p.name for p in self.registry.glob("*.json"))

    def teardown(self) -> None:
        try:
            # Everyone finishes; then one more session, which finds no one alive, sweeps.
            for member in list(self.live.values()):
                member.finish()
            self.live.clear()
            Member(self.engine, self.root, "a").finish()
            heads = self.engine.snapshot()
            present = self._everything()
            leftovers = [
                i
                for i in present
                if i in self.creator and (i not in self.engine.refs or heads.is_head(i))
            ]
            assert leftovers == [], leftovers
            assert list(self.registry.glob("*")) == [], list(self.registry.iterdir())
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


Sessions.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sessions_never_prune_a_live_sessions_images = Sessions.TestCase


@pytest.mark.parametrize("finish_order", ["first-started-first", "last-started-first"])
def test_two_overlapping_sessions_lose_nothing_and_leave_nothing(
    tmp_path: Path, finish_order: str
) -> None:
    engine = FakeEngine(Snapshot.of([]))

    def make(name: str, label: str = "a") -> None:
        engine.add(
            Image(
                name,
                labels={"s": label},
                created_s=time.time_ns() // NANOS,
                created_ns=time.time_ns(),
                has_config=True,
            )
        )

    def session() -> PruneSession:
        s = PruneSession(parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine)
        s.start()
        return s

    first = session()
    make("first-before-second")
    second = session()
    make("first-after-second")
    make("second-own")
    a, b = (first, second) if finish_order == "first-started-first" else (second, first)
    a.finish()
    # While b lives nothing goes: what a made before b started is in b's baseline (its
    # tests may use it), what came after may be b's.
    assert set(engine.refs) == {"first-before-second", "first-after-second", "second-own"}
    # Said once, though both a's own prune and its sweep of its own deferral kept them.
    assert sum("live session" in line for line in a.lines) == 1, a.lines
    b.finish()
    assert set(engine.refs) == set(), b.lines
    # No line about a finished prune that deleted nothing.
    lines = a.lines + b.lines
    assert not [line for line in lines if "finished" in line and "deleted 0 images" in line], lines


@pytest.mark.parametrize("when", ["start", "finish"])
def test_an_unexpected_engine_failure_is_a_status_never_an_exception(
    tmp_path: Path, when: str
) -> None:
    def broken(call: int) -> BaseException | None:
        failing = call == 1 if when == "start" else call > 1
        return RuntimeError("malformed answer") if failing else None

    engine = FakeEngine(snapshot_fault=broken)
    session = PruneSession(parse_filters([]), lock_path=tmp_path / "l", engine=engine)
    session.start()
    session.finish()
    assert session.report is not None
    assert session.report.status == ("no-baseline" if when == "start" else "failed")
    assert any("malformed answer" in line for line in session.lines)


def test_sessions_finishing_together_leave_nothing(tmp_path: Path) -> None:
    """B finds the lock held by A and defers to it; A, holding it, waits and sweeps B's."""
    import threading

    engine, (a, b) = _two_sessions_that_built(tmp_path)
    assert b.coordinator is not None
    b.coordinator.finishing()  # b is about to take the lock...
    holder = threading.Thread(target=a.finish)
    holder.start()  # ...but a takes it first, and protects what b may have built
    deadline = time.monotonic() + 10
    while not any("live session" in line for line in a.lines):
        assert time.monotonic() < deadline, a.lines
        time.sleep(0.01)
    b.finish()
    holder.join(10)
    assert b.report is not None
    assert b.report.status == "locked"
    assert set(engine.refs) == set(), (a.lines, b.lines)
    assert any(line.startswith("imageprune: pruned what ") for line in a.lines), a.lines


def test_a_session_deferring_while_the_holder_sweeps_is_swept_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Y defers to X just after X looked at the registry, while X still holds the lock."""
    engine, (x, y) = _two_sessions_that_built(tmp_path)
    sweep = Sweeper.__call__
    calls: list[int] = []

    def sweep_then_y_finishes(self: Sweeper, *args: Any) -> bool:
        result = sweep(self, *args)
        if not calls:
            calls.append(1)
            y.finish()  # Y finds the lock held by X, and defers to it
        return result

    monkeypatch.setattr(Sweeper, "__call__", sweep_then_y_finishes)
    x.finish()
    assert y.report is not None
    assert y.report.status == "locked"
    assert calls == [1]
    assert set(engine.refs) == set(), (x.lines, y.lines)


def test_a_held_lock_says_who_prunes_and_that_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Y finds the lock held by X, which is pruning: Y names X, says its own prune is left
    for X, and X does it."""
    from pytest_imageprune.session.pipeline import Pipeline

    engine, (x, y) = _two_sessions_that_built(tmp_path)
    prune_for = Pipeline.prune_for

    def y_finishes_first(self: Pipeline, *args: Any) -> None:
        if y.report is None:
            y.finish()  # X holds the lock, its own prune about to begin
        prune_for(self, *args)

    monkeypatch.setattr(Pipeline, "prune_for", y_finishes_first)
    x.finish()
    assert x.record is not None
    started = time.strftime("%H:%M:%S", time.localtime(x.record.started_ns / 1e9))
    assert y.lines == [
        f"imageprune: a prune operation is already running (the session of pid {os.getpid()}"
        f" on {x.record.host} (started {started}) is pruning; lock {tmp_path / 'l'}); nothing"
        " deleted yet, and nothing is lost: the session pruning now (or the next one on this"
        " engine) does this session's prune too, with its filters"
    ]
    assert set(engine.refs) == set(), x.lines  # and so it did


def test_a_lock_held_outside_the_registry_is_said_so_and_the_next_session_finishes(
    tmp_path: Path,
) -> None:
    from filelock import FileLock

    engine, (first, second) = _two_sessions_that_built(tmp_path)
    outsider = FileLock(str(tmp_path / "l"), is_singleton=False)
    outsider.acquire(timeout=0)
    try:
        second.finish()  # the first still runs: it would keep what both built anyway
    finally:
        outsider.release()
    said = [line for line in second.lines if "already running" in line]
    assert said == [
        "imageprune: a prune operation is already running (a session done with its own"
        " prune and doing others', or a process outside the session registry, is pruning;"
        f" lock {tmp_path / 'l'}); nothing deleted yet, and nothing is lost: the session"
        " pruning now (or the next one on this engine) does this session's prune too, with"
        " its filters"
    ], second.lines
    first.finish()
    assert set(engine.refs) == set(), first.lines


@pytest.mark.parametrize("path", ["own prune", "sweep"])
def test_a_kind_that_failed_leaves_the_work_owed_on_either_path(tmp_path: Path, path: str) -> None:
    """One pipeline, one rule: a kind whose listing the engine answered with an error
    leaves the work owed, whether the session prunes its own or sweeps a dead one's; once
    the engine answers again, the next session finishes it."""
    failing = EngineError("500: listing networks failed", status=500)
    engine = FakeEngine(Snapshot.of([]))
    networks = {"networks": parse_kind_filters("networks", ["label=s=a"])}
    lock = tmp_path / "prune.lock"

    def session() -> PruneSession:
        s = PruneSession(
            parse_filters(["label=s=a"]), lock_path=lock, engine=engine, kinds=networks
        )
        s.start()
        return s

    first = session()
    engine.listed["networks"].append(_network("made", "a", time.time_ns()))
    if path == "sweep":
        assert first.coordinator is not None
        first.coordinator.stop_heartbeat()
        first.coordinator.close()  # SIGKILL: its record stays, owed
        time.sleep(0.01)
        engine.listing_faults["networks"] = failing
        sweeper = session()
        sweeper.finish()
        assert sweeper.report is not None
        assert sweeper.report.status == "completed"
        assert any("listing networks failed" in line for line in sweeper.lines), sweeper.lines
    else:
        engine.listing_faults["networks"] = failing
        first.finish()
        assert [k.status for k in first.kind_reports] == ["failed"], first.lines
    assert [n["Name"] for n in engine.listed["networks"]] == ["made"]
    assert len(list((tmp_path / "prune.lock.sessions").glob("*.json"))) == 1  # still owed
    del engine.listing_faults["networks"]
    later = session()
    later.finish()
    assert engine.listed["networks"] == [], later.lines
    assert list((tmp_path / "prune.lock.sessions").glob("*.json")) == [], later.lines


def test_what_was_deleted_is_reported_when_the_registry_is_given_up_on_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The images went, then the registry stopped answering before the build cache: the
    report says what went, and the line says nothing more was deleted."""
    record_id = "0123456789abcdef0123456789abcdef"
    engine = FakeEngine(
        Snapshot.of([]),
        cache=[{"ID": record_id, "CreatedAt": _stamp(time.time_ns() + NANOS), "Size": 10}],
    )
    kinds = {"build_cache": parse_kind_filters("build_cache", [])}
    session = PruneSession(
        parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine, kinds=kinds
    )
    session.start()
    now = time.time_ns()
    engine.add(Image("built", labels={"s": "a"}, created_s=now // NANOS, created_ns=now))
    assert session.coordinator is not None
    live = session.coordinator.live
    asked: list[int] = []

    def stuck_the_second_time() -> list[SessionRecord]:
        asked.append(1)
        if len(asked) > 1:  # the images' protection read it; the build cache's cannot
            raise RegistryStuck(str(tmp_path), 5.0)
        return live()

    monkeypatch.setattr(session.coordinator, "live", stuck_the_second_time)
    session.finish()
    assert "built" not in engine.refs
    report = session.report
    assert report is not None
    assert report.status == "completed", session.lines
    assert report.deleted_ids == ["built"]
    assert session.lines[0].startswith("imageprune: deleted 1 image,"), session.lines
    assert any(line.endswith("; nothing more deleted") for line in session.lines), session.lines
    assert engine.cache_prunes == []


def _two_sessions_that_built(tmp_path: Path) -> tuple[FakeEngine, tuple[PruneSession, ...]]:
    """Two live sessions on one fake engine, each having built one image of label s=a."""
    engine = FakeEngine(Snapshot.of([]))
    sessions = []
    for _ in range(2):
        session = PruneSession(
            parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine
        )
        session.start()
        sessions.append(session)
    for name in ("built-by-first", "built-by-second"):
        now = time.time_ns()
        engine.add(
            Image(name, labels={"s": "a"}, created_s=now // NANOS, created_ns=now, has_config=True)
        )
    return engine, tuple(sessions)


# -- the property: whatever the registry holds, the session's own prune completes -------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_BAD_VALUES = st.sampled_from([changes for changes, _ in BAD_RECORDS.values()])


@st.composite
def _registry_file(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["file", "file", "fifo", "symlink", "folder", "huge"]))
    shape = draw(st.sampled_from(["json", "mutated", "bytes"]))
    if shape == "json":
        content = json.dumps(draw(_JSON)).encode()
    elif shape == "mutated":
        data = _valid_json(**draw(_BAD_VALUES))
        content = json.dumps(data).encode()
    else:
        content = draw(st.binary(max_size=64))
    return kind, content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(_registry_file(), max_size=6))
def test_whatever_the_registry_holds_the_own_prune_completes_and_takes_only_its_own(
    files: list[tuple[str, bytes]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="imageprune-prop-"))
    try:
        victim = root / "victim"
        victim.write_text("keep me")
        # Outside the session's filters, inside the planted records' (label=a), and within
        # their lifetime: only a record wrongly believed could make the session take it.
        old = Image("preexisting", labels={"a": "1", "s": "b"}, created_s=1, has_config=True)
        engine = FakeEngine(Snapshot.of([old]))
        session = PruneSession(
            parse_filters(["label=s=a", "dangling=false"]),
            scope="all",
            lock_path=root / "prune.lock",
            engine=engine,
        )
        session.start()
        assert session.coordinator is not None
        for n, (kind, content) in enumerate(files):
            name = f"{n:032x}.json" if n % 3 else f"x{n}.json"
            _plant(session.coordinator.registry.directory, name, kind, content, victim)
        now = time.time_ns()
        engine.add(
            Image("own", labels={"s": "a"}, created_s=now // NANOS, created_ns=now, has_config=True)
        )
        done = threading.Event()

        def finish() -> None:
            session.finish()
            done.set()

        finisher = threading.Thread(target=finish, daemon=True)
        finisher.start()
        finisher.join(30)
        assert done.is_set(), "the session hung"
        assert session.report is not None
        assert session.report.status == "completed", session.lines
        assert set(engine.refs) == {"preexisting"}, session.lines
        assert victim.read_text() == "keep me"
        assert not any("Traceback" in line for line in session.lines)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_heartbeat_outlives_its_failures_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 8: a write error (a full disk) no longer stops the heartbeat silently."""
    beat = Registry.beat
    calls: list[int] = []

    def failing_beat(self: Registry) -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise OSError(28, "No space left on device")
        beat(self)

    monkeypatch.setattr(Registry, "beat", failing_beat)
    monkeypatch.setattr("pytest_imageprune.coordination.protocol.HEARTBEAT_NS", NANOS // 10)
    session = PruneSession(
        parse_filters([]), lock_path=tmp_path / "l", engine=FakeEngine(Snapshot.of([]))
    )
    session.start()
    assert session.coordinator is not None
    (alive,) = session.coordinator.registry.directory.glob("*.alive")
    first = alive.stat().st_mtime_ns
    deadline = time.monotonic() + 10
    while len(calls) < 6:
        assert time.monotonic() < deadline, "the heartbeat stopped"
        time.sleep(0.02)
    assert alive.stat().st_mtime_ns > first  # it beats again after the failures
    session.finish()
    assert any("heartbeat failed 3 times" in line for line in session.lines), session.lines


def test_a_record_of_another_engine_is_never_acted_on(tmp_path: Path) -> None:
    """Issue 20, finding 1 of its probe: two dockerds on one host report one ID (Docker
    20.10 takes it from /etc/docker/key.json). A session killed on engine 2 was swept by
    the next session on engine 1, which deleted engine 1's image ``z``; and a live session
    on one engine made the other's keep everything. Now a record speaks for one engine:
    its ID and data root."""
    lock = tmp_path / "prune.lock"  # one lock given for both engines
    one = FakeEngine(Snapshot.of([]), engine_id="SAME-ID /var/lib/docker")
    two = FakeEngine(Snapshot.of([]), engine_id="SAME-ID /var/lib/docker-2")

    def session(engine: FakeEngine) -> PruneSession:
        s = PruneSession(parse_filters(["label=s=a"]), lock_path=lock, engine=engine)
        s.start()
        return s

    def make(engine: FakeEngine, name: str) -> None:
        now = time.time_ns()
        engine.add(
            Image(name, labels={"s": "a"}, created_s=now // NANOS, created_ns=now, has_config=True)
        )

    killed = session(two)
    make(two, "orphan")
    make(one, "z")  # another client's, on engine 1, while the session on engine 2 lived
    coordinator = killed.coordinator
    assert coordinator is not None
    coordinator.stop_heartbeat()
    coordinator.close()  # SIGKILL: its record stays, its locks go

    on_one = session(one)
    on_one.finish()
    assert set(one.refs) == {"z"}, on_one.lines  # the dead session was engine 2's
    assert not any("pruned what" in line for line in on_one.lines), on_one.lines

    live_on_two = session(two)
    on_one = session(one)
    make(one, "made-by-one")
    on_one.finish()
    # The live session on engine 2 needs nothing of engine 1's.
    assert set(one.refs) == {"z"}, on_one.lines
    assert not any("live session" in line for line in on_one.lines), on_one.lines
    live_on_two.finish()  # engine 2's last one out sweeps the dead session there
    assert set(two.refs) == set(), live_on_two.lines
    assert any("left when it died" in line for line in live_on_two.lines), live_on_two.lines


def test_a_session_that_starts_while_the_images_are_listed_is_seen(tmp_path: Path) -> None:
    """A review found it: the live sessions were read before the images were listed, so a
    session that started during the listing was missed, and what its baseline holds was
    deleted (the tox -p "No such image" failure). They are read once the images are listed."""
    armed: list[bool] = []
    started: list[PruneSession] = []

    def start_b_meanwhile(count: int) -> BaseException | None:
        if armed and not started:
            armed.clear()
            started.append(session())  # B starts while A's images are being listed
        return None

    engine = FakeEngine(Snapshot.of([]), snapshot_fault=start_b_meanwhile)
    lock = tmp_path / "prune.lock"

    def session() -> PruneSession:
        s = PruneSession(parse_filters(["label=s=a"]), lock_path=lock, engine=engine)
        s.start()
        return s

    a = session()
    now = time.time_ns()
    engine.add(Image("a-built", labels={"s": "a"}, created_s=now // NANOS, created_ns=now))
    armed.append(True)
    a.finish()
    assert started, "B never started: the hook missed A's listing"
    (b,) = started
    assert "a-built" in engine.refs, a.lines  # in B's baseline: kept while B lives
    assert any("while another live session runs" in line for line in a.lines), a.lines
    b.finish()  # the last one out takes it
    assert "a-built" not in engine.refs, b.lines


def test_a_dry_run_that_died_is_never_pruned_for(tmp_path: Path) -> None:
    """A hostile probe of issue 20's meeting place: a dry-run session killed mid-run was
    swept as a real one, and the next session deleted what the dry run had built, which the
    dry run promised never to touch. Now its record says it is a dry run: no one deletes
    for it; its record goes."""
    lock = tmp_path / "prune.lock"
    engine = FakeEngine(Snapshot.of([]))
    dry = PruneSession(parse_filters(["label=s=a"]), lock_path=lock, engine=engine, dry_run=True)
    dry.start()
    now = time.time_ns()
    engine.add(Image("built", labels={"s": "a"}, created_s=now // NANOS, created_ns=now))
    coordinator = dry.coordinator
    assert coordinator is not None
    coordinator.stop_heartbeat()
    coordinator.close()  # SIGKILL: its record stays, its locks go

    later = PruneSession(parse_filters(["label=s=a"]), lock_path=lock, engine=engine)
    later.start()
    later.finish()
    assert set(engine.refs) == {"built"}, later.lines
    assert list((tmp_path / "prune.lock.sessions").glob("*.json")) == []
