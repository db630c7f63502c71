"""The cross-process guard: one prune per Docker engine at a time, never waited for.

A ``filelock.FileLock`` (an OS lock, released by the kernel when its holder dies) on one
stable path per engine, shared by every process on the host that talks to that engine:
xdist controllers, parallel tox environments, several CI jobs on one runner, several
accounts. The lock file is never deleted: unlinking it would let two processes lock two
different files.

Where the lock and the registry meet (``meeting_place``) is a folder only the engine's
users can find or write into (see ``boundary``):

- **A unix socket its group may use** (``/var/run/docker.sock``, ``root:docker 0660``):
  ``/tmp/pytest-imageprune-<digest>/``, ``2770``, group the socket's, shared by every
  account in that group. The digest is of the engine's ID (``GET /info``, which only the
  engine's users can read) and this boot's ID: no one else can name the folder, so no one
  else can make it first. A folder there that fails the checks (someone made it anyway) is
  never used: the next name is tried, with one warning line.
- **A unix socket anyone may use** (``0666``): the same folder, but every local user may
  use the engine, so every local user takes part: ``0777`` (not sticky, so that any
  session may remove a dead one's record), files ``0666``.
- **Anything else** (tcp, ssh, a socket only its owner may use, Podman, whose ID changes
  with every request): a private folder, ``0700``, under this user's runtime folder
  (``$XDG_RUNTIME_DIR``), ``$XDG_CACHE_HOME`` or ``~/.cache``, the first that passes the
  checks (one warning line for each one refused, naming its variable): only this
  account's sessions meet there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_imageprune.coordination.boundary import Boundary, Unsafe
from pytest_imageprune.coordination.clock import boot_id

#: How many names a shared meeting place may take before giving up (each one squatted).
PLACES = 4


@dataclass(frozen=True)
class Place:
    """Where one engine's sessions meet: the lock, the registry beside it, who is trusted."""

    lock: Path
    boundary: Boundary
    #: The folders tried first and refused, each with why (one warning line each).
    refused: tuple[Unsafe, ...] = field(default=())

    @property
    def registry(self) -> Path:
        return self.lock.with_name(self.lock.name + ".sessions")


def meeting_place(endpoint: str, engine_id: str, boundary: Boundary | None = None) -> Place:
    """The default lock and registry of the engine at ``endpoint`` with key ``engine_id``
    (``DockerEngine.engine_id``: its ID and data root; empty when the engine has no stable
    ID). Raises ``Unsafe`` when no safe folder can be had.

    The place is named by the ID alone, as older versions name it, so that their sessions
    and this version's on one engine still meet; engines that report one ID (Docker
    20.10's dockerds of one host) then share a place, and their records tell them apart
    (``records.SessionRecord.of_engine``).
    """
    engine_id = engine_id.split(" ", 1)[0]
    boundary = boundary if boundary is not None else Boundary.of_endpoint(endpoint)
    if not boundary.shared or not engine_id:
        # Without an ID to hide behind, a shared name could be made first by anyone.
        return _private_place(_digest(engine_id or canonical_endpoint(endpoint)))
    key = engine_id
    refused: list[Unsafe] = []
    for path in shared_folders(key):
        try:
            folder = boundary.make_folder(path)
        except Unsafe as exc:
            refused.append(exc)
            continue
        return Place(folder / "prune.lock", boundary, tuple(refused))
    raise refused[-1]


def shared_folders(key: str) -> list[Path]:
    """The names a shared meeting place may take, in order: ``key`` is the engine's ID."""
    temp = Path("/tmp") if os.path.isdir("/tmp") else Path(tempfile.gettempdir())
    boot = boot_id()  # the shared names change at every reboot, when /tmp empties
    return [temp / f"pytest-imageprune-{_digest(key, boot, str(n))}" for n in range(PLACES)]


def place_of_lock(lock: Path, endpoint: str) -> Place:
    """The place of a lock given by ``--prune-images-lock``: its registry beside it."""
    return Place(lock, Boundary.of_endpoint(endpoint))


def canonical_endpoint(endpoint: str) -> str:
    """One spelling per engine: ``unix://`` sockets by their real path."""
    for prefix in ("unix://", "http+unix://"):
        if endpoint.startswith(prefix):
            return "unix://" + os.path.realpath(endpoint.removeprefix(prefix))
    return endpoint


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(("pytest-imageprune", *parts)).encode()).hexdigest()[:32]


def _private_place(name: str) -> Place:
    """This user's own folder ``name``, under the first base that passes the checks."""
    private = Boundary()
    refused: list[Unsafe] = []
    for source, base in _private_bases():
        try:
            base_folder = private.make_folder(base / "pytest-imageprune")
            folder = private.make_folder(base_folder / name)
        except OSError as exc:
            why = exc.why if isinstance(exc, Unsafe) else exc.strerror or str(exc)
            if isinstance(exc, Unsafe) and exc.path != str(base):
                why = f"{exc.path}: {why}"
            refused.append(Unsafe(f"{base} (from {source})", why, _private_fix(source)))
            continue
        return Place(folder / "prune.lock", private, tuple(refused))
    raise NoSafePlace(refused)


def _private_bases() -> list[tuple[str, Path]]:
    """Where a private folder may go, in order, each with what named it: a runtime folder
    that is missing, or a path that is not absolute, is no candidate (as XDG says)."""
    bases = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        bases.append(("$XDG_RUNTIME_DIR", Path(runtime)))
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if cache and os.path.isabs(cache):
        bases.append(("$XDG_CACHE_HOME", Path(cache)))
    bases.append(("~/.cache", Path.home() / ".cache"))
    return bases


def _private_fix(source: str) -> str:
    if source.startswith("$"):
        # sudo -E and su keep the caller's variables, and so its runtime folder
        return f"unset {source[1:]} or point it at a folder of this user's"
    return "make it a folder of this user's, or set XDG_CACHE_HOME to one"


class NoSafePlace(Unsafe):
    """No folder could be had: each one tried, with why."""

    def __init__(self, refused: list[Unsafe]) -> None:
        last = refused[-1]
        super().__init__(last.path, last.why, last.fix)
        self.refused = tuple(refused)
        self.args = ("; ".join(str(r) for r in refused),)


class LockUnusable(OSError):
    """The lock file cannot be opened or fails the trust check: not "already running"."""


class PruneLock:
    """Taken without waiting: ``acquire`` says False when another process holds it, and
    raises ``LockUnusable`` when the lock file cannot be used at all."""

    def __init__(self, path: Path, boundary: Boundary | None = None) -> None:
        self.path = path
        self.boundary = boundary if boundary is not None else Boundary()
        self._lock: FileLock | None = None

    def acquire(self) -> bool:
        try:
            # Made and checked here (no symlink, a regular file of a trusted user, 0660 or
            # 0600), so that filelock only ever opens a file that passed.
            self.path = self.boundary.resolve(self.path)
            os.close(self.boundary.open_file(self.path, create=True))
        except OSError as exc:
            raise LockUnusable(f"cannot use the prune lock {self.path}: {exc}") from exc
        lock = FileLock(str(self.path), mode=self.boundary.file_mode)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        except OSError as exc:
            raise LockUnusable(f"cannot use the prune lock {self.path}: {exc}") from exc
        self._lock = lock
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
