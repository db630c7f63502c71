"""What a sweep keeps: a live session's protection, and the evidence of a dead or
deferred session's lifetime (its images' dates, the engine's event log)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pytest_imageprune.coordination.evidence import (
    LOG_LIMIT,
    Arrival,
    protect_live,
    within_lifetime,
)
from pytest_imageprune.coordination.records import DEATH_SLACK_NS
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.model.outcome import Kept, is_doubt, is_live
from tests.test_records import record


def test_a_live_session_protects_its_baseline_and_what_is_not_in_it() -> None:
    """What was there at its start (its tests may use it: a build cached on it) and what
    may be its product: while another session lives, no image goes. The first version
    let a baseline image go, and a live session's build failed with "No such image"."""
    live = record({"old"})
    keep = protect_live([live])
    assert keep(Image("old")) == f"in a live session's baseline ({live.describe()})"
    assert keep(Image("new")) == f"may belong to a live session ({live.describe()})"
    assert is_live(keep(Image("old")) or "")
    assert is_live(keep(Image("new")) or "")
    assert protect_live([])(Image("old")) is None


def test_a_dead_session_owns_nothing_created_after_it_died() -> None:
    dead = record(set(), heartbeat_ns=100 * NANOS)
    keep = within_lifetime(dead, lambda image: None)
    end = dead.death_ns
    assert keep(Image("during", created_s=100, created_ns=end)) is None
    assert keep(Image("after", created_s=200, created_ns=end + 1)) == (
        "created after that session ended"
    )
    assert dead.death_ns == 100 * NANOS + DEATH_SLACK_NS


def test_a_finished_session_owns_nothing_created_after_it_finished() -> None:
    done = record(set(), finished_ns=50 * NANOS)
    keep = within_lifetime(done, lambda image: None)
    assert keep(Image("late", created_s=51)) is not None
    assert keep(Image("early", created_s=49)) is None


def _image_event(action: str, actor: str, when: int | None, name: str = "") -> dict[str, Any]:
    attributes = {"name": name} if name else {}
    event: dict[str, Any] = {"Type": "image", "Action": action}
    event["Actor"] = {"ID": actor, "Attributes": attributes}
    if when is not None:
        event["timeNano"] = when
    return event


def _loaded_meanwhile(
    log: list[Any] | None, *, fails: bool = False, tagged: str = "", started: int | None = None
) -> tuple[dict[str, str | None], list[tuple[int, int]]]:
    """What a sweep of a dead session says of four images made while it lived (by their
    ``Created``, no ``LastTagTime``: loaded, as Docker 20.10 leaves them), given the log."""
    dead = record(set(), started_ns=50 * NANOS, heartbeat_ns=100 * NANOS)
    images = [Image(name, created_s=80, tags=tags) for name, tags in _LOADED]

    def inspect(image_id: str) -> dict[str, Any]:
        return {"Created": "1970-01-01T00:01:20Z", "Metadata": {"LastTagTime": tagged}}

    asked: list[tuple[int, int]] = []

    def events(since_ns: int, until_ns: int) -> list[Any] | None:
        asked.append((since_ns, until_ns))
        if fails:
            raise OSError("no log")
        return log

    arrival = Arrival(inspect, Snapshot.of(images), events, lambda: started)
    return {image.id: arrival.doubt(image, dead) for image in images}, asked


_LOADED = [
    ("sha256:loaded", ()),
    ("sha256:tagged", ("app:1",)),
    ("sha256:early", ()),
    ("sha256:deleted", ()),
]
_END = 100 * NANOS + DEATH_SLACK_NS


def test_the_event_log_witnesses_an_arrival_the_image_cannot_show() -> None:
    """A load keeps the image's ``Created`` and, on Docker 20.10, stamps no
    ``LastTagTime``: only a ``load`` (or pull, import, tag) event after the death tells."""
    log = [
        _image_event("load", "sha256:loaded", _END + 1),
        _image_event("tag", "x", _END + 2, "app:1"),
        _image_event("load", "sha256:early", _END),  # not after the end
        _image_event("delete", "sha256:deleted", _END + 3),
        "not an event",
    ]
    doubts, asked = _loaded_meanwhile(log)
    came = "arrived after that session ended (the engine's events)"
    assert doubts == {
        "sha256:loaded": came,
        "sha256:tagged": came,
        "sha256:early": None,
        "sha256:deleted": None,
    }
    assert len(asked) == 1  # once per sweep, from the session's end
    assert asked[0][0] == _END
    # An arrival event that does not say when counts as late.
    doubts, _ = _loaded_meanwhile([_image_event("load", "sha256:early", None)])
    assert doubts["sha256:early"] == came


def test_a_log_that_no_longer_reaches_back_leaves_created_alone_unbelieved() -> None:
    """The log keeps the newest 256 events: with that many since the end, a load after the
    end may have dropped out of it. Then only an image's LastTagTime can speak for it."""
    busy = [{"Type": "container", "Action": "start", "timeNano": _END + 5}] * LOG_LIMIT
    for log, fails in ((busy, False), (None, True)):
        doubts, _ = _loaded_meanwhile(log, fails=fails)
        assert all((why or "").startswith("no evidence it arrived") for why in doubts.values())
        assert all("no longer reaches back" in (why or "") for why in doubts.values())
    stamped, _ = _loaded_meanwhile(busy, tagged="1970-01-01T00:01:30Z")
    assert set(stamped.values()) == {None}
    # Fewer than that: the log holds all of it, and it shows no arrival; unless the engine
    # started after the end (a restart), when its log holds nothing from before.
    quiet, _ = _loaded_meanwhile(busy[1:], started=_END - 1)
    assert set(quiet.values()) == {None}
    restarted, _ = _loaded_meanwhile([], started=_END + 1)
    assert all("no longer reaches back" in (why or "") for why in restarted.values())
    # An engine with no log at all (Podman): Created decides, as it always did.
    podman, _ = _loaded_meanwhile(None)
    assert set(podman.values()) == {None}


def test_an_image_a_deferred_session_left_is_not_its_once_tagged_again() -> None:
    """The deferred session listed it as left; someone tagged it after: it is theirs now."""
    deferred = record(set(), started_ns=50 * NANOS, finished_ns=100 * NANOS)
    deferred = dataclasses.replace(deferred, present=frozenset({"sha256:left"}))
    stamps = {"before": "1970-01-01T00:01:30Z", "after": "1970-01-01T00:02:00Z"}
    for when, expected in (("before", None), ("after", "tagged after that session ended")):

        def inspect(image_id: str, when: str = when) -> dict[str, Any]:
            return {"Created": "1970-01-01T00:01:20Z", "Metadata": {"LastTagTime": stamps[when]}}

        arrival = Arrival(inspect, Snapshot.of([Image("sha256:left")]), lambda a, b: [])
        assert arrival.doubt(Image("sha256:left"), deferred) == expected
    log = [_image_event("tag", "sha256:left", 101 * NANOS, "keep:forever")]
    witness = Arrival(lambda i: {}, Snapshot.of([Image("sha256:left")]), lambda a, b: log)
    assert witness.doubt(Image("sha256:left"), deferred) == (
        "tagged after that session ended (the engine's events)"
    )


def test_a_reason_says_what_it_means_beside_its_words() -> None:
    """``live`` for what a live session may have made, ``doubt`` for want of evidence that
    the swept session left it: later steps decide by the flags, never by the words."""
    live = protect_live([record({"old"})])(Image("new"))
    assert isinstance(live, Kept)
    assert (live.live, live.doubt) == (True, False)
    assert is_live(live)
    assert not is_doubt(live)
    dead = record(set(), started_ns=50 * NANOS, heartbeat_ns=100 * NANOS)
    late = within_lifetime(dead, lambda image: None)(Image("after", created_s=200))
    assert isinstance(late, Kept)
    assert (late.live, late.doubt) == (False, True)
    # What ``then`` keeps passes through as it is.
    during = Image("during", created_s=100, created_ns=dead.death_ns)
    assert is_live(within_lifetime(dead, protect_live([record(set())]))(during) or "")
    doubts, _ = _loaded_meanwhile([_image_event("load", "sha256:loaded", _END + 1)])
    assert all(is_doubt(why) for why in doubts.values() if why is not None)

    def gone(image_id: str) -> dict[str, Any]:
        raise LookupError(image_id)

    why = Arrival(gone, Snapshot.of([])).doubt(Image("sha256:x"), dead)
    assert why == "gone meanwhile"  # nothing left to delete: no doubt, as before
    assert not is_doubt(why)
    assert not is_live(why)
    assert not is_live("may belong to a live session (pid 1 on elsewhere)")
