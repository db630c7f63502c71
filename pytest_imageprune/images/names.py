"""The tag race: an image listed without a name that another client named since (R14).

A deletion by ID takes every name the image has by then (on the classic store and Podman, a
single one goes with the image), so each candidate listed without a name has its names
looked at right before its deletion (``images.delete``), and stays if it has one now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_imageprune.engine.api import Conflict, Engine, EngineError, Gone
from pytest_imageprune.model.images import Image, names_of, normalize_reference
from pytest_imageprune.model.outcome import Kept

#: Why a candidate stays that another client named after the listing (followed by the names).
KEPT_NAMED = "tagged after the listing"


def named_since(engine: Engine, image: Image) -> Kept | None:
    """Why ``image`` stays if it has a name now that the listing did not show (another
    client's ``docker tag``, ``docker pull`` ...), naming it; None if it has none. ``Gone``
    if the image is gone."""
    return new_names(image, engine.look(image.id))


def new_names(image: Image, look: Mapping[str, Any]) -> Kept | None:
    """``named_since``, from the look at ``image`` (``Engine.look``) already made."""
    tags, digests = names_of(look)
    listed = {normalize_reference(r) for r in image.refs}
    new_tags = [t for t in tags if normalize_reference(t) not in listed]
    new = new_tags or [d for d in digests if normalize_reference(d) not in listed]
    return Kept(f"{KEPT_NAMED} ({', '.join(new)})") if new else None


def named_after(engine: Engine, image: Image) -> Kept | None:
    """After a deletion the engine refused or found nothing to do: whether a name given
    meanwhile is why (on the containerd store the engine itself keeps such a name)."""
    try:
        return named_since(engine, image)
    except (Gone, Conflict, EngineError):
        return None
