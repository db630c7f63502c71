"""The host's clocks: this boot's ID."""

from __future__ import annotations

import functools


@functools.cache
def boot_id() -> str:
    """This boot's ID (Linux), or "" where it cannot be told."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read(64).strip()
    except OSError:
        return ""
