"""Pruning N small labelled images: the plugin against ``docker image prune``, in one run.

    python benchmarks/bench_prune.py [--count 1000] [--rounds 5] [--test-seconds 0]

Each round loads N fresh images for each contender and times:

- the workflow without the plugin: ``pytest`` (plugin off), then ``docker image prune -a``
  with the label filter, as a user would run them;
- the workflow with it: one ``pytest --prune-images=label=... --prune-images-scope=all``;
- the prune phases alone: the daemon's ``POST /images/prune`` against ``prune_images()``
  at several concurrencies (requests in flight), in this process;
- the engine's floor: the same N ``DELETE /images/{id}`` requests and nothing else (no
  listing, no layer sizes read for ``SpaceReclaimed``), at the same concurrencies.

The pytest session runs 20 tests that take ``--test-seconds`` in all: 0 (the default) is
the plugin's worst case, nothing to overlap its reads with.
It prints medians and the ratios; the target is plugin / without <= 0.8.
"""

from __future__ import annotations

import argparse
import shutil
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from common import PYTEST, client, fmt, load, median, remove_labelled, run, timed, tiny_project

from pytest_imageprune.engine import DockerEngine
from pytest_imageprune.prune import prune_images


def delete_only(ids: list[str], level: int) -> None:
    """``DELETE /images/{id}`` for each of ``ids``, ``level`` at a time, and nothing else."""
    engines = DockerEngine.from_env().spawn(level)

    def share(k: int) -> None:
        for image_id in ids[k :: len(engines)]:
            engines[k].delete(image_id)

    with ThreadPoolExecutor(len(engines)) as pool:
        list(pool.map(share, range(len(engines))))
    for engine in engines:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    parser.add_argument("--test-seconds", type=float, default=0.0)
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise SystemExit("the docker CLI is needed for the comparison")
    api = client()
    project = tiny_project(args.test_seconds)
    times: dict[str, list[float]] = defaultdict(list)
    label = f"imageprune-bench={uuid.uuid4().hex[:8]}"
    try:
        for round_no in range(1, args.rounds + 1):
            # The workflow without the plugin.
            load(api, args.count, {"imageprune-bench": label.split("=")[1]})
            times["without: pytest + docker image prune"].append(
                timed(lambda: run([*PYTEST, "-p", "no:imageprune"], project))
                + timed(
                    lambda: run(
                        [docker_cli, "image", "prune", "-a", "-f", "--filter", f"label={label}"],
                        project,
                    )
                )
            )
            # The workflow with the plugin.
            load(api, args.count, {"imageprune-bench": label.split("=")[1]})
            times["with: pytest --prune-images"].append(
                timed(
                    lambda: run(
                        [
                            *PYTEST,
                            f"--prune-images=label={label}",
                            "--prune-images=dangling=false",
                            "--prune-images-scope=all",
                        ],
                        project,
                    )
                )
            )
            # The prune phases alone.
            load(api, args.count, {"imageprune-bench": label.split("=")[1]})
            times["daemon POST /images/prune"].append(
                timed(
                    lambda: api.prune_images(  # type: ignore[no-untyped-call]
                        filters={"dangling": ["false"], "label": [label]}
                    )
                )
            )
            for level in args.concurrency:
                load(api, args.count, {"imageprune-bench": label.split("=")[1]})
                report = None

                def ours(level: int = level) -> None:
                    nonlocal report
                    report = prune_images([f"label={label}", "dangling=false"], concurrency=level)

                times[f"prune_images(concurrency={level})"].append(timed(ours))
                assert report is not None
                assert len(report.deleted_ids) == args.count, report.to_dict()["errors"]
                load(api, args.count, {"imageprune-bench": label.split("=")[1]})
                ids = [i["Id"] for i in api.images(all=True, filters={"label": label})]
                times[f"DELETE only (concurrency={level})"].append(
                    timed(lambda level=level, ids=ids: delete_only(ids, level))  # type: ignore[misc]
                )
            print(f"round {round_no}/{args.rounds} done", flush=True)
    finally:
        remove_labelled(api, label)
        shutil.rmtree(project, ignore_errors=True)

    print(
        f"\n{args.count} images, median of {args.rounds} rounds (wall time),"
        f" tests taking {args.test_seconds} s:"
    )
    for name, values in times.items():
        per_image = median(values) / args.count * 1000
        print(f"  {name:45s} {fmt(median(values))}  ({per_image:.3f} ms/image)")
    without = median(times["without: pytest + docker image prune"])
    with_plugin = median(times["with: pytest --prune-images"])
    daemon = median(times["daemon POST /images/prune"])
    print("\nratios (lower is better for the plugin):")
    print(
        f"  whole workflow: with plugin / without          = {with_plugin / without:.3f}"
        "  (target <= 0.8)"
    )
    for level in args.concurrency:
        ours = median(times[f"prune_images(concurrency={level})"])
        print(f"  prune phase: prune_images(c={level:2d}) / daemon prune = {ours / daemon:.3f}")
    for level in args.concurrency:
        least = median(times[f"DELETE only (concurrency={level})"])
        print(f"  engine floor: DELETE only (c={level:2d}) / daemon prune = {least / daemon:.3f}")


if __name__ == "__main__":
    main()
