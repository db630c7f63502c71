"""What the budget's plan needs from the engine: each image's layers with their sizes, and
the evidence of when each image was last used.

One inspect per image (its layers, ``Created``, ``Metadata.LastTagTime``), on a few
connections at once; a history where a layer's size cannot be told from the list (a
parentless image of several layers; on the containerd store every image, whose history
gives each snapshot's size); the containers' list (``Created``); and the engine's event
log, for containers created or started and removed since (``docker run --rm``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from pytest_imageprune.budget.plan import NO_EVIDENCE, Inventory, Use
from pytest_imageprune.budget.record import EVIDENCE, shown
from pytest_imageprune.engine.api import Engine, EngineError, Gone
from pytest_imageprune.engine.store import CONTAINERD
from pytest_imageprune.images.containerd_space import (
    BUILDKIT_STEP,
    BuildCache,
    shares,
    snapshot_sizes,
)
from pytest_imageprune.images.space import chain_ids, layer_sizes
from pytest_imageprune.model.filters import engine_time
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Snapshot

#: Connections at once for the reads (as the prune's deletions: ``delete``).
READERS = 8


def upper_bound(snapshot: Snapshot) -> int:
    """At least what the images take, from the list alone, where an image holds its
    parent's layers and adds its own (the classic store, Podman): a parentless image's
    whole ``Size``, and what each other adds to its parent."""
    total = 0
    for image in snapshot.images.values():
        parent = snapshot.images.get(image.parent or "")
        total += max(0, image.size - (parent.size if parent is not None else 0))
    return total


@dataclasses.dataclass(frozen=True)
class _Read:
    layers: tuple[str, ...] = ()
    created_ns: int | None = None
    tagged_ns: int | None = None
    #: Each layer's size where the history was read with it (the containerd store).
    sizes: tuple[int, ...] | None = None
    #: A step of its history says BuildKit made it (the containerd store).
    buildkit: bool = False


def gather(
    engine: Engine,
    snapshot: Snapshot,
    store: str,
    *,
    known_layers: Mapping[str, Mapping[str, int]] | None = None,
    errors: list[dict[str, str]] | None = None,
    recorded: Mapping[str, int] | None = None,
) -> Inventory:
    """The inventory of ``snapshot``'s images: an image gone meanwhile is left out; one
    whose layers could not be read holds no bytes the plan can count (``errors`` says so).
    ``known_layers`` are layers the session read ahead, by image ID; ``recorded``, the
    latest uses the plugin's record shows (``record.recorded``)."""
    unread: set[str] = set()
    read = _reader(store == CONTAINERD, unread, errors)

    # The event log is asked up to the second after the engine's now (its Date is whole
    # seconds: what happened in the last one is only in a log asked past it), which takes
    # up to a second: on a connection of its own, while the layers are read.
    log: list[Mapping[str, Any]] = []
    spawned = engine.spawn(2)
    watcher = spawned[-1] if len(spawned) > 1 else None
    reader = None
    if watcher is not None:
        reader = threading.Thread(
            target=lambda: log.extend(_events(watcher)), name="imageprune-events", daemon=True
        )
        reader.start()
    try:
        found = _each(engine, sorted(snapshot.images), read)
    finally:
        if reader is not None and watcher is not None:
            reader.join()
            watcher.close()
    gone = [i for i, r in found.items() if r is None]
    if gone:
        images = {i: image for i, image in snapshot.images.items() if i not in gone}
        snapshot = dataclasses.replace(snapshot, images=images)
    reads = {i: r for i, r in found.items() if r is not None}
    chains = {i: r.layers for i, r in reads.items()}
    sizes: dict[str, int] = {}
    if store == CONTAINERD:
        for r in reads.values():
            sizes.update(zip(r.layers, r.sizes or (), strict=False))
    else:
        for layers in (known_layers or {}).values():
            sizes.update(layers)
        sizes.update(_classic_sizes(engine, snapshot, chains, sizes, errors))
    times = {i: (r.created_ns, r.tagged_ns) for i, r in reads.items()}
    events = log if watcher is not None else _events(engine)
    uses = last_uses(snapshot, times, events, recorded)
    built = _built_by_buildkit(engine, snapshot, reads, store == CONTAINERD)
    held = built if built and _cache_holds(engine) else frozenset()
    return Inventory(snapshot, store, chains, sizes, uses, frozenset(unread), held)


def _reader(
    containerd: bool, unread: set[str], errors: list[dict[str, str]] | None
) -> Callable[[Engine, str], _Read | None]:
    """How one image is read: its inspect (and on the containerd store its history); None
    for one gone meanwhile; one that cannot be read goes into ``unread``."""

    def read(engine: Engine, image_id: str) -> _Read | None:
        try:
            data = engine.inspect(image_id)
            layers = [str(x) for x in (data.get("RootFS") or {}).get("Layers") or ()]
            sizes, buildkit = None, False
            if containerd:
                history = list(engine.history(image_id) or ())
                sizes = tuple(snapshot_sizes(history, len(layers)))
                buildkit = any(step.get("Comment") == BUILDKIT_STEP for step in history)
        except Gone:
            return None
        except (EngineError, AttributeError, TypeError, ValueError) as exc:
            if errors is not None:
                errors.append({"Id": image_id, "error": f"could not read its layers: {exc}"})
            unread.add(image_id)  # never evicted: what it frees, and its last use, unknown
            return _Read()
        metadata = data.get("Metadata")
        tagged = metadata.get("LastTagTime") if isinstance(metadata, Mapping) else None
        return _Read(
            tuple(chain_ids(layers)),
            engine_time(data.get("Created")),
            engine_time(tagged),
            sizes,
            buildkit,
        )

    return read


def _built_by_buildkit(
    engine: Engine, snapshot: Snapshot, reads: Mapping[str, _Read], containerd: bool
) -> frozenset[str]:
    """The images a step of whose history says BuildKit made it. On the classic store only
    an image without a parent can be one (the classic builder links its steps): their
    histories are read here, on a few connections at once."""
    if containerd:
        return frozenset(i for i, r in reads.items() if r.buildkit)

    def steps(engine: Engine, image_id: str) -> bool:
        try:
            history = engine.history(image_id) or ()
            return any(step.get("Comment") == BUILDKIT_STEP for step in history)
        except (Gone, EngineError, AttributeError, TypeError, ValueError):
            return False  # its layers then count as freed, as they would without BuildKit

    parentless = [i for i, r in reads.items() if r.layers and not snapshot.images[i].parent]
    return frozenset(i for i, made in _each(engine, parentless, steps).items() if made)


def _cache_holds(engine: Engine) -> bool:
    """Whether the build cache holds what BuildKit built (``containerd_space.shares``).
    Where it cannot be read, taken not to: the budget then counts that content as freed,
    and evicts no more than that count needs."""
    disk_usage = getattr(engine, "disk_usage", None)
    return callable(disk_usage) and bool(shares(cast(BuildCache, engine)))


def _classic_sizes(
    engine: Engine,
    snapshot: Snapshot,
    chains: Mapping[str, tuple[str, ...]],
    known: Mapping[str, int],
    errors: list[dict[str, str]] | None,
) -> dict[str, int]:
    """Each layer's ``DiffSize``: what an image adds to its parent where it adds one layer
    (the classic builder); else from its history (``delete.layer_sizes``)."""
    sizes = dict(known)
    wanted: list[str] = []
    for image in snapshot.images.values():
        chain = chains.get(image.id, ())
        parent = snapshot.images.get(image.parent or "")
        below = set(chains.get(parent.id, ())) if parent is not None else set()
        new = [layer for layer in chain if layer not in below and layer not in sizes]
        if not new:
            continue
        if parent is not None and len(new) == 1 and len(chain) == len(below) + 1:
            sizes[new[0]] = max(0, image.size - parent.size)
        else:
            wanted.append(image.id)

    def history(engine: Engine, image_id: str) -> dict[str, int] | None:
        image, chain = snapshot.images[image_id], chains[image_id]
        try:
            # The diff IDs' count is what the history must match: the chain has as many.
            told = layer_sizes(engine, image_id, chain, image.size)
        except Gone:
            return None
        except (EngineError, AttributeError, TypeError, ValueError) as exc:
            if errors is not None:
                errors.append({"Id": image_id, "error": f"could not read its history: {exc}"})
            return None
        return dict(zip(chain, told, strict=True))

    for layers in _each(engine, wanted, history).values():
        for layer, size in (layers or {}).items():
            sizes.setdefault(layer, size)
    return sizes


def last_uses(
    snapshot: Snapshot,
    times: Mapping[str, tuple[int | None, int | None]],
    events: Sequence[Mapping[str, Any]] = (),
    recorded: Mapping[str, int] | None = None,
) -> dict[str, Use]:
    """Each image's last use: the latest of a container created from it (the list, stopped
    ones too; the engine's events, for one removed since; the plugin's own record of what
    containers used, ``record``), its last tag or arrival (``Metadata.LastTagTime``) and
    its ``Created``. ``times`` holds each image's ``(Created, LastTagTime)`` in ns."""
    best: dict[str, Use] = {}

    def offer(image_id: str, use: Use) -> None:
        if use.ns > best.get(image_id, NO_EVIDENCE).ns:
            best[image_id] = use

    for image_id, ns, evidence in shown(snapshot, events):
        offer(image_id, Use(ns, evidence))
    for image_id, ns in (recorded or {}).items():
        if image_id in snapshot.images:
            offer(image_id, Use(ns, EVIDENCE))
    for image_id, (created, tagged) in times.items():
        if tagged is not None:
            offer(image_id, Use(tagged, "tagged or arrived (Metadata.LastTagTime)"))
        if created is not None:
            offer(image_id, Use(created, "created (the image's Created)"))
    for image in snapshot.images.values():
        if image.id not in times and image.created_s > 0:
            offer(image.id, Use(image.created_s * NANOS, "created (the image's Created)"))
    return best


def _events(engine: Engine) -> list[Mapping[str, Any]]:
    """The engine's event log, as far back as it reaches, up to a second after the engine's
    now (asked first, so that the log answers within a second whatever this host's clock
    says); none where the engine keeps none."""
    events = getattr(engine, "events", None)
    exchange = getattr(engine, "exchange", None)
    if events is None or exchange is None:
        return []
    try:
        _, now = exchange("GET", "/version")
        if now is None:
            return []
        return list(events(NANOS, now + NANOS) or ())
    except Exception:  # evidence that helps; never a failure
        return []


def _each(engine: Engine, ids: Sequence[str], read: Callable[[Engine, str], Any]) -> dict[str, Any]:
    """``read(engine, id)`` for each of ``ids``, on a few connections at once."""
    if not ids:
        return {}
    engines = engine.spawn(min(READERS, len(ids)))
    try:
        if len(engines) == 1:
            return {i: read(engine, i) for i in ids}
        chunks = [ids[n :: len(engines)] for n in range(len(engines))]
        with ThreadPoolExecutor(len(engines), thread_name_prefix="imageprune-budget") as pool:
            parts = pool.map(
                lambda pair: {i: read(pair[0], i) for i in pair[1]},
                zip(engines, chunks, strict=True),
            )
            return {k: v for part in parts for k, v in part.items()}
    finally:
        for other in engines[1:]:
            other.close()
