"""Every fact about each kind besides images, in one table: ``KINDS``.

Its option and ini key, its help, the filters it takes (``kinds.filters`` validates them
and words what is wrong), the docker command it mirrors, its report keys and its row in
the GitHub step summary: ``settings``, ``plugin``, ``github`` and the report derive theirs
from here, so adding a kind touches ``kinds/`` alone. Plain data, cheap to import: the
plugin reads it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

CONTAINERS = "containers"
NETWORKS = "networks"
VOLUMES = "volumes"
BUILD_CACHE = "build_cache"


class Kind(NamedTuple):
    """One kind of thing ``docker system prune`` prunes, besides images.

    A named tuple, not a frozen dataclass: the plugin builds this table at every pytest
    start, enabled or not, and a dataclass's generated methods cost 2 ms there.
    """

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
    #: What ``--help`` says it prunes ("stopped containers"), its filters as ``--help``
    #: lists them, and what a bare option takes.
    what: str
    filters_help: str
    bare: str = "them all"
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
    def help(self) -> str:
        """Its option's ``--help``: whole sentences."""
        text = (
            f"Prune, at session end, the {self.what} this session made that match FILTER, one"
            f" of {self.command}'s filters: {self.filters_help}. Give it once per filter;"
            f" bare, it takes {self.bare}."
        )
        if self.never_from_start:
            text += f" It never takes one of the {self.many} there at session start."
        return text

    @property
    def ini_help(self) -> str:
        """Its ini key's help: whole sentences, as its option's."""
        return (
            f"Filters for {self.option}, one a line. Any line enables the prune of the"
            f" {self.what} this session made, as {self.option} does."
        )

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
            what="stopped containers",
            filters_help="until=TIME, label=KEY[=VALUE] or label!=KEY[=VALUE]",
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
            what="unused networks",
            filters_help="until=TIME, label=KEY[=VALUE] or label!=KEY[=VALUE]",
        ),
        VOLUMES: Kind(
            VOLUMES,
            command="docker volume prune",
            accepted=("label", "label!", "all"),
            deleted_key="VolumesDeleted",
            space=True,
            one="volume",
            many="volumes",
            what="unused volumes",
            filters_help="label=KEY[=VALUE], label!=KEY[=VALUE] or all=BOOL",
            bare="the anonymous ones only",
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
            what="unused build-cache records",
            filters_help="until=TIME, all=BOOL, type=TYPE or description=TEXT",
            bare="all but the internal, frontend and shared ones",
        ),
    }
)
#: ``docker system prune``'s order: these before the images, the build cache after.
BEFORE_IMAGES = (CONTAINERS, NETWORKS, VOLUMES)
AFTER_IMAGES = (BUILD_CACHE,)
