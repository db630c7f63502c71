"""One session's life on an engine, without pytest: start, finish, and what to say.

At start: connect, record the baseline, join the engine's sessions (``coordination``). At
finish, under the engine's prune lock: prune this session's images, keeping what a live
session may have produced, then finish the work of sessions that died or deferred theirs.
The protocol between sessions is ``coordination.Coordinator``'s; the engine's work and the
user's lines are this module's. Nothing here raises: every problem becomes a report status
and a line to print.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_imageprune.engine.api import Engine, endpoint_from_env
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.errors import EngineUnavailable, FilterError, RegistryStuck
from pytest_imageprune.model import report as reporting
from pytest_imageprune.model.filters import Filters
from pytest_imageprune.model.images import Baseline, Image, Snapshot
from pytest_imageprune.model.outcome import RAN, Status

# The coordination, the lock, the registry and the prune (filelock among them) are
# imported where first used, so that pytest's start-up does not wait for them:
# ``_load_the_rest`` loads them in the baseline thread while the engine lists its images.
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytest_imageprune.coordination.protocol import Coordinator
    from pytest_imageprune.coordination.records import BadRecord, SessionRecord
    from pytest_imageprune.engine.store import Store
    from pytest_imageprune.images.delete import Progress
    from pytest_imageprune.images.select import KeepRule
    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.kinds.report import KindReport
    from pytest_imageprune.kinds.select import Live
    from pytest_imageprune.model.report import PruneReport


@dataclass
class Swept:
    """The work of another session, finished by this one."""

    record: SessionRecord
    state: str
    report: PruneReport
    #: The images kept for want of evidence they were that session's, with why.
    doubted: dict[str, str] = field(default_factory=dict)
    #: What its other kinds' prunes did.
    kinds: list[KindReport] = field(default_factory=list)


@dataclass
class PruneSession:
    filters: Filters
    scope: str = "session"
    dry_run: bool = False
    lock_path: Path | None = None
    #: Asked about every image a prune would delete (the ``pytest_imageprune_protect`` hook).
    protect: KeepRule | None = None
    #: Hears of each candidate deleted (the terminal's progress line).
    progress: Progress | None = None
    #: Whether images are pruned; the other kinds (``kinds``) may be without them.
    images: bool = True
    #: The other kinds to prune, with their filters, by name.
    kinds: Mapping[str, KindFilters] = field(default_factory=dict)
    #: The objects of each other kind present at start (containers always, with the
    #: images; the rest when a kind is enabled).
    kind_baseline: dict[str, frozenset[str]] | None = None
    #: What each other kind's prune did, in the order they ran.
    kind_reports: list[KindReport] = field(default_factory=list)
    endpoint: str = field(default_factory=endpoint_from_env)
    #: Connected at ``start`` from the environment, unless given.
    engine: Engine | None = None
    baseline: Baseline | None = None
    record: SessionRecord | None = None
    #: This session's part in the protocol between sessions, once it has a meeting place.
    coordinator: Coordinator | None = None
    #: Why nothing can be pruned (the engine was unreachable at start), if so.
    problem: str | None = None
    #: Why no safe registry or lock could be had (nothing is deleted then), if so.
    unsafe: str | None = None
    report: PruneReport | None = None
    swept: list[Swept] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _starter: threading.Thread | None = None
    #: Layers read ahead while the tests ran (scope "all"), by root image ID.
    _known_layers: dict[str, dict[str, int]] = field(default_factory=dict)
    _reader: threading.Thread | None = None
    _stop_reading: threading.Event = field(default_factory=threading.Event)
    #: The engine's image store, once asked (at start, before the baseline).
    store: Store | None = None
    _store_known: threading.Event = field(default_factory=threading.Event)
    #: The images already said to be kept for another live session: a sweep that keeps
    #: them again (this session's own deferral, say) says nothing new.
    _said_live: set[str] = field(default_factory=set)
    #: The engine's ID (``GET /info``, asked with the baseline); "" when it has none.
    _engine_id: str | None = None
    #: The bad registry files already said, by name (one line each per session).
    _bad_said: set[str] = field(default_factory=set)
    #: Why a sweep stopped short (Ctrl-C, the engine gone): no more sweeping then.
    _stopped: str | None = None

    # -- start ---------------------------------------------------------------------------
    def start(self, *, background: bool = False) -> None:
        """Record the baseline and register; on failure, note the problem and go on.

        With ``background``, the engine lists its images in a thread while pytest goes on
        configuring and collecting; ``wait_started`` joins it and registers the session,
        and must be called before any test runs.
        """
        if self.engine is None:  # cheap: reads the docker CLI's config, contacts nothing
            try:
                self.engine = DockerEngine.from_env()
            except EngineUnavailable as exc:
                self.problem = str(exc)
                return
        if background:
            self._starter = threading.Thread(
                target=self._take_baseline, name="imageprune-baseline", daemon=True
            )
            self._starter.start()
        else:
            self._take_baseline()
            self._register()

    def known_store(self, timeout: float) -> Store | None:
        """The engine's image store, waiting at most ``timeout`` seconds for it."""
        if self._starter is not None:
            self._store_known.wait(timeout)
        return self.store

    def wait_started(self) -> None:
        """The baseline is recorded and the session registered (or that failed) on return."""
        if self._starter is not None:
            self._starter.join()
            self._starter = None
            self._register()

    def _take_baseline(self) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            self.endpoint = engine.endpoint
            if isinstance(engine, DockerEngine):
                try:
                    self.store = engine.store
                finally:
                    self._store_known.set()
                if not self.store.supported:  # nothing will be deleted: no need to list
                    self.problem = f"{self.store.describe()}: {self.store.reason}"
                    engine.close()
                    return
                snapshot = engine.snapshot(meanwhile=_load_the_rest)
            else:
                snapshot = engine.snapshot()
            self.baseline = Baseline.of(snapshot)
            self.kind_baseline = self._kinds_present(engine, snapshot)
            if isinstance(engine, DockerEngine) and self.lock_path is None:
                self._engine_id = engine.engine_id  # names the meeting place (see lock.py)
            elif self.lock_path is None:
                self._engine_id = ""
        except EngineUnavailable as exc:
            self.problem = str(exc)
        except Exception as exc:  # an engine error, a malformed answer: never the verdict
            self.problem = f"Docker engine at {self.endpoint} failed: {type(exc).__name__}: {exc}"
        else:
            with contextlib.suppress(Exception):  # a help: the prune reads what is missing
                self._read_ahead(snapshot)
        if self._stop_reading.is_set():  # abandoned meanwhile: no one else will use it
            engine.close()

    def _kinds_present(self, engine: Engine, snapshot: Snapshot) -> dict[str, frozenset[str]]:
        """The other kinds' objects present now, for this session's prune and for the other
        sessions' (what a live session's lists lack may be its): the containers, listed with
        the images; the networks and volumes (two quick requests) whatever is enabled, so
        that no session's prune must judge them by the clocks; the build cache when that
        kind is enabled (``GET /system/df`` is slow on Docker 20.10)."""
        present = {"containers": frozenset(c.id for c in snapshot.containers)}
        if not isinstance(engine, DockerEngine):
            return present
        from pytest_imageprune.kinds.table import BUILD_CACHE, CONTAINERS, NETWORKS, VOLUMES
        from pytest_imageprune.kinds.things import present_ids

        wanted = [NETWORKS, VOLUMES]
        if BUILD_CACHE in self.kinds and not engine.podman:
            wanted.append(BUILD_CACHE)
        for kind in wanted:
            try:
                present[kind] = present_ids(engine, kind)
            except Exception as exc:  # that kind alone: not pruned, and all of it kept for us
                self.lines.append(
                    f"imageprune: WARNING could not list the {kind.replace('_', ' ')} at"
                    f" session start ({type(exc).__name__}: {exc}): none will be pruned"
                )
        if self.kinds:  # listed again after the others: one made meanwhile is in either
            with contextlib.suppress(Exception):
                present[CONTAINERS] |= present_ids(engine, CONTAINERS)
        return present

    def _read_ahead(self, snapshot: Snapshot) -> None:
        """Scope "all": what the end's prune deletes is mostly here already. While the
        tests run, read the layers those deletions may release (which the prune would
        otherwise read then), in a thread, on a connection of its own."""
        if self.scope != "all" or self.dry_run or not isinstance(self.engine, DockerEngine):
            return
        if self._stop_reading.is_set():
            return
        twins = self.engine.spawn(2)[1:]
        if not twins:
            return
        self._reader = threading.Thread(
            target=self._read,
            args=(twins[0], snapshot),
            name="imageprune-read-ahead",
            daemon=True,
        )
        self._reader.start()

    def _read(self, engine: Engine, snapshot: Snapshot) -> None:
        from pytest_imageprune.images.delete import read_ahead
        from pytest_imageprune.images.prune import until_cutoff
        from pytest_imageprune.images.select import select

        try:
            if not getattr(engine, "lists_layers", True):
                return  # Podman: its prune counts whole images, no layers to read
            until_ns = until_cutoff(self.filters, snapshot)
            candidates = select(snapshot, self.filters, until_ns, None, None).candidates
            read_ahead(engine, snapshot, candidates, self._known_layers, self._stop_reading)
        except Exception:  # a help, never a failure: the prune reads what is missing
            return
        finally:
            engine.close()

    def stop_read_ahead(self, *, wait: bool = True) -> None:
        """Stop reading ahead; with ``wait``, once the request in flight is answered."""
        self._stop_reading.set()
        if self._reader is not None and wait:
            self._reader.join()
            self._reader = None

    def abandon(self) -> None:
        """This session will never finish (pytest stopped early, or its settings changed
        after it started): read no more, and let the engine go once the listing is in."""
        self._stop_reading.set()
        starter = self._starter
        if self.engine is not None and (starter is None or not starter.is_alive()):
            self.engine.close()

    def _register(self) -> None:
        from pytest_imageprune.coordination.records import SessionRecord

        if self.baseline is None or self.coordinator is not None:
            return
        self.record = SessionRecord.new(
            self.baseline,
            self.filters.to_docker(),
            self.scope,
            self.baseline.taken_ns or time.time_ns(),
            kinds=self.kind_baseline,
            images=self.images,
            kind_filters={name: f.to_docker() for name, f in self.kinds.items()} or None,
        )
        coordinator = self._meet()
        if coordinator is None:
            return
        try:
            coordinator.join(self.record)
        except Exception as exc:  # in a pytest hook now: never the verdict, never a traceback
            self.unsafe = (
                f"the session registry {coordinator.registry.directory} is unusable: {exc}"
            )
            return  # not closed: a held .alive with no record still protects this session
        self.coordinator = coordinator
        if coordinator.unrecorded is not None:
            self.lines.append(
                f"imageprune: WARNING could not write this session's record in"
                f" {coordinator.registry.directory} ({coordinator.unrecorded}): other sessions"
                " keep what it builds while it runs, and it prunes at its end, but what it"
                " leaves then (or if it dies) no later session finishes"
            )

    def _meet(self) -> Coordinator | None:
        """The coordinator of the engine's meeting place, its registry checked; None (and
        ``unsafe`` says why) when no safe one can be had."""
        from pytest_imageprune.coordination.place import meeting_place, place_of_lock
        from pytest_imageprune.coordination.protocol import Coordinator

        try:
            if self.lock_path is not None:
                find = functools.partial(place_of_lock, self.lock_path, self.endpoint)
                what = str(self.lock_path)
            else:
                find = functools.partial(meeting_place, self.endpoint, self._engine())
                what = f"the meeting place of {self.endpoint}"
            coordinator = Coordinator.meet(find, what, on_bad=self._say_bad)
        except EngineUnavailable as exc:
            self.problem = str(exc)
            return None
        except Exception as exc:
            self.unsafe = f"no safe place for the lock and the session registry: {exc}"
            return None
        for refused in coordinator.place.refused:  # each squatted name: one line, then the next
            self.lines.append(
                f"imageprune: WARNING {refused}; meeting at {coordinator.place.lock.parent} instead"
            )
        try:
            coordinator.open()
        except Exception as exc:
            self.unsafe = (
                f"no safe session registry beside the lock {coordinator.place.lock}: {exc}"
            )
            coordinator.close()
            return None
        return coordinator

    def _engine(self) -> str:
        """The engine's ID, asked now if it was not at start ("" when it has none)."""
        if self._engine_id is None:  # not asked at start: the engine did not answer
            self.engine = self.engine or DockerEngine.from_env()
            self.endpoint = self.engine.endpoint
            engine_id = getattr(self.engine, "engine_id", "")
            self._engine_id = engine_id if isinstance(engine_id, str) else ""
        return self._engine_id

    def stop_heartbeat(self) -> None:
        """No more heartbeats: the record is this session's to settle from here on."""
        if self.coordinator is not None:
            self.coordinator.stop_heartbeat()

    # -- finish --------------------------------------------------------------------------
    def finish(self) -> None:
        """Prune under the lock; settle the registry; never raise."""
        started = time.monotonic()
        try:
            self.wait_started()
            self.stop_heartbeat()
            self._finish()
        except KeyboardInterrupt:
            self.lines.append("imageprune: interrupted before deleting anything")
        except RegistryStuck as exc:  # nothing more may be deleted without the registry
            ran = self.report is not None and self.report.status in RAN
            more = "; nothing more deleted" if ran else "; nothing deleted"
            self._fail(Status.NO_REGISTRY, f"WARNING {exc}{more}")
        except Exception as exc:  # the verdict is the tests', whatever happens here
            self._fail(Status.FAILED, f"WARNING prune failed: {type(exc).__name__}: {exc}")
        finally:
            self.stop_read_ahead(wait=False)  # a daemon thread: it closes its connection
            if self.coordinator is not None:
                self.coordinator.close()  # never raises, never waits past its bound
            if self.engine is not None:
                self.engine.close()
        trouble = self.coordinator.heartbeat_trouble if self.coordinator is not None else None
        if trouble is not None:
            when = time.strftime("%H:%M:%S", time.localtime(trouble.first_at))
            self.lines.append(
                f"imageprune: WARNING the heartbeat failed {trouble.failures} times from"
                f" {when} ({trouble.error}): had this session died, a later one would"
                " have kept what it made after the last heartbeat"
            )
        if self.report is not None:
            self.report.duration_s = time.monotonic() - started
            if self.report.status in RAN:
                said = [f"imageprune: {r.spec.many}: {r.summary_line()}" for r in self.kind_reports]
                if self.images:
                    said.insert(0, f"imageprune: {reporting.summary_line(self.report)}")
                    hint = reporting.held_hint(self.report)
                    if hint is not None:
                        said.append(f"imageprune: {hint}")
                self.lines[0:0] = said

    def _finish(self) -> None:
        from pytest_imageprune.coordination.place import ALREADY_RUNNING, LockUnusable

        if self.store is not None and not self.store.supported:
            self._fail(Status.UNSUPPORTED_STORE, f"WARNING {self.problem}; nothing deleted")
            return
        if self.scope == "session" and self.baseline is None:
            self._fail(Status.NO_BASELINE, f"WARNING {self.problem}; nothing pruned")
            return
        if self.coordinator is None and self.unsafe is None:
            # Scope "all" with no baseline: not registered, but it must see the others.
            self.coordinator = self._meet()
        if self.dry_run:  # deletes nothing: no need to keep a real prune waiting
            self._prune_all()
            return
        if self.coordinator is None and self.unsafe is None:
            self._fail(Status.UNREACHABLE, f"WARNING {self.problem}; nothing pruned")
            return
        if self.coordinator is None:
            # Pruning without the registry could take another live session's images.
            self._fail(Status.NO_REGISTRY, f"WARNING {self.unsafe}; nothing deleted")
            return
        coordinator = self.coordinator
        coordinator.finishing()
        try:
            acquired = coordinator.take_lock()
        except LockUnusable as exc:
            self._fail(Status.NO_REGISTRY, f"WARNING {exc}; nothing deleted")
            self._settle_own(done=False)  # whoever prunes next does it
            return
        if not acquired:
            path = coordinator.lock.path
            self._fail(Status.LOCKED, f"{ALREADY_RUNNING} ({path}); nothing deleted")
            self._settle_own(done=False)  # whoever prunes next does it
            return
        try:
            self._prune_all()
        finally:
            coordinator.release_lock()
        # A sweep cut short (Ctrl-C, the engine gone): no more of them; the next session goes on.
        done = self.report is not None and self.report.status == Status.COMPLETED
        if done and self._stopped is None:
            coordinator.hand_over(self._sweep_keeping)

    def _prune_all(self) -> None:
        if self.engine is None:
            try:
                self.engine = DockerEngine.from_env()
            except EngineUnavailable as exc:
                self._fail(Status.UNREACHABLE, f"WARNING {exc}; nothing pruned")
                return
        from pytest_imageprune.kinds.table import AFTER_IMAGES, BEFORE_IMAGES

        coordinator = self.coordinator
        own_baseline = self.baseline if self.scope == "session" else None
        stopped = self._prune_kinds(BEFORE_IMAGES)
        if stopped is not None:  # Ctrl-C, or the engine gone: no image, no cache
            self.report = reporting.PruneReport(
                self.endpoint, self.filters, scope=self.scope, dry_run=self.dry_run, status=stopped
            )
        elif self.images:
            # Read now, after the other kinds: a session that started meanwhile is seen.
            keep_live = coordinator.protection() if coordinator is not None else _keep_nothing
            if self.protect is not None:
                keep_live = _either(keep_live, self.protect)
            self.report = self._prune(self.filters, own_baseline, keep_live, own=True)
        else:
            self.report = reporting.PruneReport(
                self.endpoint, self.filters, scope=self.scope, dry_run=self.dry_run
            )
        if self.report.status == Status.COMPLETED:
            stopped = self._prune_kinds(AFTER_IMAGES)
            if stopped is not None:
                self.report.status = stopped
        # Kept for a live session, of any kind: the record stays deferred, so the last one
        # out finishes it with this session's own filters.
        self._settle_own(
            done=_done(self.report) and not _kept_for_live(self.kind_reports),
            present=frozenset((*self.report.candidates, *self.report.kept)),
        )
        if coordinator is None or self.dry_run or self.report.status != Status.COMPLETED:
            return
        coordinator.sweep_owed(self._sweep_keeping)

    def _prune_kinds(self, names: Sequence[str]) -> str | None:
        """Prune each of the other kinds in ``names`` that is enabled, keeping what a live
        session may have made (absent from its record's list of that kind). The status
        that stops the session's prune (``cancelled``, ``engine-lost``), if one did."""
        from pytest_imageprune.kinds.prune import prune_kind
        from pytest_imageprune.kinds.table import BUILD_CACHE, VOLUMES

        engine = self.engine
        if not isinstance(engine, DockerEngine):
            return None
        for name in names:
            filters = self.kinds.get(name)
            if filters is None:
                continue
            own = None
            listed = name == BUILD_CACHE and engine.podman  # it says why there is none
            if (self.scope == "session" or name == VOLUMES) and not listed:
                own = (self.kind_baseline or {}).get(name)
                if own is None:  # not listed at start: nothing can be shown to be new
                    self._fail_kind(name, "its objects were not listed at session start")
                    continue
            report = prune_kind(
                engine,
                filters,
                baseline=own,
                started_ns=self.record.started_ns if self.record else 0,
                live=functools.partial(self._live, name),
                dry_run=self.dry_run,
            )
            self.kind_reports.append(report)
            self._say_kinds([report])
            if report.status == "engine-lost":
                self.lines.append(
                    f"imageprune: WARNING the engine at {self.endpoint} stopped answering during"
                    " the prune; nothing more deleted"
                )
            stopped = _stopped([report])
            if stopped is not None:
                return stopped
        return None

    def _live(self, name: str) -> list[Live]:
        """What each other live session's record says of kind ``name``, read now."""
        from pytest_imageprune.kinds.select import Live

        coordinator = self.coordinator
        live = coordinator.live() if coordinator is not None else []
        return [
            Live(None if r.kinds is None else r.kinds.get(name), r.started_ns, r.describe())
            for r in live
        ]

    def _fail_kind(self, name: str, why: str) -> None:
        from pytest_imageprune.kinds.report import KindReport

        report = KindReport(name, self.kinds[name], dry_run=self.dry_run, status="no-baseline")
        report.errors.append({"error": f"{why}: nothing deleted"})
        self.kind_reports.append(report)
        self.lines.append(f"imageprune: WARNING {report.spec.many}: {why}; nothing deleted")

    def _sweep_keeping(self, record: SessionRecord, keep_live: KeepRule, state: str) -> bool:
        """``_sweep``, keeping also what the ``pytest_imageprune_protect`` hook protects."""
        keep = keep_live if self.protect is None else _either(keep_live, self.protect)
        return self._sweep(record, keep, state)

    def _sweep(self, record: SessionRecord, keep_live: KeepRule, state: str) -> bool:
        """Finish a dead or deferred session's prune, with its filters, over its lifetime.

        Only what the engine shows arrived while that session lived goes (``Arrival``).
        False when sweeping should stop here (Ctrl-C, the engine lost, a failure).
        """
        from pytest_imageprune.coordination.evidence import Arrival, within_lifetime

        coordinator = self.coordinator
        if coordinator is None:
            return False
        try:
            filters = Filters.from_mapping(record.filters)
        except FilterError:
            coordinator.swept(record, done=True)
            return True
        from pytest_imageprune.kinds.table import AFTER_IMAGES, BEFORE_IMAGES

        baseline = record.baseline if record.scope == "session" else None
        kinds: list[KindReport] = []
        try:
            engine = self.engine or DockerEngine.from_env()
            self.engine = engine
            kinds += self._sweep_kinds(record, BEFORE_IMAGES)
            stopped = _stopped(kinds)
            if stopped is not None:  # Ctrl-C, or the engine gone: the rest stays owed
                self._stopped = stopped
                coordinator.swept(record, done=False)
                self._say_kinds(kinds, f"the prune of {record.describe()}")
                return False
            if record.images:
                snapshot = engine.snapshot()
                arrival = Arrival(
                    engine.inspect,
                    snapshot,
                    getattr(engine, "events", None),
                    getattr(engine, "started_ns", None),
                )
                keep = within_lifetime(record, keep_live, arrival)
                report = self._prune(filters, baseline, keep, snapshot=snapshot)
            else:  # it pruned no images: none are owed
                report = reporting.PruneReport(self.endpoint, filters, scope=record.scope)
            if report.status == Status.COMPLETED:
                kinds += self._sweep_kinds(record, AFTER_IMAGES)
            done = _done(report) and not _kept_for_live(kinds) and _stopped(kinds) is None
            done = done and all(k.status in ("completed", "not-supported") for k in kinds)
            coordinator.swept(record, done=done)
        except RegistryStuck:
            raise
        except Exception as exc:  # one session's leftovers never cost this one its report
            self.lines.append(
                f"imageprune: WARNING could not finish the prune of {record.describe()}: "
                f"{type(exc).__name__}: {exc}"
            )
            return False
        self._say_swept(record, state, report, kinds)
        if report.status in (Status.CANCELLED, Status.ENGINE_LOST):
            self._stopped = report.status
        self._stopped = self._stopped or _stopped(kinds)
        return report.status == Status.COMPLETED and _stopped(kinds) is None

    def _say_swept(
        self, record: SessionRecord, state: str, report: PruneReport, kinds: list[KindReport]
    ) -> None:
        """What a sweep did, in the lines and among ``swept`` (a line about nothing says
        nothing)."""
        from pytest_imageprune.coordination.evidence import is_doubt_reason

        doubted = {i: why for i, why in report.kept.items() if is_doubt_reason(why)}
        if doubted:
            self.lines.append(
                f"imageprune: kept {len(doubted)} image{'s' * (len(doubted) != 1)} the session"
                f" that {state} ({record.describe()}) cannot be shown to have left: they"
                " arrived after it ended, or when is unknown"
            )
        self._say_kinds(kinds, f"the prune of {record.describe()}")
        went = [k for k in kinds if k.deleted]
        if report.deleted_ids or report.untagged or _done(report) or doubted or went:
            self.swept.append(Swept(record, state, report, doubted, kinds))
        if self.record is not None and record.id == self.record.id:
            who = "this session's own deferred prune"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_ns / 1e9))
            who = f"the prune of a session that {state} ({record.describe()}, started {when})"
        if report.deleted_ids or report.untagged:  # a line about nothing says nothing
            self.lines.append(f"imageprune: finished {who}: {reporting.summary_line(report)}")
        for kind in went:
            self.lines.append(
                f"imageprune: finished {who}: {kind.spec.many}: {kind.summary_line()}"
            )

    def _say_kinds(self, reports: Sequence[KindReport], whose: str = "") -> None:
        """The other kinds' errors, and what they kept for live sessions (``whose``: the
        session a sweep finishes, if not this one)."""
        prefix = f"{whose}: " if whose else ""
        for report in reports:
            for error in report.errors:
                self.lines.append(
                    f"imageprune: WARNING {prefix}{report.spec.many}: {error['error']}"
                )
            kept = sum(1 for why in report.kept.values() if "live session" in why)
            if kept:
                spec = report.spec
                self.lines.append(
                    f"imageprune: {prefix}kept {kept} {spec.one if kept == 1 else spec.many}"
                    " that another live session may have made or uses"
                )

    def _sweep_kinds(self, record: SessionRecord, names: Sequence[str]) -> list[KindReport]:
        """The other kinds of a dead or deferred session, with its filters and its lists
        from its start, over its lifetime: what was made after it ended is not its."""
        from pytest_imageprune.kinds.filters import KindFilters
        from pytest_imageprune.kinds.prune import prune_kind
        from pytest_imageprune.kinds.table import VOLUMES

        engine = self.engine
        if not record.kind_filters or not isinstance(engine, DockerEngine):
            return []
        reports = []
        for name in names:
            wanted = record.kind_filters.get(name)
            if wanted is None:
                continue
            baseline = (record.kinds or {}).get(name)
            if baseline is None and (record.scope == "session" or name == VOLUMES):
                continue  # not listed at its start: nothing can be shown to be its
            report = prune_kind(
                engine,
                KindFilters.from_mapping(name, wanted),
                baseline=baseline if record.scope == "session" or name == VOLUMES else None,
                started_ns=record.started_ns,
                live=functools.partial(self._live, name),
                dry_run=self.dry_run,
                # As for images: a dead session ended at most 2 s after its last heartbeat.
                ended_ns=record.end_ns,
            )
            reports.append(report)
            if report.status in ("engine-lost", "cancelled"):
                break
        return reports

    def _prune(
        self,
        filters: Filters,
        baseline: Baseline | None,
        keep: KeepRule,
        *,
        own: bool = False,
        snapshot: Snapshot | None = None,
    ) -> PruneReport:
        from pytest_imageprune.coordination.evidence import is_live_reason
        from pytest_imageprune.images.prune import prune_images

        try:
            engine = self.engine or DockerEngine.from_env()
            self.engine = engine
            if own and self._reader is not None:  # it reads on while the engine lists
                snapshot = engine.snapshot()
                self.stop_read_ahead()
            report = prune_images(
                filters,
                engine=engine,
                baseline=baseline,
                dry_run=self.dry_run,
                keep=keep,
                progress=self.progress,
                known_layers=self._known_layers,
                snapshot=snapshot,
            )
        except EngineUnavailable as exc:  # before anything was deleted
            self.lines.append(f"imageprune: WARNING {exc}; nothing pruned")
            return self._failed_report(filters, Status.UNREACHABLE, str(exc))
        if report.status == Status.UNSUPPORTED_STORE:
            self.lines.append(f"imageprune: WARNING {report.errors[0]['error']}")
            return report
        live = {i for i, why in report.kept.items() if is_live_reason(why)}
        deferred = len(live - self._said_live)
        if deferred:
            more = " more" if self._said_live else ""
            self.lines.append(
                f"imageprune: kept {deferred}{more} image{'s' * (deferred != 1)} that another"
                " live session may have produced: the last session out prunes them"
            )
        self._said_live |= live
        if report.status == Status.ENGINE_LOST:
            self.lines.append(
                f"imageprune: WARNING the engine at {self.endpoint} stopped answering during "
                "the prune; the next session finishes it"
            )
        return report

    def _settle_own(self, *, done: bool, present: frozenset[str] | None = None) -> None:
        """Forget this session's record, or leave it deferred with what was in its scope
        at its end (``present``: a later sweep's evidence of what it left; listed here if
        not given)."""
        coordinator = self.coordinator
        if coordinator is None or coordinator.record is None:
            return
        done = done or self.dry_run
        if not done and present is None:
            present = self._present()
        try:
            coordinator.settle_own(done=done, end_ns=time.time_ns(), present=present)
        except RegistryStuck:
            raise
        except OSError as exc:
            self.lines.append(f"imageprune: WARNING could not update the session registry: {exc}")

    def _present(self) -> frozenset[str] | None:
        """What is in this session's scope now, listed; None if the engine does not say."""
        if self.engine is None:
            return None
        try:
            snapshot = self.engine.snapshot()
        except Exception:  # evidence for later, never a failure now
            return None
        return _in_scope(snapshot, self.baseline if self.scope == "session" else None)

    def _fail(self, status: str, message: str) -> None:
        """Say what went wrong; a report of deletions already made is kept, not replaced."""
        self.lines.append(f"imageprune: {message}")
        if self.report is not None and self.report.status in RAN:
            self.report.errors.append({"error": message})
            return
        self.report = self._failed_report(self.filters, status, message)

    def _failed_report(self, filters: Filters, status: str, message: str) -> PruneReport:
        return reporting.PruneReport(
            endpoint=self.endpoint,
            filters=filters,
            scope=self.scope,
            dry_run=self.dry_run,
            status=status,
            errors=[{"error": message}],
        )

    def _say_bad(self, bad: list[BadRecord]) -> None:
        for item in bad:
            if item.name not in self._bad_said:
                self._bad_said.add(item.name)
                self.lines.append(f"imageprune: WARNING {item.describe()}")


def _keep_nothing(image: Image) -> str | None:
    return None


def _either(first: KeepRule, second: KeepRule) -> KeepRule:
    def keep(image: Image) -> str | None:
        return first(image) or second(image)

    return keep


def _in_scope(snapshot: Snapshot, baseline: Baseline | None) -> frozenset[str]:
    images = snapshot.images.values()
    return frozenset(i.id for i in images if baseline is None or baseline.in_scope(i))


def _stopped(reports: Sequence[KindReport]) -> str | None:
    """The status that stops a prune (Ctrl-C, the engine gone), if one of ``reports`` has it."""
    for report in reports:
        if report.status == "engine-lost":
            return Status.ENGINE_LOST
        if report.status == "cancelled":
            return Status.CANCELLED
    return None


def _kept_for_live(reports: Sequence[KindReport]) -> bool:
    """Whether any other kind kept something for a live session (the work is then owed)."""
    return any("live session" in why for report in reports for why in report.kept.values())


def _done(report: PruneReport) -> bool:
    """Nothing left owed: the prune ran to the end and kept nothing for a live session."""
    from pytest_imageprune.coordination.evidence import is_live_reason

    return report.status == Status.COMPLETED and not any(
        is_live_reason(why) for why in report.kept.values()
    )


def _load_the_rest() -> None:
    """Import what the session needs later, while the engine lists its images."""
    import pytest_imageprune.coordination.protocol
    import pytest_imageprune.images.prune  # noqa: F401
