"""Pruning one kind on the engine: list, select, delete, and count."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from pytest_imageprune.engine.api import (
    Conflict,
    EngineError,
    Gone,
    ObjectKind,
    Objects,
    at_least,
)
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.report import KindReport
from pytest_imageprune.kinds.select import Live, select
from pytest_imageprune.kinds.table import BUILD_CACHE, CONTAINERS, KINDS, NETWORKS, VOLUMES
from pytest_imageprune.kinds.things import Thing, listing
from pytest_imageprune.model.filters import engine_time
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.outcome import Status, is_busy

#: Record IDs per build-cache prune (one ``id`` regex each, so the URL stays short).
CACHE_BATCH = 100


def prune_kind(
    engine: Objects,
    filters: KindFilters,
    *,
    baseline: frozenset[str] | None,
    started_ns: int,
    live: Callable[[], Sequence[Live]],
    dry_run: bool,
    ended: Callable[[], int | None] | None = None,
    gone: frozenset[str] = frozenset(),
) -> KindReport:
    """Prune one kind on ``engine``; every error becomes the report's (``status`` says
    whether to go on: ``engine-lost`` and ``cancelled`` stop the session's prune).

    ``gone`` are the containers a dry run would have deleted first: what only they hold is
    free, as it is when the real run comes to it.

    ``live`` is asked after the listing: a session that made an object listed here wrote
    its record before it could make anything, so the registry read then shows it. So is
    ``ended``, when a swept session ended (``select``'s ``ended_ns``): a step of the clock
    before the listing is seen by it.
    """
    report = KindReport(filters.kind, filters, dry_run=dry_run)
    began = time.monotonic()
    try:
        _prune(
            engine,
            report,
            baseline=baseline,
            started_ns=started_ns,
            live=live,
            ended=ended,
            gone=gone,
        )
    except EngineUnavailable as exc:
        report.status = Status.ENGINE_LOST
        report.errors.append({"error": str(exc)})
    except KeyboardInterrupt:
        report.status = Status.CANCELLED
    except (EngineError, Gone, Conflict, ValueError, LookupError, TypeError) as exc:
        report.status = Status.FAILED  # an odd answer: this kind stops, the others go on
        report.errors.append({"error": f"{type(exc).__name__}: {exc}"})
    except AttributeError as exc:
        report.status = Status.FAILED
        report.errors.append({"error": f"an answer of an unexpected shape: {exc}"})
    report.duration_s = time.monotonic() - began
    return report


def _prune(
    engine: Objects,
    report: KindReport,
    *,
    baseline: frozenset[str] | None,
    started_ns: int,
    live: Callable[[], Sequence[Live]],
    ended: Callable[[], int | None] | None,
    gone: frozenset[str],
) -> None:
    filters, kind = report.filters, report.kind
    podman = engine.podman
    if kind == BUILD_CACHE and podman:
        report.status = Status.NOT_SUPPORTED
        report.errors.append({"error": "Podman keeps no build cache of BuildKit's to prune"})
        return
    if (
        kind == VOLUMES
        and podman
        and "label!" in filters.raw
        and not at_least(engine.version.split("-")[0], "5")
    ):  # as the engine would: Podman 4 refuses it for volumes
        report.status = Status.NOT_SUPPORTED
        report.errors.append(
            {"error": f"Podman {engine.version} has no label! filter for volumes: nothing deleted"}
        )
        return
    # The pipeline never asks so (it needs the list at start); another caller might.
    if KINDS[kind].never_from_start and baseline is None:
        report.status = Status.NO_BASELINE
        report.errors.append({"error": "no baseline: a volume is data, none is deleted"})
        return
    things = listing(engine, kind, gone)
    now = time.time_ns()
    offset = -time.timezone if time.localtime().tm_isdst <= 0 else -time.altzone
    until = filters.until_ns(now, offset)
    if kind == CONTAINERS and until is not None:
        things = [_precise(engine, t, until) for t in things]
    candidates, report.kept = select(
        things,
        filters,
        baseline=baseline,
        started_ns=started_ns,
        live=live(),
        now_ns=now,
        utc_offset_s=offset,
        anonymous_only=kind == VOLUMES and not filters.all,
        ended_ns=None if ended is None else ended(),
    )
    # What the engine holds (running, in use) is passed by, as the daemon's prune does, and
    # reported as the images a container holds are: skipped, in the summary and the JSON.
    busy = [i for i, why in report.kept.items() if is_busy(why)]
    report.skipped.extend({"Id": i, "reason": str(report.kept.pop(i))} for i in busy)
    report.candidates = [t.id for t in candidates]
    report.names = {t.id: t.name for t in things if t.name != t.id}
    if kind == BUILD_CACHE:
        _prune_cache(engine, filters, candidates, report)
    else:
        _delete_each(engine, kind, candidates, report, podman=podman, gone=gone)


def _precise(engine: Objects, thing: Thing, until: int) -> Thing:
    """A container listed in whole seconds whose second holds ``until``: its ``Created`` to
    the nanosecond (inspect), as the daemon compares it."""
    if thing.created_ns is None or not thing.created_ns <= until < thing.created_ns + NANOS:
        return thing
    try:
        inspect = engine.container(thing.id)
    except Gone:
        return thing
    created = engine_time(inspect.get("Created") if isinstance(inspect, Mapping) else None)
    return replace(thing, created_ns=created if created is not None else thing.created_ns)


def _delete_each(
    engine: Objects,
    kind: str,
    candidates: Sequence[Thing],
    report: KindReport,
    *,
    podman: bool = False,
    gone: frozenset[str] = frozenset(),
) -> None:
    sizes = _volume_sizes(engine) if kind == VOLUMES and candidates else {}
    for thing in candidates:
        size = 0
        if kind == NETWORKS and report.dry_run:
            endpoints = _endpoints(engine, thing, gone)
            if endpoints is None:
                continue  # removed meanwhile
            if endpoints:  # the engine refuses it, as the real run would hear
                report.skipped.append({"Id": thing.id, "reason": endpoints})
                continue
        if kind == CONTAINERS:
            try:
                inspect = engine.container(thing.id, size=True)
                size = int(inspect.get("SizeRw") or 0)
            except Gone:
                continue  # removed meanwhile
            except (EngineError, Conflict, ValueError, AttributeError):
                size = 0  # the daemon's prune counts nothing then either
        elif kind == VOLUMES:
            size = sizes.get(thing.id, 0)
        if report.dry_run:
            report.deleted.append(thing.name)
            report.space_reclaimed += max(size, 0)
            continue
        removable = _REMOVABLE[kind]
        # Podman checks a network's users by its name only: by ID it removes one in use.
        target = thing.name if kind == NETWORKS and podman else thing.id
        try:
            engine.remove(removable, target)
        except Gone:
            continue  # someone else removed it first
        except Conflict as exc:  # running, in use (a network's 403 or 500 too)
            report.skipped.append({"Id": thing.id, "reason": str(exc)})
            continue
        except EngineError as exc:
            report.errors.append({"Id": thing.id, "error": str(exc)})
            continue
        report.deleted.append(thing.name)
        report.space_reclaimed += max(size, 0)


def _endpoints(engine: Objects, network: Thing, gone: frozenset[str]) -> str | None:
    """Why the engine would refuse to remove ``network`` (its endpoints that stay: a running
    container's, or a stale one no container has any more), "" if it would not, None if it
    is gone. The list of networks has no endpoints; Docker's prune passes by a network with
    any, and its remove refuses it: a dry run looks, so as never to name one would-delete."""
    try:
        inspect = engine.network(network.id)
    except Gone:
        return None
    endpoints = inspect.get("Containers") if isinstance(inspect, Mapping) else None
    if not isinstance(endpoints, Mapping):
        return ""
    staying = sorted(
        str((ep.get("Name") if isinstance(ep, Mapping) else None) or key)
        for key, ep in endpoints.items()
        if key not in gone
    )
    if not staying:
        return ""
    return f"has active endpoints ({', '.join(staying)})"


#: The kinds removed one by one, as the engine names them.
_REMOVABLE: dict[str, ObjectKind] = {
    CONTAINERS: "containers",
    NETWORKS: "networks",
    VOLUMES: "volumes",
}


def _volume_sizes(engine: Objects) -> dict[str, int]:
    """Each local volume's size on disk, as the engine's disk usage measures it (-1 unknown)."""
    try:
        volumes = engine.disk_usage("volume").get("Volumes") or []
    except Exception:  # a size, never a failure
        return {}
    sizes = {}
    for volume in volumes:
        usage = volume.get("UsageData") or {}
        sizes[str(volume.get("Name"))] = int(usage.get("Size") or 0)
    return sizes


def _prune_cache(
    engine: Objects, filters: KindFilters, candidates: Sequence[Thing], report: KindReport
) -> None:
    """The engine's build-cache prune limited to the candidates, by their IDs."""
    if report.dry_run:
        report.deleted = [t.id for t in candidates]
        report.space_reclaimed = sum(t.size for t in candidates)
        return
    # Only the IDs (and ``all``) go to the engine: ``until``, ``type`` and ``description``
    # were applied here (Docker 20.10 takes no date in ``until``, and a description, which
    # holds spaces, cannot pass its filter syntax).
    ids = [t.id for t in candidates if t.id.isalnum()]  # BuildKit's IDs: never a regex
    for start in range(0, len(ids), CACHE_BATCH):
        answer = engine.prune_cache(ids[start : start + CACHE_BATCH], all=bool(filters.all))
        report.deleted.extend(str(i) for i in answer.get("CachesDeleted") or [])
        report.space_reclaimed += int(answer.get("SpaceReclaimed") or 0)
