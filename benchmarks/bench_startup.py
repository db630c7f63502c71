"""What the plugin costs a session that has nothing to prune, and when it is off.

    python benchmarks/bench_startup.py [--runs 20] [--images 500 2000 5000]
                                       [--conftest-seconds 0 0.2]

- Idle: installed but not enabled, pytest start-up against ``-p no:imageprune`` (median of
  ``--runs`` runs each, interleaved), and the modules it imports (no docker, requests,
  urllib3 or dateutil).
- Enabled with nothing to prune, on an engine holding N images: the session's wall time
  against the same session with the plugin off, for a project whose conftest loads at
  once, and one whose conftest takes ``--conftest-seconds`` (a project's own imports: the
  plugin asks for the baseline before the conftests load).
- The baseline snapshot (list, parse, baseline) for each N: it should grow linearly.

The N images are loaded from an archive made here and removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import uuid

from common import PYTEST, client, fmt, load, median, remove_labelled, run, timed, tiny_project

from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.model.images import Baseline

HEAVY = ("docker", "requests", "urllib3", "dateutil")
NO_PLUGIN = [*PYTEST, "-p", "no:imageprune"]
NOTHING_TO_PRUNE = [*PYTEST, "--prune-images=label=nothing-matches"]


def heavy_modules(project: object) -> list[str]:
    probe = (
        "import sys, pytest; pytest.main(['-q', '-p', 'no:cacheprovider', '--co']); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.startswith("[")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images", type=int, nargs="*", default=[500, 2000, 5000])
    parser.add_argument("--conftest-seconds", type=float, nargs="*", default=[0.0, 0.2])
    args = parser.parse_args()
    project = tiny_project()
    projects = {s: tiny_project(conftest_seconds=s) for s in args.conftest_seconds}
    api = client()

    # Idle cost, interleaved so that the machine's noise falls on both alike.
    off, idle = [], []
    for _ in range(args.runs):
        off.append(timed(lambda: run([*PYTEST, "-p", "no:imageprune"], project)))
        idle.append(timed(lambda: run(PYTEST, project)))
    print(f"idle, {args.runs} runs each (median wall time of a pytest session):")
    print(f"  -p no:imageprune                 {fmt(median(off))}")
    print(f"  installed, not enabled           {fmt(median(idle))}")
    paired = median([i / o for i, o in zip(idle, off, strict=True)])
    print(
        f"  ratio not enabled / disabled     {median(idle) / median(off):.3f}"
        f" (median of each pair's ratio: {paired:.3f})  (target <= 1.02)"
    )
    print(f"  heavy modules imported when idle: {heavy_modules(project)}")

    label = f"imageprune-startup={uuid.uuid4().hex[:8]}"
    loaded = 0
    engine = DockerEngine.from_env()
    try:
        for count in sorted(args.images):
            load(api, count - loaded, {"imageprune-startup": label.split("=")[1]})
            loaded = count
            snapshots = []
            for _ in range(5):
                started = time.perf_counter()
                Baseline.of(engine.snapshot())
                snapshots.append(time.perf_counter() - started)
            rounds = max(5, args.runs // 2)
            print(f"\n{count} images on the engine:")
            print(
                f"  baseline snapshot                {fmt(median(snapshots))}"
                f"  ({median(snapshots) / count * 1e6:.1f} us/image)"
            )
            for conftest_seconds, folder in projects.items():
                plain, enabled = [], []
                for _ in range(rounds):
                    plain.append(timed(lambda f=folder: run(NO_PLUGIN, f)))  # type: ignore[misc]
                    enabled.append(timed(lambda f=folder: run(NOTHING_TO_PRUNE, f)))  # type: ignore[misc]
                added = median([e - p for e, p in zip(enabled, plain, strict=True)])
                print(f"  conftest taking {conftest_seconds} s to load:")
                print(f"    session, plugin off              {fmt(median(plain))}")
                print(f"    session, enabled, nothing to do  {fmt(median(enabled))}")
                print(
                    f"    added by the plugin              {fmt(median(enabled) - median(plain))}"
                    f" (median of each pair's difference: {added * 1000:.1f} ms)"
                    "  (target <= 150 ms)"
                )
    finally:
        engine.close()
        remove_labelled(api, label)
        for folder in (project, *projects.values()):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
