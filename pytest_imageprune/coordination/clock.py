"""The host's clocks: the wall clock, which a step moves, and this boot's clock, which none does.

The engine says when an image was made, tagged, loaded (``Created``,
``Metadata.LastTagTime``, its events) on the wall clock of its host. An NTP step, a
``date -s``, a VM's clock set right after a resume, moves that clock by any amount, either
way. A session's record says when it lived; if it said so on the wall clock alone, a step
back after it wrote a time would make its window end later than its death, on the clock
the images are stamped by.

So a session keeps its times on one ``Clock`` (``records.SessionRecord.clock``): this boot's
clock (``CLOCK_BOOTTIME``, which counts a suspend, as the wall clock does, and no step
moves), plus the offset between the wall clock and it when the record was made. That is
the wall clock as it would read had it never stepped since. The record's times, its
``.alive`` file's heartbeat and its end all read that clock. A reader on the same boot
reads the offset now: a smaller one says the wall clock stepped back since by that much
(``Clock.stepped_back``), and a window's end is moved back by as much
(``records.SessionRecord.seen_at``): never forward, for an image that came before a step
forward would look older than the end moved with it. The boot's ID tells one boot from
another: another boot's clock, or a record with none (an older version's), is read as the
wall clock, as before.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

#: A boot's ID as Linux gives it (``/proc/sys/kernel/random/boot_id``, a UUID).
BOOT_ID = re.compile(r"[0-9a-f-]{1,64}")


@functools.cache
def boot_id() -> str:
    """This boot's ID (Linux), or "" where it cannot be told."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read(64).strip()
    except OSError:
        return ""


def _boot_clock() -> int | None:
    """The boot clock's ``clock_id`` (Linux), or None where there is none."""
    return getattr(time, "CLOCK_BOOTTIME", None)


@dataclass(frozen=True)
class Clock:
    """A clock no step moves: this boot's clock (``boot``), plus ``offset_ns``."""

    boot: str
    #: The wall clock less the boot clock, when it was read (ns).
    offset_ns: int

    @classmethod
    def read(cls) -> Clock | None:
        """The wall clock now, as a clock no step will move; None where the host has no
        boot clock or boot ID (not Linux)."""
        which, boot = _boot_clock(), boot_id()
        if which is None or not BOOT_ID.fullmatch(boot):
            return None
        steady = time.clock_gettime_ns(which)
        return cls(boot, time.time_ns() - steady)

    def now_ns(self) -> int | None:
        """Now, on this clock; None on another boot, whose clock is gone."""
        which = _boot_clock()
        if which is None or self.boot != boot_id():
            return None
        return time.clock_gettime_ns(which) + self.offset_ns

    def stepped_back(self, now: Clock | None) -> int | None:
        """How far the wall clock stepped back between this reading and ``now`` (0 if it
        did not, or stepped forward); None when ``now`` is of another boot, or none."""
        if now is None or now.boot != self.boot:
            return None
        return max(0, self.offset_ns - now.offset_ns)
