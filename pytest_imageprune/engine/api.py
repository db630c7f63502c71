"""What the rest of the package may ask of an engine, and the errors it answers with."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, cast

from pytest_imageprune.errors import ImagePruneError
from pytest_imageprune.model.images import Snapshot

Record = Mapping[str, str]


#: The kinds ``Objects`` lists and removes one by one (``kinds.table``'s names).
ObjectKind = Literal["containers", "networks", "volumes"]


class Gone(ImagePruneError, LookupError):
    """The object or reference is no longer there (HTTP 404): someone else removed it."""


class Conflict(ImagePruneError):
    """The engine refused to remove it (HTTP 409; a network with active endpoints): it is
    in use, or an image has children or several names.

    ``in_use`` is decided here, at the boundary, from the engine's answer: whether a
    container holds the object. Nobody else reads the words.
    """

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use

    def __reduce__(self) -> tuple[Any, ...]:
        return (_conflict, (str(self), self.in_use))


def _conflict(message: str, in_use: bool) -> Conflict:
    return Conflict(message, in_use=in_use)


class EngineError(ImagePruneError):
    """Any other error the engine answered with; the prune records it and goes on.

    ``status`` is the HTTP status, when the engine answered with one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (_engine_error, (str(self), self.status))


def _engine_error(message: str, status: int | None) -> EngineError:
    return EngineError(message, status=status)


class Engine(Protocol):
    """What a prune needs from an engine; ``SimulatedEngine`` is the dry-run twin."""

    endpoint: str

    def snapshot(self) -> Snapshot: ...

    def inspect(self, image_id: str) -> Mapping[str, Any]: ...

    def look(self, image_id: str) -> Mapping[str, Any]:
        """The look right before a deletion by ID: the image's inspect as it is now (its
        ``RepoTags`` and ``RepoDigests``, and its layers); ``Gone`` if it is gone."""
        ...

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]: ...

    def delete(self, target: str) -> list[Record]: ...

    def close(self) -> None: ...

    def spawn(self, count: int) -> list[Engine]:
        """Engines that may each have a request in flight at once (at most ``count``)."""
        ...


class Objects(Protocol):
    """What pruning the other kinds needs of an engine (``kinds``): their lists as the
    engine answers them, one container's or network's inspect, removals one by one, the
    build cache's prune, and a few facts. ``DockerEngine`` speaks it over HTTP; the tests
    fake it with lists of objects. Errors: ``Gone``, ``Conflict``, ``EngineError``,
    ``EngineUnavailable``.
    """

    endpoint: str

    @property
    def podman(self) -> bool: ...

    @property
    def api_version(self) -> str:
        """The engine's API version, "" when unknown."""
        ...

    @property
    def version(self) -> str:
        """The engine's own version, "" when unknown."""
        ...

    def objects(self, kind: ObjectKind) -> Sequence[Mapping[str, Any]]:
        """Every object of ``kind`` as the engine lists it (containers stopped too)."""
        ...

    def disk_usage(self, what: str) -> Mapping[str, Any]:
        """``GET /system/df`` for one kind (``build-cache``, ``volume``; the whole before
        API 1.42)."""
        ...

    def container(self, container_id: str, *, size: bool = False) -> Mapping[str, Any]:
        """One container's inspect; with ``size``, its ``SizeRw`` too."""
        ...

    def network(self, network_id: str) -> Mapping[str, Any]:
        """One network's inspect (its ``Containers``: the endpoints on it)."""
        ...

    def remove(self, kind: ObjectKind, target: str) -> None:
        """Remove one container, network or volume by its ID or name. A network still in
        use is a ``Conflict`` with ``in_use``, whatever status the engine answered with."""
        ...

    def prune_cache(self, ids: Sequence[str], *, all: bool) -> Mapping[str, Any]:
        """``POST /build/prune`` limited to the records ``ids`` (alphanumeric): the answer
        (``CachesDeleted``, ``SpaceReclaimed``)."""
        ...


#: The label of every volume sessions meet by (``coordination.in_engine``): its value is
#: the session's ID. No prune of the plugin's ever takes such a volume.
MEETING_LABEL = "io.github.pytest-imageprune.session"


class Meets(Protocol):
    """What sessions that share only the engine need of it to meet there: labelled
    volumes, and the engine's clock (each answer's ``Date``, whole seconds in ns, None
    when the answer has none)."""

    def meeting_volumes(self) -> tuple[list[Mapping[str, Any]], int | None]: ...

    def make_volume(
        self, name: str, labels: Mapping[str, str]
    ) -> tuple[Mapping[str, Any], int | None]: ...

    def drop_volume(self, name: str) -> None: ...

    def spawn(self, count: int) -> list[Engine]: ...


def meets_of(engine: object) -> Meets | None:
    """``engine`` as ``Meets`` when it can hold the sessions' meeting place (the tests'
    fakes and the dry run's ``SimulatedEngine`` cannot); asked of its class."""
    return cast("Meets", engine) if callable(getattr(type(engine), "make_volume", None)) else None


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def http_date_ns(value: str | None) -> int | None:
    """An HTTP ``Date`` (``Mon, 07 Dec 2026 06:25:26 GMT``) in ns since the epoch; None for
    none, or one that does not parse."""
    import calendar

    if not value:
        return None
    parts = value.split()
    try:
        _, day, month, year, clock, zone = parts
        hour, minute, second = (int(p) for p in clock.split(":"))
        if zone != "GMT" or month not in _MONTHS:
            return None
        seconds = calendar.timegm((int(year), _MONTHS[month], int(day), hour, minute, second))
    except (ValueError, TypeError, OverflowError):
        return None
    return seconds * 1_000_000_000


def objects_of(engine: object) -> Objects | None:
    """``engine`` as ``Objects`` when it answers for the other kinds (the dry run's
    ``SimulatedEngine`` does not); asked of its class, so no property sends a request."""
    return cast("Objects", engine) if callable(getattr(type(engine), "objects", None)) else None


def at_least(version: str, wanted: str) -> bool:
    """Whether the dotted ``version`` is ``wanted`` or later; False when not a number."""
    try:
        return tuple(int(p) for p in version.split(".")) >= tuple(int(p) for p in wanted.split("."))
    except ValueError:
        return False


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The engine's address as the docker CLI would choose it; never raises.

    ``DOCKER_HOST``, then ``DOCKER_CONTEXT``, then the current context of the CLI's config
    (see ``endpoint.resolve_endpoint``); the default socket if that cannot be read.
    """
    from pytest_imageprune.engine.endpoint import DEFAULT_HOST, EndpointError, resolve_endpoint

    try:
        return resolve_endpoint(environ).host
    except (EndpointError, OSError):
        env = os.environ if environ is None else environ
        return env.get("DOCKER_HOST") or DEFAULT_HOST


def status_error(status: int, body: bytes) -> ImagePruneError:
    """404 is gone, 409 a conflict (held by a container, or not: its words tell), anything
    else an engine error with its status: for both transports."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode(errors="replace").strip()
    if status == 404:
        return Gone(message)
    if status == 409:
        return Conflict(message, in_use=held(message))
    return EngineError(f"{status}: {message}", status=status)


def held(message: str) -> bool:
    """Whether a conflict says the object is in use, not held by its children: "being used
    by stopped container ...", "container ... is using its referenced image", a volume "in
    use"."""
    return "container" in message or any(words in message for words in ("in use", "being used"))


def network_in_use(status: int | None, message: str) -> bool:
    """Whether a network's removal failed for its active endpoints: Docker answers 403,
    Podman 500 with words saying so."""
    return status == 403 or any(
        words in message for words in ("active endpoints", "in use", "being used")
    )
