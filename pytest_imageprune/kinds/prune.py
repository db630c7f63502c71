"""Pruning one kind on the engine: list, select, delete, and count."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote

from pytest_imageprune.model.gotime import NANOS

if TYPE_CHECKING:
    from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.report import KindReport
from pytest_imageprune.kinds.select import Live, select
from pytest_imageprune.kinds.table import BUILD_CACHE, CONTAINERS, NETWORKS, VOLUMES
from pytest_imageprune.kinds.things import Thing, _at_least, _disk_usage, _instant, listing

#: Record IDs per ``POST /build/prune`` (one ``id`` regex each, so the URL stays short).
CACHE_BATCH = 100


def prune_kind(
    engine: DockerEngine,
    filters: KindFilters,
    *,
    baseline: frozenset[str] | None,
    started_ns: int,
    live: Callable[[], Sequence[Live]],
    dry_run: bool,
    ended_ns: int | None = None,
) -> KindReport:
    """Prune one kind on ``engine``; every error becomes the report's (``status`` says
    whether to go on: ``engine-lost`` and ``cancelled`` stop the session's prune).

    ``live`` is asked after the listing: a session that made an object listed here wrote
    its record before it could make anything, so the registry read then shows it.
    """
    from pytest_imageprune.engine.api import EngineError, ImageConflict, ImageGone
    from pytest_imageprune.errors import EngineUnavailable

    report = KindReport(filters.kind, filters, dry_run=dry_run)
    began = time.monotonic()
    try:
        _prune(
            engine,
            report,
            baseline=baseline,
            started_ns=started_ns,
            live=live,
            ended_ns=ended_ns,
        )
    except EngineUnavailable as exc:
        report.status = "engine-lost"
        report.errors.append({"error": str(exc)})
    except KeyboardInterrupt:
        report.status = "cancelled"
    except (EngineError, ImageGone, ImageConflict, ValueError, LookupError, TypeError) as exc:
        report.status = "failed"  # an odd answer: this kind stops, the others go on
        report.errors.append({"error": f"{type(exc).__name__}: {exc}"})
    except AttributeError as exc:
        report.status = "failed"
        report.errors.append({"error": f"an answer of an unexpected shape: {exc}"})
    report.duration_s = time.monotonic() - began
    return report


def _prune(
    engine: DockerEngine,
    report: KindReport,
    *,
    baseline: frozenset[str] | None,
    started_ns: int,
    live: Callable[[], Sequence[Live]],
    ended_ns: int | None,
) -> None:
    filters, kind = report.filters, report.kind
    podman = engine.podman
    if kind == BUILD_CACHE and podman:
        report.status = "not-supported"
        report.errors.append({"error": "Podman keeps no build cache of BuildKit's to prune"})
        return
    api = engine.api_version
    modern = not podman and _at_least(api, "1.42")
    if kind == VOLUMES and filters.all is not None and not modern:  # as the engine would
        report.status = "not-supported"
        what = "Podman" if podman else f"Docker's API {api}"
        report.errors.append(
            {"error": f"{what} has no all filter for volumes (API 1.42 and later): nothing deleted"}
        )
        return
    if (
        kind == VOLUMES
        and podman
        and "label!" in filters.raw
        and not _at_least(engine.version.split("-")[0], "5")
    ):  # as the engine would: Podman 4 refuses it for volumes
        report.status = "not-supported"
        report.errors.append(
            {"error": f"Podman {engine.version} has no label! filter for volumes: nothing deleted"}
        )
        return
    if kind == VOLUMES and baseline is None:
        report.status = "no-baseline"
        report.errors.append({"error": "no baseline: a volume is data, none is deleted"})
        return
    things = listing(engine, kind)
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
        anonymous_only=kind == VOLUMES and modern and not filters.all,
        ended_ns=ended_ns,
    )
    report.candidates = [t.id for t in candidates]
    if kind == BUILD_CACHE:
        _prune_cache(engine, filters, candidates, report)
    else:
        _delete_each(engine, kind, candidates, report, podman=podman)


def _precise(engine: DockerEngine, thing: Thing, until: int) -> Thing:
    """A container listed in whole seconds whose second holds ``until``: its ``Created`` to
    the nanosecond (inspect), as the daemon compares it."""
    from pytest_imageprune.engine.api import ImageGone

    if thing.created_ns is None or not thing.created_ns <= until < thing.created_ns + NANOS:
        return thing
    try:
        inspect = engine.request("GET", f"/containers/{quote(thing.id, safe='')}/json")
    except ImageGone:
        return thing
    created = _instant(inspect.get("Created") if isinstance(inspect, Mapping) else None)
    return replace(thing, created_ns=created if created is not None else thing.created_ns)


def _delete_each(
    engine: DockerEngine,
    kind: str,
    candidates: Sequence[Thing],
    report: KindReport,
    *,
    podman: bool = False,
) -> None:
    from pytest_imageprune.engine.api import EngineError, ImageConflict, ImageGone

    sizes = _volume_sizes(engine) if kind == VOLUMES and candidates else {}
    for thing in candidates:
        size = 0
        if kind == CONTAINERS:
            try:
                inspect = engine.request("GET", f"/containers/{quote(thing.id)}/json?size=1")
                size = int(inspect.get("SizeRw") or 0)
            except ImageGone:
                continue  # removed meanwhile
            except (EngineError, ImageConflict, ValueError, AttributeError):
                size = 0  # the daemon's prune counts nothing then either
        elif kind == VOLUMES:
            size = sizes.get(thing.id, 0)
        if report.dry_run:
            report.deleted.append(thing.name)
            report.space_reclaimed += max(size, 0)
            continue
        path = {CONTAINERS: "/containers/", NETWORKS: "/networks/", VOLUMES: "/volumes/"}[kind]
        # Podman checks a network's users by its name only: by ID it removes one in use.
        target = thing.name if kind == NETWORKS and podman else thing.id
        try:
            engine.request("DELETE", path + quote(target, safe=""))
        except ImageGone:
            continue  # someone else removed it first
        except ImageConflict as exc:
            report.skipped.append({"Id": thing.id, "reason": str(exc)})
            continue
        except EngineError as exc:
            if kind == NETWORKS and _in_use(str(exc)):  # Docker: 403, Podman: 500
                report.skipped.append({"Id": thing.id, "reason": str(exc)})
            else:
                report.errors.append({"Id": thing.id, "error": str(exc)})
            continue
        report.deleted.append(thing.name)
        report.space_reclaimed += max(size, 0)


def _in_use(message: str) -> bool:
    return message.startswith("403:") or any(
        words in message for words in ("active endpoints", "in use", "being used")
    )


def _volume_sizes(engine: DockerEngine) -> dict[str, int]:
    """Each local volume's size on disk, as ``GET /system/df`` measures it (-1 unknown)."""
    try:
        volumes = _disk_usage(engine, "volume").get("Volumes") or []
    except Exception:  # a size, never a failure
        return {}
    sizes = {}
    for volume in volumes:
        usage = volume.get("UsageData") or {}
        sizes[str(volume.get("Name"))] = int(usage.get("Size") or 0)
    return sizes


def _prune_cache(
    engine: DockerEngine, filters: KindFilters, candidates: Sequence[Thing], report: KindReport
) -> None:
    """``POST /build/prune`` limited to the candidates: one ``id`` filter, a regex anchored
    at both ends (the daemon reads ``id`` as an unanchored regex, one value per key)."""
    if report.dry_run:
        report.deleted = [t.id for t in candidates]
        report.space_reclaimed = sum(t.size for t in candidates)
        return
    # Only the IDs (and ``all``) go to the engine: ``until``, ``type`` and ``description``
    # were applied here (Docker 20.10 takes no date in ``until``, and a description, which
    # holds spaces, cannot pass its filter syntax).
    ids = [t.id for t in candidates if t.id.isalnum()]  # BuildKit's IDs: never a regex
    for start in range(0, len(ids), CACHE_BATCH):
        batch = ids[start : start + CACHE_BATCH]
        wanted = {"id": [f"^({'|'.join(batch)})$"]}
        query = f"all={int(bool(filters.all))}&filters={quote(json.dumps(wanted))}"
        answer = engine.request("POST", f"/build/prune?{query}")
        if not isinstance(answer, Mapping):
            raise TypeError(f"POST /build/prune answered {answer!r}")
        report.deleted.extend(str(i) for i in answer.get("CachesDeleted") or [])
        report.space_reclaimed += int(answer.get("SpaceReclaimed") or 0)
