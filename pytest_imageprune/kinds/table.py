"""Every fact about each kind besides images: its option, ini key, help, filters, report keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from pytest_imageprune.errors import FilterError

if TYPE_CHECKING:
    pass


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
