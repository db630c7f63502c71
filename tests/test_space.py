"""``SpaceReclaimed`` against the daemon's own count, where layers are shared.

Pulled and BuildKit images have no parent links, and they share lower layers: deleting
one releases only its own top layers. ``docker load`` of an archive made here in memory
gives exactly such images without a registry. The daemon prunes one copy, the engine the
other, and the bytes each reports must be equal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import docker
import pytest

from pytest_imageprune.engine.api import Record
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.images.space import read_ahead
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.report import PruneReport
from pytest_imageprune.session.lifecycle import PruneSession
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


FILTERS = ["dangling=false", "label=prune=yes"]


class Counting(DockerEngine):
    """The lean unix-socket engine, noting the candidates it inspects (its twins too), and
    the order of its reads and deletions.

    (The selection inspects "kept:1" too: its list entry says ``Labels: null``.)
    """

    inspected: ClassVar[list[str]] = []
    candidates: ClassVar[set[str]] = set()
    requests: ClassVar[list[str]] = []

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        if image_id in Counting.candidates:
            Counting.inspected.append(image_id)
            Counting.requests.append("read")
        return super().inspect(image_id)

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        if image_id in Counting.candidates:
            Counting.requests.append("history")
        return super().history(image_id)

    def delete(self, target: str) -> list[Record]:
        Counting.requests.append("delete")
        return super().delete(target)


def labelled(client: docker.APIClient) -> set[str]:
    """The loaded images the filters select; ``Counting`` notes their inspects from now."""
    Counting.inspected, Counting.requests = [], []
    Counting.candidates = {i["Id"] for i in client.images(all=True, filters={"label": "prune"})}
    assert len(Counting.candidates) == 2
    return Counting.candidates


def daemon_prune(client: docker.APIClient) -> dict[str, Any]:
    """The daemon's own prune of the loaded images; the engine is left empty."""
    load(client)
    answer: dict[str, Any] = client.prune_images(  # type: ignore[no-untyped-call]
        filters={"dangling": ["false"], "label": ["prune=yes"]}
    )
    remove_everything(client)
    assert answer["SpaceReclaimed"] > 12_345 + 7_000  # two layers of "gone", one of "alone"
    return answer


def daemon_then_load(client: docker.APIClient) -> dict[str, Any]:
    """The daemon's prune of one copy; then the other copy loaded, its candidates noted."""
    daemon = daemon_prune(client)
    load(client)
    labelled(client)
    return daemon


def test_space_reclaimed_matches_the_daemon_when_lower_layers_are_shared(
    engine: docker.APIClient, private_engine: PrivateDockerd
) -> None:
    daemon = daemon_prune(engine)

    load(engine)
    # Through the Docker SDK, as for a tcp, TLS or ssh endpoint.
    ours = prune_images(FILTERS, engine=DockerEngine(engine, private_engine.socket))

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


def assert_same_as_the_daemon(ours: PruneReport, daemon: dict[str, Any]) -> None:
    assert ours.space_reclaimed == daemon["SpaceReclaimed"]
    assert sorted(ours.images_deleted, key=str) == sorted(daemon["ImagesDeleted"], key=str)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_unix_socket_client_counts_the_same_at_any_concurrency(
    engine: docker.APIClient, private_engine: PrivateDockerd, concurrency: int
) -> None:
    """One request at a time, or four in flight: each parentless candidate is read once."""
    daemon = daemon_then_load(engine)
    ours = prune_images(
        FILTERS, engine=Counting(None, private_engine.socket), concurrency=concurrency
    )
    assert_same_as_the_daemon(ours, daemon)
    assert sorted(Counting.inspected) == sorted(Counting.candidates)  # once each
    # Every read comes first (the three layers of "gone:1" with their history).
    assert sorted(Counting.requests[:3]) == ["history", "read", "read"]
    assert Counting.requests[3:] == ["delete", "delete"]


class Looking(Counting):
    """``Counting``, noting the looks at names before deletions by ID too."""

    def look(self, image_id: str) -> Mapping[str, Any]:
        Counting.requests.append("look")
        return super().look(image_id)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_look_at_an_untagged_image_alone_reads_its_layers(
    engine: docker.APIClient, private_engine: PrivateDockerd, concurrency: int
) -> None:
    """Untagged, with neither parent nor child, a candidate's layers are read from the look
    at its names right before its deletion by ID, and the bytes are the daemon's own: a
    shared lower layer stays. One layer: the look alone, not a read and a look. Three: a
    history gives their sizes, and the names are looked at again after it (R14)."""

    def load_untagged() -> None:
        archive = image_archive(
            [
                (None, {"prune": "yes"}, [BASE, MID_A, TOP_A]),
                ("kept:1", {}, [BASE, TOP_B]),
                (None, {"prune": "yes"}, [layer_tar({"c.bin": b"c" * 999})]),
            ]
        )
        for _ in engine.load_image(archive):  # type: ignore[no-untyped-call]  # a stream
            pass

    load_untagged()
    daemon: dict[str, Any] = engine.prune_images(  # type: ignore[no-untyped-call]
        filters={"label": ["prune=yes"]}
    )
    remove_everything(engine)
    assert daemon["SpaceReclaimed"] >= 12_345 + 7_000 + 999  # the two top layers, and one
    load_untagged()
    labelled(engine)
    ours = prune_images(
        ["label=prune=yes"], engine=Looking(None, private_engine.socket), concurrency=concurrency
    )
    assert_same_as_the_daemon(ours, daemon)
    assert sorted(ours.deleted_ids) == sorted(Counting.candidates)
    assert Counting.inspected == []  # no read before the deletions: the looks read them
    assert sorted(Counting.requests) == ["delete", "delete", "history", "look", "look", "look"]
    if concurrency == 1:  # in the listing's order, whichever comes first
        three = ["look", "history", "look", "delete"]
        assert Counting.requests in ([*three, "look", "delete"], ["look", "delete", *three])


def test_layers_read_ahead_are_not_read_again(
    engine: docker.APIClient, private_engine: PrivateDockerd
) -> None:
    daemon = daemon_then_load(engine)
    reader = DockerEngine(None, private_engine.socket)
    snapshot = reader.snapshot()
    candidates = sorted(Counting.candidates)
    known: dict[str, dict[str, int]] = {}
    read_ahead(reader, snapshot, candidates, known, threading.Event())
    reader.close()
    assert sorted(known) == candidates

    ours = prune_images(FILTERS, engine=Counting(None, private_engine.socket), known_layers=known)
    assert_same_as_the_daemon(ours, daemon)
    assert Counting.inspected == []


def test_a_stopped_read_ahead_reads_nothing(
    engine: docker.APIClient, private_engine: PrivateDockerd
) -> None:
    load(engine)
    candidates = sorted(labelled(engine))
    reader = Counting(None, private_engine.socket)
    stop = threading.Event()
    stop.set()  # the session ended before the reader began
    known: dict[str, dict[str, int]] = {}
    read_ahead(reader, reader.snapshot(), candidates, known, stop)
    reader.close()
    assert known == {}
    assert Counting.inspected == []


def test_a_scope_all_session_reads_ahead_while_the_tests_run(
    engine: docker.APIClient, private_engine: PrivateDockerd, tmp_path: Path
) -> None:
    daemon = daemon_then_load(engine)
    session = PruneSession(
        parse_filters(FILTERS),
        scope="all",
        lock_path=tmp_path / "prune.lock",
        engine=Counting(None, private_engine.socket),
    )
    session.start(background=True)
    session.wait_started()
    assert session.started.reader is not None
    session.started.reader.join()  # the tests ran long enough to read everything
    read = list(Counting.inspected)
    assert len(read) == 2

    session.finish()
    assert session.report is not None
    assert session.report.status == "completed", session.lines
    assert_same_as_the_daemon(session.report, daemon)
    assert Counting.inspected == read  # the prune read nothing again


def test_a_session_scope_session_does_not_read_ahead(
    engine: docker.APIClient, private_engine: PrivateDockerd, tmp_path: Path
) -> None:
    load(engine)
    session = PruneSession(
        parse_filters(FILTERS),
        lock_path=tmp_path / "prune.lock",
        engine=DockerEngine(None, private_engine.socket),
    )
    session.start(background=True)
    session.wait_started()
    assert session.started.reader is None  # what it will prune is not built yet
    session.finish()
    assert session.report is not None
    assert session.report.deleted_ids == []  # the loaded images were there before


def test_an_abandoned_session_reads_nothing_and_lets_the_engine_go(
    engine: docker.APIClient, private_engine: PrivateDockerd, tmp_path: Path
) -> None:
    """Started early, then never to finish (its settings changed, or pytest stopped)."""
    load(engine)
    labelled(engine)
    reader = Counting(None, private_engine.socket)
    session = PruneSession(
        parse_filters(FILTERS), scope="all", lock_path=tmp_path / "prune.lock", engine=reader
    )
    session.start(background=True)
    session.abandon()  # while the engine lists its images
    assert session.started.starter is not None
    session.started.starter.join()
    assert session.baseline is not None  # the listing it had asked for came in
    assert session.started.reader is None  # but nothing is read ahead for a prune that never comes
    assert Counting.inspected == []
    assert reader._http is not None
    assert reader._http._made is None or reader._http._made._sock is None  # closed
