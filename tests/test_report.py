"""What the terminal and the JSON report say, on reports from the simulated daemon.

One line per image with ``-v``, never two that contradict each other; the images a
deletion took that were there before the session, with their tags then; a hint when
containers hold images; a dry run in one tense; counts that reconcile with the JSON.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pytest_imageprune.budget.apply import BudgetReport
from pytest_imageprune.budget.size import Budget
from pytest_imageprune.engine.simulate import SimulatedEngine
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.kinds.filters import KindFilters
from pytest_imageprune.kinds.report import KindReport
from pytest_imageprune.kinds.table import KINDS
from pytest_imageprune.model.images import Baseline, Container, Image, Snapshot
from pytest_imageprune.model.report import (
    PruneReport,
    cache_hint,
    detail_lines,
    held_hint,
    summary_line,
)

NOW = 1_700_000_000 * 1_000_000_000


def img(name: str, parent: str | None = None, *tags: str, **kw: Any) -> Image:
    kw.setdefault("created_s", 1_600_000_000)
    kw.setdefault("size", 10)
    return Image(
        id=f"sha256:{name}", parent=f"sha256:{parent}" if parent else None, tags=tags, **kw
    )


def run(
    snapshot: Snapshot, *filters: str, baseline: Baseline | None = None, dry_run: bool = False
) -> PruneReport:
    return prune_images(
        list(filters),
        engine=SimulatedEngine(snapshot),
        baseline=baseline,
        dry_run=dry_run,
        now_ns=NOW,
        utc_offset_s=0,
    )


def lines_about(report: PruneReport, name: str) -> list[str]:
    return [line for line in detail_lines(report) if f" {name[:12]}" in line]


def test_an_image_the_cascade_took_is_said_once_as_deleted() -> None:
    """Kept at selection (it had children), then taken by the daemon's parent cascade."""
    baseline = Baseline({})
    report = run(Snapshot.of([img("step", None), img("head", "step")]), baseline=baseline)
    assert report.deleted_ids == ["sha256:head", "sha256:step"]
    assert lines_about(report, "step") == [
        "deleted step: parent cascade (untagged, and left without children)"
    ]
    assert lines_about(report, "head") == ["deleted head: matches the filters"]


def test_a_deleted_image_from_before_the_session_shows_its_tag_then() -> None:
    """The old image of a rebuilt tag, and its parent that the cascade took."""
    before = Snapshot.of([img("base", None), img("old", "base", "app:1")])
    after = Snapshot.of([img("base", None), img("old", "base"), img("new", None, "app:1")])
    report = run(after, baseline=Baseline.of(before))
    assert report.preexisting == {"sha256:old": ("app:1",), "sha256:base": ()}
    assert lines_about(report, "old") == [
        "deleted old: matches the filters; there before the session (tagged app:1 then)"
    ]
    assert lines_about(report, "base") == [
        "deleted base: parent cascade (untagged, and left without children); there before the"
        " session (untagged then)"
    ]
    assert report.to_dict()["preexisting"] == {"sha256:old": ["app:1"], "sha256:base": []}


def test_images_that_containers_hold_are_named_and_the_summary_says_what_to_do() -> None:
    """The Docker SDK's images.build leaves each step's container: the step images stay."""
    snapshot = Snapshot.of(
        [img("step", None), img("head", "step"), img("used", None)],
        [
            Container("c1" * 32, "sha256:step", running=False),
            Container("c2" * 32, "sha256:used", running=False),
        ],
    )
    report = run(snapshot, baseline=Baseline({}))
    assert report.deleted_ids == ["sha256:head"]
    # The step stays once its child went only because c1 uses it (the cascade would have
    # taken it): skipped in use, as the candidate c2 holds is, in every output alike.
    assert lines_about(report, "step") == ["skipped step: used by container c1c1c1c1c1c1"]
    assert [line for line in lines_about(report, "used") if line.startswith("skipped ")]
    assert report.held == ["sha256:step", "sha256:used"]
    assert "skipped 2 in use" in summary_line(report)
    assert {s["Id"] for s in report.to_dict()["skipped"] if s["in_use"]} == set(report.held)
    assert "sha256:step" not in {k["Id"] for k in report.to_dict()["kept"]}
    assert held_hint(report) == (
        "2 images stay because containers use them, stopped ones too: remove those containers"
        " in the tests' teardown (the Docker SDK's images.build keeps each build step's"
        " container unless rm=True; docker build removes them). -v names them"
    )


def test_no_hint_when_no_container_holds_anything() -> None:
    report = run(Snapshot.of([img("step", None), img("head", "step")]), baseline=Baseline({}))
    assert held_hint(report) is None


def test_a_dry_run_speaks_in_one_tense() -> None:
    snapshot = Snapshot.of([img("step", None), img("head", "step"), img("t", None, "app:1")])
    report = run(snapshot, "dangling=false", baseline=Baseline({}), dry_run=True)
    line = summary_line(report)
    assert re.fullmatch(
        r"would delete 3 images, would untag 1, would skip 0 in use, 0 errors,"
        r" would reclaim 20B \(estimated\), in \d+\.\d\ds",
        line,
    ), line
    assert all(line.startswith(("would ", "kept ")) for line in detail_lines(report))


def test_the_terminal_count_is_the_json_deleted_ids() -> None:
    """``ImagesDeleted`` may hold layer records too (Docker's shape); ``deleted_ids`` lists
    the images, one each, as the terminal counts them."""
    report = run(Snapshot.of([img("step", None), img("head", "step")]), baseline=Baseline({}))
    report.images_deleted.append({"Deleted": "sha256:" + "f" * 64})  # a layer, as Docker sends
    data = report.to_dict()
    count = int(re.match(r"deleted (\d+) images", summary_line(report)).group(1))  # type: ignore[union-attr]
    assert count == len(data["deleted_ids"]) == 2
    assert set(data["deleted_ids"]) <= {r.get("Deleted") for r in data["ImagesDeleted"]}


def test_every_key_of_the_json_report_is_documented() -> None:
    """docs/report.md has a row for each key the report writes (``sessions``, ``images`` and
    ``budget`` included, which the plugin adds), one for each key of another kind's entry,
    and one for each key of the budget's."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "report.md").read_text()
    images, _, kinds = docs.partition("## Other kinds")
    kinds, _, budget = kinds.partition("## The storage budget")
    documented = set(re.findall(r"^\| `([A-Za-z_]+)` \|", images, re.M))
    report = run(Snapshot.of([img("a", None)]), baseline=Baseline({}))
    report.space_parts = {"content": 0, "snapshots": 0}  # written on the containerd store
    assert documented == {*report.to_dict(), "sessions", "images", "budget"}
    documented = {
        key
        for row in re.findall(r"^\| (`.+`) \|", budget, re.M)
        for key in re.findall(r"`([A-Za-z_]+)`", row.split(" | ")[0])
    }
    assert documented == set(BudgetReport(Budget(1, "1B")).to_dict())
    documented = {
        key
        for row in re.findall(r"^\| (`.+`) \|", kinds, re.M)
        for key in re.findall(r"`([A-Za-z_]+)`", row.split(" | ")[0])
    }
    written = set()
    for kind in KINDS:
        written |= set(KindReport(kind, KindFilters(kind)).to_dict())
    assert documented == written


def test_a_tagged_image_a_container_uses_is_not_said_to_be_held() -> None:
    """It stays because it is tagged (dangling mode), container or not."""
    snapshot = Snapshot.of(
        [img("app", None, "app:1")], [Container("c1" * 32, "sha256:app", running=True)]
    )
    report = run(snapshot, baseline=Baseline({}))
    assert report.held == []
    assert held_hint(report) is None
    assert lines_about(report, "app") == ["kept app (app:1): tagged"]


def test_what_the_build_cache_keeps_is_said_with_what_frees_it() -> None:
    report = run(Snapshot.of([img("a", None)]), baseline=Baseline({}))
    assert cache_hint(report) is None
    report.held_by_build_cache = 1_578_235
    assert cache_hint(report) == (
        "1.578MB more stays in the build cache; --prune-build-cache frees it"
    )
    assert cache_hint(report, cache_pruned=True) == (
        "1.578MB more stays in the build cache; the build cache line counts what its prune freed"
    )
    report.dry_run = True
    assert cache_hint(report) == (
        "1.578MB more would stay in the build cache; --prune-build-cache frees it"
    )
