"""The plugin's own record of what containers used (``budget.record``), without an engine:
what a session writes down, how records are read back and merged, and that nothing in
one can make an image look used earlier than the engine shows, or break the budget.
The record's round trip through a real engine is in ``test_budget_engine``."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pytest_imageprune.budget import record
from pytest_imageprune.budget.gather import last_uses
from pytest_imageprune.budget.plan import Use
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Container, Image, Snapshot

S = NANOS
A, B, C = ("sha256:" + c * 64 for c in "abc")


class Keeper:
    """The meeting place's part the record uses, in memory."""

    def __init__(self, now_ns: int | None = 10_000 * S) -> None:
        self.now_ns = now_ns
        self.volumes: dict[str, dict[str, str]] = {}
        self.dropped: list[str] = []

    def use_records(self) -> tuple[list[Mapping[str, Any]], int | None]:
        return [{"Name": n, "Labels": labels} for n, labels in self.volumes.items()], self.now_ns

    def keep_uses(self, ident: str, labels: Mapping[str, str]) -> None:
        self.volumes[f"pytest-imageprune-{ident}-uses"] = dict(labels)

    def drop_uses(self, names: Sequence[str]) -> None:
        for name in names:
            self.dropped.append(name)
            self.volumes.pop(name, None)


def packed(data: object) -> str:
    return base64.b64encode(zlib.compress(json.dumps(data).encode())).decode()


def test_a_session_writes_what_its_containers_used_listed_or_only_in_the_events() -> None:
    images = [Image(A, tags=("app:1",)), Image(B, tags=("busybox:latest",)), Image(C)]
    containers = (Container("k" * 64, A, running=False, created_s=300),)
    snapshot = Snapshot.of(images, containers)
    events = [
        {"Type": "container", "Action": "create", "timeNano": 400 * S,
         "Actor": {"Attributes": {"image": "busybox"}}},  # docker run --rm: gone since
        {"Type": "container", "Action": "destroy", "timeNano": 900 * S,
         "Actor": {"Attributes": {"image": "app:1"}}},  # a removal is no use
        {"Type": "container", "Action": "start", "timeNano": 100 * S,
         "Actor": {"Attributes": {"image": "c" * 12}}},  # before the session
        {"Type": "image", "Action": "tag", "timeNano": 500 * S,
         "Actor": {"Attributes": {"name": "app:1"}}},
    ]  # fmt: skip
    assert record.seen(snapshot, events, since_ns=200 * S) == {A: 300 * S, B: 400 * S}


def test_a_record_reads_back_as_it_was_written_and_a_later_use_wins() -> None:
    keeper = Keeper()
    record.keep(keeper, {A: 300 * S, B: 400 * S}, frozenset({A, B}), 0)
    record.keep(keeper, {A: 700 * S}, frozenset({A, B}), 0)
    assert len(keeper.volumes) == 2
    assert record.recorded(keeper, 0) == {A: 700 * S, B: 400 * S}
    record.keep(keeper, {}, frozenset(), 0)  # nothing used: nothing written
    assert len(keeper.volumes) == 2


def test_records_are_merged_into_one_once_there_are_enough() -> None:
    keeper = Keeper()
    for n in range(record.COMPACT_AT - 1):
        record.keep(keeper, {A: (n + 1) * S, C: 5 * S}, frozenset({A, B, C}), 0)
    assert len(keeper.volumes) == record.COMPACT_AT - 1
    before = set(keeper.volumes)
    # The eighth merges: images the engine no longer holds (C) are left out.
    assert record.keep(keeper, {B: 2 * S}, frozenset({A, B}), 0) == record.COMPACT_AT - 1
    assert set(keeper.dropped) == before
    assert len(keeper.volumes) == 1
    assert record.recorded(keeper, 0) == {A: (record.COMPACT_AT - 1) * S, B: 2 * S}


def test_two_sessions_merging_at_once_lose_nothing() -> None:
    keeper = Keeper()
    for n in range(record.COMPACT_AT - 1):
        record.keep(keeper, {f"sha256:{n:064x}": (n + 1) * S}, frozenset(), 0)
    everything = record.recorded(keeper, 0)
    listed = keeper.use_records()
    first, second = Keeper(), Keeper()
    # Both list the same records, then each writes its merge and removes what it read.
    for session, own in ((first, {A: 50 * S}), (second, {B: 60 * S})):
        session.volumes = dict(keeper.volumes)
        session.use_records = lambda: listed  # type: ignore[method-assign]
        present = frozenset({*everything, A, B})
        record.keep(session, own, present, 0)
        for name, labels in session.volumes.items():
            if name not in keeper.volumes:
                keeper.volumes[name] = labels
    for name in {*first.dropped, *second.dropped}:
        keeper.volumes.pop(name, None)
    assert record.recorded(keeper, 0) == {**everything, A: 50 * S, B: 60 * S}


def test_an_unreadable_or_forged_record_never_makes_a_use_earlier_nor_breaks_the_budget() -> None:
    keeper = Keeper(now_ns=1_000 * S)
    keeper.volumes = {
        "pytest-imageprune-1-uses": {record.USES: "not base64 at all!"},
        "pytest-imageprune-2-uses": {record.USES: packed({"v": 2, "uses": {}})},
        "pytest-imageprune-3-uses": {record.USES: packed([1, 2])},
        "pytest-imageprune-4-uses": {},
        "pytest-imageprune-5-uses": {
            record.USES: packed(
                {
                    "v": 1,
                    "uses": {
                        "a" * 64: 1 * S,  # earlier than the engine shows: changes nothing
                        "b" * 64: 5_000 * S,  # later than the engine's now: not believed
                        "c" * 64: True,
                        "../x": 5 * S,
                        "d" * 63: 5 * S,
                    },
                }
            )
        },
    }
    recorded = record.recorded(keeper, 0)
    assert recorded == {A: 1 * S}
    snapshot = Snapshot.of([Image(A, created_s=100), Image(B, created_s=200)])
    uses = last_uses(snapshot, {}, (), recorded)
    assert uses[A] == Use(100 * S, "created (the image's Created)")
    assert uses[B].ns == 200 * S


def test_a_record_that_inflates_past_any_record_is_refused() -> None:
    bomb = base64.b64encode(zlib.compress(b" " * (20 * record.LIMIT))).decode()
    with pytest.raises(ValueError, match="larger than any record"):
        record.unpack(bomb, 10**20)


def test_a_record_keeps_the_newest_uses_when_it_would_not_fit() -> None:
    digests = (hashlib.sha256(str(n).encode()).hexdigest() for n in range(400))
    uses = {f"sha256:{d}": (n + 1) * S for n, d in enumerate(digests)}
    text = record.pack(uses, limit=4_000)
    assert len(text) <= 4_000
    back = record.unpack(text, 10**20)
    assert 0 < len(back) < 400
    assert min(back.values()) > min(uses.values())
    assert all(uses[i] == ns for i, ns in back.items())
    assert max(uses, key=uses.__getitem__) in back


def test_the_record_dates_a_use_the_engine_forgot() -> None:
    snapshot = Snapshot.of([Image(A, tags=("app:1",), created_s=100), Image(B, created_s=200)])
    uses = last_uses(snapshot, {}, (), {A: 300 * S, C: 900 * S})  # C: no longer on the engine
    assert uses[A] == Use(300 * S, record.EVIDENCE)
    assert C not in uses


def test_a_session_removes_a_bounded_number_of_records_and_loses_none() -> None:
    keeper = Keeper()
    for n in range(100):  # made by hand, or by anyone who reaches the engine
        keeper.keep_uses(f"{n:032x}", {record.USES: record.pack({f"sha256:{n:064x}": S})})
    present = frozenset(f"sha256:{n:064x}" for n in range(100))
    assert record.keep(keeper, {A: 5 * S}, present | {A}, 0) == record.REMOVE_AT_MOST
    assert len(keeper.volumes) == 100 - record.REMOVE_AT_MOST + 1
    assert record.recorded(keeper, 0) == {**dict.fromkeys(present, S), A: 5 * S}


# -- from a hostile review of the record (each failed before its mend) ----------------------


def nested(depth: int = 200_000) -> str:
    """A record of version 1 holding nothing, with a list nested ``depth`` deep beside: a
    label of some 600 bytes that anyone who can make a volume can put there."""
    raw = b'{"v": 1, "uses": {}, "x": ' + b"[" * depth + b"]" * depth + b"}"
    return base64.b64encode(zlib.compress(raw, 9)).decode()


def test_a_deeply_nested_record_is_an_unreadable_one() -> None:
    with pytest.raises(ValueError, match="record of uses"):
        record.unpack(nested(), 10**20)


def test_one_forged_record_hides_no_other_and_never_stops_the_writing() -> None:
    keeper = Keeper()
    keeper.volumes["pytest-imageprune-" + "0" * 32 + "-uses"] = {record.USES: nested()}
    for n in range(record.COMPACT_AT - 2):
        record.keep(keeper, {A: (n + 1) * S}, frozenset({A}), 0)
    assert record.recorded(keeper, 0) == {A: (record.COMPACT_AT - 2) * S}
    # The next one merges: the forged record goes, as an unreadable one does.
    assert record.keep(keeper, {A: 100 * S}, frozenset({A}), 0) == record.COMPACT_AT - 1
    assert len(keeper.volumes) == 1
    assert record.recorded(keeper, 0) == {A: 100 * S}


def test_a_merge_loses_no_use_of_an_image_that_arrived_after_the_writers_listing() -> None:
    """Session W lists the engine's images for its prune; X is built meanwhile by session
    S, which uses it and writes its record before W merges: W keeps X's use."""
    keeper = Keeper()
    now = keeper.now_ns
    assert now is not None
    for n in range(record.COMPACT_AT - 2):
        record.keep(keeper, {A: (n + 1) * S}, frozenset({A}), 0)
    record.keep(keeper, {B: now - 60 * S}, frozenset({A, B}), 0)  # S, which saw B
    listed_by_w = frozenset({A})  # before B arrived
    assert record.keep(keeper, {A: now - 30 * S}, listed_by_w, 0) == record.COMPACT_AT - 1
    assert record.recorded(keeper, 0) == {A: now - 30 * S, B: now - 60 * S}


def test_records_never_pile_up_where_the_engine_tells_no_time() -> None:
    """An answer without a ``Date`` (a proxy that drops it): nothing can be read or merged,
    so nothing is written."""
    keeper = Keeper(now_ns=None)
    for n in range(3 * record.COMPACT_AT):
        record.keep(keeper, {A: (n + 1) * S}, frozenset({A}), 0)
    assert keeper.volumes == {}
