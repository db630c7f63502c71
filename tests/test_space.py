"""``SpaceReclaimed`` against the daemon's own count, where layers are shared.

Pulled and BuildKit images have no parent links, and they share lower layers: deleting
one releases only its own top layers. ``docker load`` of an archive made here in memory
gives exactly such images without a registry. The daemon prunes one copy, the engine the
other, and the bytes each reports must be equal.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator

import docker
import pytest

from pytest_imageprune.engine import DockerEngine
from pytest_imageprune.prune import prune_images
from tests.support import PrivateDockerd, connect, remove_everything

pytestmark = [pytest.mark.engine, pytest.mark.private_engine]


def _layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_archive(images: dict[str, tuple[dict[str, str], list[bytes]]]) -> bytes:
    """A ``docker save`` archive: for each tag, its labels and its layer tars."""
    blobs: dict[str, bytes] = {}
    manifest = []
    for tag, (labels, layers) in images.items():
        diff_ids = []
        names = []
        for layer in layers:
            digest = hashlib.sha256(layer).hexdigest()
            blobs[f"{digest}/layer.tar"] = layer
            diff_ids.append(f"sha256:{digest}")
            names.append(f"{digest}/layer.tar")
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {"Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created": "2024-01-01T00:00:00Z"} for _ in layers],
            }
        ).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        blobs[config_name] = config
        manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": names})
    blobs["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


BASE = _layer({"base.bin": b"b" * 40_000})
TOP_A = _layer({"a.bin": b"a" * 12_345})
MID_A = _layer({"mid.bin": b"m" * 7_000})
TOP_B = _layer({"b.bin": b"x" * 3_000})


@pytest.fixture
def engine(private_engine: PrivateDockerd) -> Iterator[docker.APIClient]:
    client = connect(private_engine.socket)
    remove_everything(client)
    yield client
    remove_everything(client)
    client.close()


def load(client: docker.APIClient) -> None:
    archive = image_archive(
        {
            "gone:1": ({"prune": "yes"}, [BASE, MID_A, TOP_A]),
            "kept:1": ({}, [BASE, TOP_B]),
            "alone:1": ({"prune": "yes"}, [_layer({"c.bin": b"c" * 999})]),
        }
    )
    for _ in client.load_image(archive):  # type: ignore[no-untyped-call]  # a stream: read it
        pass
    for image in client.images(all=True):
        assert not image["ParentId"], "loaded images have no parent links"


def test_space_reclaimed_matches_the_daemon_when_lower_layers_are_shared(
    engine: docker.APIClient, private_engine: PrivateDockerd
) -> None:
    filters = ["dangling=false", "label=prune=yes"]
    load(engine)
    daemon = engine.prune_images(filters={"dangling": ["false"], "label": ["prune=yes"]})  # type: ignore[no-untyped-call]
    remove_everything(engine)

    load(engine)
    # Through the Docker SDK, as for a tcp, TLS or ssh endpoint.
    ours = prune_images(filters, engine=DockerEngine(engine, private_engine.socket))

    assert daemon["SpaceReclaimed"] > 12_345 + 7_000  # two layers of "gone", one of "alone"
    assert ours.space_reclaimed == daemon["SpaceReclaimed"]
    assert sorted(ours.untagged) == ["alone:1", "gone:1"]
    layer_records = sorted(
        r["Deleted"]
        for r in ours.images_deleted
        if "Deleted" in r and r["Deleted"] not in ours.deleted_ids
    )
    daemon_layers = sorted(
        r["Deleted"]
        for r in daemon["ImagesDeleted"]
        if "Deleted" in r and r["Deleted"] not in ours.deleted_ids
    )
    assert layer_records == daemon_layers  # content-addressed: the same chain IDs
    assert len(layer_records) == 3  # the shared base layer stays with "kept:1"
