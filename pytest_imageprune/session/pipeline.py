"""One prune pipeline, for a session's own work and for every owed record's alike.

``Pipeline.prune_for(target)`` runs ``docker system prune``'s order (containers, networks,
volumes, images, build cache) for whoever ``target`` names: this session, or a session
that died or deferred its work (a sweep, over that session's lifetime only). ``owed``
(``model.outcome``) decides, once for both, whether the work is still owed afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_imageprune.coordination.clock import Clock
from pytest_imageprune.coordination.evidence import Arrival, within_lifetime
from pytest_imageprune.engine.api import objects_of
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.prune import prune_kind
from pytest_imageprune.kinds.report import KindReport
from pytest_imageprune.kinds.select import Live
from pytest_imageprune.kinds.table import (
    AFTER_IMAGES,
    BEFORE_IMAGES,
    BUILD_CACHE,
    CONTAINERS,
    KINDS,
)
from pytest_imageprune.model.filters import Filters
from pytest_imageprune.model.images import Snapshot
from pytest_imageprune.model.outcome import Outcome, Status
from pytest_imageprune.model.report import PruneReport

if TYPE_CHECKING:
    from pytest_imageprune.coordination.records import SessionRecord
    from pytest_imageprune.engine.api import Engine
    from pytest_imageprune.images.delete import Progress
    from pytest_imageprune.images.select import KeepRule
    from pytest_imageprune.model.images import Baseline, Image
    from pytest_imageprune.session.say import Voice


@dataclass(frozen=True)
class Target:
    """Whose work a prune does: its filters, scope, start lists and lifetime."""

    filters: Filters
    scope: str
    #: Whether it prunes images; the other kinds, with their filters, by name.
    images: bool
    kinds: Mapping[str, KindFilters]
    #: The images at its start (None: scope ``all``, or not recorded).
    baseline: Baseline | None
    #: The other kinds' objects at its start, by kind (a kind missing: not listed).
    kind_lists: Mapping[str, frozenset[str]] | None
    started_ns: int
    #: The record of the session whose work is finished for it (a sweep); None for this
    #: session's own prune.
    record: SessionRecord | None = None

    @classmethod
    def of_record(cls, record: SessionRecord) -> Target:
        """A dead or deferred session's work, from its record (``FilterError`` for filters
        this version refuses: there is nothing it can do for that record)."""
        kinds = {
            name: KindFilters.from_mapping(name, wanted)
            for name, wanted in (record.kind_filters or {}).items()
        }
        return cls(
            filters=Filters.from_mapping(record.filters),
            scope=record.scope,
            images=record.images,
            kinds=kinds,
            baseline=record.baseline if record.scope == "session" else None,
            kind_lists=record.kinds,
            started_ns=record.started_ns,
            record=record,
        )

    def window(self) -> SessionRecord | None:
        """The swept session's record as a sweep judges it at this moment
        (``SessionRecord.seen_at``): its end moved back by a step back of the wall clock
        since it was written. Asked once what is judged by it is listed: a step before the
        listing is seen, and what was listed came before any step after it."""
        return None if self.record is None else self.record.seen_at(Clock.read())

    def ended_ns(self) -> int | None:
        """When the swept session ended, at this moment (``window``): what was made later
        is not its."""
        window = self.window()
        return None if window is None else window.end_ns


class Pipeline:
    """Prunes on one engine for any target, telling ``voice`` what it did."""

    def __init__(
        self,
        engine: Engine,
        voice: Voice,
        *,
        endpoint: str,
        dry_run: bool,
        live: Callable[[], Sequence[SessionRecord]],
        protect: KeepRule | None = None,
        progress: Progress | None = None,
        known_layers: Mapping[str, Mapping[str, int]] | None = None,
        own_snapshot: Callable[[Engine], Snapshot | None] | None = None,
    ) -> None:
        self.engine = engine
        self.voice = voice
        self.endpoint = endpoint
        self.dry_run = dry_run
        #: The other live sessions, read anew each time (one may have started meanwhile).
        self._live = live
        #: The ``pytest_imageprune_protect`` hook, asked about every image that would go.
        self._protect = protect
        self._progress = progress
        self._known_layers = known_layers
        #: The images listed for this session's own prune, if the read-ahead must stop
        #: only once they are (see ``session.start``).
        self._own_snapshot = own_snapshot
        #: The engine's images and containers as listed for this session's own prune.
        self.listed: Snapshot | None = None

    def prune_for(
        self,
        target: Target,
        keep_live: Callable[[], KeepRule],
        outcome: Outcome | None = None,
    ) -> Outcome:
        """Prune ``target``'s kinds and images in Docker's order, keeping what
        ``keep_live()`` (read after the first kinds: a session started meanwhile is seen)
        keeps for the live sessions. ``outcome`` is filled in as the prune goes: a caller
        that gives one holds what was done should anything escape (the registry given up
        on, say)."""
        done = outcome if outcome is not None else Outcome()
        self._kinds(target, BEFORE_IMAGES, done.kinds)
        stopped = _stopped(done.kinds)
        if stopped is not None:  # Ctrl-C, or the engine gone: no image, no cache
            done.report = self._empty(target, stopped)
            return done
        done.report = (
            self._images(target, keep_live, done.kinds) if target.images else self._empty(target)
        )
        if done.report.status == Status.COMPLETED:
            self._kinds(target, AFTER_IMAGES, done.kinds)
            stopped = _stopped(done.kinds)
            if stopped is not None:
                done.report.status = stopped
        return done

    # -- images ----------------------------------------------------------------------------
    def _images(
        self,
        target: Target,
        keep_live: Callable[[], KeepRule],
        kinds: Sequence[KindReport] = (),
    ) -> PruneReport:
        """Prune ``target``'s images, after the ``kinds`` pruned before them."""
        engine, record = self.engine, target.record
        keep = _read_when_asked(keep_live)
        if self._protect is not None:
            keep = _either(keep, self._protect)
        snapshot = None
        if record is not None:  # only what the engine shows arrived while that session lived
            snapshot = engine.snapshot()  # the engine lost here: the sweep could not finish
            window = target.window()  # once the images are listed
            assert window is not None
            arrival = Arrival(
                engine.inspect,
                snapshot,
                getattr(engine, "events", None),
                getattr(engine, "started_ns", None),
                getattr(engine, "clock_ns", None),
            )
            keep = within_lifetime(window, keep, arrival)
        try:
            if record is None:
                own = self._own_snapshot(engine) if self._own_snapshot is not None else None
                snapshot = self.listed = own if own is not None else engine.snapshot()
            gone = _would_go(kinds)
            if gone:  # a dry run: the containers the real run deletes first hold nothing
                snapshot = snapshot if snapshot is not None else engine.snapshot()
                snapshot = Snapshot.of(
                    snapshot.images.values(),
                    (c for c in snapshot.containers if c.id not in gone),
                    snapshot.taken_ns,
                )
            report = prune_images(
                target.filters,
                engine=engine,
                baseline=target.baseline,
                dry_run=self.dry_run,
                keep=keep,
                progress=self._progress,
                known_layers=self._known_layers,
                snapshot=snapshot,
            )
        except EngineUnavailable as exc:  # before anything was deleted
            self.voice.warn(f"{exc}; nothing pruned")
            report = self._empty(target, Status.UNREACHABLE)
            report.errors.append({"error": str(exc)})
            return report
        if report.status == Status.UNSUPPORTED_STORE:
            self.voice.warn(report.errors[0]["error"])
            return report
        self.voice.images_kept_for_live(report)
        if report.status == Status.ENGINE_LOST:
            self.voice.engine_lost(self.endpoint, "the next session finishes it")
        return report

    def _empty(self, target: Target, status: Status = Status.COMPLETED) -> PruneReport:
        return PruneReport(
            self.endpoint, target.filters, scope=target.scope, dry_run=self.dry_run, status=status
        )

    # -- the other kinds -------------------------------------------------------------------
    def _kinds(self, target: Target, names: Sequence[str], reports: list[KindReport]) -> None:
        """Prune each of ``names`` that ``target`` enables, among the objects absent from
        its lists at start, keeping what a live session may have made. Its own prune says
        each at once; a sweep's are said with the rest of it."""
        engine = objects_of(self.engine)
        if not target.kinds or engine is None:
            return
        own = target.record is None
        for name in names:
            filters = target.kinds.get(name)
            if filters is None:
                continue
            listed = None
            if KINDS[name].scoped(target.scope):
                listed = (target.kind_lists or {}).get(name)
                # Podman has no build cache: its prune says so, with or without a list.
                if listed is None and (not own or not (name == BUILD_CACHE and engine.podman)):
                    if own:  # not listed at start: nothing can be shown to be new
                        reports.append(self._unlisted(name, filters))
                    continue  # a sweep: nothing can be shown to be that session's
            report = prune_kind(
                engine,
                filters,
                baseline=listed,
                started_ns=target.started_ns,
                live=functools.partial(self._live_of, name),
                dry_run=self.dry_run,
                ended=target.ended_ns,
                gone=_would_go(reports),
            )
            reports.append(report)
            if own:
                self.voice.kinds([report])
                if report.status == Status.ENGINE_LOST:
                    self.voice.engine_lost(self.endpoint, "nothing more deleted")
            if Status(report.status).stops:
                break

    def _live_of(self, name: str) -> list[Live]:
        """What each other live session's record says of kind ``name``, read now."""
        return [
            Live(None if r.kinds is None else r.kinds.get(name), r.describe()) for r in self._live()
        ]

    def _unlisted(self, name: str, filters: KindFilters) -> KindReport:
        why = "its objects were not listed at session start"
        report = KindReport(name, filters, dry_run=self.dry_run, status=Status.NO_BASELINE)
        report.errors.append({"error": f"{why}: nothing deleted"})
        self.voice.kind_unlisted_at_end(report.spec.many, why)
        return report


def _would_go(reports: Sequence[KindReport]) -> frozenset[str]:
    """The containers a dry run would have deleted: the real run deletes them before the
    networks, volumes and images, and what only they hold is free by then. (A real run
    lists after its deletions: none are left to discount.)"""
    return frozenset(
        name for r in reports if r.kind == CONTAINERS and r.dry_run for name in r.deleted
    )


def _stopped(reports: Sequence[KindReport]) -> Status | None:
    """The status that stops a prune (Ctrl-C, the engine gone), if one of ``reports`` has it."""
    return next((Status(r.status) for r in reports if Status(r.status).stops), None)


def _either(first: KeepRule, second: KeepRule) -> KeepRule:
    def keep(image: Image) -> str | None:
        return first(image) or second(image)

    return keep


def keep_nothing(image: Image) -> str | None:
    return None


def _read_when_asked(keep_live: Callable[[], KeepRule]) -> KeepRule:
    """The live sessions' rule, read when the selection first asks, once the images are
    listed: a session that started meanwhile, whose baseline holds what this prune is
    about to delete, is seen (rule 5). Read before the listing, the window in which such
    a session is missed was the listing's whole length."""
    rule: list[KeepRule] = []

    def keep(image: Image) -> str | None:
        if not rule:
            rule.append(keep_live())
        return rule[0](image)

    return keep
