"""How the plugin's costs grow with the number of images on Docker's classic store, up to
20,000: each step, per image, side by side with the daemon's own prune, in one run.

    python benchmarks/bench_scale.py [--counts 1000 2000 5000 10000 20000] [--samples 3]
                                     [--sessions 5] [--prune-samples 1]

Root and ``dockerd`` needed: the engine is a dockerd of its own (``tests.support``'s
``private_dockerd``: its own data root and socket, no networking), never the machine's.
For each N, smallest first, the engine holds exactly N small labelled images loaded from
an archive made here (``common.archive``, one shared layer: heads without parents, as
loaded and pulled images are), and this script times, in medians:

- one listing, ``GET /images/json?all=1`` with its JSON read (``--samples``);
- the baseline snapshot a session takes: the listing, the container listing, parsing,
  ``Baseline.of`` (``--samples``);
- the plugin's selection, pure CPU on that snapshot (``--samples``): every image a
  candidate (``--prune-images-scope=all`` with the label), and a session's selection with
  nothing new since its baseline (nothing to prune); and a dry run of all N on it (the
  selection and the deletions replayed, ``engine.simulate``);
- a whole pytest session of 20 tests with nothing to prune, enabled against
  ``-p no:imageprune``, alternating (``--sessions`` pairs; the conftest loads at once);
- the prune of all N: ``prune_images()`` with the label, ``dangling=false`` and no baseline
  (``--prune-images-scope=all``), at the default concurrency, against the daemon's own
  ``POST /images/prune`` with the same filters, each on a fresh load of the N, alternating
  which goes first (``--prune-samples`` of each), with the dockerd's CPU time.

``--sessions 0`` and ``--prune-samples 0`` leave those out (the N images are then pruned
by the daemon, untimed).

It prints how long each load took, then the curve: each step's median, its cost per image,
and that cost against the smallest N's (1.00 all along: linear), and each prune's ratio to
the daemon's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from bench_prune import engine_cpu
from common import PYTEST, client, fmt, load, median, run, timed, tiny_project

from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.images.select import select
from pytest_imageprune.model.filters import parse_filters
from pytest_imageprune.model.images import Baseline
from tests.support import private_dockerd

LABEL = "imageprune-scale"
NO_PLUGIN = [*PYTEST, "-p", "no:imageprune"]
NOTHING_TO_PRUNE = [*PYTEST, "--prune-images=label=nothing-matches"]

T = TypeVar("T")

#: Step name -> median seconds, by N.
Curve = dict[int, dict[str, float]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--prune-samples", type=int, default=1)
    args = parser.parse_args()
    project = tiny_project()
    curve: Curve = {}
    cpu_curve: Curve = {}
    with private_dockerd() as daemon:
        assert daemon.process is not None
        os.environ["DOCKER_HOST"] = daemon.socket  # every client below: this engine only
        os.environ.pop("DOCKER_CONTEXT", None)
        cpu = engine_cpu(daemon.process.pid)
        engine = DockerEngine.from_env(timeout=3600)
        print(f"engine: {engine.store.describe()} at {daemon.socket}", flush=True)
        engine.close()
        for count in sorted(args.counts):
            curve[count], cpu_curve[count] = measure(count, args, project, cpu)
            print(
                f"{count} images: "
                + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in curve[count].items()),
                flush=True,
            )
    summary(curve, cpu_curve)


def _load(count: int) -> str:
    """``count`` fresh images under a label value of their own; the filter naming them."""
    api = client()
    value = uuid.uuid4().hex[:8]
    took = timed(lambda: load(api, count, {LABEL: value}))
    print(f"  loaded {count} images in {took:.1f} s", flush=True)
    api.close()
    return f"label={LABEL}={value}"


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    """How long ``action`` took, and what it gave."""
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def measure(
    count: int, args: argparse.Namespace, project: Path, cpu: Callable[[], float] | None
) -> tuple[dict[str, float], dict[str, float]]:
    times: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[float]] = defaultdict(list)
    label = _load(count)
    engine = DockerEngine.from_env(timeout=3600)
    listed = engine.request("GET", "/images/json?all=1")
    assert len(listed) == count, len(listed)
    everything = parse_filters([label, "dangling=false"])
    for _ in range(args.samples):
        times["listing"].append(timed(lambda: engine.request("GET", "/images/json?all=1")))
        times["baseline"].append(timed(lambda: Baseline.of(engine.snapshot())))
    snapshot = engine.snapshot()
    engine.close()
    baseline = Baseline.of(snapshot)
    for _ in range(args.samples):
        took, chosen = _timed(lambda: select(snapshot, everything))
        assert len(chosen.candidates) == count
        times["select all"].append(took)
        took, chosen = _timed(lambda: select(snapshot, everything, baseline=baseline))
        assert not chosen.candidates
        times["select session"].append(took)
        took, report = _timed(lambda: prune_images(everything, dry_run=True, snapshot=snapshot))
        assert len(report.deleted_ids) == count
        times["dry run"].append(took)

    if args.sessions:
        run(NO_PLUGIN, project)  # once each first: pytest's bytecode of the plugin is written
        run(NOTHING_TO_PRUNE, project)
    for _ in range(args.sessions):
        times["session off"].append(timed(lambda: run(NO_PLUGIN, project)))
        times["session on"].append(timed(lambda: run(NOTHING_TO_PRUNE, project)))
        times["session added"].append(times["session on"][-1] - times["session off"][-1])

    # The prunes: the N loaded above go first; each later prune gets a fresh load.
    loaded: str | None = label
    if not args.prune_samples:
        _daemon(label)  # the engine empty for the next N
    for sample in range(args.prune_samples):
        order = ["plugin", "daemon"] if sample % 2 == 0 else ["daemon", "plugin"]
        for contender in order:
            if loaded is None:
                loaded = _load(count)
            before = cpu() if cpu is not None else 0.0
            took, deleted = (_plugin if contender == "plugin" else _daemon)(loaded)
            if cpu is not None:
                cpus[f"{contender} prune"].append(cpu() - before)
            assert deleted == count, (contender, deleted, count)
            times[f"{contender} prune"].append(took)
            loaded = None
    return (
        {name: median(values) for name, values in times.items()},
        {name: median(values) for name, values in cpus.items()},
    )


def _plugin(label: str) -> tuple[float, int]:
    """``prune_images()`` of the images ``label`` names, every one a candidate: its time,
    and how many it deleted."""
    took, report = _timed(lambda: prune_images([label, "dangling=false"]))
    assert not report.errors, report.errors
    return took, len(report.deleted_ids)


def _daemon(label: str) -> tuple[float, int]:
    """The daemon's own prune of the same: its time, and how many images it deleted."""
    api = client()
    wanted = {"label": [label.partition("=")[2]], "dangling": ["false"]}
    took, answer = _timed(lambda: api.prune_images(filters=wanted))  # type: ignore[no-untyped-call]
    api.close()
    deleted = [r for r in answer.get("ImagesDeleted") or () if "Deleted" in r]
    # Each image's Deleted record, and the shared layer's with the last one.
    return took, len(deleted) - 1


#: Each step's key, name, and whether its cost per image means anything.
STEPS = [
    ("listing", "one listing, GET /images/json?all=1", True),
    ("baseline", "baseline snapshot (list, parse, Baseline.of)", True),
    ("select all", "selection, every image a candidate (CPU)", True),
    ("select session", "selection, nothing new since the baseline (CPU)", True),
    ("dry run", "dry run of all N on that listing (CPU: selection, replayed deletions)", True),
    ("session off", "pytest session, -p no:imageprune", False),
    ("session on", "pytest session, enabled, nothing to prune", False),
    ("session added", "added by the plugin (median of each pair's difference)", True),
    ("plugin prune", "prune_images() of all N, scope all, 8 in flight", True),
    ("daemon prune", "the daemon's POST /images/prune of all N", True),
]


def summary(curve: Curve, cpu_curve: Curve) -> None:
    counts = sorted(curve)
    first = counts[0]
    print("\nmedians in ms; per image in us; per image against the smallest N's (1.00: linear)")
    for key, name, per_image in STEPS:
        if not all(key in curve[n] for n in counts):
            continue
        print(f"\n{name}:")
        for n in counts:
            value = curve[n][key]
            line = f"  {n:6d}: {fmt(value)}"
            per, base = value / n, curve[first][key] / first
            if per_image:
                line += f"  {per * 1e6:8.1f} us/image"
                line += f"  x{per / base:.2f}" if base > 0 else ""
            print(line)
    print("\nprunes: plugin / daemon (wall; dockerd's CPU)")
    for n in counts:
        plugin, daemon = curve[n].get("plugin prune"), curve[n].get("daemon prune")
        if plugin is None or daemon is None:
            continue
        line = f"  {n:6d}: {plugin / daemon:.3f}"
        cpu_plugin, cpu_daemon = cpu_curve[n].get("plugin prune"), cpu_curve[n].get("daemon prune")
        if cpu_plugin and cpu_daemon:
            line += f"; CPU {cpu_plugin * 1000:.0f} / {cpu_daemon * 1000:.0f} ms"
            line += f" = {cpu_plugin / cpu_daemon:.3f}"
        print(line)


if __name__ == "__main__":
    main()
