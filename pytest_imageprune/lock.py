"""The cross-process guard: one prune per Docker endpoint at a time, never waited for.

A ``filelock.FileLock`` (an OS lock, released by the kernel when its holder dies) on one
stable path per endpoint, shared by every process on the host that talks to that engine:
xdist controllers, parallel tox environments, several CI jobs on one runner. The lock file
is never deleted: unlinking it would let two processes lock two different files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

ALREADY_RUNNING = "a prune operation is already running"


def default_lock_path(endpoint: str) -> Path:
    """``/tmp/pytest-imageprune/<hash of the endpoint>.lock``.

    Every process on the host that talks to one engine must find the same file, so the
    folder is ``/tmp`` whatever ``TMPDIR`` a job sets (the system temp dir where there is
    no ``/tmp``), and a unix socket is named by its real path (``/var/run`` and ``/run``
    are one folder on most systems).
    """
    digest = hashlib.sha256(canonical_endpoint(endpoint).encode()).hexdigest()[:16]
    base = Path("/tmp") if os.path.isdir("/tmp") else Path(tempfile.gettempdir())
    return base / "pytest-imageprune" / f"{digest}.lock"


def canonical_endpoint(endpoint: str) -> str:
    """One spelling per engine: ``unix://`` sockets by their real path."""
    for prefix in ("unix://", "http+unix://"):
        if endpoint.startswith(prefix):
            return "unix://" + os.path.realpath(endpoint.removeprefix(prefix))
    return endpoint


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
