"""The tests' one fake engine: ``FakeEngine``, on the dry run's ``SimulatedEngine``.

Images follow the daemon's rules as the dry run replays them (``engine.simulate``, checked
against the daemon); the other kinds come from lists of plain objects, as the engine lists
them (``api.Objects``). The faults a test needs are constructor options, never a subclass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_imageprune.engine.api import Engine, Gone, ObjectKind, Record
from pytest_imageprune.engine.simulate import SimulatedContainerdEngine, SimulatedEngine
from pytest_imageprune.engine.store import CONTAINERD, Store
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot

#: ``history=KEEP``: the simulation's own answer (none).
KEEP: Any = object()


class FakeEngine(SimulatedEngine):
    """A fake ``Engine`` and ``Objects``, noting what it is asked.

    Images: ``faults`` (a deletion's target: what it raises instead), ``inspect_fault``
    (raised by every inspect), ``truth`` (images an inspect tells instead of the listed
    ones), ``inspect_extra`` (merged into every inspect), ``layers`` (the layers an inspect
    names, with ``history``'s sizes), ``history`` (every image's), ``last_tag`` (inspects
    carry ``Metadata.LastTagTime``, as on the containerd store), ``store``, ``connections``
    (how many of ``spawn``'s engines share this one), ``snapshot_fault`` (given the number
    of the snapshot asked, what it raises, if anything), ``tagged_meanwhile`` (an image ID:
    the name, or names, another client gives it after the listing, just before the engine
    answers the first question about it that ``tagged_on`` names: ``"any"``, an inspect, a
    look at its names or a deletion; ``"delete"``, its deletion), ``names_faults`` (an
    image ID: what a look at its names raises).

    Other kinds: ``containers``, ``networks``, ``volumes`` and ``cache`` (records), as the
    engine lists them; ``inspects`` (a container's inspect by ID); ``volume_sizes``;
    ``refusals`` (a removal's target: what it raises); ``listing_faults`` (a kind: what its
    listing raises); ``lost_after`` (that many questions,
    then the engine is gone); ``podman``, ``api_version``, ``version``, ``engine_id``.
    """

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        *,
        store: Store | None = None,
        faults: Mapping[str, BaseException] | None = None,
        inspect_fault: BaseException | None = None,
        truth: Mapping[str, Image] | None = None,
        inspect_extra: Mapping[str, Any] | None = None,
        layers: Sequence[str] = (),
        history: Any = KEEP,
        last_tag: bool = False,
        connections: int = 1,
        snapshot_fault: Callable[[int], BaseException | None] | None = None,
        tagged_meanwhile: Mapping[str, str | tuple[str, ...]] | None = None,
        tagged_on: str = "any",
        names_faults: Mapping[str, BaseException] | None = None,
        containers: Sequence[Mapping[str, Any]] = (),
        networks: Sequence[Mapping[str, Any]] = (),
        volumes: Sequence[Mapping[str, Any]] = (),
        cache: Sequence[Mapping[str, Any]] = (),
        inspects: Mapping[str, Mapping[str, Any]] | None = None,
        volume_sizes: Sequence[Mapping[str, Any]] = (),
        refusals: Mapping[str, BaseException] | None = None,
        listing_faults: Mapping[str, BaseException] | None = None,
        lost_after: int | None = None,
        podman: bool = False,
        api_version: str = "1.43",
        version: str = "24.0.0",
        engine_id: str = "",
    ) -> None:
        super().__init__(snapshot if snapshot is not None else Snapshot.of([]))
        #: What tells it from other engines (``DockerEngine.engine_id``); "" none.
        self.engine_id = engine_id
        if store is not None:
            self.store = store
        self.faults = dict(faults or {})
        self.inspect_fault = inspect_fault
        self.truth = truth
        self.inspect_extra = dict(inspect_extra or {})
        self.layers = list(layers)
        self._history = history
        self.last_tag = last_tag
        self.connections = connections
        self.snapshot_fault = snapshot_fault
        self.tagged_meanwhile = dict(tagged_meanwhile or {})
        self.tagged_on = tagged_on
        self.names_faults = dict(names_faults or {})
        self.listed: dict[ObjectKind, list[Mapping[str, Any]]] = {
            "containers": list(containers),
            "networks": list(networks),
            "volumes": list(volumes),
        }
        self.cache = list(cache)
        self.inspects = dict(inspects or {})
        self.volume_sizes = list(volume_sizes)
        self.refusals = dict(refusals or {})
        self.listing_faults = dict(listing_faults or {})
        self.lost_after = lost_after
        self._podman, self._api_version, self._version = podman, api_version, version
        #: The deletions' targets, in order.
        self.calls: list[str] = []
        #: The images inspected, in order.
        self.inspected: list[str] = []
        #: The images whose names were looked at, in order.
        self.named: list[str] = []
        #: "read" (an inspect), "names" (a look at an image's names) and "delete", in order.
        self.log: list[str] = []
        #: The snapshots asked.
        self.snapshots = 0
        #: What was asked of ``Objects``, in order ("objects networks", "remove volumes v"...).
        self.asked: list[str] = []
        #: The build cache's prunes: the IDs, and ``all``.
        self.cache_prunes: list[tuple[list[str], bool]] = []

    # -- images ----------------------------------------------------------------------------
    def add(self, image: Image) -> None:
        """An image built meanwhile."""
        self._snapshot = self._snapshot.replace(image)
        self.refs[image.id] = list(image.refs)
        self.parent[image.id] = image.parent

    def tag(self, image_id: str, name: str) -> None:
        """Another client's ``docker tag``: one more name for an image."""
        self.refs[image_id].append(name)

    def _meanwhile(self, asked: str, target: str) -> None:
        """What another client does just before the engine answers ``asked`` of ``target``."""
        if self.tagged_on not in ("any", asked):
            return
        for image_id in list(self.tagged_meanwhile):
            if image_id in self.refs and (target == image_id or target.endswith("@" + image_id)):
                names = self.tagged_meanwhile.pop(image_id)
                for name in (names,) if isinstance(names, str) else names:
                    self.tag(image_id, name)

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        fault = self.snapshot_fault(self.snapshots) if self.snapshot_fault else None
        if fault is not None:
            raise fault
        return super().snapshot()

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        self.inspected.append(image_id)
        self.log.append("read")
        self._meanwhile("inspect", image_id)
        if self.inspect_fault is not None:
            raise self.inspect_fault
        return self._inspected(image_id)

    def _inspected(self, image_id: str) -> Mapping[str, Any]:
        if self.layers:  # with its names, as an engine's inspect lists them
            tags, digests = self._names_now(image_id) if image_id in self.refs else ((), ())
            return {
                "RootFS": {"Layers": list(self.layers)},
                "RepoTags": list(tags),
                "RepoDigests": list(digests),
            }
        if self.truth is not None:
            return SimulatedEngine(Snapshot.of(self.truth.values())).inspect(image_id)
        data = dict(super().inspect(image_id))
        if self.last_tag:
            image = self._snapshot.images[image_id]
            last = image.last_tag_ns or image.created_s * NANOS
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last // NANOS))
            data["Metadata"] = {"LastTagTime": f"{stamp}.{last % NANOS:09d}Z"}
        return {**data, **self.inspect_extra}

    def look(self, image_id: str) -> Mapping[str, Any]:
        """The look at an image's names before its deletion by ID (logged "names")."""
        self.named.append(image_id)
        self.log.append("names")
        self._meanwhile("names", image_id)
        if image_id in self.names_faults:
            raise self.names_faults[image_id]
        if self.layers:
            return self._inspected(image_id)
        return SimulatedEngine.inspect(self, image_id)  # its names as they are now

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        self.log.append("history")
        self._meanwhile("history", image_id)
        if self._history is KEEP:
            return super().history(image_id)
        answer: Sequence[Mapping[str, Any]] = self._history
        return answer

    def delete(self, target: str) -> list[Record]:
        self.calls.append(target)
        self.log.append("delete")
        self._meanwhile("delete", target)
        if target in self.faults:
            raise self.faults[target]
        return super().delete(target)

    def spawn(self, count: int) -> list[Engine]:
        return [self] * min(count, self.connections)

    # -- the other kinds (``api.Objects``) ------------------------------------------------
    def _ask(self, question: str | None) -> None:
        """Note a question (a fact, ``None``, is not noted): the engine may be gone."""
        if self.lost_after is not None and len(self.asked) >= self.lost_after:
            raise EngineUnavailable(self.endpoint, "connection refused")
        if question is not None:
            self.asked.append(question)

    @property
    def podman(self) -> bool:
        self._ask(None)
        return self._podman

    @property
    def api_version(self) -> str:
        self._ask(None)
        return self._api_version

    @property
    def version(self) -> str:
        self._ask(None)
        return self._version

    def objects(self, kind: ObjectKind) -> Sequence[Mapping[str, Any]]:
        self._ask(f"objects {kind}")
        if kind in self.listing_faults:
            raise self.listing_faults[kind]
        return list(self.listed[kind])

    def disk_usage(self, what: str) -> Mapping[str, Any]:
        self._ask(f"disk_usage {what}")
        if what == "volume":
            return {"Volumes": list(self.volume_sizes)}
        return {"BuildCache": list(self.cache)}

    def container(self, container_id: str, *, size: bool = False) -> Mapping[str, Any]:
        self._ask(f"container {container_id}{' size' if size else ''}")
        if container_id in self.inspects:
            return self.inspects[container_id]
        if any(c.get("Id") == container_id for c in self.listed["containers"]):
            return {"Id": container_id}
        raise Gone(f"No such container: {container_id}")

    def network(self, network_id: str) -> Mapping[str, Any]:
        self._ask(f"network {network_id}")
        for item in self.listed["networks"]:
            if network_id in (item.get("Id"), item.get("Name")):
                return item
        raise Gone(f"No such network: {network_id}")

    def remove(self, kind: ObjectKind, target: str) -> None:
        self._ask(f"remove {kind} {target}")
        if target in self.refusals:
            raise self.refusals[target]
        listed = self.listed[kind]
        for item in listed:
            if target in (item.get("Id"), item.get("ID"), item.get("Name")):
                listed.remove(item)
                if kind == "containers":  # it uses its image no more
                    self.containers = [c for c in self.containers if c.id != item.get("Id")]
                return
        raise Gone(f"No such {kind.rstrip('s')}: {target}")

    def prune_cache(self, ids: Sequence[str], *, all: bool) -> Mapping[str, Any]:
        self._ask("prune_cache")
        self.cache_prunes.append((list(ids), all))
        gone = [r for r in self.cache if r.get("ID") in ids]
        self.cache = [r for r in self.cache if r not in gone]
        return {
            "CachesDeleted": [r["ID"] for r in gone],
            "SpaceReclaimed": sum(int(r.get("Size") or 0) for r in gone),
        }


class FakeContainerdEngine(FakeEngine, SimulatedContainerdEngine):
    """``FakeEngine`` on the containerd store: its deletions replayed as that store's."""

    store = Store(CONTAINERD, "fake")

    def __init__(self, snapshot: Snapshot | None = None, **options: Any) -> None:
        options.setdefault("last_tag", True)
        super().__init__(snapshot, **options)
