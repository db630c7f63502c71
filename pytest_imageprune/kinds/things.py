"""The containers, networks, volumes and build-cache records, as the engine lists them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_imageprune.engine.api import MEETING_LABEL, at_least
from pytest_imageprune.kinds.table import CONTAINERS, NETWORKS, VOLUMES
from pytest_imageprune.model.filters import engine_time
from pytest_imageprune.model.gotime import NANOS

if TYPE_CHECKING:
    from pytest_imageprune.engine.api import Objects

#: Networks no prune removes (``network.IsPredefined``; Podman's default network).
PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default", "podman"})


#: The label Docker puts on the volumes it makes without a name.
ANONYMOUS = "com.docker.volume.anonymous"


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


def listing(engine: Objects, kind: str, gone: frozenset[str] = frozenset()) -> list[Thing]:
    """Every object of ``kind`` on the engine; the containers ``gone`` (a dry run's, which
    the real run deletes first) hold nothing."""
    if kind == CONTAINERS:
        return [_container(item) for item in engine.objects("containers")]
    if kind == NETWORKS:
        items = engine.objects("networks")
        named: set[str] = set()
        if engine.podman:  # Podman's prune keeps a network any container names, stopped too
            for container in engine.objects("containers"):
                if container.get("Id") not in gone:
                    named |= set((container.get("NetworkSettings") or {}).get("Networks") or ())
        return [_network(item, named) for item in items]
    if kind == VOLUMES:
        volumes = engine.objects("volumes")
        used = _used_volumes(engine, gone)
        # Docker labels its anonymous volumes from API 1.42 on; before it, and on Podman,
        # the name the engine gave one (64 hex digits) is all that tells.
        labels_them = not engine.podman and at_least(engine.api_version, "1.42")
        return [_volume(item, used, labels_them) for item in volumes if not _meeting(item)]
    return [_record(item) for item in engine.disk_usage("build-cache").get("BuildCache") or []]


def present_ids(engine: Objects, kind: str) -> frozenset[str]:
    """The IDs of ``kind`` on the engine (a volume's name), in as few requests as can be."""
    if kind == NETWORKS:
        items = engine.objects("networks")
        return frozenset(str(i.get("Id") or i.get("ID") or i.get("Name")) for i in items)
    if kind == VOLUMES:
        return frozenset(str(v["Name"]) for v in engine.objects("volumes"))
    return frozenset(t.id for t in listing(engine, kind))


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
        created_ns=engine_time(item.get("Created")),
        labels=item.get("Labels") or None,
        never=never,
        busy=name in (named or ()),
    )


def _volume(item: Mapping[str, Any], used: set[str], labels_them: bool) -> Thing:
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
        created_ns=engine_time(item.get("CreatedAt")),
        created_span=_span(item.get("CreatedAt")),
        labels=labels,
        busy=name in used,
        never=never,
        anonymous=(isinstance(labels, dict) and ANONYMOUS in labels)
        or (not labels_them and _RANDOM_NAME.fullmatch(name) is not None),
    )


#: The name an engine gives a volume made without one (``stringid.GenerateRandomID``).
_RANDOM_NAME = re.compile("[0-9a-f]{64}")


def _meeting(volume: Mapping[str, Any]) -> bool:
    """Whether a volume is where sessions meet (``coordination.in_engine``): the plugin's
    own, never a prune's to take, nor said anywhere."""
    labels = volume.get("Labels")
    return isinstance(labels, Mapping) and MEETING_LABEL in labels


def _used_volumes(engine: Objects, gone: frozenset[str]) -> set[str]:
    """The volumes some container (stopped ones too) mounts, but for those ``gone``."""
    used: set[str] = set()
    for container in engine.objects("containers"):
        if container.get("Id") in gone:
            continue
        for mount in container.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                used.add(str(mount["Name"]))
    return used


def _record(item: Mapping[str, Any]) -> Thing:
    return Thing(
        id=str(item["ID"]),
        name=str(item["ID"]),
        created_ns=engine_time(item.get("CreatedAt")),
        busy=bool(item.get("InUse")),
        type=str(item.get("Type") or "regular"),
        description=str(item.get("Description") or ""),
        shared=bool(item.get("Shared")),
        last_used_ns=engine_time(item.get("LastUsedAt")),
        size=int(item.get("Size") or 0),
    )


def _span(value: object) -> int:
    """How early a time stamp may be: a second less a nanosecond when it has no fraction."""
    return NANOS - 1 if isinstance(value, str) and "." not in value else 0
