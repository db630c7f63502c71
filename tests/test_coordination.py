"""The bounds of the coordination: no wait at session end outlasts its deadline.

No stuck network mount can be made here, so the faults are injected: a registry or lock
operation that blocks (as ``listdir``, ``open`` or ``utime`` do on a hard NFS mount whose
server is gone). The protocol itself is checked by the state machine in test_sessions.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.coordination import protocol as coordination
from pytest_imageprune.coordination import worker as bounded
from pytest_imageprune.coordination.place import PruneLock
from pytest_imageprune.coordination.registry import Registry
from pytest_imageprune.coordination.worker import Worker
from pytest_imageprune.errors import RegistryStuck
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.session.lifecycle import PruneSession
from tests.fakes import FakeEngine

DEADLINE = 0.3


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: whatever blocked returns then (the mount came back)."""
    event = threading.Event()
    yield event
    event.set()


def test_the_worker_gives_up_once_and_refuses_at_once_after() -> None:
    worker = Worker(DEADLINE)
    assert worker.run("/x", lambda: 42) == 42
    empty: dict[str, int] = {}
    with pytest.raises(KeyError):
        worker.run("/x", lambda: empty["missing"])  # an error is the caller's, as if called
    blocked = threading.Event()
    started = time.monotonic()
    with pytest.raises(RegistryStuck, match=r"after waiting 0\.3 s for /stuck/file"):
        worker.run("/stuck/file", lambda: blocked.wait(10))
    assert DEADLINE <= time.monotonic() - started < DEADLINE + 1
    started = time.monotonic()
    with pytest.raises(RegistryStuck, match="/stuck/file"):
        worker.run("/elsewhere", lambda: 1)
    assert time.monotonic() - started < 0.05
    blocked.set()
    worker.stop()


def _session(tmp_path: Path) -> tuple[PruneSession, FakeEngine]:
    engine = FakeEngine(Snapshot.of([Image("old", labels={"s": "a"}, created_s=1)]))
    session = PruneSession(parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine)
    session.start()
    now = time.time_ns()
    engine.add(
        Image("new", labels={"s": "a"}, created_s=now // NANOS, created_ns=now, has_config=True)
    )
    return session, engine


#: The operation that blocks, and the path the line names (``{dir}``: the registry folder,
#: ``{id}``: the session's ID).
STUCK = {
    "finishing-mark": ("write", "{dir}/{id}.json"),
    "lock": ("acquire", "{lock}"),
    "registry-listing": ("classify", "{dir}"),
    "heartbeat": ("beat", "{dir}/{id}.alive"),
    "own-record-settled": ("settle", "{dir}/{id}.json"),
}


@pytest.mark.parametrize(("operation", "path"), STUCK.values(), ids=STUCK.keys())
def test_a_stuck_registry_operation_ends_the_session_within_its_bound(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    release: threading.Event,
    operation: str,
    path: str,
) -> None:
    monkeypatch.setattr(bounded, "DEADLINE_S", DEADLINE)
    monkeypatch.setattr(coordination, "HEARTBEAT_NS", NANOS // 50)
    session, engine = _session(tmp_path)
    assert session.coordinator is not None
    registry = session.coordinator.registry
    blocked = threading.Event()

    def block(*args: Any, **kwargs: Any) -> None:
        blocked.set()
        release.wait(30)

    owner = PruneLock if operation == "acquire" else Registry
    monkeypatch.setattr(owner, operation, block)
    if operation == "beat":
        assert blocked.wait(5), "no heartbeat"
    started = time.monotonic()
    session.finish()
    took = time.monotonic() - started
    assert took < 2 * DEADLINE, took  # one wait, then every operation refused at once

    assert session.record is not None
    where = path.format(dir=registry.directory, id=session.record.id, lock=tmp_path / "l")
    said = f"imageprune: WARNING gave up on the session registry after waiting 0.3 s for {where}"
    assert session.report is not None
    if operation == "settle":  # the own prune had run: it stays, nothing more is deleted
        assert set(engine.refs) == {"old"}
        assert session.report.status == "completed"
        assert f"{said}; nothing more deleted" in session.lines, session.lines
    else:
        assert set(engine.refs) == {"old", "new"}
        assert session.report.status == "no-registry"
        assert f"{said}; nothing deleted" in session.lines, session.lines
        assert [line for line in session.lines if "WARNING" in line] == [
            f"{said}; nothing deleted"
        ], session.lines

    # The mount comes back; the process ends (its locks go). The next session finishes
    # what the stuck one left. (Stuck while holding the prune lock, it holds it until its
    # process ends, which a test in this process cannot show.)
    release.set()
    if operation in ("classify", "settle"):
        return
    monkeypatch.undo()
    registry.close()
    later = PruneSession(parse_filters(["label=s=a"]), lock_path=tmp_path / "l", engine=engine)
    later.start()
    later.finish()
    assert set(engine.refs) == {"old"}, later.lines
    assert list(registry.directory.glob("*.json")) == [], later.lines


def test_a_stuck_registry_at_the_start_is_said_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    monkeypatch.setattr(bounded, "DEADLINE_S", DEADLINE)

    def block(*args: Any, **kwargs: Any) -> None:
        release.wait(30)

    monkeypatch.setattr(Registry, "open", block)
    started = time.monotonic()
    session, engine = _session(tmp_path)
    session.finish()
    assert time.monotonic() - started < 2 * DEADLINE
    assert set(engine.refs) == {"old", "new"}
    assert session.report is not None
    assert session.report.status == "no-registry"
    folder = tmp_path / "l.sessions"
    assert session.lines == [
        f"imageprune: WARNING no safe session registry beside the lock {tmp_path / 'l'}:"
        f" gave up on the session registry after waiting 0.3 s for {folder}; nothing deleted"
    ]


def test_a_session_whose_record_cannot_be_written_still_prunes_and_is_protected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk as the session starts (injected: no disk can be filled for one test):
    its .alive lock is held, its record is not written. Others see a live session with an
    unknown baseline; it prunes its own images at its end all the same."""
    real_write = Registry.write

    def full(self: Registry, record: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Registry, "write", full)
    session, engine = _session(tmp_path)
    monkeypatch.setattr(Registry, "write", real_write)
    assert session.coordinator is not None
    assert "could not write this session's record" in session.lines[0]
    assert "No space left on device" in session.lines[0]

    others = Registry(tmp_path / "l.sessions").classify(None)
    assert [r.describe() for r in others.live] == [
        f"session {session.record.id[:12]}, whose record cannot be read"  # type: ignore[union-attr]
    ]
    session.finish()
    assert session.report is not None
    assert session.report.status == "completed", session.lines
    assert "new" not in engine.refs  # pruned, as it would be with a record
    assert "old" in engine.refs
    assert not any("held by a session with no record" in line for line in session.lines)
