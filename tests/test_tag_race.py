"""The tag race on a real daemon: a name another client gives a candidate after the listing.

Deterministic, without timing: the plugin's engine is wrapped so that another client tags
one image just before the engine receives a chosen request about it (the look at its
names, or its deletion), which is the moment the race needs. Classic store: the look right
before a deletion by ID keeps the image; a name given after that look goes with the image,
as the daemon's own prune would take one given after its own re-read (docs/rules.md, R14).
Containerd store: the engine itself keeps the name (R22, R26).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import docker
import pytest

from pytest_imageprune.engine.api import Record
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images.prune import prune_images
from tests.support import PrivateDockerd, emptied, image_archive, layer_tar
from tests.test_differential import daemon, store

pytestmark = [pytest.mark.engine, pytest.mark.private_engine]

__all__ = ["daemon", "store"]  # the fixtures, used by name: a private engine of each store


class Meanwhile(DockerEngine):
    """The plugin's engine, on one connection; ``hook(asked, target)`` runs before each look
    at an image's names ("names"), each history ("history") and each deletion ("delete")
    is sent."""

    def __init__(self, endpoint: str, hook: Callable[[str, str], None]) -> None:
        super().__init__(None, endpoint)
        self.hook = hook

    def look(self, image_id: str) -> Mapping[str, Any]:
        self.hook("names", image_id)
        return super().look(image_id)

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        self.hook("history", image_id)
        return super().history(image_id)

    def delete(self, target: str) -> list[Record]:
        self.hook("delete", target)
        return super().delete(target)


@pytest.fixture
def client(daemon: PrivateDockerd) -> Iterator[docker.APIClient]:
    with emptied(daemon.socket) as client:
        yield client


def untagged(client: docker.APIClient, count: int = 3) -> list[str]:
    """``count`` loaded images without a name (dangling), labelled ``race``; their IDs."""
    archive = image_archive(
        [
            (None, {"race": "yes", "n": str(n)}, [layer_tar({f"{n}.bin": b"r" * 100})])
            for n in range(count)
        ]
    )
    for _ in client.load_image(archive):  # type: ignore[no-untyped-call]  # a stream: read it
        pass
    images = client.images(all=True, filters={"label": "race"})
    assert all(not i["RepoTags"] or i["RepoTags"] == ["<none>:<none>"] for i in images)
    return sorted(i["Id"] for i in images)


def tag_on(
    client: docker.APIClient, asked: tuple[str, ...], image_id: str
) -> Callable[[str, str], None]:
    """Tag ``image_id`` ``late:1`` from another client, once, before the first of the
    requests ``asked`` about it."""
    done: list[bool] = []

    def hook(what: str, target: str) -> None:
        if not done and what in asked and target.endswith(image_id):
            done.append(True)
            client.tag(image_id, "late", "1")

    return hook


@pytest.mark.parametrize("filters", [["label=race"], ["label=race", "dangling=false"]])
def test_a_candidate_tagged_after_the_listing_stays_with_its_name(
    daemon: PrivateDockerd, client: docker.APIClient, filters: list[str]
) -> None:
    a, b, c = untagged(client)
    engine = Meanwhile(daemon.socket, tag_on(client, ("names", "delete"), b))
    try:
        report = prune_images(filters, engine=engine, concurrency=1)
    finally:
        engine.close()
    assert report.status == "completed"
    assert set(report.deleted_ids) == {a, c}
    assert client.inspect_image(b)["RepoTags"] == ["late:1"]  # type: ignore[no-untyped-call]
    assert report.kept[b] == "tagged after the listing (late:1)"
    assert "late:1" not in report.untagged


@pytest.mark.parametrize("store", ["classic"], indirect=True)  # containerd: no look (R22)
def test_a_name_given_while_the_history_is_read_at_the_look_stays_on_the_classic_store(
    daemon: PrivateDockerd, client: docker.APIClient
) -> None:
    """An untagged image of two layers, with neither parent nor child, has its layers read
    from the look at its names, and its history after that: a name given meanwhile is seen
    by the look made again before the deletion."""
    archive = image_archive(
        [
            (
                None,
                {"race": "yes"},
                [layer_tar({"low.bin": b"l" * 300}), layer_tar({"top.bin": b"t" * 200})],
            )
        ]
    )
    for _ in client.load_image(archive):  # type: ignore[no-untyped-call]  # a stream: read it
        pass
    (image,) = [i["Id"] for i in client.images(all=True, filters={"label": "race"})]
    asked: list[str] = []
    tag = tag_on(client, ("history",), image)

    def hook(what: str, target: str) -> None:
        asked.append(what)
        tag(what, target)

    engine = Meanwhile(daemon.socket, hook)
    try:
        report = prune_images(["label=race"], engine=engine, concurrency=1)
    finally:
        engine.close()
    assert asked == ["names", "history", "names"]
    assert report.deleted_ids == []
    assert client.inspect_image(image)["RepoTags"] == ["late:1"]  # type: ignore[no-untyped-call]
    assert report.kept[image] == "tagged after the listing (late:1)"


def test_a_name_given_after_the_look_goes_on_the_classic_store_and_stays_on_containerd(
    store: str, daemon: PrivateDockerd, client: docker.APIClient
) -> None:
    """The window left: tagged as its deletion is sent. By ID, the classic store deletes an
    image's single name with it; the containerd store's dangling record is gone with the
    tag, and the new name stays."""
    _, b, _ = untagged(client)
    engine = Meanwhile(daemon.socket, tag_on(client, ("delete",), b))
    try:
        report = prune_images(["label=race"], engine=engine, concurrency=1)
    finally:
        engine.close()
    if store == "classic":
        assert b in report.deleted_ids
        assert report.untagged == ["late:1"]
        assert b not in {i["Id"] for i in client.images(all=True)}
    else:
        assert b not in report.deleted_ids
        assert client.inspect_image(b)["RepoTags"] == ["late:1"]  # type: ignore[no-untyped-call]
        assert report.kept[b] == "tagged after the listing (late:1)"
