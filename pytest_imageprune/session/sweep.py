"""Finishing the work of sessions that died or deferred theirs, one owed record at a time.

The protocol (``coordination.protocol``, rules 6 and 7) decides which records are owed and
when; ``Sweeper`` is the callback it calls for each: that session's own filters, start
lists and lifetime through the one pipeline, then the record settled by ``Outcome.owed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_imageprune.errors import FilterError, RegistryStuck
from pytest_imageprune.model.outcome import Status, is_live
from pytest_imageprune.session.pipeline import Target

if TYPE_CHECKING:
    from pytest_imageprune.coordination.protocol import Coordinator
    from pytest_imageprune.coordination.records import SessionRecord
    from pytest_imageprune.images.select import KeepRule
    from pytest_imageprune.kinds.report import KindReport
    from pytest_imageprune.model.report import PruneReport
    from pytest_imageprune.session.pipeline import Pipeline
    from pytest_imageprune.session.say import Voice


@dataclass
class Swept:
    """The work of another session, finished by this one."""

    record: SessionRecord
    state: str
    report: PruneReport
    #: The images kept for want of evidence they were that session's, with why.
    doubted: dict[str, str] = field(default_factory=dict)
    #: What its other kinds' prunes did.
    kinds: list[KindReport] = field(default_factory=list)


class Sweeper:
    """Sweeps owed records for one session holding the prune lock."""

    def __init__(
        self,
        pipeline: Pipeline,
        coordinator: Coordinator,
        voice: Voice,
        own: SessionRecord | None,
    ) -> None:
        self.pipeline = pipeline
        self.coordinator = coordinator
        self.voice = voice
        #: This session's own record: its deferral is said as its own.
        self.own_id = own.id if own is not None else None
        self.swept: list[Swept] = []
        #: Why a sweep stopped short (Ctrl-C, the engine gone): no more sweeping then.
        self.stopped: Status | None = None

    def __call__(self, record: SessionRecord, keep_live: KeepRule, state: str) -> bool:
        """Finish ``record``'s prune (``state``: "died" or "deferred") over its lifetime,
        keeping what ``keep_live`` keeps. False when sweeping should stop here (Ctrl-C, the
        engine lost, a failure)."""
        if record.dry_run:  # it promised to delete nothing: no one deletes for it
            self.coordinator.swept(record, done=True)
            return True
        try:
            target = Target.of_record(record)
        except FilterError:  # nothing this version can do for it
            self.coordinator.swept(record, done=True)
            return True
        try:
            outcome = self.pipeline.prune_for(target, lambda: keep_live)
            self.coordinator.swept(record, done=not outcome.owed)
        except RegistryStuck:
            raise
        except Exception as exc:  # one session's leftovers never cost this one its report
            self.voice.sweep_failed(record, exc)
            return False
        report, kinds = outcome.report, outcome.kinds
        assert report is not None  # prune_for returned: the images' step was reached
        doubted = self.voice.swept(record, state, report, kinds, own_id=self.own_id)
        images_done = report.status == Status.COMPLETED and not any(
            is_live(why) for why in report.kept.values()
        )
        went = any(k.deleted for k in kinds)
        if report.deleted_ids or report.untagged or images_done or doubted or went:
            self.swept.append(Swept(record, state, report, doubted, kinds))
        status = Status(report.status)
        if status.stops:
            self.stopped = status
        return status == Status.COMPLETED
