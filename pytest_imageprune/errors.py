"""The exceptions pytest-imageprune raises: one base class, so callers catch once."""

from __future__ import annotations


class ImagePruneError(Exception):
    """Base class of every error this package raises on purpose."""


class FilterError(ImagePruneError, ValueError):
    """A prune filter is not one Docker would accept; the message names the text."""


class EngineUnavailable(ImagePruneError, ConnectionError):
    """The Docker engine did not answer; the message names the endpoint."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(endpoint, reason)
        self.endpoint = endpoint
        self.reason = reason

    def __str__(self) -> str:
        return f"Docker engine at {self.endpoint} is unreachable: {self.reason}"
