"""The registry of sessions on one Docker endpoint: who is alive, who died, what is owed.

Each session writes ``<id>.json`` (its pid, start time, filters, scope and baseline) in the
registry folder beside the prune lock, and holds ``<id>.alive`` locked while it runs: the
kernel releases that lock when the process dies, however it dies. So at any moment a
record is one of:

- **live**: its ``.alive`` lock is held by a running session;
- **dead**: the lock is free but the record still says ``running`` (SIGKILL, OOM, a
  cancelled CI job): the session never pruned;
- **deferred**: the session finished but left work: images another live session might
  have produced, or a prune that was cut short (engine lost, Ctrl-C, lock held).

The rule, applied by every prune: an image absent from a live session's baseline may be
that session's product, so no one else deletes it while that session lives. Whoever prunes
next, with no such session left, finishes the dead and deferred sessions' work, each with
its own filters and baseline, and only over its lifetime. So the last session out of a
group of overlapping sessions prunes what the group produced.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pytest_imageprune.images import NANOS, Baseline, Image
from pytest_imageprune.selection import KeepRule

RUNNING = "running"
#: Running, and about to prune: it may find the lock held and defer to the holder.
FINISHING = "finishing"
DEFERRED = "deferred"

#: How often a running session refreshes its record, and the slack allowed after the last
#: refresh when judging what a dead session could have built.
HEARTBEAT_NS = 5 * NANOS
DEATH_SLACK_NS = 2 * HEARTBEAT_NS


@dataclass(frozen=True)
class SessionRecord:
    """What a session leaves in the registry."""

    id: str
    pid: int
    started_ns: int
    filters: dict[str, list[str]]
    scope: str
    baseline: Baseline
    host: str = ""
    heartbeat_ns: int = 0
    state: str = RUNNING
    finished_ns: int | None = None

    @classmethod
    def new(
        cls, baseline: Baseline, filters: dict[str, list[str]], scope: str, now_ns: int
    ) -> SessionRecord:
        return cls(
            id=uuid.uuid4().hex,
            pid=os.getpid(),
            started_ns=now_ns,
            filters=filters,
            scope=scope,
            baseline=baseline,
            host=socket.gethostname(),
            heartbeat_ns=now_ns,
        )

    @property
    def death_ns(self) -> int:
        """When a dead session ended at the latest: its last heartbeat, and some slack."""
        return self.heartbeat_ns + DEATH_SLACK_NS

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host or 'this host'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "host": self.host,
            "started_ns": self.started_ns,
            "heartbeat_ns": self.heartbeat_ns,
            "state": self.state,
            "finished_ns": self.finished_ns,
            "filters": self.filters,
            "scope": self.scope,
            "baseline": self.baseline.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRecord:
        return cls(
            id=str(data["id"]),
            pid=int(data["pid"]),
            host=str(data.get("host", "")),
            started_ns=int(data["started_ns"]),
            heartbeat_ns=int(data.get("heartbeat_ns") or data["started_ns"]),
            state=str(data.get("state", RUNNING)),
            finished_ns=data.get("finished_ns"),
            filters={k: list(v) for k, v in data["filters"].items()},
            scope=str(data["scope"]),
            baseline=Baseline.from_json(data["baseline"]),
        )


@dataclass
class Others:
    """The other sessions of the endpoint, as a prune finds them."""

    live: list[SessionRecord] = field(default_factory=list)
    dead: list[SessionRecord] = field(default_factory=list)
    deferred: list[SessionRecord] = field(default_factory=list)

    def owed(self) -> list[SessionRecord]:
        """The sessions whose work is left to whoever prunes now, oldest first."""
        return sorted(self.dead + self.deferred, key=lambda r: r.started_ns)


def protect_live(live: Sequence[SessionRecord]) -> KeepRule:
    """Keep what a live session may have produced: images absent from its baseline, and
    images with a name they did not have in it (on the containerd store a name is a record
    of its own, which that session may have made)."""

    def keep(image: Image) -> str | None:
        for record in live:
            names = record.baseline.tags.get(image.id)
            if names is None or not set(image.tags) <= set(names):
                return f"may belong to a live session ({record.describe()})"
        return None

    return keep


def within_lifetime(record: SessionRecord, then: KeepRule) -> KeepRule:
    """Keep, besides ``then``'s, what was created after ``record``'s session ended."""
    end = record.finished_ns if record.finished_ns is not None else record.death_ns

    def keep(image: Image) -> str | None:
        created = image.created_ns if image.created_ns is not None else image.created_s * NANOS
        if created > end:
            return "created after that session ended"
        return then(image)

    return keep


def is_live_reason(reason: str) -> bool:
    return reason.startswith("may belong to a live session")


class Registry:
    """The registry folder of one endpoint. Every method may raise ``OSError``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._alive: FileLock | None = None
        #: The ``.alive`` locks of dead sessions this process is sweeping.
        self._taken: dict[str, FileLock] = {}

    @classmethod
    def beside(cls, lock_path: Path) -> Registry:
        return cls(lock_path.with_name(lock_path.name + ".sessions"))

    def register(self, record: SessionRecord) -> None:
        """Hold the record's ``.alive`` lock, then write the record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Taken in one thread and let go in another: not thread-local.
        alive = FileLock(str(self._alive_path(record.id)), mode=0o666, thread_local=False)
        alive.acquire(timeout=0)
        self._alive = alive
        self.write(record)

    def write(self, record: SessionRecord) -> None:
        """Replace the record atomically (a reader never sees half of it)."""
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(record.to_json()))  # json.dump would encode in Python
            os.replace(temp, self._record_path(record.id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def others(self, own_id: str | None) -> Iterator[tuple[SessionRecord, str]]:
        """Each other record with its state: live, dead or deferred.

        A dead record's ``.alive`` lock stays held by this process until ``forget`` or
        ``finish``, so that two sweepers never take the same dead session.
        """
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith(".tmp-") or path.stem == own_id:
                continue
            try:
                record = SessionRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a dying process, or not ours: not evidence
            if record.state == DEFERRED:
                yield record, DEFERRED
                continue
            if record.id in self._taken:  # found dead before, and still ours to sweep
                yield record, "dead"
                continue
            lock = FileLock(str(self._alive_path(record.id)), mode=0o666)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                yield record, RUNNING
                continue
            self._taken[record.id] = lock
            yield record, "dead"

    def classify(self, own_id: str | None) -> Others:
        others = Others()
        for record, state in self.others(own_id):
            {RUNNING: others.live, "dead": others.dead, DEFERRED: others.deferred}[state].append(
                record
            )
        return others

    def settle(self, record: SessionRecord, *, done: bool, end_ns: int) -> None:
        """After pruning for ``record``: forget it when done, else leave it deferred.

        ``end_ns`` is when the session ended, if the record does not say already: now for
        the session that is finishing, the last heartbeat and some slack for a dead one.
        """
        if done:
            self._remove(record.id)
        else:
            finished = record.finished_ns if record.finished_ns is not None else end_ns
            self.write(replace(record, state=DEFERRED, finished_ns=finished))
        self._release(record.id)

    def heartbeat(self, record: SessionRecord, now_ns: int) -> SessionRecord:
        """Say the session is still running; return the record as written."""
        record = replace(record, heartbeat_ns=now_ns)
        self.write(record)
        return record

    def release_taken(self) -> None:
        """Let go of the dead sessions' locks taken by ``classify``: another may sweep them."""
        for record_id in list(self._taken):
            self._release(record_id)

    def close(self) -> None:
        """Let go of every lock this process holds in the registry."""
        for record_id in list(self._taken):
            self._release(record_id)
        if self._alive is not None:
            self._alive.release()
            self._alive = None

    def _release(self, record_id: str) -> None:
        lock = self._taken.pop(record_id, None)
        if lock is not None:
            lock.release()

    def _remove(self, record_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(record_id).unlink()
        # Session IDs are never reused, so no one will lock this file again.
        with contextlib.suppress(FileNotFoundError):
            self._alive_path(record_id).unlink()

    def _record_path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.json"

    def _alive_path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.alive"
