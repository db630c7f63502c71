"""GitHub Actions output: the step summary's Markdown, the annotations, the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.github import (
    ANNOTATION_LIMIT,
    SUMMARY_CAP,
    append_step_summary,
    escape_data,
    escape_property,
    in_github_actions,
    step_summary,
    warning_annotations,
)
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.report import PruneReport, Skipped

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
LAYER = "sha256:" + "d" * 64


def typical(**changes: Any) -> dict[str, Any]:
    """A real ``PruneReport.to_dict()``: two images and a layer deleted, one untagged,
    one skipped in use, one with children."""
    report = PruneReport(
        endpoint="unix:///var/run/docker.sock",
        filters=parse_filters(["label=ci", "dangling=false"]),
        scope="session",
        images_deleted=[
            {"Untagged": "app:1"},
            {"Deleted": A},
            {"Deleted": LAYER},
            {"Deleted": B},
        ],
        space_reclaimed=12345,
        deleted_ids=[A, B],
        skipped=[
            Skipped(
                C,
                "conflict: unable to delete (must be forced) - image is being used by "
                "stopped container 0123456789ab",
                in_use=True,
            ),
            Skipped(LAYER, "conflict: image has dependent child images"),
        ],
        duration_s=0.0512,
    )
    return {**report.to_dict(), **changes}


def test_summary_of_a_typical_report() -> None:
    text = step_summary(typical())
    lines = text.splitlines()
    assert lines[0] == "### pytest-imageprune"
    assert "| Deleted images | 2 |" in lines  # deleted_ids: the layer record is not counted
    assert "| Untagged references | 1 |" in lines
    assert "| Space reclaimed | 12.35kB |" in lines
    assert "| Skipped | 1 in use, 1 with children |" in lines
    assert "| Errors | 0 |" in lines
    assert "| Status | completed |" in lines
    assert "| Scope | session |" in lines
    assert "| Filters | `dangling=false` `label=ci` |" in lines
    assert "| Endpoint | `unix:///var/run/docker.sock` |" in lines
    assert "| Duration | 0.05s |" in lines
    assert "<details><summary>Deleted images (2)</summary>" in lines
    assert "- `aaaaaaaaaaaa`" in lines
    assert "- `app:1`" in lines
    assert (
        "- `cccccccccccc`: conflict: unable to delete (must be forced) - image is being used"
        " by stopped container 0123456789ab"
    ) in lines
    assert "Errors (" not in text  # no empty lists
    assert text.endswith("</details>\n")
    # A <details> body needs blank lines around it for GitHub to render its Markdown.
    summary = lines.index("<details><summary>Deleted images (2)</summary>")
    assert lines[summary + 1] == ""


def test_summary_of_a_report_without_deleted_ids_counts_the_deleted_records() -> None:
    """A report written before ``deleted_ids`` existed: its layer records count too."""
    report = typical()
    del report["deleted_ids"]
    text = step_summary(report)
    assert "| Deleted images and layers | 3 |" in text.splitlines()
    assert "<details><summary>Deleted images and layers (3)</summary>" in text


def test_summary_of_a_dry_run_without_filters() -> None:
    text = step_summary(typical(dry_run=True, filters={}, ImagesDeleted=[], deleted_ids=[]))
    lines = text.splitlines()
    assert lines[0] == "### pytest-imageprune (dry run)"
    assert "| Would delete images | 0 |" in lines
    assert "| Space reclaimed | 12.35kB (estimated) |" in lines
    assert "| Filters | `dangling=true` (the default) |" in lines


def test_summary_of_a_failed_prune_lists_the_errors() -> None:
    errors = [
        {"error": "a prune operation is already running (/tmp/x.lock); nothing deleted"},
        {"Id": A, "Reference": "app:1", "error": "500 Server Error: <boom> | pipe"},
    ]
    text = step_summary(typical(status="locked", errors=errors, skipped=[]))
    lines = text.splitlines()
    assert "| Status | locked |" in lines
    assert "| Errors | 2 |" in lines
    assert "| Skipped | 0 in use |" in lines
    assert "- a prune operation is already running (/tmp/x.lock); nothing deleted" in lines
    assert "- `aaaaaaaaaaaa` (`app:1`): 500 Server Error: &lt;boom&gt; | pipe" in lines


def test_summary_escapes_table_cells() -> None:
    text = step_summary(typical(endpoint="tcp://h:2376|`x`", status="a|b\nc"))
    lines = text.splitlines()
    assert "| Endpoint | `tcp://h:2376\\|'x'` |" in lines
    assert "| Status | a\\|b c |" in lines


def test_summary_lines_for_swept_sessions() -> None:
    swept = [
        {"id": "s1", "pid": 4242, "state": "died", **typical(deleted_ids=[A])},
        {"id": "s2", "pid": 4343, "state": "deferred", **typical(ImagesDeleted=[], deleted_ids=[])},
    ]
    lines = step_summary(typical(), swept).splitlines()
    assert "**Finished for other sessions:**" in lines
    assert (
        "- a session that died (pid 4242): deleted 1 image, reclaimed 12.35kB, status completed"
    ) in lines
    assert "- a session that deferred (pid 4343): deleted 0 images" in lines[-1]


def test_summary_truncates_long_lists() -> None:
    many = [f"sha256:{i:064x}" for i in range(120)]
    report = typical(
        ImagesDeleted=[{"Deleted": i} for i in many],
        deleted_ids=many,
        errors=[{"Id": i, "error": "x" * 5000} for i in many],
    )
    lines = step_summary(report, limit=10).splitlines()
    assert "<details><summary>Deleted images (120)</summary>" in lines
    assert lines.count("- ... and 110 more") == 2  # deleted images and errors
    assert sum(1 for line in lines if line.startswith("- `0000")) == 20
    longest = max(len(line) for line in lines)
    assert longest < 400  # each message is clipped


def test_summary_stays_well_under_github_cap() -> None:
    many = [f"sha256:{i:064x}" for i in range(50_000)]
    report = typical(
        ImagesDeleted=[{"Untagged": f"r/{i}:{'t' * 100}"} for i in range(50_000)]
        + [{"Deleted": i} for i in many],
        errors=[{"Id": i, "error": "e" * 1000} for i in many],
        skipped=[{"Id": i, "reason": "r" * 1000} for i in many],
    )
    one = typical()
    swept = [{"pid": i, "state": "died", **one} for i in range(50_000)]
    text = step_summary(report, swept, limit=100_000)
    assert len(text.encode()) < SUMMARY_CAP // 2
    assert "more" in text.splitlines()[-1]


# -- annotations -----------------------------------------------------------------------


def test_no_annotation_for_a_clean_prune() -> None:
    assert warning_annotations(typical()) == []


def test_annotations_for_a_status_and_errors() -> None:
    errors = [
        {"error": "WARNING Docker engine at tcp://h:2376 is unreachable: refused; nothing pruned"},
        {"Id": A, "Reference": "app:1", "error": "500: boom"},
    ]
    lines = warning_annotations(typical(status="engine-unreachable", errors=errors))
    assert lines == [
        "::warning title=pytest-imageprune::prune engine-unreachable (unix:///var/run/docker.sock)"
        ": Docker engine at tcp://h:2376 is unreachable: refused; nothing pruned",
        "::warning title=pytest-imageprune::could not delete aaaaaaaaaaaa (app:1): 500: boom",
    ]


@pytest.mark.parametrize(
    "status", ["locked", "engine-lost", "cancelled", "deadline", "no-baseline", "failed", "odd"]
)
def test_every_status_but_completed_is_annotated(status: str) -> None:
    (line,) = warning_annotations(typical(status=status))
    assert line.startswith(f"::warning title=pytest-imageprune::prune {status} (")


def test_annotations_escape_message_and_title() -> None:
    message = "100% done\r\nnext: a, b"
    (line,) = warning_annotations(typical(status="failed", errors=[{"error": message}]))
    # The message is clipped to one line first, then escaped.
    assert line.endswith("::prune failed (unix:///var/run/docker.sock): 100%25 done next: a, b")
    assert escape_data(message) == "100%25 done%0D%0Anext: a, b"
    assert escape_property(message) == "100%25 done%0D%0Anext%3A a%2C b"
    assert escape_property("pytest-imageprune") == "pytest-imageprune"


def test_annotations_are_capped() -> None:
    errors = [{"Id": f"sha256:{i:064x}", "error": "boom"} for i in range(25)]
    lines = warning_annotations(typical(status="failed", errors=errors))
    assert len(lines) == ANNOTATION_LIMIT
    assert lines[-1].endswith("... and 17 more problems: see the step summary or the JSON report")


# -- environment and file --------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GITHUB_ACTIONS": "true"}, True),
        ({"GITHUB_ACTIONS": "false"}, False),
        ({"GITHUB_ACTIONS": "1"}, False),
        ({}, False),
    ],
    ids=["true", "false", "1", "unset"],
)
def test_in_github_actions(env: dict[str, str], expected: bool) -> None:
    assert in_github_actions(env) is expected


def test_append_to_the_step_summary(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(path)}
    assert append_step_summary("### one", env) is None
    assert path.read_text(encoding="utf-8") == "### one\n"
    assert append_step_summary(step_summary(typical()), env) is None
    text = path.read_text(encoding="utf-8")
    assert text.startswith("### one\n\n### pytest-imageprune\n")


def test_append_without_the_variable_does_nothing(tmp_path: Path) -> None:
    assert append_step_summary("### x", {}) is None
    assert append_step_summary("### x", {"GITHUB_STEP_SUMMARY": ""}) is None
    assert list(tmp_path.iterdir()) == []


def test_append_to_an_unwritable_path_returns_an_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "summary.md"
    error = append_step_summary("### x", {"GITHUB_STEP_SUMMARY": str(target)})
    assert error is not None
    assert error.startswith(f"could not write the GitHub step summary to {target}: ")


def test_append_refuses_more_than_github_accepts(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    error = append_step_summary("x" * SUMMARY_CAP, {"GITHUB_STEP_SUMMARY": str(path)})
    assert error is not None
    assert "1 MiB" in error
    assert not path.exists()


def test_append_to_a_directory_returns_an_error(tmp_path: Path) -> None:
    error = append_step_summary("### x", {"GITHUB_STEP_SUMMARY": str(tmp_path)})
    assert error is not None
    assert error.startswith(f"could not write the GitHub step summary to {tmp_path}: ")


def test_importing_the_module_imports_no_docker() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_imageprune.github as g; "
        "g.step_summary({}); "
        "heavy = ('docker', 'requests', 'urllib3', 'dateutil'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
