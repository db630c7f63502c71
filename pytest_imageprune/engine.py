"""The one Docker boundary: the only module that imports ``docker``.

It lists images and containers, inspects, reads history and deletes, and maps the SDK's
errors to ours once: 404 is "already gone", 409 is a conflict (in use, has children), an
unreachable engine is ``EngineUnavailable``. Nothing else in the package knows about HTTP.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pytest_imageprune.errors import EngineUnavailable, ImagePruneError
from pytest_imageprune.images import Snapshot

if TYPE_CHECKING:
    import docker

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


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The endpoint the Docker SDK's ``from_env`` talks to."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or DEFAULT_ENDPOINT


class DockerEngine:
    """An ``Engine`` over the Docker SDK's low-level ``APIClient``."""

    def __init__(self, client: docker.APIClient, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint

    @classmethod
    def from_env(cls, timeout: float = 60.0) -> DockerEngine:
        """Connect as ``docker.from_env`` does (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ...)."""
        import docker
        from docker.utils import kwargs_from_env

        endpoint = endpoint_from_env()
        try:
            client = docker.APIClient(version="auto", timeout=int(timeout), **kwargs_from_env())
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(endpoint, _first_line(exc)) from exc
        return cls(client, endpoint)

    def snapshot(self) -> Snapshot:
        with self._mapped():
            taken_ns = time.time_ns()
            images = self.client.images(all=True)
            containers = self.client.containers(all=True)
        return Snapshot.from_api(images, containers, taken_ns)

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        with self._mapped():
            result: Mapping[str, Any] = self.client.inspect_image(image_id)  # type: ignore[no-untyped-call]
        return result

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        with self._mapped():
            result: Sequence[Mapping[str, Any]] = self.client.history(image_id)  # type: ignore[no-untyped-call]
        return result

    def delete(self, target: str) -> list[Record]:
        """``DELETE /images/{target}?force=0&noprune=0``: the daemon's parent cascade is kept."""
        with self._mapped():
            records = self.client.remove_image(target, force=False, noprune=False)
        return list(records or ())

    def close(self) -> None:
        self.client.close()

    def _mapped(self) -> _ErrorMapper:
        return _ErrorMapper(self.endpoint)


class _ErrorMapper:
    """Turns the SDK's exceptions into ours, in one place."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.NotFound):
            raise ImageGone(_explanation(exc)) from exc
        if isinstance(exc, docker.errors.APIError):
            if exc.status_code == 409:
                raise ImageConflict(_explanation(exc)) from exc
            raise EngineError(f"{exc.status_code}: {_explanation(exc)}") from exc
        unreachable = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
        if isinstance(exc, unreachable):
            raise EngineUnavailable(self.endpoint, _first_line(exc)) from exc


def _explanation(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
