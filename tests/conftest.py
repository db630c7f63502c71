from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.support import PrivateDockerd, connect, engine_missing, private_dockerd

pytest_plugins = ["pytester"]

DOCKER_DEFAULT_HOST = "unix:///var/run/docker.sock"
#: The engines the plugin's engine tests run on, each under its own test ID.
ENGINES = ("docker", "podman")


@dataclass(frozen=True)
class EngineUnderTest:
    name: str  # "docker" or "podman"
    host: str  # its DOCKER_HOST


@pytest.fixture(scope="session", params=ENGINES)
def engine_under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    """Each engine once: Docker where the environment names it, Podman at
    ``IMAGEPRUNE_PODMAN_HOST`` (``.ci/podman-service`` starts one). A missing engine skips,
    except under ``CI=true``, where it fails."""
    name: str = request.param
    if name == "podman":
        host = os.environ.get("IMAGEPRUNE_PODMAN_HOST", "")
        if not host:
            engine_missing("IMAGEPRUNE_PODMAN_HOST names no Podman service")
    else:
        host = os.environ.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST
    try:
        client = connect(host) if name == "podman" else connect()
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        engine_missing(f"no {name} engine answers at {host}: {exc}")
    return EngineUnderTest(name, host)


@pytest.fixture
def engine(engine_under_test: EngineUnderTest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine under test, ``"docker"`` or ``"podman"``; ``DOCKER_HOST`` names it for the
    test and for the pytest sessions it runs in subprocesses."""
    monkeypatch.setenv("DOCKER_HOST", engine_under_test.host)
    if engine_under_test.name == "podman":
        # A TLS setting meant for the Docker engine would not fit the Podman socket.
        monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
        monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    return engine_under_test.name


@pytest.fixture
def docker_api(engine: str) -> Iterator[docker.APIClient]:
    """A client of the engine under test (see ``engine``)."""
    client = connect()
    yield client
    client.close()


@pytest.fixture(scope="session")
def private_engine() -> Iterator[PrivateDockerd]:
    """A dockerd of the tests' own, which they may empty and prune without a filter."""
    with private_dockerd() as daemon:
        yield daemon
