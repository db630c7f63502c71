"""Deleting the candidates as the daemon's prune does (R14 to R17); ``images.space`` counts
the bytes (``images.containerd_space`` on the containerd store).

Untagged candidates go by ID, the others reference by reference in the daemon's order, so
the daemon's own ``ImageDelete`` applies its conflict rules and its parent cascade. The
daemon's prune deletes one image at a time; this overlaps requests on a few connections,
but never two on one parent chain (a cascade would race the other request), and merges
the outcomes in the serial order, so the report reads as a serial run's. The layer sizes
``SpaceReclaimed`` needs are all read before the first deletion: the engine takes longer
over reads made between deletions. An untagged image with neither parent nor child is the
exception: its deletion alone can release its layers, and the look at its names right
before (below) is the same ``GET /images/{id}/json``, which lists them; one of several
layers has its history read after it, and is looked at again before its deletion.

A deletion by ID takes every name the image has by then (R14): each candidate listed
without one has its names looked at right before, and stays if another client named it
after the listing (``images.names``), as the daemon's own prune re-reads an image's
references before deleting it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from pytest_imageprune.engine.api import Conflict, Engine, EngineError, Gone, Record
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.images.names import named_after, new_names
from pytest_imageprune.images.space import SpaceCounter
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.model.outcome import Kept, Status
from pytest_imageprune.model.report import PruneReport, Skipped

T = TypeVar("T")

#: Requests in flight at once, by default: see benchmarks/bench_prune.py for the figures.
DEFAULT_CONCURRENCY = 8

#: ``progress(done, total, bytes)``, called after each candidate.
Progress = Callable[[int, int, int], None]


class DeletePlan(Protocol):
    """How to delete one candidate: what to send ``DELETE`` for, and how to report it."""

    @property
    def targets(self) -> tuple[str, ...]: ...

    @property
    def deletes(self) -> bool:
        """Whether the last target removes the image with its last record."""
        ...

    def shape(self, target: str, records: list[Record]) -> list[Record]: ...


class Space(Protocol):
    """Counts ``SpaceReclaimed``: reads what it needs first, then counts each answer."""

    def roots(self, candidates: Sequence[str]) -> list[str]: ...

    def fetch(self, engine: Engine, root: str) -> None: ...

    def count(self, records: Sequence[Record]) -> int: ...


@dataclass
class Outcome:
    """What deleting one candidate did."""

    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    space: int = 0
    #: Why the candidate stays, if it does: named by another client after the listing.
    kept: Kept | None = None
    #: Why the deletions stopped here (a report status), if they did.
    stopped: str | None = None


def delete_candidates(
    engine: Engine,
    snapshot: Snapshot,
    candidates: Sequence[str],
    report: PruneReport,
    *,
    deadline: float | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
    known: Mapping[str, Mapping[str, int]] | None = None,
    plans: Mapping[str, DeletePlan] | None = None,
    space: Space | None = None,
) -> None:
    """Delete ``candidates`` in ``report``; stop early on Ctrl-C, a deadline, a lost engine.

    ``known`` holds layers read ahead (``read_ahead``), by root image ID. ``plans`` say
    how to delete each candidate where the classic store's way does not apply (the
    containerd store: no parent chains, record by record), and ``space`` counts the bytes
    (``SpaceCounter`` by default).
    """
    if not candidates:
        return
    if space is None:
        # Podman's delete answers name no layers; it counts each deleted image's whole Size.
        by_image = report.dry_run or not _lists_layers(engine)
        space = SpaceCounter(snapshot, estimate=by_image, whole=not report.dry_run, known=known)
    outcomes = [Outcome() for _ in candidates]
    if plans is None:
        groups = _by_chain(snapshot, candidates)
    else:  # no cascade: every candidate on its own
        groups = [[index] for index in range(len(candidates))]
    roots, queue = deque(space.roots(candidates)), deque(groups)
    width = max(1, min(concurrency, max(len(groups), len(roots))))
    spawn = getattr(engine, "spawn", None)
    engines = spawn(width) if spawn is not None else [engine]
    run = _Run(
        snapshot,
        candidates,
        outcomes=outcomes,
        space=space,
        deadline=deadline,
        progress=progress,
        plans=plans,
    )
    try:
        if len(engines) == 1:
            run.read(engines[0], roots)
            run.work(engines[0], queue)
        else:
            with ThreadPoolExecutor(len(engines), thread_name_prefix="imageprune") as pool:
                phases: list[Callable[[Engine], None]] = [
                    lambda e: run.read(e, roots),
                    lambda e: run.work(e, queue),
                ]
                for phase in phases:
                    futures = [pool.submit(phase, e) for e in engines]
                    try:
                        wait(futures)
                    except KeyboardInterrupt:
                        run.stop(Status.CANCELLED)
                        wait(futures)  # each has at most one request left to finish
    except KeyboardInterrupt:
        run.stop(Status.CANCELLED)
    finally:
        for e in engines[1:]:
            e.close()
        _merge(report, snapshot, outcomes, run)


def _lists_layers(engine: Engine) -> bool:
    try:
        return bool(getattr(engine, "lists_layers", True))
    except (EngineError, Gone, Conflict, ValueError):
        return True


def _merge(report: PruneReport, snapshot: Snapshot, outcomes: list[Outcome], run: _Run) -> None:
    """The outcomes into the report, in the serial order, whichever connection did them."""
    named = {i: o.kept for i, o in zip(run.candidates, outcomes, strict=True) if o.kept}
    if named:
        report.kept = {**report.kept, **named}
    untagged = {
        image_id: tuple(r["Untagged"] for r in outcome.records if "Untagged" in r)
        for image_id, outcome in zip(run.candidates, outcomes, strict=True)
    }
    report.untagged_from = {**report.untagged_from, **{i: r for i, r in untagged.items() if r}}
    for outcome in outcomes:  # in the serial order, whichever connection did the work
        report.images_deleted.extend(outcome.records)
        report.deleted_ids.extend(
            r["Deleted"] for r in outcome.records if r.get("Deleted") in snapshot.images
        )
        report.skipped.extend(outcome.skipped)
        report.errors.extend(outcome.errors)
        report.space_reclaimed += outcome.space
    if run.status is not None:
        report.status = run.status
        if run.error is not None:
            report.errors.append({"error": run.error})


class _Run:
    """The shared state of one deletion run, and the work each connection does."""

    def __init__(
        self,
        snapshot: Snapshot,
        candidates: Sequence[str],
        *,
        outcomes: list[Outcome],
        space: Space,
        deadline: float | None,
        progress: Progress | None,
        plans: Mapping[str, DeletePlan] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.plans = plans
        self.candidates = candidates
        self.outcomes = outcomes
        self.space = space
        self.deadline = deadline
        self.progress = progress
        self.status: str | None = None
        self.error: str | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._done = 0
        self._bytes = 0

    def stop(self, status: str, error: str | None = None) -> None:
        with self._lock:
            if self.status is None:
                self.status, self.error = status, error
        self._stopped.set()

    def read(self, engine: Engine, roots: deque[str]) -> None:
        """Take roots from ``roots`` and read the layers deleting them may release."""
        while (root := self._next(roots)) is not None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop(Status.DEADLINE)
                return
            if not self._attempt(partial(self.space.fetch, engine, root)):
                return

    def work(self, engine: Engine, queue: deque[list[int]]) -> None:
        """Take chains from ``queue`` and delete their candidates in order."""
        while (group := self._next(queue)) is not None:
            for index in group:
                if self._stopped.is_set():
                    return
                outcome = self.outcomes[index]
                if not self._attempt(
                    partial(self._delete_one, engine, self.candidates[index], outcome)
                ):
                    return
                if outcome.stopped is not None:
                    self.stop(outcome.stopped)
                    return
                self._advance(outcome.space)

    def _next(self, queue: deque[T]) -> T | None:
        """The next item of ``queue`` for this connection; None once stopped or done."""
        with self._lock:
            if self._stopped.is_set() or not queue:
                return None
            return queue.popleft()

    def _attempt(self, request: Callable[[], None]) -> bool:
        """Make ``request``; False, having stopped the run, if the engine went or failed."""
        try:
            request()
        except EngineUnavailable as exc:
            self.stop(Status.ENGINE_LOST, str(exc))
            return False
        except Exception as exc:  # a malformed answer: stop, and report the rest
            self.stop(Status.FAILED, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _delete_one(self, engine: Engine, image_id: str, outcome: Outcome) -> None:
        """R14, R15: an untagged candidate by ID, once its names are seen to be none still;
        a tagged one reference by reference (or as its plan says)."""
        image = self.snapshot.images[image_id]
        plan = self.plans.get(image_id) if self.plans is not None else None
        targets = plan.targets if plan is not None else image.refs or (image.id,)
        for target in targets:
            if self._halted(outcome):
                return
            if plan is None and target == image.id:
                # By ID, the classic store and Podman delete a single name given since the
                # listing with the image: look at its names first, right before, on this
                # connection (the gap left is one request's, docs/rules.md R14).
                try:
                    outcome.kept = self._look(engine, image)
                except Gone:
                    continue  # deleted meanwhile by someone else
                except (EngineError, Conflict) as exc:
                    error = f"could not read its names first: {exc}"
                    outcome.errors.append({"Id": image.id, "Reference": target, "error": error})
                    continue
                if outcome.kept is not None or self._halted(outcome):
                    return  # stopped meanwhile: no request more than the one in flight
            # Whether this deletion would take the image itself (not only one of its names).
            last = target == image.id if plan is None else plan.deletes and target == targets[-1]
            try:
                records = engine.delete(target)
            except Gone:
                # Already gone, or a digest reference its tag took along; on the containerd
                # store, also a dangling record that a name given meanwhile replaced.
                if last:
                    outcome.kept = named_after(engine, image)
                continue
            except Conflict as exc:
                if last and not exc.in_use:
                    # Names given meanwhile (several, or on the containerd store any other
                    # name) make the engine refuse a deletion by ID: say so, if so.
                    outcome.kept = named_after(engine, image)
                    if outcome.kept is not None:
                        continue
                reference = None if target == image.id else target
                outcome.skipped.append(Skipped(image.id, str(exc), reference, in_use=exc.in_use))
                continue
            except EngineError as exc:
                outcome.errors.append({"Id": image.id, "Reference": target, "error": str(exc)})
                continue
            if plan is not None:
                records = plan.shape(target, records)
            outcome.records.extend(records)
            outcome.space += self.space.count(records)

    def _halted(self, outcome: Outcome) -> bool:
        """Whether the run stopped (Ctrl-C, a failure) or its deadline passed: then
        ``outcome`` says so, and no request more is sent for it."""
        if self._stopped.is_set():
            outcome.stopped = self.status or Status.CANCELLED
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            outcome.stopped = Status.DEADLINE
            return True
        return False

    def _look(self, engine: Engine, image: Image) -> Kept | None:
        """The look at ``image``'s names before its deletion by ID (``named_since``); where
        the space counter reads its layers at the look, the same answer gives them. An
        image of several layers has its history read after that look: it is looked at
        again, so that the gap left before the deletion stays one request's (R14)."""
        look = engine.look(image.id)
        kept = new_names(image, look)
        space = self.space
        if kept is not None or not isinstance(space, SpaceCounter):
            return kept
        if space.reads_at_look(image.id) and space.take(engine, image.id, look):
            kept = new_names(image, engine.look(image.id))  # its history was read since
        return kept

    def _advance(self, space: int) -> None:
        if self.progress is None:
            return
        with self._lock:
            self._done += 1
            self._bytes += space
            try:
                self.progress(self._done, len(self.candidates), self._bytes)
            except Exception:  # a progress line is never worth a prune
                self.progress = None


def _by_chain(snapshot: Snapshot, candidates: Sequence[str]) -> list[list[int]]:
    """Candidate indexes grouped by the root of their parent chain, in serial order."""
    groups: dict[str, list[int]] = {}
    for index, image_id in enumerate(candidates):
        groups.setdefault(snapshot.root(image_id).id, []).append(index)
    return list(groups.values())
