"""What the budget evicts, decided purely: the least recently used unused images until the
engine's images fit, and what holds the rest.

An *eviction* is what ``docker rmi`` of all an image's names does. On the classic store
(and Podman) the units are the images with a name and the untagged heads; an untagged
parent goes with its last child (the daemon's cascade), and a tagged parent with children
only loses its names until they go. On Docker's containerd store every image goes on its
own (no cascade). The bytes an eviction frees are counted as the engine frees them: a
layer when the last image holding it goes (``_Layers``); on the containerd store, content
and snapshots as ``SpaceReclaimed`` counts them (``containerd_space.ContainerdSpace``).

Never evicted (``Decision.held`` says why and how many bytes each reason holds): an image a
container uses, stopped or not; one a live session may need (the protection rule 5 of
``coordination.protocol``), or the ``pytest_imageprune_protect`` hook keeps; one with a
name a keep pattern finds; and the parents of all these (untagged or not: deleting a
parent's name frees nothing while a child holds its layers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_imageprune.engine.store import CONTAINERD
from pytest_imageprune.images.containerd import records_of
from pytest_imageprune.images.containerd_space import ContainerdSpace
from pytest_imageprune.model.images import Image, Snapshot, full_id, normalize_reference
from pytest_imageprune.model.outcome import is_live

#: Why an image holds its bytes, by kind: the words of the summary's "held by" list.
IN_USE = "used by containers"
LIVE = "a live session may need them"
PATTERN = "matching --prune-images-keep"
HOOK = "protected by a hook"
DIGEST_ONLY = "named by digest only (the API cannot tell their records apart)"
UNREAD = "whose layers could not be read (what they would free is unknown)"
BUILD_CACHE = "whose layers the build cache holds (evicting them frees nothing)"
#: The order the kinds are told in, and in which their bytes are counted when several hold
#: one layer: the first kind holding it is charged.
KINDS = (IN_USE, LIVE, PATTERN, HOOK, DIGEST_ONLY, UNREAD, BUILD_CACHE)


@dataclass(frozen=True)
class Use:
    """When an image was last used, as far as the engine shows, and what shows it."""

    ns: int
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return {"last_use_ns": self.ns or None, "evidence": self.evidence}


#: An image nothing dates: it counts as used before any other.
NO_EVIDENCE = Use(0, "no evidence of use (no container, no tag or creation time)")


@dataclass(frozen=True)
class Inventory:
    """What the engine holds, as the plan needs it."""

    snapshot: Snapshot
    #: The image store's kind (``engine.store``): ``containerd`` has no cascade.
    store: str
    #: Each image's layers by chain ID, oldest first (inspect's ``RootFS.Layers``).
    chains: Mapping[str, tuple[str, ...]]
    #: Each layer's bytes, by chain ID (``DiffSize``; a snapshot's size on the
    #: containerd store).
    layer_sizes: Mapping[str, int]
    #: Each image's own last use (``gather.last_uses``); a parent's is its children's too.
    uses: Mapping[str, Use] = field(default_factory=dict)
    #: The images whose layers could not be read: never evicted (what they free, and
    #: whether a session left them, is unknown).
    unread: frozenset[str] = frozenset()
    #: The images BuildKit built while its build cache holds what it built: on the
    #: containerd store deleting one frees its snapshots only (its content stays); on the
    #: classic store nothing (its layers stay, as the cache's records).
    held_by_cache: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Hold:
    """Why an image is never evicted: ``kind`` (one of ``KINDS``) and the words."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Eviction:
    """One image the budget evicts, in order: the bytes it frees then, and its last use."""

    image: str
    names: tuple[str, ...]
    size: int
    use: Use

    def to_dict(self) -> dict[str, Any]:
        return {
            "Id": self.image,
            "names": list(self.names),
            "size": self.size,
            **self.use.to_dict(),
        }


@dataclass(frozen=True)
class Holding:
    """What one kind of hold keeps: how many images, and the bytes only they keep."""

    kind: str
    images: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.kind, "images": self.images, "size": self.size}


@dataclass(frozen=True)
class Decision:
    """What goes, in order, and what the images take before and after."""

    budget: int
    total: int
    evictions: tuple[Eviction, ...] = ()
    #: Why each image that holds bytes stays (the evictable ones left once the images fit
    #: are not in it).
    held: Mapping[str, Hold] = field(default_factory=dict)
    #: When the budget cannot be met: what each kind of hold keeps of the rest.
    holdings: tuple[Holding, ...] = ()

    @property
    def after(self) -> int:
        return self.total - sum(e.size for e in self.evictions)

    @property
    def shortfall(self) -> int:
        """How far the images stay over the budget once every eviction is done."""
        return max(0, self.after - self.budget)


KeepRule = Callable[[Image], "str | None"]


def decide(
    inventory: Inventory,
    budget: int,
    *,
    patterns: Sequence[re.Pattern[str]] = (),
    keep: KeepRule | None = None,
) -> Decision:
    """Evict the least recently used unused images of ``inventory`` until they take at
    most ``budget`` bytes. ``keep`` (the live sessions' rule, the hook) keeps an image when
    it gives a reason; ``patterns`` keep an image with a name one of them finds."""
    snapshot = inventory.snapshot
    cascade = inventory.store != CONTAINERD
    cached = inventory.held_by_cache if cascade else ()  # the containerd store frees some
    held = _held(snapshot, patterns, keep, cascade=cascade, unread=inventory.unread, cached=cached)
    space = _space(inventory, held)
    total = space.total()
    if total <= budget:
        return Decision(budget, total, held=held)
    depth = _depths(snapshot)
    uses = _effective_uses(snapshot, inventory.uses, depth)
    units = [
        image
        for image in snapshot.images.values()
        if image.id not in held and (not cascade or image.refs or snapshot.is_head(image.id))
    ]
    # Least recently used first; a child before its parent (a parent is never used later
    # than its children); then by ID, so that the order is the same every time.
    units.sort(key=lambda i: (uses.get(i.id, NO_EVIDENCE).ns, -depth.get(i.id, 0), i.id))
    left = total
    evictions: list[Eviction] = []
    for image in units:
        if left <= budget:
            break
        freed = space.evict(image.id)
        left -= freed
        use = uses.get(image.id, NO_EVIDENCE)
        evictions.append(Eviction(image.id, image.tags or image.digests, freed, use))
    decision = Decision(budget, total, tuple(evictions), held)
    if decision.shortfall:
        decision = Decision(
            budget, total, tuple(evictions), held, _holdings(inventory, evictions, held)
        )
    return decision


# -- what is held, and why --------------------------------------------------------------------
def _held(
    snapshot: Snapshot,
    patterns: Sequence[re.Pattern[str]],
    keep: KeepRule | None,
    *,
    cascade: bool,
    unread: Iterable[str] = (),
    cached: Iterable[str] = (),
) -> dict[str, Hold]:
    held: dict[str, Hold] = {}
    for image_id in unread:
        if image_id in snapshot.images:
            held[image_id] = Hold(UNREAD, "its layers could not be read")
    for image_id in cached:  # the classic store: the layers stay with BuildKit's records
        if image_id in snapshot.images and image_id not in held:
            held[image_id] = Hold(
                BUILD_CACHE, "BuildKit built it, and its build cache holds its layers"
            )
    for container in snapshot.containers:
        used = full_id(container.image_id) if container.image_id else ""
        if used in snapshot.images and held.get(used, Hold("", "")).kind != IN_USE:
            state = "running" if container.running else "stopped"
            held[used] = Hold(IN_USE, f"used by container {container.id[:12]} ({state})")
    for image in snapshot.images.values():
        if image.id in held:
            continue
        hold = _hold_of(image, patterns, keep, cascade=cascade)
        if hold is not None:
            held[image.id] = hold
    direct = dict(held)
    # A parent's layers are its children's: deleting its names frees nothing while a kept
    # child holds them (on the containerd store, where the list shows parents, the same).
    for image_id, hold in list(held.items()):
        for parent in snapshot.ancestors(image_id):
            if parent.id in held:
                break  # its ancestors are held already
            held[parent.id] = Hold(hold.kind, f"parent of {_short(image_id)}: {hold.reason}")
    if cascade:
        # The daemon's cascade takes an untagged parent along with its last child: a held
        # one (but one a container uses, which the daemon refuses) holds its descendants.
        # (One held as a kept image's parent keeps that child, so it is never the last.)
        for image_id, hold in direct.items():
            if hold.kind == IN_USE or snapshot.images[image_id].refs:
                continue
            below = list(snapshot.children.get(image_id, ()))
            while below:
                child = below.pop()
                if child in held or child not in snapshot.images:
                    continue
                held[child] = Hold(
                    hold.kind,
                    f"its eviction would take along its untagged parent {_short(image_id)}:"
                    f" {hold.reason}",
                )
                below.extend(snapshot.children.get(child, ()))
    return held


def _forms(name: str) -> list[str]:
    """A name fully spelled (``docker.io/library/busybox:latest``) and as Docker shows it
    (``busybox:latest``): Podman lists the first, Docker the second, a pattern may be
    written for either."""
    try:
        full = normalize_reference(name)
    except ValueError:
        return [name]
    short = full.removeprefix("docker.io/")
    return [full, short, short.removeprefix("library/")]


def _hold_of(
    image: Image,
    patterns: Sequence[re.Pattern[str]],
    keep: KeepRule | None,
    *,
    cascade: bool,
) -> Hold | None:
    # Its tags, then its digests (``repo@sha256:...``): an image pulled by digest alone has
    # only those, and a pattern may pin one.
    for name in (*image.tags, *image.digests) if patterns else ():
        forms: list[str] | None = None
        for pattern in patterns:
            if pattern.search(name) is None:
                forms = forms or _forms(name)
                if not any(pattern.search(form) for form in forms):
                    continue
            return Hold(PATTERN, f"{name} matches --prune-images-keep {pattern.pattern!r}")
    if keep is not None:
        why = keep(image)
        if why:
            return Hold(LIVE if is_live(why) else HOOK, str(why))
    if not cascade and records_of(image) is None:
        return Hold(DIGEST_ONLY, "named by digest only: its records cannot be told from the API")
    return None


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


# -- last use ---------------------------------------------------------------------------------
def _effective_uses(
    snapshot: Snapshot, uses: Mapping[str, Use], depth: Mapping[str, int]
) -> dict[str, Use]:
    """Each image's last use, a parent's the latest of its own and its children's: a child
    used is its parent's layers used (where the list shows parents)."""
    effective = {i: uses.get(i, NO_EVIDENCE) for i in snapshot.images}
    for image_id in sorted(snapshot.images, key=lambda i: -depth[i]):
        use = effective[image_id]
        parent = snapshot.images[image_id].parent
        if parent is not None and parent in effective and use.ns > effective[parent].ns:
            effective[parent] = Use(use.ns, f"{use.evidence}, of its child {_short(image_id)}")
    return effective


def _depths(snapshot: Snapshot) -> dict[str, int]:
    """How many ancestors each image has in the list (a chain read once)."""
    depth: dict[str, int] = {}
    for image_id in snapshot.images:
        path = []
        current: str | None = image_id
        while current is not None and current in snapshot.images and current not in depth:
            path.append(current)
            current = snapshot.images[current].parent
            if len(path) > len(snapshot.images):  # a loop no engine makes: stop
                break
        below = depth.get(current, -1) if current is not None else -1
        for n, item in enumerate(reversed(path)):
            depth[item] = below + 1 + n
    return depth


# -- the bytes --------------------------------------------------------------------------------
class _Space(Protocol):
    def total(self) -> int: ...

    def evict(self, image_id: str) -> int: ...

    def remove(self, image_id: str) -> int: ...


def _space(inventory: Inventory, held: Iterable[str] = ()) -> _Space:
    if inventory.store == CONTAINERD:
        return _Containerd(inventory)
    return _Layers(inventory, held)


class _Layers:
    """The classic store's bytes: a layer is freed when the last image holding it goes;
    an eviction takes the image's names, the image if it has no children left, and the
    untagged parents left without children (the daemon's cascade)."""

    def __init__(self, inventory: Inventory, held: Iterable[str] = ()) -> None:
        self.snapshot = inventory.snapshot
        #: Never taken by the cascade: the daemon refuses one a container uses.
        self.held = frozenset(held)
        self.chains = inventory.chains
        self.sizes = inventory.layer_sizes
        self.holders: dict[str, int] = {}
        for chain in self.chains.values():
            for layer in chain:
                self.holders[layer] = self.holders.get(layer, 0) + 1
        self.present = set(self.snapshot.images)
        self.unnamed = {i.id for i in self.snapshot.images.values() if not i.refs}
        self.children = {p: len(c) for p, c in self.snapshot.children.items()}

    def total(self) -> int:
        return sum(self.sizes.get(layer, 0) for layer in self.holders)

    def evict(self, image_id: str) -> int:
        self.unnamed.add(image_id)
        freed = 0
        current: str | None = image_id
        while (
            current is not None
            and current in self.present
            and current in self.unnamed
            and not self.children.get(current)
            and (current == image_id or current not in self.held)
        ):
            freed += self.remove(current)
            current = self.snapshot.images[current].parent
        return freed

    def remove(self, image_id: str) -> int:
        """The image goes, whatever holds it: the bytes only it held."""
        if image_id not in self.present:
            return 0
        self.present.discard(image_id)
        parent = self.snapshot.images[image_id].parent
        if parent is not None and parent in self.children:
            self.children[parent] -= 1
        freed = 0
        for layer in self.chains.get(image_id, ()):
            self.holders[layer] -= 1
            if self.holders[layer] == 0:
                freed += self.sizes.get(layer, 0)
        return freed


class _Containerd:
    """The containerd store's bytes, as ``SpaceReclaimed`` counts them: every image goes
    on its own (no cascade)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.space = _containerd_space(inventory)

    def total(self) -> int:
        return self.space.total()

    def evict(self, image_id: str) -> int:
        return self.remove(image_id)

    def remove(self, image_id: str) -> int:
        return self.space.count([{"Deleted": image_id}])


def _containerd_space(inventory: Inventory) -> ContainerdSpace:
    return ContainerdSpace.of(
        inventory.snapshot,
        inventory.chains,
        inventory.layer_sizes,
        held_by_cache=inventory.held_by_cache,
    )


def cache_held(inventory: Inventory) -> int:
    """The images' content the build cache holds (the containerd store): deleting the
    images leaves it, so it is in no total and no eviction's size."""
    if inventory.store != CONTAINERD or not inventory.held_by_cache:
        return 0
    return _containerd_space(inventory).cache_held()


def _holdings(
    inventory: Inventory, evictions: Iterable[Eviction], held: Mapping[str, Hold]
) -> tuple[Holding, ...]:
    """The bytes left, by the kind of hold that keeps them: after the evictions, the held
    images are taken away kind by kind (children first), each charged what goes with it."""
    space = _space(inventory, held)
    for eviction in evictions:
        space.evict(eviction.image)
    depth = _depths(inventory.snapshot)
    order = {kind: n for n, kind in enumerate(KINDS)}
    by_kind: dict[str, list[str]] = {}
    for image_id, hold in held.items():
        by_kind.setdefault(hold.kind, []).append(image_id)
    holdings = []
    for kind in sorted(by_kind, key=lambda k: order.get(k, len(order))):
        ids = sorted(by_kind[kind], key=lambda i: (-depth[i], i))
        size = sum(space.remove(i) for i in ids)
        holdings.append(Holding(kind, len(ids), size))
    return tuple(holdings)
