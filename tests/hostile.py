"""Other users and a fresh ``/tmp``, for the hostile-input suite (test_hostile.py).

``Users`` makes throwaway accounts (``useradd``): one outside the engine's group, two in
it. ``FreshTmp`` is a private mount namespace (``unshare --mount``) whose ``/tmp`` is an
empty tmpfs, as after a reboot; commands run in it through ``nsenter``, as root or as one
of those users (``runuser``), and its files are reachable from outside through
``/proc/<pid>/root``. Everything needs root, as CI runs; elsewhere it skips.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import engine_missing

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("useradd", "userdel", "runuser", "unshare", "nsenter", "mount")


def need_root_tools() -> None:
    """Root and the tools; skips where they are missing, fails under ``CI=true``."""
    if os.geteuid() != 0:
        engine_missing("the hostile suite needs root (useradd, mount namespaces)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        engine_missing(f"the hostile suite needs {', '.join(missing)}")


@dataclass
class Users:
    """Throwaway accounts: ``outsider`` may not use the engine, ``alice`` and ``bob`` may."""

    group: str
    outsider: str = ""
    alice: str = ""
    bob: str = ""
    made: list[str] = field(default_factory=list)

    def make(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.outsider, self.alice, self.bob = (f"ipr{tag}{n}" for n in ("o", "a", "b"))
        for name in (self.outsider, self.alice, self.bob):
            groups = [] if name == self.outsider else ["-G", self.group]
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *groups, name],
                check=True,
                capture_output=True,
            )
            self.made.append(name)

    def remove(self) -> None:
        """Remove the accounts (their processes, all in a namespace now closed, are gone;
        a process still exiting may hold one a moment)."""
        for name in self.made:
            for _ in range(50):
                done = subprocess.run(["userdel", name], check=False, capture_output=True)
                if done.returncode in (0, 6):  # removed, or no such user
                    break
                time.sleep(0.1)
        self.made.clear()

    def uid(self, name: str) -> int:
        import pwd

        return pwd.getpwnam(name).pw_uid


def engine_group(socket_path: str) -> str:
    st = os.stat(socket_path)
    if not stat.S_ISSOCK(st.st_mode) or st.st_mode & 0o060 != 0o060:
        engine_missing(f"{socket_path} is not a socket its group may use")
    return grp.getgrgid(st.st_gid).gr_name


class FreshTmp:
    """A private mount namespace with an empty tmpfs on ``/tmp``."""

    def __init__(self, tmp_options: str = "mode=1777") -> None:
        # What this Python needs from the old /tmp (a virtualenv there, say) is bound back
        # in place, through a descriptor of the old /tmp opened before the tmpfs hides it.
        # (--no-canonicalize: mount would read /proc/self/fd/3 as the new /tmp.)
        keep = [
            f'mkdir -p "{p}" && mount --no-canonicalize --bind'
            f' "/proc/self/fd/3/{p.relative_to("/tmp")}" "{p}"'
            for p in sorted(_topmost_under_tmp(_needed()))
            if p.is_dir()
        ]
        script = [f"exec 3</tmp && mount -t tmpfs -o {tmp_options} tmpfs /tmp", *keep]
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                " && ".join([*script, "echo ready", "exec sleep 3600 3<&-"]),
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if self.holder.stdout is None or self.holder.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the private mount namespace did not start")
        self.root = Path(f"/proc/{self.holder.pid}/root")
        self._open_python()

    def path(self, inside: str) -> Path:
        """A path inside the namespace, as seen from outside it."""
        return self.root / inside.lstrip("/")

    def command(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> list[str]:
        """``argv`` in the namespace, as ``user`` (root if None), with only ``env`` set;
        ``groups``: supplementary groups of the process, whatever /etc/group lists."""
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(ROOT),
            "HOME": "/tmp",
        }
        room = os.environ.get("PYTEST_IMAGEPRUNE_ENGINE_ROOM")
        if room:  # the test's own room in the engine's meeting place (conftest.engine_room)
            base["PYTEST_IMAGEPRUNE_ENGINE_ROOM"] = room
        variables = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        as_user: list[str] = []
        if user:
            extra = [a for g in groups for a in ("-G", g)]
            as_user = ["runuser", "-u", user, *(["-g", user] if extra else []), *extra, "--"]
        # nsenter's --wd opens its folder before entering: env's -C changes to it inside.
        enter = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        return [*enter, *as_user, "env", "-i", "-C", cwd, *variables, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 120, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, **kw),  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(argv, **kw),  # type: ignore[arg-type]
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def sh(self, script: str, *, user: str | None = None) -> str:
        """Run a shell script in the namespace; its output (it must succeed)."""
        done = self.run(["sh", "-euc", script], user=user)
        if done.returncode != 0:
            raise RuntimeError(f"{script!r} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def close(self) -> None:
        """End every process in the namespace (all started here), the holder last."""
        try:
            namespace = os.stat(f"/proc/{self.holder.pid}/ns/mnt").st_ino
        except OSError:
            namespace = None
        if namespace is not None:
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == self.holder.pid:
                    continue
                try:
                    if os.stat(f"/proc/{entry}/ns/mnt").st_ino == namespace:
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    continue  # gone meanwhile, or not ours to see
        if self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait()

    def _open_python(self) -> None:
        """Let other users run this Python and import this checkout, paths unchanged.

        A folder on the way that others may not enter (``/root``, 0700, holding pyenv; tox's
        ``.tox``, 0700, in a clone under ``/tmp``) is covered, in this namespace only, by a
        tmpfs they may enter, with what is needed bound back in place. (What lives under
        ``/tmp`` was bound in place at the start, so the same paths hold here.)
        """
        pairs: dict[Path, set[str]] = {}
        for path in _needed():
            for parent in reversed(path.parents):
                child = path.relative_to(parent).parts[0]
                if parent.stat().st_mode & 0o001 == 0:
                    pairs.setdefault(parent, set()).add(child)
        for parent in sorted(pairs, key=lambda p: len(p.parts)):
            lines = ["mkdir -p /tmp/.keep"]
            for n, child in enumerate(sorted(pairs[parent])):
                source = parent / child
                lines.append(f"mkdir -p /tmp/.keep/{n} && mount --bind '{source}' /tmp/.keep/{n}")
            lines.append(f"mount -t tmpfs -o mode=0755 tmpfs '{parent}'")
            for n, child in enumerate(sorted(pairs[parent])):
                target = parent / child
                make = "mkdir" if (parent / child).is_dir() else "touch"
                lines.append(f"{make} '{target}' && mount --move /tmp/.keep/{n} '{target}'")
            lines.append("rm -rf /tmp/.keep")
            self.sh("\n".join(lines))


def _needed() -> set[Path]:
    """The folders this Python and this checkout live in, as real paths."""
    needed = {Path(sys.executable).parent, Path(os.path.realpath(sys.executable)), ROOT}
    needed |= {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    needed |= {Path(p) for p in sys.path if p and os.path.exists(p)}
    return {Path(os.path.realpath(p)) for p in needed}


def _topmost_under_tmp(paths: set[Path]) -> set[Path]:
    """Those under ``/tmp``, only the topmost of each (a clone's root, not its venv)."""
    under = {p for p in paths if Path("/tmp") in p.parents}
    return {p for p in under if not any(q in p.parents for q in under)}


#: A unix socket at argv[1], of mode argv[3] and group argv[4], forwarding to argv[2]: an
#: engine socket with another mode, the real one untouched.
SOCKET_PROXY = """
import grp, os, socket, sys, threading
path, target, mode, group = sys.argv[1], sys.argv[2], int(sys.argv[3], 8), sys.argv[4]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chown(path, -1, grp.getgrnam(group).gr_gid)
os.chmod(path, mode)
server.listen(64)
print("ready", flush=True)

def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

while True:
    client, _ = server.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
"""


@contextlib.contextmanager
def fresh_tmp(tmp_options: str = "mode=1777") -> Iterator[FreshTmp]:
    namespace = FreshTmp(tmp_options)
    try:
        yield namespace
    finally:
        namespace.close()
