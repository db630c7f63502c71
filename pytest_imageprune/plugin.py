"""pytest glue: the ``imageprune`` options, and the session hooks of ``ImagePrunePlugin``.

Installed but not enabled, this module registers options and nothing else: no Docker SDK,
no ``requests``, no ``dateutil`` is imported and no engine is contacted. Enabled, the
controlling process (never an xdist worker) records the baseline at session start and
prunes at session end, after every worker has finished. Nothing at session end changes
the exit status or raises into the terminal.
"""

from __future__ import annotations

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

PLUGIN_NAME = "imageprune-session"


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
    if config.getoption("collectonly") or config.getoption("setupplan"):
        return  # nothing runs, nothing is built: an IDE's test discovery prunes nothing
    config.pluginmanager.register(ImagePrunePlugin(config, settings), PLUGIN_NAME)


class ImagePrunePlugin:
    """Records the baseline at session start; prunes and reports at session end."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        from pytest_imageprune.lifecycle import PruneSession

        self.config = config
        self.settings = settings
        self.session = PruneSession(
            settings.filters,
            scope=settings.scope,
            dry_run=settings.dry_run,
            lock_path=settings.lock_path,
        )

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Before xdist's own (trylast) session start spawns the workers.
        self.session.start()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        settings, state = self.settings, self.session
        what = ", ".join(_spell(settings)) or "dangling=true (the default)"
        scope = "images this session produces" if settings.scope == "session" else "all images"
        dry = " (dry run)" if settings.dry_run else ""
        line = f"imageprune: at session end, prune {scope} matching {what}{dry}"
        line += f"; engine {state.endpoint}"
        if state.baseline is not None:
            line += f", baseline of {len(state.baseline.tags)} images"
        lines = [line]
        if state.problem is not None and settings.scope == "session":
            # (In scope "all" the prune tries again at the end, and says so then.)
            lines.append(f"imageprune: WARNING {state.problem}; nothing will be pruned")
        return lines

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
        lines = self.session.lines
        if not lines:
            return
        terminalreporter.write_sep("-", "imageprune")
        for line in lines:
            terminalreporter.write_line(line)

    def _finish(self) -> None:
        from pytest_imageprune.lifecycle import RAN
        from pytest_imageprune.report import detail_lines

        state = self.session
        state.finish()  # never raises
        report = state.report
        if report is None:
            return
        if self.config.get_verbosity() > 0 and report.status in RAN:
            state.lines[1:1] = [f"  {line}" for line in detail_lines(report)]
        path = self.settings.report_path
        if path is None:
            return
        sessions = [
            {"id": s.record.id, "pid": s.record.pid, "state": s.state, **s.report.to_dict()}
            for s in state.swept
        ]
        try:
            report.write_json(path, sessions=sessions)
        except OSError as exc:
            state.lines.append(f"imageprune: WARNING could not write the report to {path}: {exc}")


def _spell(settings: Settings) -> list[str]:
    return [f"{key}={value}" for key, values in settings.filters.raw.items() for value in values]
