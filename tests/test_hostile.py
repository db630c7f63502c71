"""The findings of issue 13, replayed as other users would: real accounts, a fresh /tmp.

Each test runs pytest sessions in a private mount namespace whose ``/tmp`` is an empty
tmpfs (as after a reboot), as root or as throwaway accounts: one outside the engine's
group (``outsider``), two in it (``alice``, ``bob``). The engine is the host's dockerd on
its default socket; every image carries the test's own label, removed afterwards. Each
test names the finding it covers. Root is needed (CI runs as root); elsewhere they skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pytest_imageprune.coordination.place import shared_folders
from tests.hostile import SOCKET_PROXY, FreshTmp, Users, engine_group, fresh_tmp, need_root_tools
from tests.support import connect, engine_missing, image_archive, layer_tar
from tests.test_plugin_engine import INNER, Namespace

pytestmark = pytest.mark.engine

SOCKET = "/var/run/docker.sock"
WAIT_FOR = textwrap.dedent(
    """
    from pathlib import Path
    import time

    def wait_for(name, timeout=120):
        deadline = time.monotonic() + timeout
        while not Path(name).exists():
            assert time.monotonic() < deadline, f"gave up waiting for {name}"
            time.sleep(0.05)
    """
)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.APIClient]:
    need_root_tools()
    try:
        api = connect(f"unix://{SOCKET}")
        api.ping()
    except Exception as exc:
        engine_missing(f"no Docker engine answers at {SOCKET}: {exc}")
    yield api
    api.close()


@pytest.fixture(scope="module")
def users(client: docker.APIClient) -> Iterator[Users]:
    accounts = Users(engine_group(SOCKET))
    try:
        accounts.make()
        yield accounts
    finally:
        accounts.remove()


@pytest.fixture
def label(client: docker.APIClient, tmp_path: Path) -> Iterator[Namespace]:
    out = tmp_path / "built"
    out.mkdir()
    namespace = Namespace(client, out)
    yield namespace
    namespace.cleanup()


@pytest.fixture
def ns(client: docker.APIClient) -> Iterator[FreshTmp]:
    with fresh_tmp() as namespace:
        namespace.sh("mkdir -m 0755 /tmp/work")
        yield namespace


#: A test that builds "mine", says "ready", waits for "go", then uses its image.
WAIT_AND_KEEP = """
from tests.support import connect

def test_build_and_keep_using():
    image = make("mine")[-1]
    Path("ready").touch()
    wait_for("go")
    connect().inspect_image(image)  # ImageNotFound if another session took it
"""


class Project:
    """A folder of tests in the namespace, owned by the account that runs them."""

    def __init__(
        self,
        ns: FreshTmp,
        label: Namespace,
        user: str | None,
        tag: str,
        base: str = "/tmp/work",
        *,
        groups: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.ns, self.label, self.user = ns, label, user
        self.groups, self.extra = groups, env or {}
        self.inside = f"{base}/{tag}"
        self.outside = ns.path(self.inside)
        (self.outside / "built").mkdir(parents=True)
        (self.outside / "inner.py").write_text(INNER)
        if user is not None:
            ns.sh(f"chown -R {user}: {self.inside}")

    def write(self, body: str, name: str = "test_session.py") -> None:
        header = "from inner import make\n" + WAIT_FOR
        (self.outside / name).write_text(header + textwrap.dedent(body))
        if self.user is not None:
            self.ns.sh(f"chown {self.user}: {self.inside}/{name}")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]

    def env(self) -> dict[str, str]:
        return {"IMAGEPRUNE_TEST_NS": self.label.name, "IMAGEPRUNE_TEST_OUT": "built", **self.extra}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.ns.run(
            self.argv(*args),
            user=self.user,
            cwd=self.inside,
            env=self.env(),
            groups=self.groups,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return self.ns.popen(
            self.argv(*args), user=self.user, cwd=self.inside, env=self.env(), groups=self.groups
        )

    def built(self, name: str) -> str:
        ids: list[str] = json.loads((self.outside / "built" / f"{name}.json").read_text())
        return ids[-1]

    def wait_for(self, name: str, running: subprocess.Popen[str], timeout: float = 120) -> None:
        """Until the session ``running`` makes ``name``; fails with its output if it ends."""
        deadline = time.monotonic() + timeout
        while not (self.outside / name).exists():
            if running.poll() is not None:
                out = running.stdout.read() if running.stdout else ""
                pytest.fail(f"the session ended ({running.returncode}) before {name}: {out}")
            assert time.monotonic() < deadline, f"gave up waiting for {name}"
            time.sleep(0.05)


def _engine_key(client: docker.APIClient) -> str:
    """What names the engine's meeting place: its ID (``coordination.place.meeting_place``
    drops the data root of the engine's key, as older versions never had it)."""
    return str(client.info()["ID"])


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def _old_default_registry() -> str:
    """Where the earlier versions met: ``/tmp/pytest-imageprune/<hash>.lock.sessions``."""
    endpoint = "unix://" + os.path.realpath(SOCKET)
    return f"/tmp/pytest-imageprune/{hashlib.sha256(endpoint.encode()).hexdigest()[:16]}.lock"


def _evil_record(label: Namespace, record_id: str, **changes: object) -> dict[str, object]:
    """A record that, believed, deletes every unused image of the label (finding 1)."""
    now = time.time_ns()
    data: dict[str, object] = {
        "id": record_id,
        "pid": 1,
        "host": "",
        "started_ns": now - 10**9,
        "heartbeat_ns": now - 10**9,
        "state": "deferred",
        "finished_ns": now + 10**18,
        "filters": {"label": [f"itest={label.name}"], "dangling": ["false"]},
        "scope": "all",
        "baseline": {"taken_ns": 0, "tags": {}},
    }
    data.update(changes)
    return data


def _stage(ns: FreshTmp, name: str, data: object) -> str:
    """A file anyone may read in the namespace, for another account to copy."""
    path = f"/tmp/{name}"
    ns.path(path).write_text(json.dumps(data))
    os.chmod(ns.path(path), 0o644)
    return path


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file below ``folder``: its mode, owner and content (to show none changed)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        found[str(path.relative_to(folder))] = (st.st_mode, st.st_uid, content)
    return found


# -- 1. an account without engine access cannot make root delete more -----------------------
def test_finding_1_no_outsider_can_make_a_session_delete_more(
    client: docker.APIClient, ns: FreshTmp, users: Users, label: Namespace
) -> None:
    before = label.build("before", tag=f"{label.name}-before:1")[-1]
    record_id = "0123456789abcdef0123456789abcdef"
    staged = _stage(ns, "evil.json", _evil_record(label, record_id))
    # Where the earlier versions met, and the first name this version would take: the
    # outsider cannot know that one (it is named after the engine's ID), but plays one who
    # does, and plants a record, a lock and an .alive in both, all 0666 in 0777 folders.
    squatted = shared_folders(_engine_key(client))[0]
    old = _old_default_registry()
    ns.sh(
        f"""
        for d in {old}.sessions {squatted}/prune.lock.sessions; do
            mkdir -p -m 0777 "$d"; chmod 0777 "$(dirname "$d")"
            cp {staged} "$d/{record_id}.json"; touch "$d/{record_id}.alive"
            chmod 0666 "$d/{record_id}.json" "$d/{record_id}.alive"
        done
        touch {old} {squatted}/prune.lock; chmod 0666 {old} {squatted}/prune.lock
        """,
        user=users.outsider,
    )
    planted = {p: _snapshot(ns.path(p)) for p in (old.rsplit("/", 1)[0], str(squatted))}

    project = Project(ns, label, None, "root")
    project.write('def test_build():\n    make("own")\n')
    done = project.run(label.scope, "--prune-images=dangling=false")
    out = _out(done)
    assert done.returncode == 0, out
    assert label.exists(before), out  # tagged, from before the session: never the session's
    assert not label.exists(project.built("own")), out
    assert f"WARNING {squatted} is not safe to use (owned by {users.outsider}" in out, out
    assert "pruned what" not in out
    assert "already running" not in out
    for path, files in planted.items():
        assert _snapshot(ns.path(path)) == files, f"{path} was touched"


# -- 2. a record's id is never a path ---------------------------------------------------------
def _shared_lock(ns: FreshTmp, users: Users) -> str:
    """``/tmp/shared``, root's and the engine group's (2770), where bob made the registry."""
    group = engine_group(SOCKET)
    ns.sh(f"mkdir -m 2770 /tmp/shared && chgrp {group} /tmp/shared")
    ns.sh(
        "mkdir /tmp/shared/prune.lock.sessions && chmod 2770 /tmp/shared/prune.lock.sessions",
        user=users.bob,
    )
    return "/tmp/shared/prune.lock"


def _victim(ns: FreshTmp) -> Path:
    """Root's files, which no record may name: ``/tmp/victim`` (0700)."""
    ns.sh(
        "mkdir -m 0700 /tmp/victim && cd /tmp/victim && for f in x.json x.alive secret; do"
        ' echo "keep me" > $f; chmod 0600 $f; done'
    )
    return ns.path("/tmp/victim")


def test_finding_2_a_record_id_is_never_a_path(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    lock = _shared_lock(ns, users)
    victim = _victim(ns)
    before = _snapshot(victim)
    ids = ["../../victim/x", "/tmp/victim/x"]
    for n, record_id in enumerate(ids):
        data = _evil_record(label, record_id, state="running", finished_ns=None)
        staged = _stage(ns, f"path{n}.json", data)
        ns.sh(f"cp {staged} /tmp/shared/prune.lock.sessions/{n:032x}.json", user=users.bob)

    project = Project(ns, label, None, "root")
    project.write('def test_build():\n    make("own")\n')
    done = project.run(label.scope, f"--prune-images-lock={lock}")
    out = _out(done)
    assert done.returncode == 0, out
    assert _snapshot(victim) == before, out
    assert not label.exists(project.built("own")), out
    assert out.count("in the session registry: id is not 32 lowercase hex digits") == 2, out


# -- 3. symlinks: never followed, at the lock or in the registry ------------------------------
def test_finding_3_a_symlink_is_never_followed(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    lock = _shared_lock(ns, users)
    victim = _victim(ns)
    before = _snapshot(victim)
    dead = _evil_record(label, "f" * 32, state="running", finished_ns=None)
    staged = _stage(ns, "dead.json", dead)
    ns.sh(
        f"""
        cd /tmp/shared
        ln -s /tmp/victim/secret prune.lock
        ln -s /tmp/victim/x.json prune.lock.sessions/{"e" * 32}.json
        cp {staged} prune.lock.sessions/{"f" * 32}.json
        ln -s /tmp/victim/x.alive prune.lock.sessions/{"f" * 32}.alive
        """,
        user=users.bob,
    )
    project = Project(ns, label, None, "root")
    project.write('def test_build():\n    make("own")\n')
    done = project.run(label.scope, f"--prune-images-lock={lock}")
    out = _out(done)
    assert done.returncode == 0, out
    assert _snapshot(victim) == before, out
    assert f"WARNING cannot use the prune lock {lock}" in out, out
    assert "nothing deleted" in out, out
    assert label.exists(project.built("own")), out

    # With a real lock, the session prunes; the symlinks in the registry are skipped.
    ns.sh("rm /tmp/shared/prune.lock", user=users.bob)
    done = project.run(label.scope, f"--prune-images-lock={lock}")
    out = _out(done)
    assert done.returncode == 0, out
    assert not label.exists(project.built("own")), out
    assert f"skipped {'e' * 32}.json in the session registry: a symlink" in out, out
    assert f"skipped {'f' * 32}.json in the session registry: its .alive file" in out, out
    assert _snapshot(victim) == before, out
    assert stat.S_IMODE(ns.path(lock).stat().st_mode) == 0o660


# -- 4. no outsider can hold the lock or an .alive file -----------------------------------------
def test_finding_4_no_outsider_can_stop_a_prune_by_holding_a_lock(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    old = _old_default_registry()
    holder = ns.popen(
        [
            "sh",
            "-c",
            f"mkdir -p -m 0777 {old.rsplit('/', 1)[0]}; touch {old}; chmod 0666 {old};"
            f" exec flock -n {old} sleep 600",
        ],
        user=users.outsider,
    )
    try:
        alice = Project(ns, label, users.alice, "alice")
        alice.write(
            'def test_build():\n    make("alice")\n    Path("ready").touch()\n    wait_for("go")\n'
        )
        running = alice.start(label.scope)
        alice.wait_for("ready", running)
        root = Project(ns, label, None, "root")
        root.write('def test_build():\n    make("own")\n')
        done = root.run(label.scope)
        out = _out(done)
        assert done.returncode == 0, out
        assert "already running" not in out, out
        # It pruned, keeping what alice's live session may have built: its own image too.
        assert "while another live session runs" in out, out
        assert label.exists(alice.built("alice")), out

        # The outsider sees the meeting place's name in /tmp, and can open nothing in it.
        tried = ns.run(
            [
                "sh",
                "-c",
                "for f in /tmp/pytest-imageprune-*/* /tmp/pytest-imageprune-*/*/*; do"
                ' flock -n "$f" true && echo "locked $f"; done; ls /tmp/pytest-imageprune-*/',
            ],
            user=users.outsider,
        )
        assert "locked" not in tried.stdout, tried.stdout
        assert "Permission denied" in tried.stderr, tried.stderr
        (alice.outside / "go").touch()
        code = running.wait(120)
        out = running.stdout.read() if running.stdout else ""
        assert code == 0, out
        assert "already running" not in out, out
        assert not label.exists(alice.built("alice")), out  # the last one out prunes both
        assert not label.exists(root.built("own")), out
    finally:
        holder.kill()
        holder.wait()


# -- 5. two accounts of the engine's group share one registry ------------------------------------
def test_finding_5_every_engine_user_is_protected(
    client: docker.APIClient, ns: FreshTmp, users: Users, label: Namespace
) -> None:
    alice = Project(ns, label, users.alice, "alice")
    alice.write(
        """
        from tests.support import connect

        def test_build_and_keep_using():
            image = make("alice")[-1]
            Path("ready").touch()
            wait_for("bob-done")
            connect().inspect_image(image)  # ImageNotFound if bob's session took it
        """
    )
    running = alice.start(label.scope)
    try:
        alice.wait_for("ready", running)
        bob = Project(ns, label, users.bob, "bob")
        bob.write('def test_build():\n    make("bob")\n')
        done = bob.run(label.scope)
        out = _out(done)
        assert done.returncode == 0, out
        assert "while another live session runs" in out, out
        assert "registry unavailable" not in out, out
        assert label.exists(alice.built("alice")), out
        assert label.exists(bob.built("bob")), out  # alice's, for all bob can tell

        # One registry for the engine, the group's: 2770, files 0660.
        (folder,) = (f for f in shared_folders(_engine_key(client)) if ns.path(str(f)).exists())
        registry = ns.path(f"{folder}/prune.lock.sessions")
        for path in (ns.path(str(folder)), registry):
            st = path.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, os.stat(SOCKET).st_gid)
        alive = list(registry.glob("*.alive"))  # alice's, and bob's deferred one
        assert [stat.S_IMODE(a.stat().st_mode) for a in alive] == [0o660] * len(alive)
        # Finding 8: alice's heartbeat touches her .alive every second.
        first = max(a.stat().st_mtime_ns for a in alive)
        time.sleep(1.5)
        assert max(a.stat().st_mtime_ns for a in alive) > first
    finally:
        (alice.outside / "bob-done").touch()
        code = running.wait(120)
    out = running.stdout.read() if running.stdout else ""
    assert code == 0, out
    assert not label.exists(alice.built("alice")), out
    assert not label.exists(bob.built("bob")), out  # the last one out prunes both
    assert list(registry.glob("*.json")) == [], out  # bob's deferred record was swept


# -- 6. one bad file stops nothing, hangs nothing ----------------------------------------------
def test_finding_6_bad_records_and_fifos_stop_and_hang_nothing(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    lock = _shared_lock(ns, users)
    # Bob's session dies (SIGKILL) after building: it is owed a sweep.
    bob = Project(ns, label, users.bob, "bob")
    bob.write(
        'import os, signal\n\ndef test_die():\n    make("dead")\n'
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = bob.run(label.scope, f"--prune-images-lock={lock}")
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), _out(killed)
    # Bad files sorted before bob's record, where the earlier code stopped at them.
    shapes: list[dict[str, object]] = [{"filters": []}, {"finished_ns": "x"}]
    for n, changes in enumerate(shapes):
        data = _evil_record(label, f"{n:032x}", **changes)
        staged = _stage(ns, f"bad{n}.json", data)
        ns.sh(f"cp {staged} /tmp/shared/prune.lock.sessions/{n:032x}.json", user=users.bob)
    ns.sh(f"mkfifo /tmp/shared/prune.lock.sessions/{9:032x}.json", user=users.bob)

    root = Project(ns, label, None, "root")
    root.write('def test_build():\n    make("own")\n')
    ns.sh(f"mkfifo {root.inside}/report.json")
    try:
        done = root.run(
            label.scope,
            f"--prune-images-lock={lock}",
            "--prune-images-report=report.json",
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the session hung at its end")
    out = _out(done)
    assert done.returncode == 0, out
    assert not label.exists(root.built("own")), out
    assert not label.exists(bob.built("dead")), out
    assert "left when it died before its prune" in out, out
    assert out.count("in the session registry") == 3, out
    assert "could not write the report" in out, out
    assert "(a FIFO)" in out, out


# -- 7. a lock that cannot be opened is named, not "already running" ---------------------------
def test_finding_7_a_lock_that_cannot_be_opened_is_named(ns: FreshTmp, label: Namespace) -> None:
    root = Project(ns, label, None, "root")
    root.write('def test_build():\n    make("own")\n')
    done = root.run(label.scope, "--prune-images-lock=/proc/x.lock")
    out = _out(done)
    assert done.returncode == 0, out
    assert "already running" not in out, out
    assert "/proc/x.lock" in out, out
    assert "nothing deleted" in out, out
    assert label.exists(root.built("own"))


# -- 8. a full disk does not stop the heartbeat ---------------------------------------------------
def test_finding_8_the_heartbeat_goes_on_when_the_disk_is_full(
    users: Users, label: Namespace
) -> None:
    with fresh_tmp("mode=1777,size=8m") as ns:
        ns.sh("mkdir -m 0755 /tmp/work")
        alice = Project(ns, label, users.alice, "alice")
        alice.write(
            'def test_build():\n    make("alice")\n    Path("ready").touch()\n    wait_for("go")\n'
        )
        running = alice.start(label.scope)
        try:
            alice.wait_for("ready", running)
            ns.sh("dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null || true")

            def last_beat() -> int:  # the newest change in the registry: its heartbeat
                files = ns.path("/tmp").glob("**/*.sessions/*")
                return max(f.stat().st_mtime_ns for f in files)

            first = last_beat()
            time.sleep(2)
            assert last_beat() > first, "no heartbeat for 2 s on a full disk"
            ns.sh("rm /tmp/fill")
        finally:
            (alice.outside / "go").touch()
            code = running.wait(120)
        out = running.stdout.read() if running.stdout else ""
        assert code == 0, out
        assert "heartbeat failed" not in out, out
        assert not label.exists(alice.built("alice")), out


# -- 9. a sweep takes only what it can show the dead session left --------------------------------
def test_finding_9_a_sweep_never_takes_what_arrived_after_the_death(
    client: docker.APIClient, ns: FreshTmp, label: Namespace
) -> None:
    root = Project(ns, label, None, "root")
    root.write(
        'import os, signal\n\ndef test_die():\n    make("orphan")\n'
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = root.run(label.scope, "--prune-images=dangling=false")
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), _out(killed)
    time.sleep(3)  # more than the 2 s window after the last heartbeat
    late = label.build("late")[-1]
    archive = image_archive(
        [
            (None, {"itest": label.name, "n": "1"}, [layer_tar({"f": label.name.encode()})]),
            (f"{label.name}-loaded:1", {"itest": label.name}, [layer_tar({"g": b"2"})]),
        ]
    )
    # And one that says it was made while the session lived (built elsewhere then, saved,
    # and loaded here after the death): Docker 20.10 stamps no LastTagTime on a load, so
    # only the engine's events tell that it came late.
    then = client.inspect_image(root.built("orphan"))["Created"]  # type: ignore[no-untyped-call]
    made_meanwhile = image_archive(
        [(None, {"itest": label.name, "n": "3"}, [layer_tar({"h": label.name.encode()})])],
        created=then,
    )
    for piece in (archive, made_meanwhile):
        for _ in client.load_image(piece):  # type: ignore[no-untyped-call]
            pass
    heads = [i["Id"] for i in client.images(filters={"label": f"itest={label.name}"})]
    loaded = [i for i in heads if i not in (late, root.built("orphan"))]
    assert len(loaded) == 3

    root.write("def test_nothing():\n    pass\n")
    done = root.run(label.scope, "--prune-images=dangling=false", "--prune-images-report=r.json")
    out = _out(done)
    assert done.returncode == 0, out
    assert "left when it died before its prune" in out, out
    assert not label.exists(root.built("orphan")), out
    assert label.exists(late), out
    assert all(label.exists(i) for i in loaded), out
    assert "cannot be shown to have left" in out, out
    (swept,) = json.loads((root.outside / "r.json").read_text())["sessions"]
    assert {late, *loaded} <= {k["Id"] for k in swept["kept"]}


# -- and what the probe of the fix found ------------------------------------------------------
def test_a_live_session_whose_record_cannot_be_read_is_protected(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    """Alice's clocks run 120 s ahead, the boot clock too (a record of another version or
    host whose times are ahead, which no step of this host's clock explains): her record
    fails the checks, but her session runs, so root's prune keeps her image. (Her wall
    clock alone ahead reads as a step, which her record's clock shows: it passes.)"""
    root = Project(ns, label, None, "root")
    root.write('def test_wait():\n    Path("ready").touch()\n    wait_for("go")\n')
    first = root.start(label.scope)
    root.wait_for("ready", first)
    alice = Project(ns, label, users.alice, "alice")
    (alice.outside / "conftest.py").write_text(
        "import time\n_real = time.time_ns\ntime.time_ns = lambda: _real() + 120 * 10**9\n"
        "_boot = time.clock_gettime_ns\n"
        "time.clock_gettime_ns = lambda which: _boot(which) + 120 * 10**9\n"
    )
    alice.write(WAIT_AND_KEEP)
    running = alice.start(label.scope)
    try:
        alice.wait_for("ready", running)
        (root.outside / "go").touch()
        assert first.wait(120) == 0
        out = first.stdout.read() if first.stdout else ""
        assert "started_ns is out of range; its session is running" in out, out
        assert "while another live session runs" in out, out
        assert label.exists(alice.built("mine")), out
    finally:
        (alice.outside / "go").touch()
        code = running.wait(120)
    out = running.stdout.read() if running.stdout else ""
    assert code == 0, out


def test_a_session_that_could_not_register_is_protected(users: Users, label: Namespace) -> None:
    """An outsider fills /tmp as root's session starts: root cannot write its record, but
    it holds its .alive lock, so alice's prune keeps its image, and root still prunes at
    its end: filling /tmp stops no prune."""
    with fresh_tmp("mode=1777,size=8m") as ns:
        ns.sh("mkdir -p /mnt/work && mount -t tmpfs -o mode=0755 tmpfs /mnt/work")
        alice = Project(ns, label, users.alice, "alice", base="/mnt/work")
        alice.write('def test_wait():\n    Path("ready").touch()\n    wait_for("go")\n')
        first = alice.start(label.scope)
        alice.wait_for("ready", first)
        fill = "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null || true"
        ns.sh(fill, user=users.outsider)
        root = Project(ns, label, None, "root", base="/mnt/work")
        root.write(WAIT_AND_KEEP)
        running = root.start(label.scope)
        try:
            root.wait_for("ready", running)
            ns.sh("rm -f /tmp/fill", user=users.outsider)
            (alice.outside / "go").touch()
            assert first.wait(120) == 0
            out = first.stdout.read() if first.stdout else ""
            assert "held by a session with no record" in out, out
            assert label.exists(root.built("mine")), out
        finally:
            (root.outside / "go").touch()
            code = running.wait(120)
        out = running.stdout.read() if running.stdout else ""
        assert code == 0, out
        assert "could not write this session's record" in out, out
        assert "held by a session with no record" not in out, out  # its own: not another's
        assert not label.exists(root.built("mine")), out


def test_a_dead_session_whose_child_lives_on_is_swept(ns: FreshTmp, label: Namespace) -> None:
    """The tests forked a helper (a server, a pool worker) that outlives the SIGKILLed
    session: the helper does not keep the session's .alive lock, so the next session finds
    it dead and sweeps it."""
    root = Project(ns, label, None, "root")
    root.write(
        """
        import os, signal, time

        def test_die_leaving_a_helper():
            make("orphan")
            helper = os.fork()
            if helper == 0:
                os.setsid()
                null = os.open("/dev/null", os.O_RDWR)
                for n in (0, 1, 2):
                    os.dup2(null, n)
                time.sleep(60)
                os._exit(0)
            Path("helper").write_text(str(helper))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    # Its output to a file: the helper keeps the pipes pytest's capture holds open.
    with open(root.outside / "out.log", "w") as log:
        argv = root.ns.command(root.argv(label.scope), cwd=root.inside, env=root.env())
        code = subprocess.Popen(argv, stdout=log, stderr=log).wait(120)
    assert code in (-signal.SIGKILL, 128 + signal.SIGKILL), (root.outside / "out.log").read_text()
    helper = int((root.outside / "helper").read_text())
    os.kill(helper, 0)  # it lives on (ProcessLookupError if not)
    root.write('def test_build():\n    make("own")\n')
    done = root.run(label.scope)
    out = _out(done)
    assert done.returncode == 0, out
    assert "another live session" not in out, out
    assert "left when it died before its prune" in out, out
    assert not label.exists(root.built("orphan")), out
    assert not label.exists(root.built("own")), out


# -- the probe of the fix: engine users /etc/group does not list, or no group at all ------------
def _outlives(
    ns: FreshTmp, label: Namespace, user: Project, env: dict[str, str] | None = None
) -> None:
    """Root's session ends while ``user``'s live one holds an image: it stays, and
    ``user``'s session prunes it at its own end."""
    root = Project(ns, label, None, "root", env=env)
    root.write('def test_wait():\n    Path("ready").touch()\n    wait_for("go")\n')
    first = root.start(label.scope)
    try:
        root.wait_for("ready", first)  # root made the meeting place: the user joins it
        user.write(WAIT_AND_KEEP)
        running = user.start(label.scope)
        try:
            user.wait_for("ready", running)
            (root.outside / "go").touch()
            first.wait(120)
            out = first.stdout.read() if first.stdout else ""
            assert first.returncode == 0, out
            assert "in the session registry" not in out, out  # not skipped as untrusted
            assert "while another live session runs" in out, out
            assert label.exists(user.built("mine")), out
        finally:
            (user.outside / "go").touch()
            code = running.wait(120)
        out = running.stdout.read() if running.stdout else ""
        assert code == 0, out
        assert "not safe to use" not in out, out
        assert not label.exists(user.built("mine")), out
    finally:
        (root.outside / "go").touch()
        first.wait(120)


def test_an_engine_user_by_a_supplementary_group_is_protected(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    """F4: the engine's group only in the process (runuser -G, SupplementaryGroups=, LDAP
    groups without member lists), not in /etc/group."""
    carol = Project(ns, label, users.outsider, "carol", groups=(users.group,))
    _outlives(ns, label, carol)


def test_with_a_socket_anyone_may_use_every_user_is_protected(
    ns: FreshTmp, users: Users, label: Namespace
) -> None:
    """F3: a socket of mode 0666 (a proxy in front of the engine: the real one untouched)
    makes every local user an engine user, and every one takes part."""
    proxy = ns.popen(
        [sys.executable, "-c", SOCKET_PROXY, "/tmp/pub.sock", SOCKET, "666", users.group]
    )
    try:
        assert proxy.stdout is not None
        assert proxy.stdout.readline().strip() == "ready"
        env = {"DOCKER_HOST": "unix:///tmp/pub.sock"}
        outsider = Project(ns, label, users.outsider, "outsider", env=env)
        _outlives(ns, label, outsider, env=env)
    finally:
        proxy.kill()
        proxy.wait()
