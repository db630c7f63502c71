"""A session's record: its fields round-trip through JSON, and every one is checked.

The helpers here (``record``, ``_valid_json``, ``BAD_RECORDS``) serve the registry's and
the sessions' tests too.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from pytest_imageprune.coordination.records import DEFERRED, SessionRecord
from pytest_imageprune.model.images import Baseline


def record(baseline_ids: set[str], **kw: object) -> SessionRecord:
    base = SessionRecord.new(
        Baseline(dict.fromkeys(baseline_ids, ())), {"label": ["a"]}, "session", 0
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_a_record_round_trips_through_json() -> None:
    rec = record({"x", "y"}, finished_ns=5, state=DEFERRED)
    assert SessionRecord.from_json(rec.to_json()) == rec


# -- records are data: every field checked, bad ones skipped ------------------------------------
def _valid_json(**changes: Any) -> dict[str, Any]:
    data = record({"sha256:old"}, scope="all").to_json()
    data.update(changes)
    return data


NOW = time.time_ns()
#: Each bad record the issue found, and more: (field changes, what the line says).
BAD_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    "filters-a-list": ({"filters": []}, "filters"),
    "filters-a-string": ({"filters": {"label": "a"}}, "filters"),
    "filters-unknown": ({"filters": {"reference": ["x"]}}, "filters"),
    "filters-bad-dangling": ({"filters": {"dangling": ["maybe"]}}, "filters"),
    "finished-a-string": ({"finished_ns": "x"}, "finished_ns"),
    "finished-in-the-future": ({"finished_ns": NOW + 10**15}, "finished_ns"),
    "started-a-float": ({"started_ns": 1.5}, "started_ns"),
    "pid-a-bool": ({"pid": True}, "pid"),
    "scope-unknown": ({"scope": "everything"}, "scope"),
    "state-unknown": ({"state": "zombie"}, "state"),
    "baseline-a-list": ({"baseline": []}, "baseline"),
    "baseline-tags-not-lists": ({"baseline": {"taken_ns": 0, "tags": {"x": "y"}}}, "baseline"),
    "id-a-path": ({"id": "../../../root/victim"}, "id"),
    "id-absolute": ({"id": "/root/victim"}, "id"),
    "id-not-the-name": ({"id": "0" * 32}, "own name"),
    "present-not-ids": ({"present": [1]}, "present"),
    "engine-not-text": ({"engine": 5}, "engine"),
    "engine-too-long": ({"engine": "x" * 5000}, "engine"),
    "clock-a-list": ({"clock": []}, "clock"),
    "clock-boot-a-number": ({"clock": {"boot": 5, "offset_ns": 0}}, "clock.boot"),
    "clock-boot-a-path": ({"clock": {"boot": "../../x", "offset_ns": 0}}, "clock.boot"),
    "clock-boot-empty": ({"clock": {"boot": "", "offset_ns": 0}}, "clock.boot"),
    "clock-offset-missing": ({"clock": {"boot": "0-1"}}, "clock.offset_ns"),
    "clock-offset-a-float": ({"clock": {"boot": "0-1", "offset_ns": 1.5}}, "clock.offset_ns"),
    "clock-offset-a-bool": ({"clock": {"boot": "0-1", "offset_ns": True}}, "clock.offset_ns"),
    "clock-offset-a-string": ({"clock": {"boot": "0-1", "offset_ns": "0"}}, "clock.offset_ns"),
    "clock-offset-huge": ({"clock": {"boot": "0-1", "offset_ns": 10**30}}, "clock.offset_ns"),
    "clock-offset-hugely-negative": (
        {"clock": {"boot": "0-1", "offset_ns": -(10**30)}},
        "clock.offset_ns",
    ),
}


@pytest.mark.parametrize(("changes", "said"), BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_every_field_of_a_record_is_checked(changes: dict[str, Any], said: str) -> None:
    data = _valid_json(**changes)
    name = _valid_json()["id"] if said == "own name" else str(data["id"])
    with pytest.raises(ValueError, match=said):
        SessionRecord.from_json(data, name=name, now_ns=NOW)


def test_a_valid_record_passes_the_checks() -> None:
    data = _valid_json()
    assert SessionRecord.from_json(data, name=data["id"], now_ns=NOW).to_json() == data
    # An older version's record has no clock: it reads, and has none.
    del data["clock"]
    assert SessionRecord.from_json(data, name=data["id"], now_ns=NOW).clock is None
