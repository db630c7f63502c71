"""Tests that build images the way test suites do; the plugin prunes what they leave.

``bash examples/run`` runs them with ``--prune-images=label=imageprune.example=yes``: the
plugin records the images present when the session starts and, at its end, deletes the
dangling ones the session produced that carry the label, as ``docker image prune`` would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

APP = Path(__file__).resolve().parent.parent / "app"
#: Tagged before the session by examples/run; rebuilt here, so its old image is left untagged.
REBUILT = "imageprune-example/app:1"


@pytest.fixture(scope="module")
def client():
    client = docker.from_env()
    yield client
    client.close()


def context(tmp_path: Path, version: str) -> Path:
    """The app's build context with a version and a megabyte of its own: a new image, whose
    layer the prune frees."""
    folder = tmp_path / f"app-{version}"
    shutil.copytree(APP, folder)
    (folder / "version.txt").write_text(version + "\n")
    (folder / "payload.bin").write_bytes(os.urandom(1_000_000))
    return folder


def test_the_sdk_builds_an_image(client, tmp_path, imageprune_label):
    # images.build keeps each step's container unless rm=True: they hold the step images.
    image, _ = client.images.build(path=str(context(tmp_path, "sdk")), labels=imageprune_label)
    assert image.labels["imageprune.example"] == "yes"


def test_the_docker_cli_builds_an_image(tmp_path):
    # The classic builder (DOCKER_BUILDKIT=0), as many CI scripts still call it; untagged,
    # the test keeps the ID the build prints.
    built = subprocess.run(
        ["docker", "build", "-q", str(context(tmp_path, "cli"))],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert built.stdout.strip().startswith("sha256:")


def test_a_tag_is_rebuilt(client, tmp_path):
    # REBUILT existed before the session; building the tag again leaves the old image
    # untagged, and the plugin deletes it (session garbage, though it was there before).
    client.images.build(path=str(context(tmp_path, "2")), tag=REBUILT, rm=True)


def test_a_container_is_left_behind(client, tmp_path):
    image, _ = client.images.build(path=str(context(tmp_path, "used")), rm=True)
    client.containers.create(image.id, command="/nothing")  # created, never removed
