"""What one run says, against itself and against what it did, on real Docker engines.

Every figure of the summary lines is one fact in every output: the summary line, the
lines after it (the hint about images that containers hold), ``-v``'s lines and the JSON
report, all read from one run. And a dry run names what the real run then deletes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

import tests.test_kinds_engine as kinds_engine
from tests.conftest import ROOMS
from tests.support import build
from tests.test_kinds_engine import ALL_KINDS, DOCKER_ENGINES, Space, make_twins, run, write

# The fixtures of the other kinds' engine tests: a namespace on the engine, a static program
# that keeps a container running.
space = kinds_engine.space
pause_program = kinds_engine.pause_program

pytestmark = pytest.mark.engine

#: The kinds' words in the summary line, as ``kinds.table`` has them.
BUSY = {"containers": "running", "networks": "in use", "volumes": "in use"}
DELETED_KEY = {
    "containers": "ContainersDeleted",
    "networks": "NetworksDeleted",
    "volumes": "VolumesDeleted",
}


def make_state(client: docker.APIClient, ns: str, pause_image: str) -> dict[str, str]:
    """Objects in every role the prunes tell apart (``make_twins``), and images that go
    with two tags, stay in use after one tag went, go once the container using them goes."""
    roles = make_twins(client, ns, "a", pause_image)
    labels = {"kt": ns, "twin": "a"}
    roles["two-tags"] = build(
        client, ["COPY f /f"], files={"f": b"two" + ns.encode()}, labels=labels, tag=f"{ns}-two:1"
    )[-1]
    client.tag(roles["two-tags"], f"{ns}-two", "2")
    held = build(
        client, ["COPY f /f"], files={"f": b"held" + ns.encode()}, labels=labels, tag=f"{ns}-held:1"
    )[-1]
    client.tag(held, f"{ns}-held", "2")
    roles["held-image"] = held
    keep = {**labels, "keep": "1"}
    roles["held-image-user"] = client.create_container(held, command=["/f"], labels=keep)["Id"]
    ride = build(client, ["COPY f /f"], files={"f": b"ride" + ns.encode()}, labels=labels)[-1]
    roles["ride-image"] = ride
    roles["ride-user"] = client.create_container(ride, command=["/f"], labels=labels)["Id"]
    return roles


#: A session's test that makes the state (volumes that were there at a session's start are
#: never pruned, whatever the scope).
STATE = """
from tests.test_outputs_engine import make_state

def test_make_state():
    made("state", make_state(connect(), NS, {pause!r}))
"""


def options(space: Space, report: Path) -> list[str]:
    """Every kind on, scope ``all``, limited to this test's twin ``a`` (and the build cache
    on with a description no record has: on an engine others use, the build cache has no
    label to scope it by)."""
    label = "label=twin=a"
    return [
        "--prune-images-scope=all",
        f"--prune-images={label}",
        "--prune-images=dangling=false",
        *[f"--prune-{kind}={label}" for kind in ALL_KINDS],
        *[f"--prune-{kind}=label!=keep" for kind in ALL_KINDS],
        f"--prune-build-cache=description={space.name} matches no record",
        f"--prune-images-report={report}",
    ]


def sections(stdout: str) -> dict[str, tuple[str, list[str]]]:
    """Each summary line of the imageprune section (``images``, or the kind it names),
    with the ``-v`` lines under it; and ``other``: every other line of the section."""
    section = stdout.split(" imageprune ", 1)[1].splitlines()[1:]
    found: dict[str, tuple[str, list[str]]] = {"other": ("", [])}
    current = "other"
    for line in section:
        if line.startswith("  ") and current != "other":
            found[current][1].append(line.strip())
            continue
        if re.match(r"imageprune: (would )?delete", line):
            current = "images"
        else:
            kind = re.match(r"imageprune: (\w+): (would )?delete", line)
            current = kind.group(1) if kind else "other"
        if current == "other":
            found["other"][1].append(line)
        else:
            found[current] = (line, [])
    return found


def count(pattern: str, line: str) -> int:
    match = re.search(pattern, line)
    assert match is not None, (pattern, line)
    return int(match.group(1))


def starting(lines: list[str], *words: str) -> list[str]:
    return [line for line in lines if line.startswith(words)]


@pytest.mark.parametrize("engine_under_test", DOCKER_ENGINES, indirect=True)
def test_every_figure_is_one_fact_in_the_summary_the_other_lines_v_and_the_json(
    pytester: pytest.Pytester, space: Space, pause_program: Path
) -> None:
    """One real run with every kind on, in a state where something of each kind goes,
    stays in use (a running container, a volume and images that containers use, a network
    a running container is on) and is kept: each count in the summary is the number of
    ``-v`` lines in its word and of the JSON's entries under its key."""
    pause = kinds_engine._pause_image(space, pause_program)
    write(pytester, STATE.format(pause=pause))
    report = pytester.path / "report.json"
    try:
        result = run(pytester, "-v", *options(space, report))
    finally:
        roles = space.made("state")
        space.client.remove_container(roles["running"], force=True)
    assert result.ret == 0, result.stdout.str()
    out = sections(result.stdout.str())
    data: dict[str, Any] = json.loads(report.read_text())
    _images_agree(out, data, roles)
    for kind in ALL_KINDS:
        _kind_agrees(kind, out[kind], data[kind])
    assert roles["running"] in {s["Id"] for s in data["containers"]["skipped"]}
    assert data["build_cache"]["CachesDeleted"] == []


def _images_agree(
    out: dict[str, tuple[str, list[str]]], data: dict[str, Any], roles: dict[str, str]
) -> None:
    line, lines = out["images"]
    deleted = count(r"deleted (\d+) images?", line)
    untagged = count(r"untagged (\d+)", line)
    in_use = count(r"skipped (\d+) in use", line)
    children = count(r"and (\d+) with children", line) if "with children" in line else 0
    assert deleted == len(data["deleted_ids"]) == len(starting(lines, "deleted "))
    said_untagged = [
        ref
        for each in lines
        if "; untagged " in each
        for ref in each.split("; untagged ")[1].split(", ")
    ]
    records = [r["Untagged"] for r in data["ImagesDeleted"] if "Untagged" in r]
    assert untagged == len(records) == len(said_untagged), lines
    assert sorted(records) == sorted(said_untagged)
    skipped_in_use = {s["Id"] for s in data["skipped"] if s["in_use"]}
    skipped_other = {s["Id"] for s in data["skipped"]} - skipped_in_use
    assert in_use == len(skipped_in_use)
    assert children == len(skipped_other)
    assert in_use + children == len(starting(lines, "skipped "))
    assert len(data["kept"]) == len(starting(lines, "kept "))
    assert len(lines) == deleted + in_use + children + len(data["kept"]) + len(
        starting(lines, "untagged ", "error ", "gone ", "not reached ")
    )
    hint = [each for each in out["other"][1] if " because containers use " in each]
    assert len(hint) == 1
    assert count(r"imageprune: (\d+) images? stays? because", hint[0]) == in_use
    # The state holds each of these: none of the checks above is of zero against zero.
    assert deleted, line
    assert untagged, line
    assert in_use, line
    assert data["kept"], line
    assert roles["two-tags"] in data["deleted_ids"]
    # One of its names went, the image stays (in use on the classic store; on the containerd
    # store the other name holds it, as Docker 26.1's prune leaves it).
    assert roles["held-image"] not in data["deleted_ids"]
    assert [r for r in records if "-held:" in r]
    assert roles["ride-image"] in data["deleted_ids"]  # its container went first


def _kind_agrees(kind: str, said: tuple[str, list[str]], entry: dict[str, Any]) -> None:
    line, lines = said
    gone = count(r"deleted (\d+) ", line)
    held = count(rf"skipped (\d+) {BUSY[kind]}", line)
    errors = count(r"(\d+) errors?", line)
    assert gone == len(entry[DELETED_KEY[kind]]) == len(starting(lines, "deleted "))
    assert held == len({s["Id"] for s in entry["skipped"]}) == len(starting(lines, "skipped "))
    assert errors == len(entry["errors"])
    assert len(entry["kept"]) == len(starting(lines, "kept "))
    assert gone, (kind, line)
    assert held, (kind, line)
    assert entry["kept"], (kind, line)


# -- a dry run predicts the real run ---------------------------------------------------------

#: A session's test that waits while the state is made (``WHO`` names the session).
WAITER = """
def test_wait():
    made(f"ready-{os.environ['WHO']}", 1)
    wait_for(f"go-{os.environ['WHO']}")
"""


def _start(pytester: pytest.Pytester, room: str, who: str, *args: str) -> subprocess.Popen[str]:
    """A session of its own (its lock, its registry, its room in the engine), that waits
    in its test for ``go-<who>``: the two sessions never see each other."""
    folder = pytester.path / who
    folder.mkdir()
    ROOMS.add(f"{room}-{who}")
    env = {**os.environ, "WHO": who, "PYTEST_IMAGEPRUNE_ENGINE_ROOM": f"{room}-{who}"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "test_session.py",
            f"--prune-images-lock={folder / 'prune.lock'}",
            *args,
        ],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _ready(out: Path, who: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not (out / f"ready-{who}.json").exists():
        if process.poll() is not None:
            pytest.fail(f"session {who} ended early:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, f"session {who} never started its test"
        time.sleep(0.05)


def _finish(out: Path, who: str, process: subprocess.Popen[str]) -> str:
    (out / f"go-{who}").touch()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.mark.parametrize("engine_under_test", DOCKER_ENGINES, indirect=True)
def test_a_dry_run_names_what_the_real_run_then_deletes_every_kind_on(
    pytester: pytest.Pytester, space: Space, pause_program: Path, engine_room: str
) -> None:
    """One state, made while two sessions run (so that its volumes are new to both): one
    a dry run, one real, every kind on. The dry run names exactly what the real run then
    deletes, kind by kind, containers first, and skips what it skips: what only the
    containers it deletes hold (an image, a volume) is free, and a network a running
    container is on (the engine refuses it) is never would-delete."""
    pause = kinds_engine._pause_image(space, pause_program)
    write(pytester, WAITER)
    dry_report, real_report = pytester.path / "dry.json", pytester.path / "real.json"
    dry = _start(
        pytester, engine_room, "dry", "--prune-images-dry-run", *options(space, dry_report)
    )
    real = _start(pytester, engine_room, "real", *options(space, real_report))
    try:
        _ready(space.out, "dry", dry)
        _ready(space.out, "real", real)
        roles = make_state(space.client, space.name, pause)
        said_dry = _finish(space.out, "dry", dry)
        said_real = _finish(space.out, "real", real)
    finally:
        for process in (dry, real):
            if process.poll() is None:
                process.kill()
                process.communicate()
        for container in space.client.containers(filters={"label": f"kt={space.name}"}):
            space.client.remove_container(container["Id"], force=True)  # the running one
    predicted, did = json.loads(dry_report.read_text()), json.loads(real_report.read_text())
    assert predicted["dry_run"] is True
    assert did["dry_run"] is False
    assert predicted["deleted_ids"] == did["deleted_ids"], (said_dry, said_real)
    assert _skipped(predicted) == _skipped(did), (said_dry, said_real)
    for kind, key in DELETED_KEY.items():
        # Containers in the engine's order; networks and volumes in whatever order it lists
        # them (a Go map's: it changes from one listing to the next).
        order = (lambda names: names) if kind == "containers" else sorted
        assert order(predicted[kind][key]) == order(did[kind][key]), (kind, said_dry, said_real)
        assert _skipped(predicted[kind]) == _skipped(did[kind]), (kind, said_dry, said_real)
    assert predicted["build_cache"]["CachesDeleted"] == did["build_cache"]["CachesDeleted"] == []
    # The state holds what makes a naive dry run wrong: an image and a volume only a
    # container the run deletes holds, and a network the engine refuses.
    assert roles["ride-image"] in predicted["deleted_ids"]
    assert roles["freed"] in predicted["volumes"]["VolumesDeleted"]
    assert roles["used"] not in predicted["networks"]["NetworksDeleted"]
    assert roles["stopped"] in predicted["containers"]["ContainersDeleted"]
    # Every summary figure alike, in the dry run's tense (the bytes aside: an estimate).
    assert _figures(said_dry) == _figures(said_real)


def _skipped(entry: dict[str, Any]) -> set[str]:
    return {s["Id"] for s in entry["skipped"]}


def _figures(output: str) -> list[str]:
    """The summary lines and the hint, without the bytes and the time."""
    lines = [
        re.sub(r", (would )?reclaim(ed)? [^,]*|, in [0-9.]+s", "", line)
        for line in output.split(" imageprune ", 1)[1].splitlines()[1:]
        if line.startswith("imageprune: ") and not line.startswith("imageprune: WARNING")
    ]
    return [
        line.replace("would skip", "skipped")
        .replace("would untag", "untagged")
        .replace("would delete", "deleted")
        for line in lines
    ]
