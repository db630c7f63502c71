"""Choosing a kind's candidates as its daemon prune does, among the session's objects (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.table import BUILD_CACHE, KINDS, VOLUMES
from pytest_imageprune.kinds.things import Thing
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.outcome import Kept

#: How far before the session's start a build-cache record it made may say it was
#: created (the engine's clock and the session's, rounding).
START_SLACK_NS = 2 * NANOS


@dataclass(frozen=True)
class Live:
    """What a live session's record says of one kind: the objects present at its start
    (None: not recorded), and who it is."""

    ids: frozenset[str] | None
    who: str


def select(
    things: Sequence[Thing],
    filters: KindFilters,
    *,
    baseline: frozenset[str] | None,
    started_ns: int,
    live: Sequence[Live],
    now_ns: int,
    utc_offset_s: int = 0,
    anonymous_only: bool = False,
    ended_ns: int | None = None,
) -> tuple[list[Thing], dict[str, str]]:
    """The candidates among ``things``, in listing order, and why each other object in
    scope is kept. ``baseline`` is the session's (None: scope ``all``); ``ended_ns``, when
    the session ended, for a sweep: what was made later is not its."""
    kind = filters.kind
    until = filters.until_ns(now_ns, utc_offset_s)
    candidates: list[Thing] = []
    kept: dict[str, str] = {}
    for thing in things:
        if baseline is not None and thing.id in baseline:
            continue  # not the session's: out of scope, said nowhere
        created = thing.created_ns
        latest = None if created is None else created + thing.created_span
        if (
            baseline is not None
            and started_ns
            and (
                (latest is None and kind == BUILD_CACHE)
                or (latest is not None and latest < started_ns - START_SLACK_NS)
            )
        ):  # absent from the lists at its start, yet older: not the session's
            kept[thing.id] = "created before this session started"
            continue
        if ended_ns is not None and (latest is None or latest > ended_ns):
            kept[thing.id] = "created after that session ended, or when is unknown"
            continue
        why = _why_kept(thing, filters, until, anonymous_only)
        if why is None:
            why = _for_live(thing, live)
        if why is not None:
            kept[thing.id] = why
            continue
        candidates.append(thing)
    return candidates, kept


def _why_kept(
    thing: Thing, filters: KindFilters, until: int | None, anonymous_only: bool
) -> str | None:
    kind = filters.kind
    if thing.never is not None:
        return thing.never
    if kind == BUILD_CACHE:
        if thing.busy:
            return Kept(KINDS[kind].busy, busy=True)
        if not filters.all and (thing.type in ("internal", "frontend") or thing.shared):
            return "shared or internal (all=true takes it)"
        if until is not None and thing.last_used_ns is not None and thing.last_used_ns > until:
            return "used after until"
        if filters.type is not None and thing.type != filters.type:
            return "another type"
        if filters.description is not None and thing.description != filters.description:
            return "another description"
        return None
    if thing.busy:  # never tried: the daemon's prune passes them by
        return Kept(KINDS[kind].busy, busy=True)
    if kind == VOLUMES and anonymous_only and not thing.anonymous:
        return "a named volume (all=true takes it)"
    if until is not None and thing.created_ns is not None and thing.created_ns > until:
        return "created after until"
    if not filters.match_labels(thing.labels):
        return "labels do not match"
    return None


def _for_live(thing: Thing, live: Sequence[Live]) -> str | None:
    """Why another live session keeps ``thing`` (rule 5), or None: there when it started
    (its tests may use it), or maybe its product. A session that did not list the kind
    at its start protects all of it: what was there then is unknown."""
    for session in live:
        if session.ids is None:
            return Kept(
                f"there when a live session started, or its product ({session.who})", live=True
            )
        if thing.id not in session.ids:
            return Kept(f"may belong to a live session ({session.who})", live=True)
        return Kept(f"in a live session's baseline ({session.who})", live=True)
    return None
