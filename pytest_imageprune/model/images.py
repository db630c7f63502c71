"""What the engine holds: images, references, containers, and the session's baseline.

Plain data with no Docker import. ``Snapshot.from_api`` normalises what
``GET /images/json?all=1`` and ``GET /containers/json?all=1`` return across API versions
(``<none>:<none>`` placeholders, ``null`` lists, empty ``ParentId``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The repository of the placeholders older APIs list (``<none>:<none>``, ``<none>@<none>``).
_NONE = "<none>"
_NO_TAG = ["<none>:<none>"]
_NO_DIGEST = ["<none>@<none>"]
_DEFAULT_DOMAIN = "docker.io"


@dataclass(frozen=True)
class Image:
    """One image record of the classic store, as ``/images/json?all=1`` lists it."""

    id: str
    parent: str | None = None
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    created_s: int = 0
    size: int = 0
    labels: Mapping[str, str] | None = None
    #: Refined by an inspect where the list is not precise enough (see ``needs_inspect``).
    created_ns: int | None = None
    #: ``False`` when an inspect showed the image has no ``Config`` (label filters then skip it).
    has_config: bool | None = None
    #: Inspect's ``Metadata.LastTagTime``: on the containerd store, the newest time one of
    #: the image's records was made or moved (tagged, built, loaded, made dangling).
    last_tag_ns: int | None = None

    @functools.cached_property
    def refs(self) -> tuple[str, ...]:
        """Every reference (tags and digest references), in the daemon's order (R9)."""
        return tuple(sorted((*self.tags, *self.digests), key=normalize_reference))

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Image:
        tags, digests = names_of(item)
        labels = item.get("Labels")
        parent = item.get("ParentId")
        # A session reads every image of the engine twice: made without the frozen
        # dataclass's __init__ (an object.__setattr__ a field, a third of the parsing),
        # its fields' defaults first, as the constructor would make it.
        image = object.__new__(cls)
        image.__dict__.update(
            _IMAGE_DEFAULTS,
            id=full_id(item["Id"]),
            parent=full_id(parent) if parent else None,
            tags=tags,
            digests=digests,
            created_s=int(item.get("Created") or 0),
            size=int(item.get("Size") or 0),
            labels=dict(labels) if labels else None,
        )
        return image


#: ``Image``'s fields with a default, and that default (``from_api`` starts from them).
_IMAGE_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(Image) if f.default is not dataclasses.MISSING
}


@dataclass(frozen=True)
class Container:
    id: str
    image_id: str
    running: bool
    #: The image as the container list shows it: the name or ID the container was created
    #: with (``Config.Image``) while that still names ``image_id``, else ``image_id``.
    image: str = ""
    #: ``Config.Image`` as the container was created with it, where an inspect told it.
    config_image: str | None = None
    #: When the container was created (the list's ``Created``, whole seconds; 0 unknown):
    #: the storage budget's evidence that its image was used then.
    created_s: int = 0

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Container:
        created = item.get("Created")
        return cls(
            id=item["Id"],
            image_id=item.get("ImageID") or "",
            running=item.get("State") == "running",
            image=str(item.get("Image") or ""),
            created_s=created if isinstance(created, int) and not isinstance(created, bool) else 0,
        )

    @property
    def created_with(self) -> str | None:
        """``Config.Image``, where known: the list shows it unless it is the image ID."""
        if self.config_image is not None:
            return self.config_image
        if self.image and self.image != self.image_id:
            return self.image
        return None


@dataclass(frozen=True)
class Snapshot:
    """The images and containers of one engine at one moment."""

    images: Mapping[str, Image]
    containers: tuple[Container, ...] = ()
    taken_ns: int = 0
    children: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        children: dict[str, set[str]] = {}
        for image in self.images.values():
            if image.parent is not None:
                children.setdefault(image.parent, set()).add(image.id)
        object.__setattr__(
            self, "children", {parent: frozenset(ids) for parent, ids in children.items()}
        )

    @classmethod
    def of(
        cls, images: Iterable[Image], containers: Iterable[Container] = (), taken_ns: int = 0
    ) -> Snapshot:
        return cls({i.id: i for i in images}, tuple(containers), taken_ns)

    @classmethod
    def from_api(
        cls,
        images: Iterable[Mapping[str, Any]],
        containers: Iterable[Mapping[str, Any]] = (),
        taken_ns: int = 0,
    ) -> Snapshot:
        return cls.of(
            (Image.from_api(i) for i in images),
            (Container.from_api(c) for c in containers),
            taken_ns,
        )

    def is_head(self, image_id: str) -> bool:
        return not self.children.get(image_id)

    def users(self, image_id: str) -> tuple[Container, ...]:
        return tuple(c for c in self.containers if c.image_id == image_id)

    def ancestors(self, image_id: str) -> Iterable[Image]:
        parent = self.images[image_id].parent
        while parent is not None and parent in self.images:
            yield self.images[parent]
            parent = self.images[parent].parent

    def root(self, image_id: str) -> Image:
        """The top of ``image_id``'s parent chain (itself when it has no parent here)."""
        top = self.images[image_id]
        for ancestor in self.ancestors(image_id):
            top = ancestor
        return top

    def replace(self, *refined: Image) -> Snapshot:
        images = dict(self.images)
        images.update((i.id, i) for i in refined)
        return dataclasses.replace(self, images=images)


@dataclass(frozen=True)
class Baseline:
    """The images present when a session started, with the tags each had then."""

    tags: Mapping[str, tuple[str, ...]]
    taken_ns: int = 0

    @classmethod
    def of(cls, snapshot: Snapshot) -> Baseline:
        return cls({i.id: i.tags for i in snapshot.images.values()}, snapshot.taken_ns)

    def in_scope(self, image: Image) -> bool:
        """Session scope: new since the baseline, or a baseline image whose every tag was taken."""
        if image.id not in self.tags:
            return True
        return bool(self.tags[image.id]) and not image.tags

    def to_json(self) -> dict[str, Any]:
        return {"taken_ns": self.taken_ns, "tags": {k: list(v) for k, v in self.tags.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        return cls({k: tuple(v) for k, v in data["tags"].items()}, int(data["taken_ns"]))


def names_of(item: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An image's tags and digest references, as the list or an inspect gives them, without
    the placeholders of older APIs (``<none>:<none>``, ``<none>@<none>``)."""
    tags = item.get("RepoTags") or ()
    digests = item.get("RepoDigests") or ()
    # Most images of a big engine are untagged, and list the placeholders alone.
    tags = () if tags == _NO_TAG else tuple(t for t in tags if not t.startswith(_NONE))
    digests = () if digests == _NO_DIGEST else tuple(d for d in digests if not d.startswith(_NONE))
    return tags, digests


def full_id(image_id: str) -> str:
    """``sha256:<hex>``: Podman gives parents and deleted images as bare hex."""
    return image_id if ":" in image_id else f"sha256:{image_id}"


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """Split a familiar reference into (repository, tag, digest)."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def normalize_repository(name: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox``, as the reference store spells it."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = _DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == _DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}"


def normalize_reference(ref: str) -> str:
    """The fully normalised spelling the daemon sorts references by (R9)."""
    name, tag, digest = split_reference(ref)
    out = normalize_repository(name)
    if tag is not None:
        out += f":{tag}"
    if digest is not None:
        out += f"@{digest}"
    return out


def is_single_reference(refs: Iterable[str]) -> bool:
    """At most one tag, every reference in one repository, and at least one (R15.1).

    This is the daemon's ``isSingleReference``: an image with no reference is not one.
    """
    repos: set[str] = set()
    tags = 0
    count = 0
    for ref in refs:
        name, tag, _ = split_reference(ref)
        repos.add(normalize_repository(name))
        tags += tag is not None
        count += 1
    return count > 0 and tags <= 1 and len(repos) == 1
