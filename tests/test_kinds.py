"""The other kinds a session prunes (``kinds``), without an engine: their filters, which
objects are candidates, the report, the session record, the options and ini keys."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.coordination.records import SessionRecord
from pytest_imageprune.engine.api import Conflict
from pytest_imageprune.errors import FilterError
from pytest_imageprune.github import step_summary
from pytest_imageprune.kinds.filters import KindFilters, parse_kind_filters
from pytest_imageprune.kinds.prune import prune_kind
from pytest_imageprune.kinds.report import KindReport
from pytest_imageprune.kinds.select import START_SLACK_NS, Live, select
from pytest_imageprune.kinds.table import BUILD_CACHE, CONTAINERS, KINDS, NETWORKS, VOLUMES
from pytest_imageprune.kinds.things import ANONYMOUS, Thing, listing
from pytest_imageprune.model.filters import parse_filters, parse_until
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Baseline, Container, Image, Snapshot
from pytest_imageprune.model.outcome import is_live
from pytest_imageprune.model.report import PruneReport
from pytest_imageprune.session.lifecycle import PruneSession
from pytest_imageprune.settings import load_settings
from tests.fakes import FakeEngine

UNREACHABLE = "unix:///nonexistent/imageprune-kinds-test.sock"
#: Go's ``strconv.ParseBool``, and what it refuses.
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
NOT_BOOL = ("yes", "no", "tRUE", "on", "2", "")
#: A fixed now, 2024-01-15T10:00:00Z, and a session that started an hour before it.
NOW = parse_until("2024-01-15T10:00:00Z", 0, 0)
STARTED = NOW - 3600 * NANOS


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    """``DOCKER_HOST`` names a socket nobody listens on: no engine answers."""
    monkeypatch.setenv("DOCKER_HOST", UNREACHABLE)
    return UNREACHABLE


# -- filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "accepted"),
    [
        (CONTAINERS, ("until", "label", "label!")),
        (NETWORKS, ("until", "label", "label!")),
        (VOLUMES, ("label", "label!", "all")),
        (BUILD_CACHE, ("until", "all", "type", "description")),
    ],
)
def test_each_kind_takes_its_docker_commands_filters(kind: str, accepted: tuple[str, ...]) -> None:
    assert KINDS[kind].accepted == accepted
    samples = {
        "until": "until=24h",
        "label": "label=ci",
        "label!": "label!=keep=yes",
        "all": "all=true",
        "type": "type=regular",
        "description": "description=mount / from exec /bin/sh",
    }
    filters = parse_kind_filters(kind, [samples[key] for key in accepted])
    assert filters.kind == kind
    assert set(filters.raw) == set(accepted)
    for key in accepted:
        assert filters.raw[key] == (samples[key].partition("=")[2],)
    assert filters.to_docker() == {key: list(filters.raw[key]) for key in sorted(accepted)}
    for key in set(samples) - set(accepted) | {"dangling", "id", "reference", "unused-for"}:
        with pytest.raises(FilterError) as caught:
            parse_kind_filters(kind, [f"{key}=x", *(samples[k] for k in accepted)])
        assert caught.value.key == key
        assert caught.value.texts == (f"{key}=x",)
        with pytest.raises(FilterError) as caught:
            KindFilters.from_mapping(kind, {key: ["x"]})
        assert caught.value.key == key


def test_from_mapping_takes_a_string_or_strings_and_keeps_them_sorted_and_unique() -> None:
    filters = KindFilters.from_mapping(CONTAINERS, {"label": ["b", "a", "b"], "until": "1h"})
    assert dict(filters.raw) == {"label": ("a", "b"), "until": ("1h",)}
    assert filters.label == frozenset({"a", "b"})
    assert filters.until == "1h"
    # The same until twice is one until, as the daemon's filter set holds it.
    assert KindFilters.from_mapping(NETWORKS, {"until": ["1h", "1h"]}).until == "1h"


def test_the_command_line_form_is_read_as_the_docker_cli_reads_it() -> None:
    filters = parse_kind_filters(CONTAINERS, [" LABEL = a=1 ", "", "label!=b", "", "until=1h"])
    assert filters.label == frozenset({"a=1"})
    assert filters.label_not == frozenset({"b"})
    assert filters.until == "1h"
    # Empty values (a bare option) are skipped: no filter at all.
    bare = parse_kind_filters(VOLUMES, ["", ""])
    assert dict(bare.raw) == {}
    assert bare == KindFilters(VOLUMES)
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(NETWORKS, ["label=a", "everything"])
    assert caught.value.key is None
    assert caught.value.texts == ("everything",)


@pytest.mark.parametrize(
    ("labels", "label", "label_not", "matches"),
    [
        pytest.param({}, [], [], True, id="no-filter"),
        pytest.param(None, [], [], True, id="no-labels-no-filter"),
        pytest.param({"a": "1"}, ["a"], [], True, id="key"),
        pytest.param({"a": "1"}, ["a=1"], [], True, id="key-value"),
        pytest.param({"a": "1"}, ["a=2"], [], False, id="other-value"),
        pytest.param({"a": ""}, ["a="], [], True, id="empty-value"),
        pytest.param({"a": "1"}, ["a="], [], False, id="empty-value-wanted"),
        pytest.param({"a": "1"}, ["a", "b"], [], False, id="label-is-anded"),
        pytest.param({"a": "1", "b": "2"}, ["a", "b=2"], [], True, id="both"),
        pytest.param(None, ["a"], [], False, id="no-labels"),
        pytest.param({"a": "1"}, [], ["a"], False, id="excluded"),
        pytest.param({"a": "1"}, [], ["a=2"], True, id="excluded-other-value"),
        pytest.param({"a": "1"}, [], ["a", "b"], True, id="not-every-label-not-matches"),
        pytest.param({"a": "1", "b": "x"}, [], ["a", "b"], False, id="every-label-not-matches"),
        pytest.param(None, [], ["a"], True, id="no-labels-not-excluded"),
        pytest.param({"a": "1", "k": "v"}, ["a"], ["k=v"], False, id="label-and-excluded"),
        pytest.param({"a": "1", "k": "w"}, ["a"], ["k=v"], True, id="label-not-excluded"),
    ],
)
def test_labels_match_as_mobys_match_labels(
    labels: dict[str, str] | None, label: list[str], label_not: list[str], matches: bool
) -> None:
    for kind in (CONTAINERS, NETWORKS, VOLUMES):
        args = {key: values for key, values in (("label", label), ("label!", label_not)) if values}
        filters = KindFilters.from_mapping(kind, args)
        assert filters.match_labels(labels) is matches
        typed = [f"label={v}" for v in label] + [f"label!={v}" for v in label_not]
        assert parse_kind_filters(kind, typed).match_labels(labels) is matches


@pytest.mark.parametrize("kind", [CONTAINERS, NETWORKS, BUILD_CACHE])
def test_until_is_a_time_and_only_one(kind: str) -> None:
    for value in ("10m", "1h30m", "2024-01-15", "2024-01-15T10:00:00Z", "1700000000"):
        assert parse_kind_filters(kind, [f"until={value}"]).until == value
    filters = parse_kind_filters(kind, ["until=1h"])
    assert filters.until_ns(NOW, 0) == NOW - 3600 * NANOS
    assert KindFilters(kind).until_ns(NOW, 0) is None
    for bad in ("yesterday", "1d", "until="):
        with pytest.raises(FilterError) as caught:
            parse_kind_filters(kind, [f"until={bad}"])
        assert caught.value.key == "until"
        assert caught.value.values == (bad,)
        assert caught.value.texts == (f"until={bad}",)
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(kind, ["until=1h", "until=2h"])
    assert caught.value.key == "until"
    assert caught.value.values == ("1h", "2h")
    assert caught.value.texts == ("until=1h", "until=2h")


@pytest.mark.parametrize("kind", [VOLUMES, BUILD_CACHE])
def test_all_is_a_go_bool(kind: str) -> None:
    for value in GO_TRUE:
        assert parse_kind_filters(kind, [f"all={value}"]).all is True
    for value in GO_FALSE:
        assert parse_kind_filters(kind, [f"all={value}"]).all is False
    assert parse_kind_filters(kind, []).all is None
    for value in NOT_BOOL:
        with pytest.raises(FilterError) as caught:
            parse_kind_filters(kind, [f"all={value}"])
        assert caught.value.key == "all"
        assert caught.value.values == (value,)
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(kind, ["all=true", "all=false"])
    assert caught.value.key == "all"


def test_type_is_one_of_buildkits_record_types() -> None:
    for value in (
        "regular",
        "source.local",
        "source.git.checkout",
        "exec.cachemount",
        "internal",
        "frontend",
    ):
        assert parse_kind_filters(BUILD_CACHE, [f"type={value}"]).type == value
    for bad in ("Regular", "source", "image", "exec.cachemount "):
        with pytest.raises(FilterError) as caught:
            KindFilters.from_mapping(BUILD_CACHE, {"type": [bad]})
        assert caught.value.key == "type"
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(BUILD_CACHE, ["type=regular", "type=internal"])
    assert caught.value.key == "type"
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(BUILD_CACHE, ["description=a", "description=b"])
    assert caught.value.key == "description"


@pytest.mark.parametrize("key", ["label", "label!"])
def test_the_build_cache_has_no_labels(key: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_kind_filters(BUILD_CACHE, [f"{key}=ci"])
    assert caught.value.key == key
    from pytest_imageprune.kinds.filters import kind_usage_error

    said = kind_usage_error(KINDS[BUILD_CACHE], caught.value, None)
    assert said == (
        f"--prune-build-cache={key}=ci (command line): {key!r} is not a filter docker builder"
        " prune takes here. The filters are until, all, type, description (the build cache"
        " has no labels: docker builder prune ignores them)"
    )


# -- select -----------------------------------------------------------------------------


def _select(
    things: list[Thing],
    kind: str,
    filters: Sequence[str] = (),
    *,
    baseline: frozenset[str] | None = frozenset(),
    live: Sequence[Live] = (),
    anonymous_only: bool = False,
) -> tuple[list[str], dict[str, str]]:
    candidates, kept = select(
        things,
        parse_kind_filters(kind, filters),
        baseline=baseline,
        started_ns=STARTED,
        live=live,
        now_ns=NOW,
        anonymous_only=anonymous_only,
    )
    return [t.id for t in candidates], kept


def _new(thing_id: str, **kw: Any) -> Thing:
    """Made during the session, last used during it (for a cache record)."""
    kw.setdefault("created_ns", STARTED + NANOS)
    return Thing(thing_id, thing_id, **kw)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_baseline_is_out_of_scope_and_said_nowhere(kind: str) -> None:
    things = [_new("old"), _new("new"), _new("also-old")]
    ids, kept = _select(things, kind, baseline=frozenset({"old", "also-old"}))
    assert ids == ["new"]
    assert kept == {}
    # Scope all: no baseline, every object is in scope, in listing order.
    ids, kept = _select(things, kind, baseline=None)
    assert ids == ["old", "new", "also-old"]
    assert kept == {}


def test_a_cache_record_created_before_the_session_started_is_kept() -> None:
    things = [
        _new("long-before", created_ns=STARTED - 60 * NANOS),
        _new("just-outside", created_ns=STARTED - START_SLACK_NS - 1),
        _new("within-slack", created_ns=STARTED - START_SLACK_NS),
        _new("unknown", created_ns=None),
        _new("during"),
    ]
    ids, kept = _select(things, BUILD_CACHE)
    assert ids == ["within-slack", "during"]
    before = "created before this session started"
    assert kept == {"long-before": before, "just-outside": before, "unknown": before}
    # Scope all (no baseline): when it was made does not matter.
    ids, kept = _select(things, BUILD_CACHE, baseline=None)
    assert ids == [t.id for t in things]
    # Other kinds: older than the start, yet absent from the lists taken then, is not the
    # session's either; an unknown time leaves it to the lists.
    for kind in (CONTAINERS, NETWORKS, VOLUMES):
        assert _select(things, kind)[0] == ["within-slack", "unknown", "during"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_live_session_that_listed_nothing_keeps_everything(kind: str) -> None:
    """A session that did not list the kind at its start (an images-only session): what
    was there then is unknown, so everything is kept for it, made before its start or
    after (the first version let one made before its start go, which its tests may use)."""
    live = Live(None, "pid 42 on elsewhere")
    ids, kept = _select([_new("a"), _new("b")], kind, live=[live])
    assert ids == []
    why = "there when a live session started, or its product (pid 42 on elsewhere)"
    assert kept == {"a": why, "b": why}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_live_session_keeps_its_baseline_and_what_was_absent_at_its_start(kind: str) -> None:
    """What was there at a live session's start may be used by its tests (the first
    version deleted it, and a build cached on it failed); what was absent may be its."""
    theirs = Live(frozenset({"mine", "shared-old"}), "pid 7")
    things = [_new("mine"), _new("theirs"), _new("shared-old")]
    ids, kept = _select(things, kind, live=[theirs])
    assert ids == []
    assert kept == {
        "mine": "in a live session's baseline (pid 7)",
        "theirs": "may belong to a live session (pid 7)",
        "shared-old": "in a live session's baseline (pid 7)",
    }
    assert all(is_live(why) for why in kept.values())
    assert _select(things, kind, live=[])[0] == ["mine", "theirs", "shared-old"]


def test_a_predefined_network_is_never_pruned() -> None:
    networks: list[dict[str, Any]] = [
        {"Name": name, "Id": f"id-{name}", "Scope": "local", "Created": "2024-01-15T09:30:00Z"}
        for name in ("bridge", "host", "none", "default", "podman", "mine")
    ] + [
        {"Name": "swarm", "Id": "id-swarm", "Scope": "swarm"},
        {"Name": "config", "Id": "id-config", "Scope": "local", "ConfigOnly": True},
    ]
    things = listing(FakeEngine(networks=networks), NETWORKS)
    assert things[-3].created_ns == STARTED + 1800 * NANOS
    ids, kept = _select(things, NETWORKS, baseline=None)
    assert ids == ["id-mine"]
    assert kept == {
        **{f"id-{n}": "a predefined network" for n in ("bridge", "host", "none", "default")},
        "id-podman": "a predefined network",
        "id-swarm": "a swarm network",
        "id-config": "a config-only network",
    }


def test_only_anonymous_volumes_unless_all() -> None:
    volumes: list[dict[str, Any]] = [
        {"Name": "named", "Driver": "local", "Labels": {"ci": "1"}},
        {
            "Name": "0" * 64,
            "Driver": "local",
            "Labels": {"com.docker.volume.anonymous": "", "ci": "1"},
        },
        {"Name": "used", "Driver": "local", "Labels": None},
        {"Name": "nfs", "Driver": "local", "Options": {"type": "nfs"}},
        {"Name": "remote", "Driver": "rexray"},
    ]
    containers = [{"Mounts": [{"Type": "volume", "Name": "used"}]}]
    things = listing(FakeEngine(volumes=volumes, containers=containers), VOLUMES)
    assert [t.anonymous for t in things] == [False, True, False, False, False]
    assert [t.busy for t in things] == [False, False, True, False, False]
    ids, kept = _select(things, VOLUMES, anonymous_only=True)
    assert ids == ["0" * 64]
    assert kept == {
        "named": "a named volume (all=true takes it)",
        "used": "in use",
        "nfs": "a volume with mount options",
        "remote": "a volume of the rexray driver",
    }
    ids, kept = _select(things, VOLUMES, ["all=true"])
    assert ids == ["named", "0" * 64]
    assert kept["used"] == "in use"
    assert _select(things, VOLUMES, ["all=true", "label=ci"])[0] == ["named", "0" * 64]
    assert _select(things, VOLUMES, ["all=true", "label!=ci"])[0] == []


@pytest.mark.parametrize(
    ("engine", "options"),
    [
        ("docker 20.10", {"api_version": "1.41"}),
        ("podman", {"podman": True, "api_version": "1.41"}),
        ("docker 23+", {"api_version": "1.43"}),
    ],
)
def test_a_bare_volume_prune_takes_anonymous_volumes_only_on_every_engine(
    engine: str, options: dict[str, Any]
) -> None:
    """Issue 20, finding 7: on Docker 20.10 a bare ``--prune-volumes`` deleted a named
    volume made during the session, as that daemon's prune would; ``all=true`` was refused
    there. Now bare means anonymous only, and ``all=true`` takes named ones, everywhere.
    Where the engine does not label anonymous volumes (API 1.41, Podman), the name it gave
    one (64 hex digits) tells; on API 1.42 and later only its label does, as the daemon."""
    random = "ab" * 32
    volumes: list[dict[str, Any]] = [
        {"Name": "data", "Driver": "local", "Labels": {"ci": "1"}},
        {"Name": random, "Driver": "local", "Labels": {"ci": "1"}},
        {"Name": "cd" * 32, "Driver": "local", "Labels": {ANONYMOUS: "", "ci": "1"}},
    ]
    fake = FakeEngine(volumes=volumes, **options)

    def prune(*given: str) -> list[str]:
        report = prune_kind(
            FakeEngine(volumes=[dict(v) for v in volumes], **options),
            parse_kind_filters(VOLUMES, given),
            baseline=frozenset(),
            started_ns=0,
            live=list,
            dry_run=False,
        )
        assert report.errors == [], report.errors
        return sorted(report.deleted)

    labelled = engine == "docker 23+"
    assert "data" not in prune(), "a named volume went without all=true"
    assert prune("all=true") == sorted(["data", random, "cd" * 32])
    assert prune() == sorted(["cd" * 32] + ([] if labelled else [random]))
    assert prune("all=false", "label=ci") == prune()
    assert [t.anonymous for t in listing(fake, VOLUMES)] == [False, not labelled, True]


def test_a_running_container_or_a_busy_object_is_never_tried() -> None:
    containers = [
        {"Id": f"c-{state}", "State": state, "Created": (STARTED // NANOS) + 1}
        for state in ("created", "exited", "dead", "running", "paused", "restarting")
    ]
    things = listing(FakeEngine(containers=containers), CONTAINERS)
    assert things[0].created_ns == STARTED + NANOS
    ids, kept = _select(things, CONTAINERS)
    assert ids == ["c-created", "c-exited", "c-dead"]
    assert kept == {"c-running": "running", "c-paused": "running", "c-restarting": "running"}
    ids, kept = _select([_new("n", busy=True), _new("m")], NETWORKS)
    assert (ids, kept) == (["m"], {"n": "in use"})


def test_a_busy_or_shared_cache_record_is_kept_unless_all() -> None:
    things = [
        _new("busy", busy=True, type="regular"),
        _new("internal", type="internal"),
        _new("frontend", type="frontend"),
        _new("shared", type="regular", shared=True),
        _new("regular", type="regular"),
        _new("mount", type="exec.cachemount"),
    ]
    shared = "shared or internal (all=true takes it)"
    expected = {"busy": "in use", "internal": shared, "frontend": shared, "shared": shared}
    for filters in ([], ["all=false"], ["all=0"]):
        ids, kept = _select(things, BUILD_CACHE, filters)
        assert ids == ["regular", "mount"]
        assert kept == expected
    ids, kept = _select(things, BUILD_CACHE, ["all=true"])
    assert ids == ["internal", "frontend", "shared", "regular", "mount"]
    assert kept == {"busy": "in use"}


@pytest.mark.parametrize("kind", [CONTAINERS, NETWORKS])
def test_until_keeps_what_was_created_after_it(kind: str) -> None:
    until = NOW - 30 * 60 * NANOS  # until=30m
    things = [
        _new("older", created_ns=until - 1),
        _new("at", created_ns=until),
        _new("newer", created_ns=until + 1),
        _new("unknown", created_ns=None),
    ]
    ids, kept = _select(things, kind, ["until=30m"], baseline=None)
    assert ids == ["older", "at", "unknown"]
    assert kept == {"newer": "created after until"}
    assert _select(things, kind, ["until=2024-01-15T09:30:00Z"], baseline=None)[0] == ids


def test_the_build_caches_until_is_on_its_last_use() -> None:
    until = NOW - 30 * 60 * NANOS
    things = [
        _new("used-early", created_ns=until + 5, last_used_ns=until - 1),
        _new("used-late", created_ns=until - 5, last_used_ns=until + 1),
        _new("never-used", created_ns=until + 5, last_used_ns=None),
    ]
    ids, kept = _select(things, BUILD_CACHE, ["until=30m"])
    assert ids == ["used-early", "never-used"]
    assert kept == {"used-late": "used after until"}


def test_type_and_description_match_exactly() -> None:
    things = [
        _new("a", type="regular", description="mount / from exec /bin/sh -c make"),
        _new("b", type="exec.cachemount", description="cached mount /root/.cache"),
        _new("c", type="regular", description="mount / from exec /bin/sh -c make all"),
    ]
    ids, kept = _select(things, BUILD_CACHE, ["type=regular"])
    assert ids == ["a", "c"]
    assert kept == {"b": "another type"}
    ids, kept = _select(things, BUILD_CACHE, ["description=mount / from exec /bin/sh -c make"])
    assert ids == ["a"]
    assert kept == {"b": "another description", "c": "another description"}
    assert _select(things, BUILD_CACHE, ["description=mount"])[0] == []
    assert _select(things, BUILD_CACHE, ["type=exec.cachemount"])[0] == ["b"]


@pytest.mark.parametrize("kind", [CONTAINERS, NETWORKS, VOLUMES])
def test_labels_decide_among_the_sessions_objects(kind: str) -> None:
    things = [
        _new("ci", labels={"ci": "1"}),
        _new("keep", labels={"ci": "1", "keep": "yes"}),
        _new("none"),
    ]
    ids, kept = _select(things, kind, ["label=ci", "label!=keep"])
    assert ids == ["ci"]
    assert kept == {"keep": "labels do not match", "none": "labels do not match"}


# -- prune_kind, with the fake engine ----------------------------------------------------


def test_the_build_cache_prune_names_exactly_the_sessions_records() -> None:
    records: list[dict[str, Any]] = [
        {"ID": "old", "CreatedAt": "2020-01-01T00:00:00Z", "Type": "regular"},
        {"ID": "new1", "CreatedAt": "2099-01-01T00:00:00Z", "Type": "regular", "Size": 10},
        {"ID": "busy", "CreatedAt": "2099-01-01T00:00:00Z", "InUse": True},
        {"ID": "new2", "CreatedAt": "2099-01-01T00:00:00Z", "Size": 5},
    ]
    filters = parse_kind_filters(BUILD_CACHE, ["type=regular", "until=1h"])
    engine = FakeEngine(cache=records)
    report = prune_kind(
        engine,
        filters,
        baseline=frozenset(),
        started_ns=STARTED,
        live=list,
        dry_run=False,
    )
    assert report.candidates == ["new1", "new2"]
    assert report.deleted == ["new1", "new2"]
    assert report.space_reclaimed == 15
    assert report.kept == {"old": "created before this session started"}
    # In use: passed by as the daemon's prune does, and said as skipped everywhere alike.
    assert report.skipped == [{"Id": "busy", "reason": "in use"}]
    # Only the IDs: until, type and description were applied here (Docker 20.10 takes no
    # date in until; a description, with its spaces, cannot pass the engine's syntax). What
    # goes on the wire: test_http.test_the_build_cache_prune_sends_one_anchored_id_regex.
    assert engine.cache_prunes == [(["new1", "new2"], False)]
    # A dry run asks nothing but the listing.
    engine = FakeEngine(cache=records)
    dry = prune_kind(
        engine,
        filters,
        baseline=frozenset(),
        started_ns=STARTED,
        live=list,
        dry_run=True,
    )
    assert dry.deleted == ["new1", "new2"]
    assert dry.space_reclaimed == 15
    assert engine.asked == ["disk_usage build-cache"]


# -- the report -------------------------------------------------------------------------


def test_a_kind_report_has_dockers_shape() -> None:
    filters = parse_kind_filters(CONTAINERS, ["label=ci", "until=1h"])
    report = KindReport(
        CONTAINERS,
        filters,
        deleted=["c1", "c2"],
        space_reclaimed=1234,
        skipped=[{"Id": "c3", "reason": "running"}],
        kept={"z": "labels do not match", "a": "created after until"},
        errors=[{"Id": "c4", "error": "500: boom"}],
        duration_s=0.12345678,
    )
    data = report.to_dict()
    assert data == {
        "ContainersDeleted": ["c1", "c2"],
        "SpaceReclaimed": 1234,
        "status": "completed",
        "filters": {"label": ["ci"], "until": ["1h"]},
        "dry_run": False,
        "skipped": [{"Id": "c3", "reason": "running"}],
        "kept": [
            {"Id": "a", "reason": "created after until"},
            {"Id": "z", "reason": "labels do not match"},
        ],
        "errors": [{"Id": "c4", "error": "500: boom"}],
        "duration_s": 0.123457,
    }
    assert list(data)[:2] == ["ContainersDeleted", "SpaceReclaimed"]
    json.dumps(data)  # JSON as it is
    networks = KindReport(NETWORKS, KindFilters(NETWORKS), deleted=["n"]).to_dict()
    assert networks["NetworksDeleted"] == ["n"]
    assert "SpaceReclaimed" not in networks
    assert networks["filters"] == {}
    volumes = KindReport(VOLUMES, KindFilters(VOLUMES), space_reclaimed=7).to_dict()
    assert volumes["VolumesDeleted"] == []
    assert volumes["SpaceReclaimed"] == 7
    cache = KindReport(BUILD_CACHE, KindFilters(BUILD_CACHE), deleted=["r"]).to_dict()
    assert cache["CachesDeleted"] == ["r"]
    assert cache["SpaceReclaimed"] == 0


def test_a_kind_reports_summary_line() -> None:
    containers = KindReport(
        CONTAINERS,
        KindFilters(CONTAINERS),
        deleted=["c1"],
        space_reclaimed=1000,
        skipped=[{"Id": "c2", "reason": "running"}],
    )
    assert containers.summary_line() == (
        "deleted 1 container, skipped 1 running, 0 errors, reclaimed 1kB"
    )
    # Those passed by running are skipped, as the daemon's prune passes them by; one kept
    # for its labels is not; each is said once, however often the JSON lists it.
    containers.skipped.append({"Id": "c3", "reason": "running"})
    containers.skipped.append({"Id": "c3", "reason": "running"})
    containers.kept = {"c4": "labels do not match"}
    assert containers.summary_line() == (
        "deleted 1 container, skipped 2 running, 0 errors, reclaimed 1kB"
    )
    containers.dry_run = True
    assert containers.summary_line() == (
        "would delete 1 container, would skip 2 running, 0 errors, would reclaim 1kB"
    )
    networks = KindReport(
        NETWORKS,
        KindFilters(NETWORKS),
        dry_run=True,
        deleted=["n1", "n2"],
        errors=[{"error": "x"}],
        status="engine-lost",
    )
    assert networks.summary_line() == (
        "would delete 2 networks, would skip 0 in use, 1 error [engine-lost]"
    )
    cache = KindReport(BUILD_CACHE, KindFilters(BUILD_CACHE), errors=[{}, {}])
    assert cache.summary_line() == (
        "deleted 0 build-cache records, skipped 0 in use, 2 errors, reclaimed 0B"
    )


# -- the session record -----------------------------------------------------------------


def _record(**kw: Any) -> SessionRecord:
    base = SessionRecord.new(Baseline(dict.fromkeys(("i1", "i2"), ())), {}, "session", 0)
    return dataclasses.replace(base, **kw)


def test_a_record_with_kinds_round_trips_through_json() -> None:
    kinds = {
        CONTAINERS: frozenset({"c2", "c1"}),
        NETWORKS: frozenset(),
        VOLUMES: frozenset({"v"}),
        BUILD_CACHE: frozenset({"r"}),
    }
    rec = _record(kinds=kinds, images=False)
    data = rec.to_json()
    assert data["kinds"] == {
        CONTAINERS: ["c1", "c2"],
        NETWORKS: [],
        VOLUMES: ["v"],
        BUILD_CACHE: ["r"],
    }
    assert data["images"] is False
    back = SessionRecord.from_json(json.loads(json.dumps(data)))
    assert back == rec
    assert back.kinds == kinds
    assert back.images is False
    partial = _record(kinds={VOLUMES: frozenset({"v"})})
    assert SessionRecord.from_json(partial.to_json()) == partial
    new = SessionRecord.new(Baseline({}), {}, "all", 5, kinds=kinds, images=False)
    assert (new.kinds, new.images) == (kinds, False)
    assert SessionRecord.from_json(new.to_json()) == new


def test_a_record_from_before_the_kinds_reads_as_images_only() -> None:
    data = _record().to_json()
    del data["kinds"], data["images"]
    old = SessionRecord.from_json(data)
    assert old.kinds is None
    assert old.images is True
    data = {**data, "kinds": None}
    assert SessionRecord.from_json(data).kinds is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"kinds": {"pods": []}}, "kinds", id="unknown-kind"),
        pytest.param({"kinds": {"containers": [], "images": []}}, "kinds", id="images-kind"),
        pytest.param({"kinds": [["containers"]]}, "kinds", id="not-an-object"),
        pytest.param({"kinds": "containers"}, "kinds", id="a-string"),
        pytest.param({"kinds": {"containers": "c1"}}, "kinds", id="ids-not-a-list"),
        pytest.param({"kinds": {"volumes": {"v": 1}}}, "kinds", id="ids-an-object"),
        pytest.param({"kinds": {"networks": ["n", 1]}}, "kinds", id="an-id-not-a-string"),
        pytest.param({"kinds": {"networks": [None]}}, "kinds", id="an-id-null"),
        pytest.param({"images": "true"}, "images", id="images-a-string"),
        pytest.param({"images": 1}, "images", id="images-a-number"),
        pytest.param({"images": None}, "images", id="images-null"),
    ],
)
def test_a_record_with_bad_kinds_is_refused(changes: dict[str, Any], message: str) -> None:
    data = {**_record(kinds={CONTAINERS: frozenset({"c"})}).to_json(), **changes}
    with pytest.raises(ValueError, match=message):
        SessionRecord.from_json(data)


# -- options and ini keys ---------------------------------------------------------------


def test_the_options_enable_the_kinds_without_images(
    pytester: pytest.Pytester, no_engine: str
) -> None:
    settings = load_settings(
        pytester.parseconfig("--prune-build-cache", "--prune-containers=label=a", "--prune-volumes")
    )
    assert settings is not None
    assert settings.images is False
    assert list(settings.kinds) == [CONTAINERS, VOLUMES, BUILD_CACHE]  # docker's order
    assert settings.kinds[CONTAINERS] == parse_kind_filters(CONTAINERS, ["label=a"])
    assert dict(settings.kinds[VOLUMES].raw) == {}
    both = load_settings(pytester.parseconfig("--prune-images", "--prune-networks=until=1h"))
    assert both is not None
    assert both.images is True
    assert list(both.kinds) == [NETWORKS]
    assert load_settings(pytester.parseconfig("--no-prune-images", "--prune-networks")) is None


def test_the_ini_keys_enable_the_kinds_and_the_command_line_wins(
    pytester: pytest.Pytester, no_engine: str
) -> None:
    pytester.makeini(
        "[pytest]\nprune_networks =\n    label=a\n    until=1h\nprune_build_cache = all=1\n"
        "prune_containers = dangling=true\n"
    )
    settings = load_settings(pytester.parseconfig("--prune-containers=label=b"))
    assert settings is not None
    assert settings.images is False
    assert list(settings.kinds) == [CONTAINERS, NETWORKS, BUILD_CACHE]
    assert dict(settings.kinds[CONTAINERS].raw) == {"label": ("b",)}
    assert dict(settings.kinds[NETWORKS].raw) == {"label": ("a",), "until": ("1h",)}
    assert settings.kinds[BUILD_CACHE].all is True


UNTIL_FORMS = (
    "Write {o}until= and a Go duration back from now (10m, 1h30m), an RFC 3339 date or time"
    " (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds (1700000000.5), such as"
    " {o}until=24h"
)
RECORD_TYPES = "regular, source.local, source.git.checkout, exec.cachemount, internal, frontend"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--prune-containers=dangling=true"],
            "--prune-containers=dangling=true (command line): 'dangling' is not a filter docker"
            " container prune takes here. The filters are until, label, label!",
            id="containers-dangling",
        ),
        pytest.param(
            ["--prune-build-cache=label=x"],
            "--prune-build-cache=label=x (command line): 'label' is not a filter docker builder"
            " prune takes here. The filters are until, all, type, description (the build cache"
            " has no labels: docker builder prune ignores them)",
            id="build-cache-label",
        ),
        pytest.param(
            ["--prune-volumes=until=1h"],
            "--prune-volumes=until=1h (command line): 'until' is not a filter docker volume"
            " prune takes here. The filters are label, label!, all",
            id="volumes-until",
        ),
        pytest.param(
            ["--prune-networks=until=1h", "--prune-networks=until=2h"],
            "--prune-networks=until=1h --prune-networks=until=2h (command line): until is given"
            " 2 times; docker network prune takes one. Keep one",
            id="networks-two-untils",
        ),
        pytest.param(
            ["--prune-networks=until=1d"],
            "--prune-networks=until=1d (command line): '1d' is not accepted: *. "
            + UNTIL_FORMS.format(o="--prune-networks="),
            id="networks-until",
        ),
        pytest.param(
            ["--prune-volumes=all=yes"],
            "--prune-volumes=all=yes (command line): 'yes' is not accepted: not true or false."
            " Write --prune-volumes=all=true or --prune-volumes=all=false",
            id="volumes-all",
        ),
        pytest.param(
            ["--prune-build-cache=type=image"],
            "--prune-build-cache=type=image (command line): 'image' is not accepted: not a"
            f" record type. Write --prune-build-cache=type= and one of {RECORD_TYPES}",
            id="build-cache-type",
        ),
        pytest.param(
            ["--prune-build-cache=until="],
            "--prune-build-cache=until= (command line): an empty value is not accepted: *. "
            + UNTIL_FORMS.format(o="--prune-build-cache="),
            id="build-cache-empty-until",
        ),
        pytest.param(
            ["--prune-containers=everything"],
            "--prune-containers=everything (command line): 'everything' is not a filter. A"
            " filter is --prune-containers=KEY=VALUE: until, label, label!",
            id="containers-not-a-filter",
        ),
        pytest.param(
            ["--prune-images=label=ci", "--prune-containers=reference=x"],
            "--prune-containers=reference=x (command line): 'reference' is not a filter docker"
            " container prune takes here. The filters are until, label, label!",
            id="with-images",
        ),
    ],
)
def test_a_bad_filter_of_a_kind_is_a_usage_error(
    pytester: pytest.Pytester, no_engine: str, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-imageprune: {message}"], consecutive=True)
    assert result.stderr.lines[0].startswith("ERROR: pytest-imageprune: ")
    assert "ran" not in result.stdout.str()
    assert "Traceback" not in result.stderr.str()
    assert no_engine not in result.stdout.str() + result.stderr.str()  # no engine asked


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        pytest.param(
            "prune_containers = dangling=true",
            "prune_containers = dangling=true (tox.ini): 'dangling' is not a filter docker"
            " container prune takes here. The filters are until, label, label!",
            id="containers-dangling",
        ),
        pytest.param(
            "prune_build_cache =\n    all=true\n    label=x",
            "prune_build_cache = label=x (tox.ini): 'label' is not a filter docker builder"
            " prune takes here. The filters are until, all, type, description (the build cache"
            " has no labels: docker builder prune ignores them)",
            id="build-cache-label",
        ),
        pytest.param(
            "prune_volumes = until=1h",
            "prune_volumes = until=1h (tox.ini): 'until' is not a filter docker volume prune"
            " takes here. The filters are label, label!, all",
            id="volumes-until",
        ),
        pytest.param(
            "prune_networks = until=yesterday",
            "prune_networks = until=yesterday (tox.ini): 'yesterday' is not accepted: *. "
            + UNTIL_FORMS.format(o=""),
            id="networks-until",
        ),
        pytest.param(
            "prune_volumes = everything",
            "prune_volumes = everything (tox.ini): 'everything' is not a filter. A filter is"
            " KEY=VALUE: label, label!, all",
            id="volumes-not-a-filter",
        ),
        pytest.param(
            "prune_build_cache =\n    type=regular\n    type=internal",
            "prune_build_cache = type=regular, type=internal (tox.ini): type is given 2 times;"
            " docker builder prune takes one. Keep one",
            id="build-cache-two-types",
        ),
    ],
)
def test_a_bad_ini_filter_of_a_kind_names_the_key_and_file(
    pytester: pytest.Pytester, no_engine: str, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-imageprune: {message}"], consecutive=True)
    assert "ran" not in result.stdout.str()


@pytest.mark.parametrize(
    "option", ["--prune-containers", "--prune-networks", "--prune-volumes", "--prune-build-cache"]
)
def test_a_path_after_a_kinds_option_is_refused_with_a_hint(
    pytester: pytest.Pytester, no_engine: str, option: str
) -> None:
    (pytester.path / "tests").mkdir()
    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest("-p", "no:cacheprovider", option, "tests/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    example = "until=24h" if option == "--prune-build-cache" else "label=ci"
    assert result.stderr.lines[0] == (
        f"ERROR: pytest-imageprune: {option} tests/ (command line): tests/ is a path, not a"
        f" filter ({option} takes the word after it as its FILTER). Write {option}=FILTER,"
        f" such as {option}={example}, or put a bare {option} after the paths"
    )
    assert "ran" not in result.stdout.str()


def test_the_path_hint_of_the_build_cache_names_a_filter_it_takes(
    pytester: pytest.Pytester, no_engine: str
) -> None:
    (pytester.path / "tests").mkdir()
    result = pytester.runpytest("-p", "no:cacheprovider", "--prune-build-cache", "tests/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--prune-build-cache=label=" not in result.stderr.str()
    assert "such as --prune-build-cache=until=24h" in result.stderr.str()


@pytest.mark.parametrize(
    ("args", "labels"),
    [
        pytest.param(
            ["--prune-containers=label=a=1", "--prune-networks=label=b"],
            {"a": "1", "b": "1"},
            id="two-kinds",
        ),
        pytest.param(
            ["--prune-volumes=label=v=x", "--prune-volumes=label!=keep", "--prune-build-cache"],
            {"v": "x"},
            id="label-not-is-no-label",
        ),
        pytest.param(
            ["--prune-images=label=img", "--prune-containers=label=c=2"],
            {"c": "2", "img": "1"},
            id="with-images",
        ),
        pytest.param(
            ["--prune-containers=label=a", "--prune-networks=label=a=yes"],
            {"a": "yes"},
            id="a-value-over-a-bare-key",
        ),
        pytest.param(["--prune-networks"], {}, id="no-label"),
    ],
)
def test_the_label_fixture_satisfies_every_kinds_label_filters(
    pytester: pytest.Pytester, no_engine: str, args: list[str], labels: dict[str, str]
) -> None:
    pytester.makepyfile(
        f"""
        def test_labels(imageprune_label):
            assert imageprune_label == {labels!r}
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    # No engine answers: the plugin said so, and kept the verdict.
    assert no_engine in result.stdout.str() + result.stderr.str()


# -- GitHub step summary ----------------------------------------------------------------


def test_the_step_summary_has_a_row_per_kind() -> None:
    from pytest_imageprune.model.filters import Filters

    base = PruneReport(endpoint="unix:///var/run/docker.sock", filters=Filters()).to_dict()
    containers = KindReport(
        CONTAINERS,
        KindFilters(CONTAINERS),
        deleted=["c1", "c2"],
        space_reclaimed=12345,
        skipped=[{"Id": "c3", "reason": "running"}],
    ).to_dict()
    networks = KindReport(
        NETWORKS, KindFilters(NETWORKS), errors=[{"error": "x"}], status="engine-lost"
    ).to_dict()
    text = step_summary({**base, "containers": containers, "networks": networks})
    lines = text.splitlines()
    row = "| Containers deleted | 2 (12.35kB), 1 skipped |"
    assert row in lines
    assert "| Networks deleted | 0, 1 error [engine-lost] |" in lines
    assert lines.index(row) == 4  # right under the table's head
    assert "Volumes" not in text
    assert "Build-cache" not in text
    assert "Containers" not in step_summary(base)
    dry = step_summary(
        {
            **base,
            "dry_run": True,
            "build_cache": KindReport(
                BUILD_CACHE,
                KindFilters(BUILD_CACHE),
                dry_run=True,
                deleted=["r"],
                space_reclaimed=1000,
            ).to_dict(),
        }
    )
    assert "| Build-cache records that would go | 1 (1kB) |" in dry.splitlines()
    # A report whose entry is not an object still has its row.
    assert "| Volumes deleted | 0 |" in step_summary({**base, "volumes": "?"}).splitlines()


# -- found by the review of the first version -------------------------------------------------


def test_the_live_sessions_are_read_after_the_listing() -> None:
    """A session that starts while the prune runs made nothing listed before its record was
    written: read the registry after the listing, and what it made stays (the first version
    read it once, before every kind, and deleted a volume of a session started meanwhile)."""
    engine = FakeEngine(
        containers=[{"Id": "c-new", "Created": STARTED // NANOS + 10, "State": "exited"}]
    )
    seen: list[list[str]] = []

    def live() -> list[Live]:
        seen.append(list(engine.asked))
        return [Live(frozenset(), "pid 42 on here")]

    report = prune_kind(
        engine,
        KindFilters(CONTAINERS),
        baseline=frozenset(),
        started_ns=STARTED,
        live=live,
        dry_run=False,
    )
    assert seen == [["objects containers"]]
    assert report.kept == {"c-new": "may belong to a live session (pid 42 on here)"}
    assert not [a for a in engine.asked if a.startswith("remove")]


@pytest.mark.parametrize(("created", "goes"), [("0.3", True), ("0.7", False)])
def test_a_containers_until_is_compared_to_the_nanosecond(created: str, goes: bool) -> None:
    """The list gives whole seconds; where ``until`` falls in that second, the inspect's
    ``Created`` decides, as the daemon compares it (the first version deleted a container
    created 0.2 s after until)."""
    second = 1_700_000_000
    stamp = f"2023-11-14T22:13:20.{created.split('.')[1]}00000000Z"
    engine = FakeEngine(
        containers=[{"Id": "c1", "Created": second, "State": "exited"}],
        inspects={"c1": {"Created": stamp, "SizeRw": 0}},
    )
    report = prune_kind(
        engine,
        parse_kind_filters(CONTAINERS, [f"until={second}.5"]),
        baseline=None,
        started_ns=0,
        live=list,
        dry_run=False,
    )
    assert (report.deleted == ["c1"]) is goes, report.kept


def test_an_engine_that_stops_answering_is_a_status_never_a_raise() -> None:
    report = prune_kind(
        FakeEngine(lost_after=0),
        KindFilters(NETWORKS),
        baseline=frozenset(),
        started_ns=0,
        live=list,
        dry_run=False,
    )
    assert report.status == "engine-lost"
    assert "connection refused" in report.errors[0]["error"]


def test_a_podman_network_is_deleted_by_name_and_kept_while_a_container_names_it() -> None:
    """Podman checks a network's users by name only: by ID it removes one a container
    still names (seen on Podman 4.3 and 5.4)."""
    engine = FakeEngine(
        networks=[
            {"Name": "held", "Id": "n1", "Labels": {"k": "1"}},
            {"Name": "free", "Id": "n2", "Labels": {"k": "1"}},
        ],
        containers=[{"Id": "c1", "NetworkSettings": {"Networks": {"held": {}}}, "State": "exited"}],
        podman=True,
    )
    report = prune_kind(
        engine,
        KindFilters(NETWORKS),
        baseline=frozenset(),
        started_ns=0,
        live=list,
        dry_run=False,
    )
    assert report.deleted == ["free"]
    assert report.kept == {}
    assert report.skipped == [{"Id": "n1", "reason": "in use"}]
    assert "skipped network held: in use" in report.detail_lines()
    assert "remove networks free" in engine.asked


@pytest.mark.parametrize(("span", "goes"), [(0, True), (NANOS - 1, False)])
def test_a_sweep_reads_a_time_in_whole_seconds_as_its_latest_instant(span: int, goes: bool) -> None:
    """A volume's ``CreatedAt`` and a container's listed ``Created`` are whole seconds: made
    in the second a session ended, it may have come after (the first version swept one made
    3 ms after a deferred session finished)."""
    ended = STARTED + 100 * NANOS + NANOS // 2
    thing = dataclasses.replace(_new("v", created_ns=STARTED + 100 * NANOS), created_span=span)
    ids, kept = select(
        [thing],
        KindFilters(VOLUMES),
        baseline=frozenset(),
        started_ns=STARTED,
        live=[],
        now_ns=NOW,
        ended_ns=ended,
    )
    assert ([t.id for t in ids] == ["v"]) is goes, kept


# -- a dry run predicts the real run -------------------------------------------------------


def _dry(engine: FakeEngine, kind: str, gone: frozenset[str] = frozenset()) -> KindReport:
    return prune_kind(
        engine,
        KindFilters(kind, all=True) if kind == VOLUMES else KindFilters(kind),
        baseline=frozenset(),
        started_ns=0,
        live=list,
        dry_run=True,
        gone=gone,
    )


def test_a_dry_run_never_names_a_network_the_engine_refuses() -> None:
    """The list of networks shows no endpoints; Docker's prune passes by a network with any
    (a stale one too: no container has it any more) and its remove answers 403. A dry run
    looks: one whose endpoints are all of containers the run deletes first goes."""
    engine = FakeEngine(
        networks=[
            {"Name": "stale", "Id": "n1", "Containers": {"ep-0a1b": {"Name": "old_app"}}},
            {"Name": "running", "Id": "n2", "Containers": {"c-run": {"Name": "web"}}},
            {"Name": "freed", "Id": "n3", "Containers": {"c-stop": {"Name": "job"}}},
            {"Name": "free", "Id": "n4", "Containers": {}},
        ],
    )
    report = _dry(engine, NETWORKS, gone=frozenset({"c-stop"}))
    assert report.deleted == ["freed", "free"]
    assert report.skipped == [
        {"Id": "n1", "reason": "has active endpoints (old_app)"},
        {"Id": "n2", "reason": "has active endpoints (web)"},
    ]
    assert "would skip 2 in use" in report.summary_line()
    assert engine.listed["networks"][0]["Name"] == "stale"  # nothing removed


def test_a_dry_run_counts_as_free_what_only_containers_it_deletes_hold() -> None:
    """Volumes (and Podman's networks) that only the would-be-deleted containers use go in
    the real run, which deletes those containers first: the dry run names them."""
    containers = [
        {"Id": "c-stop", "State": "exited", "Mounts": [{"Type": "volume", "Name": "freed"}]},
        {"Id": "c-keep", "State": "exited", "Mounts": [{"Type": "volume", "Name": "held"}]},
    ]
    volumes = [{"Name": "freed", "Driver": "local"}, {"Name": "held", "Driver": "local"}]
    engine = FakeEngine(volumes=volumes, containers=containers)
    assert _dry(engine, VOLUMES).deleted == []
    report = _dry(engine, VOLUMES, gone=frozenset({"c-stop"}))
    assert report.deleted == ["freed"]
    assert [s["Id"] for s in report.skipped] == ["held"]
    podman = FakeEngine(
        networks=[{"Name": "n", "Id": "n1"}],
        containers=[{"Id": "c-stop", "NetworkSettings": {"Networks": {"n": {}}}}],
        podman=True,
    )
    assert _dry(podman, NETWORKS).deleted == []
    assert _dry(podman, NETWORKS, gone=frozenset({"c-stop"})).deleted == ["n"]


def test_a_dry_run_names_what_the_real_run_deletes_every_kind_on(tmp_path: Path) -> None:
    """One state, twice: a dry run with every kind on names exactly what the real run then
    deletes, containers first; what only those containers hold (an image, a volume) is not
    `would skip ... in use`, and no hint tells the user to remove containers the plugin
    removes. A network with a stale endpoint is refused by the engine in both."""

    def state() -> FakeEngine:
        return FakeEngine(
            Snapshot.of([Image("sha256:app", None, ("app:1",), labels={"s": "a"}, size=5)]),
            refusals={"n1": Conflict("403: network stale has active endpoints", in_use=True)},
        )

    def made(engine: FakeEngine) -> None:
        engine.containers = [Container("c-stop", "sha256:app", running=False)]
        engine.listed["containers"] = [
            {
                "Id": "c-stop",
                "State": "exited",
                "Labels": {"s": "a"},
                "Image": "sha256:app",
                "Mounts": [{"Type": "volume", "Name": "vol"}],
            }
        ]
        engine.listed["volumes"] = [{"Name": "vol", "Driver": "local", "Labels": {"s": "a"}}]
        engine.listed["networks"] = [
            {"Name": "stale", "Id": "n1", "Labels": {"s": "a"}, "Containers": {"ep-1": {}}},
            {"Name": "free", "Id": "n2", "Labels": {"s": "a"}},
        ]

    def session(dry_run: bool) -> PruneSession:
        engine = state()
        filters = ["label=s=a"]
        kinds = {
            k: parse_kind_filters(k, [*filters, "all=true"] if k == VOLUMES else filters)
            for k in (CONTAINERS, NETWORKS, VOLUMES)
        }
        run = PruneSession(
            parse_filters([*filters, "dangling=false"]),
            scope="all",
            dry_run=dry_run,
            lock_path=tmp_path / f"{dry_run}.lock",
            engine=engine,
            kinds=kinds,
        )
        run.start()
        made(engine)
        run.finish()
        return run

    dry, real = session(True), session(False)
    assert dry.report is not None
    assert real.report is not None
    assert dry.report.deleted_ids == real.report.deleted_ids == ["sha256:app"]
    lists = {
        run.dry_run: {k.kind: (k.deleted, [s["Id"] for s in k.skipped]) for k in run.kind_reports}
        for run in (dry, real)
    }
    assert (
        lists[True]
        == lists[False]
        == {
            CONTAINERS: (["c-stop"], []),
            NETWORKS: (["free"], ["n1"]),
            VOLUMES: (["vol"], []),
        }
    )
    assert dry.report.skipped == real.report.skipped == []
    assert "would skip 0 in use" in dry.lines[0]
    assert not [line for line in dry.lines if "teardown" in line]
