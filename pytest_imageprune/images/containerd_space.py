"""``SpaceReclaimed`` on Docker's containerd image store, as Docker 29.6 counts it (R26).

The daemon sums the content blobs no longer present and the snapshots (unpacked layers)
that disappeared; the API shows neither directly, so this reads what it can (each image's
layer chain, each layer's snapshot size, whether BuildKit built it and its build cache
still holds what it built) and counts from the images' sizes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from pytest_imageprune.engine.api import Conflict, Engine, EngineError, Gone, Record
from pytest_imageprune.images.space import chain_ids
from pytest_imageprune.model.images import Snapshot

#: The ``Comment`` of a history step that BuildKit's Dockerfile frontend made (``docker
#: build`` on Docker 23 and later).
BUILDKIT_STEP = "buildkit.dockerfile.v0"


class BuildCache(Protocol):
    """Where the build cache is listed: ``GET /system/df?type=build-cache``."""

    def disk_usage(self, what: str) -> Mapping[str, Any]: ...


class ContainerdSpace:
    """``SpaceReclaimed`` on this store, as Docker 29.6 and later count it (R26): the bytes
    of the content blobs no longer present, plus the snapshots (unpacked layers) that
    disappeared.

    The API shows, for each target, its layer chain (inspect's ``RootFS.Layers``), each
    layer's snapshot size (``history``) and the content and snapshots together (the
    list's ``Size``). A snapshot is freed when the last image holding it goes: exact. The
    content of an image is counted as what it adds to the image its chain extends (the
    longest prefix, ties by ID): exact for the layers, off by that image's manifest and
    config (under a kilobyte each) where images share layers.

    An image BuildKit built on this engine leaves its content behind while the build cache
    holds it: the cache's records hold its layer blobs, its build history the manifest and
    config. Only its snapshots leave the disk with it (measured on Docker 26.1: the image's
    unpacked layers are its own, BuildKit's are others). The API names no blob, so this
    goes by what it shows: a step of the image's history says BuildKit made it, and the
    build cache, listed before the first deletion, holds records that images share (its
    ``Shared``). That content is ``held``, not freed: the build cache's prune frees it,
    and counts it.
    """

    def __init__(
        self, snapshot: Snapshot, deleting: Iterable[str], cache: BuildCache | None = None
    ) -> None:
        self.snapshot = snapshot
        self.deleting = frozenset(deleting)
        self._cache = cache
        self._buildkit: set[str] = set()
        self._cache_holds: bool | None = None
        self._chain: dict[str, tuple[str, ...]] = {}
        self._usage: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ready = False
        self._present: set[str] = set(snapshot.images)
        self._holders: dict[str, int] = {}
        self._containing: dict[str, list[str]] = {}
        self._base: dict[str, str] = {}
        self._counted: set[str] = set()
        self._contents: dict[str, int] = {}
        #: What was freed so far, by kind: ``content`` (blobs) and ``snapshots``.
        self.parts = {"content": 0, "snapshots": 0}
        #: The content of deleted images that the build cache still holds: not freed.
        self.held = 0

    @classmethod
    def of(
        cls,
        snapshot: Snapshot,
        chains: Mapping[str, Sequence[str]],
        usage: Mapping[str, int],
        *,
        held_by_cache: Iterable[str] = (),
    ) -> ContainerdSpace:
        """A count over layers read already: each image's chain, each snapshot's size (the
        storage budget predicts with it what deleting any image would free);
        ``held_by_cache``, the images BuildKit built whose content the build cache holds."""
        space = cls(snapshot, ())
        space._chain = {i: tuple(chain) for i, chain in chains.items()}
        space._usage = dict(usage)
        space._buildkit = set(held_by_cache)
        space._cache_holds = bool(space._buildkit)
        return space

    def total(self) -> int:
        """What deleting every image would free, counted as ``count`` would count it: each
        snapshot once, and each image's own content but what the build cache holds."""
        with self._lock:
            self._prepare()
            snapshots = sum(self._usage.get(layer, 0) for layer in self._holders)
            held = self._buildkit if self._cache_holds else set()
            return snapshots + sum(self._own_content(i) for i in self._chain if i not in held)

    def cache_held(self) -> int:
        """The content of the images the build cache holds (``of``'s ``held_by_cache``):
        deleting them leaves it; the build cache's prune frees it."""
        with self._lock:
            self._prepare()
            held = self._buildkit if self._cache_holds else set()
            return sum(self._own_content(i) for i in self._chain if i in held)

    def roots(self, candidates: Sequence[str]) -> list[str]:
        """Every image, the ones going first: which layers survive depends on them all."""
        if not self.deleting:
            return []
        rest = sorted(set(self.snapshot.images) - self.deleting)
        return sorted(self.deleting) + rest

    def fetch(self, engine: Engine, image_id: str) -> None:
        """Read an image's chain, and for one that goes, its layers' snapshot sizes."""
        try:
            inspect = engine.inspect(image_id)
            layers = [str(layer) for layer in (inspect.get("RootFS") or {}).get("Layers") or ()]
            sizes, buildkit = None, False
            if image_id in self.deleting:
                history = list(engine.history(image_id) or ())
                sizes = snapshot_sizes(history, len(layers))
                buildkit = any(step.get("Comment") == BUILDKIT_STEP for step in history)
        except (Gone, EngineError, AttributeError, TypeError, ValueError):
            return  # gone meanwhile, refused or malformed: it holds nothing we can see
        chain = tuple(chain_ids(layers))
        with self._lock:
            self._chain[image_id] = chain
            if sizes is not None:
                for chain_id, size in zip(chain, sizes, strict=True):
                    self._usage[chain_id] = size
            if buildkit:
                self._buildkit.add(image_id)
        if buildkit:
            self._read_cache(engine)

    def _read_cache(self, engine: Engine) -> None:
        """Once, before the first deletion (the reads all come first): whether the build
        cache holds records that images share. Unreadable: it is taken to hold them, so that
        no byte is counted freed that may stay (and none is counted twice with the cache's
        own prune).

        Asked on ``engine``, the connection this read runs on: another connection may have
        a request in flight on another thread (one connection answering two threads at once
        left a prune waiting for an answer that never came). A dry run's simulation lists no
        build cache: then ``cache``, which it reads on this one thread."""
        with self._lock:
            if self._cache_holds is not None:
                return
            self._cache_holds = True
        lists = callable(getattr(type(engine), "disk_usage", None))
        cache = cast(BuildCache, engine) if lists else self._cache
        holds = shares(cache) if cache is not None else None
        with self._lock:
            self._cache_holds = True if holds is None else holds

    def count(self, records: Sequence[Record]) -> int:
        """The bytes freed by the targets ``records`` say are deleted."""
        gone = [r["Deleted"] for r in records if r.get("Deleted") in self.snapshot.images]
        if not gone:
            return 0
        with self._lock:
            self._prepare()
            total = 0
            for image_id in gone:
                if image_id in self._present:
                    self._present.discard(image_id)
                    total += self._freed(image_id)
            return total

    def _prepare(self) -> None:
        """Once all is read: who holds each layer, and which image each image extends."""
        if self._ready:
            return
        self._ready = True
        by_chain: dict[tuple[str, ...], list[str]] = {}
        for image_id in sorted(self.snapshot.images):
            chain = self._chain.get(image_id, ())
            by_chain.setdefault(chain, []).append(image_id)
            for chain_id in chain:
                self._holders[chain_id] = self._holders.get(chain_id, 0) + 1
                self._containing.setdefault(chain_id, []).append(image_id)
        for image_id, chain in self._chain.items():
            for k in range(len(chain), 0, -1):
                group = by_chain.get(chain[:k], [])
                if k == len(chain):  # an equal chain: the one with the next smaller ID
                    group = [g for g in group if g < image_id]
                if group:
                    self._base[image_id] = group[-1]
                    break

    def _freed(self, image_id: str) -> int:
        chain = self._chain.get(image_id)
        if chain is None:
            return 0  # never read: nothing to go by
        freed = 0
        for chain_id in chain:
            self._holders[chain_id] -= 1
            if self._holders[chain_id] == 0 and chain_id not in self._counted:
                self._counted.add(chain_id)
                self.parts["snapshots"] += self._usage.get(chain_id, 0)
                freed += self._usage.get(chain_id, 0)
        # Content: this image's own, and that of the images it extended that went before.
        owner: str | None = image_id
        while owner is not None and owner not in self._present:
            if owner not in self._counted and not self._held(owner):
                self._counted.add(owner)
                own = self._own_content(owner)
                if owner in self._buildkit and self._cache_holds:
                    self.held += own  # the build cache keeps it: its prune frees it
                else:
                    self.parts["content"] += own
                    freed += own
            owner = self._base.get(owner)
        return freed

    def _held(self, image_id: str) -> bool:
        """Whether an image still present holds ``image_id``'s layers: its chain extends
        that chain (an equal chain counts for the one with the larger ID)."""
        chain = self._chain.get(image_id, ())
        if not chain:
            return False
        return any(
            other in self._present
            and other != image_id
            and (len(self._chain[other]) > len(chain) or other > image_id)
            for other in self._containing.get(chain[-1], ())
        )

    def _content(self, image_id: str) -> int:
        known = self._contents.get(image_id)
        if known is None:  # read once all is read: it never changes after
            image = self.snapshot.images[image_id]
            unpacked = sum(self._usage.get(c, 0) for c in self._chain.get(image_id, ()))
            known = self._contents[image_id] = max(0, image.size - unpacked)
        return known

    def _own_content(self, image_id: str) -> int:
        base = self._base.get(image_id)
        own = self._content(image_id) - (self._content(base) if base is not None else 0)
        return max(0, own)


def shares(cache: BuildCache) -> bool | None:
    """Whether BuildKit's build cache holds records that images share (its ``Shared``):
    then it holds what BuildKit built of them, which deleting them leaves. None where the
    cache cannot be listed: each caller says what that means for its count."""
    try:
        records = cache.disk_usage("build-cache").get("BuildCache") or ()
        return any(bool(record.get("Shared")) for record in records)
    except (Gone, Conflict, EngineError, AttributeError, TypeError, ValueError):
        return None


def snapshot_sizes(history: Sequence[Mapping[str, Any]], layers: int) -> list[int]:
    """Each layer's snapshot size, oldest first, from ``history`` (newest first), whose
    steps give their snapshot's size on this store, and 0 for steps that made no layer
    (a step that made an empty layer is 0 too: where the counts differ, the zeros are
    interchangeable). Zeros where the history does not fit the layers."""
    sizes = [int(step.get("Size") or 0) for step in reversed(list(history))]
    while len(sizes) > layers and 0 in sizes:
        sizes.remove(0)
    return sizes if len(sizes) == layers else [0] * layers
