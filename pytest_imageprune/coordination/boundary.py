"""The trust boundary of the lock and the registry: the users who may use the engine.

Whoever can write into the registry or take the lock can steer a prune, so both live where
only the engine's users can write, and every use checks that again:

- **Who is trusted.** Root, this process's user and, where the engine is a unix socket its
  group may read and write (``/var/run/docker.sock``, ``root:docker 0660``), every member
  of that group: they can already do anything to the engine. A member is known by
  ``/etc/group`` (``_member``) or by what it made: a folder or file of the engine's group
  was made by root or by a process in that group, whatever ``/etc/group`` lists (the
  kernel lets a process ``chgrp`` only to a group it is in, and a setgid folder of that
  group is writable by its members only, unless someone made one anyone may write: the
  plugin never does). So an account that has the group only as a supplementary group of
  its process (``runuser -G docker``, ``SupplementaryGroups=``, LDAP) is trusted too, and
  everything the plugin makes in a shared place gets the engine's group. Where the socket
  is one anyone may use (``0666``), the boundary is everyone: every local user may use the
  engine, so every local user takes part. For any other endpoint (tcp, ssh, a socket only
  its owner may use) the boundary is this user alone.
- **Folders.** Every folder on the way (symlinks included: each is read with ``lstat`` and
  followed only when a trusted user owns it) is owned by a trusted user and writable by no
  one else, unless it is sticky like ``/tmp`` (where no one may rename or remove another's
  entry). The registry folder itself is a real folder, never a symlink, owned by a trusted
  user, never writable by others; shared by a group, it is the engine's group, ``2770``.
- **Files** are opened with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink is refused, a FIFO never
  blocks), then checked on the open descriptor: a regular file, owned by a trusted user,
  writable by no one else, within a size limit. Made here, they are ``0660`` (group: the
  engine's) or ``0600``, never ``0666`` (unless the boundary is everyone). A file with
  another name (a hard link) is refused before anything is done to it.

A path that fails is never used: ``Unsafe`` names it, says why and how to fix it.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: How many symlinks a path may go through before it is refused (as the kernel's ELOOP);
#: the files the plugin writes for the user (``outputs``) keep to it too.
MAX_LINKS = 40
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Unsafe(OSError):
    """A folder or file that fails the trust check: never used."""

    def __init__(self, path: Path | str, why: str, fix: str) -> None:
        super().__init__(f"{path} is not safe to use ({why}): {fix}")
        self.path = str(path)
        self.why = why
        self.fix = fix


@dataclass(frozen=True)
class Boundary:
    """Who may write into the registry and take the lock of one engine."""

    #: The engine's group (its unix socket's), or None: this user alone (or everyone).
    gid: int | None = None
    uid: int = field(default_factory=os.geteuid)
    #: A socket anyone may use: every local user is an engine user, and takes part.
    everyone: bool = False

    @classmethod
    def of_endpoint(cls, endpoint: str) -> Boundary:
        """Everyone when anyone may use the socket; the socket's group when the group may;
        else this user alone."""
        for prefix in ("unix://", "http+unix://"):
            if endpoint.startswith(prefix):
                try:
                    st = os.stat(endpoint.removeprefix(prefix))
                except OSError:
                    break
                if stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o006 == 0o006:
                    return cls(everyone=True)
                if stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o060 == 0o060:
                    return cls(gid=st.st_gid)
                break
        return cls()

    @property
    def shared(self) -> bool:
        return self.gid is not None or self.everyone

    @property
    def folder_mode(self) -> int:
        # Everyone: not sticky, so that any session may remove a dead one's record.
        if self.everyone:
            return 0o777
        return 0o2770 if self.gid is not None else 0o700

    @property
    def file_mode(self) -> int:
        if self.everyone:
            return 0o666
        return 0o660 if self.gid is not None else 0o600

    def trusts(self, uid: int) -> bool:
        return (
            self.everyone
            or uid in (0, self.uid)
            or (self.gid is not None and _member(uid, self.gid))
        )

    def trusts_made(self, st: os.stat_result) -> bool:
        """Whether a trusted user made the object ``st``: its owner, or its group.

        An object of the engine's group was made by root or by a process in that group
        (``chgrp`` only to one's own groups; a setgid folder of that group is its
        members'), which ``/etc/group`` may not list (a supplementary group).
        """
        return self.trusts(st.st_uid) or (self.gid is not None and st.st_gid == self.gid)

    def _stranger(self, uid: int) -> str:
        """Why an owner is not trusted, in the boundary's own terms."""
        if self.gid is None:
            return f"owned by {user_name(uid)}, not by this user or root"
        return f"owned by {user_name(uid)}, who may not use the engine"

    def group_name(self) -> str:
        return _group_name(self.gid) if self.gid is not None else "none"

    # -- folders -----------------------------------------------------------------------------
    def resolve(self, path: Path) -> Path:
        """``path`` made absolute, through trusted folders and symlinks only.

        Each component is read with ``lstat``: a folder must pass ``_check_ancestor``, a
        symlink is followed only when a trusted user owns it (it sits in a folder already
        checked, so no one else could have put it there).
        """

        def trusted_link(link: Path, st: os.stat_result, folder: Path) -> None:
            if not self.trusts_made(st):
                raise Unsafe(
                    link,
                    f"a symlink owned by {user_name(st.st_uid)}",
                    "remove it, or give a path without it",
                )

        def too_many(link: Path) -> OSError:
            return Unsafe(link, "too many symlinks", "give a path without them")

        # The last one is the caller's to refuse (a registry folder is never a symlink).
        return _walk(path, self._check_ancestor, trusted_link, too_many)

    def make_folder(self, path: Path) -> Path:
        """The folder at ``path``, made if missing, checked; its real path.

        A folder is made under a temporary name, given its group and mode, then renamed
        into place: no other session ever sees it half made.
        """
        target = self.resolve(path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            self._make(target)
            st = os.lstat(target)
        self.check_folder(target, st)
        return target

    def _make(self, target: Path) -> None:
        """Make ``target``, and the folders missing on the way, each with the boundary's
        group and ``folder_mode`` (``2770`` shared by a group): every engine user can use
        what a session made, whatever happened to that session (the first version made the
        folders on the way ``755``, and once their maker was gone no other engine user
        could make the lock there)."""
        missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
        for folder in reversed(missing):
            self._make_one(folder)
        if missing:
            self.resolve(target.parent)  # what was made is checked like the rest
        self._make_one(target)

    def _make_one(self, target: Path) -> None:
        """One folder, made under a temporary name, given its group and mode, then renamed
        into place: no one ever sees it half made, and a session killed meanwhile leaves
        at most a hidden temporary folder."""
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            if self.gid is not None:
                os.chown(temp, -1, self.gid)
            os.chmod(temp, self.folder_mode)
            os.rename(temp, target)  # fails if another session made it meanwhile
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(temp)
            if not os.path.lexists(target):
                raise
        except BaseException:  # Ctrl-C: no half-made folder left behind
            with contextlib.suppress(OSError):
                os.rmdir(temp)
            raise

    def check_folder(self, path: Path, st: os.stat_result) -> None:
        """The registry's own folder: a real folder that no one untrusted may write into."""
        if stat.S_ISLNK(st.st_mode):
            raise Unsafe(path, "a symlink", "remove it; the plugin makes a folder there")
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(path, "not a folder", "remove it; the plugin makes a folder there")
        if not self.trusts_made(st):
            raise Unsafe(
                path,
                self._stranger(st.st_uid),
                f"remove it (as root: rm -rf {path}); the plugin makes it anew",
            )
        mode = stat.S_IMODE(st.st_mode)
        if self.everyone:
            if st.st_uid == self.uid:
                self._repair(path, st)
            return
        if mode & 0o002:
            raise Unsafe(path, f"mode {mode:o}: anyone may write", f"remove it (rm -rf {path})")
        if mode & 0o020 and st.st_gid not in (0, self.gid):
            raise Unsafe(
                path,
                f"group {_group_name(st.st_gid)} may write, and that is not the engine's group",
                f"remove it (rm -rf {path})",
            )
        if st.st_uid == self.uid and self._repair(path, st):
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
        if self.gid is not None and (
            st.st_gid != self.gid or mode & 0o070 != 0o070 or not mode & stat.S_ISGID
        ):
            raise Unsafe(
                path,
                f"group {_group_name(st.st_gid)}, mode {mode:o}: the engine's other users"
                " cannot use it",
                f"chgrp {self.group_name()} {path} && chmod 2770 {path}",
            )

    def _repair(self, path: Path, st: os.stat_result) -> bool:
        """Our own folder with another group or mode (an older version made it): mend it."""
        wanted_gid = self.gid if self.gid is not None else st.st_gid
        if st.st_gid == wanted_gid and stat.S_IMODE(st.st_mode) == self.folder_mode:
            return False
        with contextlib.suppress(OSError):
            if st.st_gid != wanted_gid:
                os.chown(path, -1, wanted_gid, follow_symlinks=False)
            os.chmod(path, self.folder_mode, follow_symlinks=False)
        return True

    def _check_ancestor(self, path: Path, st: os.stat_result) -> None:
        """A folder on the way: owned by a trusted user, writable by no one else unless sticky."""
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(path, "not a folder", "give a path through folders only")
        if not self.trusts_made(st):
            raise Unsafe(
                path,
                self._stranger(st.st_uid),
                "give a path through folders of root, this user or the engine's group",
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & stat.S_ISVTX or self.everyone:
            return  # like /tmp: no one may rename or remove another's entry
        if mode & 0o002 or (mode & 0o020 and st.st_gid not in (0, self.gid)):
            raise Unsafe(
                path,
                f"mode {mode:o}, group {_group_name(st.st_gid)}: others may write into it",
                "give a path through folders only root, this user or the engine's group may write",
            )

    # -- files -------------------------------------------------------------------------------
    def open_file(self, path: Path, *, create: bool = False, write: bool = False) -> int:
        """A checked descriptor of the regular file ``path`` (made, ``file_mode``, if
        ``create`` and missing); never follows a symlink, never blocks on a FIFO."""
        flags = _OPEN | (os.O_RDWR if write or create else os.O_RDONLY)
        made = False
        if create:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, self.file_mode)
                made = True
            except FileExistsError:
                fd = os.open(path, flags)
        else:
            fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            if made:
                if self.gid is not None and st.st_gid != self.gid:
                    os.fchown(fd, -1, self.gid)
                os.fchmod(fd, self.file_mode)  # the umask may have taken the group's bits
            else:
                self._check_links(path, st)  # before any mend: another file's name, maybe
                if stat.S_ISREG(st.st_mode) and st.st_uid == self.uid:
                    self._mend(fd, st)  # ours, made by another version or tool
                    st = os.fstat(fd)
                self.check_file(path, st)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _mend(self, fd: int, st: os.stat_result) -> None:
        """Give a file of our own the engine's group and ``file_mode``."""
        with contextlib.suppress(OSError):
            if self.gid is not None and st.st_gid != self.gid:
                os.fchown(fd, -1, self.gid)
            if stat.S_IMODE(st.st_mode) != self.file_mode:
                os.fchmod(fd, self.file_mode)

    def _check_links(self, path: Path, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # 0: replaced meanwhile, not a link
            raise Unsafe(
                path,
                f"a hard link: the file has {st.st_nlink} names",
                f"remove {path}; the plugin makes a file of its own there",
            )

    def check_file(self, path: Path, st: os.stat_result, limit: int | None = None) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe(path, f"not a regular file ({kind_of(st.st_mode)})", f"remove {path}")
        self._check_links(path, st)
        if not self.trusts_made(st):
            raise Unsafe(path, self._stranger(st.st_uid), "remove it")
        mode = stat.S_IMODE(st.st_mode)
        others = mode & 0o002 or (mode & 0o020 and st.st_gid not in (0, self.gid))
        if others and not self.everyone:
            raise Unsafe(path, f"mode {mode:o}: others may write", f"chmod o-w,g-w {path}")
        if limit is not None and st.st_size > limit:
            raise Unsafe(path, f"{st.st_size} bytes, more than {limit}", f"remove {path}")

    def read_file(self, path: Path, limit: int) -> bytes:
        """The whole of the regular file ``path``, at most ``limit`` bytes, checked."""
        fd = os.open(path, _OPEN | os.O_RDONLY)
        try:
            self.check_file(path, os.fstat(fd), limit)
            chunks = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        if size > limit:
            raise Unsafe(path, f"more than {limit} bytes", f"remove {path}")
        return b"".join(chunks)


def _walk(
    path: Path,
    on_folder: Callable[[Path, os.stat_result], None],
    on_link: Callable[[Path, os.stat_result, Path], None],
    too_many: Callable[[Path], OSError],
) -> Path:
    """``path`` made absolute, one component at a time with ``lstat``: each folder on the
    way goes past ``on_folder`` (``/`` first), each symlink past ``on_link`` (with the
    folder it sits in) before it is followed; the last component is never followed. A
    missing component ends the walk: the rest is appended as given."""
    pending = list(Path(os.path.abspath(path)).parts[1:])
    current = Path("/")
    on_folder(current, os.lstat(current))
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return Path(candidate, *pending)
        if stat.S_ISLNK(st.st_mode) and pending:
            on_link(candidate, st, current)
            links += 1
            if links > MAX_LINKS:
                raise too_many(candidate)
            target = os.readlink(candidate)
            if os.path.isabs(target):
                current = Path("/")
            pending[:0] = [p for p in Path(target).parts if p != "/"]
            continue
        if not pending:
            return candidate
        on_folder(candidate, st)
        current = candidate
    return current


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


@functools.lru_cache(maxsize=64)
def _member(uid: int, gid: int) -> bool:
    """Whether ``uid`` is in group ``gid`` (its primary group, or listed in it)."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
