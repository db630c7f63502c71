"""The rest of what a session leaves: stopped containers, networks, volumes, build cache.

Each kind is pruned as its own ``docker ... prune`` would (``daemon/prune.go``,
``daemon/volume/service``, ``daemon/internal/builder-next`` in moby/moby), among the
objects the session made: those absent from its baseline (scope ``session``), and never
one that a live session may have made (absent from its baseline) or, for the build cache,
used since it started. A volume is data: one that existed at session start is never a
candidate, whatever the scope. Objects go one by one (``DELETE``), never through the
engine's own prune, except the build cache, which has no other way out: it goes through
``POST /build/prune`` with an ``id`` filter that names exactly the session's records.

Pure selection here (``select``), the engine's part in ``prune_kind``; nothing raises from
``prune_kind`` but ``EngineUnavailable`` before anything is deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pytest_imageprune._gotime import GO_ZERO_NS, NANOS
from pytest_imageprune.errors import FilterError
from pytest_imageprune.filters import (
    match_kv_list,
    parse_rfc3339_nano,
    parse_until,
    split_filters,
)

if TYPE_CHECKING:
    from pytest_imageprune.engine import DockerEngine

CONTAINERS = "containers"
NETWORKS = "networks"
VOLUMES = "volumes"
BUILD_CACHE = "build_cache"


@dataclass(frozen=True)
class Kind:
    """One kind of thing ``docker system prune`` prunes, besides images."""

    name: str
    #: The command line option and ini key that enable it.
    option: str
    ini: str
    #: The docker command whose filters it takes.
    command: str
    #: The filters it accepts, in the order the help names them.
    accepted: tuple[str, ...]
    #: Docker's key for what went (``ContainersDeleted``...).
    deleted_key: str
    #: Whether Docker's answer has a ``SpaceReclaimed`` for it.
    space: bool
    #: One of it, and many, said to a person.
    one: str
    many: str


KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        CONTAINERS: Kind(
            CONTAINERS,
            "--prune-containers",
            "prune_containers",
            "docker container prune",
            ("until", "label", "label!"),
            "ContainersDeleted",
            True,
            "container",
            "containers",
        ),
        NETWORKS: Kind(
            NETWORKS,
            "--prune-networks",
            "prune_networks",
            "docker network prune",
            ("until", "label", "label!"),
            "NetworksDeleted",
            False,
            "network",
            "networks",
        ),
        VOLUMES: Kind(
            VOLUMES,
            "--prune-volumes",
            "prune_volumes",
            "docker volume prune",
            ("label", "label!", "all"),
            "VolumesDeleted",
            True,
            "volume",
            "volumes",
        ),
        BUILD_CACHE: Kind(
            BUILD_CACHE,
            "--prune-build-cache",
            "prune_build_cache",
            "docker builder prune",
            ("until", "all", "type", "description"),
            "CachesDeleted",
            True,
            "build-cache record",
            "build-cache records",
        ),
    }
)
#: ``docker system prune``'s order: these before the images, the build cache after.
BEFORE_IMAGES = (CONTAINERS, NETWORKS, VOLUMES)
AFTER_IMAGES = (BUILD_CACHE,)

#: BuildKit's record types (``client.UsageRecordType``), in the order help names them.
CACHE_TYPES = (
    "regular",
    "source.local",
    "source.git.checkout",
    "exec.cachemount",
    "internal",
    "frontend",
)
#: What each filter accepts, said to a person; ``{o}`` is the option and ``=``.
ACCEPTED = {
    "until": (
        "Write {o}until= and a Go duration back from now (10m, 1h30m), an RFC 3339 date or"
        " time (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds, such as"
        " {o}until=24h"
    ),
    "label": "Write {o}label=KEY or {o}label=KEY=VALUE, such as {o}label=ci",
    "label!": "Write {o}label!=KEY or {o}label!=KEY=VALUE, such as {o}label!=keep",
    "all": "Write {o}all=true or {o}all=false",
    "type": "Write {o}type= and one of " + ", ".join(CACHE_TYPES),
    "description": "Write {o}description= and a record's whole description",
}
#: Networks no prune removes (``network.IsPredefined``; Podman's default network).
PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default", "podman"})
#: The label Docker puts on the volumes it makes without a name.
ANONYMOUS = "com.docker.volume.anonymous"
#: Go's ``strconv.ParseBool``.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
#: How far before the session's start a build-cache record it made may say it was
#: created (the engine's clock and the session's, rounding).
START_SLACK_NS = 2 * NANOS
#: Record IDs per ``POST /build/prune`` (one ``id`` regex each, so the URL stays short).
CACHE_BATCH = 100


def kind_usage_error(kind: Kind, exc: FilterError, ini: str | None) -> str:
    """A bad filter of ``kind`` said to a person, as ``settings.filter_usage_error`` says
    an image filter: where it came from, what is wrong, what to write instead."""
    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    option = f"{kind.option}=" if ini is None else ""
    if ini is None:
        where = " ".join(f"{kind.option}={t}" for t in texts) + " (command line)"
    else:
        where = f"{kind.ini} = " + ", ".join(texts) + f" ({ini})"
    names = ", ".join(kind.accepted)
    key = exc.key
    if key is None:
        what = f"{texts[0]!r} is not a filter. A filter is {option}KEY=VALUE: {names}"
    elif key not in kind.accepted:
        what = f"{key!r} is not a filter {kind.command} takes here. The filters are {names}"
        if kind.name == BUILD_CACHE and key in ("label", "label!"):
            what += " (the build cache has no labels: docker builder prune ignores them)"
    elif len(exc.values) > 1:
        what = f"{key} is given {len(exc.values)} times; {kind.command} takes one. Keep one"
    else:
        shown = ", ".join(repr(v) for v in exc.values) if any(exc.values) else "an empty value"
        what = f"{shown} is not accepted: {exc}. " + ACCEPTED[key].format(o=option)
    return f"{where}: {what}"


@dataclass(frozen=True)
class KindFilters:
    """One kind's filters, validated as its daemon prune validates them."""

    kind: str
    label: frozenset[str] = frozenset()
    label_not: frozenset[str] = frozenset()
    until: str | None = None
    #: ``all``: volumes beyond the anonymous ones, cache records of every type and shared.
    all: bool | None = None
    type: str | None = None
    description: str | None = None
    raw: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @classmethod
    def from_mapping(cls, kind: str, args: Mapping[str, Iterable[str]]) -> KindFilters:
        spec = KINDS[kind]
        sets = {
            key: tuple(sorted(set((values,) if isinstance(values, str) else values)))
            for key, values in args.items()
        }
        for key in sorted(sets):
            if key not in spec.accepted:
                raise FilterError(f"invalid filter '{key}'", key=key, values=sets[key])
        one: dict[str, str] = {}
        for key in ("until", "all", "type", "description"):
            if key in sets:
                values = sets[key]
                if len(values) != 1:
                    raise FilterError(f"invalid filter '{key}'", key=key, values=values)
                one[key] = values[0]
        if "until" in one:
            try:
                parse_until(one["until"], 0, 0)
            except FilterError as exc:
                raise FilterError(str(exc), key="until", values=(one["until"],)) from None
        flag = None
        if "all" in one:
            if one["all"] not in _TRUE | _FALSE:
                raise FilterError("not true or false", key="all", values=(one["all"],))
            flag = one["all"] in _TRUE
        if "type" in one and one["type"] not in CACHE_TYPES:
            raise FilterError("not a record type", key="type", values=(one["type"],))
        return cls(
            kind=kind,
            label=frozenset(sets.get("label", ())),
            label_not=frozenset(sets.get("label!", ())),
            until=one.get("until"),
            all=flag,
            type=one.get("type"),
            description=one.get("description"),
            raw=MappingProxyType(sets),
        )

    def to_docker(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in sorted(self.raw.items())}

    def until_ns(self, now_ns: int, utc_offset_s: int) -> int | None:
        if self.until is None:
            return None
        instant = parse_until(self.until, now_ns, utc_offset_s)
        return None if instant == GO_ZERO_NS else instant

    def match_labels(self, labels: Mapping[str, str] | None) -> bool:
        """moby's ``matchLabels``: every ``label``; excluded when every ``label!`` matches."""
        labels = labels or {}
        if not match_kv_list(self.label, labels):
            return False
        return not ("label!" in self.raw and match_kv_list(self.label_not, labels))


def parse_kind_filters(kind: str, values: Iterable[str]) -> KindFilters:
    """A kind's filters as typed on a command line (``--filter``), validated."""
    args, typed = split_filters(values)
    try:
        return KindFilters.from_mapping(kind, args)
    except FilterError as exc:
        exc.texts = tuple(typed.get(exc.key or "", ()))
        raise


@dataclass(frozen=True)
class Thing:
    """One container, network, volume or build-cache record, as the engine lists it."""

    id: str
    #: What Docker's prune answer names it by: a container's or cache record's ID, a
    #: network's or volume's name.
    name: str
    created_ns: int | None = None
    #: How much later it may have been made than ``created_ns`` says: a time in whole
    #: seconds (a container's list, a volume's ``CreatedAt``) may be up to a second early.
    created_span: int = 0
    labels: Mapping[str, str] | None = None
    #: Running (a container), in use (a cache record): no prune takes it.
    busy: bool = False
    #: Why its kind's prune never takes it, whatever the filters (predefined network,
    #: a volume of another driver or with mount options...), if so.
    never: str | None = None
    #: A volume Docker made without a name.
    anonymous: bool = False
    #: Build cache: its type, description, whether shared, last use.
    type: str = ""
    description: str = ""
    shared: bool = False
    last_used_ns: int | None = None
    size: int = 0


def listing(engine: DockerEngine, kind: str) -> list[Thing]:
    """Every object of ``kind`` on the engine."""
    if kind == CONTAINERS:
        items = engine.request("GET", "/containers/json?all=1") or []
        return [_container(item) for item in items]
    if kind == NETWORKS:
        items = engine.request("GET", "/networks") or []
        named: set[str] = set()
        if engine.podman:  # Podman's prune keeps a network any container names, stopped too
            for container in engine.request("GET", "/containers/json?all=1") or []:
                named |= set((container.get("NetworkSettings") or {}).get("Networks") or ())
        return [_network(item, named) for item in items]
    if kind == VOLUMES:
        answer = engine.request("GET", "/volumes") or {}
        used = _used_volumes(engine)
        return [_volume(item, used) for item in answer.get("Volumes") or []]
    return [_record(item) for item in _disk_usage(engine, "build-cache").get("BuildCache") or []]


def present_ids(engine: DockerEngine, kind: str) -> frozenset[str]:
    """The IDs of ``kind`` on the engine (a volume's name), in as few requests as can be."""
    if kind == NETWORKS:
        items = engine.request("GET", "/networks") or []
        return frozenset(str(i.get("Id") or i.get("ID") or i.get("Name")) for i in items)
    if kind == VOLUMES:
        answer = engine.request("GET", "/volumes") or {}
        return frozenset(str(v["Name"]) for v in answer.get("Volumes") or [])
    return frozenset(t.id for t in listing(engine, kind))


def _disk_usage(engine: DockerEngine, what: str) -> Mapping[str, Any]:
    """``GET /system/df`` for one kind (API 1.42 and later; before, the whole)."""
    query = f"?type={what}" if _at_least(engine.api_version, "1.42") else ""
    answer = engine.request("GET", f"/system/df{query}")
    return answer if isinstance(answer, Mapping) else {}


def _at_least(version: str, wanted: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")) >= tuple(int(p) for p in wanted.split("."))
    except ValueError:
        return False


def _container(item: Mapping[str, Any]) -> Thing:
    created = item.get("Created")
    state = str(item.get("State") or "")
    return Thing(
        id=str(item["Id"]),
        name=str(item["Id"]),
        created_ns=int(created) * NANOS if isinstance(created, int) else None,
        created_span=NANOS - 1,
        labels=item.get("Labels") or None,
        # Docker's IsRunning: running, and paused or restarting (both keep Running set).
        busy=state not in ("created", "exited", "dead", "stopped", "configured", "initialized"),
    )


def _network(item: Mapping[str, Any], named: set[str] | None = None) -> Thing:
    name = str(item.get("Name") or "")
    never = None
    if name in PREDEFINED_NETWORKS:
        never = "a predefined network"
    elif item.get("Scope") not in (None, "", "local"):
        never = f"a {item.get('Scope')} network"
    elif item.get("ConfigOnly"):
        never = "a config-only network"
    return Thing(
        id=str(item.get("Id") or item.get("ID") or name),
        name=name,
        created_ns=_instant(item.get("Created")),
        labels=item.get("Labels") or None,
        never=never,
        busy=name in (named or ()),
    )


def _volume(item: Mapping[str, Any], used: set[str]) -> Thing:
    name = str(item["Name"])
    labels = item.get("Labels") or None
    never = None
    if item.get("Driver") not in (None, "local"):
        never = f"a volume of the {item.get('Driver')} driver"
    elif item.get("Options"):
        never = "a volume with mount options"
    return Thing(
        id=name,
        name=name,
        created_ns=_instant(item.get("CreatedAt")),
        created_span=_span(item.get("CreatedAt")),
        labels=labels,
        busy=name in used,
        never=never,
        anonymous=isinstance(labels, dict) and ANONYMOUS in labels,
    )


def _used_volumes(engine: DockerEngine) -> set[str]:
    """The volumes some container (stopped ones too) mounts."""
    used: set[str] = set()
    for container in engine.request("GET", "/containers/json?all=1") or []:
        for mount in container.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                used.add(str(mount["Name"]))
    return used


def _record(item: Mapping[str, Any]) -> Thing:
    return Thing(
        id=str(item["ID"]),
        name=str(item["ID"]),
        created_ns=_instant(item.get("CreatedAt")),
        busy=bool(item.get("InUse")),
        type=str(item.get("Type") or "regular"),
        description=str(item.get("Description") or ""),
        shared=bool(item.get("Shared")),
        last_used_ns=_instant(item.get("LastUsedAt")),
        size=int(item.get("Size") or 0),
    )


def _span(value: object) -> int:
    """How early a time stamp may be: a second less a nanosecond when it has no fraction."""
    return NANOS - 1 if isinstance(value, str) and "." not in value else 0


def _instant(value: object) -> int | None:
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    try:
        return parse_rfc3339_nano(value)
    except FilterError:
        return None


@dataclass(frozen=True)
class Live:
    """What a live session's record says of one kind: the objects present at its start
    (None: not recorded, so everything new may be its), and when it started."""

    ids: frozenset[str] | None
    started_ns: int
    who: str


@dataclass
class KindReport:
    """One kind's prune: Docker's answer shape, and what this run adds."""

    kind: str
    filters: KindFilters
    dry_run: bool = False
    status: str = "completed"
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
        busy = "running" if self.kind == CONTAINERS else "in use"
        held = len(self.skipped) + sum(1 for why in self.kept.values() if why == busy)
        parts.append(f"{'would skip' if would else 'skipped'} {held} {busy}")
        parts.append(f"{len(self.errors)} error{'s' * (len(self.errors) != 1)}")
        if spec.space:
            from pytest_imageprune.report import human_size

            size = human_size(self.space_reclaimed)
            parts.append(f"{'would reclaim' if would else 'reclaimed'} {size}")
        line = ", ".join(parts)
        if self.status != "completed":
            line += f" [{self.status}]"
        return line


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
            why = _for_live(thing, kind, live)
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
            return "in use"
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
        return "running" if kind == CONTAINERS else "in use"
    if kind == VOLUMES and anonymous_only and not thing.anonymous:
        return "a named volume (all=true takes it)"
    if until is not None and thing.created_ns is not None and thing.created_ns > until:
        return "created after until"
    if not filters.match_labels(thing.labels):
        return "labels do not match"
    return None


def _for_live(thing: Thing, kind: str, live: Sequence[Live]) -> str | None:
    for session in live:
        if session.ids is None:
            # It listed no such object at its start: what was made before it started is
            # not its (unless when it started is unknown: an unreadable record).
            made = thing.created_ns
            if (
                not session.started_ns
                or made is None
                or made + thing.created_span >= session.started_ns - START_SLACK_NS
            ):
                return f"may belong to a live session ({session.who})"
        elif thing.id not in session.ids:
            return f"may belong to a live session ({session.who})"
        if (
            kind == BUILD_CACHE
            and thing.last_used_ns is not None
            and thing.last_used_ns >= session.started_ns - START_SLACK_NS
        ):
            return f"used by a live session ({session.who})"
    return None


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
    from pytest_imageprune.engine import EngineError, ImageConflict, ImageGone
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
    from pytest_imageprune.engine import ImageGone

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
    from pytest_imageprune.engine import EngineError, ImageConflict, ImageGone

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
