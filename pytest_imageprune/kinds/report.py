"""What one kind's prune did: Docker's answer shape, and what this run adds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.table import KINDS, Kind
from pytest_imageprune.model.outcome import Status, is_busy


@dataclass
class KindReport:
    """One kind's prune: Docker's answer shape, and what this run adds."""

    kind: str
    filters: KindFilters
    dry_run: bool = False
    status: str = Status.COMPLETED
    deleted: list[str] = field(default_factory=list)
    space_reclaimed: int = 0
    #: Candidates the engine refused, with why (running, in use).
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Objects in scope kept, with why (another live session's, filtered out, never).
    kept: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    #: The candidates, in the order they went.
    candidates: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.spec.deleted_key: list(self.deleted)}
        if self.spec.space:
            out["SpaceReclaimed"] = self.space_reclaimed
        out.update(
            status=self.status,
            filters=self.filters.to_docker(),
            dry_run=self.dry_run,
            skipped=list(self.skipped),
            kept=[{"Id": i, "reason": why} for i, why in sorted(self.kept.items())],
            errors=list(self.errors),
            duration_s=round(self.duration_s, 6),
        )
        return out

    def summary_line(self) -> str:
        spec = self.spec
        would = self.dry_run
        count = len(self.deleted)
        parts = [
            f"{'would delete' if would else 'deleted'} {count}"
            f" {spec.one if count == 1 else spec.many}",
        ]
        busy = spec.busy
        held = len(self.skipped) + sum(1 for why in self.kept.values() if is_busy(why))
        parts.append(f"{'would skip' if would else 'skipped'} {held} {busy}")
        parts.append(f"{len(self.errors)} error{'s' * (len(self.errors) != 1)}")
        if spec.space:
            from pytest_imageprune.model.report import human_size

            size = human_size(self.space_reclaimed)
            parts.append(f"{'would reclaim' if would else 'reclaimed'} {size}")
        line = ", ".join(parts)
        if self.status != Status.COMPLETED:
            line += f" [{self.status}]"
        return line
