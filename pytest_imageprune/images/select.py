"""Choosing the candidates exactly as the daemon's ImagesPrune does (R9 to R12), pure.

``select`` takes a snapshot, the filters, the resolved ``until`` instant and an optional
baseline, and says which images are candidates, which are kept and why, and which it
cannot decide from ``/images/json`` alone (an inspect settles them: nanosecond ``Created``
at the ``until`` boundary, or whether an image without labels has a config at all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline, Image, Snapshot

if TYPE_CHECKING:
    from pytest_imageprune.model.filters import Filters

#: Why an image in scope stays.
KEPT_TAGGED = "tagged"
KEPT_INTERMEDIATE = "untagged intermediate (has children)"
KEPT_NOT_HEAD = "has children"
KEPT_UNTIL = "created after until"
KEPT_NO_CREATED = "no creation time"
KEPT_LABELS = "labels do not match"

#: A rule that keeps a would-be candidate, saying why (or None to let it go).
KeepRule = Callable[[Image], "str | None"]


@dataclass(frozen=True)
class Selection:
    candidates: tuple[str, ...] = ()
    kept: Mapping[str, str] = field(default_factory=dict)
    undecided: tuple[str, ...] = ()


def select(
    snapshot: Snapshot,
    filters: Filters,
    until_ns: int | None = None,
    baseline: Baseline | None = None,
    keep: KeepRule | None = None,
) -> Selection:
    """The candidates of ``POST /images/prune`` with ``filters``, within ``baseline``'s scope.

    ``keep`` is asked about each image the filters select, and keeps it when it gives a
    reason (an image another live session may still need, say).
    """
    candidates: list[str] = []
    undecided: list[str] = []
    kept: dict[str, str] = {}
    for image in sorted(snapshot.images.values(), key=lambda i: i.id):
        if baseline is not None and not baseline.in_scope(image):
            continue  # there before the session: never a candidate
        verdict = _judge(snapshot, image, filters, until_ns)
        if verdict is None and keep is not None:
            verdict = keep(image)
        if verdict is None:
            candidates.append(image.id)
        elif verdict is _UNDECIDED:
            undecided.append(image.id)
        else:
            kept[image.id] = verdict
    return Selection(tuple(candidates), kept, tuple(undecided))


_UNDECIDED = "undecided"


def _judge(snapshot: Snapshot, image: Image, filters: Filters, until_ns: int | None) -> str | None:
    """``None`` for a candidate, else why it stays (or ``_UNDECIDED``)."""
    head = snapshot.is_head(image.id)
    if filters.dangling:
        if image.tags:
            return KEPT_TAGGED
        if not head:
            return KEPT_NOT_HEAD
    elif not image.refs and not head:
        return KEPT_INTERMEDIATE
    undecided = False
    if until_ns is not None:
        verdict = _judge_until(image, until_ns)
        if verdict == _UNDECIDED:
            undecided = True
        elif verdict is not None:
            return verdict
    if filters.label or "label!" in filters.raw:
        verdict = _judge_labels(image, filters)
        if verdict == _UNDECIDED:
            undecided = True
        elif verdict is not None:
            return verdict
    return _UNDECIDED if undecided else None


def _judge_until(image: Image, until_ns: int) -> str | None:
    """R12: pruned when ``Created <= until``, on nanoseconds; the list gives whole seconds."""
    if image.created_ns is not None:
        return None if image.created_ns <= until_ns else KEPT_UNTIL
    if image.has_config is not None:  # inspected, and the image has no creation time (v25+)
        return KEPT_NO_CREATED
    if image.created_s <= 0:  # the list's 0 may stand for no creation time: inspect
        return _UNDECIDED
    earliest = image.created_s * NANOS
    latest = earliest + NANOS - 1
    if latest <= until_ns:
        return None
    if earliest > until_ns:
        return KEPT_UNTIL
    return _UNDECIDED


def _judge_labels(image: Image, filters: Filters) -> str | None:
    """R7: label filters are skipped for an image with no config at all."""
    if image.has_config is False:
        return None
    # ``Labels: null`` is both "no labels" and "no config": only an inspect tells, and only
    # where it matters: without labels ``label!`` excludes nothing, except a ``label!``
    # given with no value at all, which excludes every configured image.
    if not image.labels and image.has_config is None and (filters.label or not filters.label_not):
        return _UNDECIDED
    return None if filters.match_labels(image.labels) else KEPT_LABELS


def refine(
    image: Image,
    inspect: Mapping[str, object],
    created_ns: int | None,
    last_tag_ns: int | None = None,
) -> Image:
    """``image`` with what an inspect tells: nanosecond ``Created``, config presence, labels,
    and when a record of it was last made."""
    config = inspect.get("Config")
    labels = config.get("Labels") if isinstance(config, Mapping) else None
    return dataclasses.replace(
        image,
        labels=dict(labels) if isinstance(labels, Mapping) and labels else None,
        created_ns=created_ns,
        has_config=isinstance(config, Mapping),
        last_tag_ns=last_tag_ns,
    )
