"""The trust boundary without an engine: folders, files, symlinks, FIFOs, modes, owners.

Owners other than this user are made with ``chown`` (root only; under ``CI=true`` root is a
given). The suite that runs as real other users on a real engine is test_hostile.py.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_imageprune.coordination.boundary import Boundary, Unsafe
from pytest_imageprune.coordination.place import LockUnusable, PruneLock, meeting_place
from tests.support import IN_CI

NOBODY = 65534


def needs_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true and not root", pytrace=False)
        pytest.skip("needs root (to make files of another owner)")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_private_folder_is_0700_and_a_shared_one_2770_of_the_engine_group(
    tmp_path: Path, umask_022: None
) -> None:
    private = Boundary().make_folder(tmp_path / "private")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    group = os.getegid()
    shared = Boundary(gid=group).make_folder(tmp_path / "shared")
    st = shared.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, group)
    # Files made inside take the folder's group and 0660, whatever the umask.
    fd = Boundary(gid=group).open_file(shared / "f", create=True)
    os.close(fd)
    st = (shared / "f").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group)


def test_the_group_of_a_unix_socket_that_its_group_may_use(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        os.chmod(path, 0o660)
        assert Boundary.of_endpoint(f"unix://{path}").gid == path.stat().st_gid
        os.chmod(path, 0o600)
        assert Boundary.of_endpoint(f"unix://{path}").gid is None
    finally:
        server.close()
    assert Boundary.of_endpoint("tcp://127.0.0.1:2375").gid is None
    assert Boundary.of_endpoint("ssh://me@host").gid is None


def _world_writable_folder(path: Path) -> None:
    path.mkdir()
    os.chmod(path, 0o777)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: os.symlink("/etc", p), id="symlink"),
        pytest.param(lambda p: p.write_text("x"), id="file"),
        pytest.param(_world_writable_folder, id="world-writable"),
        pytest.param(os.mkfifo, id="fifo"),
    ],
)
def test_a_folder_that_fails_is_refused_with_the_path_and_the_fix(
    tmp_path: Path, make: object
) -> None:
    target = tmp_path / "registry"
    make(target)  # type: ignore[operator]
    with pytest.raises(Unsafe) as caught:
        Boundary(gid=12345).make_folder(target)
    assert str(target) in str(caught.value)
    assert caught.value.fix


def test_a_folder_of_a_user_outside_the_boundary_is_refused(tmp_path: Path) -> None:
    needs_root()
    target = tmp_path / "squatted"
    target.mkdir(mode=0o777)
    os.chown(target, NOBODY, NOBODY)
    with pytest.raises(Unsafe, match=r"owned by .*who may not use the engine"):
        Boundary(gid=12345).make_folder(target)
    # A private boundary is this user alone: the owner is not said to lack the engine.
    with pytest.raises(Unsafe, match=r"owned by nobody \(uid 65534\), not by this user or root"):
        Boundary().make_folder(target)
    with pytest.raises(Unsafe):
        Boundary().make_folder(target / "below")  # nor anything below it


def test_symlinks_on_the_way_are_followed_only_when_a_trusted_user_owns_them(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    made = Boundary().make_folder(tmp_path / "link" / "registry")
    assert made == real / "registry"
    if os.geteuid() == 0:
        os.lchown(tmp_path / "link", NOBODY, NOBODY)
        with pytest.raises(Unsafe, match="a symlink owned by"):
            Boundary().make_folder(tmp_path / "link" / "registry")


def test_a_folder_on_the_way_that_others_may_write_is_refused_unless_sticky(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(Unsafe, match="others may write"):
        Boundary().make_folder(shared / "registry")
    os.chmod(shared, 0o1777)  # as /tmp: no one may replace another's entry
    Boundary().make_folder(shared / "registry")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder", "huge", "world-writable"])
def test_a_file_is_opened_only_if_regular_and_trusted_and_never_blocks(
    tmp_path: Path, kind: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "record.json"
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        with path.open("wb") as out:
            out.truncate(1 << 30)  # sparse: a gigabyte that costs nothing
    else:
        path.write_text("{}")
        os.chmod(path, 0o666)
    done = threading.Event()

    def read() -> None:
        with pytest.raises(OSError, match=r"not a regular|not safe|Too many levels|bytes"):
            Boundary().read_file(path, 1 << 20)
        if kind in ("symlink", "fifo", "folder"):
            with pytest.raises(OSError, match=r"not a regular|Too many levels|Is a directory"):
                os.close(Boundary().open_file(path, create=True))
        else:  # a lock file's size does not matter; one of our own with a lax mode is mended
            os.close(Boundary().open_file(path, create=True))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert done.is_set(), "blocked"
    assert victim.read_text() == "keep me"
    assert stat.S_IMODE(victim.stat().st_mode) != 0o666


def test_a_lock_that_cannot_be_opened_is_unusable_not_held(tmp_path: Path) -> None:
    with pytest.raises(LockUnusable, match=re.escape("/proc/x.lock")):
        PruneLock(Path("/proc/x.lock")).acquire()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.chmod(victim, 0o600)
    (tmp_path / "prune.lock").symlink_to(victim)
    with pytest.raises(LockUnusable, match=re.escape("prune.lock")):
        PruneLock(tmp_path / "prune.lock").acquire()
    assert victim.read_text() == "keep me"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_the_lock_file_is_0660_or_0600_never_0666(tmp_path: Path, umask_022: None) -> None:
    for boundary, mode in ((Boundary(), 0o600), (Boundary(gid=os.getegid()), 0o660)):
        lock = PruneLock(tmp_path / f"{mode:o}.lock", boundary)
        assert lock.acquire()
        lock.release()
        assert stat.S_IMODE((tmp_path / f"{mode:o}.lock").stat().st_mode) == mode


def test_the_meeting_place_skips_a_squatted_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_root()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr("os.path.isdir", lambda p: p != "/tmp" and os.path.exists(p))
    boundary = Boundary(gid=os.getegid())
    first = meeting_place("unix:///x.sock", "ENGINE:ID", boundary)
    assert first.refused == ()
    assert first.lock.parent.parent == tmp_path
    os.rmdir(first.registry) if first.registry.exists() else None
    os.rmdir(first.lock.parent)
    # Someone outside the boundary makes that folder first (they cannot know its name;
    # this test plays one who does).
    first.lock.parent.mkdir(mode=0o777)
    os.chown(first.lock.parent, NOBODY, NOBODY)
    second = meeting_place("unix:///x.sock", "ENGINE:ID", boundary)
    assert second.lock.parent != first.lock.parent
    (refused,) = second.refused
    assert refused.path == str(first.lock.parent)
    # Another engine, another name; the name says nothing of the ID.
    other = meeting_place("unix:///x.sock", "OTHER:ID", boundary)
    assert other.lock.parent not in (first.lock.parent, second.lock.parent)
    assert "ENGINE" not in str(second.lock)
    # The ID alone names it, as older versions name it: an engine key with its data root
    # (this version's) meets there too; the records tell engines of one ID apart.
    keyed = meeting_place("unix:///x.sock", "ENGINE:ID /var/lib/docker", boundary)
    assert keyed.lock == second.lock


def test_an_engine_without_an_id_or_a_group_meets_in_a_private_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for endpoint, engine_id, boundary in (
        ("unix:///run/podman/podman.sock", "", Boundary(gid=os.getegid())),  # Podman: no ID
        ("tcp://127.0.0.1:2375", "ENGINE:ID", Boundary()),
    ):
        place = meeting_place(endpoint, engine_id, boundary)
        assert place.lock.parent.parent == tmp_path / "pytest-imageprune"
        assert not place.boundary.shared
        assert stat.S_IMODE(place.lock.parent.stat().st_mode) == 0o700


# -- what the probe of issue 13's fix found -----------------------------------------------------
ENGINE_GID = 12345  # a group no account lists in /etc/group


def test_what_the_engine_group_made_is_trusted_whoever_owns_it(tmp_path: Path) -> None:
    """F4: an account with the group only as a supplementary group of its process."""
    needs_root()
    boundary = Boundary(gid=ENGINE_GID)
    made = tmp_path / "made-by-carol"
    made.mkdir()
    os.chown(made, NOBODY, ENGINE_GID)  # carol, in the group by runuser -G: chgrp allowed
    os.chmod(made, 0o2770)
    assert boundary.make_folder(made) == made
    record = made / "record.json"
    record.write_text("{}")
    os.chown(record, NOBODY, ENGINE_GID)
    os.chmod(record, 0o660)
    assert boundary.read_file(record, 100) == b"{}"
    # Not the engine's group: still refused, owner and group alike.
    os.chown(record, NOBODY, NOBODY)
    with pytest.raises(Unsafe, match="who may not use the engine"):
        boundary.read_file(record, 100)
    os.chown(made, NOBODY, NOBODY)
    os.chmod(made, 0o2770)
    with pytest.raises(Unsafe, match="who may not use the engine"):
        boundary.make_folder(made)
    # A shared registry folder is setgid, so that every file made in it is the group's.
    os.chown(made, NOBODY, ENGINE_GID)
    os.chmod(made, 0o770)
    with pytest.raises(Unsafe, match="chmod 2770"):
        boundary.make_folder(made)


def test_every_folder_made_in_a_shared_place_is_the_engine_group(
    tmp_path: Path, umask_022: None
) -> None:
    """F4: so that others trust what this session made, whatever /etc/group says."""
    needs_root()
    Boundary(gid=ENGINE_GID).make_folder(tmp_path / "a" / "b" / "registry")
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "registry"):
        assert path.stat().st_gid == ENGINE_GID, path


def test_a_hard_link_is_refused_before_anything_is_done_to_it(tmp_path: Path) -> None:
    """F8: another name of a file of this user's (root's) at the lock path."""
    victim = tmp_path / "unrelated"
    victim.write_text("keep me")
    os.chmod(victim, 0o644)
    os.link(victim, tmp_path / "prune.lock")
    for boundary in (Boundary(), Boundary(gid=os.getegid())):
        with pytest.raises(LockUnusable, match=r"prune.lock is not safe to use \(a hard link"):
            PruneLock(tmp_path / "prune.lock", boundary).acquire()
        with pytest.raises(Unsafe, match="a hard link"):
            boundary.read_file(tmp_path / "prune.lock", 100)
    st = victim.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o644, os.getegid())


def test_a_socket_anyone_may_use_makes_everyone_the_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    """F3: with a 0666 socket every local user is an engine user, and takes part."""
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        os.chmod(path, 0o666)
        boundary = Boundary.of_endpoint(f"unix://{path}")
    finally:
        server.close()
    assert boundary.everyone
    assert boundary.shared
    assert boundary.trusts(NOBODY)
    assert (boundary.folder_mode, boundary.file_mode) == (0o777, 0o666)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr("os.path.isdir", lambda p: p != "/tmp" and os.path.exists(p))
    place = meeting_place(f"unix://{path}", "ENGINE:ID", boundary)
    assert place.lock.parent.parent == tmp_path
    lock = PruneLock(place.lock, place.boundary)
    assert lock.acquire()
    lock.release()
    registry = boundary.make_folder(place.registry)
    # Not sticky: any session may remove a dead session's record, whoever made it.
    assert stat.S_IMODE(registry.stat().st_mode) == 0o777
    assert stat.S_IMODE(place.lock.stat().st_mode) == 0o666
    if os.geteuid() == 0:
        record = registry / "record.json"
        record.write_text("{}")
        os.chown(record, NOBODY, NOBODY)
        os.chmod(record, 0o666)
        assert boundary.read_file(record, 100) == b"{}"


def test_a_private_place_tries_the_next_base_naming_each_refused_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F9: an XDG_RUNTIME_DIR of another user's (sudo -E, su) falls back to ~/.cache."""
    needs_root()
    evil = tmp_path / "evil"
    evil.mkdir(mode=0o777)
    os.chown(evil, NOBODY, NOBODY)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(evil))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    place = meeting_place("tcp://127.0.0.1:2375", "ENGINE:ID", Boundary())
    assert place.lock.parent.parent == tmp_path / "home" / ".cache" / "pytest-imageprune"
    (refused,) = place.refused
    assert str(refused).startswith(f"{evil} (from $XDG_RUNTIME_DIR) is not safe to use")
    assert "not by this user or root" in str(refused)
    assert "may not use the engine" not in str(refused)
    assert "unset XDG_RUNTIME_DIR" in str(refused)
    assert list(evil.iterdir()) == []
    # None left: each one is named.
    monkeypatch.setenv("XDG_CACHE_HOME", str(evil))
    monkeypatch.setenv("HOME", str(evil))
    with pytest.raises(Unsafe) as caught:
        meeting_place("tcp://127.0.0.1:2375", "ENGINE:ID", Boundary())
    for source in ("$XDG_RUNTIME_DIR", "$XDG_CACHE_HOME", "~/.cache"):
        assert f"(from {source})" in str(caught.value)


def _as_engine_user(action: Callable[[], None]) -> bool:
    """Whether ``action`` succeeds in a child running as another user of the engine's
    group (uid 12346, group ``ENGINE_GID`` only)."""
    pid = os.fork()
    if pid == 0:  # the child: only plain system calls, then _exit
        code = 1
        try:
            os.setgroups([ENGINE_GID])
            os.setgid(ENGINE_GID)
            os.setuid(12346)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_folders_made_on_the_way_to_a_shared_lock_let_every_engine_user_in(
    umask_022: None,
) -> None:
    """Issue 20, finding 5: for a lock path whose folder did not exist, the first session
    made the folders on the way 755; once it was gone (killed, or a dry run that never
    made the lock), every other engine user got EACCES there and deleted nothing."""
    needs_root()
    with tempfile.TemporaryDirectory(prefix="ipb-") as base:
        os.chmod(base, 0o755)  # root's, as /tmp's own folders are: another user may pass
        folder = Path(base) / "x" / "y"
        Boundary(gid=ENGINE_GID).make_folder(folder / "prune.lock.sessions")

        def make_the_lock() -> None:
            fd = Boundary(gid=ENGINE_GID).open_file(folder / "prune.lock", create=True)
            os.close(fd)

        assert _as_engine_user(make_the_lock), "another engine user is locked out"
        assert (folder / "prune.lock").stat().st_uid == 12346
        for made in (folder.parent, folder, folder / "prune.lock.sessions"):
            st = made.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, ENGINE_GID), made


def test_a_session_killed_while_making_a_folder_leaves_none_half_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each folder is made under a hidden name, then renamed: Ctrl-C (or a kill) between
    the two leaves no folder of the wrong mode at the name, and the next session makes it."""
    real_rename = os.rename

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Boundary().make_folder(tmp_path / "a" / "registry")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "rename", real_rename)
    made = Boundary().make_folder(tmp_path / "a" / "registry")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
