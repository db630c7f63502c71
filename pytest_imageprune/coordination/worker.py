"""Rule 9's bound: every file operation on the registry or the lock waited for at most a
deadline, on a thread of the coordinator's own, and none after one did not end in time.

A stuck network mount can block ``listdir``, ``open`` or ``utime`` forever; the session
must end all the same. So each operation runs on the worker's thread while the caller
waits for it at most ``DEADLINE_S`` seconds; one that takes longer makes the worker give
up for good (``RegistryStuck``, naming the path and the wait), and every later operation
is refused at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar, cast

from pytest_imageprune.errors import RegistryStuck

#: The longest a file operation on the registry or the lock is waited for (rule 9).
DEADLINE_S = 5.0

_T = TypeVar("_T")


class Worker:
    """Runs file operations on one thread of its own, each waited for at most ``deadline``
    seconds; after one did not end in time, every later one is refused at once.

    One thread for every operation, also because filelock's locks belong to the thread
    that took them: the lock is released by the thread that acquired it. Two queues hand
    the work over (about 0.1 ms a round trip).
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = DEADLINE_S if deadline is None else deadline
        self.stuck: RegistryStuck | None = None
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, path: Path | str, operation: Callable[[], _T]) -> _T:
        """``operation()``'s result or error, once it ends within the deadline; else
        ``RegistryStuck`` naming ``path``, now and for every operation after."""
        if self.stuck is not None:
            raise RegistryStuck(self.stuck.path, self.stuck.seconds)
        if self._thread is None:
            # A daemon: one stuck in the kernel must not keep the interpreter from exiting.
            self._thread = threading.Thread(
                target=self._serve, name="imageprune-registry", daemon=True
            )
            self._thread.start()
        self._jobs.put(operation)
        try:
            result, error = self._done.get(timeout=self.deadline)
        except queue.Empty:
            self.give_up(path)
        if error is not None:
            raise error
        return cast("_T", result)

    def give_up(self, path: Path | str) -> NoReturn:
        """Refuse every operation from now on; raise ``RegistryStuck``."""
        self.stuck = RegistryStuck(str(path), self.deadline)
        raise RegistryStuck(str(path), self.deadline)

    def stop(self) -> None:
        """Let the thread end once the operation it runs, if any, returns."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (operation := self._jobs.get()) is not None:
            try:
                self._done.put((operation(), None))
            except BaseException as exc:  # handed to the waiting thread
                self._done.put((None, exc))
