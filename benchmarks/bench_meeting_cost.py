"""What the engine's meeting place costs a session, side by side: with it, and without it.

    python benchmarks/bench_meeting_cost.py [--rounds 9] [--baseline 2000]
        (DOCKER_HOST names the engine)

Sessions that share only the engine meet there (``coordination.in_engine``): a lease and a
record at the start, the others looked at and the engine's claim taken at the end, the
volumes removed. This measures it twice, on the engine ``DOCKER_HOST`` names:

1. **Each step, alone**, through ``EngineMeeting`` on a connection of its own, with a
   record holding a ``--baseline``-image baseline: join (lease and record), one look at
   the others, claim and let go, settle (remove every volume), and one lease renewal (the
   heartbeat's, every 5 s on a thread of its own, off the session's path).
2. **Whole pytest sessions** (one test, ``--prune-images=label=...``, a lock of their own),
   alternating: the plugin as it is; without the record of uses (``budget.record``:
   ``PruneSession._watch_uses`` made a no-op); and with the meeting place switched off
   (``session.join._meeting`` made to return None), each in the benchmark's process only.
   The differences of the medians are what each adds to a session. Then the same with a
   test that makes and removes a container (``docker run --rm``), for which the record
   is written.

It prints medians in ms and the ratio of the two session timings. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from pytest_imageprune.coordination.in_engine import ROOM, EngineMeeting
from pytest_imageprune.coordination.records import SessionRecord
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.model.images import Baseline

_RUN = """
import sys
# Both modules imported in every mode, before pytest, so that the modes differ only in the
# patch (an import moved to the start changes what overlaps pytest's own start-up).
import pytest_imageprune.session.join as join
from pytest_imageprune.session.lifecycle import PruneSession
if sys.argv[1] == "off":
    join._meeting = lambda start: None
if sys.argv[1] == "no-record":
    PruneSession._watch_uses = lambda self: None
    PruneSession._record_uses = lambda self, pipeline: None
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""

#: A test that uses the engine as ``docker run --rm`` does: a container made and removed.
_CONTAINER_TEST = """
import docker

def test_one():
    client = docker.APIClient(**docker.utils.kwargs_from_env())
    made = client.create_container("bench-meeting-cost:1", command="/nothing")
    client.remove_container(made["Id"])
"""


def _record(images: int) -> SessionRecord:
    tags = {f"sha256:{i:064x}": (f"repo/image-{i}:latest",) for i in range(images)}
    return SessionRecord.new(Baseline(tags, time.time_ns()), {"label": ["bench"]}, "session", 1)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def steps(rounds: int, images: int) -> dict[str, float]:
    """Each step's median, in ms."""
    engine = DockerEngine.from_env()
    timings: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            meeting = EngineMeeting(engine.spawn(2)[-1], room="bench")  # type: ignore[arg-type]
            record = _record(images)
            started = time.perf_counter()
            meeting.join(record)
            timings.setdefault("join (lease + record)", []).append(_ms(started))
            meeting.stop()
            started = time.perf_counter()
            list(meeting.others())
            timings.setdefault("look at the others", []).append(_ms(started))
            started = time.perf_counter()
            meeting._renew()
            timings.setdefault("renew the lease (a thread's)", []).append(_ms(started))
            started = time.perf_counter()
            meeting.finishing()
            timings.setdefault("say finishing", []).append(_ms(started))
            started = time.perf_counter()
            assert meeting.claim(record.id)
            meeting.unclaim()
            timings.setdefault("claim + let go", []).append(_ms(started))
            started = time.perf_counter()
            meeting.settle(record, done=True)
            timings.setdefault("settle (remove all)", []).append(_ms(started))
            meeting.close()
    finally:
        engine.close()
    return {step: statistics.median(values) for step, values in timings.items()}


def sessions(rounds: int, container: bool = False) -> dict[str, tuple[float, float]]:
    """Whole sessions' medians, in ms, with the meeting place on, on without the record of
    uses (``budget.record``), and off: the wall time, and the session end's own
    (``duration_s`` in its report). With ``container``, the test makes and removes a
    container, so that the record is written."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        test = _CONTAINER_TEST if container else "def test_one():\n    pass\n"
        (root / "test_one.py").write_text(textwrap.dedent(test))
        (root / "run.py").write_text(textwrap.dedent(_RUN))
        modes = ("on", "no-record", "off")
        walls: dict[str, list[float]] = {mode: [] for mode in modes}
        ends: dict[str, list[float]] = {mode: [] for mode in modes}
        env = {**os.environ, "PYTEST_IMAGEPRUNE_ENGINE_ROOM": "bench"}
        for _ in range(rounds):
            for mode in modes:
                report = root / "report.json"
                command = [
                    sys.executable,
                    str(root / "run.py"),
                    mode,
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--prune-images=label=bench-meeting",
                    f"--prune-images-lock={root / 'prune.lock'}",
                    f"--prune-images-report={report}",
                    str(root / "test_one.py"),
                ]
                started = time.perf_counter()
                subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
                walls[mode].append(_ms(started))
                ends[mode].append(json.loads(report.read_text())["duration_s"] * 1000)
    return {mode: (statistics.median(walls[mode]), statistics.median(ends[mode])) for mode in modes}


def _tiny_image() -> None:
    """``bench-meeting-cost:1``, for the container the sessions make (an image of one file)."""
    import docker
    from common import archive

    client = docker.APIClient(**docker.utils.kwargs_from_env())
    try:
        for _ in client.load_image(archive(1, {"bench-meeting-cost": "1"}, "tiny")):
            pass
        (image,) = client.images(filters={"label": "bench-meeting-cost=1"})
        client.tag(image["Id"], "bench-meeting-cost", "1")
    finally:
        client.close()


def _remove_tiny_image() -> None:
    import docker

    client = docker.APIClient(**docker.utils.kwargs_from_env())
    try:
        for image in client.images(filters={"label": "bench-meeting-cost=1"}):
            client.remove_image(image["Id"], force=True)
        for volume in client.volumes(filters={"label": f"{ROOM}=bench"})["Volumes"] or ():
            client.remove_volume(volume["Name"])
    finally:
        client.close()


def _print_sessions(timed: dict[str, tuple[float, float]]) -> None:
    for mode, (wall, end) in timed.items():
        print(f"  {mode:10} whole session {wall:8.1f}, its end (duration_s) {end:7.1f}")
    on, norecord, off = timed["on"], timed["no-record"], timed["off"]
    print(
        f"  the meeting place adds {on[0] - off[0]:+.1f} ms to a session"
        f" (ratio on/off {on[0] / off[0]:.3f}); to its end {on[1] - off[1]:+.1f} ms"
    )
    print(
        f"  the record of uses adds {on[0] - norecord[0]:+.1f} ms to a session;"
        f" to its end {on[1] - norecord[1]:+.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--baseline", type=int, default=2000, help="images in the record")
    args = parser.parse_args()
    print(f"engine: {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}")
    print(f"\neach step, median of {args.rounds} rounds, {args.baseline}-image record, ms:")
    medians = steps(args.rounds, args.baseline)
    for step, value in medians.items():
        print(f"  {step:30} {value:8.2f}")
    path = sum(v for k, v in medians.items() if "thread" not in k)
    print(f"  {'on the session path, in all':30} {path:8.2f}")
    print(f"\nwhole sessions, median of {args.rounds} rounds each, alternating, ms:")
    _print_sessions(sessions(args.rounds))
    print("\nthe same, the test making and removing a container, ms:")
    _tiny_image()
    try:
        _print_sessions(sessions(args.rounds, container=True))
    finally:
        _remove_tiny_image()


if __name__ == "__main__":
    main()
