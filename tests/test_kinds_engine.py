"""The other kinds (containers, networks, volumes, build cache) pruned by real sessions on
real engines: what a session made goes, what was there stays, the daemon's own prune agrees
(scope ``all``, on twin objects), and a second live session's objects stay.

Everything here carries ``kt=<namespace of this test>``, and every prune is scoped by it (or
by a label only this test uses), so these tests run on engines that hold other things.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from tests.buildkit import buildkit_available, buildkit_build
from tests.support import (
    SUITE_LABELS,
    TEST_HOST_VARIABLE,
    EngineUnderTest,
    build,
    connect,
    remove_leftovers,
)

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
DOCKER_ENGINES = ("docker", "docker-c8d")

#: A program that waits for ever, built static: a container that keeps running on an
#: image ``FROM scratch``.
PAUSE_C = b"#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"

INNER = '''
import json, os, time
from pathlib import Path

from tests.support import build, connect

NS = os.environ["IMAGEPRUNE_TEST_NS"]
OUT = Path(os.environ["IMAGEPRUNE_TEST_OUT"])
LABELS = {"kt": NS}


def made(name, value):
    (OUT / f"{name}.json").write_text(json.dumps(value))


def wait_for(name):
    deadline = time.monotonic() + 120
    while not (OUT / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.05)


def everything(prefix, client=None):
    """An image (a container of it, stopped), a network and an unnamed volume."""
    client = client or connect()
    ids = build(client, ["COPY f /f"], files={"f": prefix.encode() + NS.encode()},
                labels=LABELS, tag=f"{NS}-{prefix}:1")
    container = client.create_container(ids[-1], command=["/f"], labels=LABELS)["Id"]
    network = client.create_network(f"{NS}-{prefix}", labels=LABELS)["Id"]
    volume = client.create_volume(labels=LABELS)["Name"]
    made(prefix, {"image": ids[-1], "container": container, "network": network,
                  "volume": volume})
'''


class Space:
    """One test's namespace on the engine under test, and what it made."""

    def __init__(self, client: docker.APIClient, out: Path, under: EngineUnderTest) -> None:
        self.client = client
        self.out = out
        self.under = under
        self.name = f"kt{uuid.uuid4().hex[:12]}"
        SUITE_LABELS.add(("kt", self.name))

    @property
    def labels(self) -> dict[str, str]:
        return {"kt": self.name}

    def scope(self, *kinds: str) -> list[str]:
        """Each kind's option, scoped to this namespace."""
        return [f"--prune-{kind}=label=kt={self.name}" for kind in kinds]

    def made(self, name: str) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.out / f"{name}.json").read_text())
        return data

    def containers(self) -> set[str]:
        listed = self.client.containers(all=True, filters={"label": f"kt={self.name}"})
        return {c["Id"] for c in listed}

    def networks(self) -> set[str]:
        listed = self.client.networks(filters={"label": f"kt={self.name}"}) or []
        return {n["Id"] for n in listed}

    def volumes(self) -> set[str]:
        listed = self.client.volumes(filters={"label": f"kt={self.name}"}) or {}
        return {v["Name"] for v in listed.get("Volumes") or []}

    def made_networks_and_volumes(self) -> set[str]:
        """The IDs of this namespace's networks, and the names of its volumes."""
        return self.networks() | self.volumes()

    def images(self) -> set[str]:
        listed = self.client.images(all=True, filters={"label": f"kt={self.name}"})
        return {i["Id"] if ":" in i["Id"] else f"sha256:{i['Id']}" for i in listed}

    def everything(self, prefix: str) -> dict[str, str]:
        """An image, a stopped container of it, a network and an unnamed volume, now."""
        ids = build(
            self.client,
            ["COPY f /f"],
            files={"f": prefix.encode() + self.name.encode()},
            labels=self.labels,
            tag=f"{self.name}-{prefix}:1",
        )
        return {
            "image": ids[-1],
            "container": self.client.create_container(ids[-1], command=["/f"], labels=self.labels)[
                "Id"
            ],
            "network": self.client.create_network(f"{self.name}-{prefix}", labels=self.labels)[
                "Id"
            ],
            "volume": self.client.create_volume(labels=self.labels)["Name"],
        }


@pytest.fixture
def space(
    engine: str,
    engine_under_test: EngineUnderTest,
    docker_api: docker.APIClient,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Space]:
    out = pytester.path / "made"
    out.mkdir()
    made = Space(docker_api, out, engine_under_test)
    monkeypatch.setenv("IMAGEPRUNE_TEST_NS", made.name)
    monkeypatch.setenv(TEST_HOST_VARIABLE, engine_under_test.host)
    monkeypatch.setenv("IMAGEPRUNE_TEST_OUT", str(out))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(inner=INNER)
    yield made
    remove_leftovers(docker_api, {("kt", made.name)})


def api(client: docker.APIClient, method: str, path: str, **params: str) -> Any:
    """A request the SDK has no method for (or none that keeps Docker's answer)."""
    url = f"{client.base_url}/v{client.api_version}{path}"
    response = client.request(method, url, params=params)
    response.raise_for_status()
    return response.json()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    if not any(a.startswith("--prune-images-lock") for a in args):
        args = (*args, f"--prune-images-lock={pytester.path / 'prune.lock'}")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def write(pytester: pytest.Pytester, body: str, name: str = "test_session") -> None:
    pytester.makepyfile(**{name: "from inner import *\n\n" + textwrap.dedent(body)})


ALL_KINDS = ("containers", "networks", "volumes")


def test_the_issue_scenario_leaves_nothing_of_the_session_and_keeps_what_was_there(
    pytester: pytest.Pytester, space: Space
) -> None:
    """Issue 14's scenario, on every engine: a test builds with the SDK (whose
    ``images.build`` keeps each step's container), creates a container, a network and a
    volume, and leaves them; the session removes all of it, and nothing from before."""
    before = space.everything("before")
    images_before = space.images()
    write(
        pytester,
        """
        import docker
        import io
        from tests.support import build_context

        def test_jan():
            client = docker.DockerClient(base_url=os.environ["IMAGEPRUNE_TEST_HOST"])
            context = build_context("FROM scratch\\nLABEL step=1\\nCOPY f /f\\n",
                                    {"f": NS.encode()})
            image, _ = client.images.build(fileobj=context, custom_context=True,
                                           tag=f"{NS}-janapp:1", labels=LABELS)
            client.containers.create(f"{NS}-janapp:1", command=["/f"], labels=LABELS)
            client.networks.create(f"{NS}-jannet", labels=LABELS)
            client.volumes.create(labels=LABELS)
        """,
    )
    report = pytester.path / "report.json"
    label = f"label=kt={space.name}"
    result = run(
        pytester,
        *space.scope(*ALL_KINDS),
        f"--prune-images={label}",
        "--prune-images=dangling=false",
        f"--prune-images-report={report}",
    )
    assert result.ret == 0, result.stdout.str()
    assert space.containers() == {before["container"]}
    assert space.networks() == {before["network"]}
    assert space.volumes() == {before["volume"]}
    assert before["image"] in space.images()
    data = json.loads(report.read_text())
    assert data["networks"]["NetworksDeleted"] == [f"{space.name}-jannet"]
    assert len(data["volumes"]["VolumesDeleted"]) == 1
    assert data["containers"]["ContainersDeleted"]
    assert "SpaceReclaimed" in data["containers"]
    assert "SpaceReclaimed" not in data["networks"]
    result.stdout.fnmatch_lines(
        [
            "imageprune: deleted * image*",
            "imageprune: containers: deleted * container*",
            "imageprune: networks: deleted 1 network, *",
            "imageprune: volumes: deleted 1 volume, *",
        ]
    )
    if space.under.name == "podman":
        # Podman 4's compat build keeps buildah's working containers (rm=False), which no
        # container list shows and no prune takes: they hold the image (docs/engines.md).
        result.stdout.fnmatch_lines(["imageprune: * images stay because containers use them*"])
        assert images_before < space.images()
        return
    # The image went in the same run, after the containers that held it; the images from
    # before (the build's steps among them) stayed.
    assert space.images() == images_before


def test_a_dry_run_deletes_nothing_and_names_what_would_go(
    pytester: pytest.Pytester, space: Space
) -> None:
    write(
        pytester,
        """
        def test_make():
            everything("new")
        """,
    )
    report = pytester.path / "report.json"
    result = run(
        pytester,
        *space.scope(*ALL_KINDS),
        "--prune-images-dry-run",
        f"--prune-images-report={report}",
    )
    assert result.ret == 0, result.stdout.str()
    new = space.made("new")
    assert new["container"] in space.containers()
    assert new["network"] in space.networks()
    assert new["volume"] in space.volumes()
    data = json.loads(report.read_text())
    assert data["containers"]["ContainersDeleted"] == [new["container"]]
    assert data["networks"]["NetworksDeleted"] == [f"{space.name}-new"]
    assert data["volumes"]["VolumesDeleted"] == [new["volume"]]
    assert data["images"] is False
    assert data["ImagesDeleted"] == []
    result.stdout.fnmatch_lines(["imageprune: containers: would delete 1 container, *"])


def _labels_anonymous_volumes(space: Space) -> bool:
    """Docker with API 1.42 or later: it labels anonymous volumes, and its volume prune
    takes only those unless ``all=true``."""
    version = space.client.version()
    return "Podman" not in json.dumps(version.get("Components")) and tuple(
        int(p) for p in version["ApiVersion"].split(".")
    ) >= (1, 42)


def test_a_named_volume_goes_only_with_all_true_on_every_engine(
    pytester: pytest.Pytester, space: Space
) -> None:
    """Issue 20, finding 7: a bare ``--prune-volumes`` takes anonymous volumes only, on
    every engine (Docker 20.10's and Podman's own prune take named ones too, and so did
    the plugin); ``all=true`` takes named ones, accepted on every engine (it was refused
    where the daemon has no such filter). A named volume from before the session stays
    whatever the filters."""
    write(
        pytester,
        """
        def test_make():
            client = connect()
            client.create_volume(f"{NS}-named", labels=LABELS)
            made("anonymous", {"volume": client.create_volume(labels=LABELS)["Name"]})
        """,
    )
    result = run(pytester, *space.scope("volumes"))
    assert result.ret == 0, result.stdout.str()
    assert f"{space.name}-named" in space.volumes(), result.stdout.str()
    assert space.made("anonymous")["volume"] not in space.volumes(), result.stdout.str()
    result = run(pytester, *space.scope("volumes"), "--prune-volumes=all=true")
    assert result.ret == 0, result.stdout.str()
    assert f"{space.name}-named" in space.volumes(), "it existed at that session's start"
    write(
        pytester,
        """
        def test_make():
            connect().create_volume(f"{NS}-named2", labels=LABELS)
        """,
    )
    result = run(pytester, *space.scope("volumes"), "--prune-volumes=all=true")
    assert result.ret == 0, result.stdout.str()
    assert "WARNING" not in result.stdout.str()
    assert space.volumes() == {f"{space.name}-named"}


# -- scope all: the daemon's own prune on twins ---------------------------------------------


def make_twins(
    client: docker.APIClient, ns: str, twin: str, pause_image: str | None
) -> dict[str, str]:
    """Objects in each role the prunes tell apart, labelled ``twin``; returns role to ID
    (a network or volume by name)."""
    labels = {"kt": ns, "twin": twin}
    keep = {**labels, "keep": "1"}
    image = build(client, ["COPY f /f"], files={"f": b"twin" + ns.encode()}, labels=labels)
    roles: dict[str, str] = {}

    def container(role: str, labels: dict[str, str], **kw: Any) -> str:
        roles[role] = client.create_container(image[-1], command=["/f"], labels=labels, **kw)["Id"]
        return roles[role]

    def volume(role: str, labels: dict[str, str], name: str | None = None) -> str:
        roles[role] = client.create_volume(name, labels=labels)["Name"]
        return roles[role]

    def network(role: str, labels: dict[str, str]) -> str:
        roles[role] = f"{ns}-{twin}-{role}"
        client.create_network(roles[role], labels=labels)
        return roles[role]

    container("stopped", labels)
    container("stopped-kept", keep)
    network("unused", labels)
    network("kept", keep)
    # A network only a stopped (kept) container names: Docker's prune takes it (no
    # endpoint), Podman's keeps it.
    attached = network("attached", labels)
    container("net-holder", keep, host_config=client.create_host_config(network_mode=attached))
    volume("anonymous", labels)
    volume("named", labels, f"{ns}-{twin}-named")
    volume("kept", keep)
    held = volume("held-by-kept", labels)
    config = client.create_host_config(binds=[f"{held}:/data"])
    container("holder-kept", keep, host_config=config)
    freed = volume("freed", labels)
    config = client.create_host_config(binds=[f"{freed}:/data"])
    container("holder", labels, host_config=config)
    if pause_image is not None:
        used = network("used", labels)
        config = client.create_host_config(network_mode=used)
        roles["running"] = client.create_container(pause_image, labels=labels, host_config=config)[
            "Id"
        ]
        client.start(roles["running"])
    return roles


def _gone(space: Space, roles: dict[str, str]) -> set[str]:
    client = space.client
    gone = set()
    for role, ident in roles.items():
        try:
            if role in (
                "stopped",
                "stopped-kept",
                "holder",
                "holder-kept",
                "running",
                "net-holder",
            ):
                client.inspect_container(ident)
            elif role in ("unused", "kept", "used", "attached"):
                client.inspect_network(ident)
            else:
                client.inspect_volume(ident)
        except docker.errors.NotFound:
            gone.add(role)
    return gone


@pytest.fixture(scope="session")
def pause_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static program that waits for ever (gcc and the C library's static archive are
    on every machine this project builds on)."""
    folder = tmp_path_factory.mktemp("pause")
    (folder / "pause.c").write_bytes(PAUSE_C)
    subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(folder / "pause"), str(folder / "pause.c")],
        check=True,
    )
    return folder / "pause"


def _pause_image(space: Space, program: Path) -> str:
    dockerfile = f'FROM scratch\nLABEL kt="{space.name}"\nCOPY pause /pause\nCMD ["/pause"]\n'
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (
            ("Dockerfile", dockerfile.encode(), 0o644),
            ("pause", program.read_bytes(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    final = None
    for chunk in space.client.build(fileobj=context, custom_context=True, rm=True, decode=True):
        final = chunk.get("aux", {}).get("ID", final)
    assert final is not None
    return str(final)


def test_scope_all_deletes_what_the_daemons_own_prune_deletes(
    pytester: pytest.Pytester, space: Space
) -> None:
    """Twin objects in every role; the plugin prunes one twin with scope ``all``, the
    daemon's ``/containers/prune``, ``/networks/prune`` and ``/volumes/prune`` the other,
    with the same filters: the same roles go."""
    _compare_with_the_daemon(pytester, space, None)


@pytest.mark.parametrize("engine_under_test", DOCKER_ENGINES, indirect=True)
def test_scope_all_keeps_a_running_container_and_its_network_as_the_daemon_does(
    pytester: pytest.Pytester, space: Space, pause_program: Path
) -> None:
    """As above, with a running container on a network of its own. (The Podman services
    here cannot run a container: crun refuses the host's hybrid cgroups, runc an rlimit.)"""
    _compare_with_the_daemon(pytester, space, _pause_image(space, pause_program))


def _compare_with_the_daemon(pytester: pytest.Pytester, space: Space, pause: str | None) -> None:
    with_running = pause is not None
    write(
        pytester,
        f"""
        from tests.test_kinds_engine import make_twins

        def test_twins():
            made("a", make_twins(connect(), NS, "a", {pause!r}))
        """,
    )
    label = "label=twin=a"
    # Docker 20.10's and Podman's own volume prune takes named volumes too: there the
    # plugin's all=true is its twin (bare, the plugin takes anonymous ones only).
    everything = [] if _labels_anonymous_volumes(space) else ["--prune-volumes=all=true"]
    result = run(
        pytester,
        "--prune-images-scope=all",
        *[f"--prune-{kind}={label}" for kind in ALL_KINDS],
        *[f"--prune-{kind}=label=kt={space.name}" for kind in ALL_KINDS],
        *[f"--prune-{kind}=label!=keep" for kind in ALL_KINDS],
        *everything,
    )
    assert result.ret == 0, result.stdout.str()
    mine = space.made("a")
    theirs = make_twins(space.client, space.name, "b", pause)
    filters = {"label": ["twin=b", f"kt={space.name}"], "label!": ["keep"]}
    refused = []
    for kind in ALL_KINDS:
        try:
            api(space.client, "POST", f"/{kind}/prune", filters=json.dumps(filters))
        except requests.HTTPError as exc:  # Podman 4: no label! filter for volumes
            refused.append((kind, "label!" in str(exc.response.text)))
            result.stdout.fnmatch_lines([f"imageprune: WARNING {kind}: *nothing deleted*"])
    assert refused in ([], [("volumes", True)])
    assert _gone(space, mine) == _gone(space, theirs), result.stdout.str()
    assert "stopped" in _gone(space, mine)
    assert "stopped-kept" not in _gone(space, mine)
    if with_running:
        assert "running" not in _gone(space, mine)
        assert "used" not in _gone(space, mine)
        space.client.remove_container(mine["running"], force=True)
        space.client.remove_container(theirs["running"], force=True)


# -- live sessions --------------------------------------------------------------------------


def _session(pytester: pytest.Pytester, name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"{name}.py", *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(out: Path, name: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not (out / name).exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the session ended before {name}:\n{output}")
        assert time.monotonic() < deadline, f"no {name}"
        time.sleep(0.05)


def test_a_second_live_sessions_objects_are_kept_and_the_last_out_prunes_them(
    pytester: pytest.Pytester, space: Space
) -> None:
    """B starts, A starts; each makes its objects; B ends first and keeps A's (and its own,
    which A's baseline does not hold either), A ends last and takes them all."""
    write(
        pytester,
        """
        def test_a():
            made("a-started", 1)
            wait_for("go-a")
            everything("a")
            made("a-made", 1)
            wait_for("end-a")
        """,
        name="test_a",
    )
    write(
        pytester,
        """
        def test_b():
            made("b-started", 1)
            wait_for("go-b")
            everything("b")
        """,
        name="test_b",
    )
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    options = [*space.scope(*ALL_KINDS), lock]
    b = _session(pytester, "test_b", *options)
    _wait(space.out, "b-started.json", b)
    a = _session(pytester, "test_a", *options)
    _wait(space.out, "a-started.json", a)
    (space.out / "go-a").touch()
    _wait(space.out, "a-made.json", a)
    (space.out / "go-b").touch()
    b_output, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_output
    made_a, made_b = space.made("a"), space.made("b")
    assert {made_a["container"], made_b["container"]} <= space.containers(), b_output
    assert {made_a["network"], made_b["network"]} <= space.networks()
    assert {made_a["volume"], made_b["volume"]} <= space.volumes()
    assert "kept 2 containers while another live session runs" in b_output
    (space.out / "end-a").touch()
    a_output, _ = a.communicate(timeout=300)
    assert a.returncode == 0, a_output
    assert space.containers() | space.networks() | space.volumes() == set(), a_output


def test_objects_of_an_earlier_session_that_is_still_running_are_not_its(
    pytester: pytest.Pytester, space: Space
) -> None:
    """A makes its objects before B starts; B ends while A runs: A's objects are in B's
    baseline, so B leaves them; what B made after A's start, A's baseline lacks: kept for A.
    A ends: it takes its own and B's."""
    write(
        pytester,
        """
        def test_a():
            everything("a")
            made("a-made", 1)
            wait_for("end-a")
        """,
        name="test_a",
    )
    write(
        pytester,
        """
        def test_b():
            everything("b")
        """,
        name="test_b",
    )
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    options = [*space.scope(*ALL_KINDS), lock]
    a = _session(pytester, "test_a", *options)
    _wait(space.out, "a-made.json", a)
    b = _session(pytester, "test_b", *options)
    b_output, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_output
    made_a, made_b = space.made("a"), space.made("b")
    assert {made_a["container"], made_b["container"]} <= space.containers(), b_output
    (space.out / "end-a").touch()
    a_output, _ = a.communicate(timeout=300)
    assert a.returncode == 0, a_output
    assert space.containers() | space.networks() | space.volumes() == set(), a_output


# -- the build cache ------------------------------------------------------------------------


def _cache(client: docker.APIClient) -> set[str]:
    version = client.version()["ApiVersion"]
    query = "?type=build-cache" if tuple(int(p) for p in version.split(".")) >= (1, 42) else ""
    answer = api(client, "GET", "/system/df" + query)
    return {r["ID"] for r in answer.get("BuildCache") or []}


@pytest.mark.parametrize("engine_under_test", DOCKER_ENGINES, indirect=True)
def test_buildkit_cache_records_stay_while_another_session_lives(
    pytester: pytest.Pytester, space: Space
) -> None:
    """B starts and builds with BuildKit; A starts and builds; B ends: nothing goes, A's
    records (A runs) nor B's own (in A's baseline: A's builds may use them); A ends, the
    last one out: its records and B's go. Records from before both stay throughout."""
    host = space.under.host
    why = buildkit_available(host)
    if why is not None:
        pytest.fail(f"no BuildKit build on {host}: {why}")
    untouched = _cache(space.client)
    buildkit_build(host, f"{space.name}-before:1", labels=space.labels)
    before = _cache(space.client)
    write(
        pytester,
        """
        from tests.buildkit import buildkit_build

        def test_a():
            wait_for("go-a")
            buildkit_build(os.environ["IMAGEPRUNE_TEST_HOST"], f"{NS}-a:1", labels=LABELS)
            made("a-built", 1)
            wait_for("end-a")
        """,
        name="test_a",
    )
    write(
        pytester,
        """
        from tests.buildkit import buildkit_build

        def test_b():
            buildkit_build(os.environ["IMAGEPRUNE_TEST_HOST"], f"{NS}-b:1", labels=LABELS)
            made("b-built", 1)
            wait_for("end-b")
        """,
        name="test_b",
    )
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    options = ["--prune-build-cache", f"--prune-images=label=kt={space.name}", lock]
    options += ["--prune-images=dangling=false"]
    b = _session(pytester, "test_b", *options)
    _wait(space.out, "b-built.json", b)
    b_records = _cache(space.client) - before
    assert b_records, "B's build made no cache record"
    a = _session(pytester, "test_a", *options)
    time.sleep(1.0)  # A has registered once its baseline is in: it runs no test before
    (space.out / "go-a").touch()
    _wait(space.out, "a-built.json", a)
    a_records = _cache(space.client) - before - b_records
    assert a_records, "A's build made no cache record"
    (space.out / "end-b").touch()
    b_output, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_output
    now = _cache(space.client)
    assert before <= now, "a record from before both sessions went"
    assert a_records <= now, f"a record of the live session A went:\n{b_output}"
    assert b_records <= now, f"a record in the live session A's baseline went:\n{b_output}"
    (space.out / "end-a").touch()
    a_output, _ = a.communicate(timeout=300)
    assert a.returncode == 0, a_output
    now = _cache(space.client)
    assert before <= now
    assert not a_records & now, f"A's own records stayed:\n{a_output}"
    assert not b_records & now, f"B's records stayed after the last one out:\n{a_output}"
    _prune_cache(space.client, before - untouched)  # this test's own, from before


def _prune_cache(client: docker.APIClient, records: set[str]) -> None:
    if not records:
        return
    wanted = {"id": ["^(" + "|".join(sorted(records)) + ")$"]}
    api(client, "POST", "/build/prune", all="1", filters=json.dumps(wanted))


# -- the build cache against the daemon's own prune (private engines) ------------------------


@pytest.fixture(params=["classic", "containerd"])
def private_daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, docker.APIClient]]:
    """A private dockerd (either store), its build cache emptied before and after."""
    name = "private_engine" if request.param == "classic" else "private_c8d_engine"
    daemon = request.getfixturevalue(name)
    client = connect(daemon.socket)
    api(client, "POST", "/build/prune", all="1")
    yield daemon.socket, client
    api(client, "POST", "/build/prune", all="1")
    client.close()


@pytest.mark.private_engine
@pytest.mark.parametrize("all_records", [False, True], ids=["default", "all"])
def test_the_build_cache_goes_as_the_daemons_build_prune_takes_it(
    private_daemon: tuple[str, docker.APIClient], all_records: bool
) -> None:
    """Scope ``all``: the records a dry run names are the ones ``POST /build/prune`` then
    deletes; a real run leaves the daemon's prune nothing to take."""
    from pytest_imageprune.engine.client import DockerEngine
    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.kinds.prune import prune_kind
    from pytest_imageprune.kinds.table import BUILD_CACHE

    host, client = private_daemon
    why = buildkit_available(host)
    if why is not None:
        pytest.fail(f"no BuildKit build on {host}: {why}")
    filters = KindFilters.from_mapping(BUILD_CACHE, {"all": ["1" if all_records else "0"]})
    query = {"all": "1"} if all_records else {}
    for attempt in ("daemon", "plugin"):
        for n in range(2):
            buildkit_build(host, f"twin-{attempt}-{n}:1", files={"f": os.urandom(32)})
        for n in range(2):
            client.remove_image(f"twin-{attempt}-{n}:1")
        engine = DockerEngine(endpoint=host)
        try:
            predicted = prune_kind(
                engine, filters, baseline=None, started_ns=0, live=list, dry_run=True
            )
            if attempt == "daemon":
                answer = api(client, "POST", "/build/prune", **query)
                assert predicted.deleted, "the builds left no record to prune"
                assert sorted(predicted.deleted) == sorted(answer["CachesDeleted"] or [])
                assert predicted.space_reclaimed == answer["SpaceReclaimed"]
            else:
                report = prune_kind(
                    engine, filters, baseline=None, started_ns=0, live=list, dry_run=False
                )
                assert report.status == "completed", report.errors
                assert sorted(report.deleted) == sorted(predicted.deleted)
                answer = api(client, "POST", "/build/prune", **query)
                assert not answer["CachesDeleted"], "the daemon's prune found more to take"
        finally:
            engine.close()


def test_a_session_that_died_is_swept_for_the_other_kinds_over_its_lifetime_only(
    pytester: pytest.Pytester, space: Space
) -> None:
    """A makes a container, a network and a volume, and is killed (SIGKILL) before its
    prune; a container made after its death is not its. B, later, takes A's and leaves
    the late one."""
    write(
        pytester,
        """
        import signal

        def test_a():
            everything("a")
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        name="test_a",
    )
    write(pytester, "def test_b():\n    pass\n", name="test_b")
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    options = [*space.scope(*ALL_KINDS), lock]
    a = _session(pytester, "test_a", *options)
    a_output, _ = a.communicate(timeout=300)
    assert a.returncode == -9, a_output
    made_a = space.made("a")
    time.sleep(3)  # past its death, its last heartbeat and the slack
    late = space.everything("late")
    b = _session(pytester, "test_b", *options)
    b_output, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_output
    assert made_a["container"] not in space.containers(), b_output
    assert made_a["network"] not in space.networks(), b_output
    assert made_a["volume"] not in space.volumes(), b_output
    assert late["container"] in space.containers(), b_output
    assert late["network"] in space.networks()
    assert late["volume"] in space.volumes()
    assert "left when it died before its prune" in b_output


def test_ctrl_c_in_a_sweep_of_the_other_kinds_stops_it_and_leaves_the_work_owed(
    pytester: pytest.Pytester, space: Space
) -> None:
    """Two sessions die; the next one's sweep is interrupted in the first one's container
    deletions: the sweep stops there (the second dead session's objects stay), and the first
    one's record stays, so the session after finishes both."""
    write(
        pytester,
        """
        import signal

        def test_dies():
            everything(os.environ["WHO"])
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        name="test_dies",
    )
    write(pytester, "def test_b():\n    pass\n", name="test_b")
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    options = [*space.scope(*ALL_KINDS), lock]
    for who in ("d1", "d2"):
        os.environ["WHO"] = who
        try:
            dying = _session(pytester, "test_dies", *options)
            output, _ = dying.communicate(timeout=300)
        finally:
            del os.environ["WHO"]
        assert dying.returncode == -9, output
    (pytester.path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest_imageprune.kinds.prune as kinds

            real = kinds._delete_each
            calls = []

            def interrupted(engine, kind, candidates, *args, **kw):
                if candidates and not calls:  # the first deletion: in the sweep of d1
                    calls.append(1)
                    raise KeyboardInterrupt
                return real(engine, kind, candidates, *args, **kw)

            kinds._delete_each = interrupted
            """
        )
    )
    b = _session(pytester, "test_b", *options)
    b_output, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_output
    d1, d2 = space.made("d1"), space.made("d2")
    left = space.containers() | space.networks() | space.volumes()
    assert {d1["container"], d1["network"], d1["volume"]} <= left, b_output
    assert {d2["container"], d2["network"], d2["volume"]} <= left, b_output
    (pytester.path / "conftest.py").unlink()
    c = _session(pytester, "test_b", *options)
    c_output, _ = c.communicate(timeout=300)
    assert c.returncode == 0, c_output
    assert space.containers() | space.networks() | space.volumes() == set(), c_output


@pytest.mark.parametrize("engine_under_test", ["docker"], indirect=True)
def test_a_session_that_prunes_only_images_lists_networks_and_volumes_for_the_others(
    pytester: pytest.Pytester, space: Space
) -> None:
    """Its record holds the networks and volumes present at its start, so another session's
    prune tells what it may have made by its lists, not by the clocks."""
    write(
        pytester,
        """
        def test_wait():
            made("started", 1)
            wait_for("end")
        """,
        name="test_wait",
    )
    space.everything("before")
    lock = pytester.path / "prune.lock"
    running = _session(
        pytester,
        "test_wait",
        f"--prune-images=label=kt={space.name}",
        f"--prune-images-lock={lock}",
    )
    try:
        _wait(space.out, "started.json", running)
        (record,) = [
            json.loads(path.read_text())
            for path in (pytester.path / "prune.lock.sessions").glob("*.json")
        ]
    finally:
        (space.out / "end").touch()
        output, _ = running.communicate(timeout=300)
    assert running.returncode == 0, output
    assert set(record["kinds"]) == {"containers", "networks", "volumes"}
    assert space.made_networks_and_volumes() <= {
        *record["kinds"]["networks"],
        *record["kinds"]["volumes"],
    }
