"""A session joins the others on its engine: finds their meeting place, writes its record.

Nothing here raises: what keeps a session from joining safely comes back as ``unsafe`` (no
safe registry: nothing will be deleted) or as the start's ``problem`` (no engine).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_imageprune.coordination.in_engine import EngineMeeting
from pytest_imageprune.coordination.place import meeting_place, place_of_lock
from pytest_imageprune.coordination.protocol import Coordinator
from pytest_imageprune.coordination.records import SessionRecord
from pytest_imageprune.engine.api import meets_of
from pytest_imageprune.errors import EngineUnavailable

if TYPE_CHECKING:
    from pytest_imageprune.session.say import Voice
    from pytest_imageprune.session.start import Start


def register(
    start: Start, lock_path: Path | None, voice: Voice, fields: Mapping[str, Any]
) -> tuple[SessionRecord | None, Coordinator | None, str | None]:
    """The session's record, its coordinator once it joined, and why it could not (or
    None). ``fields`` are the record's ``filters``, ``scope``, ``images``, ``kind_filters``."""
    baseline = start.baseline
    if baseline is None:
        return None, None, None
    record = SessionRecord.new(
        baseline,
        fields["filters"],
        fields["scope"],
        baseline.taken_ns or time.time_ns(),
        kinds=start.kind_lists,
        images=fields["images"],
        kind_filters=fields["kind_filters"],
        engine=start.engine_id or "",
        dry_run=bool(fields.get("dry_run", False)),
    )
    coordinator, unsafe = meet(start, lock_path, voice)
    if coordinator is None:
        return record, None, unsafe
    try:
        coordinator.join(record)
    except Exception as exc:  # in a pytest hook now: never the verdict, never a traceback
        # Not closed: a held .alive with no record still protects this session.
        return (
            record,
            None,
            f"the session registry {coordinator.registry.directory} is unusable: {exc}",
        )
    if coordinator.unrecorded is not None:
        voice.unrecorded(coordinator.registry.directory, coordinator.unrecorded)
    return record, coordinator, None


def _meeting(start: Start) -> EngineMeeting | None:
    """The session's part in the engine's meeting place, on a connection of its own
    (the lease is renewed while the session uses its own); None for an engine that can
    hold none (the tests' fakes)."""
    if start.engine is None or meets_of(start.engine) is None:
        return None
    twins = start.engine.spawn(2)
    twin = meets_of(twins[-1]) if len(twins) > 1 else None
    return EngineMeeting(twin) if twin is not None else None


def meet(
    start: Start, lock_path: Path | None, voice: Voice
) -> tuple[Coordinator | None, str | None]:
    """The coordinator of the engine's meeting place, its registry checked; or None and
    why no safe one can be had (None too when the engine cannot be reached: the start's
    ``problem`` says so)."""
    try:
        engine_id = start.engine_id_now()  # a lock given for two engines: records tell
        if lock_path is not None:
            find = functools.partial(place_of_lock, lock_path, start.endpoint)
            what = str(lock_path)
        else:
            find = functools.partial(meeting_place, start.endpoint, engine_id)
            what = f"the meeting place of {start.endpoint}"
        coordinator = Coordinator.meet(
            find, what, on_bad=voice.bad_records, engine=engine_id, meeting=_meeting(start)
        )
    except EngineUnavailable as exc:
        start.problem = str(exc)
        return None, None
    except Exception as exc:
        return None, f"no safe place for the lock and the session registry: {exc}"
    for refused in coordinator.place.refused:  # each squatted name: one line, then the next
        voice.refused_place(refused, coordinator.place.lock.parent)
    try:
        coordinator.open()
    except Exception as exc:
        coordinator.close()
        return None, f"no safe session registry beside the lock {coordinator.place.lock}: {exc}"
    return coordinator, None
