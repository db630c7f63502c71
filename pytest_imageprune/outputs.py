"""The files the plugin writes for the user: the JSON report and the GitHub step summary.

``--prune-images-report=PATH`` (``write_file``) and ``$GITHUB_STEP_SUMMARY``
(``append_file``) are written as the registry is, whoever runs pytest (root too) and
whatever the machine's ``fs.protected_symlinks`` and ``fs.protected_regular``:

- **Someone else** is any user but this process's (its euid) and root. A folder **others
  may write** is one someone else owns, or with the group's or everyone's write bit.
- The path is walked one component at a time, each folder held by a descriptor opened
  with ``O_NOFOLLOW | O_DIRECTORY`` and checked with ``fstat``; everything after is done
  relative to it. What was checked is what is used: no folder can be swapped in between.
- A symlink in a folder others may write is not followed, but for one exception, as
  ``fs.protected_symlinks``: in a sticky folder (``/tmp``), a link of this user's, or of
  the folder's owner when that is root or this user. In a folder no one else may write,
  every symlink is followed (a results folder linked from the project). At most
  ``MAX_LINKS`` of them, as the kernel's ``ELOOP``.
- A missing folder on the way (the report's only) is made only in a folder no one else
  may write: this user's, ``0755`` less the umask.
- The file is never waited on: a FIFO, socket, device or folder is refused, and the file
  is opened (if at all) with ``O_NOFOLLOW | O_NONBLOCK`` and checked on its descriptor.
  In a folder others may write, a file of someone else's (but the folder's owner's, whose
  own file touches no one else's), or with more than one name (a hard link), is not
  written, as ``fs.protected_regular``.

A refused path is an ``OSError`` (``Refused``) of one line, saying why and, when it is not
the path itself, which component; the callers turn it into one warning line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass

from pytest_imageprune.coordination.boundary import MAX_LINKS, kind_of, user_name

#: A folder on the way: held, never followed if a symlink, never opened for reading.
_FOLDER = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: The file itself: never through a symlink, never a wait on a FIFO, never a terminal.
_FILE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
#: What a folder the plugin makes may allow at most (less the umask).
FOLDER_MODE = 0o755


class Refused(OSError):
    """A path the plugin will not write: why, in one line."""


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Make ``path`` hold ``data`` (the JSON report), making missing folders where allowed.

    ``data`` goes to a new file in the same folder, renamed into place. So nothing is ever
    written into a file that stood there: not into one swapped in after the checks, not
    through another name of it; and a reader, or a session that dies midway, never sees
    half a report. The file is a new one each time: this user's, ``0666`` less the umask
    (an old one of this user's gives its mode).
    """
    place = _locate(path, make_folders=True)
    try:
        place.check(place.st)
        temp = f".imageprune-{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, _FILE | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=place.folder)
        try:
            try:
                if place.st is not None and place.st.st_uid == os.geteuid():
                    os.fchmod(fd, stat.S_IMODE(place.st.st_mode) & 0o777)
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.rename(temp, place.name, src_dir_fd=place.folder, dst_dir_fd=place.folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=place.folder)
            raise
    finally:
        os.close(place.folder)


def append_file(path: str | os.PathLike[str], data: bytes, *, separator: bytes = b"") -> None:
    """Append ``data`` to ``path`` (the step summary), made if missing; its folder must be.

    ``separator`` goes first when the file already holds something, as its descriptor's
    ``fstat`` says once opened.
    """
    place = _locate(path, make_folders=False)
    try:
        place.check(place.st)  # a FIFO is refused before any open
        fd = os.open(place.name, _FILE | os.O_APPEND | os.O_CREAT, 0o666, dir_fd=place.folder)
        try:
            st = os.fstat(fd)
            place.check(st)  # what is written to, whatever stands at the name by now
            _write_all(fd, separator + data if separator and st.st_size > 0 else data)
        finally:
            os.close(fd)
    finally:
        os.close(place.folder)


@dataclass
class _Place:
    """Where the file goes: its folder's descriptor (the caller closes it) and its name."""

    folder: int
    folder_st: os.stat_result
    #: The folder as followed, for messages.
    shown_folder: str
    name: str
    #: The path as given, and the file as followed.
    path: str
    shown: str
    #: What stands at the name, not followed: None when nothing does.
    st: os.stat_result | None

    def check(self, st: os.stat_result | None) -> None:
        """The file at the name may be written: a regular one (or none yet), and, in a
        folder others may write, with one name only, of this user's, root's or the
        folder's owner's, as ``fs.protected_regular``."""
        if st is None:
            return
        if not stat.S_ISREG(st.st_mode):
            raise _refused(self.path, self.shown, f"{kind_of(st.st_mode)}, not a regular file")
        others = _others_may_write(self.folder_st)
        if others is None:
            return
        where = f"in {self.shown_folder}, where others may write ({others})"
        # The folder's owner's own file touches no one else's (a GitHub runner's step
        # summary file, in its folder, for a container job run as root).
        if not _ours(st.st_uid) and st.st_uid != self.folder_st.st_uid:
            raise _refused(
                self.path,
                self.shown,
                f"a file of {user_name(st.st_uid)} {where}: not written (as"
                " fs.protected_regular); remove it or give another path",
            )
        if st.st_nlink > 1:
            raise _refused(
                self.path,
                self.shown,
                f"a hard link ({st.st_nlink} names) {where}: not written; remove it or give"
                " another path",
            )


def _locate(path: str | os.PathLike[str], *, make_folders: bool) -> _Place:
    """The folder ``path``'s file is in, held open, and its name there, every component
    checked on the way (see the module's docstring); symlinks at the end are followed too.
    Missing folders are made when ``make_folders`` and allowed."""
    given = os.fspath(path)
    if not given or given.endswith("/"):
        raise _refused(given, given, "a folder, not a regular file")
    walk = _Walk(given)
    try:
        return walk.through(_parts(given), make_folders)
    except BaseException:
        os.close(walk.fd)
        raise


class _Walk:
    """One walk down a path: the folder held (``fd``, ``st``) and how it was reached."""

    def __init__(self, given: str) -> None:
        self.given = given
        #: The folder held, as followed: for messages.
        self.shown = "/" if given.startswith("/") else ""
        self.fd = os.open(self.shown or ".", _FOLDER)
        try:
            self.st = os.fstat(self.fd)
        except BaseException:
            os.close(self.fd)
            raise

    def through(self, pending: list[str], make_folders: bool) -> _Place:
        links = 0
        while pending:
            name = pending.pop(0)
            if name == "..":  # the kernel's: the real parent of the folder held
                self.enter("..", os.path.join(self.shown, ".."))
                continue
            here = os.path.join(self.shown, name)
            try:
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                if not pending:
                    return self.place(name, here, None)
                self.make(name, here, make_folders)
                pending.insert(0, name)  # made (by us or meanwhile): go through it
                continue
            if stat.S_ISLNK(st.st_mode):
                self.may_follow(st, here)
                links += 1
                if links > MAX_LINKS:
                    raise self.refused(here, f"too many symlinks (more than {MAX_LINKS})")
                target = os.readlink(name, dir_fd=self.fd)
                if target.startswith("/"):
                    self.enter("/", "/")
                pending[:0] = _parts(target)
                if target.endswith("/") and not pending:
                    raise self.refused(here, "a folder, not a regular file")
                continue
            if not pending:
                return self.place(name, here, st)
            if not stat.S_ISDIR(st.st_mode):
                what = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
                raise self.refused(here, f"{what}, not a folder")
            self.enter(name, here)
        raise self.refused(self.shown or ".", "a folder, not a regular file")

    def place(self, name: str, here: str, st: os.stat_result | None) -> _Place:
        return _Place(self.fd, self.st, self.shown or ".", name, self.given, here, st)

    def enter(self, name: str, shown: str) -> None:
        """Hold the folder ``name`` of the one held instead: never a symlink."""
        entered = os.open(name, _FOLDER, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = entered
        self.st = os.fstat(entered)
        self.shown = shown

    def make(self, name: str, here: str, allowed: bool) -> None:
        """Make the missing folder ``name``, if no one else may write where it goes."""
        if not allowed:
            raise self.refused(here, "no such folder")
        others = _others_may_write(self.st)
        if others is not None:
            raise self.refused(
                here,
                f"missing, and not made in {self.shown or '.'}, where others may write"
                f" ({others}); make it yourself, or give another path",
            )
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, FOLDER_MODE, dir_fd=self.fd)

    def may_follow(self, link: os.stat_result, here: str) -> None:
        """A symlink is followed where no one else may write, or, in a sticky folder, when
        it is this user's or the folder's owner's (root or this user), as
        ``fs.protected_symlinks``."""
        others = _others_may_write(self.st)
        if others is None:
            return
        owner = link.st_uid
        if self.st.st_mode & stat.S_ISVTX and (
            owner == os.geteuid() or (owner == self.st.st_uid and _ours(owner))
        ):
            return
        raise self.refused(
            here,
            f"a symlink of {user_name(owner)} in {self.shown or '.'}, where others may"
            f" write ({others}): not followed; give the path it points to",
        )

    def refused(self, here: str, why: str) -> Refused:
        return _refused(self.given, here, why)


def _others_may_write(st: os.stat_result) -> str | None:
    """Why someone else may write into the folder ``st``, or None if no one may."""
    if not _ours(st.st_uid):
        return f"owned by {user_name(st.st_uid)}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"mode {mode:o}"
    return None


def _ours(uid: int) -> bool:
    """This process's user, or root: not someone else."""
    return uid in (os.geteuid(), 0)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _refused(given: str, here: str, why: str) -> Refused:
    """One line: why, after the component it is about unless that is the path as given."""
    return Refused(why if here == given else f"{here}: {why}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
