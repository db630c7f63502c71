"""What another session's prune keeps for a session, and the evidence it asks for.

Every reason given here is a ``Kept``: ``live`` when a live session may have made the
image (rule 5), ``doubt`` when the engine cannot show that the swept session left it
(rule 6); a later step decides by those flags, never by the words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_imageprune.coordination.records import SessionRecord
from pytest_imageprune.images.select import KeepRule
from pytest_imageprune.model.filters import engine_time
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Image, Snapshot
from pytest_imageprune.model.outcome import Kept


def protect_live(live: Sequence[SessionRecord]) -> KeepRule:
    """Keep, while any other session lives, what it needs or may have made (rule 5).

    An image in its baseline was there when it started: its tests may use it (a build
    cached on it, a ``FROM`` of it), and its promise is that it survives the session. An
    image absent from its baseline, or with a name it did not have there (on the
    containerd store a name is a record of its own), may be its product. Every image is
    one or the other, so no image goes while another session lives: the last one out
    prunes what the group made.
    """

    def keep(image: Image) -> Kept | None:
        for record in live:
            names = record.baseline.tags.get(image.id)
            if names is None or not set(image.tags) <= set(names):
                return Kept(f"may belong to a live session ({record.describe()})", live=True)
            return Kept(f"in a live session's baseline ({record.describe()})", live=True)
        return None

    return keep


def within_lifetime(
    record: SessionRecord, then: KeepRule, arrival: Arrival | None = None
) -> KeepRule:
    """Keep, besides ``then``'s, what ``record``'s session cannot be shown to have left.

    An image created after the session ended is not its garbage. With ``arrival`` (an
    engine to ask), neither is one that arrived after it ended (tagged, loaded, pulled),
    nor one with no evidence it arrived while the session lived. ``record`` is as a sweep
    judges it once the images are listed (``SessionRecord.seen_at``): its end on the wall
    clock of then, moved back by any step back since it was written.
    """
    end = record.end_ns

    def keep(image: Image) -> str | None:
        created = image.created_ns if image.created_ns is not None else image.created_s * NANOS
        if created > end:
            return _doubt("created after that session ended")
        if arrival is not None:
            why = arrival.doubt(image, record)
            if why is not None:
                return why
        return then(image)

    return keep


#: How far before a session's start an image it made may say it was created (the
#: engine's clock and the session's, rounding).
_START_SLACK_NS = 2 * NANOS


#: How far the wall clock may fall behind a clock no step moves before it counts as a
#: step back (NTP's slewing moves it by half a millisecond a second at most).
_STEP_NS = NANOS // 10


class Arrival:
    """When each image came to the engine, as far as the engine can tell.

    ``Created`` says when an image was made, not when it came (``docker load`` keeps a
    2024 image's date); ``Metadata.LastTagTime`` says when it was last tagged (on Docker's
    classic store a build, a ``docker tag``, an import, never a pull or a load; on the
    containerd store any change to one of its records, pulls and loads included). The
    engine's event log, while it reaches back, says what was loaded, pulled, imported or
    tagged after a session ended.
    An image a dead session could have left arrived after that session started and before
    it ended: one that did not, or whose arrival cannot be told, stays (a leak can be
    mended later; a loss cannot).
    """

    def __init__(
        self,
        inspect: Callable[[str], Mapping[str, Any]],
        snapshot: Snapshot | None = None,
        events: Callable[[int, int], Sequence[Mapping[str, Any]] | None] | None = None,
        started: Callable[[], int | None] | None = None,
        engine_now: Callable[[], int | None] | None = None,
    ) -> None:
        self._inspect = inspect
        #: Now on the engine's clock, at the latest (``DockerEngine.clock_ns``): what a
        #: record on the engine's clock (``SessionRecord.engine_clock``) is judged by.
        self._engine_now = engine_now
        self._snapshot = snapshot
        self._events = events
        #: When the engine's process started, if it can be told (its log begins there).
        self._started = started
        self._seen: dict[str, tuple[int | None, int | None] | Kept] = {}
        self._witnessed: dict[str, Witness] = {}

    def doubt(self, image: Image, record: SessionRecord) -> Kept | None:
        """Why ``image`` may not be ``record``'s garbage, or None."""
        if record.present is not None:  # it said what it left when it finished
            if image.id not in record.present:
                return _doubt("arrived after that session ended")
            return self._tagged_since(image.id, record)
        if image.id not in record.baseline.tags:
            return self._arrived_in(image.id, record, "it arrived")
        if record.scope != "session":
            return None  # there when the session started: a scope-all prune takes it
        # A baseline image whose tags were all taken (a rebuilt tag): the evidence is the
        # image holding one of those tags now, tagged while the session lived.
        wanted = set(record.baseline.tags[image.id])
        holders = [
            other.id
            for other in (self._snapshot.images.values() if self._snapshot else ())
            if wanted.intersection(other.tags)
        ]
        if not holders:
            return _doubt("no evidence its tags were taken while that session lived")
        reasons = [self._arrived_in(holder, record, "its tag moved") for holder in holders]
        return None if None in reasons else reasons[0]

    def _tagged_since(self, image_id: str, record: SessionRecord) -> Kept | None:
        """Why an image a deferred session left may not be its garbage now: tagged (or
        loaded, pulled) after it ended, by someone else. None if not."""
        if self._names(image_id) & self._witness(record).arrived:
            return _doubt("tagged after that session ended (the engine's events)")
        seen = self._times(image_id)
        if isinstance(seen, Kept):
            return seen
        tagged = seen[1]
        if tagged is not None and tagged > record.end_ns:
            return _doubt("tagged after that session ended")
        return None

    def _arrived_in(self, image_id: str, record: SessionRecord, what: str) -> Kept | None:
        """Why ``image_id`` did not arrive while ``record``'s session lived, or None.

        ``what`` is ``"it arrived"`` or ``"its tag moved"``.
        """
        witness = self._witness(record)
        if self._names(image_id) & witness.arrived:
            return _doubt(
                f"{what.removeprefix('it ')} after that session ended (the engine's events)"
            )
        seen = self._times(image_id)
        if isinstance(seen, Kept):
            return seen
        created, tagged = seen
        instant = max(t for t in (created, tagged, 0) if t is not None)
        if instant > record.end_ns:
            return _doubt(f"{what.removeprefix('it ')} after that session ended")
        if instant < record.started_ns - _START_SLACK_NS:
            return _doubt(f"no evidence {what} while that session lived")
        if tagged is None and witness.partial:
            # Only Created speaks for it, and a load keeps Created: without the log's
            # word that nothing came after the end, it may have come later.
            return _doubt(
                f"no evidence {what} while that session lived (the engine's event log no"
                " longer reaches back to that session's end)"
            )
        return None

    def _names(self, image_id: str) -> set[str]:
        image = self._snapshot.images.get(image_id) if self._snapshot else None
        return {image_id, *(image.tags if image is not None else ())}

    def _witness(self, record: SessionRecord) -> Witness:
        """What the engine's event log says of the time after ``record``'s end."""
        if record.id not in self._witnessed:
            self._witnessed[record.id] = self._ask_the_log(record)
        return self._witnessed[record.id]

    def _ask_the_log(self, record: SessionRecord) -> Witness:
        if self._events is None:
            return Witness(frozenset(), partial=False)  # an engine with no log: as before
        now = time.time_ns()
        # Now on the clock the record's end reads (``SessionRecord.seen_at``), which no
        # step moves; the wall clock for an older version's record or another boot's; the
        # engine's for one read from the engine (this host's may be behind it or ahead).
        steady = record.clock.now_ns() if record.clock is not None else None
        if record.engine_clock:
            try:
                steady = self._engine_now() if self._engine_now is not None else None
            except Exception:
                steady = None
            if steady is None:  # the engine's now unknown: the log cannot be asked rightly
                return Witness(frozenset(), partial=True)
            now = steady
        if steady is None:
            steady = now
        if record.end_ns >= steady:
            return Witness(frozenset(), partial=False)  # nothing can have come after yet
        if now < steady - _STEP_NS:
            # The wall clock stepped back since the end was judged: what came before the
            # step, after the end, may be stamped later than now, and the log is asked
            # only up to now (a later ``until`` would be waited for).
            return Witness(frozenset(), partial=True)
        try:
            events = self._events(record.end_ns, now)
        except Exception:  # the log cannot be read: it tells nothing
            return Witness(frozenset(), partial=True)
        if events is None:
            return Witness(frozenset(), partial=False)
        # The log holds the newest LOG_LIMIT events since the engine started, with no gap:
        # fewer than that since the end, and an engine started before the end, and it
        # holds them all. (A session may make no event at all: a classic build whose
        # container steps are cached makes none, so nothing from before the end can be
        # asked for.)
        arrived: set[str] = set()
        for event in events:
            arrived |= _arrived(event, record.end_ns)
        try:
            started = self._started() if self._started is not None else None
        except Exception:  # a help: where it cannot be told, the count alone decides
            started = None
        # ``started`` is on the wall clock now (boot time by ``/proc/stat``, which a step
        # moves with it): a step back since the end was judged is told above; a step
        # forward makes it later, and a restart more likely: the log believed less.
        restarted = started is not None and started > record.end_ns
        return Witness(frozenset(arrived), partial=len(events) >= LOG_LIMIT or restarted)

    def _times(self, image_id: str) -> tuple[int | None, int | None] | Kept:
        """When ``image_id`` was created and last tagged, or why that cannot be told."""
        if image_id not in self._seen:
            try:
                data = self._inspect(image_id)
            except LookupError:  # no doubt: there is nothing left to delete
                self._seen[image_id] = Kept("gone meanwhile")
            except Exception as exc:  # doubt: keep it
                self._seen[image_id] = _doubt(f"could not inspect it: {type(exc).__name__}")
            else:
                metadata = data.get("Metadata")
                tagged = metadata.get("LastTagTime") if isinstance(metadata, Mapping) else None
                self._seen[image_id] = (engine_time(data.get("Created")), engine_time(tagged))
        return self._seen[image_id]


def _doubt(reason: str) -> Kept:
    """Kept for want of evidence that the session being swept left it (rule 6)."""
    return Kept(reason, doubt=True)


@dataclass(frozen=True)
class Witness:
    """The engine's event log on the time after a session's end."""

    #: The image IDs and names it shows loaded, pulled, imported or tagged after the end.
    arrived: frozenset[str]
    #: Whether some of that time may be missing from it: the log keeps the newest 256
    #: events of every kind (more than that came since), none from before the engine's
    #: process started (restarted since), could not be read, or cannot be asked as far
    #: as the end's clock reaches (the wall clock stepped back since the end was judged).
    partial: bool


#: How many events Docker's log keeps (``daemon/events``: ``eventsLimit``, 20.10 to 29).
LOG_LIMIT = 256


#: The image events that bring an image, or a name, to the engine.
_ARRIVALS = frozenset({"load", "pull", "import", "tag"})


def _when(event: object) -> int | None:
    """An event's time in ns (``timeNano``, else ``time`` in seconds), if it has one."""
    if isinstance(event, Mapping):
        nano, seconds = event.get("timeNano"), event.get("time")
        if isinstance(nano, int) and not isinstance(nano, bool):
            return nano
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return seconds * NANOS
    return None


def _arrived(event: object, after_ns: int) -> set[str]:
    """What ``event`` shows arriving after ``after_ns`` (or at a time it does not say): an
    image ID, a name; or nothing."""
    when = _when(event)
    if not isinstance(event, Mapping) or (when is not None and when <= after_ns):
        return set()
    actor = event.get("Actor")
    if event.get("Type") != "image" or event.get("Action") not in _ARRIVALS:
        return set()
    if not isinstance(actor, Mapping):
        return set()
    attributes = actor.get("Attributes")
    found = {actor.get("ID"), attributes.get("name") if isinstance(attributes, Mapping) else None}
    return {item for item in found if isinstance(item, str) and item}
