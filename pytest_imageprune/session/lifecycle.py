"""One session's life on an engine, without pytest: start, finish, and what it did.

At start (``session.start``): connect, record the baseline, then join the engine's sessions
(``coordination.protocol``). At finish, under the engine's prune lock: this session's own
prune, then the work that sessions which died or deferred theirs left, both through the one
pipeline (``session.pipeline``), the protocol's looks and hand-over in between. Every line
the user reads is worded in ``session.say``. Nothing here raises: every problem becomes a
report status and a line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_imageprune.engine.api import Engine, endpoint_from_env
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.errors import EngineUnavailable, RegistryStuck
from pytest_imageprune.model.filters import Filters
from pytest_imageprune.model.outcome import Outcome, Status
from pytest_imageprune.model.report import PruneReport
from pytest_imageprune.session.say import LockHeld, Voice
from pytest_imageprune.session.start import Start

# The coordination, the lock, the registry and the pipeline (filelock among them) are
# imported where first used, so that pytest's start-up does not wait for them:
# ``_load_the_rest`` loads them in the baseline thread while the engine lists its images.
if TYPE_CHECKING:
    from pytest_imageprune.budget.apply import BudgetReport
    from pytest_imageprune.budget.size import Budget
    from pytest_imageprune.coordination.protocol import Coordinator
    from pytest_imageprune.coordination.records import SessionRecord
    from pytest_imageprune.engine.store import Store
    from pytest_imageprune.engine.transport import EventStream
    from pytest_imageprune.images.delete import Progress
    from pytest_imageprune.images.select import KeepRule
    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.kinds.report import KindReport
    from pytest_imageprune.model.images import Baseline
    from pytest_imageprune.session.pipeline import Pipeline
    from pytest_imageprune.session.sweep import Sweeper, Swept


@dataclass
class PruneSession:
    """One session: ``start`` (or ``start(background=True)`` then ``wait_started``) before
    the tests, ``finish`` after them; then ``report``, ``kind_reports``, ``swept`` and
    ``lines`` say what it did."""

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
    #: The storage budget, applied after the prune (and the sweeps), if one is set.
    budget: Budget | None = None
    endpoint: str = field(default_factory=endpoint_from_env)
    #: Connected at ``start`` from the environment, unless given.
    engine: Engine | None = None
    record: SessionRecord | None = None
    #: This session's part in the protocol between sessions, once it has a meeting place.
    coordinator: Coordinator | None = None
    #: Why no safe registry or lock could be had (nothing is deleted then), if so.
    unsafe: str | None = None
    report: PruneReport | None = None
    #: What each other kind's prune did, in the order they ran.
    kind_reports: list[KindReport] = field(default_factory=list)
    #: What the storage budget found and evicted, once it ran.
    budget_report: BudgetReport | None = None
    voice: Voice = field(default_factory=Voice)
    _start: Start | None = None
    _pipeline: Pipeline | None = None
    _sweeper: Sweeper | None = None
    #: The engine's container events, read as they come from the session's start on.
    _uses: EventStream | None = None

    def __post_init__(self) -> None:
        self._start = Start(
            self.filters,
            scope=self.scope,
            dry_run=self.dry_run,
            kinds=tuple(self.kinds),
            endpoint=self.endpoint,
            engine=self.engine,
        )

    # -- what the start knows --------------------------------------------------------------
    @property
    def lines(self) -> list[str]:
        return self.voice.lines

    @property
    def started(self) -> Start:
        assert self._start is not None
        return self._start

    @property
    def swept(self) -> list[Swept]:
        """The work of other sessions (or this one's own deferral) this session finished."""
        return self._sweeper.swept if self._sweeper is not None else []

    @property
    def baseline(self) -> Baseline | None:
        return self.started.baseline

    @property
    def problem(self) -> str | None:
        """Why nothing can be pruned (the engine was unreachable at start), if so."""
        return self.started.problem

    @property
    def store(self) -> Store | None:
        return self.started.store

    # -- start -----------------------------------------------------------------------------
    def start(self, *, background: bool = False) -> None:
        """Record the baseline and register; on failure, note the problem and go on.

        With ``background``, the engine lists its images in a thread while pytest goes on
        configuring and collecting; ``wait_started`` joins it and registers the session,
        and must be called before any test runs.
        """
        start = self.started
        start.begin(background=background, meanwhile=_load_the_rest)
        self.engine = start.engine
        if not background:
            self._started()

    def wait_started(self) -> None:
        """The baseline is recorded and the session registered (or that failed) on return."""
        if self.started.wait():
            self._started()

    def known_store(self, timeout: float) -> Store | None:
        """The engine's image store, waiting at most ``timeout`` seconds for it."""
        return self.started.known_store(timeout)

    def stop_read_ahead(self, *, wait: bool = True) -> None:
        self.started.stop_read_ahead(wait=wait)

    def abandon(self) -> None:
        """This session will never finish (pytest stopped early, or its settings changed
        after it started): read no more, and let the engine go once the listing is in."""
        self.started.abandon()

    def stop_heartbeat(self) -> None:
        """No more heartbeats: the record is this session's to settle from here on."""
        if self.coordinator is not None:
            self.coordinator.stop_heartbeat()

    def _started(self) -> None:
        start = self.started
        self.endpoint = start.endpoint
        for kind, exc in start.unlisted:
            self.voice.kind_unlisted(kind, exc)
        self._register()
        self._watch_uses()

    def _watch_uses(self) -> None:
        """Read the engine's container events from this session's start on, as they come,
        for the record of what containers used (``_record_uses``)."""
        coordinator = self.coordinator
        meeting = coordinator.meeting if coordinator is not None else None
        since = meeting.joined_ns if meeting is not None else None
        watch = getattr(self.engine, "watch_uses", None)
        if since is None or not callable(watch) or self.dry_run:
            return
        try:
            self._uses = watch(since)
        except Exception:  # then the events are asked at the end, as far as they reach
            self._uses = None

    def _register(self) -> None:
        from pytest_imageprune.session.join import register

        if self.baseline is None or self.coordinator is not None:
            return
        self.record, self.coordinator, self.unsafe = register(
            self.started, self.lock_path, self.voice, self._record_fields()
        )
        self.engine, self.endpoint = self.started.engine, self.started.endpoint

    def _record_fields(self) -> dict[str, object]:
        """What this session's record says of its settings."""
        return {
            "filters": self.filters.to_docker(),
            "scope": self.scope,
            "images": self.images,
            "kind_filters": {name: f.to_docker() for name, f in self.kinds.items()} or None,
            "dry_run": self.dry_run,
        }

    # -- finish ----------------------------------------------------------------------------
    def finish(self) -> None:
        """Prune under the lock; settle the registry; never raise."""
        began = time.monotonic()
        try:
            self.wait_started()
            self.stop_heartbeat()
            self._finish()
        except KeyboardInterrupt:
            self.voice.interrupted()
        except RegistryStuck as exc:  # nothing more may be deleted without the registry
            ran = self.report is not None and Status(self.report.status).ran
            self._fail(Status.NO_REGISTRY, exc, ran=ran)
        except Exception as exc:  # the verdict is the tests', whatever happens here
            self._fail(Status.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            if self._uses is not None:
                self._uses.close()  # its thread ends at once
            self.stop_read_ahead(wait=False)  # a daemon thread: it closes its connection
            if self.coordinator is not None:
                self.coordinator.close()  # never raises, never waits past its bound
            if self.engine is not None:
                self.engine.close()
        trouble = self.coordinator.heartbeat_trouble if self.coordinator is not None else None
        if trouble is not None:
            self.voice.heartbeat(trouble)
        unmet = self.coordinator.unmet if self.coordinator is not None else None
        if unmet is not None:
            self.voice.unmet(unmet)
        meeting = self.coordinator.meeting if self.coordinator is not None else None
        if meeting is not None and meeting.lapsed_s:
            self.voice.lapsed(meeting.lapsed_s, meeting.lease_s)
        if self.report is not None:
            self.report.duration_s = time.monotonic() - began
            if Status(self.report.status).ran:
                self.voice.summary(self.report, self.kind_reports, images=self.images)

    def _finish(self) -> None:
        from pytest_imageprune.coordination.place import LockUnusable

        store = self.started.store
        if store is not None and not store.supported:
            self._fail(Status.UNSUPPORTED_STORE, self.problem)
            return
        if self.scope == "session" and self.baseline is None:
            self._fail(Status.NO_BASELINE, self.problem)
            return
        if self.coordinator is None and self.unsafe is None:
            # Scope "all" with no baseline: not registered, but it must see the others.
            from pytest_imageprune.session.join import meet

            self.coordinator, self.unsafe = meet(self.started, self.lock_path, self.voice)
            self.engine, self.endpoint = self.started.engine, self.started.endpoint
        if self.dry_run:  # deletes nothing: no need to keep a real prune waiting
            self._prune_all()
            return
        if self.coordinator is None and self.unsafe is None:
            self._fail(Status.UNREACHABLE, self.problem)
            return
        if self.coordinator is None:
            # Pruning without the registry could take another live session's images.
            self._fail(Status.NO_REGISTRY, self.unsafe)
            return
        coordinator = self.coordinator
        coordinator.finishing()
        try:
            acquired = coordinator.take_lock()
        except LockUnusable as exc:
            self._fail(Status.NO_REGISTRY, exc)
            self._settle_own(done=False)  # whoever prunes next does it
            return
        if not acquired:
            self._fail(Status.LOCKED, _lock_held(coordinator))
            self._settle_own(done=False)  # whoever prunes next does it
            return
        try:
            self._prune_all()
        finally:
            coordinator.release_lock()
        # A sweep cut short (Ctrl-C, the engine gone): no more of them; the next session goes on.
        done = self.report is not None and self.report.status == Status.COMPLETED
        sweeper = self._sweeper
        if done and sweeper is not None and sweeper.stopped is None:
            coordinator.hand_over(sweeper)

    def _prune_all(self) -> None:
        """This session's own prune; then, holding the lock, the work others left."""
        from pytest_imageprune.session.pipeline import Target, keep_nothing
        from pytest_imageprune.session.sweep import Sweeper

        pipeline = self._pipeline_now()
        if pipeline is None:
            return
        coordinator = self.coordinator
        target = Target(
            filters=self.filters,
            scope=self.scope,
            images=self.images,
            kinds=self.kinds,
            baseline=self.baseline if self.scope == "session" else None,
            kind_lists=self.started.kind_lists,
            started_ns=self.record.started_ns if self.record else 0,
        )
        keep_live = coordinator.protection if coordinator is not None else lambda: keep_nothing
        outcome = Outcome()
        self.kind_reports = outcome.kinds  # filled in as each kind is pruned
        try:
            pipeline.prune_for(target, keep_live, outcome)
        finally:  # what was done is reported, whatever escapes (the registry given up on)
            self.report = outcome.report
        assert self.report is not None
        # Kept for a live session, of any kind, or cut short: the record stays deferred,
        # so a later session finishes it with this session's own filters.
        self._settle_own(
            done=not outcome.owed,
            present=frozenset((*self.report.candidates, *self.report.kept, *self.report.held)),
        )
        self._record_uses(pipeline)  # once settled: Ctrl-C here leaves no record unsettled
        if self.report.status != Status.COMPLETED:
            return  # cut short (Ctrl-C, the engine lost): no sweep, no budget
        if coordinator is not None and not self.dry_run:
            self._sweeper = Sweeper(pipeline, coordinator, self.voice, self.record)
            coordinator.sweep_owed(self._sweeper)
            if self._sweeper.stopped is not None:
                return  # a sweep cut short (Ctrl-C, the engine lost): no budget either
        if self.budget is not None and coordinator is not None:
            # Without a registry no session can be told live: the budget waits for one.
            self._apply_budget(pipeline.engine, keep_live)

    def _record_uses(self, pipeline: Pipeline) -> None:
        """Write down, where the sessions meet, which images the engine's containers used
        while this session ran (``budget.record``): the storage budget's evidence of last
        use, which the engine itself forgets. The events come from the stream read since the
        start, up to this session's "finishing" lease (made after its last test), or, where
        none could be streamed, from the log as far as the engine's last whole second.
        Never a failure of the session's."""
        from pytest_imageprune.budget import record as use_record
        from pytest_imageprune.coordination.records import CLOCK_SKEW_NS

        coordinator = self.coordinator
        meeting = coordinator.meeting if coordinator is not None else None
        since = meeting.joined_ns if meeting is not None else None
        snapshot = pipeline.listed
        if coordinator is None or coordinator.unmet is not None or meeting is None:
            return
        if since is None or snapshot is None or self.dry_run:
            return
        try:
            if self._uses is not None:
                events = self._uses.finish(meeting.finishing_lease, use_record.EVENTS_LIMIT_S)
            else:
                ask = getattr(pipeline.engine, "container_events", None)
                until = meeting.now_ns
                found = ask(since, until) if callable(ask) and until and until > since else None
                events = list(found or ())
            uses = use_record.seen(snapshot, events, since_ns=since)
            use_record.keep(meeting, uses, frozenset(snapshot.images), CLOCK_SKEW_NS)
        except Exception as exc:  # evidence for a budget, never the session's failure
            self.voice.warn(f"could not keep the record of what containers used: {exc}")

    def _apply_budget(self, engine: Engine, keep_live: Callable[[], KeepRule]) -> None:
        """Last, under the lock: evict until the engine's images fit the budget."""
        from pytest_imageprune.budget import record as use_record
        from pytest_imageprune.budget.apply import apply_budget
        from pytest_imageprune.coordination.records import CLOCK_SKEW_NS

        assert self.budget is not None
        meeting = self.coordinator.meeting if self.coordinator is not None else None
        recorded: dict[str, int] = {}
        if meeting is not None:
            try:
                recorded = use_record.recorded(meeting, CLOCK_SKEW_NS)
            except Exception as exc:  # the budget goes on with the engine's evidence
                self.voice.warn(f"could not read the record of what containers used: {exc}")
        self.budget_report = apply_budget(
            engine,
            self.budget,
            dry_run=self.dry_run,
            keep_live=keep_live,
            protect=self.protect,
            known_layers=self.started.known_layers,
            progress=self.progress,
            recorded=recorded,
        )
        self.voice.budget(self.budget_report)

    def _pipeline_now(self) -> Pipeline | None:
        """The pipeline on this session's engine (connected now if it was not at start)."""
        from pytest_imageprune.session.pipeline import Pipeline

        if self._pipeline is not None:
            return self._pipeline
        if self.engine is None:
            try:
                self.engine = DockerEngine.from_env()
            except EngineUnavailable as exc:
                self._fail(Status.UNREACHABLE, exc)
                return None
        coordinator = self.coordinator
        start = self.started
        self._pipeline = Pipeline(
            self.engine,
            self.voice,
            endpoint=self.endpoint,
            dry_run=self.dry_run,
            live=coordinator.live if coordinator is not None else list,
            protect=self.protect,
            progress=self.progress,
            known_layers=start.known_layers,
            own_snapshot=start.snapshot_for_prune,
        )
        return self._pipeline

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
            coordinator.settle_own(done=done, present=present)
        except RegistryStuck:
            raise
        except OSError as exc:
            self.voice.warn(f"could not update the session registry: {exc}")

    def _present(self) -> frozenset[str] | None:
        """What is in this session's scope now, listed; None if the engine does not say."""
        if self.engine is None:
            return None
        try:
            snapshot = self.engine.snapshot()
        except Exception:  # evidence for later, never a failure now
            return None
        baseline = self.baseline if self.scope == "session" else None
        images = snapshot.images.values()
        return frozenset(i.id for i in images if baseline is None or baseline.in_scope(i))

    def _fail(self, status: Status, why: object, *, ran: bool = False) -> None:
        """Say what went wrong; a report of deletions already made is kept, not replaced."""
        message = self.voice.failed(status, why, ran=ran)
        if self.report is not None and Status(self.report.status).ran:
            self.report.errors.append({"error": message})
            return
        self.report = PruneReport(
            endpoint=self.endpoint,
            filters=self.filters,
            scope=self.scope,
            dry_run=self.dry_run,
            status=status,
            errors=[{"error": message}],
        )


def _lock_held(coordinator: Coordinator) -> LockHeld:
    """The lock held, and by whom: the other live sessions past their tests (one holds it,
    unless the holder has no record)."""
    from pytest_imageprune.coordination.records import RUNNING

    try:
        live = coordinator.live()
    except RegistryStuck:
        raise
    except Exception:  # who holds it helps the words; it never fails the session
        live = []
    holders = tuple(r for r in live if r.state != RUNNING or r.pid == 0)
    meeting = coordinator.meeting
    claimant = meeting.holder if meeting is not None else None  # the engine's claim holder
    return LockHeld(
        coordinator.lock.path,
        holders,
        deferred=coordinator.record is not None,
        claimant=claimant,
    )


def _load_the_rest() -> None:
    """Import what the session needs later, while the engine lists its images."""
    import pytest_imageprune.coordination.protocol
    import pytest_imageprune.session.pipeline  # noqa: F401
