"""The files the plugin writes for the user: the JSON report and the GitHub step summary.

Each is written as the registry is: no symlink followed in a folder someone else may
write, no wait on a FIFO, no folder made where others may write, no file of someone else's
(or a hard link) written in a folder others may write. Other users' files are made with
``chown`` to an unused uid (root only; under ``CI=true`` root is a given); no engine.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_imageprune.github import append_step_summary
from pytest_imageprune.model.filters import Filters
from pytest_imageprune.model.report import PruneReport
from tests.support import IN_CI

#: A uid no account has: "another user".
OTHER = 12345

#: Writes to a path: None when written, else the one line of error it gives.
Writer = Callable[[Path], "str | None"]


def needs_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true and not root", pytrace=False)
        pytest.skip("needs root (to make files of another owner)")


def write_report(path: Path) -> str | None:
    try:
        PruneReport(endpoint="unix:///var/run/docker.sock", filters=Filters()).write_json(path)
    except OSError as exc:  # the plugin's one warning line (ImagePrunePlugin._finish)
        return f"could not write the report to {path}: {exc}"
    return None


def append_summary(path: Path) -> str | None:
    return append_step_summary("### x", {"GITHUB_STEP_SUMMARY": str(path)})


WRITERS = [
    pytest.param(write_report, id="report"),
    pytest.param(append_summary, id="summary"),
]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of ours that no other user may have written through a link."""
    path = tmp_path / "victim"
    path.write_text("keep me")
    os.chmod(path, 0o600)
    return path


def one_line(error: str | None) -> str:
    assert error is not None, "written"
    assert "\n" not in error
    assert "Traceback" not in error
    return error


def theirs(path: Path, mode: int) -> Path:
    """``path`` made a folder of another user's, with ``mode``."""
    path.mkdir()
    os.chown(path, OTHER, OTHER)
    os.chmod(path, mode)
    return path


def sticky(path: Path) -> Path:
    """A folder like /tmp: root's, anyone may write, sticky."""
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


def promptly(call: Callable[[], str | None], fifo: Path) -> str | None:
    """``call()``'s answer, failing (not hanging) if it waits more than 5 s on ``fifo``."""
    answer: list[str | None] = []
    thread = threading.Thread(target=lambda: answer.append(call()), daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # let the blocked writer go, so nothing is left hanging
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"waited on the FIFO {fifo}")
    return answer[0]


# -- 1, 2: a symlink of someone else's, in their folder ------------------------------------


@pytest.mark.parametrize("write", WRITERS)
def test_no_symlink_is_followed_in_a_folder_of_another_user(
    tmp_path: Path, victim: Path, write: Writer
) -> None:
    needs_root()
    folder = theirs(tmp_path / "theirs", 0o755)
    link = folder / "out"
    link.symlink_to(victim)
    os.lchown(link, OTHER, OTHER)
    error = one_line(write(link))
    assert str(link) in error
    assert "symlink" in error
    assert victim.read_text() == "keep me"


# -- 3: a FIFO -----------------------------------------------------------------------------


@pytest.mark.parametrize("write", WRITERS)
def test_a_fifo_is_an_error_not_a_wait(tmp_path: Path, write: Writer) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    error = one_line(promptly(lambda: write(fifo), fifo))
    assert str(fifo) in error
    assert "FIFO" in error
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("write", WRITERS)
def test_a_fifo_with_a_reader_is_an_error_too(tmp_path: Path, write: Writer) -> None:
    """Opened, it would not block: it is still not a file to write."""
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        error = one_line(promptly(lambda: write(fifo), fifo))
        assert "FIFO" in error
        assert os.read(reader, 100) == b""  # nothing was written into it
    finally:
        os.close(reader)


@pytest.mark.parametrize("write", WRITERS)
def test_a_folder_is_an_error(tmp_path: Path, write: Writer) -> None:
    (tmp_path / "out").mkdir()
    error = one_line(write(tmp_path / "out"))
    assert str(tmp_path / "out") in error


# -- 4, 5: missing parent folders ----------------------------------------------------------


@pytest.mark.parametrize("owner", ["ours-0777", "theirs-0755"])
def test_no_folder_is_made_where_others_may_write(tmp_path: Path, owner: str) -> None:
    if owner == "ours-0777":
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o777)
    else:
        needs_root()
        shared = theirs(tmp_path / "shared", 0o755)
    target = shared / "results" / "report.json"
    error = one_line(write_report(target))
    assert str(shared / "results") in error
    assert "others may write" in error
    assert not (shared / "results").exists()


@pytest.mark.usefixtures("umask_022")
def test_missing_folders_are_made_under_a_folder_of_ours(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.json"
    assert write_report(target) is None
    assert target.read_text().startswith("{")
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        st = folder.stat()
        assert st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o755


def test_a_made_folder_is_no_wider_than_the_umask_allows(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        assert write_report(tmp_path / "a" / "report.json") is None
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_the_step_summary_makes_no_folder(tmp_path: Path) -> None:
    error = one_line(append_summary(tmp_path / "missing" / "summary.md"))
    assert error.startswith(f"could not write the GitHub step summary to {tmp_path}/missing/")
    assert not (tmp_path / "missing").exists()


# -- 6: the user's own symlinks ------------------------------------------------------------


@pytest.mark.parametrize("write", WRITERS)
def test_our_symlink_in_our_folder_is_followed(tmp_path: Path, write: Writer) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "results").symlink_to(tmp_path / "real")
    (tmp_path / "relative").symlink_to("real")
    assert write(tmp_path / "results" / "out") is None
    assert write(tmp_path / "relative" / "out") is None
    assert (tmp_path / "real" / "out").read_text().strip()
    (tmp_path / "final").symlink_to(tmp_path / "real" / "final.txt")
    assert write(tmp_path / "final") is None
    assert (tmp_path / "real" / "final.txt").read_text().strip()
    assert (tmp_path / "final").is_symlink()


def test_a_relative_path_is_taken_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert write_report(Path("../out/report.json")) is None
    assert (tmp_path / "out" / "report.json").is_file()
    assert append_summary(Path("summary.md")) is None
    assert (tmp_path / "sub" / "summary.md").read_text() == "### x\n"


def test_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    for error in (write_report(tmp_path / "a" / "report.json"), append_summary(tmp_path / "a")):
        assert re.search("too many symlinks|Too many levels", one_line(error))


# -- 7: files in a sticky folder, as fs.protected_regular ----------------------------------


@pytest.mark.parametrize("write", WRITERS)
def test_a_file_of_another_user_in_a_sticky_folder_is_not_written(
    tmp_path: Path, write: Writer
) -> None:
    needs_root()
    path = sticky(tmp_path / "tmp") / "out"
    path.write_text("theirs")
    os.chown(path, OTHER, OTHER)
    error = one_line(write(path))
    assert str(path) in error
    assert "uid 12345" in error
    assert path.read_text() == "theirs"


@pytest.mark.parametrize("write", WRITERS)
def test_a_file_of_the_folders_owner_is_written(tmp_path: Path, write: Writer) -> None:
    """As fs.protected_regular: a GitHub runner's step summary file, in the runner's
    folder, written by a container job run as root."""
    needs_root()
    folder = theirs(tmp_path / "runner", 0o755)
    path = folder / "out"
    path.write_text("")
    os.chown(path, OTHER, OTHER)
    assert write(path) is None
    assert path.read_text().strip()


@pytest.mark.parametrize("write", WRITERS)
def test_a_hard_link_in_a_sticky_folder_is_not_written(
    tmp_path: Path, victim: Path, write: Writer
) -> None:
    path = sticky(tmp_path / "tmp") / "out"
    os.link(victim, path)
    error = one_line(write(path))
    assert str(path) in error
    assert "hard link" in error
    assert victim.read_text() == "keep me"
    assert os.stat(path).st_ino == victim.stat().st_ino


def test_our_own_file_in_a_sticky_folder_is_written(tmp_path: Path) -> None:
    folder = sticky(tmp_path / "tmp")
    (folder / "summary.md").write_text("### before\n")
    assert append_summary(folder / "summary.md") is None
    assert (folder / "summary.md").read_text() == "### before\n\n### x\n"
    (folder / "report.json").write_text("old")
    assert write_report(folder / "report.json") is None
    assert (folder / "report.json").read_text().startswith("{")


# -- 8: a symlink at the last component, and a swap between checks -------------------------


@pytest.mark.parametrize("write", WRITERS)
def test_a_symlink_of_another_user_in_a_sticky_folder_is_not_followed(
    tmp_path: Path, victim: Path, write: Writer
) -> None:
    needs_root()
    link = sticky(tmp_path / "tmp") / "out"
    link.symlink_to(victim)
    os.lchown(link, OTHER, OTHER)
    error = one_line(write(link))
    assert str(link) in error
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("write", WRITERS)
def test_our_symlink_in_a_sticky_folder_is_followed(tmp_path: Path, write: Writer) -> None:
    """As fs.protected_symlinks: a link of the follower's own."""
    link = sticky(tmp_path / "tmp") / "out"
    link.symlink_to(tmp_path / "own")
    assert write(link) is None
    assert (tmp_path / "own").read_text().strip()


@pytest.mark.parametrize("write", WRITERS)
def test_no_symlink_at_all_is_followed_in_a_folder_others_may_write_that_is_not_sticky(
    tmp_path: Path, write: Writer
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "out").symlink_to(tmp_path / "own")  # anyone could have renamed it there
    error = one_line(write(shared / "out"))
    assert "symlink" in error
    assert not (tmp_path / "own").exists()


@pytest.mark.parametrize("write", WRITERS)
def test_a_path_swapped_for_a_symlink_after_the_checks_is_not_followed(
    tmp_path: Path, victim: Path, write: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last open is ``O_NOFOLLOW`` relative to the checked folder's descriptor (the
    summary), or a new file renamed into place (the report): whatever stands at the name
    when it is written, nothing is written through it."""
    from pytest_imageprune import outputs

    folder = sticky(tmp_path / "tmp")
    path = folder / "out"
    path.write_text("")
    real_locate = outputs._locate

    def swapped(*args: object, **kwargs: object) -> outputs._Place:
        place = real_locate(*args, **kwargs)  # type: ignore[arg-type]
        path.unlink()
        path.symlink_to(victim)  # as another user would, between the checks and the open
        return place

    monkeypatch.setattr(outputs, "_locate", swapped)
    write(path)
    assert victim.read_text() == "keep me"


def test_the_summary_opens_its_file_without_following_or_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    flags: list[int] = []

    def recording(name: str, flag: int, *args: object, **kwargs: object) -> int:
        if name == "summary.md":
            flags.append(flag)
        return real_open(name, flag, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording)
    assert append_summary(tmp_path / "summary.md") is None
    monkeypatch.undo()
    assert flags
    for flag in flags:
        for bit in (os.O_NOFOLLOW, os.O_NONBLOCK, os.O_APPEND, os.O_CLOEXEC):
            assert flag & bit == bit
