"""Sessions that share the engine and nothing else: each in a mount namespace of its own,
with an empty ``/tmp`` (and an empty cache folder), as two CI jobs in containers on one
host's socket are. Real engines, real processes; they meet only in the engine
(``coordination.in_engine``).

Each session runs as ``unshare -m``: the namespace mounts the host's ``/tmp`` at
``/mnt/oldtmp`` (so the test's own files, the tox environment and a socket under ``/tmp``
stay reachable under that name), then an empty tmpfs on ``/tmp``. Root only (CI runs as
root); elsewhere the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import docker
import pytest

from pytest_imageprune.coordination.in_engine import ROOM
from tests.test_plugin_engine import Namespace, ns
from tests.test_recovery import WAIT_FOR, _finish, _wait_for

pytestmark = pytest.mark.engine

__all__ = ["ns"]  # the fixture, used by name

OLD_TMP = "/mnt/oldtmp"
_ENTER = (
    "mount --make-rprivate / && mount -t tmpfs itest /mnt && mkdir /mnt/oldtmp"
    " && mount --rbind /tmp /mnt/oldtmp && mount -t tmpfs itest /tmp"
    ' && cd "$0" && exec "$@"'
)


@pytest.fixture(autouse=True)
def _namespaces_can_be_had() -> None:
    if os.geteuid() == 0 and shutil.which("unshare"):
        return
    why = "mount namespaces need root and unshare(1)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


def _moved(value: str) -> str:
    """A path, a ``unix://`` address or a list of paths as the namespace sees them."""
    if value.startswith("unix://"):
        return "unix://" + _moved(value.removeprefix("unix://"))
    parts = []
    for part in value.split(os.pathsep):
        under = part == "/tmp" or part.startswith("/tmp/")
        parts.append(OLD_TMP + part.removeprefix("/tmp") if under else part)
    return os.pathsep.join(parts)


def _job(pytester: pytest.Pytester, *args: str, **env: str) -> subprocess.Popen[str]:
    """A pytest session in a mount namespace of its own, with an empty ``/tmp``, meeting
    the others at the engine's default place (no lock path given)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    environ.pop("XDG_RUNTIME_DIR", None)  # a private folder of its own, in its own /tmp
    environ["XDG_CACHE_HOME"] = "/tmp/cache"
    for key, value in environ.items():
        if key != "XDG_CACHE_HOME":
            environ[key] = _moved(value)
    environ.update(env)
    command = [_moved(sys.executable), "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.Popen(
        ["unshare", "-m", "sh", "-c", _ENTER, _moved(str(pytester.path)), *command],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _meeting_volumes(client: docker.APIClient, room: str) -> list[str]:
    """The sessions' volumes in ``room``: not the record of what containers used
    (``budget.record``), which stays by design."""
    volumes = client.volumes(filters={"label": f"{ROOM}={room}"}) or {}
    return [v["Name"] for v in volumes.get("Volumes") or [] if not v["Name"].endswith("-uses")]


def test_jobs_that_share_only_the_engine_protect_each_other_and_the_last_one_out_prunes(
    pytester: pytest.Pytester, ns: Namespace, engine_room: str
) -> None:
    pytester.makepyfile(
        test_short="from inner import make\n"
        + WAIT_FOR
        + textwrap.dedent(
            """
            def test_short():
                Path("short-started").touch()
                wait_for("long-built")
                make("short")
            """
        ),
        test_long="from inner import make\n"
        + WAIT_FOR
        + textwrap.dedent(
            """
            def test_long():
                make("long")
                Path("long-built").touch()
                wait_for("long-go")
            """
        ),
    )
    short = _job(pytester, "test_short.py", ns.scope)
    _wait_for(pytester.path / "short-started", process=short)
    long = _job(pytester, "test_long.py", ns.scope)
    _wait_for(pytester.path / "long-built", process=long)
    code, out = _finish(short)
    assert code == 0, out

    # The long job's image came after the short one started: in the short one's scope. It
    # stays while the long one runs (before, the short one deleted it: "deleted 4 images").
    long_image = ns.built("long")[-1]
    assert ns.exists(long_image), out
    assert ns.exists(ns.built("short")[-1]), out
    assert "while another live session runs" in out
    assert _meeting_volumes(ns.client, engine_room), "the short job's deferred record"

    (pytester.path / "long-go").touch()
    code, out = _finish(long)
    assert code == 0, out
    # The last one out took what both made, the short one's deferred work included.
    assert not ns.exists(long_image), out
    assert not ns.exists(ns.built("short")[-1]), out
    assert _meeting_volumes(ns.client, engine_room) == []  # nothing left of either


def test_a_job_killed_in_its_namespace_is_swept_from_another(
    pytester: pytest.Pytester, ns: Namespace, engine_room: str
) -> None:
    before = ns.build("before")
    pytester.makepyfile(
        test_killed=textwrap.dedent(
            """
            import os, signal
            from inner import make

            def test_build_then_die():
                make("orphan")
                os.kill(os.getpid(), signal.SIGKILL)
            """
        ),
        test_later="def test_nothing():\n    pass\n",
    )
    # A short lease (3 s, renewed every 0.25 s), so that its death is told soon.
    killed = _job(pytester, "test_killed.py", ns.scope, PYTEST_IMAGEPRUNE_ENGINE_LEASE="3")
    code, out = _finish(killed)
    assert code == -signal.SIGKILL, out
    orphan = ns.built("orphan")[-1]
    assert ns.exists(orphan)

    # While its lease could still hold, it is a live session: nothing of it goes.
    code, out = _finish(_job(pytester, "test_later.py", ns.scope))
    assert code == 0, out
    assert ns.exists(orphan), out

    time.sleep(6)  # its lease (3 s, and the rounding of whole seconds) has run out
    code, out = _finish(_job(pytester, "test_later.py", ns.scope))
    assert code == 0, out
    assert "left when it died before its prune" in out
    assert not ns.exists(orphan), out
    assert all(ns.exists(i) for i in before)
    assert _meeting_volumes(ns.client, engine_room) == []


def test_the_meeting_place_is_labelled_for_a_user_to_see(
    pytester: pytest.Pytester, ns: Namespace, engine_room: str
) -> None:
    pytester.makepyfile(
        test_wait=WAIT_FOR + "\ndef test_wait():\n    Path('up').touch()\n    wait_for('go')\n"
    )
    job = _job(pytester, "test_wait.py", ns.scope)
    try:
        _wait_for(pytester.path / "up", process=job)
        names = _meeting_volumes(ns.client, engine_room)
        assert any(n.endswith("-record-0") for n in names), names
        assert any("-lease-" in n for n in names), names
        assert all(n.startswith("pytest-imageprune-") for n in names)
    finally:
        (pytester.path / "go").touch()
        code, out = _finish(job)
    assert code == 0, out
    assert _meeting_volumes(ns.client, engine_room) == []
