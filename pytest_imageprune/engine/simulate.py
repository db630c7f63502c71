"""The daemon's ``ImageDelete`` (R14 to R16) replayed over a snapshot, deleting nothing.

A dry run sends its deletions here instead of to the engine, so it predicts the records a
real run would produce, the parent cascade included (image records only: which layers the
layer store would release is not predicted). The unit tests use it as the fake daemon.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_imageprune.engine.api import Conflict, Engine, Gone, Record, held
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import (
    Image,
    Snapshot,
    is_single_reference,
    normalize_reference,
    normalize_repository,
    split_reference,
)


class Parents(dict[str, "str | None"]):
    """Each image's parent, by image ID, and how many children each parent has (``has_children``
    in constant time: a dry run of N deletions asks it N times)."""

    def __init__(self, pairs: Iterable[tuple[str, str | None]] = ()) -> None:
        super().__init__()
        self._children: Counter[str] = Counter()
        for image_id, parent in pairs:
            self[image_id] = parent

    def has_children(self, image_id: str) -> bool:
        return self._children[image_id] > 0

    def __setitem__(self, image_id: str, parent: str | None) -> None:
        if image_id in self:
            self._forget(image_id)
        super().__setitem__(image_id, parent)
        if parent is not None:
            self._children[parent] += 1

    def __delitem__(self, image_id: str) -> None:
        self._forget(image_id)
        super().__delitem__(image_id)

    def pop(self, image_id: str, *default: str | None) -> str | None:  # type: ignore[override]
        if image_id in self:
            self._forget(image_id)
        return super().pop(image_id, *default)

    def _forget(self, image_id: str) -> None:
        parent = self[image_id]
        if parent is not None:
            self._children[parent] -= 1


class SimulatedEngine:
    """An ``Engine`` whose ``delete`` follows the classic store's rules on a private copy."""

    def __init__(self, snapshot: Snapshot, endpoint: str = "simulated") -> None:
        self.endpoint = endpoint
        self._snapshot = snapshot
        self.refs: dict[str, list[str]] = {i.id: list(i.refs) for i in snapshot.images.values()}
        self.parent = Parents((i.id, i.parent) for i in snapshot.images.values())
        self.containers = list(snapshot.containers)
        #: Which image each reference named when last looked (normalised): a guess that
        #: ``_resolve`` checks against ``refs``, which the tests change as other clients do.
        self._named: dict[str, str] = {}

    # -- Engine protocol -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        left = (_with_refs(self._snapshot.images[i], refs) for i, refs in self.refs.items())
        return Snapshot.of(left, self.containers, self._snapshot.taken_ns)

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        if image_id not in self.refs:
            raise Gone(f"No such image: {image_id}")
        image = self._snapshot.images[image_id]
        created_ns = image.created_s * NANOS if image.created_ns is None else image.created_ns
        secs, frac = divmod(created_ns, NANOS)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
        config = None if image.has_config is False else {"Labels": dict(image.labels or {})}
        tags, digests = self._names_now(image_id)  # as an engine's inspect lists them
        return {
            "Id": image.id,
            "Created": created,
            "Config": config,
            "RepoTags": list(tags),
            "RepoDigests": list(digests),
        }

    def look(self, image_id: str) -> Mapping[str, Any]:
        return SimulatedEngine.inspect(self, image_id)

    def _names_now(self, image_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if image_id not in self.refs:
            raise Gone(f"No such image: {image_id}")
        refs = self.refs[image_id]
        tags = tuple(r for r in refs if split_reference(r)[1] is not None)
        return tags, tuple(r for r in refs if r not in tags)

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        return ()

    def close(self) -> None:
        return None

    def spawn(self, count: int) -> list[Engine]:
        return [self]  # one private state: deletions replay one at a time

    def delete(self, target: str) -> list[Record]:
        image_id = self._resolve(target)
        records: list[Record] = []
        if target != image_id:
            return self._delete_reference(image_id, target, records)
        refs = self.refs[image_id]
        if is_single_reference(refs):
            conflict = self._conflict(image_id, references=False)
            if conflict:
                raise _refused(conflict)
            records.extend({"Untagged": ref} for ref in refs)
            refs.clear()
        self._delete_image(image_id, records, quiet=False)
        return records

    # -- the daemon's rules ----------------------------------------------------------------
    def _resolve(self, target: str) -> str:
        if target in self.refs:
            return target
        wanted = normalize_reference(target)
        guess = self._named.get(wanted)
        if guess is not None and self._names(guess, wanted):
            return guess
        # Not seen yet, or moved since: every name looked at again (once for a whole run).
        self._named = {}
        for image_id, refs in self.refs.items():
            for ref in refs:
                self._named.setdefault(normalize_reference(ref), image_id)
        guess = self._named.get(wanted)
        if guess is not None and self._names(guess, wanted):
            return guess
        raise Gone(f"No such image: {target}")

    def _names(self, image_id: str, wanted: str) -> bool:
        return any(normalize_reference(ref) == wanted for ref in self.refs.get(image_id, ()))

    def _delete_reference(self, image_id: str, target: str, records: list[Record]) -> list[Record]:
        refs = self.refs[image_id]
        if is_single_reference(refs):
            user = next((c for c in self.containers if c.image_id == image_id), None)
            if user is not None:
                raise _refused(
                    f'conflict: unable to remove repository reference "{target}" (must force)'
                    f" - container {user.id[:12]} is using its referenced image"
                    f" {_short(image_id)}"
                )
        wanted = normalize_reference(target)
        removed = next(ref for ref in refs if normalize_reference(ref) == wanted)
        refs.remove(removed)
        records.append({"Untagged": removed})
        name, tag, _ = split_reference(removed)
        repository = normalize_repository(name)
        same_repo = [r for r in refs if normalize_repository(split_reference(r)[0]) == repository]
        if tag is not None and not any(split_reference(r)[1] is not None for r in same_repo):
            for ref in same_repo:
                refs.remove(ref)
                records.append({"Untagged": ref})
        if refs:
            return records
        self._delete_image(image_id, records, quiet=True)
        return records

    def _delete_image(self, image_id: str, records: list[Record], *, quiet: bool) -> None:
        """``imageDeleteHelper`` with ``force=false``, ``prune=true``: then the cascade."""
        while True:
            conflict = self._conflict(image_id, references=True)
            if conflict:
                if quiet:
                    return
                raise _refused(conflict)
            records.extend({"Untagged": ref} for ref in self.refs.pop(image_id))
            records.append({"Deleted": image_id})
            parent = self.parent.pop(image_id)
            if parent is None or parent not in self.refs:
                return
            image_id, quiet = parent, True

    def _conflict(self, image_id: str, *, references: bool) -> str:
        """``checkImageDeleteConflict``, in the daemon's order; empty when none."""
        prefix = f"conflict: unable to delete {_short(image_id)}"
        if self.parent.has_children(image_id):
            return f"{prefix} (cannot be forced) - image has dependent child images"
        running = next((c for c in self.containers if c.image_id == image_id and c.running), None)
        if running is not None:
            return (
                f"{prefix} (cannot be forced) - image is being used by running container"
                f" {running.id[:12]}"
            )
        if references and self.refs[image_id]:
            return f"{prefix} (must be forced) - image is referenced in multiple repositories"
        stopped = next((c for c in self.containers if c.image_id == image_id), None)
        if stopped is not None:
            return (
                f"{prefix} (must be forced) - image is being used by stopped container"
                f" {stopped.id[:12]}"
            )
        return ""


def _refused(message: str) -> Conflict:
    """The daemon's 409, typed as the engine's boundary types it (``api.held``)."""
    return Conflict(message, in_use=held(message))


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _with_refs(image: Image, refs: list[str]) -> Image:
    tags = tuple(r for r in refs if split_reference(r)[1] is not None)
    digests = tuple(r for r in refs if split_reference(r)[1] is None)
    return dataclasses.replace(image, tags=tags, digests=digests)


class SimulatedContainerdEngine(SimulatedEngine):
    """The containerd store's deletes (``containerd.Plan``'s targets) on a private copy.

    ``reader``, if given, answers inspects and histories (they change nothing), so that a
    dry run counts the bytes as a real run would.
    """

    def __init__(
        self, snapshot: Snapshot, endpoint: str = "simulated", reader: Engine | None = None
    ) -> None:
        super().__init__(snapshot, endpoint)
        self.reader = reader
        # Names are the records; ``RepoDigests`` are only derived from them here.
        self.refs = {i.id: list(i.tags) for i in snapshot.images.values()}

    def snapshot(self) -> Snapshot:
        left = (
            dataclasses.replace(self._snapshot.images[i], tags=tuple(refs))
            for i, refs in self.refs.items()
        )
        return Snapshot.of(left, self.containers, self._snapshot.taken_ns)

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        if self.reader is not None:
            return self.reader.inspect(image_id)
        return super().inspect(image_id)

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        if self.reader is not None:
            return self.reader.history(image_id)
        return super().history(image_id)

    def delete(self, target: str) -> list[Record]:
        from pytest_imageprune.images.containerd import DANGLING

        name, _, digest = target.rpartition("@")
        if name == DANGLING.rstrip("@") or not name:
            image_id = digest if name else target
            refs = self.refs.get(image_id)
            if refs is None or (name and refs):
                raise Gone(f"No such image: {target}")
            if any(c.image_id == image_id for c in self.containers):
                raise _refused(
                    f"conflict: unable to delete {_short(image_id)} (must be forced) - image is"
                    " being used by a container"
                )
            if not is_single_reference(refs) and len(refs) > 1:
                # By ID, the records must be one name's (getSameReferences), else none goes.
                raise _refused(
                    f"conflict: unable to delete {_short(image_id)} (must be forced) - image is"
                    " referenced in multiple repositories"
                )
            records: list[Record] = [{"Untagged": ref} for ref in refs]
            del self.refs[image_id]
            return [*records, {"Deleted": image_id}]
        refs = self.refs.get(digest, [])
        if name not in refs:
            raise Gone(f"No such image: {target}")
        refs.remove(name)
        return [{"Untagged": name}]
