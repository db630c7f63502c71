"""What the plugin costs a session that has nothing to prune, and when it is off.

    python benchmarks/bench_startup.py [--runs 20] [--images 500 2000 5000]
                                       [--conftest-seconds 0 0.2] [--before DIR]
                                       [--private]

- Idle: installed but not enabled, pytest start-up against ``-p no:imageprune`` (median of
  ``--runs`` runs each, interleaved, the order turned each round; wall and CPU time), and
  the modules it imports (no docker, requests, urllib3 or dateutil).
- Enabled with nothing to prune, on an engine holding N images: the session's wall time
  against the same session with the plugin off (and the CPU time the pytest process
  spent), for a project whose conftest loads at once, and one whose conftest takes
  ``--conftest-seconds`` (a project's own imports: the plugin asks for the baseline before
  the conftests load).
- The baseline snapshot (list, parse, baseline) for each N: it should grow linearly.

The N images are loaded from an archive made here and removed at the end. With
``--private`` (root and ``dockerd`` needed) they go to a dockerd of its own
(``tests.support.private_dockerd``), not the one ``DOCKER_HOST`` names.

With ``--before DIR``, a folder holding another version of the package
(``git archive REV pytest_imageprune | tar -x -C DIR``), the idle start and each enabled
session are also run
with that version (first on ``PYTHONPATH``), alternating with this one, and the difference
is printed: a change's effect, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

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
    parser.add_argument("--before", type=Path, help="another version of the package, to compare")
    parser.add_argument("--private", action="store_true", help="on a dockerd of its own")
    args = parser.parse_args()
    with _engine(private=args.private):
        measure(args)


@contextlib.contextmanager
def _engine(*, private: bool) -> Iterator[None]:
    """The engine ``DOCKER_HOST`` names, or with ``private`` a dockerd of its own."""
    if not private:
        yield
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support
    from tests.support import private_dockerd

    with private_dockerd() as daemon:
        os.environ["DOCKER_HOST"] = daemon.socket  # every client below: this engine only
        os.environ.pop("DOCKER_CONTEXT", None)
        yield


def measure(args: argparse.Namespace) -> None:
    project = tiny_project()
    projects = {s: tiny_project(conftest_seconds=s) for s in args.conftest_seconds}
    api = client()

    # Idle cost, interleaved, the order turned each round, so that the machine's noise and
    # any order effect fall on both alike; and the CPU time, steadier on a busy machine.
    contenders = {"off": ([*PYTEST, "-p", "no:imageprune"], {}), "idle": (PYTEST, {})}
    if args.before is not None:
        contenders["before"] = (PYTEST, {"PYTHONPATH": str(args.before)})
        run(PYTEST, project, env={"PYTHONPATH": str(args.before)})  # its bytecode, once
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for round_no in range(args.runs):
        order = list(contenders.items())
        for name, (argv, extra) in order[:: -1 if round_no % 2 else 1]:
            used = _children_cpu()
            wall[name].append(timed(lambda a=argv, e=extra: run(a, project, env=e)))  # type: ignore[misc]
            cpu[name].append(_children_cpu() - used)
    off, idle = wall["off"], wall["idle"]
    print(f"idle, {args.runs} runs each (median wall time of a pytest session; CPU time):")
    print(f"  -p no:imageprune                 {fmt(median(off))}; {fmt(median(cpu['off']))}")
    print(f"  installed, not enabled           {fmt(median(idle))}; {fmt(median(cpu['idle']))}")
    paired = median([i / o for i, o in zip(idle, off, strict=True)])
    print(
        f"  ratio not enabled / disabled     {median(idle) / median(off):.3f}"
        f" (median of each pair's ratio: {paired:.3f}; CPU time:"
        f" {median(cpu['idle']) / median(cpu['off']):.3f})  (target <= 1.02)"
    )
    if args.before is not None:
        was = wall["before"]
        print(
            f"  the version in {args.before}, not enabled: {fmt(median(was))};"
            f" {fmt(median(cpu['before']))}; ratio {median(was) / median(off):.3f}"
            f" (CPU time: {median(cpu['before']) / median(cpu['off']):.3f})"
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
                _sessions(folder, rounds, conftest_seconds, args.before)
    finally:
        engine.close()
        remove_labelled(api, label)
        for folder in (project, *projects.values()):
            shutil.rmtree(folder, ignore_errors=True)


def _sessions(folder: Path, rounds: int, conftest_seconds: float, before: Path | None) -> None:
    """Sessions with the plugin off and enabled (and enabled at ``before``), alternating:
    their wall time, and the CPU time the pytest process spent (steadier on a busy machine)."""
    env = {"PYTHONPATH": str(before)} if before is not None else {}
    if env:  # once first: pytest's bytecode of that version is written
        run(NOTHING_TO_PRUNE, folder, env=env)
    wall: dict[str, list[float]] = {"off": [], "on": [], "before": []}
    cpu: dict[str, list[float]] = {"off": [], "on": [], "before": []}
    contenders = {"off": (NO_PLUGIN, {}), "on": (NOTHING_TO_PRUNE, {})}
    if env:
        contenders["before"] = (NOTHING_TO_PRUNE, env)
    for _ in range(rounds):
        for name, (argv, extra) in contenders.items():
            used = _children_cpu()
            wall[name].append(timed(lambda a=argv, e=extra: run(a, folder, env=e)))  # type: ignore[misc]
            cpu[name].append(_children_cpu() - used)
    plain, enabled, earlier = wall["off"], wall["on"], wall["before"]
    added = median([e - p for e, p in zip(enabled, plain, strict=True)])
    cpu_added = median([e - p for e, p in zip(cpu["on"], cpu["off"], strict=True)])
    print(f"  conftest taking {conftest_seconds} s to load:")
    print(f"    session, plugin off              {fmt(median(plain))}")
    print(f"    session, enabled, nothing to do  {fmt(median(enabled))}")
    print(
        f"    added by the plugin              {fmt(median(enabled) - median(plain))}"
        f" (median of each pair's difference: {added * 1000:.1f} ms)"
        f"  (target <= 150 ms); CPU time added {cpu_added * 1000:.0f} ms"
    )
    if earlier:
        was = median([e - p for e, p in zip(earlier, plain, strict=True)])
        change = median([e - b for e, b in zip(enabled, earlier, strict=True)])
        cpu_was = median([e - p for e, p in zip(cpu["before"], cpu["off"], strict=True)])
        print(
            f"    added by the version in {before}: {fmt(median(earlier) - median(plain))}"
            f" (median of each pair's difference: {was * 1000:.1f} ms;"
            f" CPU time added {cpu_was * 1000:.0f} ms);"
            f" this one against it: {change * 1000:+.1f} ms (median of each round's difference)"
        )


def _children_cpu() -> float:
    """The CPU time this process's finished children have used, in seconds."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


if __name__ == "__main__":
    main()
