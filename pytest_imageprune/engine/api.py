"""What the rest of the package may ask of an engine, and the errors it answers with."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pytest_imageprune.errors import ImagePruneError
from pytest_imageprune.model.images import Snapshot

if TYPE_CHECKING:
    pass


DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"


Record = Mapping[str, str]


class ImageGone(ImagePruneError, LookupError):
    """The image or reference is no longer there (HTTP 404): someone else deleted it."""


class ImageConflict(ImagePruneError):
    """The engine refused to delete (HTTP 409): the image is in use or has children."""


class EngineError(ImagePruneError):
    """Any other error the engine answered with; the prune records it and goes on."""


class Engine(Protocol):
    """What a prune needs from an engine; ``SimulatedEngine`` is the dry-run twin."""

    endpoint: str

    def snapshot(self) -> Snapshot: ...

    def inspect(self, image_id: str) -> Mapping[str, Any]: ...

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]: ...

    def delete(self, target: str) -> list[Record]: ...

    def close(self) -> None: ...

    def spawn(self, count: int) -> list[Engine]:
        """Engines that may each have a request in flight at once (at most ``count``)."""
        ...


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The engine's address as the docker CLI would choose it; never raises.

    ``DOCKER_HOST``, then ``DOCKER_CONTEXT``, then the current context of the CLI's config
    (see ``endpoint.resolve_endpoint``); the default socket if that cannot be read.
    """
    from pytest_imageprune.engine.endpoint import EndpointError, resolve_endpoint

    try:
        return resolve_endpoint(environ).host
    except (EndpointError, OSError):
        env = os.environ if environ is None else environ
        return env.get("DOCKER_HOST") or DEFAULT_ENDPOINT
