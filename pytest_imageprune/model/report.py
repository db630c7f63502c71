"""What a prune did: Docker's ``{"ImagesDeleted", "SpaceReclaimed"}`` and a little more."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_imageprune.model.outcome import Status

if TYPE_CHECKING:
    from pytest_imageprune.engine.store import Store
    from pytest_imageprune.model.filters import Filters


@dataclass(frozen=True)
class Skipped:
    """A candidate (or one of its references) the engine refused to delete."""

    image: str
    reason: str
    reference: str | None = None
    #: A container holds it (the engine's conflict says so): skipped in use, not for
    #: its children or its other names.
    in_use: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Id": self.image, "reason": self.reason}
        if self.reference is not None:
            out["Reference"] = self.reference
        out["in_use"] = self.in_use
        return out


@dataclass
class PruneReport:
    """The outcome of one prune, serialisable to Docker's response shape."""

    endpoint: str
    filters: Filters
    scope: str = "all"
    dry_run: bool = False
    status: str = Status.COMPLETED
    #: ``{"Untagged": ref}`` and ``{"Deleted": id}`` records, as the engine answered them.
    images_deleted: list[Mapping[str, str]] = field(default_factory=list)
    space_reclaimed: int = 0
    #: The image IDs deleted (``images_deleted`` also holds layer records).
    deleted_ids: list[str] = field(default_factory=list)
    candidates: tuple[str, ...] = ()
    kept: Mapping[str, str] = field(default_factory=dict)
    #: The references each image in scope had when the prune started, for display.
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The deleted images that were there when the session started, with the tags they had
    #: then (the old image of a rebuilt tag; a parent the classic store's cascade removed).
    preexisting: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The containers (stopped ones too) that used each image when the prune started.
    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The references the prune removed (``Untagged`` records), by the image they named.
    untagged_from: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    #: The engine's image store, where it was asked.
    store: Store | None = None
    #: ``SpaceReclaimed`` by kind where the store frees several (the containerd store:
    #: ``content`` blobs and ``snapshots``).
    space_parts: Mapping[str, int] | None = None
    #: On the containerd store: the bytes of the deleted images' content that BuildKit's
    #: build cache still holds, not in ``SpaceReclaimed`` (the cache's prune frees them).
    held_by_build_cache: int = 0

    @property
    def untagged(self) -> list[str]:
        return [r["Untagged"] for r in self.images_deleted if "Untagged" in r]

    @property
    def held(self) -> list[str]:
        """The images in scope that stay because containers use them (stopped ones too), in
        ID order: the images skipped in use, as the summary, ``-v`` and the JSON say them
        (an untagged parent the cascade would have taken but for its container is one,
        ``images.prune``; a tagged image, which stays in any case, is not)."""
        return sorted(_in_use(self))

    def to_docker(self) -> dict[str, Any]:
        """Exactly what ``POST /images/prune`` answers (``null`` when nothing was deleted)."""
        return {
            "ImagesDeleted": [dict(r) for r in self.images_deleted] or None,
            "SpaceReclaimed": self.space_reclaimed,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: Docker's shape (with ``[]``, never ``null``) and what this run adds."""
        return {
            "ImagesDeleted": [dict(r) for r in self.images_deleted],
            "SpaceReclaimed": self.space_reclaimed,
            "deleted_ids": list(self.deleted_ids),
            "preexisting": {i: list(tags) for i, tags in self.preexisting.items()},
            "status": self.status,
            "scope": self.scope,
            "filters": self.filters.to_docker(),
            "dry_run": self.dry_run,
            "endpoint": self.endpoint,
            "store": self.store.to_json() if self.store is not None else None,
            "skipped": [s.to_dict() for s in self.skipped],
            "kept": [{"Id": i, "reason": why} for i, why in sorted(self.kept.items())],
            "errors": list(self.errors),
            "duration_s": round(self.duration_s, 6),
            **(
                {
                    "space_parts": dict(self.space_parts),
                    "held_by_build_cache": self.held_by_build_cache,
                }
                if self.space_parts is not None
                else {}
            ),
        }

    def write_json(self, path: str | Path, **extra: Any) -> None:
        """Write ``to_dict()``, and any ``extra`` keys, as JSON to ``path``, as every file
        the plugin writes for the user is (``outputs.write_file``): a path someone else
        could steer (a FIFO, another user's symlink or file) raises ``OSError``, one line."""
        from pytest_imageprune.outputs import write_file

        data = {**self.to_dict(), **extra}
        write_file(path, (json.dumps(data, indent=2) + "\n").encode())


def summary_line(report: PruneReport) -> str:
    """One line: what went, what stayed, the bytes, the time (a dry run's all in one tense)."""
    deleted = len(report.deleted_ids)
    in_use = len(_in_use(report))
    conflicts = len({s.image for s in report.skipped} - _in_use(report))
    errors = len(report.errors)
    would = "would " if report.dry_run else ""
    parts = [
        f"{would}{'delete' if would else 'deleted'} {deleted} image{'s' * (deleted != 1)}",
        f"{would}{'untag' if would else 'untagged'} {len(report.untagged)}",
        f"{would}{'skip' if would else 'skipped'} {in_use} in use"
        + (f" and {conflicts} with children" if conflicts else ""),
        f"{errors} error{'s' * (errors != 1)}",
        f"{would}{'reclaim' if would else 'reclaimed'} {human_size(report.space_reclaimed)}"
        + (" (estimated)" if report.dry_run else ""),
        f"in {report.duration_s:.2f}s",
    ]
    line = ", ".join(parts)
    if report.status != Status.COMPLETED:
        line += f" [{report.status}]"
    return line


def held_hint(report: PruneReport) -> str | None:
    """What to do when images stay because containers use them, or None when none do."""
    held = len(report.held)
    if not held:
        return None
    they = "it" if held == 1 else "them"
    return (
        f"{held} image{'s' * (held != 1)} {'stays' if held == 1 else 'stay'} because"
        f" containers use {they}, stopped ones too: remove those containers in the tests'"
        " teardown (the Docker SDK's images.build keeps each build step's container"
        " unless rm=True; docker build removes them). -v names them"
    )


def cache_hint(report: PruneReport, cache_pruned: bool = False) -> str | None:
    """What BuildKit's build cache still holds of the deleted images, or None when nothing.
    ``cache_pruned``: the build cache's own prune ran after, and counted what it freed."""
    held = report.held_by_build_cache
    if held <= 0:
        return None
    size = human_size(held)
    verb = "would stay" if report.dry_run else "stays"
    if cache_pruned:
        freed = "would free" if report.dry_run else "freed"
        counts = f"the build cache line counts what its prune {freed}"
        return f"{size} more {verb} in the build cache; {counts}"
    return f"{size} more {verb} in the build cache; --prune-build-cache frees it"


def detail_lines(report: PruneReport) -> list[str]:
    """With ``-v``: one line per image in scope, and why it went or stayed; never two for
    one. Each word is the summary's and the JSON's: a ``deleted`` line per ``deleted_ids``,
    a ``skipped`` line per image ``skipped`` holds, a ``kept`` line per ``kept`` entry, and
    every reference of an ``Untagged`` record named once, after ``untagged``."""
    lines = []
    skipped: dict[str, Skipped] = {}
    for entry in report.skipped:  # the in-use one, if any: as the summary counts it
        if entry.image not in skipped or (entry.in_use and not skipped[entry.image].in_use):
            skipped[entry.image] = entry
    failed: dict[str, str] = {}
    for error in report.errors:
        if "Id" in error:
            failed.setdefault(error["Id"], error["error"])
    deleted = set(report.deleted_ids)
    would = "would " if report.dry_run else ""

    def said(verb: str, image_id: str, why: str) -> str:
        refs = report.untagged_from.get(image_id, ())
        untag = f"; {would}{'untag' if would else 'untagged'} {', '.join(refs)}" if refs else ""
        return f"{verb} {_name(report, image_id)}: {why}{untag}"

    for image_id in report.deleted_ids:
        why = "matches the filters" if image_id in report.candidates else "parent cascade"
        if image_id not in report.candidates:
            why += " (untagged, and left without children)"
        if image_id in report.preexisting:
            tags = report.preexisting[image_id]
            was = f"tagged {', '.join(tags)} then" if tags else "untagged then"
            why += f"; there before the session ({was})"
        lines.append(said(f"{would}{'delete' if would else 'deleted'}", image_id, why))
    skip = "would skip" if would else "skipped"
    for image_id in report.candidates:
        if image_id in deleted or image_id in report.kept:
            continue  # a candidate named after the listing: kept, said below
        if image_id in skipped:
            lines.append(said(skip, image_id, skipped.pop(image_id).reason))
        elif image_id in failed:
            lines.append(said("error", image_id, failed[image_id]))
        elif image_id in report.untagged_from:
            verb = "would untag" if would else "untagged"
            lines.append(said(verb, image_id, "it stays, for its children or other references"))
        elif report.status == Status.COMPLETED:
            lines.append(said("gone", image_id, "another client deleted it first"))
        else:
            lines.append(said("not reached", image_id, f"prune {report.status}"))
    for image_id, skipped_one in skipped.items():
        if image_id not in deleted:  # held by a container though never a candidate
            lines.append(said(skip, image_id, skipped_one.reason))
    for image_id, reason in sorted(report.kept.items()):
        if image_id not in deleted and image_id not in skipped:  # the cascade took it: above
            lines.append(said("kept", image_id, reason))
    return lines


def _in_use(report: PruneReport) -> set[str]:
    """The images skipped because containers use them: the one set the summary's ``in
    use``, ``held`` and the JSON's ``skipped`` entries with ``in_use`` all count."""
    return {s.image for s in report.skipped if s.in_use}


def _name(report: PruneReport, image_id: str) -> str:
    short = image_id.removeprefix("sha256:")[:12]
    refs = report.names.get(image_id, ())
    return f"{short} ({', '.join(refs)})" if refs else short


_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """Docker's ``units.HumanSize``: decimal units, four significant digits (``1.5MB``, ``0B``)."""
    unit = 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_UNITS[unit]}"
