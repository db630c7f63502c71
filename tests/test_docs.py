"""The words a user reads outside a session: every Markdown table renders as a table (read
by a real CommonMark parser), and every option's help is made of whole sentences."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, cast

import pytest
from markdown_it import MarkdownIt

from pytest_imageprune import plugin

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


# -- --help --------------------------------------------------------------------------------


class _Options:
    """Stands in for pytest's parser: keeps each option's and ini key's help, by name."""

    def __init__(self) -> None:
        self.help: dict[str, str] = {}

    def getgroup(self, name: str, description: str = "") -> _Options:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.help[names[0]] = kwargs.get("help", "")

    def addini(self, name: str, help: str, **kwargs: Any) -> None:
        self.help[name] = help


def _registered() -> dict[str, str]:
    options = _Options()
    plugin.pytest_addoption(cast(pytest.Parser, options))
    return options.help


def sentence_problems(text: str) -> list[str]:
    """Why a help text does not read as whole sentences, if it does not."""
    problems = []
    if not text[:1].isupper():
        problems.append("does not start with a capital letter")
    if not text.endswith("."):
        problems.append("does not end with a full stop")
    for opening, closing in ("()", "[]"):
        if text.count(opening) != text.count(closing):
            problems.append(f"unbalanced {opening}")
    words = re.findall(r"[\w'!=\[\]<>/~.-]+", text.lower())
    problems += [f"{a!r} twice in a row" for a, b in itertools.pairwise(words) if a == b]
    threes = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    problems += sorted({f"{f!r} said twice" for f in threes if threes.count(f) > 1})
    # A parenthesis closes a clause: words after it in the same clause are a clause cut in
    # two ("the stopped containers, with its filters (...) this session made").
    problems += [f"a clause goes on after {m.group(0)!r}" for m in re.finditer(r"\) [a-z]+", text)]
    for sentence in re.split(r"(?<=\.) ", text):
        if len(sentence.split()) < 3:
            problems.append(f"{sentence!r} is not a sentence")
    return problems


def test_every_option_and_ini_key_is_registered_with_help() -> None:
    from pytest_imageprune.kinds.table import KINDS

    names = set(_registered())
    assert {"--prune-images", "--no-prune-images", "prune_images", "prune_images_lock"} <= names
    assert {kind.option for kind in KINDS.values()} <= names
    assert {kind.ini for kind in KINDS.values()} <= names


@pytest.mark.parametrize("name", sorted(_registered()))
def test_every_help_reads_as_sentences(name: str) -> None:
    assert sentence_problems(_registered()[name]) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "Prune at session end the unused volumes, with docker volume prune's filters"
            " (label=KEY[=VALUE], label!=KEY[=VALUE], all=BOOL); never one that existed at"
            " session start this session made, keeping those that do not match FILTER."
            " Repeatable; bare, with no filter",
            id="0.1.0.dev0's --prune-volumes",
        ),
        pytest.param(
            "Prune at session end the stopped containers, with docker container prune's"
            " filters (until=TIME, label=KEY[=VALUE]) this session made.",
            id="a clause cut by a parenthesis",
        ),
        pytest.param("Prune the images. Repeatable.", id="a fragment"),
        pytest.param("The lock file (default: /tmp/x.", id="unbalanced"),
        pytest.param("Prune the the images.", id="a doubled word"),
        pytest.param("Prune the images at session end, at session end too.", id="doubled"),
        pytest.param("decide and report, delete nothing.", id="no capital"),
    ],
)
def test_help_that_is_not_sentences_is_found(text: str) -> None:
    assert sentence_problems(text) != []
