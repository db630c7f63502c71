"""Sessions that overlap, die, are interrupted, or lose their engine: real processes.

Each test runs pytest sessions as separate processes against a real engine, sharing one
lock and registry of the test's own. Images carry the test's namespace label (see
test_plugin_engine.py), so the engine may hold other images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import (
    PrivateDockerd,
    build,
    connect,
    image_archive,
    layer_tar,
    private_dockerd,
)
from tests.test_plugin_engine import Namespace, ns, run, write_tests

pytestmark = pytest.mark.engine

__all__ = ["ns"]  # the fixture, used by name

WAIT_FOR = """
from pathlib import Path
import time

def wait_for(name, timeout=120):
    deadline = time.monotonic() + timeout
    while not Path(name).exists():
        assert time.monotonic() < deadline, f"gave up waiting for {name}"
        time.sleep(0.05)
"""


def _wait_for(
    path: Path, timeout: float = 120, process: subprocess.Popen[str] | None = None
) -> None:
    """Wait for ``path``; fail at once, with its output, if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            out, _ = process.communicate()
            raise AssertionError(f"the session ended before {path.name}:\n{out}")
        assert time.monotonic() < deadline, f"gave up waiting for {path}"
        time.sleep(0.05)


def _session(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def test_overlapping_sessions_lose_nothing_and_leave_nothing(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    lock = f"--prune-images-lock={pytester.path / 'shared.lock'}"
    pytester.makepyfile(
        test_first="from inner import make\n"
        + WAIT_FOR
        + textwrap.dedent(
            """
            def test_first():
                make("first_early")
                Path("first-built").touch()
                wait_for("second-started")
                make("first_late")
            """
        ),
        test_second="from inner import make\n"
        + WAIT_FOR
        + textwrap.dedent(
            """
            def test_second():
                Path("second-started").touch()
                make("second")
                Path("second-built").touch()
                wait_for("second-go")
            """
        ),
    )
    first = _session(pytester, "test_first.py", ns.scope, lock)
    _wait_for(pytester.path / "first-built")
    second = _session(pytester, "test_second.py", ns.scope, lock)
    code, out = _finish(first)
    assert code == 0, out
    _wait_for(pytester.path / "second-built", process=second)

    # The first session is done; the second still runs. Nothing of the first's went: what
    # it built before the second started is in the second's baseline (the second's build
    # is cached on its steps: the first version deleted them, and that build failed with
    # "No such image"), and what it built later may be the second's.
    assert ns.exists(ns.built("first_early")[-1]), out
    assert ns.exists(ns.built("first_late")[-1]), out
    assert ns.exists(ns.built("second")[-1]), out
    assert "while another live session runs" in out

    (pytester.path / "second-go").touch()
    code, out = _finish(second)
    assert code == 0, out
    # The last one out took what the group made, the first's deferred work included.
    assert not ns.exists(ns.built("first_early")[-1]), out
    assert not ns.exists(ns.built("first_late")[-1]), out
    assert not ns.exists(ns.built("second")[-1]), out
    assert list((pytester.path / "shared.lock.sessions").glob("*.json")) == []


def test_a_session_killed_with_sigkill_is_swept_by_the_next(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    before = ns.build("before")
    write_tests(
        pytester,
        """
        import os, signal

        def test_build_then_die():
            make("orphan")
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    killed = run(pytester, ns.scope)
    assert killed.ret == -signal.SIGKILL
    assert ns.exists(ns.built("orphan")[-1])

    write_tests(pytester, "def test_nothing():\n    pass\n")
    report = pytester.path / "report.json"
    result = run(pytester, ns.scope, f"--prune-images-report={report}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*pruned what the session of pid * left when it died before its prune: deleted*"]
    )
    assert not ns.exists(ns.built("orphan")[-1])
    assert all(ns.exists(i) for i in before)
    (swept,) = json.loads(report.read_text())["sessions"]
    assert swept["state"] == "died"
    assert ns.built("orphan")[-1] in {r.get("Deleted") for r in swept["ImagesDeleted"]}


def test_sigint_during_the_tests_still_prunes(pytester: pytest.Pytester, ns: Namespace) -> None:
    # A background job (as CI may start this suite) inherits SIGINT ignored, and Python
    # keeps it so: the session takes Ctrl-C as a terminal would give it.
    pytester.makeconftest(
        "import signal\n\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    )
    pytester.makepyfile(
        test_wait="from inner import make\nfrom pathlib import Path\nimport time\n\n"
        "def test_build_and_wait():\n"
        '    make("interrupted")\n'
        '    Path("ready").touch()\n'
        "    time.sleep(120)\n"
    )
    session = _session(pytester, ns.scope, f"--prune-images-lock={pytester.path / 'l.lock'}")
    _wait_for(pytester.path / "ready")
    session.send_signal(signal.SIGINT)
    code, out = _finish(session)
    assert code == pytest.ExitCode.INTERRUPTED, out
    assert "imageprune: deleted" in out
    assert not ns.exists(ns.built("interrupted")[-1])


# -- the engine dies during a prune ----------------------------------------------------------
def _many_images_archive(count: int, label: str) -> bytes:
    """``count`` untagged images sharing one tiny layer: loaded in seconds."""
    layer = layer_tar({"f": b"x"})
    return image_archive([(None, {"itest": label, "n": str(n)}, [layer]) for n in range(count)])


@pytest.fixture
def dying_engine() -> Iterator[PrivateDockerd]:
    """A private dockerd that this test may kill and restart."""
    with private_dockerd() as daemon:
        yield daemon


@pytest.mark.private_engine
def test_the_engine_dying_mid_prune_keeps_the_verdict_and_the_next_session_finishes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, dying_engine: PrivateDockerd
) -> None:
    count = 1500
    label = "dying"
    archive = pytester.path / "images.tar"
    archive.write_bytes(_many_images_archive(count, label))
    monkeypatch.setenv("DOCKER_HOST", dying_engine.socket)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makepyfile(
        test_load=textwrap.dedent(
            f"""
            from pathlib import Path
            from tests.support import connect

            def test_load():
                client = connect()
                for _ in client.load_image(Path({str(archive)!r}).read_bytes()):
                    pass
                client.close()
                Path("loaded").touch()
            """
        )
    )
    lock = f"--prune-images-lock={pytester.path / 'l.lock'}"
    scope = f"--prune-images=label=itest={label}"
    session = _session(pytester, scope, lock, "test_load.py")
    _wait_for(pytester.path / "loaded")
    watcher = connect(dying_engine.socket)
    try:
        deadline = time.monotonic() + 120
        while len(watcher.images(filters={"label": f"itest={label}"})) > count - 100:
            assert time.monotonic() < deadline, "the prune never started"
            time.sleep(0.02)
    finally:
        watcher.close()
    dying_engine.kill()
    code, out = _finish(session)
    assert code == 0, out
    assert "Traceback" not in out
    assert "INTERNALERROR" not in out
    assert "stopped answering during the prune" in out, out

    dying_engine.start()
    pytester.makepyfile(test_next="def test_next():\n    pass\n")
    code, out = _finish(_session(pytester, scope, lock, "test_next.py"))
    assert code == 0, out
    assert "left for the next prune" in out, out
    client = connect(dying_engine.socket)
    try:
        assert client.images(all=True, filters={"label": f"itest={label}"}) == []
    finally:
        client.close()


@pytest.mark.private_engine
def test_a_sweep_after_the_engine_restarted_takes_nothing_only_created_speaks_for(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, dying_engine: PrivateDockerd
) -> None:
    """A session dies; an image made elsewhere while it lived is loaded; the engine
    restarts, and its event log, the load in it, is gone. The image's ``Created`` lies in
    the session's lifetime and Docker 20.10 stamps no ``LastTagTime`` on a load: only the
    engine's start time tells that the log cannot speak for the time after the death, so
    the image stays."""
    label = "restarted"
    monkeypatch.setenv("DOCKER_HOST", dying_engine.socket)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makepyfile(
        test_die=textwrap.dedent(
            f"""
            import os, signal
            from pathlib import Path
            from tests.support import build, connect

            def test_build_then_die():
                ids = build(connect(), ["COPY f /f"], files={{"f": b"orphan"}},
                            labels={{"itest": {label!r}}})
                Path("orphan").write_text(ids[-1])
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    scope = f"--prune-images=label=itest={label}"
    lock = f"--prune-images-lock={pytester.path / 'l.lock'}"
    code, out = _finish(_session(pytester, scope, lock, "test_die.py"))
    assert code == -signal.SIGKILL, out
    orphan = (pytester.path / "orphan").read_text()
    time.sleep(3)  # more than the 2 s window after the last heartbeat
    client = connect(dying_engine.socket)
    then = client.inspect_image(orphan)["Created"]  # type: ignore[no-untyped-call]
    made_meanwhile = image_archive(
        [(None, {"itest": label, "n": "1"}, [layer_tar({"g": b"loaded"})])], created=then
    )
    for _ in client.load_image(made_meanwhile):  # type: ignore[no-untyped-call]
        pass
    client.close()
    dying_engine.stop()
    dying_engine.start()
    client = connect(dying_engine.socket)
    try:
        (loaded,) = [
            i["Id"] for i in client.images(filters={"label": f"itest={label}"}) if i["Id"] != orphan
        ]
        pytester.makepyfile(test_next="def test_next():\n    pass\n")
        code, out = _finish(_session(pytester, scope, lock, "test_next.py"))
        assert code == 0, out
        assert client.inspect_image(loaded)["Id"] == loaded, out  # type: ignore[no-untyped-call]
        assert "cannot be shown to have left" in out, out
    finally:
        client.close()


def test_registry_files_are_removed_by_a_clean_session(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    write_tests(pytester, 'def test_build():\n    make("a")\n')
    result = run(pytester, ns.scope)
    assert result.ret == 0
    assert os.listdir(pytester.path / "prune.lock.sessions") == []


@pytest.fixture
def second_engine() -> Iterator[PrivateDockerd]:
    """Another private dockerd on this host: on Docker 20.10 it reports the same ID as any
    other (``/etc/docker/key.json``); from Docker 25 on each data root has its own."""
    with private_dockerd() as daemon:
        yield daemon


@pytest.mark.private_engine
def test_a_session_killed_on_one_engine_is_never_swept_on_another(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    dying_engine: PrivateDockerd,
    second_engine: PrivateDockerd,
) -> None:
    """Issue 20's probe: two dockerds on one host reported one ID and met in one place; a
    session killed on engine 2 was swept by the next session on engine 1, which deleted
    engine 1's image ``z``, older than the sweeping session. Here both are given one lock
    (so they meet whatever their IDs): the record of engine 2 is never acted on from
    engine 1, and the next session on engine 2 sweeps it."""
    label = "two-engines"
    one, two = dying_engine, second_engine
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makepyfile(
        test_die=textwrap.dedent(
            f"""
            import os, signal, time
            from pathlib import Path
            from tests.support import build, connect

            def test_build_then_die():
                ids = build(connect(), ["COPY f /f"], files={{"f": b"orphan"}},
                            labels={{"itest": {label!r}}})
                Path("orphan").write_text(ids[-1])
                deadline = time.monotonic() + 120
                while not Path("z-made").exists():
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        ),
        test_next="def test_next():\n    pass\n",
    )
    scope = f"--prune-images=label=itest={label}"
    lock = f"--prune-images-lock={pytester.path / 'shared.lock'}"
    monkeypatch.setenv("DOCKER_HOST", two.socket)
    killed = _session(pytester, scope, lock, "test_die.py")
    _wait_for(pytester.path / "orphan", process=killed)
    client_one, client_two = connect(one.socket), connect(two.socket)
    try:
        # Another client's image on engine 1, made while the session on engine 2 lived.
        z = build(client_one, ["COPY f /f"], files={"f": b"z"}, labels={"itest": label})[-1]
        (pytester.path / "z-made").touch()
        code, out = _finish(killed)
        assert code == -signal.SIGKILL, out
        orphan = (pytester.path / "orphan").read_text()

        monkeypatch.setenv("DOCKER_HOST", one.socket)
        code, out = _finish(_session(pytester, scope, lock, "test_next.py"))
        assert code == 0, out
        assert client_one.inspect_image(z)["Id"] == z, out  # type: ignore[no-untyped-call]
        assert "left when it died" not in out, out

        monkeypatch.setenv("DOCKER_HOST", two.socket)
        code, out = _finish(_session(pytester, scope, lock, "test_next.py"))
        assert code == 0, out
        assert "left when it died before its prune" in out, out
        with pytest.raises(docker.errors.NotFound):
            client_two.inspect_image(orphan)  # type: ignore[no-untyped-call]
        assert client_one.inspect_image(z)["Id"] == z  # type: ignore[no-untyped-call]
    finally:
        client_one.close()
        client_two.close()
