"""The storage budget's options: a bad SIZE or PATTERN is a usage error before any test
runs, naming the value and where it came from; the budget alone enables the plugin."""

from __future__ import annotations

import pytest

from tests.support import assert_usage_error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--prune-images-budget=20 GiBs"],
            "pytest-imageprune: --prune-images-budget=20 GiBs (command line): '20 GiBs' is not"
            " a size: write a number of bytes with a unit: 20GB, 500MB, 1.5GiB, 750MiB or"
            " 1000000 (bytes)",
            id="size",
        ),
        pytest.param(
            ["--prune-images-budget=0"],
            "pytest-imageprune: --prune-images-budget=0 (command line): '0' is no room at all:"
            " a budget is more than 0 bytes",
            id="zero",
        ),
        pytest.param(
            ["--prune-images-budget=1GB", "--prune-images-keep=^ci/(", "--prune-images-keep=x"],
            "pytest-imageprune: --prune-images-keep=^ci/( (command line): '^ci/(' is not a"
            " regular expression (missing ), unterminated subpattern at position 4). Write one"
            " Python's re module reads, such as ^ci/ or :keep$",
            id="pattern",
        ),
    ],
)
def test_a_bad_size_or_pattern_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    assert_usage_error(pytester, args, message)


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("prune_images_budget = lots", "prune_images_budget = lots (tox.ini): 'lots' is not"),
        (
            "prune_images_budget = 1GB\nprune_images_keep =\n    ^ok\n    [z-a]",
            "prune_images_keep = [z-a] (tox.ini): '[z-a]' is not a regular expression",
        ),
    ],
)
def test_a_bad_ini_budget_names_the_key_and_file(
    pytester: pytest.Pytester, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0].startswith(f"ERROR: pytest-imageprune: {message}")


def test_the_budget_alone_enables_the_plugin_and_the_header_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess(
        "--prune-images-budget=20GB", "--prune-images-keep=^ci/", "--prune-images-dry-run"
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, evict the least recently used unused images while the"
            " engine's images take more than 20GB, never one matching ^ci/ (dry run); engine *",
        ]
    )


def test_keep_patterns_without_a_budget_enable_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images-keep=^ci/")
    assert result.ret == 0
    assert "imageprune:" not in result.stdout.str()


def test_keep_patterns_of_the_command_line_add_to_the_ini_ones(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    pytester.makeini("[pytest]\nprune_images_keep =\n    ^ci/base\n")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess(
        "--prune-images-budget=20GB", "--prune-images-keep=:mine$", "--prune-images-dry-run"
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*never one matching ^ci/base, :mine$ (dry run)*"])
