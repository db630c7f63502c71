"""Every line a session tells the user about its prune, worded here and nowhere else.

``Voice`` gathers the lines the terminal summary prints (``imageprune: ...``), in the order
things happened; the pipeline and the session tell it facts, it words them. A line about
nothing says nothing, and what was said once is not said again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_imageprune.kinds.table import BUILD_CACHE
from pytest_imageprune.model import report as reporting
from pytest_imageprune.model.outcome import Status, is_doubt, is_live

if TYPE_CHECKING:
    from pytest_imageprune.budget.apply import BudgetReport
    from pytest_imageprune.coordination.protocol import HeartbeatTrouble
    from pytest_imageprune.coordination.records import BadRecord, SessionRecord
    from pytest_imageprune.errors import EngineUnavailable
    from pytest_imageprune.kinds.report import KindReport
    from pytest_imageprune.model.report import PruneReport

PREFIX = "imageprune: "
#: What a session that finds the prune lock held says: the daemon's own words (R3).
ALREADY_RUNNING = "a prune operation is already running"
#: What a prune that could not run says it did, by its status.
_NOTHING = {
    Status.UNSUPPORTED_STORE: "nothing deleted",
    Status.NO_BASELINE: "nothing pruned",
    Status.UNREACHABLE: "nothing pruned",
    Status.NO_REGISTRY: "nothing deleted",
    Status.LOCKED: "nothing deleted",
}


@dataclass(frozen=True)
class LockHeld:
    """The prune lock was held by another process when this session came to prune."""

    path: Path | str
    #: The other live sessions past their tests (finishing, or sweeping after their own
    #: prune): the holder is one of them, unless it has no record in the registry.
    holders: tuple[SessionRecord, ...] = ()
    #: Whether this session's record stays, deferred, for whoever prunes next.
    deferred: bool = True
    #: Who holds the engine's claim (``in_engine.EngineMeeting.holder``), if it was that
    #: claim that was held: a session elsewhere on the engine.
    claimant: str | None = None

    def __str__(self) -> str:
        return str(self.path)

    def said(self) -> str:
        """Who prunes, and what becomes of this session's own prune."""
        if self.claimant is not None:
            who = f"the session of {self.claimant} is pruning"
        elif len(self.holders) == 1:
            who = f"the session of {_session(self.holders[0])} is pruning"
        elif self.holders:
            listed = ", ".join(_session(h) for h in self.holders)
            who = f"one of the sessions of {listed} is pruning"
        else:
            who = (
                "a session done with its own prune and doing others', or a process outside"
                " the session registry, is pruning"
            )
        if self.deferred:
            then = (
                "nothing deleted yet, and nothing is lost: the session pruning now (or the"
                " next one on this engine) does this session's prune too, with its filters"
            )
        else:
            then = (
                "nothing deleted; this session has no record in the session registry, so no"
                " later session finishes its prune: what it made stays until a prune takes it"
            )
        return f"{ALREADY_RUNNING} ({who}; lock {self.path}); {then}"


def _session(record: SessionRecord) -> str:
    """A session's process for a person, and when it started if known."""
    if not record.started_ns:
        return record.describe()
    when = time.strftime("%H:%M:%S", time.localtime(record.started_ns / 1e9))
    return f"{record.describe()} (started {when})"


def unreachable_at_start(exc: EngineUnavailable, *, scope: str) -> str:
    """The header's words for an engine that did not answer at session start: why, what to
    check, and what becomes of the prune (said before any test runs, not only at the end)."""
    if isinstance(exc.__cause__, PermissionError):
        check = "check that this user may use the engine's socket (its group, often docker)"
    elif exc.endpoint.startswith("unix://"):
        check = "check that the Docker daemon runs and that this is its socket"
    else:
        check = "check that the engine runs and answers at this address, and its TLS or ssh"
        check += " settings"
    then = "nothing will be pruned" if scope == "session" else "it is asked again at session end"
    return f"not reachable ({exc.reason}); {check} (`docker info` asks the same engine): {then}"


class Voice:
    """The lines of one session, in order."""

    def __init__(self, *, verbose: bool = False) -> None:
        self.lines: list[str] = []
        #: ``-v``: under each summary line, one line per image or object it counts.
        self.verbose = verbose
        #: The images already said to be kept for another live session: a sweep that keeps
        #: them again (this session's own deferral, say) says nothing new.
        self._said_live: set[str] = set()
        #: The bad registry files already said, by name (one line each per session).
        self._bad_said: set[str] = set()

    def say(self, text: str) -> None:
        self.lines.append(PREFIX + text)

    def warn(self, text: str) -> None:
        self.say(f"WARNING {text}")

    # -- at start --------------------------------------------------------------------------
    def kind_unlisted(self, kind: str, exc: BaseException) -> None:
        self.warn(
            f"could not list the {kind.replace('_', ' ')} at session start"
            f" ({type(exc).__name__}: {exc}): none will be pruned"
        )

    def refused_place(self, refused: object, instead: object) -> None:
        self.warn(f"{refused}; meeting at {instead} instead")

    def unrecorded(self, directory: object, why: str) -> None:
        self.warn(
            f"could not write this session's record in {directory} ({why}): other sessions"
            " keep what it builds while it runs, and it prunes at its end, but what it"
            " leaves then (or if it dies) no later session finishes"
        )

    def unmet(self, why: str) -> None:
        """The engine's meeting place could not be used: the sessions elsewhere on the
        engine are unseen, so everything in scope was kept."""
        self.warn(
            f"could not meet the other sessions in the engine ({why}): sessions elsewhere"
            " on it (jobs in other containers, other hosts) cannot be seen, so every image"
            " and object in this session's scope was kept; allow volumes on the engine's"
            " API (docs/sessions.md)"
        )

    def lapsed(self, lapsed_s: float, lease_s: float) -> None:
        """The session's lease in the engine went unrenewed longer than it holds."""
        self.warn(
            f"this session's lease in the engine went {lapsed_s:.0f} s unrenewed (it holds"
            f" {lease_s:.0f} s: the process was stopped, or one call held the GIL): sessions"
            " elsewhere on the engine may have taken it for dead meanwhile, and pruned what"
            " it had made"
        )

    def bad_records(self, bad: Sequence[BadRecord]) -> None:
        for item in bad:
            if item.name not in self._bad_said:
                self._bad_said.add(item.name)
                self.warn(item.describe())

    # -- the pipeline ----------------------------------------------------------------------
    def images_kept_for_live(self, report: PruneReport) -> None:
        """How many more images were kept because another session lives: it started with
        them, or may have made them."""
        live = {i for i, why in report.kept.items() if is_live(why)}
        deferred = len(live - self._said_live)
        if deferred:
            more = " more" if self._said_live else ""
            self.say(
                f"kept {deferred}{more} image{'s' * (deferred != 1)} while another live"
                " session runs (it started with them or may have produced them): the last"
                " session out prunes them"
            )
        self._said_live |= live

    def engine_lost(self, endpoint: str, then: str) -> None:
        self.warn(f"the engine at {endpoint} stopped answering during the prune; {then}")

    def kinds(self, reports: Sequence[KindReport], whose: str = "") -> None:
        """The other kinds' errors, and what they kept for live sessions (``whose``: the
        session a sweep finishes, if not this one)."""
        prefix = f"{whose}: " if whose else ""
        for report in reports:
            for error in report.errors:
                self.warn(f"{prefix}{report.spec.many}: {error['error']}")
            kept = sum(1 for why in report.kept.values() if is_live(why))
            if kept:
                spec = report.spec
                self.say(
                    f"{prefix}kept {kept} {spec.one if kept == 1 else spec.many}"
                    " while another live session runs (it started with them, may have made"
                    " them, or uses them)"
                )

    def kind_unlisted_at_end(self, many: str, why: str) -> None:
        self.warn(f"{many}: {why}; nothing deleted")

    # -- sweeps ----------------------------------------------------------------------------
    def swept(
        self,
        record: SessionRecord,
        state: str,
        report: PruneReport,
        kinds: Sequence[KindReport],
        *,
        own_id: str | None,
    ) -> dict[str, str]:
        """What a sweep did; returns the images it kept for want of evidence, with why."""
        doubted = {i: str(why) for i, why in report.kept.items() if is_doubt(why)}
        if doubted:
            self.say(
                f"kept {len(doubted)} image{'s' * (len(doubted) != 1)} the session"
                f" that {state} ({record.describe()}) cannot be shown to have left: they"
                " arrived after it ended, or when is unknown"
            )
        self.kinds(kinds, f"the prune of {record.describe()}")
        # What happened, in plain words: the work was handed over as the protocol means it
        # to be, so none of these reads as a failure (under ``tox -p`` one environment
        # prunes what another left).
        if record.id == own_id:
            done = "pruned what this session had kept for another live session, which has ended"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_ns / 1e9))
            whose = f"the session of {record.describe()} (started {when})"
            if state == "died":
                done = f"pruned what {whose} left when it died before its prune"
            else:
                done = f"pruned what {whose} left for the next prune"
        if report.deleted_ids or report.untagged:  # a line about nothing says nothing
            self.say(f"{done}: {reporting.summary_line(report)}")
        for kind in kinds:
            if kind.deleted:
                self.say(f"{done}: {kind.spec.many}: {kind.summary_line()}")
        return doubted

    def sweep_failed(self, record: SessionRecord, exc: BaseException) -> None:
        self.warn(f"could not finish the prune of {record.describe()}: {type(exc).__name__}: {exc}")

    # -- at the end ------------------------------------------------------------------------
    def failed(self, status: Status, why: object, *, ran: bool = False) -> str:
        """Say why the prune could not run (or went no further, if it ``ran``); the words
        the report's errors keep."""
        if status == Status.LOCKED:  # another session prunes: not a warning
            if isinstance(why, LockHeld):
                message = why.said()
            else:
                message = f"{ALREADY_RUNNING} ({why}); {_NOTHING[status]}"
        elif status == Status.FAILED:
            message = f"WARNING prune failed: {why}"
        else:
            nothing = "nothing more deleted" if ran else _NOTHING[status]
            message = f"WARNING {why}; {nothing}"
        self.say(message)
        return message

    def interrupted(self) -> None:
        self.say("interrupted before deleting anything")

    def heartbeat(self, trouble: HeartbeatTrouble) -> None:
        when = time.strftime("%H:%M:%S", time.localtime(trouble.first_at))
        self.warn(
            f"the heartbeat failed {trouble.failures} times from {when} ({trouble.error}):"
            " had this session died, a later one would have kept what it made after the"
            " last heartbeat"
        )

    def budget(self, report: BudgetReport) -> None:
        """What the storage budget found, evicted (each image, its size and last use) and
        could not evict."""
        for line in report.lines():  # one image a line, indented under its heading
            self.lines.append(line if line.startswith("  ") else PREFIX + line)

    def summary(self, report: PruneReport, kinds: Sequence[KindReport], *, images: bool) -> None:
        """The summary lines of a prune that ran, first of all the lines; with ``verbose``,
        under each, one line per image or object it counts, in its words."""
        said = []
        if images:
            said.append(PREFIX + reporting.summary_line(report))
            if self.verbose:
                said += [f"  {line}" for line in reporting.detail_lines(report)]
        for kind in kinds:
            said.append(f"{PREFIX}{kind.spec.many}: {kind.summary_line()}")
            if self.verbose:
                said += [f"  {line}" for line in kind.detail_lines()]
        if images:
            hint = reporting.held_hint(report)
            if hint is not None:
                said.append(PREFIX + hint)
            cache_pruned = any(r.kind == BUILD_CACHE for r in kinds)
            cache = reporting.cache_hint(report, cache_pruned)
            if cache is not None:
                said.append(PREFIX + cache)
        self.lines[0:0] = said
