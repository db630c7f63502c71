"""The plugin as it is against another revision of it, side by side in one run.

    git worktree add /tmp/imageprune-before REV
    python benchmarks/bench_before_after.py /tmp/imageprune-before [--runs 20]
                                            [--count 300] [--rounds 7]

For a change that should cost nothing (a refactor), the two measurements the project
promises about its cost, each taken from both source trees alternately, so that the
machine's noise falls on both alike:

- idle start-up: a pytest session with the plugin installed but not enabled (the
  ``bench_startup.py`` measurement), median wall time of ``--runs`` runs each;
- the prune phase: a pytest session pruning ``--count`` freshly loaded labelled images with
  ``--prune-images-scope=all`` (the ``bench_prune.py`` workflow), timed by the session's own
  report (``duration_s``: its end, from the baseline joined to the last deletion), median of
  ``--rounds`` rounds each.

The other tree is put first on ``PYTHONPATH``, ahead of the installed package (the entry
point names the same module), and its bytecode is written first as the installed one's is.
It prints medians and the ratios this tree / the other.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from common import PYTEST, client, fmt, load, median, remove_labelled, run, timed, tiny_project

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other revision's source tree")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    other = args.other.resolve()
    if not (other / "pytest_imageprune" / "plugin.py").is_file():
        sys.exit(f"{other} holds no pytest_imageprune package")
    compileall.compile_dir(other / "pytest_imageprune", quiet=1)
    trees = {"before": other, "after": HERE}
    envs = {name: {"PYTHONPATH": str(tree)} for name, tree in trees.items()}
    for name, env in envs.items():  # each tree answers for itself, or the comparison is void
        probe = "import pytest_imageprune, sys; sys.stdout.write(pytest_imageprune.__file__)"
        found = _output([sys.executable, "-c", probe], env)
        if not found.startswith(str(trees[name])):
            sys.exit(f"{name}: pytest_imageprune comes from {found}, not {trees[name]}")

    project = tiny_project()
    idle: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, env in envs.items():
            idle[name].append(timed(lambda e=env: run(PYTEST, project, e)))  # type: ignore[misc]
    print(f"idle start-up, installed but not enabled ({args.runs} runs each, median):")
    _compare(idle)

    api = client()
    key = "imageprune-before-after"
    prune: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for round_ in range(args.rounds):
            order = list(envs) if round_ % 2 == 0 else list(reversed(envs))
            for name in order:
                value = uuid.uuid4().hex[:8]
                load(api, args.count, {key: value})
                report = project / f"report-{value}.json"
                argv = [
                    *PYTEST,
                    f"--prune-images=label={key}={value}",
                    "--prune-images=dangling=false",
                    "--prune-images-scope=all",
                    f"--prune-images-report={report}",
                ]
                run(argv, project, envs[name])
                data = json.loads(report.read_text())
                if len(data.get("deleted_ids") or []) != args.count:
                    sys.exit(f"{name}: deleted {len(data.get('deleted_ids') or [])} images")
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


def _output(argv: list[str], env: dict[str, str]) -> str:
    return subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout


if __name__ == "__main__":
    main()
