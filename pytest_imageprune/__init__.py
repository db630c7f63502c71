"""pytest-imageprune: prune the Docker images a test session built, with Docker's filters.

The pytest plugin lives in ``pytest_imageprune.plugin``; the engine it shares with scripts
is importable from here without importing the Docker SDK until it is used. Where each
room is, and which module decides what: docs/layout.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

__all__ = [
    "Baseline",
    "EngineUnavailable",
    "FilterError",
    "Filters",
    "ImagePruneError",
    "PruneReport",
    "parse_filters",
    "prune_images",
    "take_baseline",
]

if TYPE_CHECKING:
    from pytest_imageprune.errors import EngineUnavailable, FilterError, ImagePruneError
    from pytest_imageprune.images.prune import prune_images, take_baseline
    from pytest_imageprune.model.filters import Filters, parse_filters
    from pytest_imageprune.model.images import Baseline
    from pytest_imageprune.model.report import PruneReport

_WHERE = {
    "Baseline": "model.images",
    "EngineUnavailable": "errors",
    "FilterError": "errors",
    "Filters": "model.filters",
    "ImagePruneError": "errors",
    "PruneReport": "model.report",
    "parse_filters": "model.filters",
    "prune_images": "images.prune",
    "take_baseline": "images.prune",
}


def __getattr__(name: str) -> Any:
    """Import lazily, so that ``import pytest_imageprune`` stays cheap for pytest start-up."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
