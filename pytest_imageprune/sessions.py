"""The registry of sessions on one Docker engine: its records, and how they are read.

Each session writes ``<id>.json`` (its pid, host, start time, last heartbeat, state,
filters, scope and baseline; once deferred, when it finished and the images in its scope
then) in the registry folder beside the prune lock, and holds ``<id>.alive`` locked
(``flock``) while it runs. Its heartbeat touches ``<id>.alive`` (a change of its time
stamp: no engine request, no disk block, so a full disk does not stop it). ``Registry``
reads a record's state from these files: live while another process holds its ``.alive``
lock, dead when no one does and the record says running or finishing (the reader then
holds that lock, so two readers never sweep the same dead session), deferred when it says
so. Every record is checked field by field (``SessionRecord.from_json``) and every file is
read with ``Boundary``'s checks (no symlink, no FIFO, a size limit): a bad one is a
``BadRecord``, removed when no live session holds its name.

The rules the sessions follow with these records, and the bounds on every wait, are in
``coordination``.
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
    #: The containers, networks, volumes and build-cache records present at its start, by
    #: kind (``kinds``); a kind it did not list is absent: all that is new may be its.
    kinds: Mapping[str, frozenset[str]] | None = None
    #: Whether it prunes images: a sweep of a session that did not prunes none.
    images: bool = True
    #: The other kinds it prunes, each with its filters (API form), for a sweep.
    kind_filters: Mapping[str, dict[str, list[str]]] | None = None

    @classmethod
    def new(
        cls,
        baseline: Baseline,
        filters: dict[str, list[str]],
        scope: str,
        now_ns: int,
        *,
        kinds: Mapping[str, frozenset[str]] | None = None,
        images: bool = True,
        kind_filters: Mapping[str, dict[str, list[str]]] | None = None,
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
            kinds=kinds,
            images=images,
            kind_filters=kind_filters,
        )

    @property
    def death_ns(self) -> int:
        """When a dead session ended at the latest: its last heartbeat, and some slack."""
        return self.heartbeat_ns + DEATH_SLACK_NS

    @property
    def end_ns(self) -> int:
        """When the session ended: when it finished, else when it died at the latest."""
        return self.finished_ns if self.finished_ns is not None else self.death_ns

    @classmethod
    def unknown(cls, record_id: str) -> SessionRecord:
        """A running session whose record cannot be read (a clock far ahead, another
        version's format, no record at all on a full disk): its baseline is taken as
        empty, so everything that is not in this session's own keeps for it."""
        return cls(record_id, 0, 0, {}, "session", Baseline({}))

    def describe(self) -> str:
        if self.pid == 0:
            return f"session {self.id[:12]}, whose record cannot be read"
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
            "kinds": None
            if self.kinds is None
            else {kind: sorted(ids) for kind, ids in self.kinds.items()},
            "images": self.images,
            "kind_filters": None if self.kind_filters is None else dict(self.kind_filters),
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
            kinds=_kinds(data.get("kinds")),
            images=_flag(data, "images"),
            kind_filters=_kind_filters(data.get("kind_filters")),
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


def _kinds(data: object) -> Mapping[str, frozenset[str]] | None:
    from pytest_imageprune.kinds import KINDS

    if data is None:
        return None
    if not isinstance(data, dict) or not set(data) <= set(KINDS):
        raise ValueError("kinds is not an object of the kinds a session prunes")
    for ids in data.values():
        if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 1024 for i in ids):
            raise ValueError("kinds is not an object of lists of IDs")
    return {kind: frozenset(ids) for kind, ids in data.items()}


def _kind_filters(data: object) -> Mapping[str, dict[str, list[str]]] | None:
    from pytest_imageprune.kinds import KINDS, KindFilters

    if data is None:
        return None
    if not isinstance(data, dict) or not set(data) <= set(KINDS):
        raise ValueError("kind_filters is not an object of the kinds a session prunes")
    out = {}
    for kind, filters in data.items():
        if not isinstance(filters, dict) or not all(
            isinstance(values, list) and values and all(isinstance(v, str) for v in values)
            for values in filters.values()
        ):  # an empty list would be no condition at all
            raise ValueError("kind_filters is not an object of filters")
        try:
            KindFilters.from_mapping(kind, filters)
        except FilterError as exc:
            raise ValueError(f"kind_filters: {kind}: {exc}") from None
        out[kind] = {key: list(values) for key, values in filters.items()}
    return out


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(f"{key} is not true or false")
    return value


@dataclass(frozen=True)
class BadRecord:
    """A file in the registry that is not a record this package can trust."""

    name: str
    reason: str
    removed: bool = False
    #: Its session runs (its ``.alive`` lock is held): what it may have made is kept.
    live: bool = False

    def describe(self) -> str:
        if self.live:
            return (
                f"skipped {self.name} in the session registry: {self.reason}; its session"
                " is running, so what it may have made is kept"
            )
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


def _forget_alive_in_child() -> None:
    for fd in _ALIVE_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _ALIVE_FDS.clear()


os.register_at_fork(after_in_child=_forget_alive_in_child)


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
    ``docker tag``, a pull, on newer engines a load). The engine's event log, while it
    reaches back, says what was loaded, pulled, imported or tagged after a session ended.
    An image a dead session could have left arrived after that session started and before
    it ended: one that did not, or whose arrival cannot be told, stays (a leak can be
    mended later; a loss cannot).
    """

    def __init__(
        self,
        inspect: Callable[[str], Mapping[str, Any]],
        snapshot: Snapshot | None = None,
        events: Callable[[int, int], Sequence[Mapping[str, Any]] | None] | None = None,
        started: Callable[[], int | None] | None = None,
    ) -> None:
        self._inspect = inspect
        self._snapshot = snapshot
        self._events = events
        #: When the engine's process started, if it can be told (its log begins there).
        self._started = started
        self._seen: dict[str, tuple[int | None, int | None] | str] = {}
        self._witnessed: dict[str, Witness] = {}

    def doubt(self, image: Image, record: SessionRecord) -> str | None:
        """Why ``image`` may not be ``record``'s garbage, or None."""
        if record.present is not None:  # it said what it left when it finished
            if image.id not in record.present:
                return "arrived after that session ended"
            return self._tagged_since(image.id, record)
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

    def _tagged_since(self, image_id: str, record: SessionRecord) -> str | None:
        """Why an image a deferred session left may not be its garbage now: tagged (or
        loaded, pulled) after it ended, by someone else. None if not."""
        if self._names(image_id) & self._witness(record).arrived:
            return "tagged after that session ended (the engine's events)"
        seen = self._times(image_id)
        if isinstance(seen, str):
            return seen
        tagged = seen[1]
        if tagged is not None and tagged > record.end_ns:
            return "tagged after that session ended"
        return None

    def _arrived_in(self, image_id: str, record: SessionRecord, what: str) -> str | None:
        """Why ``image_id`` did not arrive while ``record``'s session lived, or None.

        ``what`` is ``"it arrived"`` or ``"its tag moved"``.
        """
        witness = self._witness(record)
        if self._names(image_id) & witness.arrived:
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
        if tagged is None and witness.partial:
            # Only Created speaks for it, and a load keeps Created: without the log's
            # word that nothing came after the end, it may have come later.
            return (
                f"no evidence {what} while that session lived (the engine's event log no"
                " longer reaches back to that session's end)"
            )
        return None

    def _names(self, image_id: str) -> set[str]:
        image = self._snapshot.images.get(image_id) if self._snapshot else None
        return {image_id, *(image.tags if image is not None else ())}

    def _witness(self, record: SessionRecord) -> Witness:
        """What the engine's event log says of the time after ``record``'s end."""
        if record.id not in self._witnessed:
            self._witnessed[record.id] = self._ask_the_log(record)
        return self._witnessed[record.id]

    def _ask_the_log(self, record: SessionRecord) -> Witness:
        if self._events is None:
            return Witness(frozenset(), partial=False)  # an engine with no log: as before
        now = time.time_ns()
        if record.end_ns >= now:
            return Witness(frozenset(), partial=False)  # nothing can have come after yet
        try:
            events = self._events(record.end_ns, now)
        except Exception:  # the log cannot be read: it tells nothing
            return Witness(frozenset(), partial=True)
        if events is None:
            return Witness(frozenset(), partial=False)
        # The log holds the newest LOG_LIMIT events since the engine started, with no gap:
        # fewer than that since the end, and an engine started before the end, and it
        # holds them all. (A session may make no event at all: a classic build whose
        # container steps are cached makes none, so nothing from before the end can be
        # asked for.)
        arrived: set[str] = set()
        for event in events:
            arrived |= _arrived(event, record.end_ns)
        try:
            started = self._started() if self._started is not None else None
        except Exception:  # a help: where it cannot be told, the count alone decides
            started = None
        restarted = started is not None and started > record.end_ns
        return Witness(frozenset(arrived), partial=len(events) >= LOG_LIMIT or restarted)

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


@dataclass(frozen=True)
class Witness:
    """The engine's event log on the time after a session's end."""

    #: The image IDs and names it shows loaded, pulled, imported or tagged after the end.
    arrived: frozenset[str]
    #: Whether some of that time may be missing from it: the log keeps the newest 256
    #: events of every kind (more than that came since), none from before the engine's
    #: process started (restarted since), or could not be read.
    partial: bool


#: How many events Docker's log keeps (``daemon/events``: ``eventsLimit``, 20.10 to 29).
LOG_LIMIT = 256
#: The image events that bring an image, or a name, to the engine.
_ARRIVALS = frozenset({"load", "pull", "import", "tag"})


def _when(event: object) -> int | None:
    """An event's time in ns (``timeNano``, else ``time`` in seconds), if it has one."""
    if isinstance(event, Mapping):
        nano, seconds = event.get("timeNano"), event.get("time")
        if isinstance(nano, int) and not isinstance(nano, bool):
            return nano
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return seconds * NANOS
    return None


def _arrived(event: object, after_ns: int) -> set[str]:
    """What ``event`` shows arriving after ``after_ns`` (or at a time it does not say): an
    image ID, a name; or nothing."""
    when = _when(event)
    if not isinstance(event, Mapping) or (when is not None and when <= after_ns):
        return set()
    actor = event.get("Actor")
    if event.get("Type") != "image" or event.get("Action") not in _ARRIVALS:
        return set()
    if not isinstance(actor, Mapping):
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
    "tagged after",
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
        _ALIVE_FDS.add(fd)
        self.write(record)

    @property
    def holds_alive(self) -> bool:
        """Whether this process holds its session's ``.alive`` lock."""
        return self._alive is not None

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
        names = sorted(os.listdir(self.directory))
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            stem = name.removesuffix(".json")
            if stem == own_id:
                continue
            try:
                record = self._read(stem, now_ns)
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
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield BadRecord(f"{stem}.alive", "held by a session with no record", live=True)
                yield SessionRecord.unknown(stem), RUNNING
                return
            if now_ns - os.fstat(fd).st_mtime_ns > _ORPHAN_AGE_NS:
                with contextlib.suppress(OSError):
                    os.unlink(self._alive_path(stem))
        finally:
            os.close(fd)

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
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # held: a running session's
                    yield BadRecord(name, reason, live=True)
                    yield SessionRecord.unknown(stem), RUNNING
                    return
                except OSError:
                    yield BadRecord(name, reason)
                    return
                finally:
                    os.close(fd)
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
