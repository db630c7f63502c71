"""A session's record in the registry: its fields, and the checks every one passes."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_imageprune.coordination.clock import BOOT_ID, Clock
from pytest_imageprune.errors import FilterError
from pytest_imageprune.model.filters import Filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline
from pytest_imageprune.model.scopes import SCOPES

RUNNING = "running"


#: Running, and about to prune: it may find the lock held and defer to the holder.
FINISHING = "finishing"


DEFERRED = "deferred"


DEAD = "dead"


STATES = (RUNNING, FINISHING, DEFERRED)


#: How often a running session touches its ``.alive`` file, and the slack allowed after
#: the last touch when judging when a dead session ended.
HEARTBEAT_NS = 1 * NANOS


DEATH_SLACK_NS = 2 * NANOS


#: The most a record may hold: a baseline of some 100,000 images.
RECORD_LIMIT = 32 << 20


#: How far ahead of this host's clock a record's times may be (a record from the future
#: would stretch a dead session's lifetime), besides a step back its clock shows
#: (``clock.Clock.stepped_back``), by which its end is moved back (``SessionRecord.seen_at``).
CLOCK_SKEW_NS = 60 * NANOS


_ID = re.compile(r"[0-9a-f]{32}")


#: The ID of the live session that stands for those the engine's meeting place would
#: show, when it cannot be used (``in_engine.unseen``): never a session's (``uuid4``'s
#: hex has a 4 in the 13th place).
UNSEEN_ID = "f" * 32


_MAX_NS = 1 << 63


_MAX_PID = 1 << 22  # the kernel's pid_max limit
#: The longest engine key a record may hold (an ID, a space, a data root path).
ENGINE_KEY_LIMIT = 4200


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
    #: kind (``kinds.table.KINDS``); a kind it did not list is absent: all that is new may be its.
    kinds: Mapping[str, frozenset[str]] | None = None
    #: Whether it prunes images: a sweep of a session that did not prunes none.
    images: bool = True
    #: The other kinds it prunes, each with its filters (API form), for a sweep.
    kind_filters: Mapping[str, dict[str, list[str]]] | None = None
    #: The engine it pruned (``engine.client.DockerEngine.engine_id``: its ID and data
    #: root); empty when unknown (Podman, an older version's record).
    engine: str = ""
    #: The clock its ``heartbeat_ns``, ``finished_ns`` and its ``.alive`` file's heartbeat
    #: read, which no step of the wall clock moves (``clock``); None: an older version's
    #: record, or a host with no boot clock: the wall clock, as before.
    clock: Clock | None = None
    #: A dry run's: it deletes nothing, so no one deletes for it, even once it died.
    dry_run: bool = False
    #: Its times are the engine's (a record read from the engine's meeting place,
    #: ``in_engine``), not this host's: a sweep asks the engine what time it is.
    engine_clock: bool = False

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
        engine: str = "",
        dry_run: bool = False,
    ) -> SessionRecord:
        """A running session's record: it started at ``now_ns`` (its baseline's time, on the
        wall clock); its clock is read now."""
        clock = Clock.read()
        beat = clock.now_ns() if clock is not None else None
        return cls(
            id=uuid.uuid4().hex,
            pid=os.getpid(),
            started_ns=now_ns,
            filters=filters,
            scope=scope,
            baseline=baseline,
            host=socket.gethostname(),
            # On its clock: never later than now on it (the wall clock may have stepped
            # back since the baseline's time).
            heartbeat_ns=now_ns if beat is None else min(now_ns, beat),
            kinds=kinds,
            images=images,
            kind_filters=kind_filters,
            engine=engine,
            clock=clock,
            dry_run=dry_run,
        )

    def of_engine(self, engine: str) -> bool:
        """Whether this record may speak for ``engine``: the same one, or either unknown."""
        return not (self.engine and engine) or self.engine == engine

    @property
    def death_ns(self) -> int:
        """When a dead session ended at the latest: its last heartbeat, and some slack."""
        return self.heartbeat_ns + DEATH_SLACK_NS

    @property
    def end_ns(self) -> int:
        """When the session ended: when it finished, else when it died at the latest."""
        return self.finished_ns if self.finished_ns is not None else self.death_ns

    def now_ns(self) -> int:
        """Now, on the record's clock: what its session writes (its heartbeat, its end);
        the wall clock where it has none."""
        now = self.clock.now_ns() if self.clock is not None else None
        return time.time_ns() if now is None else now

    def seen_at(self, now: Clock | None) -> SessionRecord:
        """The record as a sweep judges it with the clock read ``now``: its end moved back
        by as far as the wall clock stepped back since the record's clock was read, so
        that its window ends no later on the clock the images are stamped by; never moved
        forward (an image stamped before a step forward would look older than an end
        moved with it). Its start is never moved: an earlier start would lengthen the
        window; a step back only makes the images that came after it look older, which
        keeps them. The clock of the record returned is ``now`` (same boot), or None:
        another boot's record, or an older version's, is judged on the wall clock, as
        before; another boot's, ended no later than this boot began (``now.offset_ns``:
        the wall clock less the boot clock is when this boot began, on the wall clock as
        it reads now): a step back before that reboot would otherwise leave its end ahead
        of the clock this boot's images are stamped by."""
        back = self.clock.stepped_back(now) if self.clock is not None else None
        if back is None:
            if self.clock is not None and now is not None and now.boot != self.clock.boot:
                began = now.offset_ns
                return replace(
                    self,
                    heartbeat_ns=min(self.heartbeat_ns, began - DEATH_SLACK_NS),
                    finished_ns=None if self.finished_ns is None else min(self.finished_ns, began),
                    clock=None,
                )
            return replace(self, clock=None)
        return replace(
            self,
            heartbeat_ns=self.heartbeat_ns - back,
            finished_ns=None if self.finished_ns is None else self.finished_ns - back,
            clock=now,
        )

    @classmethod
    def unknown(cls, record_id: str) -> SessionRecord:
        """A running session whose record cannot be read (a clock far ahead, another
        version's format, no record at all on a full disk): its baseline is taken as
        empty, so everything that is not in this session's own keeps for it."""
        return cls(record_id, 0, 0, {}, "session", Baseline({}))

    def describe(self) -> str:
        if self.id == UNSEEN_ID:
            return "any session elsewhere on this engine: they cannot be seen"
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
            "engine": self.engine,
            "dry_run": self.dry_run,
            "clock": None
            if self.clock is None
            else {"boot": self.clock.boot, "offset_ns": self.clock.offset_ns},
        }

    @classmethod
    def from_json(
        cls,
        data: object,
        *,
        name: str | None = None,
        now_ns: int | None = None,
        now: Clock | None = None,
    ) -> SessionRecord:
        """Check every field; ``ValueError`` names the first that is wrong.

        ``name`` is the file's own name (without ``.json``): the ``id`` must be it.
        ``now_ns`` bounds the times a record may hold, later by a step back of the wall
        clock since the record's clock was read, as ``now`` (the clock read now) shows it.
        """
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        record_id = _text(data, "id", 32)
        if not _ID.fullmatch(record_id):
            raise ValueError("id is not 32 lowercase hex digits")
        if name is not None and record_id != name:
            raise ValueError("id is not the file's own name")
        latest = _MAX_NS if now_ns is None else now_ns + CLOCK_SKEW_NS
        clock = _clock(data.get("clock"))
        if now_ns is not None and clock is not None:
            latest += clock.stepped_back(now) or 0
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
        beat = started if heartbeat is None else _int(data, "heartbeat_ns", 0, latest)
        return cls(
            id=record_id,
            pid=_int(data, "pid", 1, _MAX_PID),
            host=_text(data, "host", 255) if "host" in data else "",
            started_ns=started,
            heartbeat_ns=beat,
            state=state,
            # Its heartbeat may be earlier than its start: the wall clock stepped back
            # between its baseline's listing and its record (``SessionRecord.new``).
            finished_ns=None
            if finished is None
            else _int(data, "finished_ns", min(started, beat), latest),
            filters={key: list(values) for key, values in filters.items()},
            scope=scope,
            baseline=_baseline(data.get("baseline"), latest),
            present=_present(data.get("present")),
            kinds=_kinds(data.get("kinds")),
            images=_flag(data, "images"),
            kind_filters=_kind_filters(data.get("kind_filters")),
            engine=_text(data, "engine", ENGINE_KEY_LIMIT) if "engine" in data else "",
            clock=clock,
            dry_run=_flag(data, "dry_run", False),
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


def _clock(data: object) -> Clock | None:
    if data is None:
        return None  # an older version's record, or a host with no boot clock
    if not isinstance(data, dict):
        raise ValueError("clock is not an object")
    boot, offset = data.get("boot"), data.get("offset_ns")
    if not isinstance(boot, str) or not BOOT_ID.fullmatch(boot):
        raise ValueError("clock.boot is not a boot ID")
    # A time's range, either way: the wall clock may have been set back by more than the
    # time since the boot. One far ahead of the wall clock now only moves the record's end
    # further back; the times it lets the record hold are moved back with it (``seen_at``).
    if type(offset) is not int or not -_MAX_NS <= offset <= _MAX_NS:
        raise ValueError("clock.offset_ns is not an integer in range")
    return Clock(boot, offset)


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
    from pytest_imageprune.kinds.table import KINDS

    if data is None:
        return None
    if not isinstance(data, dict) or not set(data) <= set(KINDS):
        raise ValueError("kinds is not an object of the kinds a session prunes")
    for ids in data.values():
        if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 1024 for i in ids):
            raise ValueError("kinds is not an object of lists of IDs")
    return {kind: frozenset(ids) for kind, ids in data.items()}


def _kind_filters(data: object) -> Mapping[str, dict[str, list[str]]] | None:
    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.kinds.table import KINDS

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


def _flag(data: Mapping[str, Any], key: str, default: bool = True) -> bool:
    value = data.get(key, default)
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
    #: Where it was found: the registry's files, or the engine's meeting place.
    where: str = "the session registry"

    def describe(self) -> str:
        if self.live:
            return (
                f"skipped {self.name} in {self.where}: {self.reason}; its session"
                " is running, so what it may have made is kept"
            )
        return f"skipped {self.name} in {self.where}: {self.reason}" + (
            " (removed)" if self.removed else ""
        )
