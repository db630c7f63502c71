"""``SpaceReclaimed`` on Docker's classic store (and Podman's whole images): what a deletion
frees, counted from its answer as the daemon counts it (R19), and the layer reads that
needs, before the deletions (``SpaceCounter.roots``, ``fetch``), while the tests run
(``read_ahead``) or from the look at an image's names right before its deletion
(``SpaceCounter.reads_at_look``, ``take``: ``images.delete``). The containerd store's count
is ``images.containerd_space``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_imageprune.engine.api import Engine, EngineError, Gone, Record
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.model.images import Snapshot


class SpaceCounter:
    """``SpaceReclaimed`` from the delete records, as the daemon counts it (R19).

    The daemon sums the ``DiffSize`` of the layers it released; a delete answer lists each
    image's ``Deleted`` record followed by the chain IDs of the layers released with it. An
    image with a parent adds ``Size - parent's Size`` (the classic builder commits one layer
    per step). An image without a parent may share lower layers with others (pulled or
    BuildKit images): its per-layer sizes come from ``history`` and its chain IDs from
    ``RootFS.Layers``, read before it is deleted.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        estimate: bool = False,
        whole: bool = False,
        known: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self.snapshot = snapshot
        #: Layers read before (``read_ahead``), by root image ID.
        self.known = known or {}
        #: Records that name images but no layers (a dry run, Podman): each deleted image
        #: then counts the bytes it adds to its parent, an upper bound (a shared layer
        #: stays); or, with ``whole``, its whole ``Size``, as Podman's own prune counts.
        self.estimate = estimate
        self.whole = whole
        #: Each layer's ``DiffSize``, by chain ID (content-addressed: the same in any image).
        self.layer_sizes: dict[str, int] = {}
        for layers in self.known.values():
            self.layer_sizes.update(layers)
        self._fetched: set[str] = set()
        #: Candidates whose layers the look at their names reads (``reads_at_look``).
        self._at_look: set[str] = set()

    def roots(self, candidates: Sequence[str], *, at_look: bool = True) -> list[str]:
        """The parentless roots whose layers deleting ``candidates`` may release, in order,
        to read before the first deletion: with ``at_look``, all but those read at the look
        (while the tests run, ``read_ahead`` reads those too: a prune that knows them
        sends no history between a look and a deletion)."""
        roots: dict[str, None] = {}
        for image_id in candidates:
            root = self._root(image_id)
            if root is None or root in self.known:
                continue
            if at_look and root == image_id and self._alone(root):
                self._at_look.add(root)
            else:
                roots[root] = None
        return list(roots)

    def _alone(self, image_id: str) -> bool:
        """Untagged, with neither parent nor child: only its own deletion, by ID and so
        after a look at its names (``GET /images/{id}/json``, which lists its layers too),
        can release its layers (no cascade reaches it)."""
        image = self.snapshot.images[image_id]
        return not image.refs and image.parent is None and self.snapshot.is_head(image_id)

    def reads_at_look(self, image_id: str) -> bool:
        """Whether ``image_id``'s layers are to be read from the look at its names."""
        return image_id in self._at_look and image_id not in self._fetched

    def take(self, engine: Engine, image_id: str, inspect: Mapping[str, Any]) -> bool:
        """The layers of ``image_id`` (one of those ``reads_at_look``) from its inspect, with
        its history if it has several; whether that history was asked for. A layer already
        read keeps its size (content-addressed: the same in any image; a history that does
        not match its layers gives the image's whole size to its bottom one)."""
        self._fetched.add(image_id)
        layers = layers_of(engine, image_id, inspect, self.snapshot.images[image_id].size)
        for chain_id, size in (layers or {}).items():
            self.layer_sizes.setdefault(chain_id, size)
        return len(inspect.get("RootFS", {}).get("Layers") or ()) > 1

    def _root(self, image_id: str) -> str | None:
        if self.estimate:
            return None
        root = self.snapshot.root(image_id)
        if root.parent is not None or root.size <= 0:
            return None
        if root.id != image_id and root.refs:
            return None  # a tagged root stays: the cascade stops below it
        return root.id

    def fetch(self, engine: Engine, root: str) -> None:
        """Before any deletion: the layer sizes of ``root`` (one of ``roots``), unless they
        are ``known`` or read already."""
        if root in self._fetched:
            return
        self._fetched.add(root)
        layers = self.known.get(root)
        if layers is None:
            layers = read_layers(engine, root, self.snapshot.images[root].size)
        if layers is not None:
            self.layer_sizes.update(layers)

    def count(self, records: Sequence[Record]) -> int:
        """The bytes the layer records in ``records`` free."""
        if self.estimate:
            images = [r["Deleted"] for r in records if r.get("Deleted") in self.snapshot.images]
            if self.whole:
                return sum(self.snapshot.images[i].size for i in images)
            return sum(self._added(i) for i in images)
        total = 0
        current: str | None = None
        counted = False
        for record in records:
            deleted = record.get("Deleted")
            if deleted is None:
                continue
            if deleted in self.snapshot.images:
                current, counted = deleted, False
                continue
            if deleted in self.layer_sizes:
                total += self.layer_sizes[deleted]
            elif current is not None and not counted:
                total += self._added(current)
                counted = True
        return total

    def _added(self, image_id: str) -> int:
        """What an image adds to its parent: ``Size - parent's Size``."""
        image = self.snapshot.images.get(image_id)
        if image is None:
            return 0
        parent = self.snapshot.images.get(image.parent or "")
        return image.size - (parent.size if parent is not None else 0)


def read_layers(engine: Engine, image_id: str, size: int) -> dict[str, int] | None:
    """An image's layers, by chain ID, with their ``DiffSize``s; None if it cannot be read.

    An image ID names its config, so the answer never changes: it may be read ahead.
    """
    try:
        inspect = engine.inspect(image_id)
    except (Gone, EngineError):
        return None  # gone meanwhile, or refused: the deletion meets it too, and reports it
    return layers_of(engine, image_id, inspect, size)


def layers_of(
    engine: Engine, image_id: str, inspect: Mapping[str, Any], size: int
) -> dict[str, int] | None:
    """The layers ``inspect`` (an image's ``GET /images/{id}/json``) lists, by chain ID, with
    their ``DiffSize``s (its history read if it has several); None if they cannot be read."""
    try:
        layers = inspect.get("RootFS", {}).get("Layers") or []
        sizes = layer_sizes(engine, image_id, layers, size)
    except (Gone, EngineError):
        return None
    return dict(zip(chain_ids(layers), sizes, strict=True))


def read_ahead(
    engine: Engine,
    snapshot: Snapshot,
    candidates: Sequence[str],
    into: dict[str, dict[str, int]],
    stop: threading.Event,
) -> None:
    """Read the layers that deleting ``candidates`` may release into ``into``, by root,
    until done or ``stop``: a prune given them as ``known`` need not read them again."""
    for root in SpaceCounter(snapshot).roots(candidates, at_look=False):
        if stop.is_set():
            return
        try:
            layers = read_layers(engine, root, snapshot.images[root].size)
        except EngineUnavailable:
            return  # the prune finds out for itself
        except Exception:  # a malformed answer: the prune reads it again, and says so
            continue
        if layers is not None:
            into[root] = layers


def layer_sizes(engine: Engine, image_id: str, layers: Sequence[str], size: int) -> list[int]:
    """Each layer's ``DiffSize``, oldest first."""
    if len(layers) <= 1:
        return [size] * len(layers)
    # History lists every step, newest first, with the layer's DiffSize for the steps that
    # made a layer and 0 for the others; a step that made an empty layer is 0 too, so where
    # the counts differ the zeros are interchangeable.
    sizes = [int(h.get("Size") or 0) for h in reversed(engine.history(image_id))]
    while len(sizes) > len(layers) and 0 in sizes:
        sizes.remove(0)
    if len(sizes) != len(layers):
        return [size] + [0] * (len(layers) - 1)
    return sizes


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The layer store's chain IDs for a list of diff IDs (image-spec ChainID)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            digest = hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
            chain.append(f"sha256:{digest}")
    return chain
