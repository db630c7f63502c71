"""Selection (R9 to R12) and deletion (R14 to R17) without a daemon.

The fake daemon is ``SimulatedEngine``, the dry run's replay of the classic store's
``ImageDelete``; with faults, ``tests.fakes.FakeEngine`` on it. The real daemon checks the
same rules in test_differential.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pytest_imageprune.engine.api import Conflict, EngineError, Record
from pytest_imageprune.engine.simulate import SimulatedEngine
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.images.select import KEPT_LABELS, KEPT_UNTIL, select
from pytest_imageprune.images.space import SpaceCounter, chain_ids, read_ahead
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import (
    Baseline,
    Container,
    Image,
    Snapshot,
    is_single_reference,
    normalize_reference,
)
from pytest_imageprune.model.outcome import Outcome, Status
from pytest_imageprune.model.report import PruneReport, detail_lines, human_size
from tests.fakes import FakeEngine

NOW = 1_700_000_000 * NANOS


def img(name: str, parent: str | None = None, *refs: str, **kw: Any) -> Image:
    tags = tuple(r for r in refs if "@" not in r)
    digests = tuple(r for r in refs if "@" in r)
    kw.setdefault("created_s", 1_600_000_000)
    return Image(id=name, parent=parent, tags=tags, digests=digests, **kw)


def run(snapshot: Snapshot, *filters: str, baseline: Baseline | None = None) -> PruneReport:
    return prune_images(
        list(filters),
        engine=SimulatedEngine(snapshot),
        baseline=baseline,
        now_ns=NOW,
        utc_offset_s=0,
    )


def worked_scenario(container_on: str = "used") -> Snapshot:
    """The specification's worked scenario on the classic store (R10 to R16, docs/rules.md)."""
    return Snapshot.of(
        [
            img("base", None, "base:1", size=100),
            img("i1", "base", size=110),
            img("app", "i1", "app:1", size=120),
            img("old", "i1", size=130),
            img("pd", None, "pd@sha256:" + "1" * 64, size=5),
            img("used", None, size=7),
        ],
        [Container("c" * 64, container_on, running=False)]
        + ([Container("d" * 64, "used", running=False)] if container_on != "used" else []),
    )


@pytest.mark.parametrize(
    ("filters", "container_on", "deleted", "untagged"),
    [
        pytest.param((), "used", {"old", "pd"}, {"pd@sha256:" + "1" * 64}, id="dangling"),
        pytest.param(
            ("dangling=false",),
            "used",
            {"old", "pd", "app", "i1", "base"},
            {"pd@sha256:" + "1" * 64, "app:1", "base:1"},
            id="all",
        ),
        pytest.param(
            ("dangling=false",),
            "app",
            {"old", "pd"},
            {"pd@sha256:" + "1" * 64, "base:1"},
            id="all-container-on-app",
        ),
    ],
)
def test_worked_scenario(
    filters: tuple[str, ...], container_on: str, deleted: set[str], untagged: set[str]
) -> None:
    report = run(worked_scenario(container_on), *filters)
    assert set(report.deleted_ids) == deleted
    assert set(report.untagged) == untagged
    assert "used" not in report.deleted_ids
    assert any(s.image == "used" and s.in_use for s in report.skipped)


def test_dangling_mode_keeps_untagged_parents_with_children() -> None:
    snapshot = worked_scenario()
    selection = select(snapshot, parse_filters([]))
    assert "i1" not in selection.candidates
    assert set(selection.candidates) == {"old", "pd", "used"}


def test_all_mode_skips_untagged_intermediates_but_takes_tagged_parents() -> None:
    selection = select(worked_scenario(), parse_filters(["dangling=false"]))
    assert set(selection.candidates) == {"base", "app", "old", "pd", "used"}


BUSYBOX = "busybox"


def tagged_in_use(*refs: str, running: bool = True) -> Snapshot:
    return Snapshot.of([img("x", None, *refs)], [Container("c" * 64, "x", running)])


@pytest.mark.parametrize(
    ("refs", "mode", "untagged", "deleted"),
    [
        pytest.param(("busybox:latest",), "dangling=false", [], False, id="single-tag-in-use"),
        pytest.param(
            ("busybox:a", "busybox:latest"), "dangling=false", ["busybox:a"], False, id="two-tags"
        ),
        pytest.param(
            tuple(f"busybox:{t}" for t in "aehjoqrstwz"),
            "dangling=false",
            [f"busybox:{t}" for t in "aehjoqrstw"],
            False,
            id="eleven-tags-keep-last",
        ),
        pytest.param(
            ("a:1", "a@sha256:" + "d" * 64, "b:1"),
            "dangling=false",
            ["a:1", "a@sha256:" + "d" * 64],
            False,
            id="digest-goes-with-its-tag",
        ),
        pytest.param(
            ("x@sha256:" + "1" * 64, "y@sha256:" + "2" * 64),
            "dangling=true",
            ["x@sha256:" + "1" * 64],
            False,
            id="digest-only-in-use-dangling-mode",
        ),
        pytest.param(("busybox:latest",), "dangling=true", [], False, id="tagged-not-dangling"),
        pytest.param(
            ("x@sha256:" + "1" * 64,),
            "dangling=true",
            [],
            False,
            id="digest-only-in-use-single-reference",
        ),
    ],
)
def test_references_of_an_image_in_use(
    refs: tuple[str, ...], mode: str, untagged: list[str], deleted: bool
) -> None:
    """moby integration/image/prune_test.go, replayed (R15)."""
    report = run(tagged_in_use(*refs), mode)
    assert report.untagged == untagged
    assert ("x" in report.deleted_ids) is deleted
    assert not report.errors


def test_label_not_with_no_value_excludes_every_configured_image() -> None:
    """R7 via ``Contains("label!")``: only the API form can say ``{"label!": []}``."""
    from pytest_imageprune.model.filters import Filters

    filters = Filters.from_mapping({"label!": []})
    snapshot = Snapshot.of(
        [img("labelled", labels={"a": "1"}), img("bare"), img("no-config", has_config=False)]
    )
    truth = {i.id: i for i in snapshot.images.values()}
    truth["bare"] = Image(**{**vars(truth["bare"]), "has_config": True})
    report = prune_images(filters, engine=FakeEngine(snapshot, truth=truth), now_ns=NOW)
    assert report.deleted_ids == ["no-config"]


def test_unused_tagged_image_untagged_then_deleted() -> None:
    report = run(Snapshot.of([img("x", None, "b:1", "a:1")]), "dangling=false")
    assert report.untagged == ["a:1", "b:1"]
    assert report.deleted_ids == ["x"]


def test_cascade_stops_at_a_digest_reference_and_the_second_prune_finishes() -> None:
    """moby/moby#44623 (R16): you need to prune twice."""
    digest = "bash@sha256:" + "e" * 64
    engine = SimulatedEngine(Snapshot.of([img("B", None, digest), img("C", "B")]))
    first = prune_images([], engine=engine, now_ns=NOW)
    assert first.deleted_ids == ["C"]
    second = prune_images([], engine=engine, now_ns=NOW)
    assert second.deleted_ids == ["B"]
    assert second.untagged == [digest]


def test_cascade_removes_untagged_ancestors_left_without_children() -> None:
    snapshot = Snapshot.of([img("a"), img("b", "a"), img("c", "b"), img("d", "a")])
    report = run(snapshot)
    assert report.deleted_ids == ["c", "b", "d", "a"]


def test_filters_apply_to_candidates_only_never_to_the_cascade() -> None:
    snapshot = Snapshot.of([img("a", labels=None), img("b", "a", labels={"keep": "no"})])
    report = run(snapshot, "label=keep")
    assert report.deleted_ids == ["b", "a"]


# -- session scope -------------------------------------------------------------------------
def test_session_scope_keeps_baseline_images() -> None:
    before = Snapshot.of([img("old1"), img("old2", None, "app:1")])
    baseline = Baseline.of(before)
    after = Snapshot.of([img("old1"), img("old2", None, "app:1"), img("new")])
    report = run(after, "dangling=false", baseline=baseline)
    assert report.deleted_ids == ["new"]
    assert report.scope == "session"


def test_a_rebuilt_tag_orphans_the_old_image_which_is_session_garbage() -> None:
    baseline = Baseline.of(Snapshot.of([img("v1", None, "app:latest"), img("untouched")]))
    after = Snapshot.of([img("v1"), img("v2", None, "app:latest"), img("untouched")])
    assert run(after, baseline=baseline).deleted_ids == ["v1"]


def test_a_baseline_image_that_gained_a_tag_is_not_session_garbage() -> None:
    baseline = Baseline.of(Snapshot.of([img("base", None, "a:1")]))
    after = Snapshot.of([img("base", None, "a:1", "b:1")])
    report = run(after, "dangling=false", baseline=baseline)
    assert report.untagged == []
    assert report.deleted_ids == []


def test_baseline_round_trips_through_json() -> None:
    baseline = Baseline({"x": ("a:1",), "y": ()}, 42)
    assert Baseline.from_json(baseline.to_json()) == baseline


# -- until and labels that the list cannot decide ------------------------------------------
def test_until_boundary_is_inclusive_on_nanoseconds() -> None:
    boundary = NOW - 10 * NANOS
    exact = img("exact", created_s=boundary // NANOS, created_ns=boundary, has_config=True)
    late = img("late", created_s=boundary // NANOS, created_ns=boundary + 1, has_config=True)
    selection = select(Snapshot.of([exact, late]), parse_filters(["until=10s"]), until_ns=boundary)
    assert selection.candidates == ("exact",)
    assert selection.kept == {"late": KEPT_UNTIL}


def test_until_within_the_same_second_is_settled_by_an_inspect() -> None:
    boundary = NOW - 10 * NANOS
    same_second = boundary // NANOS
    images = [
        img("before", created_s=same_second, created_ns=boundary - 5),
        img("after", created_s=same_second, created_ns=boundary + 5),
        img("older", created_s=same_second - 1),
    ]
    listed = Snapshot.of([Image(**{**vars(i), "created_ns": None}) for i in images])
    selection = select(listed, parse_filters(["until=10s"]), until_ns=boundary)
    assert set(selection.undecided) == {"before", "after"}
    engine = FakeEngine(listed, truth={i.id: i for i in images})
    report = prune_images(["until=10s"], engine=engine, now_ns=NOW)
    assert set(report.deleted_ids) == {"before", "older"}


def test_labels_null_is_settled_by_an_inspect() -> None:
    no_config = img("no-config", labels=None)
    no_labels = img("no-labels", labels=None)
    labelled = img("labelled", labels={"ci": "1"})
    truth = {
        "no-config": Image(**{**vars(no_config), "has_config": False}),
        "no-labels": Image(**{**vars(no_labels), "has_config": True}),
        "labelled": labelled,
    }
    engine = FakeEngine(Snapshot.of([no_config, no_labels, labelled]), truth=truth)
    report = prune_images(["label=ci"], engine=engine, now_ns=NOW)
    # R7: an image without a config skips the label filters and stays a candidate.
    assert set(report.deleted_ids) == {"no-config", "labelled"}
    assert report.kept == {"no-labels": KEPT_LABELS}
    assert set(engine.inspected) == {"no-config", "no-labels"}


def test_label_not_alone_needs_no_inspect() -> None:
    engine = FakeEngine(Snapshot.of([img("bare", labels=None)]), truth={})
    report = prune_images(["label!=keep"], engine=engine, now_ns=NOW)
    assert report.deleted_ids == ["bare"]
    assert set(engine.inspected) == set()


# -- failures, cancellation, deadlines -----------------------------------------------------
def _three() -> Snapshot:
    return Snapshot.of([img("a"), img("b"), img("c")])


def test_an_engine_error_is_recorded_and_the_prune_goes_on() -> None:
    engine = FakeEngine(_three(), faults={"b": EngineError("500: boom")})
    report = prune_images([], engine=engine)
    assert report.deleted_ids == ["a", "c"]
    assert report.errors == [{"Id": "b", "Reference": "b", "error": "500: boom"}]


def test_a_conflict_is_a_skip_not_an_error() -> None:
    engine = FakeEngine(_three(), faults={"b": Conflict("conflict: in use")})
    report = prune_images([], engine=engine)
    assert [s.image for s in report.skipped] == ["b"]
    assert report.errors == []


def test_keyboard_interrupt_stops_and_returns_the_partial_report() -> None:
    engine = FakeEngine(_three(), faults={"b": KeyboardInterrupt()})
    report = prune_images([], engine=engine)
    assert report.status == Status.CANCELLED
    assert report.deleted_ids == ["a"]
    assert engine.calls == ["a", "b"]


def test_a_lost_engine_stops_the_loop_with_a_status() -> None:
    engine = FakeEngine(_three(), faults={"b": EngineUnavailable("unix:///x.sock", "gone")})
    report = prune_images([], engine=engine)
    assert report.status == Status.ENGINE_LOST
    assert report.deleted_ids == ["a"]
    assert "unix:///x.sock" in report.errors[0]["error"]


def test_a_spent_deadline_deletes_nothing_more() -> None:
    engine = FakeEngine(_three(), faults={})
    report = prune_images([], engine=engine, deadline=0.0)
    assert report.status == Status.DEADLINE
    assert engine.calls == []


def test_dry_run_deletes_nothing_and_predicts_the_cascade() -> None:
    snapshot = Snapshot.of([img("a"), img("b", "a")])
    engine = FakeEngine(snapshot)
    report = prune_images([], engine=engine, dry_run=True)
    assert report.deleted_ids == ["b", "a"]
    assert engine.calls == []
    assert report.to_dict()["dry_run"] is True


# -- SpaceReclaimed ------------------------------------------------------------------------
def test_space_counts_released_layers_only() -> None:
    snapshot = Snapshot.of([img("root", size=100), img("child", "root", size=130)])
    counter = SpaceCounter(snapshot)
    assert counter.count([{"Untagged": "x:1"}, {"Deleted": "child"}]) == 0
    records = [{"Deleted": "child"}, {"Deleted": "sha256:l2"}, {"Deleted": "root"}]
    assert counter.count(records) == 30
    assert counter.count([{"Deleted": "root"}, {"Deleted": "sha256:l1"}]) == 100


#: Three layers of 7, 20 and 100 bytes under every image.
_LAYERED: dict[str, Any] = {
    "layers": ["sha256:d1", "sha256:d2", "sha256:d3"],
    "history": [{"Size": 7}, {"Size": 0}, {"Size": 20}, {"Size": 0}, {"Size": 100}],
}
_CHAIN = chain_ids(["sha256:d1", "sha256:d2", "sha256:d3"])
#: Deleting "app" releases its top two layers: the bottom one is shared with another image.
_RELEASED = [{"Deleted": "app"}, {"Deleted": _CHAIN[2]}, {"Deleted": _CHAIN[1]}]


def test_space_of_a_parentless_image_uses_its_layer_sizes() -> None:
    snapshot = Snapshot.of([img("app", size=127)])
    counter = SpaceCounter(snapshot)
    counter.fetch(FakeEngine(snapshot, **_LAYERED), "app")
    assert counter.count(_RELEASED) == 27


def test_a_lost_engine_while_reading_layers_stops_the_prune() -> None:
    snapshot = Snapshot.of([img("app", None, "app:1", size=127)])
    lost = FakeEngine(
        snapshot, **_LAYERED, inspect_fault=EngineUnavailable("unix:///x.sock", "gone")
    )
    report = prune_images(["dangling=false"], engine=lost)
    assert report.status == Status.ENGINE_LOST
    assert report.deleted_ids == []
    assert lost.inspected == ["app"]


def test_known_layers_are_never_read() -> None:
    snapshot = Snapshot.of([img("app", size=127)])
    known = {"app": {_CHAIN[2]: 100, _CHAIN[1]: 20, _CHAIN[0]: 7}}
    counter = SpaceCounter(snapshot, known=known)
    engine = FakeEngine(snapshot, **_LAYERED)
    assert counter.roots(["app"]) == []
    assert counter.count(_RELEASED) == 120  # the known sizes of the two released layers
    counter.fetch(engine, "app")
    assert engine.inspected == []
    assert counter.count(_RELEASED) == 120  # 100 + 20


@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_layer_is_read_before_the_first_deletion(concurrency: int) -> None:
    """The engine takes longer over reads made between deletions: so none is, but the look
    at an untagged image's names right before its deletion by ID."""
    roots = [img(f"app{n}", None, f"app{n}:1", size=127) for n in range(4)]
    parents = [img(f"base{n}", size=100) for n in range(4)]
    children = [img(f"child{n}", f"base{n}", size=127) for n in range(4)]
    snapshot = Snapshot.of([*roots, *parents, *children])
    engine = FakeEngine(snapshot, **_LAYERED, connections=concurrency)
    report = prune_images(["dangling=false"], engine=engine, concurrency=concurrency)
    deleted = [*(f"app{n}" for n in range(4)), *(f"base{n}" for n in range(4))]
    assert sorted(report.deleted_ids) == sorted([*deleted, *(f"child{n}" for n in range(4))])
    # The tagged roots, and the parents a child's deletion releases with it, all first,
    # each with its history; each deletion by ID right after a look at the image's names
    # (the tag race).
    assert sorted(engine.log[:16]) == sorted(["read", "history"] * 8)
    assert {"read", "history"}.isdisjoint(engine.log[16:])
    assert sorted(engine.inspected) == sorted(deleted)


class _Releasing(FakeEngine):
    """Each deletion releases the image's top two layers (``_RELEASED``)."""

    def delete(self, target: str) -> list[Record]:
        return [*super().delete(target), *_RELEASED[1:]]


def _alone(count: int = 8) -> Snapshot:
    """Untagged images with neither parent nor child, as loaded or pulled ones are."""
    return Snapshot.of([img(f"app{n}", size=127) for n in range(count)])


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_look_at_an_image_alone_of_one_layer_reads_it(concurrency: int) -> None:
    """Untagged, with neither parent nor child, an image's layers are released by its own
    deletion alone: the look at its names (the same ``GET /images/{id}/json``) lists them,
    and one layer's size is the image's: one request before its deletion, not two."""

    class ReleasingOne(FakeEngine):
        def delete(self, target: str) -> list[Record]:
            return [*super().delete(target), {"Deleted": "sha256:d1"}]

    engine = ReleasingOne(_alone(), layers=["sha256:d1"], connections=concurrency)
    report = prune_images([], engine=engine, concurrency=concurrency)
    assert sorted(report.deleted_ids) == [f"app{n}" for n in range(8)]
    assert sorted(engine.log) == sorted(["names", "delete"] * 8)
    if concurrency == 1:
        assert engine.log == ["names", "delete"] * 8
    assert engine.inspected == []
    assert report.space_reclaimed == 8 * 127


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_look_at_an_image_alone_of_several_layers_is_made_again_after_its_history(
    concurrency: int,
) -> None:
    """Several layers: their sizes need the history, read after the look; the names are
    looked at again after it, so that the gap before the deletion stays one request's."""
    engine = _Releasing(_alone(), **_LAYERED, connections=concurrency)
    report = prune_images([], engine=engine, concurrency=concurrency)
    assert sorted(report.deleted_ids) == [f"app{n}" for n in range(8)]
    assert sorted(engine.log) == sorted(["names", "history", "names", "delete"] * 8)
    if concurrency == 1:
        assert engine.log == ["names", "history", "names", "delete"] * 8
    assert engine.inspected == []
    # The released layers' own sizes (7 + 20), not the whole image's 127: they were read.
    assert report.space_reclaimed == 8 * 27


def test_a_name_given_while_the_history_is_read_stays_with_its_image() -> None:
    """The tag race (R14) in the gap the history read leaves after the first look."""
    engine = FakeEngine(
        _alone(1), **_LAYERED, tagged_meanwhile={"app0": "precious:1"}, tagged_on="history"
    )
    report = prune_images([], engine=engine)
    assert report.deleted_ids == []
    assert report.kept["app0"] == "tagged after the listing (precious:1)"
    assert engine.log == ["names", "history", "names"]
    assert engine.snapshot().images["app0"].tags == ("precious:1",)


def test_a_lost_engine_while_reading_a_history_at_the_look_stops_the_prune() -> None:
    class Lost(FakeEngine):
        def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
            raise EngineUnavailable("unix:///x.sock", "gone")

    engine = Lost(_alone(2), **_LAYERED)
    report = prune_images([], engine=engine)
    assert report.status == Status.ENGINE_LOST
    assert report.deleted_ids == []
    assert "delete" not in engine.log


def test_images_alone_are_read_ahead_and_then_only_looked_at() -> None:
    """While the tests run (scope "all"), ``read_ahead`` reads them too: the prune then
    sends nothing between a look and a deletion."""
    snapshot = _alone(3)
    known: dict[str, dict[str, int]] = {}
    reader = FakeEngine(snapshot, **_LAYERED)
    read_ahead(reader, snapshot, sorted(snapshot.images), known, threading.Event())
    assert sorted(known) == ["app0", "app1", "app2"]
    engine = _Releasing(snapshot, **_LAYERED)
    report = prune_images([], engine=engine, known_layers=known)
    assert engine.log == ["names", "delete"] * 3
    assert report.space_reclaimed == 3 * 27


def test_a_size_read_before_is_kept_when_a_history_does_not_match_its_layers() -> None:
    """A history whose steps do not match the layers gives the whole size to the bottom
    one: a size read before, for the same content, stays."""
    snapshot = _alone(1)
    counter = SpaceCounter(snapshot, known={"other": {_CHAIN[0]: 100}})
    engine = FakeEngine(snapshot, layers=_LAYERED["layers"], history=[{"Size": 5}])
    assert counter.roots(["app0"]) == []
    counter.take(engine, "app0", engine.inspect("app0"))
    assert counter.layer_sizes[_CHAIN[0]] == 100


def test_a_lost_engine_while_reading_layers_on_several_connections_deletes_nothing() -> None:
    snapshot = Snapshot.of([img(f"app{n}", None, f"app{n}:1", size=127) for n in range(8)])
    lost = FakeEngine(
        snapshot,
        **_LAYERED,
        inspect_fault=EngineUnavailable("unix:///x.sock", "gone"),
        connections=4,
    )
    report = prune_images(["dangling=false"], engine=lost, concurrency=4)
    assert report.status == Status.ENGINE_LOST
    assert report.deleted_ids == []
    assert "delete" not in lost.log
    assert 1 <= len(lost.log) <= 4  # each connection stops at its first failure


def test_chain_ids_follow_the_image_spec() -> None:
    import hashlib

    chain = chain_ids(["sha256:a", "sha256:b"])
    assert chain[0] == "sha256:a"
    assert chain[1] == "sha256:" + hashlib.sha256(b"sha256:a sha256:b").hexdigest()


# -- references and reports ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("busybox:latest", "docker.io/library/busybox:latest"),
        ("user/app:1", "docker.io/user/app:1"),
        ("localhost:5000/app:1", "localhost:5000/app:1"),
        ("ghcr.io/o/app@sha256:ab", "ghcr.io/o/app@sha256:ab"),
        ("a@sha256:ab", "docker.io/library/a@sha256:ab"),
    ],
)
def test_normalize_reference(ref: str, normalized: str) -> None:
    assert normalize_reference(ref) == normalized


def test_refs_sort_by_normalised_name_across_repositories() -> None:
    # "ghcr.io/..." sorts before "docker.io/..." is false: d < g.
    image = img("x", None, "ghcr.io/o/a:1", "zzz:1")
    assert image.refs == ("zzz:1", "ghcr.io/o/a:1")


@pytest.mark.parametrize(
    ("refs", "single"),
    [
        ((), False),
        (("a:1",), True),
        (("a:1", "a@sha256:d"), True),
        (("a:1", "a:2"), False),
        (("a@sha256:1", "b@sha256:2"), False),
        (("a:1", "b@sha256:2"), False),
    ],
)
def test_is_single_reference(refs: tuple[str, ...], single: bool) -> None:
    assert is_single_reference(refs) is single


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (999, "999B"), (1000, "1kB"), (1_234_567, "1.235MB"), (5 * 10**9, "5GB")],
)
def test_human_size_is_dockers(size: int, text: str) -> None:
    assert human_size(size) == text


def test_report_has_dockers_shape() -> None:
    report = run(Snapshot.of([img("a")]))
    assert report.to_docker() == {"ImagesDeleted": [{"Deleted": "a"}], "SpaceReclaimed": 0}
    empty = run(Snapshot.of([img("a", None, "t:1")]))
    assert empty.to_docker() == {"ImagesDeleted": None, "SpaceReclaimed": 0}
    data = empty.to_dict()
    assert data["ImagesDeleted"] == []
    assert set(data) >= {
        "ImagesDeleted",
        "SpaceReclaimed",
        "status",
        "scope",
        "filters",
        "dry_run",
        "skipped",
        "errors",
        "duration_s",
    }


def test_an_image_already_gone_is_fine() -> None:
    from pytest_imageprune.engine.api import Gone

    engine = FakeEngine(_three(), faults={"b": Gone("No such image: b")})
    report = prune_images([], engine=engine)
    assert report.deleted_ids == ["a", "c"]
    assert report.errors == []
    assert report.skipped == []


def test_a_malformed_answer_in_a_worker_keeps_what_was_done() -> None:
    """Two connections; one gets nonsense: the other's deletions are still reported."""

    snapshot = Snapshot.of([img("a"), img("b"), img("c")])
    serial = prune_images([], engine=FakeEngine(snapshot, faults={"b": ValueError("not JSON")}))
    assert serial.status == "failed"
    assert serial.deleted_ids == ["a"]  # done before the failure: reported
    assert any("not JSON" in e.get("error", "") for e in serial.errors)
    twins = prune_images(
        [], engine=FakeEngine(snapshot, faults={"b": ValueError("x")}, connections=2), concurrency=2
    )
    assert twins.status == "failed"
    assert set(twins.deleted_ids) <= {"a", "c"}


# -- the tag race: a name given after the listing ---------------------------------------


@pytest.mark.parametrize("filters", [(), ("dangling=false",)], ids=["dangling", "all"])
def test_a_candidate_tagged_after_the_listing_stays_with_its_name(filters: tuple[str, ...]) -> None:
    """Another client tags an untagged candidate between the listing and its deletion (just
    before the engine answers the prune's first question about it): the image stays, with
    its new name, and is reported kept; the rest of the prune goes on."""
    engine = FakeEngine(_three(), tagged_meanwhile={"b": "app:2"})
    report = prune_images(list(filters), engine=engine)
    assert report.status == Status.COMPLETED
    assert report.deleted_ids == ["a", "c"]
    assert report.untagged == []
    assert engine.snapshot().images["b"].tags == ("app:2",)
    assert report.kept["b"] == "tagged after the listing (app:2)"
    assert report.errors == []
    assert report.skipped == []
    # Not the session's image any more: nothing stays owed for it.
    assert not Outcome(report=report).owed
    lines = detail_lines(report)
    assert [line for line in lines if line.split(":")[0].endswith(" b")] == [
        "kept b: tagged after the listing (app:2)"
    ]


def test_each_untagged_candidate_is_checked_right_before_its_deletion() -> None:
    """The window left is one request's gap: the look at the names, then the deletion, on
    one connection; a tagged candidate goes name by name and needs no look."""
    snapshot = Snapshot.of([img("a"), img("b", None, "b:1"), img("c")])
    engine = FakeEngine(snapshot)
    report = prune_images(["dangling=false"], engine=engine)
    assert report.deleted_ids == ["a", "b", "c"]
    assert engine.named == ["a", "c"]
    assert engine.log == ["names", "delete", "delete", "names", "delete"]


def test_a_name_given_between_the_check_and_the_deletion_goes_as_in_dockers_prune() -> None:
    """The window that remains: a name given after the check goes with the image, as a name
    given between the daemon's own check and its deletion does (docs/rules.md, R14)."""
    engine = FakeEngine(_three(), tagged_meanwhile={"b": "app:2"}, tagged_on="delete")
    report = prune_images([], engine=engine)
    assert report.deleted_ids == ["a", "b", "c"]
    assert report.untagged == ["app:2"]


def test_names_given_after_the_check_that_the_engine_refuses_are_reported_kept() -> None:
    """Two names given in the window left: the daemon refuses the deletion by ID (referenced
    in multiple repositories), and the prune says why the image stays."""
    engine = FakeEngine(_three(), tagged_meanwhile={"b": ("app:2", "other:3")}, tagged_on="delete")
    report = prune_images([], engine=engine)
    assert report.deleted_ids == ["a", "c"]
    assert report.kept["b"] == "tagged after the listing (app:2, other:3)"
    assert report.skipped == []


def test_a_candidate_gone_by_its_check_is_not_deleted_again() -> None:
    listed = _three()
    engine = FakeEngine(listed)
    del engine.refs["b"]  # removed meanwhile by another client
    report = prune_images([], engine=engine, snapshot=listed)
    assert engine.calls == ["a", "c"]
    assert report.deleted_ids == ["a", "c"]
    assert report.errors == []
    assert report.kept == {}


def test_a_candidate_whose_names_cannot_be_read_is_not_deleted() -> None:
    engine = FakeEngine(_three(), names_faults={"b": EngineError("500: boom")})
    report = prune_images([], engine=engine)
    assert report.deleted_ids == ["a", "c"]
    assert engine.calls == ["a", "c"]
    assert report.errors == [
        {"Id": "b", "Reference": "b", "error": "could not read its names first: 500: boom"}
    ]


def test_a_dry_run_asks_the_engine_nothing_of_names() -> None:
    engine = FakeEngine(_three(), tagged_meanwhile={"b": "app:2"})
    report = prune_images([], engine=engine, dry_run=True)
    assert report.deleted_ids == ["a", "b", "c"]
    assert engine.named == []
    assert engine.calls == []


def _timed_prune(images: list[Image], *filters: str, dry_run: bool) -> tuple[PruneReport, float]:
    """The prune's report, and the least CPU time of three runs (the machine's noise)."""
    took = []
    for _ in range(3):
        snapshot = Snapshot.of(images)
        started = time.process_time()
        report = prune_images(
            list(filters),
            engine=SimulatedEngine(snapshot),
            dry_run=dry_run,
            now_ns=NOW,
            utc_offset_s=0,
            snapshot=snapshot,
        )
        took.append(time.process_time() - started)
    return report, min(took)


def _images(count: int) -> list[Image]:
    return [img(f"i{n}", None, *((f"app{n}:1",) if n % 2 else ())) for n in range(count)]


def _growth(filters: tuple[str, ...], dry_run: bool, count: int) -> float:
    """How much more work four times the images take: about 4 when it grows linearly,
    about 16 when it grows as their square. A ratio of two runs of the same process, not a
    time: no machine is too slow for it."""
    _, small = _timed_prune(_images(count), *filters, dry_run=dry_run)
    report, large = _timed_prune(_images(4 * count), *filters, dry_run=dry_run)
    assert len(report.deleted_ids) >= 2 * count, report.to_dict()["errors"][:3]
    return large / max(small, 1e-6)


def test_a_dry_run_of_many_images_takes_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dry run replays each deletion on the snapshot: asking which image a name named
    went through every image's names, so a dry run of N images took N squared steps
    (10,000, half of them tagged: 13 s on one core). Counted, not timed: the names read
    for four times the images (linear: 4 times as many; it was 48 times)."""
    from pytest_imageprune.engine import simulate
    from pytest_imageprune.model.images import normalize_reference as normalize

    read = [0]

    def counted(ref: str) -> str:
        read[0] += 1
        return normalize(ref)

    monkeypatch.setattr(simulate, "normalize_reference", counted)
    counts = []
    for count in (1_000, 4_000):
        read[0] = 0
        report, _ = _timed_prune(_images(count), "dangling=false", dry_run=True)
        assert len(report.deleted_ids) == count, report.to_dict()["errors"][:3]
        counts.append(read[0])
    assert counts[1] <= 5 * counts[0], counts


def test_a_prune_that_keeps_many_and_deletes_many_takes_linear_time() -> None:
    """What the prune keeps is checked against what it deleted: the set of those was made
    again for every image kept (15,000 tagged images kept, 15,000 dangling ones deleted:
    N squared steps, some 14 s here)."""
    growth = _growth((), False, 5_000)
    assert growth < 9, f"4 times the images took {growth:.1f} times the CPU"


@pytest.mark.parametrize(
    ("item", "made"),
    [
        (
            {
                "Id": "sha256:a",
                "ParentId": "",
                "RepoTags": ["<none>:<none>"],
                "RepoDigests": ["<none>@<none>"],
                "Created": 5,
                "Size": 7,
                "Labels": None,
            },
            Image(id="sha256:a", created_s=5, size=7),
        ),
        (
            {
                "Id": "b",
                "ParentId": "a",
                "RepoTags": ["app:1", "<none>:<none>"],
                "RepoDigests": ["app@sha256:d"],
                "Created": None,
                "Labels": {"k": "v"},
            },
            Image(
                id="sha256:b",
                parent="sha256:a",
                tags=("app:1",),
                digests=("app@sha256:d",),
                labels={"k": "v"},
            ),
        ),
        ({"Id": "sha256:c", "RepoTags": None, "RepoDigests": None}, Image(id="sha256:c")),
    ],
    ids=["placeholders", "names-and-parent", "nulls"],
)
def test_an_image_read_from_the_listing_is_the_image_the_constructor_makes(
    item: dict[str, Any], made: Image
) -> None:
    """The listing's images are made without the dataclass's constructor, for speed."""
    read = Image.from_api(item)
    assert read == made
    assert vars(read) == vars(made)
    assert read.refs == made.refs
