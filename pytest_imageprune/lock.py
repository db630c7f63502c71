"""The cross-process guard: one prune per Docker endpoint at a time, never waited for.

A ``filelock.FileLock`` (an OS lock, released by the kernel when its holder dies) on one
stable path per endpoint, shared by every process on the host that talks to that engine:
xdist controllers, parallel tox environments, several CI jobs on one runner. The lock file
is never deleted: unlinking it would let two processes lock two different files.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

ALREADY_RUNNING = "a prune operation is already running"


def default_lock_path(endpoint: str) -> Path:
    """``<tmp>/pytest-imageprune/<hash of the endpoint>.lock``."""
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "pytest-imageprune" / f"{digest}.lock"


class PruneLock:
    """Taken without waiting: ``acquire`` says False when another process holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: FileLock | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), mode=0o666)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
