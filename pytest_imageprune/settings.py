"""The plugin's settings: options and ini keys resolved once, command line over ini.

A bad value is a ``pytest.UsageError`` (exit status 4, before any test runs) that names
the value and where it came from.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_imageprune.filters import Filters

SCOPES = ("session", "all")

FILTER_HELP = (
    "Prune the images this session built at its end, keeping those that do not match "
    "FILTER, a Docker filter (dangling=BOOL, label=KEY[=VALUE], label!=KEY[=VALUE], "
    "until=TIME). Repeatable; bare, it prunes dangling images only, as docker image prune"
)
INI_FILTER_HELP = (
    "Docker filters, one a line (dangling=BOOL, label=KEY[=VALUE], label!=KEY[=VALUE], "
    "until=TIME); any line enables pruning at session end"
)
NO_HELP = "Do not prune, even when the ini file enables it"
SCOPE_HELP = (
    "Which images are candidates: session (default), only those the session produced; "
    "all, every image, as docker image prune"
)
DRY_RUN_HELP = "Decide and report what would be pruned, delete nothing"
REPORT_HELP = "Write the prune report as JSON to this path"
LOCK_HELP = (
    "The cross-process lock file (default: one per Docker endpoint under the system temp dir)"
)


class FilterAction(argparse.Action):
    """``--prune-images[=FILTER]``, repeatable; refuses to swallow a path.

    With an optional value, ``pytest --prune-images tests/`` would read ``tests/`` as a
    filter. Every filter has a ``=``, so a value without one is a usage error that shows
    how to write it.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = "" if values is None else str(values)
        path = os.path.exists(value.split("::")[0]) if value else False
        if value and ("=" not in value or path):
            looks = "a path" if path else "not a filter"
            raise pytest.UsageError(
                f"--prune-images took {value!r} as its filter, but that is {looks}: "
                f"write --prune-images=FILTER (such as --prune-images=label=ci), "
                f"or put a bare --prune-images after the paths"
            )
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(value)
        setattr(namespace, self.dest, items)


@dataclass(frozen=True)
class Settings:
    enabled: bool
    filters: Filters
    #: Where the filters came from, for messages.
    source: str = "the command line"
    scope: str = "session"
    dry_run: bool = False
    report_path: Path | None = None
    lock_path: Path | None = None


def load_settings(
    config: pytest.Config, options: argparse.Namespace | None = None
) -> Settings | None:
    """The settings, or None when pruning is not enabled.

    ``options`` are the command line as parsed so far, before ``config.option`` is set
    (``config.known_args_namespace``, in ``pytest_load_initial_conftests``).
    """
    option = _options(config, options)
    if option("no_prune_images"):
        return None
    cli: list[str] | None = option("prune_images")
    ini: list[str] = config.getini("prune_images")
    if cli is not None:
        values, source = [v for v in cli if v], "the command line (--prune-images)"
    elif ini:
        values, source = ini, f"prune_images in {_ini_name(config)}"
    else:
        return None
    from pytest_imageprune.errors import FilterError
    from pytest_imageprune.filters import parse_filters

    try:
        filters = parse_filters(values)
    except FilterError as exc:
        raise pytest.UsageError(f"pytest-imageprune: {exc}, from {source}") from None
    return Settings(
        enabled=True,
        filters=filters,
        source=source,
        scope=_scope(config, option),
        dry_run=bool(option("prune_images_dry_run") or config.getini("prune_images_dry_run")),
        report_path=_path(config, option, "prune_images_report"),
        lock_path=_path(config, option, "prune_images_lock"),
    )


def _options(config: pytest.Config, options: argparse.Namespace | None) -> Callable[[str], Any]:
    """An option's value: from ``config.option``, or from the command line parsed so far."""
    if options is None:
        return config.getoption
    return lambda name: getattr(options, name, None)


def _scope(config: pytest.Config, option: Callable[[str], Any]) -> str:
    cli = option("prune_images_scope")
    if cli is not None:
        return str(cli)  # argparse checked the choices
    ini = str(config.getini("prune_images_scope") or "session").strip()
    if ini not in SCOPES:
        raise pytest.UsageError(
            f"pytest-imageprune: prune_images_scope = {ini!r} in {_ini_name(config)}"
            f" is not one of {', '.join(SCOPES)}"
        )
    return ini


def _path(config: pytest.Config, option: Callable[[str], Any], name: str) -> Path | None:
    """A path option, absolute: relative to where pytest was invoked, or to the ini file."""
    cli = option(name)
    if cli:
        return Path(config.invocation_params.dir) / str(cli)
    ini = str(config.getini(name) or "").strip()
    if not ini:
        return None
    path = Path(ini)
    if not path.is_absolute() and config.inipath is not None:
        path = config.inipath.parent / path
    return path


def _ini_name(config: pytest.Config) -> str:
    return config.inipath.name if config.inipath is not None else "the ini file"
