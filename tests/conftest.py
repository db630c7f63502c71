from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import PrivateDockerd, connect, engine_missing, private_dockerd

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def docker_api() -> Iterator[object]:
    """The engine the environment names (DOCKER_HOST or the default socket)."""
    try:
        client = connect()
        client.ping()
    except Exception as exc:
        engine_missing(f"no Docker engine answers: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def private_engine() -> Iterator[PrivateDockerd]:
    """A dockerd of the tests' own, which they may empty and prune without a filter."""
    with private_dockerd() as daemon:
        yield daemon
