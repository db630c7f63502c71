"""The tag race's check: the prune with and without its look at each untagged candidate's
names right before deleting it, side by side, on a private dockerd this script starts.

    python benchmarks/bench_tag_check.py [--count 1000] [--rounds 9] [--concurrency 1 8]

Root and ``dockerd`` needed: the engine is a dockerd of its own (``tests.support``'s
``private_dockerd``: its own data root and socket, no networking), never the machine's.
Each round loads ``--count`` untagged labelled images for each contender (as
``bench_prune.py`` does: heads without parents, deleted by ID, so every one gets the
look), and times, at each concurrency, alternating which goes first:

- ``prune_images()`` as it is, with the look (``GET /images/{id}/json``) before each
  deletion by ID;
- ``prune_images()`` without it (``images.delete._Run._look`` replaced by one that asks
  nothing, and every layer read before the deletions, since the look no longer reads
  any: the code before the check);
- the looks alone, one per image, at the same concurrency.

It prints medians of the wall time and of the private dockerd's CPU time, the cost per
image, and the ratios with / without (and the median of each round's own ratio, its two
contenders run back to back).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from bench_prune import each, engine_cpu
from common import client, fmt, load, median, timed

from pytest_imageprune.engine.api import Engine
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images import delete as deletion
from pytest_imageprune.images import space
from pytest_imageprune.images.prune import prune_images
from pytest_imageprune.model.images import Image
from pytest_imageprune.model.outcome import Kept
from tests.support import private_dockerd

Times = dict[str, list[float]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8])
    args = parser.parse_args()
    with private_dockerd() as daemon:
        assert daemon.process is not None
        os.environ["DOCKER_HOST"] = daemon.socket  # every client below: this engine only
        os.environ.pop("DOCKER_CONTEXT", None)
        cpu = engine_cpu(daemon.process.pid)
        engine = DockerEngine.from_env()
        print(f"engine: {engine.store.describe()} at {daemon.socket}", flush=True)
        engine.close()
        times: Times = defaultdict(list)
        cpus: Times = defaultdict(list)
        for round_no in range(1, args.rounds + 1):
            for level in args.concurrency:
                contenders = ["with", "without"] if round_no % 2 else ["without", "with"]
                for name in contenders:
                    wall, used = _prune(args.count, level, check=name == "with", cpu=cpu)
                    times[f"{name} {level}"].append(wall)
                    cpus[f"{name} {level}"].append(used)
                wall, used = _looks(args.count, level, cpu)
                times[f"looks {level}"].append(wall)
                cpus[f"looks {level}"].append(used)
            print(f"round {round_no}/{args.rounds} done", flush=True)
    _summary(times, cpus, args.count, args.rounds, args.concurrency)


def _loaded(count: int) -> tuple[str, list[str]]:
    """``count`` fresh untagged images under a label of their own: the label, their IDs."""
    api = client()
    value = uuid.uuid4().hex[:8]
    load(api, count, {"imageprune-bench": value})
    label = f"imageprune-bench={value}"
    ids = [i["Id"] for i in api.images(all=True, filters={"label": label})]
    api.close()
    assert len(ids) == count
    return label, ids


def _nothing_asked(run: object, engine: Engine, image: Image) -> Kept | None:
    return None


def _never_alone(counter: object, image_id: str) -> bool:
    return False


def _prune(
    count: int, level: int, *, check: bool, cpu: Callable[[], float] | None
) -> tuple[float, float]:
    label, _ = _loaded(count)
    # Without the check: no look, and so the layers read before the deletions, as they are
    # for any image the look does not read them for.
    look, alone = deletion._Run._look, space.SpaceCounter._alone
    if not check:
        deletion._Run._look = _nothing_asked  # type: ignore[method-assign,assignment]
        space.SpaceCounter._alone = _never_alone  # type: ignore[method-assign,assignment]
    reports = []
    try:
        before = cpu() if cpu is not None else 0.0
        wall = timed(lambda: reports.append(prune_images([f"label={label}"], concurrency=level)))
        used = cpu() - before if cpu is not None else 0.0
    finally:
        deletion._Run._look = look  # type: ignore[method-assign]
        space.SpaceCounter._alone = alone  # type: ignore[method-assign]
    assert len(reports[0].deleted_ids) == count, reports[0].to_dict()["errors"]
    return wall, used


def _looks(count: int, level: int, cpu: Callable[[], float] | None) -> tuple[float, float]:
    """The looks alone: one ``look`` a loaded image, ``level`` in flight; then the images go."""
    label, ids = _loaded(count)
    before = cpu() if cpu is not None else 0.0
    wall = timed(lambda: each(ids, level, lambda engine, image_id: engine.look(image_id)))
    used = cpu() - before if cpu is not None else 0.0
    prune_images([f"label={label}"], concurrency=8)
    return wall, used


def _summary(times: Times, cpus: Times, count: int, rounds: int, levels: list[int]) -> None:
    print(f"\n{count} untagged images, median of {rounds} rounds (wall time; dockerd's CPU):")
    for name, values in times.items():
        engine = f"  dockerd CPU {fmt(median(cpus[name]))}" if any(cpus[name]) else ""
        each_ms = median(values) / count * 1e3
        print(f"  {name:12s} {fmt(median(values))}  ({each_ms:.3f} ms/image){engine}")
    print("\nwith the check / without it (lower is better):")
    for level in levels:
        with_, without = times[f"with {level}"], times[f"without {level}"]
        paired = median([w / wo for w, wo in zip(with_, without, strict=True)])
        extra = (median(with_) - median(without)) / count * 1e3
        line = (
            f"  concurrency {level:2d}: {median(with_) / median(without):.3f}"
            f" (median of each round's ratio {paired:.3f}), {extra:+.3f} ms an image"
        )
        if any(cpus[f"with {level}"]):
            cpu_with, cpu_without = median(cpus[f"with {level}"]), median(cpus[f"without {level}"])
            line += f"; dockerd's CPU {cpu_with / cpu_without:.3f}"
        print(line)


if __name__ == "__main__":
    main()
