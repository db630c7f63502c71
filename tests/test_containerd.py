"""Docker's containerd image store without a daemon: the store's detection, its prune's
selection (R22 to R25), the session scope record by record, and the deletion plans.

The fake daemon (``tests.fakes.FakeContainerdEngine``) replays the plans' deletes on a
private copy, as ``SimulatedContainerdEngine`` does; the real Docker 26.1 on this store
checks the same rules in test_differential.py and the plugin's engine tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_imageprune.engine.store import CLASSIC, CONTAINERD, PODMAN, UNSUPPORTED, Store, detect
from pytest_imageprune.images import containerd
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.images.select import KEPT_LABELS, KEPT_TAGGED
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline, Container, Image, Snapshot
from pytest_imageprune.model.outcome import Status
from pytest_imageprune.model.report import PruneReport
from tests.fakes import FakeContainerdEngine

NOW = 1_700_000_000 * NANOS


_NAMES: dict[str, str] = {}


def digest(name: str) -> str:
    value = "sha256:" + name.encode().hex().ljust(64, "0")[:64]
    _NAMES[value] = name
    return value


def img(name: str, *tags: str, **kw: Any) -> Image:
    kw.setdefault("created_s", 1_600_000_000)
    kw.setdefault("last_tag_ns", 1_600_000_000 * NANOS)
    return Image(id=digest(name), tags=tags, **kw)


def ctr(image: str, created_with: str, running: bool = False) -> Container:
    return Container(f"c{image}".ljust(64, "0"), digest(image), running, image=created_with)


def run(snapshot: Snapshot, *filters: str, baseline: Baseline | None = None) -> PruneReport:
    return prune_images(
        list(filters),
        engine=FakeContainerdEngine(snapshot),
        baseline=baseline,
        now_ns=NOW,
        utc_offset_s=0,
    )


def gone(report: PruneReport) -> set[str]:
    return {_NAMES[i] for i in report.deleted_ids}


def untagged(report: PruneReport) -> list[str]:
    return report.untagged


# -- knowing the store ----------------------------------------------------------------------

DOCKER = {"Version": "29.4.0", "Components": [{"Name": "Engine"}]}


@pytest.mark.parametrize(
    ("version", "info", "kind"),
    [
        (DOCKER, {"OSType": "linux", "Driver": "overlay2", "DriverStatus": []}, CLASSIC),
        (
            DOCKER,
            {
                "OSType": "linux",
                "Driver": "overlayfs",
                "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
            },
            CONTAINERD,
        ),
        ({"Version": "5.4.2", "Components": [{"Name": "Podman Engine"}]}, None, PODMAN),
        (DOCKER, {"OSType": "windows", "Driver": "windowsfilter"}, UNSUPPORTED),
        (DOCKER, {"OSType": "linux", "Driver": "mystery"}, UNSUPPORTED),
        (DOCKER, None, UNSUPPORTED),
    ],
    ids=["classic", "containerd", "podman", "windows", "unknown-driver", "no-info"],
)
def test_the_store_is_told_from_the_engine(
    version: dict[str, Any], info: dict[str, Any] | None, kind: str
) -> None:
    assert detect(version, info).kind == kind


def test_an_unsupported_store_deletes_nothing_and_says_why() -> None:
    windows = Store(UNSUPPORTED, "Docker 29", "windows containers are not supported")
    snapshot = Snapshot.of([img("a")])
    report = prune_images(
        [], engine=FakeContainerdEngine(snapshot, store=windows), now_ns=NOW, utc_offset_s=0
    )
    assert report.status == Status.UNSUPPORTED_STORE
    assert not report.images_deleted
    assert "windows containers are not supported" in report.errors[0]["error"]
    assert report.to_dict()["store"]["kind"] == UNSUPPORTED


# -- selection ------------------------------------------------------------------------------


def test_dangling_means_an_untagged_record_whatever_its_children() -> None:
    # The classic builder's steps are untagged records naming their parent: no "has
    # children" rule here (R22), so the intermediate goes as well as the old head.
    snapshot = Snapshot.of(
        [
            img("base", "base:1"),
            img("step", parent=digest("base")),
            img("app", "app:1", parent=digest("step")),
            img("old", parent=digest("step")),
        ]
    )
    report = run(snapshot)
    assert gone(report) == {"step", "old"}
    assert set(report.kept.values()) == {KEPT_TAGGED}


def test_all_mode_deletes_every_unused_record_without_a_cascade() -> None:
    snapshot = Snapshot.of([img("base", "base:1"), img("app", "app:1", parent=digest("base"))])
    report = run(snapshot, "dangling=false")
    assert gone(report) == {"base", "app"}
    assert sorted(untagged(report)) == ["app:1", "base:1"]
    # The prune's records (R26): each name untagged, then the target deleted.
    assert report.images_deleted[:2] == [{"Untagged": "app:1"}, {"Deleted": digest("app")}]


def test_a_dangling_record_is_reported_untagged_by_its_digest() -> None:
    report = run(Snapshot.of([img("d")]))
    assert report.images_deleted == [{"Untagged": digest("d")}, {"Deleted": digest("d")}]


def test_a_record_named_by_digest_only_is_left_alone() -> None:
    pulled = Image(id=digest("p"), digests=("alpine@" + digest("p"),), created_s=1)
    report = run(Snapshot.of([pulled]), "dangling=false")
    assert not report.deleted_ids
    assert report.kept[digest("p")] == containerd.KEPT_DIGEST_ONLY


@pytest.mark.parametrize(
    ("created_with", "deleted", "untagged_names"),
    [
        # By name: that record stays; the others go, and the target stays.
        ("app:2", set(), ["app:1", "other:1"]),
        # By ID (full or short) or by digest: the target keeps its last name, in sorted
        # order of the full names (docker.io/library/app:1 < docker.io/library/other:1).
        (digest("app"), set(), ["app:1", "app:2"]),
        (digest("app").removeprefix("sha256:")[:12], set(), ["app:1", "app:2"]),
        ("app@" + digest("app"), set(), ["app:1", "app:2"]),
        # By repo:tag@digest: repo:tag stays (so the digest keeps a name: that one).
        ("app:2@" + digest("app"), set(), ["app:1", "other:1"]),
    ],
    ids=["by-name", "by-id", "by-short-id", "by-digest", "by-tag-and-digest"],
)
def test_containers_protect_records_as_the_daemon_does(
    created_with: str, deleted: set[str], untagged_names: list[str]
) -> None:
    snapshot = Snapshot.of([img("app", "app:1", "app:2", "other:1")], [ctr("app", created_with)])
    report = run(snapshot, "dangling=false")
    assert gone(report) == deleted
    assert sorted(untagged(report)) == untagged_names


def test_a_container_protects_the_name_it_was_created_with_wherever_it_points_now() -> None:
    # Created from app:1, which was then rebuilt: the old target is dangling, and both it
    # and the record named app:1 (now the new target) are kept (R23).
    snapshot = Snapshot.of(
        [img("old"), img("new", "app:1"), img("other", "other:1")],
        [Container("c".ljust(64, "0"), digest("old"), False, config_image="app:1")],
    )
    report = run(snapshot, "dangling=false")
    assert gone(report) == {"other"}
    assert {s.image for s in report.skipped} == {digest("old"), digest("new")}
    assert report.to_dict()["skipped"][0]["reason"].startswith("image is being used by container")


def test_a_container_of_unknown_origin_keeps_its_image_a_name() -> None:
    snapshot = Snapshot.of(
        [img("app", "app:1", "app:2")],
        [Container("c".ljust(64, "0"), digest("app"), False, image=digest("app"))],
    )
    report = run(snapshot, "dangling=false")
    assert untagged(report) == ["app:1"]
    assert not report.deleted_ids


def test_a_container_keeps_its_dangling_image_in_dangling_mode() -> None:
    snapshot = Snapshot.of([img("d"), img("e")], [ctr("d", "whatever:1")])
    report = run(snapshot)
    assert gone(report) == {"e"}


@pytest.mark.parametrize(
    ("filters", "labels", "selected"),
    [
        (["label=a"], {"a": "1"}, True),
        (["label=a=1"], {"a": "2"}, False),
        (["label!=a"], {"b": "1"}, True),
        (["label!=a=1"], {"b": "1"}, True),  # absent: passes (fixed in Docker 29.4.1)
        (["label!=a=1"], {"a": "2"}, True),
        (["label!=a=1"], {"a": "1"}, False),
        # Every check ANDed: two label! exclude an image that has either (unlike R7).
        (["label!=a", "label!=b"], {"a": "1"}, False),
        # A key ending in "!" flips the check.
        (["label=a!=1"], {"a": "2"}, True),
        (["label=a!=1"], {"a": "1"}, False),
    ],
)
def test_label_filters_follow_the_containerd_rules(
    filters: list[str], labels: dict[str, str], selected: bool
) -> None:
    snapshot = Snapshot.of([img("x", labels=labels)])
    report = run(snapshot, *filters)
    assert bool(report.deleted_ids) is selected
    if not selected:
        assert report.kept[digest("x")] == KEPT_LABELS


def test_an_image_without_labels_or_config_is_settled_by_an_inspect() -> None:
    without_config = img("x", has_config=None)

    snapshot = Snapshot.of([without_config])
    # label! passes an image with no labels, but the daemon's label filter fails one with
    # no config at all.
    report = prune_images(
        ["label!=a"],
        engine=FakeContainerdEngine(snapshot, inspect_extra={"Config": None}),
        now_ns=NOW,
        utc_offset_s=0,
    )
    assert not report.deleted_ids
    assert run(snapshot, "label!=a").deleted_ids == [digest("x")]


def test_until_compares_when_the_record_was_made_strictly() -> None:
    old = img("old", "old:1", created_s=1, last_tag_ns=NOW - 3600 * NANOS)
    # Built long ago, loaded or tagged just now: its record is new (R24).
    loaded = img("loaded", "loaded:1", created_s=1, last_tag_ns=NOW - 60 * NANOS)
    edge = img("edge", "edge:1", last_tag_ns=NOW - 600 * NANOS)
    report = run(Snapshot.of([old, loaded, edge]), "dangling=false", "until=10m")
    assert gone(report) == {"old"}
    assert report.kept[digest("edge")] == containerd.KEPT_UNTIL


def test_until_needs_the_record_time_and_asks_for_it() -> None:
    snapshot = Snapshot.of([img("x", "x:1", last_tag_ns=None)])
    report = run(snapshot, "dangling=false", "until=10m")
    assert gone(report) == {"x"}  # the fake inspect says 2020: older than 10 minutes


# -- session scope --------------------------------------------------------------------------


def test_a_session_name_on_a_target_from_before_is_untagged_and_the_image_stays() -> None:
    base = img("base", "base:1", "new:1")
    baseline = Baseline({digest("base"): ("base:1",)})
    report = run(Snapshot.of([base]), "dangling=false", baseline=baseline)
    assert untagged(report) == ["new:1"]
    assert not report.deleted_ids


def test_a_session_name_on_a_dangling_image_from_before_stays_with_it() -> None:
    # Deleting the only name would delete an image that was there before the session.
    tagged = img("d", "new:1")
    baseline = Baseline({digest("d"): ()})
    report = run(Snapshot.of([tagged]), "dangling=false", baseline=baseline)
    assert not report.images_deleted
    assert report.kept[digest("d")] == containerd.KEPT_BASELINE


def test_dangling_images_from_before_the_session_stay() -> None:
    snapshot = Snapshot.of([img("before"), img("step"), img("new")])
    baseline = Baseline({digest("before"): ()})
    assert gone(run(snapshot, baseline=baseline)) == {"step", "new"}


def test_the_old_image_of_a_rebuilt_tag_is_session_garbage() -> None:
    snapshot = Snapshot.of([img("old"), img("new", "app:1")])
    baseline = Baseline({digest("old"): ("app:1",)})
    assert gone(run(snapshot, baseline=baseline)) == {"old"}


def test_a_name_from_before_is_never_untagged() -> None:
    snapshot = Snapshot.of([img("base", "base:1", "base:2")])
    baseline = Baseline({digest("base"): ("base:1", "base:2")})
    report = run(snapshot, "dangling=false", baseline=baseline)
    assert not report.images_deleted


# -- plans ----------------------------------------------------------------------------------


def test_plans_untag_by_name_at_digest_and_delete_the_last_record_by_id() -> None:
    snapshot = Snapshot.of([img("app", "b:1", "a:1", "c:1"), img("d")])
    selection, plans = containerd.select(snapshot, parse_filters(["dangling=false"]))
    app = digest("app")
    assert plans[app].targets == (f"a:1@{app}", f"b:1@{app}", app)
    assert plans[digest("d")].targets == ("moby-dangling@" + digest("d"),)
    assert set(selection.candidates) == {app, digest("d")}


def test_a_dry_run_predicts_the_real_run() -> None:
    snapshot = Snapshot.of(
        [img("app", "a:1", "b:1"), img("d"), img("used", "u:1", "u:2")],
        [ctr("used", digest("used"))],
    )
    dry = prune_images(
        ["dangling=false"],
        engine=FakeContainerdEngine(snapshot),
        dry_run=True,
        now_ns=NOW,
        utc_offset_s=0,
    )
    real = run(snapshot, "dangling=false")
    assert dry.images_deleted == real.images_deleted
    assert dry.deleted_ids == real.deleted_ids


# -- the tag race: no look needed, the engine keeps a name given after the listing ----------


def test_a_dangling_record_tagged_after_the_listing_stays_and_is_reported_kept() -> None:
    """Tagging a dangling target removes its ``moby-dangling@`` record: the prune's delete
    of that record finds nothing (404), and the new name stays."""
    snapshot = Snapshot.of([img("old"), img("d")])
    engine = FakeContainerdEngine(snapshot, tagged_meanwhile={digest("old"): "app:2"})
    report = prune_images([], engine=engine, now_ns=NOW, utc_offset_s=0)
    assert gone(report) == {"d"}
    assert engine.snapshot().images[digest("old")].tags == ("app:2",)
    assert report.kept[digest("old")] == "tagged after the listing (app:2)"
    assert report.errors == []
    assert report.skipped == []
    assert engine.named == [digest("old")]  # asked only once the engine refused


def test_a_last_name_deleted_by_id_is_refused_when_another_came_meanwhile() -> None:
    """By ID, the containerd store refuses a target with names of other repositories or
    tags (``image is referenced in multiple repositories``): both names stay."""
    snapshot = Snapshot.of([img("app", "app:1"), img("d")])
    engine = FakeContainerdEngine(snapshot, tagged_meanwhile={digest("app"): "other:2"})
    report = prune_images(["dangling=false"], engine=engine, now_ns=NOW, utc_offset_s=0)
    assert gone(report) == {"d"}
    assert sorted(engine.snapshot().images[digest("app")].tags) == ["app:1", "other:2"]
    assert report.kept[digest("app")] == "tagged after the listing (other:2)"
    assert report.skipped == []


def test_a_name_another_live_session_gave_to_an_image_from_before_stays() -> None:
    from pytest_imageprune.coordination.evidence import protect_live
    from pytest_imageprune.coordination.records import SessionRecord

    baseline = Baseline({digest("base"): ("base:1",)})
    live = SessionRecord.new(baseline, {}, "session", NOW)
    snapshot = Snapshot.of([img("base", "base:1", "theirs:1")])
    report = prune_images(
        ["dangling=false"],
        engine=FakeContainerdEngine(snapshot),
        baseline=baseline,
        keep=protect_live([live]),
        now_ns=NOW,
        utc_offset_s=0,
    )
    assert not report.images_deleted
    assert report.kept[digest("base")].startswith("may belong to a live session")


def test_an_image_without_history_is_counted_by_its_size_and_the_prune_goes_on() -> None:
    # No history: what Docker 26.1 answers for a loaded image with no history.
    no_history = FakeContainerdEngine(
        Snapshot.of([img("x", size=1234)]),
        inspect_extra={"RootFS": {"Layers": ["sha256:" + "a" * 64]}},
        history=None,
    )
    report = prune_images([], engine=no_history, now_ns=NOW, utc_offset_s=0)
    assert report.status == "completed"
    assert report.deleted_ids == [digest("x")]
    assert report.space_reclaimed == 1234


BUILDKIT_HISTORY = [{"Size": 100, "Comment": "buildkit.dockerfile.v0"}]
CLASSIC_HISTORY = [{"Size": 100, "Comment": ""}]
SHARED = {"ID": "r1", "Type": "regular", "Size": 1234, "Shared": True}
UNSHARED = {"ID": "r2", "Type": "regular", "Size": 1234, "Shared": False}


class _CacheRefused(FakeContainerdEngine):
    def disk_usage(self, what: str) -> Any:
        from pytest_imageprune.engine.api import EngineError

        raise EngineError("build cache: 500 Server Error")


@pytest.mark.parametrize(
    ("history", "cache", "held"),
    [
        pytest.param(BUILDKIT_HISTORY, [SHARED, UNSHARED], True, id="buildkit-cache-holds"),
        pytest.param(BUILDKIT_HISTORY, [UNSHARED], False, id="buildkit-cache-shares-nothing"),
        pytest.param(BUILDKIT_HISTORY, [], False, id="buildkit-cache-empty"),
        pytest.param(CLASSIC_HISTORY, [SHARED], False, id="classic-builder"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_content_the_build_cache_holds_is_not_counted_freed(
    history: list[dict[str, Any]], cache: list[dict[str, Any]], held: bool, dry_run: bool
) -> None:
    """Measured on Docker 26.1: deleting an image BuildKit built frees its snapshots only;
    the build cache keeps its blobs (tests/test_bytes.py holds it against the disk)."""
    engine = FakeContainerdEngine(
        Snapshot.of([img("x", size=1234)]),
        inspect_extra={"RootFS": {"Layers": ["sha256:" + "a" * 64]}},
        history=history,
        cache=cache,
    )
    report = prune_images([], engine=engine, now_ns=NOW, utc_offset_s=0, dry_run=dry_run)
    assert report.deleted_ids == [digest("x")]
    assert report.space_parts == {"content": 0 if held else 1134, "snapshots": 100}
    assert report.space_reclaimed == (100 if held else 1234)
    assert report.held_by_build_cache == (1134 if held else 0)
    assert report.to_dict()["held_by_build_cache"] == report.held_by_build_cache
    asked = [q for q in engine.asked if q.startswith("disk_usage")]
    assert asked == (["disk_usage build-cache"] if history is BUILDKIT_HISTORY else [])


def test_a_build_cache_that_cannot_be_read_is_taken_to_hold_what_buildkit_built() -> None:
    engine = _CacheRefused(
        Snapshot.of([img("x", size=1234)]),
        inspect_extra={"RootFS": {"Layers": ["sha256:" + "a" * 64]}},
        history=BUILDKIT_HISTORY,
    )
    report = prune_images([], engine=engine, now_ns=NOW, utc_offset_s=0)
    assert report.status == "completed"
    assert (report.space_reclaimed, report.held_by_build_cache) == (100, 1134)


def test_the_build_cache_is_listed_on_the_connection_that_reads() -> None:
    """The reads run on several connections at once, one a thread, the prune's own among
    them: the build cache is asked on the reading thread's connection, never on another's
    (two threads on one connection left a prune on Docker 26.1 waiting forever)."""
    from pytest_imageprune.images.containerd_space import ContainerdSpace

    snapshot = Snapshot.of([img("x", size=1234)])
    options: dict[str, Any] = {
        "inspect_extra": {"RootFS": {"Layers": ["sha256:" + "a" * 64]}},
        "history": BUILDKIT_HISTORY,
        "cache": [SHARED],
    }
    own, twin = FakeContainerdEngine(snapshot, **options), FakeContainerdEngine(snapshot, **options)
    space = ContainerdSpace(snapshot, [digest("x")], cache=own)
    space.fetch(twin, digest("x"))
    assert "disk_usage build-cache" in twin.asked
    assert not own.asked
