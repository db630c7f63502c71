"""Pruning N small labelled images: the plugin against ``docker image prune``, in one run.

    python benchmarks/bench_prune.py [--count 1000] [--rounds 5] [--test-seconds 0 1]

Each round loads N fresh images for each contender and times:

- the workflow without the plugin: ``pytest`` (plugin off), then ``docker image prune -a``
  with the label filter, as a user would run them;
- the workflow with it: one ``pytest --prune-images=label=... --prune-images-scope=all``;
- the prune phases alone: the daemon's ``POST /images/prune`` against ``prune_images()``
  at several concurrencies (requests in flight), in this process;
- the engine's floor: the same N ``DELETE /images/{id}`` requests and nothing else (no
  listing, no layer sizes read for ``SpaceReclaimed``), the N layer reads alone (one
  ``inspect`` an image: these have no parent), at the same concurrencies, and one listing.

The pytest session runs 20 tests that take ``--test-seconds`` in all (several values: one
pair of workflows each): 0 (the default) is the plugin's worst case, nothing to overlap
its reads with. It prints medians and the ratios; the target is plugin / without <= 0.90.
For each, it also prints the engine's bound: pytest alone, plus one listing, plus the
DELETEs alone at their fastest, against the workflow without the plugin. Above 0.90, the
target cannot be met on this engine, whatever the client does.

Where this machine runs the engine (``/var/run/docker.pid`` readable), it also prints the
CPU time dockerd spent on each timed step (in clock ticks: 10 ms steps), which moves far
less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
from common import PYTEST, client, fmt, load, median, remove_labelled, run, timed, tiny_project

from pytest_imageprune.engine.api import Engine
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.model.report import PruneReport


def each(ids: list[str], level: int, request: Callable[[Engine, str], object]) -> None:
    """``request`` for each of ``ids``, ``level`` at a time, and nothing else."""
    engines = DockerEngine.from_env().spawn(level)

    def share(k: int) -> None:
        for image_id in ids[k :: len(engines)]:
            request(engines[k], image_id)

    with ThreadPoolExecutor(len(engines)) as pool:
        list(pool.map(share, range(len(engines))))
    for engine in engines:
        engine.close()


Times = dict[str, list[float]]


def engine_cpu(pid: int | None = None) -> Callable[[], float] | None:
    """The local dockerd's CPU time so far, in seconds, if this machine can read it.

    Wall times on a shared machine are noisy; the engine's CPU time for the same work is
    much steadier, and it shows what the engine itself spent on each contender. ``pid`` is
    the engine's (default: ``/var/run/docker.pid``'s).
    """
    try:
        if pid is None:
            pid = int(Path("/var/run/docker.pid").read_text())
        stat = Path(f"/proc/{pid}/stat")
        tick = os.sysconf("SC_CLK_TCK")
        stat.read_text()
    except (OSError, ValueError):
        return None

    def seconds() -> float:
        fields = stat.read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    return seconds


@dataclass
class Bench:
    """N images under one label, loaded afresh for each contender, and the times taken."""

    api: docker.APIClient
    count: int
    label: str
    times: Times = field(default_factory=lambda: defaultdict(list))
    #: The engine's CPU time during each timed action (when it can be read).
    cpu: Times = field(default_factory=lambda: defaultdict(list))
    engine_cpu: Callable[[], float] | None = field(default_factory=engine_cpu)

    def load(self) -> list[str]:
        load(self.api, self.count, {"imageprune-bench": self.label.split("=")[1]})
        return [i["Id"] for i in self.api.images(all=True, filters={"label": self.label})]

    def time(self, name: str, action: Callable[[], object]) -> float:
        before = self.engine_cpu() if self.engine_cpu is not None else 0.0
        took = timed(action)
        self.times[name].append(took)
        if self.engine_cpu is not None:
            self.cpu[name].append(self.engine_cpu() - before)
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    parser.add_argument("--test-seconds", type=float, nargs="*", default=[0.0])
    parser.add_argument(
        "--engine-pid",
        type=int,
        help="the pid of the dockerd that DOCKER_HOST names, for its CPU time"
        " (default: /var/run/docker.pid's)",
    )
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise SystemExit("the docker CLI is needed for the comparison")
    bench = Bench(client(), args.count, f"imageprune-bench={uuid.uuid4().hex[:8]}")
    bench.engine_cpu = engine_cpu(args.engine_pid)
    engine = DockerEngine.from_env()
    print(f"engine: {engine.store.describe()}", flush=True)
    engine.close()
    projects = {seconds: tiny_project(seconds) for seconds in args.test_seconds}
    try:
        for round_no in range(1, args.rounds + 1):
            for seconds, project in projects.items():
                workflows(bench, docker_cli, seconds, project)
            daemon_prune(bench)
            for level in args.concurrency:
                phases(bench, level)
            print(f"round {round_no}/{args.rounds} done", flush=True)
    finally:
        remove_labelled(bench.api, bench.label)
        for project in projects.values():
            shutil.rmtree(project, ignore_errors=True)
    summary(bench, args.rounds, args.concurrency, args.test_seconds)


def workflows(bench: Bench, docker_cli: str, seconds: float, project: Path) -> None:
    """The workflow without the plugin (its two steps timed apart), and with it."""
    bench.load()
    first, then = f"pytest alone ({seconds} s)", f"then docker image prune ({seconds} s)"
    alone = bench.time(first, lambda: run(NO_PLUGIN, project))
    prune = [docker_cli, "image", "prune", "-a", "-f", "--filter", f"label={bench.label}"]
    cli = bench.time(then, lambda: run(prune, project))
    bench.times[f"without ({seconds} s)"].append(alone + cli)
    if bench.cpu[then]:
        bench.cpu[f"without ({seconds} s)"].append(bench.cpu[first][-1] + bench.cpu[then][-1])
    bench.load()
    enabled = [
        *PYTEST,
        f"--prune-images=label={bench.label}",
        "--prune-images=dangling=false",
        "--prune-images-scope=all",
    ]
    bench.time(f"with ({seconds} s)", lambda: run(enabled, project))


def daemon_prune(bench: Bench) -> None:
    bench.load()
    filters = {"dangling": ["false"], "label": [bench.label]}
    bench.time(
        "daemon POST /images/prune",
        lambda: bench.api.prune_images(filters=filters),  # type: ignore[no-untyped-call]
    )


def phases(bench: Bench, level: int) -> None:
    """The plugin's prune phase alone, and the engine's floor, ``level`` requests in flight."""
    bench.load()
    filters = [f"label={bench.label}", "dangling=false"]
    reports: list[PruneReport] = []
    bench.time(
        f"prune_images(concurrency={level})",
        lambda: reports.append(prune_images(filters, concurrency=level)),
    )
    assert len(reports[0].deleted_ids) == bench.count, reports[0].to_dict()["errors"]
    ids = bench.load()
    engine = DockerEngine.from_env()
    bench.time("the listing (GET /images/json)", engine.snapshot)
    engine.close()
    bench.time(f"layer reads only (concurrency={level})", lambda: each(ids, level, _inspect))
    bench.time(f"DELETE only (concurrency={level})", lambda: each(ids, level, _delete))


def _inspect(engine: Engine, image_id: str) -> object:
    return engine.inspect(image_id)


def _delete(engine: Engine, image_id: str) -> object:
    return engine.delete(image_id)


NO_PLUGIN = [*PYTEST, "-p", "no:imageprune"]


def summary(bench: Bench, rounds: int, levels: list[int], test_seconds: list[float]) -> None:
    count, times = bench.count, bench.times
    print(f"\n{count} images, median of {rounds} rounds (wall time; the engine's CPU time):")
    for name, values in times.items():
        per_image = median(values) / count * 1000
        cpu = f"  engine CPU {fmt(median(bench.cpu[name]))}" if bench.cpu[name] else ""
        print(f"  {name:45s} {fmt(median(values))}  ({per_image:.3f} ms/image){cpu}")
    daemon = median(times["daemon POST /images/prune"])
    listing = median(times["the listing (GET /images/json)"])
    fastest = min(median(times[f"DELETE only (concurrency={c})"]) for c in levels)
    print("\nratios (lower is better for the plugin):")
    for seconds in test_seconds:
        without = median(times[f"without ({seconds} s)"])
        with_plugin = median(times[f"with ({seconds} s)"])
        alone = median(times[f"pytest alone ({seconds} s)"])
        # Each round's pair ran back to back: its ratio shrugs off the machine's slow spells.
        rounds_with, rounds_without = times[f"with ({seconds} s)"], times[f"without ({seconds} s)"]
        paired = median([w / wo for w, wo in zip(rounds_with, rounds_without, strict=True)])
        print(
            f"  whole workflow, tests taking {seconds} s: with / without = "
            f"{with_plugin / without:.3f} (median of each round's ratio: {paired:.3f})"
            "  (target <= 0.90)"
        )
        if bench.cpu[f"with ({seconds} s)"]:
            cpu_with = median(bench.cpu[f"with ({seconds} s)"])
            print(
                f"    the engine's CPU time: with / without = "
                f"{cpu_with / median(bench.cpu[f'without ({seconds} s)']):.3f}"
            )
        # The least the plugin's process could take: pytest itself, then the one listing
        # and the deletions an exact prune cannot do without, at their fastest.
        print(
            f"    the engine's bound: (pytest alone + listing + fastest DELETEs) / without"
            f" = {(alone + listing + fastest) / without:.3f}"
        )
    for level in levels:
        name = f"prune_images(concurrency={level})"
        phase = median(times[name])
        cpu = ""
        if bench.cpu[name]:
            engine_share = median(bench.cpu[name]) / median(bench.cpu["daemon POST /images/prune"])
            cpu = f"; the engine's CPU time, {engine_share:.3f}"
        print(
            f"  prune phase: prune_images(c={level:2d}) / daemon prune = {phase / daemon:.3f}{cpu}"
        )
    for level in levels:
        least = median(times[f"DELETE only (concurrency={level})"])
        reads = median(times[f"layer reads only (concurrency={level})"])
        print(
            f"  engine floor (c={level:2d}): DELETE only / daemon prune = {least / daemon:.3f},"
            f" layer reads only / daemon prune = {reads / daemon:.3f}"
        )


if __name__ == "__main__":
    main()
