"""Hooks other plugins and conftest files may implement (registered by ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_imageprune.model.images import Image
    from pytest_imageprune.model.report import PruneReport


@pytest.hookspec(firstresult=True)
def pytest_imageprune_protect(image: Image) -> str | bool | None:
    """Keep an image the filters would prune: return a reason (or True) to keep it.

    Called in the controlling process at session end, for each image the filters select,
    with its ``id``, ``tags``, ``digests``, ``labels`` and ``parent``. The first non-None
    answer wins. A kept image is reported with the reason given.
    """


def pytest_imageprune_report(report: PruneReport) -> None:
    """Receive the final report of the session's prune (``report.to_dict()`` for JSON).

    Called in the controlling process at session end, once the prune is over, whatever
    its status; not called when pruning is not enabled.
    """
