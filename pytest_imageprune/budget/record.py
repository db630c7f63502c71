"""The plugin's own record of which images containers used, and when, kept where the
sessions of one engine meet: evidence of last use for the storage budget that outlives
the engine's own.

The engine forgets. Docker's event log holds its newest 256 events, and none from before
the engine started; Podman's says nothing the budget can go by; a container removed
takes its ``Created`` with it. So every session, at its end, writes down what it saw:
each image a container on the engine was created from (the containers' list, stopped ones
too) or created or started from since the session began (Docker's events, for
``docker run --rm``), with the latest such time on the engine's clock. That goes into one
labelled volume of the meeting place (``in_engine``), ``pytest-imageprune-<id>-uses``,
compressed into one label (``USES``); the budget reads every such volume
(``recorded``), whoever wrote it.

The record can only make an image's last use later, never earlier: the budget takes the
newest of all its evidence. So a record that is wrong, or forged by someone who can reach
the engine (and could delete its images anyway), can change which unused image the budget
evicts first, never make it evict an image in use, kept, or a live session's.

A session writes its record only if its containers used something. Once ``COMPACT_AT``
records are there, the session that writes merges them all into its own (the latest use
of each image the engine still holds) and then removes those it read: two sessions doing
so at once each keep everything they read, so nothing is lost, some is said twice.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Snapshot, full_id, normalize_reference

#: The label of a record volume that holds the record, compressed.
USES = "io.github.pytest-imageprune.uses"
#: A record holds at most this much, compressed (some 20,000 images); the oldest uses are
#: left out past it.
LIMIT = 1 << 20
#: A merge keeps the uses of images its writer did not list if they are this recent (an
#: image may have arrived, and been used, since that listing).
RECENT_NS = 3600 * NANOS
#: How many records there may be before the next writer merges them into one.
COMPACT_AT = 8
#: The most records one session removes once merged: many more (made by hand, or by
#: anyone who can reach the engine) go a few at a time, over the next sessions, each
#: session's record holding them all meanwhile.
REMOVE_AT_MOST = 32
#: The container events that use an image (``docker run`` is a create, then a start).
USING = frozenset({"create", "start"})
#: How long a session's end waits for its event stream to reach its "finishing" lease (the
#: engine sends it at once; a peer that does not is cut off then).
EVENTS_LIMIT_S = 1.0
#: What the budget says of a last use this record shows.
EVIDENCE = "a container used it (the plugin's record)"

_HEX = frozenset("0123456789abcdef")


class Keeper(Protocol):
    """Where records are kept: the engine's meeting place (``in_engine.EngineMeeting``)."""

    def use_records(self) -> tuple[list[Mapping[str, Any]], int | None]: ...

    def keep_uses(self, ident: str, labels: Mapping[str, str]) -> None: ...

    def drop_uses(self, names: Sequence[str]) -> None: ...


def seen(
    snapshot: Snapshot, events: Iterable[Mapping[str, Any]] = (), *, since_ns: int = 0
) -> dict[str, int]:
    """The images of ``snapshot`` that containers used, each with its latest use (ns, the
    engine's clock): the containers listed, and the container events from ``since_ns``."""
    uses: dict[str, int] = {}
    for image_id, ns, _ in shown(snapshot, events, since_ns=since_ns):
        if ns > uses.get(image_id, 0):
            uses[image_id] = ns
    return uses


def shown(
    snapshot: Snapshot, events: Iterable[Mapping[str, Any]] = (), *, since_ns: int = 0
) -> Iterator[tuple[str, int, str]]:
    """Each use of an image of ``snapshot`` that the engine shows: a container listed (its
    ``Created``), a container event from ``since_ns`` (a create or a start, its image named
    as it was given); as ``(image ID, ns, what shows it)``."""
    for container in snapshot.containers:
        image_id = full_id(container.image_id) if container.image_id else ""
        if image_id in snapshot.images and container.created_s > 0:
            yield image_id, container.created_s * NANOS, f"container {container.id[:12]} created"
    resolve = resolver(snapshot)
    for event in events:
        if event.get("Type") != "container" or event.get("Action") not in USING:
            continue
        actor = event.get("Actor")
        attributes = actor.get("Attributes") if isinstance(actor, Mapping) else None
        name = attributes.get("image") if isinstance(attributes, Mapping) else None
        when = event.get("timeNano")
        if not isinstance(when, int) or isinstance(when, bool) or when < since_ns:
            continue
        used = resolve(name) if isinstance(name, str) else None
        if used is not None:
            who = str(actor.get("ID") or "")[:12] if isinstance(actor, Mapping) else ""
            yield used, when, f"container {who} {event['Action']}d (the engine's events)"


def resolver(snapshot: Snapshot) -> Callable[[str], str | None]:
    """The image a container's ``image`` (as it was given: a name, an ID) names now."""
    by_name: dict[str, str] = {}
    for image in snapshot.images.values():
        for tag in image.tags:
            by_name[normalize_reference(tag)] = image.id
    ids = sorted(snapshot.images)

    def resolve(name: str) -> str | None:
        bare = name.removeprefix("sha256:")
        if len(bare) >= 12 and set(bare) <= _HEX:
            matches = [i for i in ids if i.removeprefix("sha256:").startswith(bare)]
            return matches[0] if len(matches) == 1 else None
        try:
            full = normalize_reference(name)
        except ValueError:
            return None
        last = full.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            full += ":latest"
        return by_name.get(full)

    return resolve


def pack(uses: Mapping[str, int], limit: int = LIMIT) -> str:
    """``uses`` as one label: compressed JSON, base64; the oldest left out past ``limit``."""
    newest = sorted(uses.items(), key=lambda item: (-item[1], item[0]))
    while True:
        data = {"v": 1, "uses": {i.removeprefix("sha256:"): ns for i, ns in newest}}
        text = base64.b64encode(zlib.compress(json.dumps(data).encode(), 6)).decode("ascii")
        if len(text) <= limit or not newest:
            return text
        newest = newest[: len(newest) * 3 // 4]


def unpack(text: object, latest_ns: int) -> dict[str, int]:
    """A record's uses, each image's time no later than ``latest_ns`` (the engine's now and
    the clocks' allowance); ``ValueError`` says why a record is unreadable. An entry that
    is no image ID and a time is left out."""
    if not isinstance(text, str) or len(text) > 2 * LIMIT:
        raise ValueError("it holds no record of uses")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode(text, validate=True), 16 * LIMIT)
        if inflater.unconsumed_tail:
            raise ValueError("it is larger than any record")
        data = json.loads(raw)
    except (ValueError, zlib.error, RecursionError) as exc:  # nested past any record
        raise ValueError(f"its record of uses does not decode: {str(exc)[:200]}") from None
    found = data.get("uses") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(found, dict):
        raise ValueError("its record of uses is of no known version")
    uses: dict[str, int] = {}
    for key, ns in found.items():
        if not (isinstance(key, str) and len(key) == 64 and set(key) <= _HEX):
            continue
        if isinstance(ns, int) and not isinstance(ns, bool) and 0 < ns <= latest_ns:
            uses[f"sha256:{key}"] = ns
    return uses


def merge(*records: Mapping[str, int]) -> dict[str, int]:
    """The latest use of each image any of ``records`` names."""
    merged: dict[str, int] = {}
    for record in records:
        for image_id, ns in record.items():
            if ns > merged.get(image_id, 0):
                merged[image_id] = ns
    return merged


def read(volumes: Sequence[Mapping[str, Any]], latest_ns: int) -> tuple[dict[str, int], int]:
    """Every record's uses merged, and how many records could not be read."""
    records, bad = [], 0
    for volume in volumes:
        labels = volume.get("Labels")
        try:
            records.append(
                unpack(labels.get(USES) if isinstance(labels, Mapping) else None, latest_ns)
            )
        except Exception:  # one record, whatever is wrong with it, hides no other
            bad += 1
    return merge(*records), bad


def recorded(keeper: Keeper, skew_ns: int) -> dict[str, int]:
    """Every image's latest use the records show (none where the engine's clock is not
    known: a record's times could not be bounded)."""
    volumes, now = keeper.use_records()
    if now is None:
        return {}
    return read(volumes, now + skew_ns)[0]


def keep(
    keeper: Keeper,
    uses: Mapping[str, int],
    present: frozenset[str],
    skew_ns: int,
) -> int:
    """Write this session's ``uses`` where the sessions meet, merging the records there
    into it once there are ``COMPACT_AT`` (keeping the images in ``present``, those the
    engine held at this session's listing, and any used since a while before it: another
    may have arrived since): returns how many records it merged (removed). Without the
    engine's clock (no ``Date`` in its answers) nothing is written: no record could be
    read, nor merged."""
    if not uses:
        return 0
    volumes, now = keeper.use_records()
    if now is None:
        return 0
    merged: Mapping[str, int] = uses
    old: list[str] = []
    if len(volumes) + 1 >= COMPACT_AT:
        found, _ = read(volumes, now + skew_ns)  # one unreadable goes: it told nothing
        recent = now - RECENT_NS
        merged = {i: ns for i, ns in merge(found, uses).items() if i in present or ns > recent}
        old = sorted(str(v.get("Name")) for v in volumes)[:REMOVE_AT_MOST]
    keeper.keep_uses(uuid.uuid4().hex, {USES: pack(merged)})
    if old:
        keeper.drop_uses(old)  # after its own is written: what they held is in it
    return len(old)
