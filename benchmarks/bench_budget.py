"""The storage budget's decision: what it costs to choose the evictions at 2,000 images.

    python benchmarks/bench_budget.py [--count 2000] [--rounds 15]

No engine: the inventory is synthetic, shaped as a CI runner's engine is (what
``budget.gather`` reads from a real one): pulled images in families that share base
layers, classic builds in parent chains (untagged intermediates under a tag), dangling
heads, some containers (stopped ones hold their images), keep patterns, a live-session
rule that keeps nothing (no other session lives), and a last use for every image. The
budget is half of what the images take, so that about half of them are evicted and every
reason to keep one is asked. Each round times ``budget.plan.decide`` on the classic store's
accounting and on the containerd store's (``ContainerdSpace``), and prints the medians of
the wall time (with the fastest round) and of this process's CPU time, which another load
on the machine disturbs less.

With ``--engine``, it also times the reads on a real engine: a private dockerd this script
starts (root and ``dockerd`` needed; ``tests.support``'s ``private_dockerd``, never the
machine's), filled with ``--count`` untagged images loaded from an archive (dangling heads
sharing one layer, as ``bench_prune.py`` loads them): the listing, ``budget.gather`` (one
inspect per image on 8 connections, the event log) and a whole dry run of the budget
(``apply_budget``: the reads, the decision and the simulated deletions).

The deletions of a real run are the session's own prune's (``bench_prune.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_imageprune.budget.plan import Inventory, Use, decide
from pytest_imageprune.engine.store import CLASSIC, CONTAINERD
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Container, Image, Snapshot


def inventory(count: int, store: str, seed: int = 7) -> Inventory:
    """``count`` images: a quarter pulled (families of 8 on a shared base of 3 layers), half
    in classic build chains of 4 (one tag on top), the rest dangling heads."""
    rng = random.Random(seed)
    images: list[Image] = []
    chains: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, int] = {}
    uses: dict[str, Use] = {}
    n = 0

    def new_id() -> str:
        nonlocal n
        n += 1
        return f"sha256:{n:064x}"

    def layer(size: int) -> str:
        name = f"sha256:{len(sizes) + 1:064x}".replace("sha256:0", "sha256:f", 1)
        sizes[name] = size
        return name

    while len(images) < count:
        kind = rng.random()
        if kind < 0.25:  # a family of pulled images sharing a base
            base = tuple(layer(rng.randint(5, 80) * 1_000_000) for _ in range(3))
            for member in range(8):
                top = (layer(rng.randint(1, 40) * 1_000_000),)
                image = Image(
                    new_id(),
                    tags=(f"registry.example/team{n % 17}/app{n}:{member}",),
                    size=sum(sizes[x] for x in base + top),
                )
                images.append(image)
                chains[image.id] = base + top
        elif kind < 0.75:  # a classic build: four steps, a tag on the last
            parent = None
            below: tuple[str, ...] = ()
            for step in range(4):
                own = (layer(rng.randint(0, 20) * 1_000_000),)
                size = sum(sizes[x] for x in below + own)
                tags = (f"ci/build{n}:latest",) if step == 3 else ()
                image = Image(new_id(), parent=parent, tags=tags, size=size)
                images.append(image)
                chains[image.id] = below + own
                parent, below = image.id, below + own
        else:  # a dangling head
            own = (layer(rng.randint(1, 30) * 1_000_000),)
            image = Image(new_id(), size=sizes[own[0]])
            images.append(image)
            chains[image.id] = own
    images = images[:count]
    present = {i.id for i in images}
    images = [i if i.parent is None or i.parent in present else Image(i.id) for i in images]
    now = 1_800_000_000
    for image in images:
        uses[image.id] = Use((now - rng.randint(0, 90 * 86_400)) * NANOS, "synthetic")
    containers = tuple(
        Container(f"{c:064x}", rng.choice(images).id, running=c % 3 == 0) for c in range(40)
    )
    snapshot = Snapshot.of(images, containers)
    chains = {i: chains[i] for i in present}
    if store == CONTAINERD:  # the list's Size holds the content (compressed) besides
        images = [dataclasses.replace(i, size=i.size * 14 // 10) for i in images]
        snapshot = Snapshot.of(images, containers)
    return Inventory(snapshot, store, chains, sizes, uses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--engine", action="store_true", help="also time the reads")
    args = parser.parse_args()
    patterns = [re.compile(r"^registry\.example/team3/"), re.compile(":keep$")]
    print(f"{args.count} images, {args.rounds} rounds; medians")
    for store in (CLASSIC, CONTAINERD):
        inv = inventory(args.count, store)
        first = decide(inv, 1)
        budget = first.total // 2
        times, cpu = [], []
        for _ in range(args.rounds):
            started, started_cpu = time.perf_counter(), time.process_time()
            decision = decide(inv, budget, patterns=patterns, keep=lambda image: None)
            cpu.append(time.process_time() - started_cpu)
            times.append(time.perf_counter() - started)
        print(
            f"  {store:10} decide: {statistics.median(times) * 1000:7.1f} ms wall"
            f" (min {min(times) * 1000:.1f}), {statistics.median(cpu) * 1000:.1f} ms CPU;"
            f" {len(decision.evictions)} evicted, {len(decision.held)} held,"
            f" {decision.total / 1e9:.1f} GB -> {decision.after / 1e9:.1f} GB"
            f" under a budget of {budget / 1e9:.1f} GB"
        )
    if args.engine:
        on_an_engine(args.count, args.rounds)


def on_an_engine(count: int, rounds: int) -> None:
    import os

    from common import client, load

    from pytest_imageprune.budget.apply import apply_budget
    from pytest_imageprune.budget.gather import gather
    from pytest_imageprune.budget.size import Budget
    from pytest_imageprune.engine.client import DockerEngine
    from tests.support import private_dockerd

    with private_dockerd() as daemon:
        os.environ["DOCKER_HOST"] = daemon.socket  # every client below: this engine only
        os.environ.pop("DOCKER_CONTEXT", None)
        load(client(), count, {"bench": "budget"})
        engine = DockerEngine.from_env()
        print(f"on {engine.store.describe()}, {count} images loaded; medians of {rounds}")
        listing, reads, whole = [], [], []
        for _ in range(rounds):
            started = time.perf_counter()
            snapshot = engine.snapshot()
            listing.append(time.perf_counter() - started)
            started = time.perf_counter()
            gather(engine, snapshot, engine.store.kind)
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = apply_budget(
                engine, Budget(1, "1B"), dry_run=True, keep_live=lambda: lambda image: None
            )
            whole.append(time.perf_counter() - started)
        assert report.decision is not None
        assert report.decision.evictions, "nothing to evict: the reads were not all timed"
        for what, times in (("listing", listing), ("gather", reads), ("dry run", whole)):
            print(f"  {what:8} {statistics.median(times) * 1000:8.1f} ms")
        engine.close()


if __name__ == "__main__":
    main()
