"""Which image store an engine keeps, told from the engine's own ``/version`` and ``/info``.

The prune rules depend on it (docs/rules.md, R9 to R26): Docker's classic
(graph driver) store has parent links and a parent cascade; Docker's containerd store
(Docker 29's default) has name records and neither; Podman is a store of its own. Anything
else, Windows containers or a store this package does not recognise, is unsupported:
the plugin then deletes nothing, rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CLASSIC = "classic"
CONTAINERD = "containerd"
PODMAN = "podman"
UNSUPPORTED = "unsupported"

#: Graph drivers of Docker's classic image store on Linux.
GRAPH_DRIVERS = frozenset(
    {"overlay2", "overlay", "fuse-overlayfs", "vfs", "btrfs", "zfs", "aufs", "devicemapper"}
)
_SNAPSHOTTER = "io.containerd.snapshotter.v1"


@dataclass(frozen=True)
class Store:
    """An engine's image store: ``kind`` is one of the constants above."""

    kind: str
    #: The engine and driver as it named them, for the header and the report.
    detail: str = ""
    #: Why the store is unsupported (empty when it is supported).
    reason: str = ""

    @property
    def supported(self) -> bool:
        return self.kind != UNSUPPORTED

    def describe(self) -> str:
        names = {
            CLASSIC: "Docker, classic image store",
            CONTAINERD: "Docker, containerd image store",
            PODMAN: "Podman",
            UNSUPPORTED: "unsupported",
        }
        text = names[self.kind]
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "detail": self.detail}
        if self.reason:
            out["reason"] = self.reason
        return out


def is_podman(version: Mapping[str, Any]) -> bool:
    """Podman names itself among the ``/version`` components; Docker never does."""
    components = version.get("Components") or ()
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


def detect(version: Mapping[str, Any], info: Mapping[str, Any] | None) -> Store:
    """The store, from ``GET /version`` and (for Docker) ``GET /info``; pure.

    ``info`` may be None for Podman, whose ``/version`` says enough.
    """
    server = str(version.get("Version") or "?")
    if is_podman(version):
        return Store(PODMAN, f"Podman {server}")
    if info is None:
        return Store(UNSUPPORTED, f"Docker {server}", "the engine did not describe itself")
    os_type = str(info.get("OSType") or version.get("Os") or "")
    driver = str(info.get("Driver") or "")
    detail = f"Docker {info.get('ServerVersion') or server}, {driver or 'no driver'}"
    if os_type != "linux":
        return Store(UNSUPPORTED, detail, f"{os_type or 'unknown'} containers are not supported")
    if _driver_type(info.get("DriverStatus")) == _SNAPSHOTTER:
        return Store(CONTAINERD, detail)
    if driver in GRAPH_DRIVERS:
        return Store(CLASSIC, detail)
    return Store(UNSUPPORTED, detail, f"image store {driver or '(none)'!r} is not recognised")


def _driver_type(status: object) -> str | None:
    """``DriverStatus`` holds ``["driver-type", "io.containerd.snapshotter.v1"]`` on the
    containerd store."""
    if not isinstance(status, Sequence) or isinstance(status, str):
        return None
    for pair in status:
        if isinstance(pair, Sequence) and len(pair) == 2 and pair[0] == "driver-type":
            return str(pair[1])
    return None


def store_of(engine: object) -> Store:
    """``engine.store``; an engine that does not say (a test double, the dry run's
    simulation) follows the classic store's rules."""
    store = getattr(engine, "store", None)
    return store if isinstance(store, Store) else Store(CLASSIC)
