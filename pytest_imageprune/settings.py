"""The plugin's settings: options and ini keys resolved once, command line over ini.

A bad value is a ``pytest.UsageError`` (exit status 4, before any test runs) that names
the value and where it came from.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from pytest_imageprune.kinds.table import KINDS
from pytest_imageprune.model.scopes import SCOPES

if TYPE_CHECKING:
    from pytest_imageprune.budget.size import Budget
    from pytest_imageprune.errors import FilterError
    from pytest_imageprune.kinds.filters import KindFilters
    from pytest_imageprune.model.filters import Filters


FILTER_HELP = (
    "Prune, at session end, the images this session produced that match FILTER, a Docker"
    " filter: dangling=BOOL, label=KEY[=VALUE], label!=KEY[=VALUE] or until=TIME. Give it"
    " once per filter; bare, it takes the dangling images only, as docker image prune does."
)
INI_FILTER_HELP = (
    "Filters for --prune-images, one a line: dangling=BOOL, label=KEY[=VALUE],"
    " label!=KEY[=VALUE] or until=TIME. Any line enables the prune of images at session end."
)
NO_HELP = "Do not prune, even when the ini file enables it."
SCOPE_HELP = (
    "Choose the candidates: session, the default, takes only what this session produced;"
    " all takes every image, as docker image prune does. The other kinds follow it, but a"
    " volume there at session start is never a candidate."
)
DRY_RUN_HELP = (
    "Decide and report what would be pruned, and delete nothing. With nothing else enabled,"
    " it previews a bare --prune-images: the dangling images this session produced."
)
REPORT_HELP = "Write the prune report as JSON to this path."
BUDGET_HELP = (
    "After the session's prune, while the engine's images take more than SIZE (20GB, 500MB,"
    " 1.5GiB: Docker's units), delete the least recently used images no container uses, from"
    " before the session too, until they fit."
)
KEEP_HELP = (
    "Never let the budget evict an image with a repo:tag name in which this regular"
    " expression finds a match, as docuum's --keep. Give it once per pattern."
)
INI_KEEP_HELP = (
    "Patterns for --prune-images-keep, one a line: the budget never evicts an image with a"
    " repo:tag name in which one of them finds a match."
)
#: Where the default lock lives, as --help and the README say it (``lock.shared_folders``).
DEFAULT_LOCK = "/tmp/pytest-imageprune-<digest>/prune.lock"
LOCK_HELP = (
    "Use this file as the cross-process prune lock. By default it is"
    f" {DEFAULT_LOCK}, one per engine, in a folder only the engine's users can find or"
    " write into; for a tcp or ssh engine, it is in a private folder under ~/.cache."
)


class FilterAction(argparse.Action):
    """``--prune-images[=FILTER]``, repeatable; refuses to swallow a path.

    With an optional value, ``pytest --prune-images tests/`` would read ``tests/`` as a
    filter. Every filter has a ``=``, so a value without one (or one that names a path) is
    a usage error that shows how to write it.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = "" if values is None else str(values)
        option = "--" + self.dest.replace("_", "-")
        if value and os.path.exists(value.split("::")[0]):
            example = "until=24h" if self.dest == "prune_build_cache" else "label=ci"
            raise pytest.UsageError(
                f"{PREFIX}{option} {value} (command line): {value} is a path, not a"
                f" filter ({option} takes the word after it as its FILTER). Write"
                f" {option}=FILTER, such as {option}={example}, or put a bare"
                f" {option} after the paths"
            )
        if value and "=" not in value:
            from pytest_imageprune.errors import FilterError

            error = FilterError("", texts=(value,))
            if self.dest != "prune_images":
                raise kind_usage_error(self.dest.removeprefix("prune_"), error, None)
            raise filter_usage_error(error, None)
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(value)
        setattr(namespace, self.dest, items)


#: Every usage error of this plugin starts so (after pytest's own ``ERROR: ``).
PREFIX = "pytest-imageprune: "
FILTERS = "dangling=BOOL, label=KEY[=VALUE], label!=KEY[=VALUE] and until=TIME"


def filter_usage_error(exc: FilterError, ini: str | None) -> pytest.UsageError:
    """A bad filter said to a person: where it came from (the command line when ``ini`` is
    None, else that ini file), what is wrong, and what to write instead. Docker's own
    wording (``str(exc)``) is left out: it names Go's parser, not what to type."""
    from pytest_imageprune.kinds.filters import ACCEPTED, where_given
    from pytest_imageprune.model.filters import ACCEPTED_FILTERS

    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    where = where_given("--prune-images", "prune_images", exc, ini)
    option = "--prune-images=" if ini is None else ""
    accepted = {name: ACCEPTED[name].format(o=option) for name in ACCEPTED_FILTERS}
    key, values = exc.key, exc.values
    if key is None:  # no "=" at all: a filter's name alone, or not a filter
        word = texts[0].strip().lower()
        if word in ACCEPTED_FILTERS:
            what = f"the {word} filter has no value. {accepted[word]}"
        else:
            what = f"{texts[0]!r} is not a filter. A filter is {option}KEY=VALUE: {FILTERS}"
    elif key not in ACCEPTED_FILTERS:
        what = f"{key!r} is not a filter of docker image prune. The filters are {FILTERS}"
    elif key == "dangling" and {"1", "true"} & set(values) and {"0", "false"} & set(values):
        what = f"dangling is given both true and false. Give one. {accepted[key]}"
    elif key == "until" and len(values) > 1:
        what = f"until is given {len(values)} times; docker image prune takes one. Keep one"
    else:
        shown = ", ".join(repr(v) for v in values) if any(values) else "an empty value"
        what = f"{shown} is not {'a time' if key == 'until' else 'true or false'}. "
        what += accepted[key]
    return pytest.UsageError(f"{PREFIX}{where}: {what}")


def kind_usage_error(kind: str, exc: FilterError, ini: str | None) -> pytest.UsageError:
    """A bad filter of another kind (``kinds``), said as an image filter is."""
    from pytest_imageprune.kinds.filters import kind_usage_error as said

    return pytest.UsageError(PREFIX + said(KINDS[kind], exc, ini))


class Settings(NamedTuple):
    """What the options and ini keys ask for, checked (a named tuple, not a frozen
    dataclass: the module is imported at every pytest start, enabled or not)."""

    enabled: bool
    filters: Filters
    #: Where the filters came from, for messages.
    source: str = "the command line"
    scope: str = "session"
    dry_run: bool = False
    report_path: Path | None = None
    lock_path: Path | None = None
    #: Whether images are pruned (``--prune-images``); the other kinds may be without.
    images: bool = True
    #: The other kinds enabled, with their filters, by name (``kinds.table.KINDS``).
    kinds: Mapping[str, KindFilters] = MappingProxyType({})
    #: Enabled by a dry run alone: it previews a bare ``--prune-images``.
    dry_run_alone: bool = False
    #: The storage budget (``--prune-images-budget``), if one is set.
    budget: Budget | None = None


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
    kinds = _kinds(config, option)
    budget = _budget(config, option)
    cli: list[str] | None = option("prune_images")
    ini: list[str] = config.getini("prune_images")
    dry_run = bool(option("prune_images_dry_run") or config.getini("prune_images_dry_run"))
    alone = False
    if cli is not None:
        values, source, ini_name = [v for v in cli if v], "the command line (--prune-images)", None
    elif ini:
        ini_name = _ini_name(config)
        values, source = ini, f"prune_images in {ini_name}"
    elif kinds or budget is not None:  # the other kinds, or the budget alone
        values, source, ini_name = None, "", None
    elif dry_run:  # a preview of nothing would print nothing: preview a bare --prune-images
        values, source, ini_name = [], "a dry run alone (as a bare --prune-images)", None
        alone = True
    else:
        return None  # nothing imported: installed but not enabled costs nothing
    from pytest_imageprune.errors import FilterError
    from pytest_imageprune.model.filters import Filters, parse_filters

    try:
        filters = parse_filters(values) if values is not None else Filters()
    except FilterError as exc:
        raise filter_usage_error(exc, ini_name) from None
    return Settings(
        enabled=True,
        images=values is not None,
        kinds=kinds,
        filters=filters,
        source=source,
        scope=_scope(config, option),
        dry_run=dry_run,
        dry_run_alone=alone,
        report_path=_path(config, option, "prune_images_report"),
        lock_path=_path(config, option, "prune_images_lock"),
        budget=budget,
    )


def _budget(config: pytest.Config, option: Callable[[str], Any]) -> Budget | None:
    """The storage budget and its keep patterns, checked; None when no SIZE is given (the
    patterns are checked all the same: a bad one is an error wherever it is)."""
    cli_keep: list[str] | None = option("prune_images_keep")
    ini_keep: list[str] = config.getini("prune_images_keep")
    cli = option("prune_images_budget")
    ini = str(config.getini("prune_images_budget") or "").strip()
    if cli is None and not ini and not cli_keep and not ini_keep:
        return None  # nothing imported: installed but not enabled costs nothing
    import re

    from pytest_imageprune.budget.size import Budget, SizeError, parse_size

    # Both: a keep pattern is a promise not to evict, and the command line's adds to the
    # project's (it never takes one of the ini's away).
    given = [(p, "prune_images_keep = {} (" + _ini_name(config) + ")") for p in ini_keep]
    given += [(p, "--prune-images-keep={} (command line)") for p in cli_keep or ()]
    keep: list[str] = []
    for pattern, where in given:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise pytest.UsageError(
                f"{PREFIX}{where.format(pattern)}: {pattern!r} is not a regular expression"
                f" ({exc}). Write one Python's re module reads, such as ^ci/ or :keep$"
            ) from None
        if pattern not in keep:
            keep.append(pattern)
    if cli is not None:
        value, where = str(cli), f"--prune-images-budget={cli} (command line)"
    elif ini:
        value, where = ini, f"prune_images_budget = {ini} ({_ini_name(config)})"
    else:
        return None
    try:
        size = parse_size(value)
    except SizeError as exc:
        raise pytest.UsageError(f"{PREFIX}{where}: {exc}") from None
    return Budget(size, value.strip(), tuple(keep))


def _kinds(config: pytest.Config, option: Callable[[str], Any]) -> dict[str, KindFilters]:
    """The other kinds enabled, each with its filters, in ``docker system prune``'s order."""
    given: dict[str, tuple[list[str], str | None]] = {}
    for name, kind in KINDS.items():
        cli: list[str] | None = option(kind.ini)
        ini: list[str] = config.getini(kind.ini)
        if cli is not None:
            given[name] = [v for v in cli if v], None
        elif ini:
            given[name] = ini, _ini_name(config)
    if not given:
        return {}  # nothing imported: installed but not enabled costs nothing
    from pytest_imageprune.errors import FilterError
    from pytest_imageprune.kinds.filters import parse_kind_filters

    kinds = {}
    for name, (values, where) in given.items():
        try:
            kinds[name] = parse_kind_filters(name, values)
        except FilterError as exc:
            raise kind_usage_error(name, exc, where) from None
    return kinds


def _options(config: pytest.Config, options: argparse.Namespace | None) -> Callable[[str], Any]:
    """An option's value: from ``config.option``, or from the command line parsed so far."""
    if options is None:
        return config.getoption
    return lambda name: getattr(options, name, None)


def _scope(config: pytest.Config, option: Callable[[str], Any]) -> str:
    cli = option("prune_images_scope")
    if cli is not None:
        value, where = str(cli), f"--prune-images-scope={cli} (command line)"
    else:
        value = str(config.getini("prune_images_scope") or "session").strip()
        where = f"prune_images_scope = {value} ({_ini_name(config)})"
    if value not in SCOPES:
        raise pytest.UsageError(
            f"{PREFIX}{where}: {value!r} is not a scope. Write session (the images this"
            " session produced, the default) or all (every image, as docker image prune)"
        )
    return value


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
