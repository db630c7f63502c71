"""Every fact about each kind besides images, in one table: ``KINDS``.

Its option and ini key, its help, the filters it takes and what each accepts, the docker
command it mirrors, its report keys and its row in the GitHub step summary: ``settings``,
``plugin``, ``github`` and the report derive theirs from here, so adding a kind touches
``kinds/`` alone. Cheap to import (plain data): the plugin reads it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pytest_imageprune.errors import FilterError

CONTAINERS = "containers"
NETWORKS = "networks"
VOLUMES = "volumes"
BUILD_CACHE = "build_cache"


@dataclass(frozen=True)
class Kind:
    """One kind of thing ``docker system prune`` prunes, besides images."""

    name: str
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
    #: What ``--help`` says it prunes.
    help: str
    #: Said when it is skipped because the engine holds it: "running", "in use".
    busy: str = "in use"
    #: One that existed at session start is never a candidate, whatever the scope (a
    #: volume is somebody's data).
    never_from_start: bool = False

    @property
    def option(self) -> str:
        """The command line option that enables it (``--prune-build-cache``)."""
        return f"--prune-{self.name.replace('_', '-')}"

    @property
    def ini(self) -> str:
        """The ini key that enables it (``prune_build_cache``), also the option's ``dest``."""
        return f"prune_{self.name}"

    def scoped(self, scope: str) -> bool:
        """Whether its candidates are only the objects absent from the lists at start: in
        session scope, and for a kind that never takes what was there, in any."""
        return scope == "session" or self.never_from_start

    @property
    def title(self) -> str:
        """Its row's title in the GitHub step summary."""
        return self.many[0].upper() + self.many[1:]


#: BuildKit's record types (``client.UsageRecordType``), in the order help names them.
CACHE_TYPES = (
    "regular",
    "source.local",
    "source.git.checkout",
    "exec.cachemount",
    "internal",
    "frontend",
)

KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        CONTAINERS: Kind(
            CONTAINERS,
            command="docker container prune",
            accepted=("until", "label", "label!"),
            deleted_key="ContainersDeleted",
            space=True,
            one="container",
            many="containers",
            help="stopped containers, with docker container prune's filters (until=TIME,"
            " label=KEY[=VALUE], label!=KEY[=VALUE])",
            busy="running",
        ),
        NETWORKS: Kind(
            NETWORKS,
            command="docker network prune",
            accepted=("until", "label", "label!"),
            deleted_key="NetworksDeleted",
            space=False,
            one="network",
            many="networks",
            help="unused networks, with docker network prune's filters (until=TIME,"
            " label=KEY[=VALUE], label!=KEY[=VALUE])",
        ),
        VOLUMES: Kind(
            VOLUMES,
            command="docker volume prune",
            accepted=("label", "label!", "all"),
            deleted_key="VolumesDeleted",
            space=True,
            one="volume",
            many="volumes",
            help="unused volumes, with docker volume prune's filters (label=KEY[=VALUE],"
            " label!=KEY[=VALUE], all=BOOL); never one that existed at session start",
            never_from_start=True,
        ),
        BUILD_CACHE: Kind(
            BUILD_CACHE,
            command="docker builder prune",
            accepted=("until", "all", "type", "description"),
            deleted_key="CachesDeleted",
            space=True,
            one="build-cache record",
            many="build-cache records",
            help="unused build-cache records, with docker builder prune's filters"
            " (until=TIME, all=BOOL, type=TYPE, description=TEXT)",
        ),
    }
)
#: ``docker system prune``'s order: these before the images, the build cache after.
BEFORE_IMAGES = (CONTAINERS, NETWORKS, VOLUMES)
AFTER_IMAGES = (BUILD_CACHE,)

#: What each filter accepts, said to a person, for images and every kind alike; ``{o}`` is
#: the option and ``=`` on the command line, nothing in an ini file.
ACCEPTED = {
    "dangling": "Write {o}dangling=true (or 1) or {o}dangling=false (or 0)",
    "label": "Write {o}label=KEY or {o}label=KEY=VALUE, such as {o}label=ci",
    "label!": "Write {o}label!=KEY or {o}label!=KEY=VALUE, such as {o}label!=keep",
    "until": (
        "Write {o}until= and a Go duration back from now (10m, 1h30m), an RFC 3339 date or"
        " time (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds"
        " (1700000000.5), such as {o}until=24h"
    ),
    "all": "Write {o}all=true or {o}all=false",
    "type": "Write {o}type= and one of " + ", ".join(CACHE_TYPES),
    "description": "Write {o}description= and a record's whole description",
}


def where_given(option: str, ini_key: str, exc: FilterError, ini: str | None) -> str:
    """Where a bad filter was given, as every usage error says it: the command line when
    ``ini`` is None, else that ini file."""
    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    if ini is None:
        return " ".join(f"{option}={t}" for t in texts) + " (command line)"
    return f"{ini_key} = " + ", ".join(texts) + f" ({ini})"


def kind_usage_error(kind: Kind, exc: FilterError, ini: str | None) -> str:
    """A bad filter of ``kind`` said to a person, as ``settings.filter_usage_error`` says
    an image filter: where it came from, what is wrong, what to write instead."""
    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    option = f"{kind.option}=" if ini is None else ""
    where = where_given(kind.option, kind.ini, exc, ini)
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
