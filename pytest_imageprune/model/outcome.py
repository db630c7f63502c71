"""Outcomes a later step acts on, as values: ``Status``, ``Kept``, and whether work is owed.

No decision in the package reads the words of a reason: it reads these. The words are
what the user reads (the terminal, the JSON report), and they stay as they were. And one
rule says whether a prune left work owed to a later session (``Outcome.owed``), for a
session's own prune and a sweep of another's alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_imageprune.kinds.report import KindReport
    from pytest_imageprune.model.report import PruneReport


class Status(str, Enum):
    """How a prune (of images, or of one other kind) ended; its value is the report's."""

    #: The prune ran to the end.
    COMPLETED = "completed"
    #: Interrupted (KeyboardInterrupt): what was done before is reported.
    CANCELLED = "cancelled"
    #: The time budget ran out: what was done before is reported.
    DEADLINE = "deadline"
    #: The engine stopped answering during the prune.
    ENGINE_LOST = "engine-lost"
    #: Another process holds the prune lock for this endpoint: nothing was deleted.
    LOCKED = "locked"
    #: The engine could not be reached: nothing was deleted.
    UNREACHABLE = "engine-unreachable"
    #: Session scope without a baseline (the engine was unreachable at start): nothing
    #: deleted. For another kind: its objects were not listed at session start.
    NO_BASELINE = "no-baseline"
    #: The lock or the session registry could not be had safely: nothing was deleted
    #: (pruning without them could take another live session's images).
    NO_REGISTRY = "no-registry"
    #: Something unexpected went wrong; the report's errors say what.
    FAILED = "failed"
    #: The engine keeps its images in a store this package does not support: nothing deleted.
    UNSUPPORTED_STORE = "unsupported-store"
    #: The engine has no such prune, or not with these filters (another kind): nothing deleted.
    NOT_SUPPORTED = "not-supported"

    # The report's text, in f-strings and JSON alike, on every Python (3.12 changed format()).
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def ran(self) -> bool:
        """The prune ran, wholly or in part: what it did is reported."""
        return self in RAN

    @property
    def stops(self) -> bool:
        """Ctrl-C or the engine gone: nothing more is pruned or swept in this session."""
        return self in (Status.CANCELLED, Status.ENGINE_LOST)


#: Statuses of a prune that ran, wholly or in part.
RAN = frozenset({Status.COMPLETED, Status.CANCELLED, Status.DEADLINE, Status.ENGINE_LOST})


class Kept(str):
    """Why an object in scope stays: the words the user reads, and what they mean.

    A ``str``, so that the report, the JSON and every reader of the words see them as
    before; the flags are what later steps decide by.
    """

    #: Kept because another live session may have made or uses it: the work stays owed.
    live: bool
    #: Kept for want of evidence that the session being swept left it.
    doubt: bool
    #: Kept because it is in use (a container uses the image, a volume is mounted...).
    busy: bool

    def __new__(
        cls, reason: str, *, live: bool = False, doubt: bool = False, busy: bool = False
    ) -> Kept:
        kept = super().__new__(cls, reason)
        kept.live, kept.doubt, kept.busy = live, doubt, busy
        return kept

    def __reduce__(self) -> tuple[object, ...]:
        return (_kept, (str(self), self.live, self.doubt, self.busy))


def _kept(reason: str, live: bool, doubt: bool, busy: bool) -> Kept:
    return Kept(reason, live=live, doubt=doubt, busy=busy)


def kept(reason: str | Kept) -> Kept:
    """``reason`` as a ``Kept``: a plain string (a hook's answer) keeps for no flag's sake."""
    return reason if isinstance(reason, Kept) else Kept(reason)


def is_live(reason: str) -> bool:
    """Kept because another live session may have made or uses it (the work stays owed)."""
    return isinstance(reason, Kept) and reason.live


def is_doubt(reason: str) -> bool:
    """Kept for want of evidence that the session being swept left it."""
    return isinstance(reason, Kept) and reason.doubt


def is_busy(reason: str) -> bool:
    """Kept because it is in use: a container uses it, or the engine holds it."""
    return isinstance(reason, Kept) and reason.busy


#: The statuses after which nothing of a kind is left to do: it ran to the end, or it never
#: can (the engine has no such prune; its objects were not listed at session start).
_FINAL = frozenset({Status.COMPLETED, Status.NOT_SUPPORTED, Status.NO_BASELINE})


@dataclass
class Outcome:
    """What a prune for a target did, filled in as it goes: the images' report (None until
    they were pruned), and each other kind's, in the order they ran."""

    report: PruneReport | None = None
    kinds: list[KindReport] = field(default_factory=list)

    @property
    def owed(self) -> bool:
        """Whether work is left for a later session: the prune stopped short (Ctrl-C, the
        engine lost, a failure, an image or a kind that did not complete), or it kept
        something for a live session (the last one out takes it).

        An image kept because another client named it after the listing (the tag race,
        ``images.names.KEPT_NAMED``) leaves nothing owed: it is that client's now, and a
        later sweep with this session's filters would only delete it with its new name."""
        if self.report is None or self.report.status != Status.COMPLETED:
            return True
        if any(is_live(why) for why in self.report.kept.values()):
            return True
        return any(
            k.status not in _FINAL or any(is_live(why) for why in k.kept.values())
            for k in self.kinds
        )
