"""Two installs of the plugin, side by side in one run: a revision against another.

    python -m venv /tmp/before && /tmp/before/bin/pip install "pytest-imageprune @ git+..."
    (or: git worktree add /tmp/src-before REV && /tmp/before/bin/pip install /tmp/src-before)
    python -m venv /tmp/after && /tmp/after/bin/pip install .
    python benchmarks/bench_before_after.py --before /tmp/before/bin/python \
        --after /tmp/after/bin/python [--runs 20] [--count 300] [--rounds 7]

For a change that should cost nothing (a refactor), the two measurements the project
promises about its cost, each taken from both installs alternately, so that the machine's
noise falls on both alike:

- idle start-up: a pytest session with the plugin installed but not enabled (the
  ``bench_startup.py`` measurement), median wall time of ``--runs`` runs each;
- the prune phase: a pytest session pruning ``--count`` freshly loaded labelled images with
  ``--prune-images-scope=all`` (the ``bench_prune.py`` workflow), timed by the session's own
  report (``duration_s``: its end, from the baseline joined to the last deletion), median of
  ``--rounds`` rounds each.

Both installs should be wheels (as users install them): an editable install adds an import
hook of its own to every start-up. It prints medians and the ratios after / before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from common import client, fmt, load, median, remove_labelled, run, timed, tiny_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a Python with one install")
    parser.add_argument("--after", type=Path, required=True, help="a Python with the other")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    pythons = {"before": str(args.before), "after": str(args.after)}
    project = tiny_project()  # also where the probe runs: never a source tree's folder
    probe = "import pytest_imageprune, sys; sys.stdout.write(pytest_imageprune.__file__)"
    found = {name: _output([python, "-c", probe], project) for name, python in pythons.items()}
    for name, where in found.items():
        print(f"{name}: {where}")
    if found["before"] == found["after"]:
        sys.exit("both Pythons import the same pytest_imageprune: nothing to compare")
    pytests = {name: [python, "-m", "pytest"] for name, python in pythons.items()}
    idle: dict[str, list[float]] = {name: [] for name in pytests}
    for _ in range(args.runs):
        for name, argv in pytests.items():
            idle[name].append(timed(lambda a=argv: run(a, project)))  # type: ignore[misc]
    print(f"\nidle start-up, installed but not enabled ({args.runs} runs each, median):")
    _compare(idle)

    api = client()
    key = "imageprune-before-after"
    prune: dict[str, list[float]] = {name: [] for name in pytests}
    try:
        for round_ in range(args.rounds):
            order = list(pytests) if round_ % 2 == 0 else list(reversed(pytests))
            for name in order:
                value = uuid.uuid4().hex[:8]
                load(api, args.count, {key: value})
                report = project / f"report-{value}.json"
                argv = [
                    *pytests[name],
                    f"--prune-images=label={key}={value}",
                    "--prune-images=dangling=false",
                    "--prune-images-scope=all",
                    f"--prune-images-report={report}",
                ]
                run(argv, project)
                data = json.loads(report.read_text())
                deleted = len(data.get("deleted_ids") or [])
                if deleted != args.count:
                    sys.exit(f"{name}: deleted {deleted} of {args.count} images")
                prune[name].append(float(data["duration_s"]))
        print(f"\nthe prune phase, {args.count} images ({args.rounds} rounds each, median):")
        _compare(prune)
    finally:
        remove_labelled(api, key)
        shutil.rmtree(project, ignore_errors=True)


def _compare(times: dict[str, list[float]]) -> None:
    for name, values in times.items():
        print(f"  {name:<8} {fmt(median(values))}")
    before, after = times["before"], times["after"]
    paired = median([a / b for a, b in zip(after, before, strict=True)])
    print(
        f"  ratio after / before  {median(after) / median(before):.3f}"
        f" (median of each pair's ratio: {paired:.3f})"
    )


def _output(argv: list[str], cwd: Path) -> str:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    main()
