"""The budget at session end: list, decide (``plan.decide``), delete, and report.

The deletions are a prune of the chosen images (``prune_images`` with ``dangling=false``,
every other image kept): the daemon's own conflict rules, the names looked at again right
before a deletion by ID, the containerd store's record-by-record plans and the count of
``SpaceReclaimed`` are the session's prune's, and a dry run simulates them as it does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pytest_imageprune.budget.gather import gather, upper_bound
from pytest_imageprune.budget.plan import (
    Decision,
    Eviction,
    Hold,
    Holding,
    KeepRule,
    cache_held,
    decide,
)
from pytest_imageprune.budget.size import Budget
from pytest_imageprune.engine.api import Engine
from pytest_imageprune.engine.store import CONTAINERD, store_of
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.images.delete import Progress
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.model.outcome import Kept, Status
from pytest_imageprune.model.report import PruneReport, human_size

#: Why an image the budget did not choose stays, in its prune.
NOT_CHOSEN = "not evicted by the budget"
#: What holds the bytes of an eviction chosen but not done.
NOT_DONE = "chosen, then not evicted"


@dataclass
class BudgetReport:
    """What the budget found and did; ``to_dict`` is the JSON report's ``budget``."""

    budget: Budget
    dry_run: bool = False
    status: str = Status.COMPLETED
    #: What the engine's images took before; with ``exact`` False, at most that (the
    #: list's sizes, shared layers counted for each image: within the budget, nothing read).
    total_before: int = 0
    exact: bool = True
    decision: Decision | None = None
    #: The deletions (a dry run's, simulated), where there were any to make.
    prune: PruneReport | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    #: On the containerd store, the images' content that BuildKit's build cache holds: in
    #: no total (deleting the images leaves it; the build cache's prune frees it).
    held_by_build_cache: int = 0

    @property
    def evicted(self) -> list[Eviction]:
        """The evictions done (a dry run's: would be done), in the plan's order."""
        if self.decision is None or self.prune is None:
            return []
        gone = set(self.prune.deleted_ids)
        return [e for e in self.decision.evictions if e.image in gone]

    @property
    def refused(self) -> list[Eviction]:
        """The evictions chosen but not done: the engine refused them (a container made
        from one meanwhile, say), or the prune stopped short."""
        if self.decision is None or self.prune is None:
            return []
        gone = set(self.prune.deleted_ids)
        return [e for e in self.decision.evictions if e.image not in gone]

    @property
    def holdings(self) -> list[Holding]:
        """What holds the bytes left, by kind: the plan's holds, then the evictions not
        done (so where the plan could not meet the budget, they add up to ``total_after``)."""
        holdings = list(self.decision.holdings) if self.decision is not None else []
        refused = self.refused
        if refused:
            size = sum(e.size for e in refused)
            holdings.append(Holding(NOT_DONE, len(refused), size))
        return holdings

    @property
    def total_after(self) -> int:
        return self.total_before - sum(e.size for e in self.evicted)

    @property
    def shortfall(self) -> int:
        """How far the images stay over the budget (0 when they fit)."""
        return max(0, self.total_after - self.budget.size)

    def to_dict(self) -> dict[str, Any]:
        decision = self.decision
        prune = self.prune
        held = decision.held if decision is not None else {}
        return {
            "budget": self.budget.size,
            "spelled": self.budget.spelled,
            "keep": list(self.budget.keep),
            "status": self.status,
            "dry_run": self.dry_run,
            "total_before": self.total_before,
            "total_before_exact": self.exact,
            "total_after": self.total_after,
            "shortfall": self.shortfall,
            "evicted": [e.to_dict() for e in self.evicted],
            "held_by": [h.to_dict() for h in self.holdings],
            "held": [{"Id": i, "reason": h.reason} for i, h in sorted(held.items())],
            "ImagesDeleted": [dict(r) for r in prune.images_deleted] if prune else [],
            "SpaceReclaimed": prune.space_reclaimed if prune else 0,
            "held_by_build_cache": self.held_by_build_cache,
            "skipped": [s.to_dict() for s in prune.skipped] if prune else [],
            "errors": [*self.errors, *(prune.errors if prune else [])],
            "duration_s": round(self.duration_s, 6),
        }

    def lines(self) -> list[str]:
        """The summary's lines (without the ``imageprune: `` prefix)."""
        would = "would " if self.dry_run else ""
        head = f"budget {self.budget.spelled}"
        if self.budget.spelled != human_size(self.budget.size):
            head += f" ({human_size(self.budget.size)})"
        before = human_size(self.total_before)
        if self.status != Status.COMPLETED and self.decision is None:
            errors = "; ".join(e["error"] for e in self.errors) or str(self.status)
            return [f"WARNING {head}: not applied: {errors}"]
        if self.decision is None or not self.decision.evictions:
            at_most = "" if self.exact else " at most"
            lines = [f"{head}: the engine's images take{at_most} {before}: nothing to evict"]
            if self.held_by_build_cache:
                lines.append(self._cache_line())
            if self.shortfall:
                lines.append(self._unmet(self.shortfall))
            return lines
        evicted = self.evicted
        freed = human_size(self.total_before - self.total_after)
        took = "take" if self.dry_run else "took"
        lines = [
            f"{head}: the engine's images {took} {before}; {would}evict {len(evicted)}"
            f" unused image{'s' * (len(evicted) != 1)}, least recently used first, freeing"
            f" {freed}: {'they would take' if would else 'they take'}"
            f" {human_size(self.total_after)}"
        ]
        if self.prune is not None and not self.dry_run:
            lines[0] += f" (SpaceReclaimed {human_size(self.prune.space_reclaimed)})"
        lines += [f"  {would}evict {_said(e)}" for e in evicted]
        if self.held_by_build_cache:
            lines.append(self._cache_line())
        prune = self.prune
        if prune is not None:
            lines += [f"  not evicted {_short(s.image)}: {s.reason}" for s in prune.skipped]
            if prune.status != Status.COMPLETED:
                lines.append(f"WARNING budget: the evictions stopped short [{prune.status}]")
        shortfall = self.shortfall
        if shortfall:
            lines.append(self._unmet(shortfall))
        return lines

    def _cache_line(self) -> str:
        size = human_size(self.held_by_build_cache)
        return (
            f"  {size} more of the images' content is held by the build cache, in no total:"
            " --prune-build-cache frees it"
        )

    def _unmet(self, shortfall: int) -> str:
        holdings = self.holdings
        held = ""
        if holdings:
            held = "; held: " + ", ".join(
                f"{h.images} image{'s' * (h.images != 1)} {h.kind} ({human_size(h.size)})"
                for h in holdings
            )
        would = "would " if self.dry_run else ""
        return (
            f"WARNING budget {self.budget.spelled} cannot be met: the images {would}still"
            f" take {human_size(self.total_after)}, {human_size(shortfall)} over it{held}"
        )


def apply_budget(
    engine: Engine,
    budget: Budget,
    *,
    dry_run: bool,
    keep_live: Callable[[], KeepRule],
    protect: KeepRule | None = None,
    known_layers: Mapping[str, Mapping[str, int]] | None = None,
    progress: Progress | None = None,
    snapshot: Snapshot | None = None,
    recorded: Mapping[str, int] | None = None,
) -> BudgetReport:
    """Evict until the engine's images fit ``budget``; never raises for the engine's sake
    (an engine lost is a status, and what was done is reported)."""
    began = time.monotonic()
    report = BudgetReport(budget, dry_run=dry_run)
    try:
        _apply(
            engine,
            report,
            keep_live=keep_live,
            protect=protect,
            known_layers=known_layers,
            progress=progress,
            snapshot=snapshot,
            recorded=recorded,
        )
    except EngineUnavailable as exc:
        report.status = Status.ENGINE_LOST if report.decision else Status.UNREACHABLE
        report.errors.append({"error": str(exc)})
    report.duration_s = time.monotonic() - began
    return report


def _apply(
    engine: Engine,
    report: BudgetReport,
    *,
    keep_live: Callable[[], KeepRule],
    protect: KeepRule | None,
    known_layers: Mapping[str, Mapping[str, int]] | None,
    progress: Progress | None,
    snapshot: Snapshot | None,
    recorded: Mapping[str, int] | None = None,
) -> None:
    budget = report.budget
    store = store_of(engine)
    if not store.supported:
        report.status = Status.UNSUPPORTED_STORE
        report.errors.append({"error": f"{store.describe()}: {store.reason}"})
        return
    if snapshot is None:
        snapshot = engine.snapshot()
    if store.kind != CONTAINERD:
        bound = upper_bound(snapshot)
        if bound <= budget.size:  # within it, from the list alone: nothing need be read
            report.total_before, report.exact = bound, False
            return
    inventory = gather(
        engine,
        snapshot,
        store.kind,
        known_layers=known_layers,
        errors=report.errors,
        recorded=recorded,
    )
    report.held_by_build_cache = cache_held(inventory)
    live = keep_live()  # read once the images are listed: a session started meanwhile is seen
    keep = _either(live, protect)
    decision = decide(inventory, budget.size, patterns=budget.patterns(), keep=keep)
    report.decision, report.total_before = decision, decision.total
    if not decision.evictions:
        return
    chosen = {e.image for e in decision.evictions}
    # The live sessions read again once the deletions ask: one that started during the
    # reads, whose baseline holds what is about to go, is seen (rule 5).
    again: list[KeepRule | None] = []

    def only_chosen(image: Image) -> str | None:
        if image.id not in chosen:
            return Kept(NOT_CHOSEN)
        if not again:
            again.append(_either(keep_live(), protect))
        rule = again[0]
        return rule(image) if rule is not None else None

    report.prune = prune_images(
        parse_filters(["dangling=false"]),
        engine=engine,
        dry_run=report.dry_run,
        keep=only_chosen,
        progress=progress,
        known_layers=known_layers,
        snapshot=inventory.snapshot,
    )
    report.status = report.prune.status


def _either(first: KeepRule | None, second: KeepRule | None) -> KeepRule | None:
    if first is None or second is None:
        return first or second

    def keep(image: Image) -> str | None:
        return first(image) or second(image)

    return keep


def _said(eviction: Eviction) -> str:
    names = ", ".join(eviction.names)
    who = f"{_short(eviction.image)} ({names})" if names else _short(eviction.image)
    return (
        f"{who}: {human_size(eviction.size)}, last used {when(eviction.use.ns)}"
        f" ({eviction.use.evidence})"
    )


def when(ns: int) -> str:
    """An instant as the summary says it (UTC), or "never" for no evidence."""
    if ns <= 0:
        return "never"
    moment = datetime.fromtimestamp(ns / NANOS, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


__all__ = ["BudgetReport", "Hold", "apply_budget"]
