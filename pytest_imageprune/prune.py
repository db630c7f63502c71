"""``prune_images``: select as ImagesPrune does, delete as it does, count what was freed.

The plugin and anyone scripting a CI step share this one engine::

    from pytest_imageprune import prune_images
    report = prune_images(["label=ci", "until=24h"])
    print(report.to_docker())  # {"ImagesDeleted": [...], "SpaceReclaimed": 1234}
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from pytest_imageprune.engine import (
    DockerEngine,
    Engine,
    EngineError,
    ImageConflict,
    ImageGone,
    Record,
)
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.filters import Filters, parse_filters, parse_rfc3339_nano
from pytest_imageprune.images import Baseline, Snapshot
from pytest_imageprune.report import (
    CANCELLED,
    DEADLINE,
    ENGINE_LOST,
    PruneReport,
    Skipped,
)
from pytest_imageprune.selection import KeepRule, Selection, refine, select
from pytest_imageprune.simulate import SimulatedEngine


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
) -> PruneReport:
    """Prune images as ``docker image prune`` would, within ``baseline``'s scope if given.

    ``filters`` are Docker filter strings (``"label=ci"``, ``"dangling=false"``) or a parsed
    ``Filters``. With ``baseline`` only the images the session produced are candidates (see
    ``Baseline.in_scope``); without, every image is, as for the daemon. ``dry_run`` decides
    and reports, deleting nothing. ``deadline`` is a ``time.monotonic()`` instant after which
    no further deletion starts. A KeyboardInterrupt during the deletions stops them and the
    partial report is returned. ``keep`` may keep images the filters select (see
    ``selection.select``). Raises ``FilterError`` for bad filters and
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
) -> PruneReport:
    snapshot = engine.snapshot()
    if now_ns is None:
        now_ns = snapshot.taken_ns or time.time_ns()
    if utc_offset_s is None:
        utc_offset_s = current_utc_offset()
    until_ns = filters.until_ns(now_ns, utc_offset_s)
    snapshot, selection = _settle(engine, snapshot, filters, until_ns, baseline, keep=keep)
    report = PruneReport(
        endpoint=engine.endpoint,
        filters=filters,
        scope="all" if baseline is None else "session",
        dry_run=dry_run,
        candidates=selection.candidates,
        kept=selection.kept,
        names={i.id: i.refs for i in snapshot.images.values() if i.refs},
    )
    target: Engine = SimulatedEngine(snapshot, engine.endpoint) if dry_run else engine
    space = SpaceCounter(snapshot)
    try:
        if not dry_run:
            space.prefetch(engine, selection.candidates)
        _delete(target, snapshot, selection.candidates, report, space=space, deadline=deadline)
    except KeyboardInterrupt:
        report.status = CANCELLED
    except EngineUnavailable as exc:
        report.status = ENGINE_LOST
        report.errors.append({"error": str(exc)})
    return report


def _settle(
    engine: Engine,
    snapshot: Snapshot,
    filters: Filters,
    until_ns: int | None,
    baseline: Baseline | None,
    *,
    keep: KeepRule | None,
) -> tuple[Snapshot, Selection]:
    """Select; inspect the images the list cannot decide on; select again."""
    selection = select(snapshot, filters, until_ns, baseline, keep)
    if not selection.undecided:
        return snapshot, selection
    images = dict(snapshot.images)
    for image_id in selection.undecided:
        try:
            data = engine.inspect(image_id)
        except ImageGone:
            del images[image_id]  # deleted meanwhile by someone else
            continue
        created = data.get("Created")
        created_ns = parse_rfc3339_nano(created) if isinstance(created, str) and created else None
        images[image_id] = refine(images[image_id], data, created_ns)
    snapshot = Snapshot.of(images.values(), snapshot.containers, snapshot.taken_ns)
    return snapshot, select(snapshot, filters, until_ns, baseline, keep)


def _delete(
    engine: Engine,
    snapshot: Snapshot,
    candidates: Sequence[str],
    report: PruneReport,
    *,
    space: SpaceCounter,
    deadline: float | None,
) -> None:
    """R14, R15: untagged candidates by ID, the others reference by reference."""
    for image_id in candidates:
        image = snapshot.images[image_id]
        for target in image.refs or (image.id,):
            if deadline is not None and time.monotonic() >= deadline:
                report.status = DEADLINE
                return
            try:
                records = engine.delete(target)
            except ImageGone:
                continue  # already gone, or a digest reference its tag took along
            except ImageConflict as exc:
                reference = None if target == image.id else target
                report.skipped.append(Skipped(image.id, str(exc), reference))
                continue
            except EngineError as exc:
                report.errors.append({"Id": image.id, "Reference": target, "error": str(exc)})
                continue
            report.images_deleted.extend(records)
            report.deleted_ids.extend(
                r["Deleted"] for r in records if r.get("Deleted") in snapshot.images
            )
            report.space_reclaimed += space.count(records, estimate=report.dry_run)


class SpaceCounter:
    """``SpaceReclaimed`` from the delete records, as the daemon counts it (R19).

    The daemon sums the ``DiffSize`` of the layers it released; a delete answer lists each
    image's ``Deleted`` record followed by the chain IDs of the layers released with it. An
    image with a parent adds ``Size - parent's Size`` (the classic builder commits one layer
    per step). An image without a parent may share lower layers with others (pulled or
    BuildKit images): its per-layer sizes come from ``history`` and its chain IDs from
    ``RootFS.Layers``, read before it is deleted.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.layer_sizes: dict[str, int] = {}

    def prefetch(self, engine: Engine, candidates: Iterable[str]) -> None:
        """Read the layer sizes of the parentless images a deletion may release."""
        roots: set[str] = set()
        for image_id in candidates:
            chain = [self.snapshot.images[image_id], *self.snapshot.ancestors(image_id)]
            root = chain[-1]
            if root.parent is None and root.size > 0 and (root.id == image_id or not root.refs):
                roots.add(root.id)
        for root_id in sorted(roots):
            try:
                inspect = engine.inspect(root_id)
                layers = inspect.get("RootFS", {}).get("Layers") or []
                sizes = _layer_sizes(engine, root_id, layers, self.snapshot.images[root_id].size)
            except (ImageGone, EngineError):
                continue
            self.layer_sizes.update(zip(_chain_ids(layers), sizes, strict=True))

    def count(self, records: Sequence[Record], *, estimate: bool = False) -> int:
        """The bytes the layer records in ``records`` free.

        With ``estimate`` (a dry run, whose records name images but no layers) each
        deleted image counts the bytes it adds to its parent: an upper bound, since a
        layer shared with a surviving image would not be freed.
        """
        if estimate:
            return sum(self._added(r["Deleted"]) for r in records if "Deleted" in r)
        total = 0
        current: str | None = None
        counted = False
        for record in records:
            deleted = record.get("Deleted")
            if deleted is None:
                continue
            if deleted in self.snapshot.images:
                current, counted = deleted, False
                continue
            if deleted in self.layer_sizes:
                total += self.layer_sizes[deleted]
            elif current is not None and not counted:
                total += self._added(current)
                counted = True
        return total

    def _added(self, image_id: str) -> int:
        """What an image adds to its parent: ``Size - parent's Size``."""
        image = self.snapshot.images.get(image_id)
        if image is None:
            return 0
        parent = self.snapshot.images.get(image.parent or "")
        return image.size - (parent.size if parent is not None else 0)


def _layer_sizes(engine: Engine, image_id: str, layers: Sequence[str], size: int) -> list[int]:
    """Each layer's ``DiffSize``, oldest first."""
    if len(layers) <= 1:
        return [size] * len(layers)
    # History lists every step, newest first, with the layer's DiffSize for the steps that
    # made a layer and 0 for the others; a step that made an empty layer is 0 too, so where
    # the counts differ the zeros are interchangeable.
    sizes = [int(h.get("Size") or 0) for h in reversed(engine.history(image_id))]
    while len(sizes) > len(layers) and 0 in sizes:
        sizes.remove(0)
    if len(sizes) != len(layers):
        return [size] + [0] * (len(layers) - 1)
    return sizes


def _chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The layer store's chain IDs for a list of diff IDs (image-spec ChainID)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            digest = hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
            chain.append(f"sha256:{digest}")
    return chain


def current_utc_offset() -> int:
    """This machine's current UTC offset in seconds (the daemon reads local dates with it)."""
    offset = datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0
