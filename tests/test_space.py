"""``SpaceReclaimed`` against the daemon's own count, where layers are shared.

Pulled and BuildKit images have no parent links, and they share lower layers: deleting
one releases only its own top layers. ``docker load`` of an archive made here in memory
gives exactly such images without a registry. The daemon prunes one copy, the engine the
other, and the bytes each reports must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from pytest_imageprune.engine import DockerEngine
from pytest_imageprune.prune import prune_images
from tests.support import PrivateDockerd, connect, image_archive, layer_tar, remove_everything

pytestmark = [pytest.mark.engine, pytest.mark.private_engine]


BASE = layer_tar({"base.bin": b"b" * 40_000})
TOP_A = layer_tar({"a.bin": b"a" * 12_345})
MID_A = layer_tar({"mid.bin": b"m" * 7_000})
TOP_B = layer_tar({"b.bin": b"x" * 3_000})


@pytest.fixture
def engine(private_engine: PrivateDockerd) -> Iterator[docker.APIClient]:
    client = connect(private_engine.socket)
    remove_everything(client)
    yield client
    remove_everything(client)
    client.close()


def load(client: docker.APIClient) -> None:
    archive = image_archive(
        [
            ("gone:1", {"prune": "yes"}, [BASE, MID_A, TOP_A]),
            ("kept:1", {}, [BASE, TOP_B]),
            ("alone:1", {"prune": "yes"}, [layer_tar({"c.bin": b"c" * 999})]),
        ]
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
