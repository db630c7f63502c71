"""Every fact about each kind besides images, in one table: ``KINDS``.

Its option and ini key, its help, the filters it takes (``kinds.filters`` validates them
and words what is wrong), the docker command it mirrors, its report keys and its row in
the GitHub step summary: ``settings``, ``plugin``, ``github`` and the report derive theirs
from here, so adding a kind touches ``kinds/`` alone. Plain data, cheap to import: the
plugin reads it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

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
