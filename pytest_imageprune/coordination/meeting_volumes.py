"""The engine's meeting place as volumes: their names and labels, the lease's bounds,
and one listing read session by session (``Group``, ``Seen``). A session's part in it is
``in_engine.EngineMeeting``, whose module says what each volume is for.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_imageprune.coordination.records import (
    CLOCK_SKEW_NS,
    DEFERRED,
    FINISHING,
    RUNNING,
    UNSEEN_ID,
    SessionRecord,
)
from pytest_imageprune.errors import ImagePruneError
from pytest_imageprune.model.filters import engine_time
from pytest_imageprune.model.gotime import NANOS

PREFIX = "pytest-imageprune"
ROLE = "io.github.pytest-imageprune.role"
RECORD = "io.github.pytest-imageprune.record"
STARTED = "io.github.pytest-imageprune.started"
FINISHED = "io.github.pytest-imageprune.finished"
STATE = "io.github.pytest-imageprune.state"
LEASE = "io.github.pytest-imageprune.lease"
HOST = "io.github.pytest-imageprune.host"
PID = "io.github.pytest-imageprune.pid"
#: Sessions meet only with sessions of their room: the engine's one (no label), unless
#: ``PYTEST_IMAGEPRUNE_ENGINE_ROOM`` names another. The plugin's own test suite gives each
#: test one, so that the tests' sessions on one engine do not wait for each other; never
#: set it for real sessions: those of two rooms do not protect each other.
ROOM = "io.github.pytest-imageprune.room"

#: Where a bad record found here is said to be.
WHERE = "the engine's meeting place"
#: How long a lease holds, and the bounds a reader puts on what a lease says of itself.
#: Long: a session whose renewals stop while it lives (its container paused, its host
#: suspended, one call holding the GIL) is taken for dead once its lease runs out, and
#: swept; while a dead one's lease holds, the others only keep more for a while.
LEASE_S = 300.0
LEASE_BOUNDS_S = (3.0, 3600.0)
#: How often a lease is renewed: every 5 seconds, or 12 times within a shorter one.
BEAT_S = 5.0
BEATS_PER_LEASE = 12
#: A session's start on the engine's clock is taken this much before the engine's first
#: answer to it (whole seconds, and the baseline's listing came a moment before).
START_MARGIN_NS = 2 * NANOS
#: A record compressed beyond this (some 200,000 images' baseline) is not kept in the
#: engine: the session is then a live one with an unknown baseline to the others.
RECORD_LIMIT = 4 << 20
#: The most a record may inflate to (a record of ``RECORD_LIMIT`` compressed bytes holds
#: far less): a label that inflates further is a forged one, and is not read.
INFLATED_LIMIT = 32 * RECORD_LIMIT
#: How many times a claim met by another's at the same moment is tried again.
CLAIM_TRIES = 3

_ID = re.compile(r"[0-9a-f]{32}")
VOLUME_NAME = re.compile(rf"{PREFIX}-([0-9a-f]{{32}})-(record|lease|lock)(?:-([0-9]{{1,9}}))?")
#: A record of what containers used (``budget.record``): no session's, so never a group.
USES_NAME = re.compile(rf"{PREFIX}-([0-9a-f]{{32}})-uses")


class Refused(ImagePruneError):
    """The engine will not hold the meeting place (a proxy that forbids volumes, a
    read-only API): why, in its own words."""


def lease_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The lease this session announces: ``PYTEST_IMAGEPRUNE_ENGINE_LEASE`` seconds if set
    (within ``LEASE_BOUNDS_S``; for tests), else ``LEASE_S``."""
    value = (environ if environ is not None else os.environ).get("PYTEST_IMAGEPRUNE_ENGINE_LEASE")
    return _bounded(value, LEASE_S)


def _bounded(value: object, default: float) -> float:
    """A lease's length in seconds, within ``LEASE_BOUNDS_S``; ``default`` for one that is
    no finite number."""
    try:
        wanted = float(value) if isinstance(value, (str, int, float)) and value != "" else default
    except ValueError:
        wanted = default
    if not math.isfinite(wanted):
        wanted = default
    low, high = LEASE_BOUNDS_S
    return min(max(wanted, low), high)


def beat_of(lease_s: float) -> float:
    """How often a lease of ``lease_s`` seconds is renewed."""
    return min(BEAT_S, lease_s / BEATS_PER_LEASE)


@dataclass
class Group:
    """One session's volumes, as one listing found them."""

    id: str
    records: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    leases: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    lock: Mapping[str, Any] | None = None

    def names(self) -> list[str]:
        names = [volume_name(self.id, "record", n) for n in self.records]
        names += [volume_name(self.id, "lease", n) for n in self.leases]
        if self.lock is not None:
            names.append(volume_name(self.id, "lock"))
        return names

    def last_sign_ns(self) -> int | None:
        """The newest of its volumes' ``CreatedAt``: when it was last known alive (whole
        seconds: it may have been up to a second later)."""
        times = [_created(v) for v in (*self.records.values(), *self.leases.values())]
        if self.lock is not None:
            times.append(_created(self.lock))
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def lease_s(self) -> float:
        newest = self.leases[max(self.leases)] if self.leases else None
        return _bounded(labels_of(newest).get(LEASE), LEASE_S)

    def holds(self, now_ns: int | None) -> bool:
        """Whether its lease still holds at ``now_ns`` (the engine's clock, whole seconds):
        unrenewed for no longer than it says, with a second each way for the rounding.
        Without the engine's clock, it holds."""
        last = self.last_sign_ns()
        if now_ns is None or last is None:
            return True
        return now_ns - last <= int(self.lease_s() * NANOS) + 2 * NANOS

    def describe(self) -> str:
        """Who the session is, as its newest record says (``records.SessionRecord.describe``)."""
        labels = labels_of(self.records[max(self.records)]) if self.records else {}
        pid, host = labels.get(PID, ""), labels.get(HOST, "")
        who = f"pid {pid} on {host}" if pid.isdigit() and host else f"session {self.id[:12]}"
        return f"{who} (seen in the engine)"

    def claims(self, now_ns: int | None) -> bool:
        """Whether its claim still holds: renewed (its newest lease, or the claim itself)
        within three renewals and the rounding. Shorter than its lease: a claim left by a
        session stopped or gone delays the others' prunes only briefly, and two prunes at
        once lose nothing (each keeps what the live sessions may need), they only do some
        work twice."""
        if self.lock is None:
            return False
        times = [_created(self.lock)]
        if self.leases:
            times.append(_created(self.leases[max(self.leases)]))
        known = [t for t in times if t is not None]
        if now_ns is None or not known:
            return True
        window = 3 * beat_of(self.lease_s()) + 2
        return now_ns - max(known) <= int(window * NANOS)

    def finishing(self) -> bool:
        return (
            bool(self.leases) and labels_of(self.leases[max(self.leases)]).get(STATE) == FINISHING
        )


@dataclass
class Seen:
    """The meeting place as one listing found it: the engine's clock then, and each
    session's volumes."""

    now_ns: int | None
    groups: dict[str, Group]


def unseen() -> SessionRecord:
    """The live session that stands for every session elsewhere on the engine, when its
    meeting place cannot be used: its baseline unknown, it keeps everything in scope."""
    return SessionRecord.unknown(UNSEEN_ID)


def volume_name(ident: str, role: str, number: int | None = None) -> str:
    return f"{PREFIX}-{ident}-{role}" + ("" if number is None else f"-{number}")


def labels_of(volume: Mapping[str, Any] | None) -> Mapping[str, str]:
    labels = volume.get("Labels") if volume is not None else None
    return labels if isinstance(labels, Mapping) else {}


def _created(volume: Mapping[str, Any]) -> int | None:
    return engine_time(volume.get("CreatedAt"))


def time_label(labels: Mapping[str, str], key: str, latest: int) -> int | None:
    value = labels.get(key)
    if not isinstance(value, str) or not value.isdigit() or len(value) > 19:
        return None
    number = int(value)
    return number if 0 < number <= latest else None


def record_labels(
    record: SessionRecord, state: str, started_ns: int, finished_ns: int | None = None
) -> dict[str, str]:
    """The labels of a volume holding ``record`` (``read_record`` reads them back): the
    record compressed (left out past ``RECORD_LIMIT``), its state, start and end."""
    data = json.dumps(record.to_json()).encode()
    packed = base64.b64encode(zlib.compress(data, 6)).decode("ascii")
    labels = {ROLE: "record", STATE: state, HOST: record.host[:255], PID: str(record.pid)}
    if len(packed) <= RECORD_LIMIT:
        labels[RECORD] = packed
    labels[STARTED] = str(started_ns)
    if finished_ns is not None:
        labels[FINISHED] = str(finished_ns)
    return labels


def read_record(group: Group, volume: Mapping[str, Any], now_ns: int | None) -> SessionRecord:
    """The record a volume of ``group`` holds, its times on the engine's clock (those it
    wrote are its host's): its start, and its end once deferred. ``ValueError`` names what
    is wrong: a label that inflates past ``INFLATED_LIMIT``, or nests past Python's depth,
    is no record either."""
    labels = labels_of(volume)
    text = labels.get(RECORD)
    if not isinstance(text, str) or len(text) > RECORD_LIMIT * 2:
        raise ValueError("it holds no record")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode(text, validate=True), INFLATED_LIMIT)
        if inflater.unconsumed_tail:
            raise ValueError("it inflates past any record")
        data = json.loads(raw)
    except (ValueError, zlib.error, RecursionError) as exc:
        raise ValueError(f"its record does not decode: {str(exc)[:200]}") from None
    record = SessionRecord.from_json(data, name=group.id)
    latest = (now_ns if now_ns is not None else time.time_ns()) + CLOCK_SKEW_NS
    started = time_label(labels, STARTED, latest)
    if started is None:
        raise ValueError(f"{STARTED} is not a time")
    finished = time_label(labels, FINISHED, latest)
    state = labels.get(STATE)
    if state == DEFERRED and finished is None:
        raise ValueError(f"{FINISHED} is not a time")
    return replace(
        record,
        started_ns=started,
        heartbeat_ns=started,
        finished_ns=finished if state == DEFERRED else None,
        state=DEFERRED if state == DEFERRED else RUNNING,
        clock=None,  # its times are the engine's, as its images' are
        engine_clock=True,
        engine="",  # this engine's: the volumes are its own
    )
