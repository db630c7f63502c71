"""Where a prune's time goes on Docker 26.1's containerd image store, against the number
of images the engine holds: each request the plugin makes, and the whole prune, side by
side with the daemon's own ``POST /images/prune``.

Run as root with ``IMAGEPRUNE_TRIXIE_ROOT`` set (``.ci/debian13-engines start`` prints it):
each size gets a private, empty Docker 26.1 on the containerd store (``tests.support``),
so nothing else the engine holds moves the figures. For each size N it loads N small
labelled images (``common.archive``, one shared layer) and measures, in medians of
``--samples`` requests where a request is timed alone:

- one listing, ``GET /images/json?all=1``;
- one ``GET /images/{id}/json`` and one ``GET /images/{id}/history``;
- one ``DELETE /images/{id}``, alone;
- the whole prune of the N images: ``prune_images()`` (the plugin's, at 1 and 8 requests
  in flight), and the daemon's own prune, each on a fresh load of N.

Prints the curve and each prune's ratio to the daemon's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
from common import load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.images.prune import prune_images
from tests.support import private_c8d_dockerd

LABEL = "bench-c8d"


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _ids(api: docker.APIClient) -> list[str]:
    return [i["Id"] for i in api.images(all=True, filters={"label": LABEL})]


def measure(socket: str, count: int, samples: int) -> dict[str, float]:
    api = docker.APIClient(base_url=socket, version="auto", timeout=3600)
    figures: dict[str, float] = {}
    load(api, count, {LABEL: "x"})
    ids = _ids(api)
    figures["list"] = statistics.median(_ms(lambda: api.images(all=True)) for _ in range(samples))
    probe = ids[:samples]
    figures["inspect"] = statistics.median(_ms(lambda i=i: api.inspect_image(i)) for i in probe)
    figures["history"] = statistics.median(_ms(lambda i=i: api.history(i)) for i in probe)
    figures["delete"] = statistics.median(_ms(lambda i=i: api.remove_image(i)) for i in probe)
    api.prune_images(filters={"label": LABEL, "dangling": False})

    os.environ["DOCKER_HOST"] = socket  # the plugin's engine, as a session finds it
    engine = DockerEngine.from_env(timeout=3600)
    try:
        for level in (1, 8):
            load(api, count, {LABEL: "x"})
            report = None

            def plugin(level: int = level) -> None:
                nonlocal report
                report = prune_images(
                    [f"label={LABEL}", "dangling=false"], engine=engine, concurrency=level
                )

            figures[f"plugin c={level}"] = _ms(plugin)
            assert report is not None
            assert len(report.deleted_ids) == count, report
    finally:
        engine.close()
    load(api, count, {LABEL: "x"})
    figures["daemon"] = _ms(lambda: api.prune_images(filters={"label": LABEL, "dangling": False}))
    assert not _ids(api)
    api.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for count in args.counts:
        with private_c8d_dockerd() as daemon:
            figures = measure(daemon.socket, count, args.samples)
        rows.append((count, figures))
        print(
            f"{count} images: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True
        )
    print(
        "\nimages | list | inspect | history | one DELETE | plugin c=1 | plugin c=8 | daemon"
        " | c=1/daemon | c=8/daemon | c=8 per image | daemon per image   (ms)"
    )
    for count, f in rows:
        print(
            f"{count:6d} | {f['list']:7.1f} | {f['inspect']:6.1f} | {f['history']:6.1f}"
            f" | {f['delete']:6.1f} | {f['plugin c=1']:9.0f} | {f['plugin c=8']:9.0f}"
            f" | {f['daemon']:7.0f} | {f['plugin c=1'] / f['daemon']:5.2f}"
            f" | {f['plugin c=8'] / f['daemon']:5.2f} | {f['plugin c=8'] / count:6.1f}"
            f" | {f['daemon'] / count:6.1f}"
        )


if __name__ == "__main__":
    main()
