"""Docker's containerd image store (Docker 29's default): its prune, over what the API shows.

The daemon's ``daemon/containerd/image_prune.go`` (R21 to R26) works on *records*: each
name (``docker.io/library/app:1``) or dangling record (``moby-dangling@<digest>``) points
at a target, and ``/images/json`` lists one entry per target, with its names as
``RepoTags`` (none for a dangling record). There is no parent cascade and no "has children"
rule; containers protect records by name and by digest; a target a container uses keeps
its last name in sorted order. Pure: ``select`` says which records go and ``Plan`` how
to delete them through the API, so that the result is the daemon's prune:

- a name that is not its target's last record is untagged as ``name@digest``, which
  removes that name only while it still points at that target;
- a dangling record goes as ``moby-dangling@digest``, which no longer resolves once the
  target is tagged again;
- a target's last name goes with a delete by ID, without ``prune``: a delete by name
  would keep a dangling copy of an image that has children, and ``prune`` would take
  the dangling parents along, images from before the session among them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_imageprune.engine.api import Record
from pytest_imageprune.images.select import (
    KEPT_LABELS,
    KEPT_TAGGED,
    KeepRule,
    Selection,
)
from pytest_imageprune.model.images import Baseline, Image, Snapshot, normalize_reference
from pytest_imageprune.model.outcome import Kept

if TYPE_CHECKING:
    from pytest_imageprune.model.filters import Filters

DANGLING = "moby-dangling@"

#: Why a target in scope stays, besides ``selection``'s reasons.
KEPT_IN_USE = "image is being used by container"
KEPT_BASELINE = "would remove the last name of an image from before the session"
KEPT_UNTIL = "record created after until (or moved since)"
KEPT_DIGEST_ONLY = "named by digest only: its records cannot be told from the API"

_UNDECIDED = "undecided"
_HEX_ID = re.compile(r"^(sha256:)?[0-9a-f]{1,64}$")


@dataclass(frozen=True, order=True)
class _Record:
    """One name record: its full name (the daemon sorts by it), and its familiar name
    (None for the dangling record)."""

    full: str
    image: str = field(compare=False)
    familiar: str | None = field(compare=False)


@dataclass(frozen=True)
class Plan:
    """How the records chosen on one target are deleted through the API, in order."""

    image: str
    #: Names untagged one by one (``name@digest``), in the daemon's sorted order.
    names: tuple[str, ...] = ()
    #: Then the target goes with its last record: ``last`` is that record's familiar
    #: name, or None for a dangling record.
    deletes: bool = False
    last: str | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        """What to send ``DELETE /images/{...}`` for, in order."""
        untag = tuple(f"{name}@{self.image}" for name in self.names)
        if not self.deletes:
            return untag
        return (*untag, self.image if self.last is not None else DANGLING + self.image)

    def shape(self, target: str, records: list[Record]) -> list[Record]:
        """The daemon prune's records for what one ``DELETE`` answered (R26): each record
        removed is ``Untagged`` (a dangling record by its digest), then the target
        ``Deleted``; a name untagged as ``name@digest`` is reported by its name."""
        if target.startswith(DANGLING):
            if any("Untagged" in r for r in records):
                return records
            return [{"Untagged": self.image}, *records]
        if target != self.image:  # name@digest: the answer names the tag alone already
            return [{"Untagged": r["Untagged"]} if "Untagged" in r else r for r in records]
        return records


def records_of(image: Image) -> list[_Record] | None:
    """The image's records as the daemon names them; None when the API cannot tell."""
    if image.tags:
        return [_Record(normalize_reference(t), image.id, t) for t in image.tags]
    if image.digests:  # a record named by digest only (pulled by digest)
        return None
    return [_Record(DANGLING + image.id, image.id, None)]


def select(
    snapshot: Snapshot,
    filters: Filters,
    until_ns: int | None = None,
    baseline: Baseline | None = None,
    keep: KeepRule | None = None,
) -> tuple[Selection, dict[str, Plan]]:
    """The records ``POST /images/prune`` deletes on this store, within ``baseline``'s scope.

    Returns the selection by target (a candidate has at least one record to delete) and
    each candidate's plan.
    """
    count: dict[str, int] = {}
    chosen: list[_Record] = []
    kept: dict[str, str] = {}
    undecided: list[str] = []
    for image in sorted(snapshot.images.values(), key=lambda i: i.id):
        records = records_of(image)
        if records is None:
            if baseline is None or image.id not in baseline.tags:
                kept[image.id] = KEPT_DIGEST_ONLY
            continue
        count[image.id] = len(records)
        if baseline is not None:
            records = [r for r in records if _in_scope(baseline, image, r)]
        if not records:
            continue
        if filters.dangling:
            records = [r for r in records if r.familiar is None]
            if not records:
                kept[image.id] = KEPT_TAGGED
                continue
        verdict = _judge(image, filters, until_ns)
        if verdict is None and keep is not None:
            verdict = keep(image)
        if verdict == _UNDECIDED:
            undecided.append(image.id)
        elif verdict is not None:
            kept[image.id] = verdict
        else:
            chosen.extend(records)
    chosen = _protect(snapshot, chosen, kept)
    survive = dict.fromkeys(_must_survive(snapshot, baseline), KEPT_BASELINE)
    survive.update({i: in_use(snapshot, i) for i in used_digests(snapshot)})
    plans = _plans(sorted(chosen), count, survive, kept)
    selection = Selection(tuple(sorted(plans)), kept, tuple(undecided))
    return selection, plans


def _in_scope(baseline: Baseline, image: Image, record: _Record) -> bool:
    """Session scope, record by record: a name the target did not have at the start; a
    dangling record of a target that is new, or that had names at the start (a rebuilt
    tag orphans the old image: session garbage)."""
    names = baseline.tags.get(image.id)
    if names is None:
        return True
    if record.familiar is None:
        return bool(names)
    return record.familiar not in names


def _must_survive(snapshot: Snapshot, baseline: Baseline | None) -> set[str]:
    """Targets from before the session that must keep a record: all but a target that had
    names at the start and has none now (the old image of a rebuilt tag)."""
    if baseline is None:
        return set()
    return {
        i.id
        for i in snapshot.images.values()
        if i.id in baseline.tags and (i.tags or not baseline.tags[i.id])
    }


def _judge(image: Image, filters: Filters, until_ns: int | None) -> str | None:
    """``None`` for a target whose records pass the filters, else why it stays (R24, R25)."""
    undecided = False
    if until_ns is not None:
        # The daemon compares each record's creation time, strictly (R24); the API shows
        # the newest record time of the target (inspect's LastTagTime), which is never
        # earlier. A record the API cannot prove old enough stays.
        if image.last_tag_ns is None:
            if image.has_config is not None:  # inspected, and still not told: keep it
                return KEPT_UNTIL
            undecided = True
        elif not image.last_tag_ns < until_ns:
            return KEPT_UNTIL
    if filters.label or filters.label_not:
        if image.has_config is None and not image.labels:
            # ``{}`` is both "no labels" and "no config" in the list; the daemon's label
            # filter fails on an image without a config.
            if filters.match_labels_containerd(None):
                undecided = True
            else:
                return KEPT_LABELS
        elif image.has_config is False or not filters.match_labels_containerd(image.labels):
            return KEPT_LABELS
    return _UNDECIDED if undecided else None


def _protect(snapshot: Snapshot, chosen: list[_Record], kept: dict[str, str]) -> list[_Record]:
    """Drop the records containers protect (R23): the dangling record of each container's
    image, and the record named as the container was created (``Config.Image``)."""
    used_dangling = {c.image_id for c in snapshot.containers}
    used_names: set[str] = set()
    for container in snapshot.containers:
        used_names.update(_names_of(container.created_with))
    left = [
        r
        for r in chosen
        if not (r.familiar is None and r.image in used_dangling) and r.full not in used_names
    ]
    still = {r.image for r in left}
    for record in chosen:
        if record.image not in still:
            kept[record.image] = in_use(snapshot, record.image)
    return left


def in_use(snapshot: Snapshot, image_id: str) -> Kept:
    """Why a target stays for a container, naming the container as the daemon would."""
    users = snapshot.users(image_id)
    return Kept(f"{KEPT_IN_USE} {users[0].id[:12]}" if users else KEPT_IN_USE, busy=True)


def used_digests(snapshot: Snapshot) -> set[str]:
    """Targets that containers created by ID or by digest use: they keep a name."""
    used: set[str] = set()
    for container in snapshot.containers:
        ref = container.created_with
        if ref is None:  # not known: count it used, to keep a name rather than lose one
            used.add(container.image_id)
            continue
        bare = ref.removeprefix("sha256:")
        by_id = bool(_HEX_ID.match(ref)) and container.image_id.startswith("sha256:" + bare)
        if by_id or ref.endswith("@" + container.image_id):
            used.add(container.image_id)
    return used


def _names_of(ref: str | None) -> list[str]:
    """The record names a container's ``Config.Image`` protects: the name with ``:latest``
    added (``reference.TagNameOnly``), and ``repo:tag`` for ``repo:tag@digest``."""
    if not ref or (ref.startswith("sha256:") and "@" not in ref) or _is_full_hex(ref):
        return []
    try:
        full = normalize_reference(ref)
    except ValueError:
        return []
    name, _, digest = full.partition("@")
    last = name.rsplit("/", 1)[-1]
    tagged = ":" in last
    if not digest:
        return [full if tagged else f"{full}:latest"]
    return [full, name] if tagged else [full]


def _is_full_hex(ref: str) -> bool:
    return len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)


def _plans(
    chosen: list[_Record],
    count: Mapping[str, int],
    survive: Mapping[str, str],
    kept: dict[str, str],
) -> dict[str, Plan]:
    """Visit the records in sorted order: a record goes while its target keeps another; a
    target that must survive (used by a container, or from before the session) keeps its
    last record (``pruneUnused``)."""
    left = dict(count)
    going: dict[str, list[_Record]] = {}
    for record in chosen:
        if left[record.image] > 1:
            left[record.image] -= 1
            going.setdefault(record.image, []).append(record)
        elif record.image in survive:
            kept.setdefault(record.image, survive[record.image])
        else:
            left[record.image] -= 1
            going.setdefault(record.image, []).append(record)
    plans: dict[str, Plan] = {}
    for image_id, records in going.items():
        kept.pop(image_id, None)
        if left[image_id] == 0:
            *names, last = records
            plans[image_id] = Plan(
                image_id, tuple(_familiar(r) for r in names), True, last.familiar
            )
        else:
            plans[image_id] = Plan(image_id, tuple(_familiar(r) for r in records))
    return plans


def _familiar(record: _Record) -> str:
    assert record.familiar is not None, "a dangling record is its target's only one"
    return record.familiar
