"""pytest glue: the ``imageprune`` options, and the session hooks of ``ImagePrunePlugin``.

Installed but not enabled, this module registers options and nothing else: no Docker SDK,
no ``requests``, no ``dateutil`` is imported and no engine is contacted. Enabled, the
controlling process (never an xdist worker) records the baseline at session start and
prunes at session end, after every worker has finished. Nothing at session end changes
the exit status or raises into the terminal.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from pytest_imageprune.settings import (
    DRY_RUN_HELP,
    FILTER_HELP,
    INI_FILTER_HELP,
    LOCK_HELP,
    NO_HELP,
    REPORT_HELP,
    SCOPE_HELP,
    SCOPES,
    FilterAction,
    Settings,
    load_settings,
)

if TYPE_CHECKING:
    from collections.abc import Generator

    from pytest_imageprune.engine import DockerEngine
    from pytest_imageprune.images import Baseline
    from pytest_imageprune.report import PruneReport

PLUGIN_NAME = "imageprune-session"
#: Report statuses of a prune that ran, wholly or in part (see ``report``).
_RAN = frozenset({"completed", "cancelled", "deadline", "engine-lost"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imageprune", "pruning the Docker images a session built")
    group.addoption(
        "--prune-images",
        action=FilterAction,
        nargs="?",
        const="",
        default=None,
        dest="prune_images",
        metavar="FILTER",
        help=FILTER_HELP,
    )
    group.addoption("--no-prune-images", action="store_true", dest="no_prune_images", help=NO_HELP)
    group.addoption(
        "--prune-images-scope", choices=SCOPES, dest="prune_images_scope", help=SCOPE_HELP
    )
    group.addoption(
        "--prune-images-dry-run",
        action="store_true",
        dest="prune_images_dry_run",
        help=DRY_RUN_HELP,
    )
    group.addoption(
        "--prune-images-report", metavar="PATH", dest="prune_images_report", help=REPORT_HELP
    )
    group.addoption("--prune-images-lock", metavar="PATH", dest="prune_images_lock", help=LOCK_HELP)
    parser.addini("prune_images", INI_FILTER_HELP, type="linelist", default=[])
    parser.addini("prune_images_scope", SCOPE_HELP, default="session")
    parser.addini("prune_images_dry_run", DRY_RUN_HELP, type="bool", default=False)
    parser.addini("prune_images_report", REPORT_HELP, default="")
    parser.addini("prune_images_lock", LOCK_HELP, default="")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: registered before xdist's DSession, so that its session-finish (which
    # tears the workers down) runs before ours.
    settings = load_settings(config)  # a bad value is a UsageError, on workers too
    if settings is None or hasattr(config, "workerinput"):
        return
    config.pluginmanager.register(ImagePrunePlugin(config, settings), PLUGIN_NAME)


class ImagePrunePlugin:
    """Records the baseline at session start; prunes and reports at session end."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        from pytest_imageprune.engine import endpoint_from_env

        self.endpoint = endpoint_from_env()
        self.engine: DockerEngine | None = None
        self.baseline: Baseline | None = None
        self.problem: str | None = None
        self.report: PruneReport | None = None
        self.lines: list[str] = []

    # -- session start -----------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.settings.scope != "session":
            return
        from pytest_imageprune.errors import EngineUnavailable
        from pytest_imageprune.images import Baseline

        try:
            self.engine = self._connect()
            self.baseline = Baseline.of(self.engine.snapshot())
        except EngineUnavailable as exc:
            self.problem = str(exc)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        settings = self.settings
        what = ", ".join(_spell(settings)) or "dangling=true (the default)"
        scope = "images this session produces" if settings.scope == "session" else "all images"
        dry = " (dry run)" if settings.dry_run else ""
        line = f"imageprune: at session end, prune {scope} matching {what}{dry}"
        line += f"; engine {self.endpoint}"
        if self.baseline is not None:
            line += f", baseline of {len(self.baseline.tags)} images"
        lines = [line]
        if self.problem is not None:
            lines.append(f"imageprune: WARNING {self.problem}; nothing will be pruned")
        return lines

    # -- session end -------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(
        self, session: pytest.Session, exitstatus: int
    ) -> Generator[None, None, None]:
        # The innermost wrapper: this runs after every plain session-finish (xdist's
        # worker teardown included) and before the terminal summary is written.
        try:
            return (yield)
        finally:
            self._finish()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.lines:
            return
        terminalreporter.write_sep("-", "imageprune")
        for line in self.lines:
            terminalreporter.write_line(line)

    def _finish(self) -> None:
        """Prune, report, and never raise: the exit status stays the tests' own."""
        started = time.monotonic()
        try:
            self._prune()
        except KeyboardInterrupt:
            self.lines.append("imageprune: interrupted before deleting anything")
        except Exception as exc:  # the verdict is the tests', whatever happens here
            self.lines.append(f"imageprune: WARNING prune failed: {type(exc).__name__}: {exc}")
        finally:
            if self.engine is not None:
                self.engine.close()
        if self.report is not None:
            self.report.duration_s = time.monotonic() - started
            if self.report.status in _RAN:
                from pytest_imageprune.report import summary_line

                self.lines.insert(0, f"imageprune: {summary_line(self.report)}")
            self._write_report()

    def _prune(self) -> None:
        from pytest_imageprune import report as reporting
        from pytest_imageprune.errors import EngineUnavailable
        from pytest_imageprune.lock import ALREADY_RUNNING, PruneLock, default_lock_path
        from pytest_imageprune.prune import prune_images

        settings = self.settings
        if settings.scope == "session" and self.baseline is None:
            self._fail(reporting.NO_BASELINE, f"{self.problem}; nothing pruned")
            return
        lock = PruneLock(settings.lock_path or default_lock_path(self.endpoint))
        if not lock.acquire():
            self._fail(reporting.LOCKED, f"{ALREADY_RUNNING} ({lock.path}); nothing deleted")
            return
        try:
            engine = self.engine or self._connect()
            self.engine = engine
            self.report = prune_images(
                settings.filters,
                engine=engine,
                baseline=self.baseline,
                dry_run=settings.dry_run,
            )
        except EngineUnavailable as exc:
            self._fail(reporting.UNREACHABLE, f"WARNING {exc}; nothing pruned")
        finally:
            lock.release()
        if self.report is not None and self.config.get_verbosity() > 0:
            self.lines.extend(f"  {line}" for line in reporting.detail_lines(self.report))

    def _fail(self, status: str, message: str) -> None:
        from pytest_imageprune.report import PruneReport

        self.lines.append(f"imageprune: {message}")
        self.report = PruneReport(
            endpoint=self.endpoint,
            filters=self.settings.filters,
            scope=self.settings.scope,
            dry_run=self.settings.dry_run,
            status=status,
            errors=[{"error": message}],
        )

    def _connect(self) -> DockerEngine:
        from pytest_imageprune.engine import DockerEngine

        engine = DockerEngine.from_env()
        self.endpoint = engine.endpoint
        return engine

    def _write_report(self) -> None:
        path = self.settings.report_path
        if path is None or self.report is None:
            return
        try:
            self.report.write_json(path)
        except OSError as exc:
            self.lines.append(f"imageprune: WARNING could not write the report to {path}: {exc}")


def _spell(settings: Settings) -> list[str]:
    return [f"{key}={value}" for key, values in settings.filters.raw.items() for value in values]
