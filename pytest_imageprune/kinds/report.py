"""What one kind's prune did: Docker's answer shape, and what this run adds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.table import BUILD_CACHE, KINDS, Kind
from pytest_imageprune.model.outcome import Status


@dataclass
class KindReport:
    """One kind's prune: Docker's answer shape, and what this run adds."""

    kind: str
    filters: KindFilters
    dry_run: bool = False
    status: str = Status.COMPLETED
    deleted: list[str] = field(default_factory=list)
    space_reclaimed: int = 0
    #: What the engine holds, with why (running, in use): passed by as the daemon's prune
    #: does, or refused when deleted (it became used meanwhile).
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Objects in scope kept, with why (another live session's, filtered out, never).
    kept: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    #: The candidates, in the order they went.
    candidates: list[str] = field(default_factory=list)
    #: What Docker's answer names each object in scope by (a network's or volume's name),
    #: by ID, for ``-v``.
    names: dict[str, str] = field(default_factory=dict)
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
        held = len({s["Id"] for s in self.skipped})  # as ``skipped`` in the JSON
        parts.append(f"{'would skip' if would else 'skipped'} {held} {spec.busy}")
        parts.append(f"{len(self.errors)} error{'s' * (len(self.errors) != 1)}")
        if spec.space:
            from pytest_imageprune.model.report import human_size

            size = human_size(self.space_reclaimed)
            parts.append(f"{'would reclaim' if would else 'reclaimed'} {size}")
        line = ", ".join(parts)
        if self.status != Status.COMPLETED:
            line += f" [{self.status}]"
        return line

    def detail_lines(self) -> list[str]:
        """With ``-v``: one line per object in scope, in the summary's and the JSON's words
        (``deleted``, ``skipped``, ``error``, ``kept``), never two for one."""
        spec, would = self.spec, self.dry_run
        name = self.names.get
        lines = [
            f"{'would delete' if would else 'deleted'} {spec.one} {_short(n)}" for n in self.deleted
        ]
        said = set(self.deleted)
        for skipped in self.skipped:
            if skipped["Id"] not in said:
                said.add(skipped["Id"])
                lines.append(
                    f"{'would skip' if would else 'skipped'} {spec.one}"
                    f" {_short(name(skipped['Id'], skipped['Id']))}: {skipped['reason']}"
                )
        for error in self.errors:
            if "Id" in error and error["Id"] not in said:
                said.add(error["Id"])
                lines.append(
                    f"error {spec.one} {_short(name(error['Id'], error['Id']))}: {error['error']}"
                )
        for thing in self.candidates:
            if thing in said or name(thing, thing) in said:
                continue
            if self.status != Status.COMPLETED:
                verb, why = "not reached", f"prune {self.status}"
            elif self.kind == BUILD_CACHE:  # pruned by ID: the engine's prune passed it by
                verb, why = "left", "the engine's build-cache prune did not take it"
            else:
                verb, why = "gone", "another client removed it first"
            lines.append(f"{verb} {spec.one} {_short(name(thing, thing))}: {why}")
        lines += [
            f"kept {spec.one} {_short(name(i, i))}: {why}" for i, why in sorted(self.kept.items())
        ]
        return lines


def _short(name: str) -> str:
    """An ID as ``docker ps`` shows it; a name (a network's, a volume's) as it is."""
    bare = name.removeprefix("sha256:")
    return bare[:12] if len(bare) == 64 and all(c in "0123456789abcdef" for c in bare) else name
