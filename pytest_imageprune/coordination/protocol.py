"""How the sessions on one engine share it: the protocol's rules, and one session's part.

The sessions of one engine meet in one place (``place.meeting_place``): the prune lock,
and beside it the session registry (``registry.Registry``: a record per session, its
files and its checks). The sessions that share only the engine (jobs in containers, other
hosts) meet in the engine too (``in_engine.EngineMeeting``: a record, a lease on the
engine's clock for ``.alive``, a claim beside the lock), by the same rules; a session
judges by the engine only the sessions its files do not show (``Coordinator._gather``).
Every session follows these rules, and this module is where they are kept; each names
where it is enforced (modules of this package, ``coordination``):

1. **Join.** Once its baseline is recorded, a session writes its record and holds its
   ``.alive`` file locked (``flock``) while it runs: the kernel lets go when the process
   dies, however it dies (``Coordinator.join``, ``registry.Registry.register``). A child
   the process forks closes its copy at once, so that it never makes a dead session look
   alive (``registry._forget_alive_in_child``).
2. **Heartbeat.** Every second (``records.HEARTBEAT_NS``) it touches ``.alive`` (a time
   stamp: no engine request, no disk block; ``Coordinator._heartbeat``,
   ``registry.Registry.beat``). A failure is retried five times sooner and counted, never
   the end of the heartbeat; the session says so at its end
   (``Coordinator.heartbeat_trouble``). Its heartbeat and its end read its record's clock,
   which no step of the wall clock moves (``clock.Clock``,
   ``records.SessionRecord.clock``).
3. **States.** So any record is one of (``registry.Registry.others``, sorted by
   ``registry.Registry.classify``):

   - **live**: its ``.alive`` lock is held by a running session; **finishing** is live, and
     about to take the prune lock (it may find it held and defer to the holder). A held
     ``.alive`` whose record cannot be read, or with none (a full disk), is a live
     session with an unknown baseline (``records.SessionRecord.unknown``);
   - **dead**: the lock is free but the record still says running or finishing (SIGKILL,
     OOM, a cancelled CI job): the session never pruned; it ended at most
     ``records.DEATH_SLACK_NS`` after the last touch of its ``.alive``
     (``records.SessionRecord.death_ns``);
   - **deferred**: the session finished but left work: images another live session might
     have produced, or a prune cut short (engine lost, Ctrl-C, lock held). Its record says
     when it finished and which images were in its scope then
     (``registry.Registry.settle``).

4. **Who prunes.** One prune per engine at a time: the prune lock, never waited for
   (``Coordinator.take_lock``, ``place.PruneLock.acquire``). A session that finds it held
   deletes nothing and leaves its record deferred: the holder does its work (rule 7). A
   lock that cannot be used at all: the same, said as an error naming the path, never as
   "already running" (``place.LockUnusable``).
5. **What is protected.** An image in a live session's baseline was there when it started
   (its tests may use it); one absent from it, or with a name it did not have there, may
   be that session's product: so no one else deletes any image while another session
   lives (``evidence.protect_live``, through ``Coordinator.protection``). A session that
   kept such images leaves its record deferred (``Coordinator.settle_own``).
6. **Who sweeps what, over which lifetime.** Whoever holds the lock, once its own prune
   completed, finishes the dead and deferred sessions' work (its own deferral included),
   oldest first (``Coordinator.sweep_owed``, ``registry.Others.owed``), each with that
   session's own filters and baseline and only over its lifetime: an image goes only with
   evidence that it arrived while that session lived (``evidence.within_lifetime``,
   ``evidence.Arrival``: its dates, and the engine's event log while it reaches back). The
   lifetime is judged once what it is compared with is listed: its end moved back by as
   far as the wall clock stepped back since the record's clock was read, never forward,
   its start never (``records.SessionRecord.seen_at``), so no step lengthens it; a
   deferred session owns no more than what was in its scope when it finished, and nothing
   tagged since. The sweeper holds a dead session's ``.alive`` lock while it sweeps, so no
   two sweep the same one (``registry.Registry._probe``, until ``settle`` or
   ``release_taken``). A record swept under one set of live sessions is swept again only
   once that set has changed (``Coordinator.sweep_owed``). So the last session out prunes
   what the group made.
7. **Hand-over.** A session marks itself finishing before it tries the lock, so a holder
   can tell that work may be handed to it (``Coordinator.finishing``): holding the lock,
   after its sweep, it looks again while anyone is finishing (at most ``SETTLE_ROUNDS``
   looks, ``SETTLE_PAUSE_S`` apart; ``Coordinator.sweep_owed``), and after letting the
   lock go it looks once more (at most ``HAND_OVER_ROUNDS`` times;
   ``Coordinator.hand_over``): if anything new is owed or anyone is finishing, it takes
   the lock again (never waiting: if another holds it, that one sees the same) and sweeps.
8. **Records are data**, never paths or code: every field is checked
   (``records.SessionRecord.from_json``), the ``id`` is the file's own name
   (``registry.Registry._read``), files are read with ``boundary.Boundary``'s checks (no
   symlink, no FIFO, a size limit: ``boundary.Boundary.read_file``). A bad record is
   skipped with one line (``records.BadRecord``), and removed when no live session holds
   its name (``registry.Registry._bad``).
9. **Every wait at session end has a bound.** The lock is never waited for; the looks of
   rules 6 and 7 are counted. Every file operation on the registry or the lock, which a
   stuck network mount could block forever, runs on a thread of the coordinator's own and
   is waited for at most ``worker.DEADLINE_S`` seconds (``worker.Worker.run``), and the
   heartbeat thread as long to stop (``Coordinator.stop_heartbeat``). One that takes
   longer makes the coordinator give up on the registry for good (``RegistryStuck``,
   naming the path and the wait; ``worker.Worker.give_up``): the session deletes nothing
   more, its record stays, and once its process ends a later session finishes its work.

``Coordinator`` is one session's part: it owns the registry handle, the session's record,
the heartbeat, the prune lock and the looks of rules 6 and 7. It reports facts (bad
records, heartbeat failures, a lock held or unusable, ``RegistryStuck``); the engine's work
(listing, pruning, sweeping one record) is the caller's, passed in as a callback, so this
module never talks to an engine. ``session.lifecycle.PruneSession`` turns the facts into
lines.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from pytest_imageprune.coordination.evidence import protect_live
from pytest_imageprune.coordination.in_engine import EngineMeeting, unseen
from pytest_imageprune.coordination.place import Place, PruneLock
from pytest_imageprune.coordination.records import (
    DEAD,
    DEFERRED,
    FINISHING,
    HEARTBEAT_NS,
    RUNNING,
    BadRecord,
    SessionRecord,
)
from pytest_imageprune.coordination.registry import Others, Registry
from pytest_imageprune.coordination.worker import Worker
from pytest_imageprune.errors import RegistryStuck
from pytest_imageprune.images.select import KeepRule

#: How many times a lock holder looks again for sessions finishing (rule 7), and how long
#: it pauses between two looks.
SETTLE_ROUNDS = 60
SETTLE_PAUSE_S = 0.05
#: How many times a session looks again after letting the lock go (rule 7).
HAND_OVER_ROUNDS = 3

_T = TypeVar("_T")

#: Finishes one owed record: ``(record, keep, state)``, where ``keep`` protects the live
#: sessions and ``state`` is "died" or "deferred"; False when sweeping should stop there.
Sweep = Callable[[SessionRecord, KeepRule, str], bool]


@dataclass(frozen=True)
class HeartbeatTrouble:
    """Heartbeats that failed: how many, when the first did (``time.time()``), the last
    error."""

    failures: int
    first_at: float
    error: str


class Coordinator:
    """One session's part in the protocol, at one meeting place.

    ``open`` (then ``join`` for a session with a record) at the start; at the end
    ``finishing``, ``take_lock``, ``protection`` for its own prune, ``settle_own``,
    ``sweep_owed`` with the lock held, ``release_lock``, ``hand_over``; ``close`` last.
    Every method may raise ``OSError`` (``RegistryStuck`` among them), except ``close``.
    """

    def __init__(
        self,
        place: Place,
        *,
        on_bad: Callable[[list[BadRecord]], None] | None = None,
        deadline: float | None = None,
        worker: Worker | None = None,
        engine: str = "",
        meeting: EngineMeeting | None = None,
    ) -> None:
        self.place = place
        #: The session's part in the engine's meeting place (``in_engine``), if the
        #: engine can hold one; and why it would not, once it would not.
        self.meeting = meeting
        self.unmet: str | None = None
        #: The sessions the last look found in the engine only: settled there.
        self._remote: set[str] = set()
        #: Who claims the engine's prune for a session with no record.
        self._claimant = uuid.uuid4().hex
        self.registry = Registry(place.registry, place.boundary, engine)
        self.lock = PruneLock(place.lock, place.boundary)
        self.record: SessionRecord | None = None
        #: Why the session's record could not be written, its ``.alive`` held all the same.
        self.unrecorded: str | None = None
        self._on_bad = on_bad
        self._fs = worker if worker is not None else Worker(deadline)
        self._beat = threading.Event()
        self._beater: threading.Thread | None = None
        self._beat_failures = 0
        self._beat_failed_at: float | None = None
        self._beat_error = ""
        #: The records swept, each with the live sessions it was swept under: sweeping it
        #: again makes sense only once that set has changed (rule 6).
        self._swept_under: dict[str, frozenset[str]] = {}

    @classmethod
    def meet(
        cls,
        find: Callable[[], Place],
        what: str,
        *,
        on_bad: Callable[[list[BadRecord]], None] | None = None,
        deadline: float | None = None,
        engine: str = "",
        meeting: EngineMeeting | None = None,
    ) -> Coordinator:
        """The coordinator of the place ``find`` finds (making its folders: bounded too,
        ``what`` says where), for the engine with key ``engine`` ("" unknown)."""
        worker = Worker(deadline)
        try:
            place = worker.run(what, find)
        except BaseException:
            worker.stop()
            raise
        return cls(place, on_bad=on_bad, worker=worker, engine=engine, meeting=meeting)

    # -- start -----------------------------------------------------------------------------
    def open(self) -> None:
        """Make the registry folder if missing, and check it (``Unsafe`` if it fails)."""
        self._run(self.registry.directory, self.registry.open)

    def join(self, record: SessionRecord) -> None:
        """Write the session's record, hold it live, and keep it so (rules 1 and 2)."""
        path = self.registry.directory / f"{record.id}.alive"
        try:
            self._run(path, lambda: self.registry.register(record))
        except OSError as exc:
            if isinstance(exc, RegistryStuck) or not self.registry.holds_alive:
                self._fs.stop()
                raise
            # Its .alive is held, its record could not be written (a full disk): while
            # this process runs, it is a live session with an unknown baseline to the
            # others (rule 3), so it may prune; only what it leaves has no record.
            self.unrecorded = f"{type(exc).__name__}: {exc}"
        except BaseException:
            self._fs.stop()
            raise
        self.record = record
        self._join_engine(record)
        self._beater = threading.Thread(
            target=self._heartbeat, name="imageprune-heartbeat", daemon=True
        )
        self._beater.start()

    def _join_engine(self, record: SessionRecord) -> None:
        """Take part in the engine's meeting place too: the sessions that share only the
        engine see this one there. One the engine refuses leaves this session unable to
        see them: it then keeps everything in its scope (``unmet``)."""
        if self.meeting is None:
            return
        try:
            self.meeting.join(record)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.meeting.settle(record, done=True)  # a lease it made, if any
            self._unmet(exc)

    def _unmet(self, exc: BaseException) -> None:
        if self.unmet is None:
            self.unmet = f"{type(exc).__name__}: {exc}"
        if self.meeting is not None:
            self.meeting.close()

    def _heartbeat(self) -> None:
        interval = HEARTBEAT_NS / 1e9
        while not self._beat.wait(interval):
            try:
                self.registry.beat()
            except Exception as exc:
                self._beat_failures += 1
                self._beat_error = f"{type(exc).__name__}: {exc}"
                if self._beat_failed_at is None:
                    self._beat_failed_at = time.time()
                interval = HEARTBEAT_NS / 5e9
            else:
                interval = HEARTBEAT_NS / 1e9

    def stop_heartbeat(self) -> None:
        """No more heartbeats: the record is this session's to settle from here on."""
        self._beat.set()
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.join(self._fs.deadline)
            if beater.is_alive():  # stuck in touching .alive
                own = self.record.id if self.record is not None else ""
                self._fs.give_up(self.registry.directory / f"{own}.alive")

    @property
    def heartbeat_trouble(self) -> HeartbeatTrouble | None:
        if not self._beat_failures:
            return None
        return HeartbeatTrouble(self._beat_failures, self._beat_failed_at or 0, self._beat_error)

    # -- finish ----------------------------------------------------------------------------
    def finishing(self) -> None:
        """Say "finishing": a lock holder then looks for this session to settle (rule 7)."""
        if self.record is None:
            return
        self.record = record = replace(self.record, state=FINISHING)
        if self.meeting is not None and self.unmet is None:
            with contextlib.suppress(Exception):  # a holder will not wait for it: no loss
                self.meeting.finishing()
        try:
            self._run(self._record_path(record), lambda: self.registry.write(record))
        except RegistryStuck:
            raise
        except OSError:
            pass  # a holder will not wait for it: this session sweeps its own deferral

    def take_lock(self) -> bool:
        """The prune lock, never waited for: False when another holds it; ``LockUnusable``
        when it cannot be used at all. On this host, the lock file; then the engine's
        claim (``in_engine.EngineMeeting.claim``), which the sessions elsewhere see."""
        if not self._run(self.lock.path, self.lock.acquire):
            return False
        if self.meeting is None or self.unmet is not None:
            return True
        claimant = self.record.id if self.record is not None else self._claimant
        # The files speak for the sessions they show: a claim of one that has ended there
        # (it lost the engine holding the claim) holds nothing.
        local = self._run(self.registry.directory, lambda: self.registry.classify(claimant))
        self._tell_bad(local.bad)  # said now: a bad record is removed as it is found
        gone = self.registry.seen - {r.id for r in local.live}
        try:
            claimed = self.meeting.claim(claimant, gone)
        except Exception as exc:  # it cannot see the others now: it keeps everything
            self._unmet(exc)
            return True
        if not claimed:
            self._run(self.lock.path, self.lock.release)
        return claimed

    def release_lock(self) -> None:
        if self.meeting is not None:
            with contextlib.suppress(Exception):  # a claim left is let go once its lease ends
                self.meeting.unclaim()
        self._run(self.lock.path, self.lock.release)

    def protection(self) -> KeepRule:
        """What this session's own prune must keep: what live sessions may have produced
        (rule 5). Bad records found on the way are told to ``on_bad``."""
        return protect_live(self.live())

    def live(self) -> list[SessionRecord]:
        """The other live sessions, as the registry shows them now."""
        own = self.record.id if self.record is not None else None
        return self._gather(own).live

    def settle_own(self, *, done: bool, present: frozenset[str] | None) -> None:
        """Forget this session's record when ``done``, else leave it deferred with the
        images in its scope at its end (``present``), for whoever sweeps it; it ends now,
        on its record's clock."""
        record = self.record
        if record is None:
            return
        if self.unmet is not None:
            # What it kept, it kept for sessions it cannot see, and so would every later
            # session that cannot: a record left owed would be owed for ever.
            done = True
        end_ns = record.now_ns()
        if self.meeting is not None and self.unmet is None:
            with contextlib.suppress(Exception):  # the engine's copy runs out with its lease
                self.meeting.settle(record, done=done, present=present)
        self._run(
            self._record_path(record),
            lambda: self.registry.settle(record, done=done, end_ns=end_ns, present=present),
        )

    def sweep_owed(self, sweep: Sweep) -> None:
        """With the lock held: finish what dead and deferred sessions left, this one's own
        deferral included, then look again while anyone is finishing (rules 6 and 7)."""
        for _ in range(SETTLE_ROUNDS):
            others = self._others()
            live = frozenset(r.id for r in others.live)
            todo = [r for r in others.owed() if self._swept_under.get(r.id) != live]
            if todo:
                keep = protect_live(others.live)
                for record in todo:
                    state = "died" if record in others.dead else "deferred"
                    if not sweep(record, keep, state):
                        return  # cancelled, or the engine is gone: the next session goes on
                    self._swept_under[record.id] = live
                continue  # sweeping took a while: someone may have deferred meanwhile
            if not any(r.state == FINISHING for r in others.live):
                return
            time.sleep(SETTLE_PAUSE_S)

    def swept(self, record: SessionRecord, *, done: bool) -> None:
        """After sweeping ``record``: forget it when ``done``, else leave it deferred."""
        if record.id in self._remote:
            assert self.meeting is not None
            end = record.death_ns if record.finished_ns is None else None
            self.meeting.settle(record, done=done, end_ns=end)
            return
        if done and self.meeting is not None and self.unmet is None:
            with contextlib.suppress(Exception):  # a stale copy: swept again, harmlessly
                self.meeting.forget(record.id)
        self._run(
            self._record_path(record),
            lambda: self.registry.settle(record, done=done, end_ns=record.death_ns),
        )

    def hand_over(self, sweep: Sweep) -> None:
        """After letting the lock go, look once more for work handed to this session.

        A session may mark itself finishing just after this one last looked, then find
        the lock still held and defer. So: while anything is owed or someone is
        finishing, take the lock again (never waiting: if another holds it, that one
        sees what is owed) and sweep.
        """
        for _ in range(HAND_OVER_ROUNDS):
            others = self._others()
            finishing = any(r.state == FINISHING for r in others.live)
            live = frozenset(r.id for r in others.live)
            todo = [r for r in others.owed() if self._swept_under.get(r.id) != live]
            if not finishing and not todo:
                self._release_taken()
                return  # nothing new: what is left waits for a live session to end
            if not self.take_lock():
                self._release_taken()  # the holder sweeps the dead, not us
                return
            try:
                self.sweep_owed(sweep)
            finally:
                self.release_lock()

    def close(self) -> None:
        """Let go of every lock this session holds in the registry; never raises."""
        self._beat.set()
        if self.meeting is not None:
            self.meeting.close()
        # Given up on, or the descriptors gone: the kernel lets go when the process ends.
        with contextlib.suppress(Exception):
            self._run(self.registry.directory, self.registry.close)
        self._fs.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _others(self) -> Others:
        """Every other record, this session's own included once it is deferred."""
        others = self._gather(None)
        own = self.record.id if self.record is not None else None
        others.live = [r for r in others.live if r.id != own]  # never wait for oneself
        return others

    def _gather(self, skip: str | None) -> Others:
        """The records in the files (but ``skip``), and those of the sessions found only
        in the engine (``in_engine``); with the engine's place unusable, one live session
        more that keeps everything: the sessions elsewhere it cannot see."""
        others = self._run(self.registry.directory, lambda: self.registry.classify(skip))
        if self.meeting is not None and self.unmet is None:
            known = set(self.registry.seen)
            if self.record is not None:
                known.add(self.record.id)
            remote: set[str] = set()
            try:
                for item in self.meeting.others(frozenset(known)):
                    if isinstance(item, BadRecord):
                        others.bad.append(item)
                        continue
                    record, state = item
                    remote.add(record.id)
                    {RUNNING: others.live, DEAD: others.dead, DEFERRED: others.deferred}[
                        state
                    ].append(record)
            except Exception as exc:
                self._unmet(exc)
            else:
                self._remote = remote
        if self.unmet is not None:
            others.live.append(unseen())
        self._tell_bad(others.bad)
        return others

    def _release_taken(self) -> None:
        self._run(self.registry.directory, self.registry.release_taken)

    def _tell_bad(self, bad: Sequence[BadRecord]) -> None:
        if self._on_bad is not None:
            self._on_bad(list(bad))

    def _run(self, path: Path | str, operation: Callable[[], _T]) -> _T:
        return self._fs.run(path, operation)

    def _record_path(self, record: SessionRecord) -> Path:
        return self.registry.directory / f"{record.id}.json"
