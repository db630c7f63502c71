"""The session registry's files: live, dead and deferred told apart, a fork that lets go,
settling, and bad files that never stop a good record or touch a victim."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from pytest_imageprune.coordination.evidence import protect_live
from pytest_imageprune.coordination.records import DEFERRED, SessionRecord
from pytest_imageprune.coordination.registry import Registry
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image
from tests.support import lock_held_elsewhere
from tests.test_records import BAD_RECORDS, _valid_json, record


def test_registry_tells_live_dead_and_deferred_apart(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    own = record(set())
    registry.register(own)

    # Live: another process holds its .alive lock.
    live = record(set())
    alive_file = tmp_path / "reg" / f"{live.id}.alive"
    with lock_held_elsewhere(alive_file):
        registry.write(live)
        # Dead: a running record whose .alive lock nobody holds.
        dead = record(set())
        registry.write(dead)
        deferred = record(set(), state=DEFERRED, finished_ns=1)
        registry.write(deferred)
        (tmp_path / "reg" / "garbage.json").write_text("{not json")

        others = Registry(tmp_path / "reg").classify(own.id)
    assert [r.id for r in others.live] == [live.id]
    assert [r.id for r in others.dead] == [dead.id]
    assert [r.id for r in others.deferred] == [deferred.id]
    # Our own record is never "another" session, and it is live while we hold it.
    assert own.id not in {r.id for r in others.live + others.dead + others.deferred}
    registry.close()


def test_a_running_session_whose_record_cannot_be_read_keeps_what_it_may_have_made(
    tmp_path: Path,
) -> None:
    """Its record fails the checks (a clock far ahead, another version's format), or it
    has none (it could not write one: a full disk): while its ``.alive`` lock is held, it
    is a live session whose baseline is unknown, and nothing new is deleted under it."""
    folder = tmp_path / "reg"
    registry = Registry(folder)
    registry.open()
    ahead = record(set(), started_ns=time.time_ns() + 120 * NANOS)
    unwritten = record(set())
    with lock_held_elsewhere(folder / f"{ahead.id}.alive"):
        registry.write(ahead)
        with lock_held_elsewhere(folder / f"{unwritten.id}.alive"):
            others = Registry(folder).classify(None)
    assert sorted(r.id for r in others.live) == sorted([ahead.id, unwritten.id])
    assert [b.live for b in others.bad] == [True, True]
    assert "started_ns is out of range; its session is running" in others.bad[0].describe()
    keep = protect_live(others.live)
    assert keep(Image("anything new")) == (
        f"may belong to a live session (session {ahead.id[:12]}, whose record cannot be read)"
    )
    assert (folder / f"{ahead.id}.json").exists()  # never removed while its session runs

    # Once no one holds them: the bad record goes; a lone .alive file once a minute old.
    fresh, old = record(set()), record(set())
    for lone in (fresh, old):
        (folder / f"{lone.id}.alive").touch()
    minute_ago = time.time() - 61
    os.utime(folder / f"{old.id}.alive", (minute_ago, minute_ago))
    others = Registry(folder).classify(None)
    assert others.live == []
    assert not (folder / f"{ahead.id}.json").exists()
    assert (folder / f"{fresh.id}.alive").exists()
    assert not (folder / f"{old.id}.alive").exists()


# The fork is the point: a test's own fork, beside the session's threads, is what happens.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_keeps_a_session_alive(tmp_path: Path) -> None:
    """A lock belongs to the open file, which a fork shares: the child lets go of its copy
    at once, or a dead session would look alive for as long as its child lives."""
    registry = Registry(tmp_path)
    own = record(set())
    registry.register(own)
    ready, say = os.pipe()
    child = os.fork()
    if child == 0:  # a helper the tests started, outliving the session
        os.write(say, b"!")  # fork has returned here: what runs after a fork has run
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"!"
        registry.close()  # the session is gone; its child is not
        fd = os.open(tmp_path / f"{own.id}.alive", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child kept it
        finally:
            os.close(fd)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(say)


def test_settle_forgets_or_defers(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    rec = record(set())
    registry.register(rec)
    registry.settle(rec, done=False, end_ns=77)
    (kept,) = list(tmp_path.glob("*.json"))
    assert SessionRecord.from_json(json.loads(kept.read_text())).finished_ns == 77
    registry.settle(rec, done=True, end_ns=78)
    assert list(tmp_path.glob("*.json")) == []
    registry.close()


def _plant(directory: Path, name: str, kind: str, content: bytes, victim: Path) -> None:
    path = directory / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(victim)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        with path.open("wb") as out:
            out.write(content[:100])
            out.truncate(64 << 20)
    else:
        path.write_bytes(content)
        os.chmod(path, 0o600)


def test_bad_files_in_the_registry_never_stop_a_good_record_or_touch_a_victim(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "reg")
    registry.open()
    victim = tmp_path / "victim.json"
    victim.write_text("keep me")
    os.chmod(victim, 0o600)
    good = record(set(), state=DEFERRED, finished_ns=1)
    registry.write(good)
    planted = {}
    for n, (label, (changes, _)) in enumerate(BAD_RECORDS.items()):
        data = _valid_json(**changes)
        name = f"{n:032x}.json"
        if "id" not in changes:
            data["id"] = name.removesuffix(".json")
        _plant(registry.directory, name, "file", json.dumps(data).encode(), victim)
        planted[name] = label
    for n, kind in enumerate(["fifo", "symlink", "folder", "huge"], start=100):
        name = f"{n:032x}.json"
        _plant(registry.directory, name, kind, b"{}", victim)
        planted[name] = kind
    (registry.directory / "not-an-id.json").write_text("{not json")
    planted["not-an-id.json"] = "garbage"

    others = Registry(tmp_path / "reg").classify(None)
    assert [r.id for r in others.deferred] == [good.id]
    assert sorted(b.name for b in others.bad) == sorted(planted)
    assert victim.read_text() == "keep me"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    left = {p.name for p in registry.directory.iterdir()}
    # Removed when no live session holds their name; a folder is not removed.
    assert left == {f"{good.id}.json", f"{102:032x}.json"}, left
    assert victim.exists()
