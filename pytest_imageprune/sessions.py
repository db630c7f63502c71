"""The registry of sessions on one Docker engine: who is alive, who died, what is owed.

Each session writes ``<id>.json`` (its pid, start time, filters, scope and baseline) in the
registry folder beside the prune lock, and holds ``<id>.alive`` locked (``flock``) while it
runs: the kernel releases that lock when the process dies, however it dies. Every second
it touches ``<id>.alive`` (a change of its time stamp: no engine request, no disk block, so
a full disk does not stop it). So at any moment a record is one of:

- **live**: its ``.alive`` lock is held by a running session;
- **dead**: the lock is free but the record still says ``running`` (SIGKILL, OOM, a
  cancelled CI job): the session never pruned; it ended at most ``DEATH_SLACK_NS`` after
  the last touch of its ``.alive``;
- **deferred**: the session finished but left work: images another live session might
  have produced, or a prune that was cut short (engine lost, Ctrl-C, lock held).

The rules, applied by every prune:

1. An image absent from a live session's baseline may be that session's product, so no
   one else deletes it while that session lives.
2. Whoever prunes next, with no such session left, finishes the dead and deferred
   sessions' work, each with its own filters and baseline, and only over its lifetime: an
   image goes only with evidence that it appeared while that session lived (``Arrival``).
   So the last session out of a group of overlapping sessions prunes what the group made.
3. A record is data, never a path or code: every field is checked (``SessionRecord.
   from_json``), the ``id`` is the file's own name, files are read with ``Boundary``'s
   checks (no symlink, no FIFO, a size limit). A bad record is skipped with one line,
   and removed when no live session holds its name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_imageprune.boundary import Boundary, Unsafe
from pytest_imageprune.errors import FilterError
from pytest_imageprune.filters import Filters, parse_rfc3339_nano
from pytest_imageprune.images import NANOS, Baseline, Image, Snapshot
from pytest_imageprune.selection import KeepRule

RUNNING = "running"
#: Running, and about to prune: it may find the lock held and defer to the holder.
FINISHING = "finishing"
DEFERRED = "deferred"
DEAD = "dead"
STATES = (RUNNING, FINISHING, DEFERRED)
SCOPES = ("session", "all")

#: How often a running session touches its ``.alive`` file, and the slack allowed after
#: the last touch when judging when a dead session ended.
HEARTBEAT_NS = 1 * NANOS
DEATH_SLACK_NS = 2 * NANOS
#: The most a record may hold: a baseline of some 100,000 images.
RECORD_LIMIT = 32 << 20
#: How far ahead of this host's clock a record's times may be (a record from the future
#: would stretch a dead session's lifetime).
CLOCK_SKEW_NS = 60 * NANOS

_ID = re.compile(r"[0-9a-f]{32}")
_MAX_NS = 1 << 63
_MAX_PID = 1 << 22  # the kernel's pid_max limit


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
    #: Deferred: the images in its scope when it finished (what it left, at most).
    present: frozenset[str] | None = None

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

    @property
    def end_ns(self) -> int:
        """When the session ended: when it finished, else when it died at the latest."""
        return self.finished_ns if self.finished_ns is not None else self.death_ns

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
            "present": None if self.present is None else sorted(self.present),
        }

    @classmethod
    def from_json(
        cls, data: object, *, name: str | None = None, now_ns: int | None = None
    ) -> SessionRecord:
        """Check every field; ``ValueError`` names the first that is wrong.

        ``name`` is the file's own name (without ``.json``): the ``id`` must be it.
        ``now_ns`` bounds the times a record may hold.
        """
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        record_id = _text(data, "id", 32)
        if not _ID.fullmatch(record_id):
            raise ValueError("id is not 32 lowercase hex digits")
        if name is not None and record_id != name:
            raise ValueError("id is not the file's own name")
        latest = _MAX_NS if now_ns is None else now_ns + CLOCK_SKEW_NS
        started = _int(data, "started_ns", 0, latest)
        heartbeat = data.get("heartbeat_ns")
        finished = data.get("finished_ns")
        filters = data.get("filters")
        if not isinstance(filters, dict) or not all(
            isinstance(values, list) and all(isinstance(v, str) for v in values)
            for values in filters.values()
        ):
            raise ValueError("filters is not an object of lists of strings")
        try:
            Filters.from_mapping(filters)
        except FilterError as exc:
            raise ValueError(f"filters: {exc}") from None
        scope = _text(data, "scope", 16)
        if scope not in SCOPES:
            raise ValueError(f"scope is not one of {', '.join(SCOPES)}")
        state = _text(data, "state", 16) if "state" in data else RUNNING
        if state not in STATES:
            raise ValueError(f"state is not one of {', '.join(STATES)}")
        return cls(
            id=record_id,
            pid=_int(data, "pid", 1, _MAX_PID),
            host=_text(data, "host", 255) if "host" in data else "",
            started_ns=started,
            heartbeat_ns=started if heartbeat is None else _int(data, "heartbeat_ns", 0, latest),
            state=state,
            finished_ns=None if finished is None else _int(data, "finished_ns", started, latest),
            filters={key: list(values) for key, values in filters.items()},
            scope=scope,
            baseline=_baseline(data.get("baseline"), latest),
            present=_present(data.get("present")),
        )


def _int(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if type(value) is not int:  # not a bool, not a float
        raise ValueError(f"{key} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{key} is out of range")
    return value


def _text(data: Mapping[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key} is not a string of at most {limit} characters")
    return value


def _baseline(data: object, latest: int) -> Baseline:
    if not isinstance(data, dict):
        raise ValueError("baseline is not an object")
    taken = _int(data, "taken_ns", 0, latest)
    tags = data.get("tags")
    if not isinstance(tags, dict):
        raise ValueError("baseline.tags is not an object")
    for image_id, refs in tags.items():
        if len(image_id) > 256 or not isinstance(refs, list):
            raise ValueError("baseline.tags is not an object of lists")
        if not all(isinstance(ref, str) and len(ref) <= 1024 for ref in refs):
            raise ValueError("baseline.tags holds a reference that is not a string")
    return Baseline({k: tuple(v) for k, v in tags.items()}, taken)


def _present(data: object) -> frozenset[str] | None:
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(i, str) and len(i) <= 256 for i in data):
        raise ValueError("present is not a list of image IDs")
    return frozenset(data)


@dataclass(frozen=True)
class BadRecord:
    """A file in the registry that is not a record this package can trust."""

    name: str
    reason: str
    removed: bool = False

    def describe(self) -> str:
        return f"skipped {self.name} in the session registry: {self.reason}" + (
            " (removed)" if self.removed else ""
        )


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


def within_lifetime(
    record: SessionRecord, then: KeepRule, arrival: Arrival | None = None
) -> KeepRule:
    """Keep, besides ``then``'s, what ``record``'s session cannot be shown to have left.

    An image created after the session ended is not its garbage. With ``arrival`` (an
    engine to ask), neither is one that arrived after it ended (tagged, loaded, pulled),
    nor one with no evidence it arrived while the session lived.
    """
    end = record.end_ns

    def keep(image: Image) -> str | None:
        created = image.created_ns if image.created_ns is not None else image.created_s * NANOS
        if created > end:
            return "created after that session ended"
        if arrival is not None:
            why = arrival.doubt(image, record)
            if why is not None:
                return why
        return then(image)

    return keep


#: How far before a session's start an image it made may say it was created (the
#: engine's clock and the session's, rounding).
_START_SLACK_NS = 2 * NANOS


class Arrival:
    """When each image came to the engine, as far as the engine can tell.

    ``Created`` says when an image was made, not when it came (``docker load`` keeps a
    2024 image's date); ``Metadata.LastTagTime`` says when it was last tagged (a build, a
    ``docker tag``, a pull, on newer engines a load). An image a dead session could have
    left arrived after that session started and before it ended: one that did not, or
    whose arrival cannot be told, stays (a leak can be mended later; a loss cannot).
    """

    def __init__(
        self,
        inspect: Callable[[str], Mapping[str, Any]],
        snapshot: Snapshot | None = None,
        events: Callable[[int, int], Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._inspect = inspect
        self._snapshot = snapshot
        self._events = events
        self._seen: dict[str, tuple[int | None, int | None] | str] = {}
        self._came_after: dict[int, frozenset[str]] = {}

    def doubt(self, image: Image, record: SessionRecord) -> str | None:
        """Why ``image`` may not be ``record``'s garbage, or None."""
        if record.present is not None:  # it said what it left when it finished
            return None if image.id in record.present else "arrived after that session ended"
        if image.id not in record.baseline.tags:
            return self._arrived_in(image.id, record, "it arrived")
        if record.scope != "session":
            return None  # there when the session started: a scope-all prune takes it
        # A baseline image whose tags were all taken (a rebuilt tag): the evidence is the
        # image holding one of those tags now, tagged while the session lived.
        wanted = set(record.baseline.tags[image.id])
        holders = [
            other.id
            for other in (self._snapshot.images.values() if self._snapshot else ())
            if wanted.intersection(other.tags)
        ]
        if not holders:
            return "no evidence its tags were taken while that session lived"
        reasons = [self._arrived_in(holder, record, "its tag moved") for holder in holders]
        return None if None in reasons else reasons[0]

    def _arrived_in(self, image_id: str, record: SessionRecord, what: str) -> str | None:
        """Why ``image_id`` did not arrive while ``record``'s session lived, or None.

        ``what`` is ``"it arrived"`` or ``"its tag moved"``.
        """
        image = self._snapshot.images.get(image_id) if self._snapshot else None
        names = {image_id, *(image.tags if image is not None else ())}
        if names & self._arrivals_after(record.end_ns):
            return f"{what.removeprefix('it ')} after that session ended (the engine's events)"
        seen = self._times(image_id)
        if isinstance(seen, str):
            return seen
        created, tagged = seen
        instant = max(t for t in (created, tagged, 0) if t is not None)
        if instant > record.end_ns:
            return f"{what.removeprefix('it ')} after that session ended"
        if instant < record.started_ns - _START_SLACK_NS:
            return f"no evidence {what} while that session lived"
        return None

    def _arrivals_after(self, end_ns: int) -> frozenset[str]:
        """The images (IDs and names) the engine's event log shows arriving after
        ``end_ns``: loaded, pulled, imported or tagged. A witness while the log lasts, and
        where the other evidence cannot tell (Docker 20.10 does not stamp a load's
        ``LastTagTime``, and a load keeps the image's ``Created``)."""
        if end_ns not in self._came_after:
            now = time.time_ns()
            names: set[str] = set()
            if self._events is not None and end_ns < now:
                try:
                    events = self._events(end_ns, now)
                except Exception:  # a witness the engine may not have: the rest still holds
                    events = []
                for event in events:
                    names |= _arrived(event, end_ns)
            self._came_after[end_ns] = frozenset(names)
        return self._came_after[end_ns]

    def _times(self, image_id: str) -> tuple[int | None, int | None] | str:
        if image_id not in self._seen:
            try:
                data = self._inspect(image_id)
            except LookupError:
                self._seen[image_id] = "gone meanwhile"
            except Exception as exc:  # doubt: keep it
                self._seen[image_id] = f"could not inspect it: {type(exc).__name__}"
            else:
                metadata = data.get("Metadata")
                tagged = metadata.get("LastTagTime") if isinstance(metadata, Mapping) else None
                self._seen[image_id] = (_instant(data.get("Created")), _instant(tagged))
        return self._seen[image_id]


#: The image events that bring an image, or a name, to the engine.
_ARRIVALS = frozenset({"load", "pull", "import", "tag"})


def _arrived(event: object, after_ns: int) -> set[str]:
    """What ``event`` shows arriving after ``after_ns``: an image ID, a name; or nothing."""
    if not isinstance(event, Mapping):
        return set()
    actor = event.get("Actor")
    action = event.get("Action") or event.get("status")
    when = event.get("timeNano")
    if not isinstance(actor, Mapping) or action not in _ARRIVALS:
        return set()
    if isinstance(when, int) and not isinstance(when, bool) and when <= after_ns:
        return set()
    attributes = actor.get("Attributes")
    found = {actor.get("ID"), attributes.get("name") if isinstance(attributes, Mapping) else None}
    return {item for item in found if isinstance(item, str) and item}


def _instant(value: object) -> int | None:
    """An RFC 3339 time from the engine in ns; None for none (Go's zero time included)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ns = parse_rfc3339_nano(value)
    except (FilterError, ValueError):
        return None
    return ns if ns > 0 else None


def is_live_reason(reason: str) -> bool:
    return reason.startswith("may belong to a live session")


#: How the reasons of ``within_lifetime`` and ``Arrival`` begin.
_DOUBTS = (
    "created after that session ended",
    "arrived after",
    "its tag moved after",
    "no evidence",
    "could not inspect",
)


def is_doubt_reason(reason: str) -> bool:
    """Whether an image was kept for want of evidence it was a dead session's."""
    return reason.startswith(_DOUBTS)


class Registry:
    """The registry folder of one endpoint. Every method may raise ``OSError``."""

    def __init__(self, directory: Path, boundary: Boundary | None = None) -> None:
        self.directory = directory
        self.boundary = boundary if boundary is not None else Boundary()
        self._alive: int | None = None
        #: Guards ``_alive``: the heartbeat thread touches it while another closes it.
        self._alive_guard = threading.Lock()
        #: The ``.alive`` files of dead sessions this process is sweeping, locked.
        self._taken: dict[str, int] = {}
        self._opened = False

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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self._alive = fd
        self.write(record)

    def beat(self) -> None:
        """Say this session is still running: touch its ``.alive`` file."""
        with self._alive_guard:
            if self._alive is not None:
                os.utime(self._alive)

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
        for name in sorted(os.listdir(self.directory)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            stem = name.removesuffix(".json")
            if stem == own_id:
                continue
            try:
                record = self._read(stem, now_ns)
            except Unsafe as exc:
                yield self._bad(name, f"{exc.why}", stem)
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    yield BadRecord(name, exc.strerror or str(exc))
                    continue
                yield self._bad(name, "a symlink", stem)
                continue
            except (ValueError, RecursionError) as exc:
                yield self._bad(name, str(exc) or type(exc).__name__, stem)
                continue
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

    def _read(self, stem: str, now_ns: int) -> SessionRecord:
        if not _ID.fullmatch(stem):
            raise ValueError("its name is not a session ID")
        data = self.boundary.read_file(self._record_path(stem), RECORD_LIMIT)
        return SessionRecord.from_json(json.loads(data), name=stem, now_ns=now_ns)

    def _probe(self, record: SessionRecord) -> tuple[SessionRecord, str] | None:
        """Live if another process holds its ``.alive`` lock; else dead, and now ours.

        None when the session finished meanwhile (its record is gone).
        """
        fd = self.boundary.open_file(self._alive_path(record.id), create=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return record, RUNNING
        except BaseException:
            os.close(fd)
            raise
        if not os.path.lexists(self._record_path(record.id)):
            os.close(fd)  # it removed its record, then its .alive, which we made anew
            with contextlib.suppress(OSError):
                os.unlink(self._alive_path(record.id))
            return None
        self._taken[record.id] = fd
        return self._with_last_beat(record), DEAD

    def _with_last_beat(self, record: SessionRecord) -> SessionRecord:
        fd = self._taken[record.id]
        beat = os.fstat(fd).st_mtime_ns
        return replace(record, heartbeat_ns=max(record.heartbeat_ns, beat))

    def _bad(self, name: str, reason: str, stem: str) -> BadRecord:
        """A bad record, removed unless a live session holds its name."""
        if _ID.fullmatch(stem):
            try:
                fd = self.boundary.open_file(self._alive_path(stem))
            except FileNotFoundError:
                fd = None
            except OSError:
                return BadRecord(name, reason)
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return BadRecord(name, reason)  # held: a live session's, or unknown
                finally:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self._alive_path(stem))
        try:
            os.unlink(self.directory / name)  # never follows a symlink; a folder stays
        except OSError:
            return BadRecord(name, reason)
        return BadRecord(name, reason, removed=True)

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

        ``end_ns`` is when the session ended, if the record does not say already: now for
        the session that is finishing, the last heartbeat and some slack for a dead one.
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
