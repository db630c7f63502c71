"""The storage budget against a real engine of each Docker store: exactly the least recently
used unused images go, until the images fit; in use, kept by a pattern or by a live session
stay; the dry run names the same set first.

The budget evicts from the whole engine by design, so these tests run on the private
engines only (``private_engine``, ``private_c8d_engine``, and a Podman 4.3 service of their
own, ``private_podman_engine``), emptied before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from pytest_imageprune.budget import record
from tests.support import PrivateDockerd, build, connect, emptied, image_ids

pytestmark = [pytest.mark.engine, pytest.mark.private_engine]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["classic", "containerd"])
def daemon(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> PrivateDockerd:
    name = "private_engine" if request.param == "classic" else "private_c8d_engine"
    engine: PrivateDockerd = request.getfixturevalue(name)
    monkeypatch.setenv("DOCKER_HOST", engine.socket)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    return engine


@pytest.fixture
def client(daemon: PrivateDockerd) -> Iterator[docker.APIClient]:
    with emptied(daemon.socket) as client:
        yield client


class Filled:
    """An engine filled with images of known sizes and known last use, oldest first:
    ``u1``, ``revived`` (used again last, by a container since removed), ``used`` (a
    stopped container holds it), ``keep`` (``keep/me:1``, two steps: its untagged parent
    stays with it), ``u2``, ``u3``, ``chain`` (two steps: an untagged parent goes with it on
    the classic store), ``u4``."""

    SIZES = {  # noqa: RUF012
        "u1": 300_000,
        "revived": 500_000,
        "used": 200_000,
        "keep": 400_000,
        "u2": 250_000,
        "u3": 150_000,
        "chain": 60_000,
        "u4": 100_000,
    }

    def __init__(self, client: docker.APIClient) -> None:
        self.client = client
        self.ids: dict[str, str] = {}
        for name, size in self.SIZES.items():
            tag = "keep/me:1" if name == "keep" else f"budget-{name}:1"
            two = name in ("chain", "keep")  # an untagged parent below the tag
            steps = ["COPY blob /blob"] + (["COPY more /more"] if two else [])
            files = {"blob": os.urandom(size), "more": os.urandom(70_000)}
            *below, self.ids[name] = build(client, steps, tag=tag, files=files)
            if name == "keep":
                #: The untagged parent of the image a pattern keeps.
                self.keep_parent = below[-1]
            time.sleep(0.05)  # each its own instant, whatever the clock's resolution
        self.container = client.create_container("budget-used:1", command="/nothing")["Id"]
        time.sleep(1.1)  # a later second than every build: the list's Created is in seconds
        gone = client.create_container("budget-revived:1", command="/nothing")["Id"]
        client.remove_container(gone)
        #: The unused ones, least recently used first.
        self.lru = ["u1", "u2", "u3", "chain", "u4", "revived"]

    def name(self, image_id: str) -> str:
        return next((n for n, i in self.ids.items() if i == image_id), image_id)

    def present(self) -> set[str]:
        return {n for n, i in self.ids.items() if i in image_ids(self.client)}


def session(
    pytester: pytest.Pytester, *args: str, report: str = "report.json"
) -> tuple[pytest.RunResult, dict[str, Any]]:
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    out = pytester.path / report
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", lock, f"--prune-images-report={out}", *args, timeout=300
    )
    assert result.ret == 0, result.stdout.str()
    data: dict[str, Any] = json.loads(out.read_text())["budget"]
    return result, data


def names(filled: Filled, data: dict[str, Any]) -> list[str]:
    """The evicted images the test built by name, in order; on the containerd store, the
    untagged parent of ``chain`` goes on its own (no cascade there): it is left out."""
    by_id = {i: n for n, i in filled.ids.items()}
    return [by_id[e["Id"]] for e in data["evicted"] if e["Id"] in by_id]


def test_the_least_recently_used_unused_images_go_until_the_images_fit(
    pytester: pytest.Pytester, client: docker.APIClient
) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    filled = Filled(client)
    before = image_ids(client)
    keep = "--prune-images-keep=^keep/"
    _, first = session(pytester, "--prune-images-budget=1kB", keep, "--prune-images-dry-run")
    total = first["total_before"]
    assert first["total_before_exact"] is True
    assert names(filled, first) == filled.lru
    # What each frees, as the engine counts it (checked against the engine below).
    sizes = {filled.name(e["Id"]): e["size"] for e in first["evicted"]}
    # Room for all but u1 and half of u2: u1 alone is not enough, u1 and u2 are.
    budget = total - sizes["u1"] - sizes["u2"] // 2

    result, dry = session(
        pytester, f"--prune-images-budget={budget}", keep, "--prune-images-dry-run"
    )
    assert image_ids(client) == before, "a dry run deleted"
    assert names(filled, dry) == ["u1", "u2"], result.stdout.str()
    assert dry["dry_run"] is True
    assert dry["total_before"] > budget >= dry["total_after"]
    result.stdout.fnmatch_lines(
        [
            f"imageprune: budget {budget} *: the engine's images take *; would evict 2 unused*",
            "  would evict * (budget-u1:1): *, last used 20* UTC (*)",
            "  would evict * (budget-u2:1): *",
        ]
    )

    result, real = session(pytester, f"--prune-images-budget={budget}", keep)
    assert names(filled, real) == ["u1", "u2"], result.stdout.str()
    assert filled.present() == set(filled.SIZES) - {"u1", "u2"}
    assert real["total_after"] == dry["total_after"]
    assert real["SpaceReclaimed"] == real["total_before"] - real["total_after"]
    result.stdout.fnmatch_lines(["  evict * (budget-u1:1): *", "  evict * (budget-u2:1): *"])

    # A budget that cannot be met: every unused image goes, least recently used first;
    # the one in use and the one kept by its name hold the rest, and the summary says so.
    result, tight = session(pytester, "--prune-images-budget=1kB", keep, report="tight.json")
    assert names(filled, tight) == ["u3", "chain", "u4", "revived"], result.stdout.str()
    assert filled.present() == {"used", "keep"}
    assert image_ids(client) == {filled.ids["used"], filled.ids["keep"], filled.keep_parent}
    revived = tight["evicted"][-1]
    assert "the engine's events" in revived["evidence"], revived
    held = {h["reason"]: h for h in tight["held_by"]}
    assert held["used by containers"]["images"] >= 1
    assert held["matching --prune-images-keep"]["images"] >= 1
    assert sum(h["size"] for h in tight["held_by"]) == tight["total_after"]
    assert tight["shortfall"] == tight["total_after"] - 1000
    result.stdout.fnmatch_lines(
        [
            "imageprune: WARNING budget 1kB cannot be met: the images still take *, * over it;"
            " held: * used by containers (*), * matching --prune-images-keep (*)"
        ]
    )


def test_the_dry_run_names_what_the_real_run_evicts_and_it_stops_once_they_fit(
    pytester: pytest.Pytester, client: docker.APIClient
) -> None:
    """Without a keep pattern; on the classic store the totals are checked against the
    engine's own count of its layers (``/system/df``'s ``LayersSize``)."""
    pytester.makepyfile("def test_nothing():\n    pass\n")
    filled = Filled(client)
    classic = dict(client.info().get("DriverStatus") or []).get("driver-type") is None
    _, every = session(pytester, "--prune-images-budget=1kB", "--prune-images-dry-run")
    assert names(filled, every) == ["u1", "keep", *filled.lru[1:]]
    if classic:
        assert every["total_before"] == client.df()["LayersSize"]
    sizes = {filled.name(e["Id"]): e["size"] for e in every["evicted"]}
    # On the containerd store the untagged parent of "keep" goes on its own, right after it.
    parent = sizes.get(filled.keep_parent, 0)
    budget = every["total_before"] - sizes["u1"] - sizes["keep"] - parent - sizes["u2"] // 2
    _, dry = session(pytester, f"--prune-images-budget={budget}", "--prune-images-dry-run")
    _, real = session(pytester, f"--prune-images-budget={budget}")
    assert names(filled, dry) == ["u1", "keep", "u2"]
    assert [e["Id"] for e in real["evicted"]] == [e["Id"] for e in dry["evicted"]]
    # It stops as soon as they fit: without the last one, they would not.
    assert real["total_after"] <= budget < real["total_after"] + real["evicted"][-1]["size"]
    assert filled.present() == set(filled.SIZES) - {"u1", "keep", "u2"}
    if classic:
        assert real["total_after"] == client.df()["LayersSize"]


def test_a_live_session_keeps_every_image_from_the_budget(
    pytester: pytest.Pytester, client: docker.APIClient
) -> None:
    """While another session lives, any image may be its baseline or its product: the
    budget evicts nothing, and says what holds the images."""
    filled = Filled(client)
    started, end = pytester.path / "started", pytester.path / "end"
    pytester.makepyfile(
        test_wait=f"""
        import time
        from pathlib import Path

        def test_wait():
            Path({str(started)!r}).touch()
            while not Path({str(end)!r}).exists():
                time.sleep(0.1)
        """,
        test_nothing="def test_nothing():\n    pass\n",
    )
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    live = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            lock,
            "test_wait.py",
            "--prune-images=label=none-such",
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert live.poll() is None, "the live session died"
            assert time.monotonic() < deadline, "the live session never started its test"
            time.sleep(0.1)
        result, data = session(pytester, "test_nothing.py", "--prune-images-budget=1kB")
    finally:
        end.touch()
        output, _ = live.communicate(timeout=300)
    assert live.returncode == 0, output
    assert data["evicted"] == [], result.stdout.str()
    assert filled.present() == set(filled.SIZES)
    held = {h["reason"]: h for h in data["held_by"]}
    assert "a live session may need them" in held, data["held_by"]
    result.stdout.fnmatch_lines(["*cannot be met*a live session may need them*"])


def test_the_plugins_record_dates_a_use_the_engine_forgot(
    pytester: pytest.Pytester, client: docker.APIClient, daemon: PrivateDockerd
) -> None:
    """A session writes down, in the engine's meeting place, the images its containers used
    (the container's events read as they came: by the session's end the engine's log no
    longer holds them); once the engine has forgotten (restarted: Docker's event log is
    gone, and the container was removed), the budget still dates the use by that record."""
    files = {"blob": os.urandom(200_000)}
    first = build(client, ["COPY blob /blob"], tag="budget-first:1", files=files)[-1]
    time.sleep(1.1)  # a later second: the second image is the more recently made
    files = {"blob": os.urandom(200_000)}
    second = build(client, ["COPY blob /blob"], tag="budget-second:1", files=files)[-1]
    time.sleep(1.1)
    pytester.makepyfile(
        test_use="""
        import docker

        def test_run_and_remove():  # docker run --rm budget-first:1
            client = docker.APIClient(**docker.utils.kwargs_from_env())
            container = client.create_container("budget-first:1", command="/nothing")
            client.remove_container(container["Id"])
            # A busy engine: Docker's log keeps its newest 256 events, and these 300 push
            # the container's out of it before the session ends.
            for n in range(150):
                client.create_volume(f"budget-churn-{n}")
                client.remove_volume(f"budget-churn-{n}")
        """,
        test_nothing="def test_nothing():\n    pass\n",
    )
    pytester.makeini("[pytest]\nprune_images = dangling=true\n")
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", lock, "test_use.py")
    assert result.ret == 0, result.stdout.str()
    room = f"io.github.pytest-imageprune.room={os.environ['PYTEST_IMAGEPRUNE_ENGINE_ROOM']}"
    records = [
        v for v in client.volumes(filters={"label": room})["Volumes"] if v["Name"].endswith("-uses")
    ]
    assert len(records) == 1, (records, result.stdout.str())
    held = record.unpack(records[0]["Labels"][record.USES], time.time_ns() + 10**12)
    assert set(held) == {first}, held

    daemon.stop()  # the engine forgets its events; the record stays in its volume
    daemon.start()
    again = connect(daemon.socket)
    try:
        assert not again.containers(all=True)
        result, data = session(
            pytester, "test_nothing.py", "--prune-images-budget=1kB", "--prune-images-dry-run"
        )
    finally:
        again.close()
    order = [e["Id"] for e in data["evicted"] if e["Id"] in (first, second)]
    assert order == [second, first], result.stdout.str()
    assert data["evicted"][-1]["evidence"] == record.EVIDENCE, data["evicted"][-1]
    result.stdout.fnmatch_lines([f"  would evict * (budget-first:1): *({record.EVIDENCE})"])


@pytest.fixture
def podman(
    private_podman_engine: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[docker.APIClient]:
    monkeypatch.setenv("DOCKER_HOST", private_podman_engine)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    with emptied(private_podman_engine) as client:
        yield client


def test_on_podman_the_least_recently_used_go_dated_by_the_list_and_the_plugins_record(
    pytester: pytest.Pytester, podman: docker.APIClient
) -> None:
    """Podman's event log says nothing the budget can go by, and shows no tag time: an
    image's last use is a container listed, the plugin's own record, or its ``Created``.
    A container a session saw, removed since, still dates its image by the record."""
    sizes = {"old": 300_000, "mid": 200_000, "new": 250_000, "used": 150_000, "keep": 100_000}
    ids: dict[str, str] = {}
    for name, size in sizes.items():
        tag = "keep/me:1" if name == "keep" else f"budget-{name}:1"
        files = {"blob": os.urandom(size)}
        ids[name] = build(podman, ["COPY blob /blob"], tag=tag, files=files)[-1]
        time.sleep(1.1)  # each its own second: the list's Created is in seconds
    podman.create_container("budget-used:1", command="/nothing")  # stays: in use
    pytester.makepyfile(
        test_use="""
        import docker

        def test_make_a_container_of_the_oldest():
            client = docker.APIClient(**docker.utils.kwargs_from_env())
            client.create_container("budget-old:1", command="/nothing", labels={"made": "1"})
        """,
        test_nothing="def test_nothing():\n    pass\n",
    )
    pytester.makeini("[pytest]\nprune_images = dangling=true\n")
    lock = f"--prune-images-lock={pytester.path / 'prune.lock'}"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", lock, "test_use.py")
    assert result.ret == 0, result.stdout.str()
    for container in podman.containers(all=True, filters={"label": "made=1"}):
        podman.remove_container(container["Id"])  # gone: only the record remembers it

    keep = "--prune-images-keep=^keep/"
    by_id = {i: n for n, i in ids.items()}
    result, dry = session(
        pytester, "test_nothing.py", "--prune-images-budget=1kB", keep, "--prune-images-dry-run"
    )
    assert [by_id.get(e["Id"]) for e in dry["evicted"]] == ["mid", "new", "old"], (
        result.stdout.str()
    )
    assert dry["evicted"][-1]["evidence"] == record.EVIDENCE
    assert "the image's Created" in dry["evicted"][0]["evidence"]
    held = {h["reason"] for h in dry["held_by"]}
    assert held == {"used by containers", "matching --prune-images-keep"}, dry["held_by"]
    freed = {by_id[e["Id"]]: e["size"] for e in dry["evicted"]}

    budget = dry["total_before"] - freed["mid"] - freed["new"] // 2
    result, first = session(
        pytester,
        "test_nothing.py",
        f"--prune-images-budget={budget}",
        keep,
        "--prune-images-dry-run",
        report="first.json",
    )
    result, real = session(
        pytester, "test_nothing.py", f"--prune-images-budget={budget}", keep, report="real.json"
    )
    assert [by_id.get(e["Id"]) for e in real["evicted"]] == ["mid", "new"], result.stdout.str()
    assert [e["Id"] for e in first["evicted"]] == [e["Id"] for e in real["evicted"]]
    assert first["total_after"] == real["total_after"]
    assert {by_id[i] for i in image_ids(podman) if i in by_id} == {"old", "used", "keep"}
    assert real["total_before"] > budget >= real["total_after"]
