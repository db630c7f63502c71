"""Where sessions that share only the engine meet: labelled volumes in the engine itself.

CI jobs in containers on one host's socket, or hosts reaching one engine over tcp or ssh,
share no ``/tmp``: the registry's files (``registry``) never show them each other. The
engine is the one thing they share, so every session also keeps its part there, in empty
local volumes labelled ``api.MEETING_LABEL=<session ID>`` (``docker volume ls --filter
label=io.github.pytest-imageprune.session`` shows them), each with a role
(``ROLE``):

- ``pytest-imageprune-<id>-record-<n>``: the session's record (``records.SessionRecord``,
  compressed into one label, ``RECORD``), with its start on the engine's clock
  (``STARTED``), its state, and once deferred its end (``FINISHED``). A record is never
  changed: a new one, ``n + 1``, replaces it, and the highest ``n`` is the record.
- ``pytest-imageprune-<id>-lease-<n>``: the session's lease, renewed every ``beat_s``
  seconds by a new one (the old one then removed): the engine stamps each volume's
  ``CreatedAt`` on its own clock, so a lease is judged on the engine's clock alone (the
  ``Date`` of its answer is now), whatever the hosts' clocks say. A lease unrenewed for
  longer than it says (``LEASE``, ``lease_s``; five minutes unless
  ``PYTEST_IMAGEPRUNE_ENGINE_LEASE`` says otherwise) is a dead session's.
- ``pytest-imageprune-<id>-lock``: the session's claim on the engine's one prune at a
  time (``claim``): made, then the claims listed; another live session's claim there
  means another prunes (the claim is taken back). Two sessions claiming at once may
  both see the other: both then step back, and try again after a short random pause.
- ``pytest-imageprune-<id>-uses``: no session's, but every session's record of which
  images the engine's containers used and when (``budget.record``), the storage budget's
  evidence of last use that outlives the engine's own; ``<id>`` is the record's, new
  each time. Never a session's group (``look`` passes it by); merged now and then.

A session's own record in the files (``registry``), where it has one, speaks for it to
the sessions that share the files: the ``.alive`` lock tells its death at once, where a
lease tells it only once the lease runs out. So a session judges by the engine only the
sessions it cannot see in its files (``Coordinator._others``).

Nothing is left once the last session is gone but the record of uses (at most
``budget.record.COMPACT_AT`` volumes): a session that finishes removes its own
volumes, a deferred one leaves its record (and no lease) for whoever sweeps it, and the
sweeper removes what it swept. No prune of the plugin's takes these volumes
(``kinds.things``), and ``docker volume prune`` leaves them (they are named); ``docker
volume prune --all`` or ``docker volume rm`` while sessions run removes their meeting
place: until their next lease (``beat_s``) they do not protect each other.

The volumes themselves, their names and labels, and how one listing of them reads
(``Group``, ``Seen``), are ``meeting_volumes``; this module is a session's part in them.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_imageprune.coordination.meeting_volumes import (
    CLAIM_TRIES,
    FINISHED,
    LEASE,
    RECORD,
    ROLE,
    ROOM,
    START_MARGIN_NS,
    STATE,
    USES_NAME,
    VOLUME_NAME,
    WHERE,
    Group,
    Refused,
    Seen,
    beat_of,
    labels_of,
    lease_from_env,
    read_record,
    record_labels,
    unseen,
    volume_name,
)
from pytest_imageprune.coordination.records import (
    DEAD,
    DEFERRED,
    FINISHING,
    RUNNING,
    BadRecord,
    SessionRecord,
)
from pytest_imageprune.engine.api import MEETING_LABEL, Conflict, EngineError, Gone, Meets
from pytest_imageprune.model.gotime import NANOS

__all__ = [
    "FINISHED",
    "LEASE",
    "RECORD",
    "ROLE",
    "ROOM",
    "STATE",
    "EngineMeeting",
    "Refused",
    "lease_from_env",
    "unseen",
]


class EngineMeeting:
    """One session's part in the engine's meeting place.

    ``engine`` is a connection of its own (the lease is renewed from a thread of its own
    while the session's prune uses the session's); every request goes through ``_ask``,
    one at a time. Every method may raise the engine's errors (``ImagePruneError``,
    ``Refused`` when it refuses to make a volume), except ``close``.
    """

    def __init__(
        self, engine: Meets, *, lease_s: float | None = None, room: str | None = None
    ) -> None:
        self.engine = engine
        if room is None:
            room = os.environ.get("PYTEST_IMAGEPRUNE_ENGINE_ROOM", "")
        self.room = room[:128]
        self.lease_s = lease_from_env() if lease_s is None else lease_s
        self.beat_s = beat_of(self.lease_s)
        self.own: str | None = None
        self._host = ""
        self._pid = 0
        self._started_ns: int | None = None
        self._generation = -1
        self._lease = -1
        self._state = RUNNING
        self._guard = threading.Lock()
        self._renewing = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        #: The engine's clock at its last answer.
        self.now_ns: int | None = None
        #: The sessions the last look found here, by ID (what a sweep removes).
        self._seen: dict[str, Group] = {}
        self.beat_failures = 0
        self.beat_error = ""
        #: The longest time the lease went unrenewed past its length (the process stopped,
        #: or one call holding the GIL): sessions elsewhere may have taken it for dead.
        self.lapsed_s = 0.0
        self._claim: str | None = None
        #: Its own record is settled (``settle``): a lease left is only for its claim.
        self._settled = False
        #: Who held the engine's claim when this session's was refused.
        self.holder: str | None = None

    @property
    def finishing_lease(self) -> str | None:
        """The name of the lease that said "finishing" (made once its tests were over)."""
        if self.own is None or self._lease < 0 or self._state != FINISHING:
            return None
        return volume_name(self.own, "lease", self._lease)

    @property
    def joined_ns(self) -> int | None:
        """When this session joined, on the engine's clock (a moment early)."""
        return self._started_ns

    # -- start -----------------------------------------------------------------------------
    def join(self, record: SessionRecord) -> None:
        """Take a lease, then write the record; then renew the lease while the session
        runs. ``Refused`` when the engine will not make the volumes."""
        self.own = record.id
        self._host, self._pid = record.host, record.pid
        self._renew()
        now = self.now_ns if self.now_ns is not None else time.time_ns()
        self._started_ns = now - START_MARGIN_NS
        self._generation = 0
        self._write(record, RUNNING, ident=record.id, generation=0, started_ns=self._started_ns)
        self._beater = threading.Thread(target=self._beat, name="imageprune-lease", daemon=True)
        self._beater.start()

    def _beat(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.beat_s):
            try:
                self._renew()
            except Exception as exc:  # counted; the next one may go through
                self.beat_failures += 1
                self.beat_error = f"{type(exc).__name__}: {exc}"
                continue
            now = time.monotonic()
            if now - last > self.lease_s:  # stopped, or starved, longer than its lease
                self.lapsed_s = max(self.lapsed_s, now - last)
            last = now

    def _renew(self) -> None:
        """A new lease, then the old one removed: there is always one. One at a time (the
        thread's, and "finishing")."""
        own = self._owned()
        with self._renewing:
            previous, self._lease = self._lease, self._lease + 1
            self._make(
                volume_name(own, "lease", self._lease),
                {ROLE: "lease", STATE: self._state, LEASE: f"{self.lease_s:g}"},
            )
            if previous >= 0:
                self._drop(volume_name(own, "lease", previous))

    def finishing(self) -> None:
        """Say "finishing" at once: a prune's holder waits for it to settle."""
        if self.own is None:
            return
        self._state = FINISHING
        self._renew()

    def stop(self) -> None:
        """No more leases from the thread (the next ones, if any, are the caller's)."""
        self._stop.set()
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.join(30)

    # -- the others ------------------------------------------------------------------------
    def look(self) -> Seen:
        volumes, now = self._ask(self.engine.meeting_volumes)
        groups: dict[str, Group] = {}
        for volume in volumes:
            match = VOLUME_NAME.fullmatch(str(volume.get("Name") or ""))
            labels = labels_of(volume)
            if match is None or labels.get(MEETING_LABEL) != match.group(1):
                continue  # not one of ours, whatever its label says
            if labels.get(ROOM, "") != self.room:
                continue
            ident, role, number = match.groups()
            group = groups.setdefault(ident, Group(ident))
            if role == "record" and number is not None:
                group.records[int(number)] = volume
            elif role == "lease" and number is not None:
                group.leases[int(number)] = volume
            elif role == "lock" and number is None:
                group.lock = volume
        self._seen = groups
        return Seen(now, groups)

    def others(
        self, skip: frozenset[str] = frozenset()
    ) -> Iterator[tuple[SessionRecord, str] | BadRecord]:
        """Each session here but this one and those in ``skip`` (seen in the files), with
        its state, as ``registry.Registry.others`` gives them; or why its record is bad.
        Volumes no session holds any more (a lease run out, no record) are removed."""
        seen = self.look()
        for ident, group in seen.groups.items():
            if ident == self.own or ident in skip:
                continue
            try:
                judged = list(self._judge(group, seen.now_ns))
            except Exception as exc:  # one session's volumes never blind the look at all
                name = f"the volumes of session {ident[:12]}"
                judged = [BadRecord(name, f"{type(exc).__name__}: {exc}", live=True, where=WHERE)]
                judged.append((SessionRecord.unknown(ident), RUNNING))
            yield from judged

    def _judge(
        self, group: Group, now_ns: int | None
    ) -> Iterator[tuple[SessionRecord, str] | BadRecord]:
        holds = group.holds(now_ns)
        if not group.records:
            if holds:  # writing its record now, or it was removed under it
                yield SessionRecord.unknown(group.id), RUNNING
            else:
                self._remove(group.names())
            return
        volume = group.records[max(group.records)]
        try:
            record = read_record(group, volume, now_ns)
        except ValueError as exc:
            name = str(volume.get("Name"))
            if holds:
                yield BadRecord(name, str(exc), live=True, where=WHERE)
                yield SessionRecord.unknown(group.id), RUNNING
            else:
                self._remove(group.names())
                yield BadRecord(name, str(exc), removed=True, where=WHERE)
            return
        if record.state == DEFERRED:
            yield record, DEFERRED
        elif holds:
            yield replace(record, state=FINISHING if group.finishing() else RUNNING), RUNNING
        else:
            # Dead: it lived at its last sign, and at most a renewal (and the rounding of
            # whole seconds) after it.
            last = group.last_sign_ns() or record.started_ns
            beat = last + NANOS + int(self.beat_s_of(group) * NANOS)
            yield replace(record, heartbeat_ns=max(record.started_ns, beat)), DEAD

    def beat_s_of(self, group: Group) -> float:
        return beat_of(group.lease_s())

    # -- one prune at a time ---------------------------------------------------------------
    def claim(self, claimant: str, gone: frozenset[str] = frozenset()) -> bool:
        """Claim the engine's one prune at a time for ``claimant`` (a session ID): False
        when another live session holds a claim. A claim whose session is gone is removed:
        one whose lease ran out, or one of ``gone`` (sessions the files show ended: a
        claim left by a session that lost the engine while it held it)."""
        name = volume_name(claimant, "lock")
        self.holder = None
        for attempt in range(CLAIM_TRIES):
            self._make(name, {ROLE: "lock"})
            self._claim = name
            seen = self.look()
            held = False
            for ident, group in seen.groups.items():
                if ident == claimant or group.lock is None:
                    continue
                if ident not in gone and group.claims(seen.now_ns):
                    held = True
                    self.holder = group.describe()
                else:
                    self._remove([volume_name(ident, "lock")])
            if not held:
                return True
            self.unclaim()
            if attempt + 1 < CLAIM_TRIES:
                time.sleep(random.uniform(0.02, 0.1))  # both may have seen the other
        return False

    def unclaim(self) -> None:
        name, self._claim = self._claim, None
        if name is not None:
            self._remove([name])
        if self._settled and self.own is not None:  # its lease outlived its record for this
            self.stop()
            self._remove(
                [volume_name(self.own, "lease", n) for n in (self._lease - 1, self._lease)]
            )

    # -- the end ---------------------------------------------------------------------------
    def settle(
        self,
        record: SessionRecord,
        *,
        done: bool,
        present: frozenset[str] | None = None,
        end_ns: int | None = None,
    ) -> None:
        """After pruning for ``record`` (this session's, or one swept): remove its volumes
        when done, else leave it deferred: a record that says what was in its scope at
        its end (``present``), and when that was on the engine's clock (``end_ns``, now
        if None), and no lease."""
        own = record.id == self.own
        claimed = own and self._claim is not None
        if own:
            self._settled = True
            if not claimed:
                self.stop()
            # Its own volumes as the engine lists them: whatever a renewal cut short left.
            seen = self.look().groups.get(record.id)
            old = sorted({*self._names_of(record.id, None), *(seen.names() if seen else ())})
            if claimed:  # still pruning (sweeping others): claimed, and renewed, till unclaim
                old = [n for n in old if not (n.endswith("-lock") or "-lease-" in n)]
            group = None
        else:
            group = self._seen.get(record.id)
            old = self._names_of(record.id, group)
        if done:
            self._remove(old)
            return
        finished = record.finished_ns if not own else None
        if finished is None:
            finished = end_ns
        if finished is None:
            _, now = self._ask(self.engine.meeting_volumes)  # the engine's clock, now
            finished = (now if now is not None else time.time_ns()) + NANOS
        if present is None:
            present = record.present
        deferred = replace(record, state=DEFERRED, present=present)
        if own:
            self._generation += 1
            generation, started = self._generation, self._started_ns or 0
        else:
            generation = max(group.records, default=-1) + 1 if group is not None else 0
            started = record.started_ns
        self._write(
            deferred,
            DEFERRED,
            ident=record.id,
            generation=generation,
            started_ns=started,
            finished_ns=finished,
        )
        newest = volume_name(record.id, "record", generation)
        self._remove([n for n in old if n != newest])
        if own and not claimed:
            self._lease = -1

    def forget(self, record_id: str) -> None:
        """Remove every volume of a session the files settled (its copy here is stale)."""
        group = self._seen.get(record_id)
        if group is not None:
            self._remove(group.names())

    def close(self) -> None:
        """Stop renewing the lease; the volumes stay as they are (a session that never
        settled is seen dead once its lease runs out, and swept). Never raises."""
        with contextlib.suppress(Exception):
            self.stop()
        with contextlib.suppress(Exception):
            self.unclaim()
        close = getattr(self.engine, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    # -- the record of what containers used (``budget.record``) ------------------------------
    def use_records(self) -> tuple[list[Mapping[str, Any]], int | None]:
        """The volumes of this room that hold a record of uses, and the engine's clock."""
        volumes, now = self._ask(self.engine.meeting_volumes)
        found = []
        for volume in volumes:
            match = USES_NAME.fullmatch(str(volume.get("Name") or ""))
            labels = labels_of(volume)
            if match is None or labels.get(MEETING_LABEL) != match.group(1):
                continue
            if labels.get(ROOM, "") == self.room:
                found.append(volume)
        return found, now

    def keep_uses(self, ident: str, labels: Mapping[str, str]) -> None:
        """A record of uses, as ``pytest-imageprune-<ident>-uses`` (``ident`` new)."""
        self._make(volume_name(ident, "uses"), {ROLE: "uses", **labels}, ident=ident)

    def drop_uses(self, names: Sequence[str]) -> None:
        self._remove([n for n in names if USES_NAME.fullmatch(n)])

    # -- helpers ---------------------------------------------------------------------------
    def _names_of(self, ident: str, group: Group | None) -> list[str]:
        if group is not None:
            return group.names()
        names = [volume_name(ident, "record", n) for n in range(max(self._generation, 0) + 1)]
        if self._lease >= 0:
            names += [
                volume_name(ident, "lease", n) for n in (self._lease - 1, self._lease) if n >= 0
            ]
        return [*names, volume_name(ident, "lock")]

    def _write(
        self,
        record: SessionRecord,
        state: str,
        *,
        ident: str,
        generation: int,
        started_ns: int,
        finished_ns: int | None = None,
    ) -> None:
        """Record ``record`` as ``ident``'s record number ``generation``."""
        labels = record_labels(record, state, started_ns, finished_ns)
        self._make(volume_name(ident, "record", generation), labels, ident=ident)

    def _make(self, name: str, labels: Mapping[str, str], *, ident: str | None = None) -> None:
        ident = ident if ident is not None else self._owned_or(name)
        full = {MEETING_LABEL: ident, **labels}
        if self.room:
            full[ROOM] = self.room
        try:
            made, _ = self._ask(self.engine.make_volume, name, full)
        except (EngineError, Conflict, Gone) as exc:
            raise Refused(f"{name}: {exc}") from exc
        if labels_of(made).get(MEETING_LABEL) != ident:
            raise Refused(f"{name}: a volume of that name is someone else's")

    def _drop(self, name: str) -> None:
        with contextlib.suppress(Gone):
            self._ask(self.engine.drop_volume, name)

    def _remove(self, names: list[str]) -> None:
        """Remove volumes; one already gone, or in use (someone mounted it), stays said
        nowhere: it is no one's loss."""
        for name in names:
            with contextlib.suppress(Gone, Conflict, EngineError):
                self._drop(name)

    def _ask(self, call: Callable[..., Any], *args: Any) -> Any:
        with self._guard:
            answer = call(*args)
        if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[1], int):
            self.now_ns = answer[1]
        return answer

    def _owned(self) -> str:
        if self.own is None:
            raise RuntimeError("the session has not joined")
        return self.own

    def _owned_or(self, name: str) -> str:
        match = VOLUME_NAME.fullmatch(name)
        return match.group(1) if match else self._owned()
