"""pytest glue: the ``imageprune`` options, and the session hooks of ``ImagePrunePlugin``.

Installed but not enabled, this module registers options and nothing else: no Docker SDK,
no ``requests``, no ``dateutil`` is imported and no engine is contacted. Enabled, the
controlling process (never an xdist worker) records the baseline at session start and
prunes at session end, after every worker has finished. Nothing at session end changes
the exit status or raises into the terminal.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from pytest_imageprune.kinds.table import KINDS
from pytest_imageprune.model.scopes import SCOPES
from pytest_imageprune.settings import (
    BUDGET_HELP,
    DRY_RUN_HELP,
    FILTER_HELP,
    INI_FILTER_HELP,
    INI_KEEP_HELP,
    KEEP_HELP,
    LOCK_HELP,
    NO_HELP,
    REPORT_HELP,
    SCOPE_HELP,
    FilterAction,
    Settings,
    load_settings,
)

if TYPE_CHECKING:
    from collections.abc import Generator

    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.model.images import Baseline, Image
    from pytest_imageprune.model.report import PruneReport

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
    group.addoption(  # checked by load_settings, which says what is wrong as for the ini key
        "--prune-images-scope",
        metavar="{" + ",".join(SCOPES) + "}",
        dest="prune_images_scope",
        help=SCOPE_HELP,
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
    group.addoption(
        "--prune-images-budget", metavar="SIZE", dest="prune_images_budget", help=BUDGET_HELP
    )
    group.addoption(
        "--prune-images-keep",
        action="append",
        metavar="PATTERN",
        dest="prune_images_keep",
        help=KEEP_HELP,
    )
    for kind in KINDS.values():
        group.addoption(
            kind.option,
            action=FilterAction,
            nargs="?",
            const="",
            default=None,
            dest=kind.ini,
            metavar="FILTER",
            help=kind.help,
        )
        parser.addini(kind.ini, kind.ini_help, type="linelist", default=[])
    parser.addini("prune_images", INI_FILTER_HELP, type="linelist", default=[])
    parser.addini("prune_images_scope", SCOPE_HELP, default="session")
    parser.addini("prune_images_dry_run", DRY_RUN_HELP, type="bool", default=False)
    parser.addini("prune_images_report", REPORT_HELP, default="")
    parser.addini("prune_images_lock", LOCK_HELP, default="")
    parser.addini("prune_images_budget", BUDGET_HELP, default="")
    parser.addini("prune_images_keep", INI_KEEP_HELP, type="linelist", default=[])


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_imageprune import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Ask the engine for the baseline now, before the conftests load and pytest configures.

    The command line and the ini file are read; a conftest may still change an option,
    so ``pytest_configure`` keeps this start only if the settings come out the same.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") or not _runs_tests(early_config.known_args_namespace):
        return
    try:
        settings = load_settings(early_config, early_config.known_args_namespace)
    except pytest.UsageError:
        return  # said by pytest_configure, which stops pytest with it
    if settings is not None:
        started = ImagePrunePlugin(early_config, settings)
        early_config.stash[_STARTED] = started
        early_config.add_cleanup(started.session.abandon)  # if pytest never configures


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: registered before xdist's DSession, so that its session-finish (which
    # tears the workers down) runs before ours.
    started = config.stash.get(_STARTED, None)
    config.stash[_STARTED] = None
    settings = load_settings(config)  # a bad value is a UsageError, on workers too
    if settings is None or hasattr(config, "workerinput") or not _runs_tests(config.option):
        plugin = None
    elif started is not None and started.settings == settings:
        plugin, started = started, None
    else:
        plugin = ImagePrunePlugin(config, settings)
    if started is not None:
        started.session.abandon()  # the settings changed since: its baseline goes unused
    if plugin is not None:
        config.pluginmanager.register(plugin, PLUGIN_NAME)


def _runs_tests(options: argparse.Namespace) -> bool:
    """False for the commands that build nothing (an IDE's test discovery prunes nothing)."""
    return not any(getattr(options, name, False) for name in _NO_TESTS)


#: --help, --version, --markers, --fixtures, --fixtures-per-test, --collect-only and
#: --setup-plan run no test: no session, no engine.
_NO_TESTS = (
    "help",
    "version",
    "markers",
    "showfixtures",
    "show_fixtures_per_test",
    "collectonly",
    "setupplan",
)


class ImagePrunePlugin:
    """Records the baseline at session start; prunes and reports at session end."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        from pytest_imageprune.session.lifecycle import PruneSession

        self.config = config
        self.settings = settings
        self.annotations: list[str] = []
        self._progress = _ProgressLine(config)
        self.session = PruneSession(
            settings.filters,
            scope=settings.scope,
            dry_run=settings.dry_run,
            lock_path=settings.lock_path,
            images=settings.images,
            kinds=settings.kinds,
            budget=settings.budget,
            protect=self._protect,
            progress=self._progress,
        )
        # The engine lists its images in a thread while pytest configures and collects;
        # the session registers once that is joined, before xdist's workers start (in
        # ``pytest_configure_node``) or the first test runs (``pytest_runtestloop``).
        self.session.start(background=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        self.session.wait_started()  # no test runs before the baseline is recorded

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: hand the baseline to each worker, for the ``imageprune_baseline`` fixture."""
        self.session.wait_started()
        if self.session.baseline is not None:
            node.workerinput[_BASELINE_KEY] = self.session.baseline.to_json()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        settings, state = self.settings, self.session
        what = ", ".join(_spell(settings)) or "dangling=true (the default)"
        scope = "images this session produces" if settings.scope == "session" else "all images"
        dry = " (dry run)" if settings.dry_run else ""
        kinds = [
            f"{name.replace('_', ' ')}"
            + (f" matching {', '.join(_spell_kind(filters))}" if filters.raw else "")
            for name, filters in settings.kinds.items()
        ]
        if settings.dry_run_alone:
            line = (
                "imageprune: at session end, a dry run of a bare --prune-images (what"
                f" --prune-images-dry-run alone previews): {scope} matching dangling=true"
            )
        elif not settings.images and not kinds:  # the budget alone
            line = "imageprune: at session end"
        elif not settings.images:
            scope = "what this session produces" if settings.scope == "session" else "all"
            line = f"imageprune: at session end, prune {scope}: {'; '.join(kinds)}"
        else:
            more = f"; then {'; '.join(kinds)}" if kinds else ""
            line = f"imageprune: at session end, prune {scope} matching {what}{more}"
        budget = settings.budget
        if budget is not None and not settings.dry_run_alone:
            kept = f", never one matching {', '.join(budget.keep)}" if budget.keep else ""
            then = "," if line.endswith("end") else "; then"
            line += (
                f"{then} evict the least recently used unused images while the engine's"
                f" images take more than {budget.spelled}{kept}"
            )
        if not settings.dry_run_alone:
            line += dry
        if state.engine is None and state.problem is not None:
            # Known before any test runs (an unknown Docker context, say): said now, not
            # only in the summary after the tests.
            return [
                f"{line}; no engine",
                f"imageprune: WARNING {state.problem}: nothing will be pruned",
            ]
        line += f"; engine {getattr(state.engine, 'description', state.endpoint)}"
        # The store is asked first, in the baseline's thread: a few milliseconds. (Whether
        # the listing worked is known later: the summary says.)
        store = state.known_store(timeout=_HEADER_WAIT_S)
        unreachable = state.started.unreachable
        if store is None and unreachable is not None:
            from pytest_imageprune.session.say import unreachable_at_start

            return [f"{line}: {unreachable_at_start(unreachable, scope=settings.scope)}"]
        if store is not None:
            line += f" ({store.describe()})"
            if not store.supported:
                return [line, f"imageprune: WARNING {store.reason}: nothing will be deleted"]
        return [line]

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

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.stop_read_ahead(wait=False)  # if no session ever finished: read no more

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = self.session.lines
        if lines:
            terminalreporter.write_sep("-", "imageprune")
            for line in lines:
                terminalreporter.write_line(line)
        for annotation in self.annotations:  # GitHub reads these from stdout, one a line
            terminalreporter.write_line(annotation)

    def _protect(self, image: Image) -> str | None:
        answer = self.config.hook.pytest_imageprune_protect(image=image)
        if not answer:
            return None
        return f"protected: {answer}" if isinstance(answer, str) else "protected by a hook"

    def _finish(self) -> None:
        state = self.session
        state.voice.verbose = self.config.get_verbosity() > 0  # as the command line ended up
        state.finish()  # never raises
        self._progress.clear()
        report = state.report
        if report is None:
            return
        sessions = [
            {
                "id": s.record.id,
                "pid": s.record.pid,
                "state": s.state,
                **s.report.to_dict(),
                **{k.kind: k.to_dict() for k in s.kinds},
            }
            for s in state.swept
        ]
        kinds = {r.kind: r.to_dict() for r in state.kind_reports}
        path = self.settings.report_path
        if path is not None:
            try:
                extra = {"budget": state.budget_report.to_dict()} if state.budget_report else {}
                report.write_json(
                    path, sessions=sessions, images=self.settings.images, **kinds, **extra
                )
            except Exception as exc:  # a report is never worth the verdict
                state.lines.append(
                    f"imageprune: WARNING could not write the report to {path}: {exc}"
                )
        try:
            self._github(report, sessions, kinds)
        except Exception as exc:
            state.lines.append(f"imageprune: WARNING GitHub output failed: {exc}")
        try:
            self.config.hook.pytest_imageprune_report(report=report)
        except Exception as exc:  # another plugin's hook: never the verdict
            state.lines.append(
                f"imageprune: WARNING pytest_imageprune_report failed: {type(exc).__name__}: {exc}"
            )

    def _github(
        self, report: PruneReport, sessions: list[dict[str, Any]], kinds: dict[str, Any]
    ) -> None:
        from pytest_imageprune import github

        if not github.in_github_actions():
            return
        data = {**report.to_dict(), **kinds}  # its deleted_ids count images, not layers
        error = github.append_step_summary(github.step_summary(data, sessions))
        if error is not None:
            self.session.lines.append(f"imageprune: WARNING {error}")
        self.annotations = github.warning_annotations(data)


class _ProgressLine:
    """One updating line (count and bytes) while a long prune runs; quiet off a terminal."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, size: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done != total:
            return
        if self.config.pluginmanager.get_plugin("terminalreporter") is None:
            return
        writer = self.config.get_terminal_writer()
        if not writer.hasmarkup or self.config.get_verbosity() < 0:
            return
        if not self.shown:
            self.started, self.shown = now, True
            writer.line()
        from pytest_imageprune.model.report import human_size

        self.last = now
        text = f"imageprune: {done}/{total} images, {human_size(size)} freed"
        writer.write(f"\r{text}\x1b[K", flush=True)

    def clear(self) -> None:
        if self.shown and self.config.pluginmanager.get_plugin("terminalreporter") is not None:
            writer = self.config.get_terminal_writer()
            writer.write("\r\x1b[K", flush=True)
            self.shown = False


_BASELINE_KEY = "imageprune_baseline"
#: How long the header waits for the engine to say which image store it keeps.
_HEADER_WAIT_S = 2.0
#: The plugin started in ``pytest_load_initial_conftests``, until ``pytest_configure``.
_STARTED = pytest.StashKey["ImagePrunePlugin | None"]()


@pytest.fixture(scope="session")
def imageprune_label(pytestconfig: pytest.Config) -> dict[str, str]:
    """Labels to put on what a test makes (images, containers, networks, volumes) so that
    this session's prune takes it.

    They satisfy every ``label`` filter of every kind enabled (``label=ci`` gives
    ``{"ci": "1"}``, ``label=ci=yes`` gives ``{"ci": "yes"}``; where two kinds want
    different values of one key, the value sorted last); with no ``label`` filter it is
    empty.
    """
    from pytest_imageprune.settings import load_settings

    settings = load_settings(pytestconfig)
    labels: dict[str, str] = {}
    if settings is not None:
        wanted_labels = set(settings.filters.label) if settings.images else set()
        for filters in settings.kinds.values():
            wanted_labels |= filters.label
        for value in sorted(wanted_labels):
            key, has_value, wanted = value.partition("=")
            if has_value or key not in labels:
                labels[key] = wanted if has_value else "1"
    return labels


@pytest.fixture(scope="session")
def imageprune_baseline(pytestconfig: pytest.Config) -> Baseline | None:
    """The images present when the session started (None when pruning is off or failed)."""
    from pytest_imageprune.model.images import Baseline

    workerinput = getattr(pytestconfig, "workerinput", None)
    if workerinput is not None:
        data = workerinput.get(_BASELINE_KEY)
        return Baseline.from_json(data) if data is not None else None
    plugin = pytestconfig.pluginmanager.get_plugin(PLUGIN_NAME)
    return plugin.session.baseline if isinstance(plugin, ImagePrunePlugin) else None


def _spell_kind(filters: KindFilters) -> list[str]:
    return [f"{key}={value}" for key, values in filters.raw.items() for value in values]


def _spell(settings: Settings) -> list[str]:
    return [f"{key}={value}" for key, values in settings.filters.raw.items() for value in values]
