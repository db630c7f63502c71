"""``prune_images``: select as ImagesPrune does, delete as it does, count what was freed.

The plugin and anyone scripting a CI step share this one engine::

    from pytest_imageprune import prune_images
    report = prune_images(["label=ci", "until=24h"])
    print(report.to_docker())  # {"ImagesDeleted": [...], "SpaceReclaimed": 1234}
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from pytest_imageprune.engine.api import Engine, Gone
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.engine.simulate import SimulatedContainerdEngine, SimulatedEngine
from pytest_imageprune.engine.store import CONTAINERD, store_of
from pytest_imageprune.images import containerd
from pytest_imageprune.images.containerd import Plan
from pytest_imageprune.images.containerd_space import BuildCache, ContainerdSpace
from pytest_imageprune.images.delete import DEFAULT_CONCURRENCY, Progress, delete_candidates
from pytest_imageprune.images.select import (
    KEPT_INTERMEDIATE,
    KEPT_NOT_HEAD,
    KeepRule,
    Selection,
    refine,
    select,
)
from pytest_imageprune.model.filters import Filters, engine_time, parse_filters
from pytest_imageprune.model.images import Baseline, Snapshot
from pytest_imageprune.model.outcome import Kept, Status
from pytest_imageprune.model.report import PruneReport, Skipped


def prune_images(
    filters: Iterable[str] | Filters = (),
    *,
    engine: Engine | None = None,
    baseline: Baseline | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
    now_ns: int | None = None,
    utc_offset_s: int | None = None,
    keep: KeepRule | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
    known_layers: Mapping[str, Mapping[str, int]] | None = None,
    snapshot: Snapshot | None = None,
) -> PruneReport:
    """Prune images as ``docker image prune`` would, within ``baseline``'s scope if given.

    ``filters`` are Docker filter strings (``"label=ci"``, ``"dangling=false"``) or a parsed
    ``Filters``. With ``baseline`` only the images the session produced are candidates (see
    ``Baseline.in_scope``); without, every image is, as for the daemon. ``dry_run`` decides
    and reports, deleting nothing. ``deadline`` is a ``time.monotonic()`` instant after which
    no further deletion starts. A KeyboardInterrupt during the deletions stops them and the
    partial report is returned. ``keep`` may keep images the filters select (see
    ``selection.select``). ``concurrency`` bounds the requests in flight (1: one at a
    time, as the daemon's own prune); ``progress(done, total, bytes)`` hears of each
    candidate. ``known_layers`` are layers read ahead by ``images.space.read_ahead``, by image
    ID (they never change). ``snapshot`` is the engine's images as just listed, if the
    caller listed them (else they are listed here). Raises ``FilterError`` for bad filters and
    ``EngineUnavailable`` when the engine cannot be reached before anything was deleted.
    """
    if not isinstance(filters, Filters):
        filters = parse_filters(filters)
    started = time.monotonic()
    owned = engine is None
    if engine is None:
        engine = DockerEngine.from_env()
    try:
        report = _prune(
            engine,
            filters=filters,
            baseline=baseline,
            dry_run=dry_run,
            deadline=deadline,
            now_ns=now_ns,
            utc_offset_s=utc_offset_s,
            keep=keep,
            concurrency=concurrency,
            progress=progress,
            known_layers=known_layers,
            snapshot=snapshot,
        )
    finally:
        if owned:
            engine.close()
    report.duration_s = time.monotonic() - started
    return report


def take_baseline(engine: Engine | None = None) -> Baseline:
    """Record every image present now, with its tags: what a session records at its start."""
    if engine is not None:
        return Baseline.of(engine.snapshot())
    owned = DockerEngine.from_env()
    try:
        return Baseline.of(owned.snapshot())
    finally:
        owned.close()


def _prune(
    engine: Engine,
    *,
    filters: Filters,
    baseline: Baseline | None,
    dry_run: bool,
    deadline: float | None,
    now_ns: int | None,
    utc_offset_s: int | None,
    keep: KeepRule | None,
    concurrency: int,
    progress: Progress | None,
    known_layers: Mapping[str, Mapping[str, int]] | None,
    snapshot: Snapshot | None,
) -> PruneReport:
    store = store_of(engine)
    scope = "all" if baseline is None else "session"
    if not store.supported:
        return PruneReport(
            endpoint=engine.endpoint,
            filters=filters,
            scope=scope,
            dry_run=dry_run,
            store=store,
            status=Status.UNSUPPORTED_STORE,
            errors=[{"error": f"{store.describe()}: {store.reason}; nothing deleted"}],
        )
    if snapshot is None:
        snapshot = engine.snapshot()
    until_ns = until_cutoff(filters, snapshot, now_ns, utc_offset_s)
    plans: dict[str, Plan] = {}
    if store.kind == CONTAINERD:

        def choose(snapshot: Snapshot) -> Selection:
            selection, found = containerd.select(snapshot, filters, until_ns, baseline, keep)
            plans.clear()
            plans.update(found)
            return selection

    else:

        def choose(snapshot: Snapshot) -> Selection:
            return select(snapshot, filters, until_ns, baseline, keep)

    snapshot, selection = _settle(engine, snapshot, choose)
    report = PruneReport(
        endpoint=engine.endpoint,
        filters=filters,
        scope=scope,
        dry_run=dry_run,
        store=store,
        candidates=selection.candidates,
        kept=selection.kept,
        names={i.id: i.refs for i in snapshot.images.values() if i.refs},
        users=_users(snapshot),
    )
    target: Engine = SimulatedEngine(snapshot, engine.endpoint) if dry_run else engine
    space = None
    if store.kind == CONTAINERD:
        _in_use_is_skipped(report)
        deleting = [image_id for image_id, plan in plans.items() if plan.deletes]
        # The build cache is the real engine's, in a dry run too (a read changes nothing);
        # asked of its class, as ``objects_of`` does, so no property sends a request.
        lists = callable(getattr(type(engine), "disk_usage", None))
        cache = cast(BuildCache, engine) if lists else None
        space = ContainerdSpace(snapshot, deleting, cache=cache)
        report.space_parts = space.parts
        if dry_run:  # the reads are real: a dry run counts the bytes as a real run would
            target = SimulatedContainerdEngine(snapshot, engine.endpoint, reader=engine)
    delete_candidates(
        target,
        snapshot,
        selection.candidates,
        report,
        deadline=deadline,
        concurrency=concurrency,
        progress=progress,
        known=known_layers,
        plans=plans if store.kind == CONTAINERD else None,
        space=space,
    )
    _held_is_skipped(report, snapshot)
    if space is not None:
        report.held_by_build_cache = space.held
    _note_preexisting(report, baseline)
    return report


def _in_use_is_skipped(report: PruneReport) -> None:
    """On the containerd store containers protect images when the prune selects (R23):
    report those as the classic store's conflicts are, skipped in use."""
    in_use = {i: why for i, why in report.kept.items() if isinstance(why, Kept) and why.busy}
    report.skipped.extend(Skipped(i, why, in_use=True) for i, why in in_use.items())
    report.kept = {i: why for i, why in report.kept.items() if i not in in_use}


#: Reasons to keep an image that the prune itself may undo (the classic store's cascade).
_STRUCTURAL = frozenset({KEPT_NOT_HEAD, KEPT_INTERMEDIATE})


def _held_is_skipped(report: PruneReport, snapshot: Snapshot) -> None:
    """An untagged parent kept for its children, which a container uses, stays once its
    children went only because of that container (the cascade would have taken it): it is
    skipped in use, as a candidate a container holds is, and said so everywhere alike.
    Children that stay for the same reason count as gone: a build's chain of step images,
    each held by its step's container, is held all along."""
    deleted = set(report.deleted_ids)
    held = {s.image for s in report.skipped if s.in_use}
    waiting = {
        i: why
        for i, why in report.kept.items()
        if why in _STRUCTURAL and i in report.users and i not in deleted and i in snapshot.images
    }
    moved = True
    while moved:
        moved = False
        for image_id in sorted(waiting):
            if snapshot.images[image_id].refs:
                continue
            if snapshot.children.get(image_id, frozenset()) <= deleted | held:
                held.add(image_id)
                users = ", ".join(c[:12] for c in report.users[image_id])
                report.skipped.append(Skipped(image_id, f"used by container {users}", in_use=True))
                del waiting[image_id]
                moved = True
    # One word an image: what the cascade took is deleted, not kept as well.
    gone = held | deleted  # once: asked of every kept image
    report.kept = {i: why for i, why in report.kept.items() if i not in gone}


def _users(snapshot: Snapshot) -> dict[str, tuple[str, ...]]:
    """The containers that use each image, stopped ones too: for the report's hint."""
    users: dict[str, list[str]] = {}
    for container in snapshot.containers:
        users.setdefault(container.image_id, []).append(container.id)
    return {image_id: tuple(ids) for image_id, ids in users.items()}


def _note_preexisting(report: PruneReport, baseline: Baseline | None) -> None:
    """Which deleted images were there when the session started, with their tags then."""
    if baseline is not None:
        report.preexisting = {i: baseline.tags[i] for i in report.deleted_ids if i in baseline.tags}


def _settle(
    engine: Engine, snapshot: Snapshot, choose: Callable[[Snapshot], Selection]
) -> tuple[Snapshot, Selection]:
    """Select; inspect the images the list cannot decide on; select again."""
    selection = choose(snapshot)
    if not selection.undecided:
        return snapshot, selection
    images = dict(snapshot.images)
    for image_id in selection.undecided:
        try:
            data = engine.inspect(image_id)
        except Gone:
            del images[image_id]  # deleted meanwhile by someone else
            continue
        images[image_id] = refine(
            images[image_id], data, engine_time(data.get("Created"), zero=True), _last_tag(data)
        )
    snapshot = dataclasses.replace(snapshot, images=images)
    return snapshot, choose(snapshot)


def _last_tag(inspect: Mapping[str, Any]) -> int | None:
    """Inspect's ``Metadata.LastTagTime``; None where the engine gives none (Go's zero)."""
    metadata = inspect.get("Metadata")
    value = metadata.get("LastTagTime") if isinstance(metadata, Mapping) else None
    return engine_time(value)


def until_cutoff(
    filters: Filters,
    snapshot: Snapshot,
    now_ns: int | None = None,
    utc_offset_s: int | None = None,
) -> int | None:
    """The instant ``until`` names for a prune of ``snapshot``: "now" is when it was taken,
    and a local date reads with this machine's UTC offset, unless given."""
    if now_ns is None:
        now_ns = snapshot.taken_ns or time.time_ns()
    if utc_offset_s is None:
        utc_offset_s = current_utc_offset()
    return filters.until_ns(now_ns, utc_offset_s)


def current_utc_offset() -> int:
    """This machine's current UTC offset in seconds (the daemon reads local dates with it)."""
    offset = datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0
