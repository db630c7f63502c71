"""The project's Markdown, read by a real CommonMark parser: every table renders as one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")],
    key=lambda path: path.relative_to(ROOT).as_posix(),
)
#: A cell border: a ``|`` not escaped with a backslash (GitHub's rule, inside code too).
_BORDER = re.compile(r"(?<!\\)\|")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")  # GitHub's tables, as GFM has them


def _pipe_blocks(lines: list[str], code: set[int]) -> list[tuple[int, int]]:
    """Each run of lines (outside code) that starts with ``|``: ``(first, end)``, 0-based,
    ``end`` exclusive, as markdown-it's ``map`` gives a block."""
    blocks: list[tuple[int, int]] = []
    start = None
    for number, line in enumerate([*lines, ""]):
        piped = number not in code and line.lstrip().startswith("|")
        if piped and start is None:
            start = number
        elif not piped and start is not None:
            blocks.append((start, number))
            start = None
    return blocks


def table_problems(text: str) -> list[str]:
    """What keeps the ``|`` blocks of a Markdown text from rendering as tables, if anything."""
    tokens = _parser().parse(text)
    lines = text.splitlines()
    code = {
        number
        for token in tokens
        if token.type in ("fence", "code_block", "html_block") and token.map
        for number in range(*token.map)
    }
    tables = {tuple(t.map) for t in tokens if t.type == "table_open" and t.map}
    problems = []
    for first, end in _pipe_blocks(lines, code):
        if (first, end) not in tables:
            problems.append(f"lines {first + 1}-{end}: the | lines do not render as one table")
            continue
        widths = {len(_BORDER.findall(lines[n].strip())) - 1 for n in range(first, end)}
        if len(widths) != 1:
            problems.append(f"lines {first + 1}-{end}: rows of {sorted(widths)} columns")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_table_renders_as_a_table(page: Path) -> None:
    assert table_problems(page.read_text()) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n",
            "lines 5-5: the | lines do not render as one table",
            id="cut-by-a-blank-line",
        ),
        pytest.param(
            "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n",
            "lines 1-3: rows of [2, 3] columns",
            id="a-row-too-wide",
        ),
        pytest.param("| a | b |\n| 1 | 2 |\n", "lines 1-2: the | lines", id="no-delimiter-row"),
    ],
)
def test_a_broken_table_is_found(text: str, problem: str) -> None:
    """The check itself: each way a table breaks is named."""
    problems = table_problems(text)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_pipes_in_code_and_escaped_pipes_are_not_borders() -> None:
    text = "```\n| not a table\n```\n\n| a | `x \\| y` |\n|---|---|\n| 1 | 2 |\n"
    assert table_problems(text) == []
