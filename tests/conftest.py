from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import docker
import pytest

from pytest_imageprune.coordination.in_engine import ROOM
from tests.support import (
    SUITE_LABELS,
    EngineUnderTest,
    PrivateDockerd,
    connect,
    engine_missing,
    leftovers,
    private_c8d_dockerd,
    private_dockerd,
    private_podman,
    remove_leftovers,
)

pytest_plugins = ["pytester"]

DOCKER_DEFAULT_HOST = "unix:///var/run/docker.sock"
#: The engines the plugin's engine tests run on, each under its own test ID.
ENGINES = ("docker", "podman", "docker-c8d", "podman5")
#: Each engine's kind, image store, and the variable naming its socket (None: the host's
#: Docker, where the environment names it, as the docker CLI finds it).
_ENGINE_SPECS: dict[str, tuple[str, str, str | None]] = {
    "docker": ("docker", "classic", None),
    "podman": ("podman", "podman", "IMAGEPRUNE_PODMAN_HOST"),
    "docker-c8d": ("docker", "containerd", "IMAGEPRUNE_DOCKER_C8D_HOST"),
    "podman5": ("podman", "podman", "IMAGEPRUNE_PODMAN5_HOST"),
}
_C8D_DRIVER_TYPE = "io.containerd.snapshotter.v1"


#: The rooms this run's tests met in (``engine_room``).
ROOMS: set[str] = set()


@pytest.fixture(autouse=True)
def engine_room(monkeypatch: pytest.MonkeyPatch) -> str:
    """A room of its own in the engines' meeting place for each test's sessions
    (``coordination.in_engine.ROOM``): the sessions of one test meet each other, and never
    wait for those of a test another worker runs at the same time on the same engine."""
    room = f"itest-{uuid.uuid4().hex[:12]}"
    ROOMS.add(room)
    monkeypatch.setenv("PYTEST_IMAGEPRUNE_ENGINE_ROOM", room)
    return room


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """At the end of the run (of each xdist worker), fail it if anything this run's tests
    labelled (``SUITE_LABELS``) is left on any engine they may have used: the host's
    Docker and every engine the environment names. What is found is removed, and named."""
    yield
    if not SUITE_LABELS:
        return  # no test built anything on a shared engine
    rooms = {(ROOM, room) for room in ROOMS}
    hosts = {"docker": os.environ.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST}
    for name, (_, _, variable) in _ENGINE_SPECS.items():
        if variable is not None and os.environ.get(variable):
            hosts[name] = os.environ[variable]
    found = []
    for name, host in hosts.items():
        try:
            client = connect() if name == "docker" else connect(host)
            client.ping()
        except Exception:
            continue  # an engine that does not answer holds nothing of this run's
        try:
            # A test whose last session deferred its work leaves its record for the next
            # session, as the protocol has it: no leftover, but this run's to remove. The
            # tests of the meeting place check themselves that nothing else is left.
            remove_leftovers(client, rooms)
            left = leftovers(client, SUITE_LABELS)
            if left:
                found.append(f"{name} ({host}): {', '.join(left)}")
                remove_leftovers(client, SUITE_LABELS)
        finally:
            client.close()
    if found:
        pytest.fail(
            "the tests left these on engines (now removed): " + "; ".join(found), pytrace=False
        )


@pytest.fixture(scope="session", params=ENGINES)
def engine_under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    """Each engine once: ``docker``, the host's Docker where the environment names it;
    ``podman`` at ``IMAGEPRUNE_PODMAN_HOST`` (``.ci/podman-service`` starts one);
    ``docker-c8d`` (Docker 26.1 on the containerd image store) at
    ``IMAGEPRUNE_DOCKER_C8D_HOST`` and ``podman5`` (Podman 5.4) at
    ``IMAGEPRUNE_PODMAN5_HOST`` (``.ci/debian13-engines`` starts both). A missing engine
    skips, except under ``CI=true``, where it fails."""
    name: str = request.param
    kind, store, variable = _ENGINE_SPECS[name]
    if variable is None:
        host = os.environ.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST
    else:
        host = os.environ.get(variable, "")
        if not host:
            engine_missing(f"{variable} names no {name} engine")
    try:
        client = connect() if variable is None else connect(host)
        try:
            client.ping()
            if kind == "docker":
                status = dict(client.info().get("DriverStatus") or [])
                store = "containerd" if status.get("driver-type") == _C8D_DRIVER_TYPE else "classic"
        finally:
            client.close()
    except Exception as exc:
        engine_missing(f"no {name} engine answers at {host}: {exc}")
    if name == "docker-c8d" and store != "containerd":
        engine_missing(f"the {name} engine at {host} is not on the containerd image store")
    return EngineUnderTest(name, host, kind, store)


@pytest.fixture
def engine(engine_under_test: EngineUnderTest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The kind of the engine under test, ``"docker"`` or ``"podman"`` (its store:
    ``engine_store``); ``DOCKER_HOST`` names it for the test and for the pytest sessions it
    runs in subprocesses."""
    monkeypatch.setenv("DOCKER_HOST", engine_under_test.host)
    if engine_under_test.name != "docker":
        # A TLS setting meant for the host's Docker would not fit these sockets.
        monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
        monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    return engine_under_test.kind


@pytest.fixture
def engine_store(engine: str, engine_under_test: EngineUnderTest) -> str:
    """The image store of the engine under test: ``"classic"``, ``"containerd"`` (Docker's
    containerd image store) or ``"podman"``."""
    return engine_under_test.store


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


@pytest.fixture(scope="session")
def private_podman_engine() -> Iterator[str]:
    """A private, empty Podman 4.3 service (its socket's URL), which tests may empty and
    prune without a filter."""
    with private_podman() as url:
        yield url


@pytest.fixture(scope="session")
def private_c8d_engine() -> Iterator[PrivateDockerd]:
    """A private, empty Docker 26.1 on the containerd image store, which tests may empty and
    prune without a filter (the dockerd of the Debian 13 root at ``IMAGEPRUNE_TRIXIE_ROOT``)."""
    with private_c8d_dockerd() as daemon:
        yield daemon
