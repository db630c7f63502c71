"""The README's first command, as written, on the example project (examples/): it installs
the plugin from this clone into a fresh venv, runs the example's tests with pruning on, says
what the plugin freed, and leaves nothing behind. Needs the engine the docker CLI finds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import SUITE_LABELS, connect, engine_missing, leftovers

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
LABEL = ("imageprune.example", "yes")


def first_command() -> str:
    """The first line of the README's first ``sh`` block, without its comment."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the README has no sh block"
    line = next(line for line in block.group(1).splitlines() if line.strip())
    return line.split(" #")[0].strip()


def test_the_readmes_first_command_runs_the_example() -> None:
    command = first_command()
    assert command == "bash examples/run"
    try:
        client = connect()
        client.ping()
    except Exception as exc:
        engine_missing(f"no Docker engine answers where the docker CLI looks: {exc}")
    SUITE_LABELS.add(LABEL)  # checked at the end of the run, with every engine test's
    try:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "4 passed" in output, output
        assert re.search(r"^imageprune: deleted [1-9]\d* images?, ", output, re.M), output
        assert re.search(
            r"there before the session \(tagged imageprune-example/app:1 then\)", output
        )
        assert re.search(r"^imageprune: \d+ images? stays? because containers use", output, re.M)
        assert re.search(r"^== pytest-imageprune freed [1-9][\d.]*[kM]?B: deleted", output, re.M)
        assert leftovers(client, {LABEL}) == []  # the example removes what it left
    finally:
        client.close()
