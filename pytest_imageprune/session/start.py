"""A session's start: connect, ask the store, list the baseline, and read ahead.

``Start`` does it in a thread of its own (``begin(background=True)``) while pytest
configures and collects, so the tests wait only for what they must: the baseline is
recorded before any test runs (``wait``). Nothing here raises: a problem is kept in
``problem`` and said at the end.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_imageprune.engine.api import endpoint_from_env, objects_of
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.errors import EngineUnavailable
from pytest_imageprune.model.images import Baseline

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from pytest_imageprune.engine.api import Engine
    from pytest_imageprune.engine.store import Store
    from pytest_imageprune.model.filters import Filters
    from pytest_imageprune.model.images import Snapshot


@dataclass
class Start:
    """What a session knows of its engine from its start on."""

    filters: Filters
    scope: str = "session"
    dry_run: bool = False
    #: The other kinds enabled (the build cache is listed at start only if it is).
    kinds: Collection[str] = ()
    endpoint: str = field(default_factory=endpoint_from_env)
    #: Connected at ``begin`` from the environment, unless given.
    engine: Engine | None = None
    #: The engine's image store, once asked (before the baseline).
    store: Store | None = None
    baseline: Baseline | None = None
    #: The objects of each other kind present at start (the containers always, with the
    #: images; the networks and volumes whatever is enabled; the build cache if enabled).
    kind_lists: dict[str, frozenset[str]] | None = None
    #: The engine's key (``DockerEngine.engine_id``: ``GET /info``, asked with the
    #: baseline); "" when it has none. It names the meeting place, and every record.
    engine_id: str | None = None
    #: Why nothing can be pruned (the engine was unreachable at start), if so.
    problem: str | None = None
    #: The engine did not answer at start: the header says so, with what to check.
    unreachable: EngineUnavailable | None = None
    #: Said at the end: the kinds that could not be listed, with why.
    unlisted: list[tuple[str, BaseException]] = field(default_factory=list)
    #: Layers read ahead while the tests ran (scope "all"), by root image ID.
    known_layers: dict[str, dict[str, int]] = field(default_factory=dict)
    starter: threading.Thread | None = None
    reader: threading.Thread | None = None
    _stop_reading: threading.Event = field(default_factory=threading.Event)
    _store_known: threading.Event = field(default_factory=threading.Event)

    def begin(self, *, background: bool, meanwhile: Callable[[], object] | None = None) -> None:
        """Connect and take the baseline, in a thread with ``background``; ``meanwhile``
        runs while the engine lists its images (imports the end will need)."""
        if self.engine is None:  # cheap: reads the docker CLI's config, contacts nothing
            try:
                self.engine = DockerEngine.from_env()
            except EngineUnavailable as exc:
                self.problem = str(exc)
                return
        if background:
            self.starter = threading.Thread(
                target=self._take_baseline,
                args=(meanwhile,),
                name="imageprune-baseline",
                daemon=True,
            )
            self.starter.start()
        else:
            self._take_baseline(meanwhile)

    def wait(self) -> bool:
        """Join the baseline's thread; True the first time it was joined."""
        if self.starter is None:
            return False
        self.starter.join()
        self.starter = None
        return True

    def known_store(self, timeout: float) -> Store | None:
        """The engine's image store, waiting at most ``timeout`` seconds for it."""
        if self.starter is not None:
            self._store_known.wait(timeout)
        return self.store

    def engine_id_now(self) -> str:
        """The engine's ID, asked now if it was not at start ("" when it has none)."""
        if self.engine_id is None:  # not asked at start: the engine did not answer
            self.engine = self.engine or DockerEngine.from_env()
            self.endpoint = self.engine.endpoint
            engine_id = getattr(self.engine, "engine_id", "")
            self.engine_id = engine_id if isinstance(engine_id, str) else ""
        return self.engine_id

    def snapshot_for_prune(self, engine: Engine) -> Snapshot | None:
        """The images listed for the session's own prune while the read-ahead reads on, then
        the read-ahead stopped; None when nothing reads ahead (the prune lists them)."""
        if self.reader is None:
            return None
        snapshot = engine.snapshot()
        self.stop_read_ahead()
        return snapshot

    def stop_read_ahead(self, *, wait: bool = True) -> None:
        """Stop reading ahead; with ``wait``, once the request in flight is answered."""
        self._stop_reading.set()
        if self.reader is not None and wait:
            self.reader.join()
            self.reader = None

    def abandon(self) -> None:
        """This session will never finish: read no more, and let the engine go once the
        listing is in."""
        self._stop_reading.set()
        starter = self.starter
        if self.engine is not None and (starter is None or not starter.is_alive()):
            self.engine.close()

    # -- the baseline's thread -------------------------------------------------------------
    def _take_baseline(self, meanwhile: Callable[[], object] | None) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            self.endpoint = engine.endpoint
            if isinstance(engine, DockerEngine):
                self.store = engine.store
                self._store_known.set()
                if not self.store.supported:  # nothing will be deleted: no need to list
                    self.problem = f"{self.store.describe()}: {self.store.reason}"
                    engine.close()
                    return
                snapshot = engine.snapshot(meanwhile=meanwhile)
            else:
                snapshot = engine.snapshot()
            self.baseline = Baseline.of(snapshot)
            self.kind_lists = self._kinds_present(engine, snapshot)
            # Read from the /info the store asked: it names the meeting place and the record.
            engine_id = getattr(engine, "engine_id", "")
            self.engine_id = engine_id if isinstance(engine_id, str) else ""
        except EngineUnavailable as exc:
            self.problem, self.unreachable = str(exc), exc
        except Exception as exc:  # an engine error, a malformed answer: never the verdict
            self.problem = f"Docker engine at {self.endpoint} failed: {type(exc).__name__}: {exc}"
        else:
            with contextlib.suppress(Exception):  # a help: the prune reads what is missing
                self._read_ahead(snapshot)
        finally:  # a failure too, once said above: the header waits for it and says it
            self._store_known.set()
        if self._stop_reading.is_set():  # abandoned meanwhile: no one else will use it
            engine.close()

    def _kinds_present(self, engine: Engine, snapshot: Snapshot) -> dict[str, frozenset[str]]:
        """The other kinds' objects present now, for this session's prune and for the other
        sessions' (what a live session's lists lack may be its): the containers, listed with
        the images; the networks and volumes (two quick requests) whatever is enabled, so
        that no session's prune must judge them by the clocks; the build cache when that
        kind is enabled (``GET /system/df`` is slow on Docker 20.10)."""
        from pytest_imageprune.kinds.table import BUILD_CACHE, CONTAINERS, NETWORKS, VOLUMES
        from pytest_imageprune.kinds.things import present_ids

        present = {CONTAINERS: frozenset(c.id for c in snapshot.containers)}
        objects = objects_of(engine)
        if objects is None:
            return present
        wanted = [NETWORKS, VOLUMES]
        if BUILD_CACHE in self.kinds and not objects.podman:
            wanted.append(BUILD_CACHE)
        for kind in wanted:
            try:
                present[kind] = present_ids(objects, kind)
            except Exception as exc:  # that kind alone: not pruned, and all of it kept for us
                self.unlisted.append((kind, exc))
        if self.kinds:  # listed again after the others: one made meanwhile is in either
            with contextlib.suppress(Exception):
                present[CONTAINERS] |= present_ids(objects, CONTAINERS)
        return present

    def _read_ahead(self, snapshot: Snapshot) -> None:
        """Scope "all": what the end's prune deletes is mostly here already. While the
        tests run, read the layers those deletions may release (which the prune would
        otherwise read then), in a thread, on a connection of its own."""
        if self.scope != "all" or self.dry_run or not isinstance(self.engine, DockerEngine):
            return
        if self._stop_reading.is_set():
            return
        twins = self.engine.spawn(2)[1:]
        if not twins:
            return
        self.reader = threading.Thread(
            target=self._read,
            args=(twins[0], snapshot),
            name="imageprune-read-ahead",
            daemon=True,
        )
        self.reader.start()

    def _read(self, engine: Engine, snapshot: Snapshot) -> None:
        from pytest_imageprune.images.prune import until_cutoff
        from pytest_imageprune.images.select import select
        from pytest_imageprune.images.space import read_ahead

        try:
            if not getattr(engine, "lists_layers", True):
                return  # Podman: its prune counts whole images, no layers to read
            until_ns = until_cutoff(self.filters, snapshot)
            candidates = select(snapshot, self.filters, until_ns, None, None).candidates
            read_ahead(engine, snapshot, candidates, self.known_layers, self._stop_reading)
        except Exception:  # a help, never a failure: the prune reads what is missing
            return
        finally:
            engine.close()
