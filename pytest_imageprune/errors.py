"""The exceptions pytest-imageprune raises: one base class, so callers catch once."""

from __future__ import annotations


class ImagePruneError(Exception):
    """Base class of every error this package raises on purpose."""


class FilterError(ImagePruneError, ValueError):
    """A prune filter is not one Docker would accept; the message, Docker's own, names the text.

    It carries what a person needs to be told: ``key``, the filter's name (None when the
    text has no ``=``, so no name); ``values``, the values at fault; ``texts``, the filters
    as typed (``KEY=VALUE``), where they were parsed from text.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        values: tuple[str, ...] = (),
        texts: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.key = key
        self.values = values
        self.texts = texts


class EngineUnavailable(ImagePruneError, ConnectionError):
    """The Docker engine did not answer; the message names the endpoint."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(endpoint, reason)
        self.endpoint = endpoint
        self.reason = reason

    def __str__(self) -> str:
        return f"Docker engine at {self.endpoint} is unreachable: {self.reason}"


class EngineNotConfigured(EngineUnavailable):
    """The configuration names no usable engine (an unknown Docker context, a malformed
    ``config.json``, TLS without ``ca.pem``): known before anything is asked."""

    def __str__(self) -> str:
        return f"no Docker engine can be chosen: {self.reason}"


class RegistryStuck(ImagePruneError, TimeoutError):
    """A file operation on the session registry or the prune lock did not end within its
    bound (a stuck network mount, say): the session gives up on the registry."""

    def __init__(self, path: str, seconds: float) -> None:
        super().__init__(path, seconds)
        self.path = path
        self.seconds = seconds

    def __str__(self) -> str:
        return f"gave up on the session registry after waiting {self.seconds:g} s for {self.path}"
