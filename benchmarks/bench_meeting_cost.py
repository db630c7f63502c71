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
   alternating: the plugin as it is, and the plugin with the meeting place switched off
   (``session.join._meeting`` made to return None in the benchmark's process only). The
   difference of the medians is what the meeting place adds to a session.

It prints medians in ms and the ratio of the two session timings. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from pytest_imageprune.coordination.in_engine import EngineMeeting
from pytest_imageprune.coordination.records import SessionRecord
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.model.images import Baseline

_RUN = """
import sys
if sys.argv[1] == "off":
    import pytest_imageprune.session.join as join
    join._meeting = lambda start: None
import pytest
sys.exit(pytest.main(sys.argv[2:]))
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


def sessions(rounds: int) -> dict[str, float]:
    """Whole sessions' medians, in ms, with the meeting place on and off."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "test_one.py").write_text("def test_one():\n    pass\n")
        (root / "run.py").write_text(textwrap.dedent(_RUN))
        timings: dict[str, list[float]] = {"on": [], "off": []}
        env = {**os.environ, "PYTEST_IMAGEPRUNE_ENGINE_ROOM": "bench"}
        for _ in range(rounds):
            for mode in ("on", "off"):
                command = [
                    sys.executable,
                    str(root / "run.py"),
                    mode,
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--prune-images=label=bench-meeting",
                    f"--prune-images-lock={root / 'prune.lock'}",
                    str(root / "test_one.py"),
                ]
                started = time.perf_counter()
                subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
                timings[mode].append(_ms(started))
    return {mode: statistics.median(values) for mode, values in timings.items()}


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
    timed = sessions(args.rounds)
    print(f"  meeting place on:  {timed['on']:8.1f}")
    print(f"  meeting place off: {timed['off']:8.1f}")
    print(
        f"  added: {timed['on'] - timed['off']:+.1f} ms; ratio on/off: "
        f"{timed['on'] / timed['off']:.3f}"
    )


if __name__ == "__main__":
    main()
