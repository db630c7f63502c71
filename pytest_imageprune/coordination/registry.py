"""The registry of sessions on one engine: its files, and how their states are read."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_imageprune.coordination.boundary import Boundary, Unsafe
from pytest_imageprune.coordination.clock import Clock
from pytest_imageprune.coordination.records import (
    _ID,
    DEAD,
    DEFERRED,
    RECORD_LIMIT,
    RUNNING,
    BadRecord,
    SessionRecord,
)
from pytest_imageprune.model.gotime import NANOS


@dataclass
class Others:
    """The other sessions of the endpoint, as a prune finds them."""

    live: list[SessionRecord] = field(default_factory=list)
    dead: list[SessionRecord] = field(default_factory=list)
    deferred: list[SessionRecord] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    def owed(self) -> list[SessionRecord]:
        """The sessions whose work is left to whoever prunes now, oldest first."""
        return sorted(self.dead + self.deferred, key=lambda r: r.started_ns)


#: An ``.alive`` file with no record, unlocked and this old, is removed.
_ORPHAN_AGE_NS = 60 * NANOS


#: The ``.alive`` descriptors this process holds locked for its own session: a child it
#: forks (``os.fork``, multiprocessing's "fork", a daemonising server) closes its copies at
#: once, for a lock belongs to the open file, which a fork shares, and a child that kept it
#: would make its dead parent look alive for as long as the child lives.
_ALIVE_FDS: set[int] = set()


def _same_file(one: int, other: int) -> bool:
    first, second = os.fstat(one), os.fstat(other)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _lock_free(fd: int) -> bool:
    """Take the lock of ``fd``'s file without waiting (``flock``): False when another open
    file holds it, which for an ``.alive`` file is a running session. Any other failure
    raises ``OSError``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _forget_alive_in_child() -> None:
    for fd in _ALIVE_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _ALIVE_FDS.clear()


os.register_at_fork(after_in_child=_forget_alive_in_child)


def _running_unread(
    name: str, reason: str, stem: str
) -> Iterator[BadRecord | tuple[SessionRecord, str]]:
    """The file ``name`` of session ``stem``, which runs (its ``.alive`` lock is held) but
    whose record cannot be read: said as bad, and a live session with an unknown baseline."""
    yield BadRecord(name, reason, live=True)
    yield SessionRecord.unknown(stem), RUNNING


class Registry:
    """The registry folder of one endpoint. Every method may raise ``OSError``."""

    def __init__(self, directory: Path, boundary: Boundary | None = None, engine: str = "") -> None:
        self.directory = directory
        self.boundary = boundary if boundary is not None else Boundary()
        #: The engine this session prunes (its key, "" unknown): a record of another
        #: engine is never acted on, nor protected against here (``others``).
        self.engine = engine
        self._alive: int | None = None
        #: The clock of the session's record: its heartbeat reads it.
        self._clock: Clock | None = None
        #: Guards ``_alive``: the heartbeat thread touches it while another closes it.
        self._alive_guard = threading.Lock()
        #: The ``.alive`` files of dead sessions this process is sweeping, locked.
        self._taken: dict[str, int] = {}
        self._opened = False
        #: The session IDs the last listing found a file of (a record or an ``.alive``).
        self.seen: frozenset[str] = frozenset()

    @classmethod
    def beside(cls, lock_path: Path, boundary: Boundary | None = None) -> Registry:
        return cls(lock_path.with_name(lock_path.name + ".sessions"), boundary)

    def open(self) -> None:
        """Make the folder if missing, and check it (``Unsafe`` if it fails)."""
        self.directory = self.boundary.make_folder(self.directory)
        self._opened = True

    def register(self, record: SessionRecord) -> None:
        """Hold the record's ``.alive`` lock, then write the record."""
        if not self._opened:
            self.open()
        fd = self.boundary.open_file(self._alive_path(record.id), create=True)
        try:
            if not _lock_free(fd):  # never for a new session's ID; refused as flock refuses
                raise BlockingIOError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))
        except BaseException:
            os.close(fd)
            raise
        self._alive = fd
        _ALIVE_FDS.add(fd)
        self._clock = record.clock
        with contextlib.suppress(OSError):  # made a moment ago: the next beat mends it
            self._touch()  # its first heartbeat, on its record's clock
        self.write(record)

    @property
    def holds_alive(self) -> bool:
        """Whether this process holds its session's ``.alive`` lock."""
        return self._alive is not None

    def beat(self) -> None:
        """Say this session is still running: touch its ``.alive`` file, at now on its
        record's clock (``records.SessionRecord.clock``), which no step of the wall clock
        moves; without one, at now on the wall clock."""
        self._touch()

    def _touch(self) -> None:
        with self._alive_guard:
            if self._alive is not None:
                now = self._clock.now_ns() if self._clock is not None else None
                if now is None:
                    os.utime(self._alive)
                else:
                    os.utime(self._alive, ns=(now, now))

    def write(self, record: SessionRecord) -> None:
        """Replace the record atomically (a reader never sees half of it)."""
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            os.fchmod(fd, self.boundary.file_mode)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(record.to_json()))  # json.dump would encode in Python
            os.replace(temp, self._record_path(record.id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def others(
        self, own_id: str | None, now_ns: int | None = None
    ) -> Iterator[tuple[SessionRecord, str] | BadRecord]:
        """Each other record with its state (live, dead or deferred), or why it is bad.

        A dead record's ``.alive`` lock stays held by this process until ``settle`` or
        ``release_taken``, so that two sweepers never take the same dead session.
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        clock = Clock.read()
        names = sorted(os.listdir(self.directory))
        self.seen = frozenset(
            stem for n in names if _ID.fullmatch(stem := n.rsplit(".", 1)[0]) and "." in n
        )
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            stem = name.removesuffix(".json")
            if stem == own_id:
                continue
            try:
                record = self._read(stem, now_ns, clock)
            except Unsafe as exc:
                yield from self._bad(name, f"{exc.why}", stem)
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    yield BadRecord(name, exc.strerror or str(exc))
                    continue
                yield from self._bad(name, "a symlink", stem)
                continue
            except (ValueError, RecursionError) as exc:
                yield from self._bad(name, str(exc) or type(exc).__name__, stem)
                continue
            if not record.of_engine(self.engine):
                continue  # another engine's (one lock given to two): never ours to act on
            if record.state == DEFERRED:
                yield record, DEFERRED
            elif record.id in self._taken:  # found dead before, and still ours to sweep
                yield self._with_last_beat(record), DEAD
            else:
                try:
                    found = self._probe(record)
                except OSError as exc:
                    yield BadRecord(name, f"its .alive file: {exc}")
                    continue
                if found is not None:
                    yield found
        recorded = {name.removesuffix(".json") for name in names if name.endswith(".json")}
        for name in names:
            stem = name.removesuffix(".alive")
            if stem in (name, own_id) or stem in recorded or not _ID.fullmatch(stem):
                continue
            yield from self._unrecorded(stem, now_ns)

    def _unrecorded(
        self, stem: str, now_ns: int
    ) -> Iterator[BadRecord | tuple[SessionRecord, str]]:
        """An ``.alive`` file with no record beside it: a session that could not write
        one (a full disk), or is writing it now, if its lock is held; else what a session
        that died before writing one left (removed once a minute old)."""
        try:
            fd = self.boundary.open_file(self._alive_path(stem))
        except OSError:
            return  # gone meanwhile, or not a file to trust: nothing to go by
        try:
            if self._alive is not None and _same_file(fd, self._alive):
                return  # this session's own, whose record could not be written
            if not _lock_free(fd):
                yield from _running_unread(
                    f"{stem}.alive", "held by a session with no record", stem
                )
                return
            # Wall clock against a heartbeat: a step may make this file look older or
            # younger than it is, but it is an unlocked file with no record, which
            # protects nothing; no image goes by it.
            if now_ns - os.fstat(fd).st_mtime_ns > _ORPHAN_AGE_NS:
                with contextlib.suppress(OSError):
                    os.unlink(self._alive_path(stem))
        finally:
            os.close(fd)

    def _read(self, stem: str, now_ns: int, clock: Clock | None) -> SessionRecord:
        if not _ID.fullmatch(stem):
            raise ValueError("its name is not a session ID")
        data = self.boundary.read_file(self._record_path(stem), RECORD_LIMIT)
        return SessionRecord.from_json(json.loads(data), name=stem, now_ns=now_ns, now=clock)

    def _probe(self, record: SessionRecord) -> tuple[SessionRecord, str] | None:
        """Live if another process holds its ``.alive`` lock; else dead, and now ours.

        None when the session finished meanwhile (its record is gone).
        """
        fd = self.boundary.open_file(self._alive_path(record.id), create=True)
        try:
            free = _lock_free(fd)
        except BaseException:
            os.close(fd)
            raise
        if not free:
            os.close(fd)
            return record, RUNNING
        if not os.path.lexists(self._record_path(record.id)):
            os.close(fd)  # it removed its record, then its .alive, which we made anew
            with contextlib.suppress(OSError):
                os.unlink(self._alive_path(record.id))
            return None
        self._taken[record.id] = fd
        return self._with_last_beat(record), DEAD

    def _with_last_beat(self, record: SessionRecord) -> SessionRecord:
        """``record`` with its last heartbeat: its ``.alive`` file's mtime, on the record's
        clock as its session touched it (``beat``), or the wall clock for an older
        version's; either way on the clock its other times read."""
        fd = self._taken[record.id]
        # Never later than now on that clock: a dead session beat no later (an mtime
        # ahead, set by hand or left by a clock stepped back since, would lengthen its
        # window up to now, and leave the engine's event log unasked).
        beat = min(os.fstat(fd).st_mtime_ns, record.now_ns())
        return replace(record, heartbeat_ns=max(record.heartbeat_ns, beat))

    def _bad(
        self, name: str, reason: str, stem: str
    ) -> Iterator[BadRecord | tuple[SessionRecord, str]]:
        """A bad record, removed unless a live session holds its name; one that does is a
        running session whose record cannot be read (``SessionRecord.unknown``)."""
        if _ID.fullmatch(stem):
            try:
                fd = self.boundary.open_file(self._alive_path(stem))
            except FileNotFoundError:
                fd = None
            except OSError:
                yield BadRecord(name, reason)
                return
            if fd is not None:
                try:
                    free = _lock_free(fd)
                except OSError:
                    yield BadRecord(name, reason)
                    return
                finally:
                    os.close(fd)
                if not free:  # held: a running session's
                    yield from _running_unread(name, reason, stem)
                    return
                with contextlib.suppress(OSError):
                    os.unlink(self._alive_path(stem))
        try:
            os.unlink(self.directory / name)  # never follows a symlink; a folder stays
        except OSError:
            yield BadRecord(name, reason)
            return
        yield BadRecord(name, reason, removed=True)

    def classify(self, own_id: str | None) -> Others:
        others = Others()
        for item in self.others(own_id):
            if isinstance(item, BadRecord):
                others.bad.append(item)
                continue
            record, state = item
            {RUNNING: others.live, DEAD: others.dead, DEFERRED: others.deferred}[state].append(
                record
            )
        return others

    def settle(
        self,
        record: SessionRecord,
        *,
        done: bool,
        end_ns: int,
        present: frozenset[str] | None = None,
    ) -> None:
        """After pruning for ``record``: forget it when done, else leave it deferred.

        ``end_ns`` is when the session ended, if the record does not say already, on the
        record's clock: now for the session that is finishing, the last heartbeat and some
        slack for a dead one.
        ``present``, the images in its scope at its end, if known, is kept for the sweep.
        """
        if done:
            self._remove(record.id)
        else:
            finished = record.finished_ns if record.finished_ns is not None else end_ns
            if present is None:
                present = record.present
            self.write(replace(record, state=DEFERRED, finished_ns=finished, present=present))
        self._release(record.id)

    def release_taken(self) -> None:
        """Let go of the dead sessions' locks taken by ``classify``: another may sweep them."""
        for record_id in list(self._taken):
            self._release(record_id)

    def close(self) -> None:
        """Let go of every lock this process holds in the registry."""
        self.release_taken()
        with self._alive_guard:
            if self._alive is not None:
                _ALIVE_FDS.discard(self._alive)
                os.close(self._alive)
                self._alive = None

    def _release(self, record_id: str) -> None:
        fd = self._taken.pop(record_id, None)
        if fd is not None:
            os.close(fd)

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
