"""GitHub Actions output: a Markdown step summary and ``::warning`` annotations.

Pure functions over the JSON report (``PruneReport.to_dict()``), plus one that appends to
``$GITHUB_STEP_SUMMARY`` and never raises. GitHub aborts a step summary over 1 MiB and
shows at most 10 warning annotations a step, so lists are cut (``... and N more``) and
annotations are capped. Annotations are escaped as the runner expects: ``%``, ``\\r`` and
``\\n`` in the message, and also ``:`` and ``,`` in a property (``title=``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pytest_imageprune.kinds.table import KINDS
from pytest_imageprune.model import report as reporting
from pytest_imageprune.model.outcome import Status
from pytest_imageprune.outputs import append_file

T = TypeVar("T")

TITLE = "pytest-imageprune"
#: Entries listed in one ``<details>`` block, or swept sessions, before "... and N more".
LIST_LIMIT = 50
#: Characters kept of one free-text message (an error, a skip reason).
TEXT_LIMIT = 300
#: GitHub refuses a step summary over 1 MiB (per step); ours stays well under it.
SUMMARY_CAP = 1024 * 1024
MAX_SUMMARY = SUMMARY_CAP // 4
#: GitHub shows at most 10 warning annotations per step.
ANNOTATION_LIMIT = 10

#: What a status other than ``completed`` means, for an annotation with no error text.
STATUS_TEXT: dict[str, str] = {
    Status.LOCKED: "a prune operation is already running on this engine: nothing deleted",
    Status.UNREACHABLE: "the Docker engine could not be reached: nothing pruned",
    Status.ENGINE_LOST: "the Docker engine stopped answering during the prune; "
    "the next session finishes it",
    Status.CANCELLED: "the prune was interrupted; what was done before is reported",
    Status.DEADLINE: "the prune ran out of time; what was done before is reported",
    Status.NO_BASELINE: "no baseline (the engine was unreachable at session start): nothing pruned",
    Status.FAILED: "the prune failed",
}


def in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    """``GITHUB_ACTIONS=true``, as the runner sets it."""
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


# -- step summary ----------------------------------------------------------------------


def step_summary(
    report_dict: Mapping[str, Any],
    swept: Sequence[Mapping[str, Any]] = (),
    *,
    limit: int = LIST_LIMIT,
) -> str:
    """The Markdown for ``$GITHUB_STEP_SUMMARY``: a heading, a table, the lists.

    ``report_dict`` is ``PruneReport.to_dict()``; with a ``deleted_ids`` key (the report's
    ``deleted_ids``) the image count leaves out the layer records of ``ImagesDeleted``.
    ``swept`` are the other sessions' reports as the JSON report's ``sessions`` holds
    them (``id``, ``pid``, ``state`` and ``to_dict()``). Lists longer than ``limit`` end
    with ``... and N more``; the whole stays under a quarter of GitHub's 1 MiB cap.
    """
    # Five lists at most, each line at most TEXT_LIMIT characters and its markup.
    limit = max(1, min(limit, MAX_SUMMARY // (5 * (TEXT_LIMIT + 100))))
    text = _summary(report_dict, swept, limit)
    while len(text.encode("utf-8")) > MAX_SUMMARY and limit > 1:
        limit //= 2
        text = _summary(report_dict, swept, limit)
    return text


def _summary(report: Mapping[str, Any], swept: Sequence[Mapping[str, Any]], limit: int) -> str:
    dry = bool(report.get("dry_run"))
    deleted = _deleted_ids(report)
    untagged = _untagged(report)
    skipped = _dicts(report.get("skipped"))
    errors = _dicts(report.get("errors"))
    verb = "Would delete" if dry else "Deleted"
    # Without ``deleted_ids``, the Deleted records of ``ImagesDeleted``: layers included.
    what = "images" if isinstance(report.get("deleted_ids"), list) else "images and layers"
    lines = [
        f"### {TITLE}" + (" (dry run)" if dry else ""),
        "",
        "| | |",
        "|---|---|",
        _row(f"{verb} {what}", str(len(deleted))),
        _row("Untagged references", str(len(untagged))),
        _row(
            "Space reclaimed",
            reporting.human_size(_int(report.get("SpaceReclaimed")))
            + (" (estimated)" if dry else ""),
        ),
        _row("Skipped", _skipped_text(skipped)),
        _row("Errors", str(len(errors))),
        _row("Status", _cell(report.get("status", Status.COMPLETED))),
        _row("Scope", _cell(report.get("scope", ""))),
        _row("Filters", _filters_text(report.get("filters"))),
        _row("Endpoint", _code(report.get("endpoint", ""))),
        _row("Duration", f"{_float(report.get('duration_s')):.2f}s"),
    ]
    lines[4:4] = [_kind_row(name, report[name], dry) for name in KINDS if name in report]
    lines += _details(f"{verb} {what}", deleted, lambda i: _code(_short(i)), limit)
    lines += _details("Untagged references", untagged, _code, limit)
    lines += _details("Skipped", skipped, lambda s: _problem(s, "reason"), limit)
    lines += _details("Errors", errors, lambda e: _problem(e, "error"), limit)
    if swept:
        lines += ["", "**Finished for other sessions:**", ""]
        lines += _listing(swept, _swept_line, limit)
    return "\n".join(lines) + "\n"


def _kind_row(name: str, entry: Any, dry: bool) -> str:
    """One row per other kind: how many went, the bytes, and what went wrong."""
    kind = KINDS[name]
    title, key = kind.title, kind.deleted_key
    entry = entry if isinstance(entry, Mapping) else {}
    deleted = entry.get(key)
    value = str(len(deleted) if isinstance(deleted, list) else 0)
    if "SpaceReclaimed" in entry:
        value += f" ({reporting.human_size(_int(entry.get('SpaceReclaimed')))})"
    skipped = _dicts(entry.get("skipped"))
    if skipped:
        value += f", {len(skipped)} skipped"
    errors = _dicts(entry.get("errors"))
    if errors:
        value += f", {len(errors)} error{'s' * (len(errors) != 1)}"
    status = entry.get("status", Status.COMPLETED)
    if status != Status.COMPLETED:
        value += f" [{_cell(status)}]"
    return _row(f"{title} {'that would go' if dry else 'deleted'}", value)


def _row(name: str, value: str) -> str:
    return f"| {name} | {value} |"


def _details(title: str, items: Sequence[T], show: Callable[[T], str], limit: int) -> list[str]:
    if not items:
        return []
    summary = f"<details><summary>{html.escape(title)} ({len(items)})</summary>"
    return ["", summary, "", *_listing(items, show, limit), "", "</details>"]


def _listing(items: Sequence[T], show: Callable[[T], str], limit: int) -> list[str]:
    """A Markdown list of the first ``limit`` items, and how many more there are."""
    lines = [f"- {show(item)}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"- ... and {len(items) - limit} more")
    return lines


def _skipped_text(skipped: Sequence[Mapping[str, Any]]) -> str:
    in_use = {str(s.get("Id")) for s in skipped if s.get("in_use") is True}
    others = {str(s.get("Id")) for s in skipped} - in_use
    text = f"{len(in_use)} in use"
    return text + (f", {len(others)} with children" if others else "")


def _filters_text(filters: Any) -> str:
    pairs = []
    if isinstance(filters, Mapping):
        for key, values in filters.items():
            if isinstance(values, (list, tuple)):
                pairs += [f"{key}={value}" for value in values]
            else:
                pairs.append(f"{key}={values}")
    if not pairs:
        return f"{_code('dangling=true')} (the default)"
    return " ".join(_code(pair) for pair in pairs)


def _problem(entry: Mapping[str, Any], key: str) -> str:
    """``<short id>`` (``reference``): the text, for a skipped image or an error."""
    head = []
    if entry.get("Id"):
        head.append(_code(_short(str(entry["Id"]))))
    if entry.get("Reference"):
        head.append(f"({_code(entry['Reference'])})")
    text = _text(entry.get(key, ""))
    return f"{' '.join(head)}: {text}" if head else text


def _swept_line(entry: Mapping[str, Any]) -> str:
    deleted = len(_deleted_ids(entry))
    what = f"image{'s' * (deleted != 1)}"
    if not isinstance(entry.get("deleted_ids"), list):
        what += " and layers"
    state = _text(entry.get("state", "ended"))
    size = reporting.human_size(_int(entry.get("SpaceReclaimed")))
    return (
        f"a session that {state} (pid {_text(entry.get('pid', '?'))}): deleted {deleted}"
        f" {what}, reclaimed {size},"
        f" status {_text(entry.get('status', Status.COMPLETED))}"
    )


# -- annotations -----------------------------------------------------------------------


def warning_annotations(report_dict: Mapping[str, Any]) -> list[str]:
    """``::warning title=pytest-imageprune::...`` lines: one per error and one for a status
    other than ``completed``; print them on stdout, only in GitHub Actions.

    A status's line carries the report's first error without an image ID (the reason the
    prune stopped, as the session records it) rather than repeating it in a second line.
    More than ``ANNOTATION_LIMIT`` lines end with one saying how many were left out.
    """
    status = str(report_dict.get("status", Status.COMPLETED))
    errors = _dicts(report_dict.get("errors"))
    general = [e for e in errors if not e.get("Id")]
    specific = [e for e in errors if e.get("Id")]
    messages = []
    if status != Status.COMPLETED:
        endpoint = report_dict.get("endpoint") or "the Docker engine"
        detail = (
            _plain(general.pop(0).get("error", ""))
            if general
            else STATUS_TEXT.get(status, "the prune did not complete")
        )
        messages.append(f"prune {status} ({endpoint}): {detail}")
    messages += [_plain(e.get("error", "")) for e in general]
    for error in specific:
        ref = f" ({error['Reference']})" if error.get("Reference") else ""
        what = f"{_short(str(error['Id']))}{ref}"
        messages.append(f"could not delete {what}: {_plain(error.get('error', ''))}")
    if len(messages) > ANNOTATION_LIMIT:
        left = len(messages) - (ANNOTATION_LIMIT - 1)
        messages = messages[: ANNOTATION_LIMIT - 1]
        messages.append(f"... and {left} more problems: see the step summary or the JSON report")
    title = escape_property(TITLE)
    return [f"::warning title={title}::{escape_data(message)}" for message in messages]


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, ``\\r`` and ``\\n`` percent-encoded."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as a message, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


# -- the file --------------------------------------------------------------------------


def append_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY``, after a blank line when the file
    already holds something (another step's), as every file the plugin writes for the user
    is (``outputs.append_file``): never through another user's symlink, never a wait on a
    FIFO, never into another user's file or a hard link where others may write.

    Returns None when written or when the variable is unset or empty; an error text (to
    print as a warning) when the file cannot or may not be written or the text is over
    GitHub's cap. Never raises.
    """
    env = os.environ if environ is None else environ
    name = env.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    data = (markdown if markdown.endswith("\n") else markdown + "\n").encode("utf-8")
    size = len(data)
    if size > SUMMARY_CAP:
        return f"not writing the GitHub step summary: {size} bytes is over GitHub's 1 MiB cap"
    try:
        append_file(name, data, separator=b"\n")  # never glued to what another step wrote
    except OSError as exc:
        return f"could not write the GitHub step summary to {name}: {exc}"
    return None


# -- helpers ---------------------------------------------------------------------------


def _deleted_ids(report: Mapping[str, Any]) -> list[str]:
    ids = report.get("deleted_ids")
    if isinstance(ids, (list, tuple)):
        return [str(i) for i in ids]
    return [str(r["Deleted"]) for r in _dicts(report.get("ImagesDeleted")) if "Deleted" in r]


def _untagged(report: Mapping[str, Any]) -> list[str]:
    return [str(r["Untagged"]) for r in _dicts(report.get("ImagesDeleted")) if "Untagged" in r]


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _plain(value: Any, limit: int = 1000) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(value).split()).removeprefix("WARNING ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: Any) -> str:
    """Free text for Markdown: one line, clipped, HTML-escaped."""
    return html.escape(_plain(value, TEXT_LIMIT), quote=False)


def _cell(value: Any) -> str:
    return _text(value).replace("|", "\\|")


def _code(value: Any) -> str:
    """A code span that survives a table cell: no backticks, pipes escaped, one line."""
    return "`" + _plain(value, TEXT_LIMIT).replace("`", "'").replace("|", "\\|") + "`"
