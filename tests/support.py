"""Helpers for tests on a real engine: tiny images from an in-memory context, a private dockerd.

Nothing is pulled: every image is built ``FROM scratch`` (or from another test image) by
the classic builder, which records real parent and child images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class EngineUnderTest:
    name: str  # the test ID: one of conftest.ENGINES
    host: str  # its DOCKER_HOST
    kind: str  # "docker" or "podman"
    store: str  # "classic", "containerd" (Docker's containerd image store) or "podman"


def engine_missing(reason: str) -> None:
    """Skip on a laptop without an engine; under ``CI=true`` a missing engine is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def connect(base_url: str | None = None) -> docker.APIClient:
    """A client of ``base_url``; without one, of the engine under test.

    That is ``IMAGEPRUNE_TEST_HOST`` where a test names it (the ``ns`` fixture does: a test
    may point ``DOCKER_HOST`` elsewhere or unset it, to see the plugin choose its engine,
    and its images must still be built where the plugin prunes), else the engine that
    ``DOCKER_HOST`` and the TLS variables name.
    """
    if not base_url:
        test_host = os.environ.get(TEST_HOST_VARIABLE, "")
        if test_host and test_host != os.environ.get("DOCKER_HOST", ""):
            base_url = test_host
    kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
    if not base_url:
        kwargs.update(docker.utils.kwargs_from_env())
    return docker.APIClient(version="auto", timeout=120, **kwargs)


#: The engine under test, for the pytest sessions a test runs (see ``connect``).
TEST_HOST_VARIABLE = "IMAGEPRUNE_TEST_HOST"
#: Every ``(key, value)`` label this run's tests put on what they build or create on a
#: shared engine (``tests/conftest.py`` checks at the end that nothing so labelled is left).
SUITE_LABELS: set[tuple[str, str]] = set()


def leftovers(client: docker.APIClient, labels: set[tuple[str, str]]) -> list[str]:
    """What carries one of ``labels`` on the engine: containers, images, networks, volumes."""
    found = []
    for key in sorted({key for key, _ in labels}):
        for container in client.containers(all=True, filters={"label": key}):
            value = (container.get("Labels") or {}).get(key)
            if (key, value) in labels:
                found.append(f"container {container['Id'][:12]} ({key}={value})")
        for image in client.images(all=True, filters={"label": key}):
            value = (image.get("Labels") or {}).get(key)
            if (key, value) in labels:
                found.append(f"image {full_id(image['Id'])[7:19]} ({key}={value})")
        for network in client.networks(filters={"label": key}) or []:
            value = (network.get("Labels") or {}).get(key)
            if (key, value) in labels:
                found.append(f"network {network['Name']} ({key}={value})")
        for volume in (client.volumes(filters={"label": key}) or {}).get("Volumes") or []:
            value = (volume.get("Labels") or {}).get(key)
            if (key, value) in labels:
                found.append(f"volume {volume['Name']} ({key}={value})")
    return found


def remove_leftovers(client: docker.APIClient, labels: set[tuple[str, str]]) -> None:
    """Remove what carries one of ``labels``: containers, networks and volumes, then images,
    children first."""
    keys = sorted({key for key, _ in labels})
    for key in keys:
        for container in client.containers(all=True, filters={"label": key}):
            if (key, (container.get("Labels") or {}).get(key)) in labels:
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_container(container["Id"], force=True)
        for network in client.networks(filters={"label": key}) or []:
            if (key, (network.get("Labels") or {}).get(key)) in labels:
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_network(network["Id"])
        for volume in (client.volumes(filters={"label": key}) or {}).get("Volumes") or []:
            if (key, (volume.get("Labels") or {}).get(key)) in labels:
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_volume(volume["Name"], force=True)
    for _ in range(20):
        images = [
            image
            for key in keys
            for image in client.images(all=True, filters={"label": key})
            if (key, (image.get("Labels") or {}).get(key)) in labels
        ]
        if not images:
            return
        parents = {full_id(i["ParentId"]) for i in images if i.get("ParentId")}
        for image in images:
            if full_id(image["Id"]) not in parents:
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_image(image["Id"], force=True)


def build_context(dockerfile: str, files: dict[str, bytes] | None = None) -> io.BytesIO:
    """A tar build context in memory, with fixed metadata so equal inputs give equal layers."""
    return io.BytesIO(
        _tar({"Dockerfile": dockerfile.encode(), **(files or {})}, mtime=1_600_000_000)
    )


def build(
    client: docker.APIClient,
    instructions: Sequence[str],
    *,
    base: str = "scratch",
    tag: str | None = None,
    files: dict[str, bytes] | None = None,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Build with the classic builder; return the image IDs of every step, oldest first.

    Docker links each step's image to the previous one (``Parent``). Podman (buildah) links
    the intermediate images but commits the last step with no parent, so there the steps
    are read from the build output (``--> 0af0bfa0271``, one line a step) instead.
    """
    lines = [f"FROM {base}"]
    lines += [f'LABEL {k}="{v}"' for k, v in (labels or {}).items()]
    lines += list(instructions)
    context = build_context("\n".join(lines) + "\n", files)
    final = None
    announced: list[str] = []
    for chunk in client.build(
        fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, decode=True
    ):
        if "error" in chunk:
            raise RuntimeError(f"build failed: {chunk['error']}")
        final = chunk.get("aux", {}).get("ID", final)
        step = _STEP_LINE.match(chunk.get("stream", ""))
        if step and step.group(1) not in announced:
            announced.append(step.group(1))
    if final is None:
        raise RuntimeError("build gave no image ID")
    steps = len(lines) - 1
    chain = [final]
    while len(chain) < steps:
        parent = client.inspect_image(chain[-1])["Parent"]  # type: ignore[no-untyped-call]
        if not parent:
            break
        chain.append(full_id(parent))
    if len(chain) < steps and len(announced) == steps:
        return [full_id(client.inspect_image(i)["Id"]) for i in announced]  # type: ignore[no-untyped-call]
    return list(reversed(chain))


#: A classic build's "this step made that image" line: `` ---> 16f4bcf94e15`` (Docker),
#: ``--> 0af0bfa0271`` (Podman).
_STEP_LINE = re.compile(r"^\s*-+> ([0-9a-f]{6,64})\s*$")


def full_id(image_id: str) -> str:
    """``sha256:<hex>``: Podman gives a parent as bare hex, Docker with the algorithm."""
    return image_id if ":" in image_id else f"sha256:{image_id}"


def image_ids(client: docker.APIClient) -> set[str]:
    return {i["Id"] for i in client.images(all=True)}


@contextlib.contextmanager
def emptied(socket: str) -> Iterator[docker.APIClient]:
    """A client of a private engine, emptied before and after (``remove_everything``)."""
    client = connect(socket)
    remove_everything(client)
    try:
        yield client
    finally:
        remove_everything(client)
        client.close()


def remove_everything(client: docker.APIClient) -> None:
    """Empty an engine (a private one only!): containers and volumes, then images,
    children first."""
    for container in client.containers(all=True):
        client.remove_container(container["Id"], force=True)
    for volume in (client.volumes() or {}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.remove_volume(volume["Name"], force=True)
    for _ in range(50):
        images = client.images(all=True)
        if not images:
            return
        parents = {i.get("ParentId") for i in images}
        for image in images:
            if image["Id"] in parents:
                continue
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.remove_image(image["Id"], force=True, noprune=False)
    raise RuntimeError("could not empty the engine")


@dataclass
class PrivateDockerd:
    """A dockerd of our own: its own data root, exec root, pidfile and socket; no networking.

    With ``chroot``, the dockerd of that Debian root (``IMAGEPRUNE_TRIXIE_ROOT``, made by
    ``.ci/debian13-engines``) runs chrooted into it, in a private mount namespace: ``root``
    must then lie inside it, and the host reaches the socket under ``root`` as usual.
    """

    root: Path
    process: subprocess.Popen[bytes] | None = None
    #: Also listen here (``tcp://127.0.0.1:PORT``, loopback only), if set.
    tcp: str | None = None
    #: Run the dockerd of this root filesystem, chrooted into it (see ``in_root_command``).
    chroot: Path | None = None
    #: Its ``--config-file`` (a host path, inside ``chroot`` if set); unset: dockerd's default.
    config: Path | None = None

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def _seen_by_dockerd(self, path: Path) -> str:
        return str(path) if self.chroot is None else f"/{path.relative_to(self.chroot)}"

    def start(self, timeout: float = 60.0) -> None:
        # After a kill, the runtime state (containerd's socket and pid) is stale.
        shutil.rmtree(self.root / "exec", ignore_errors=True)
        (self.root / "dockerd.pid").unlink(missing_ok=True)
        log = (self.root / "dockerd.log").open("ab")
        inner = self._seen_by_dockerd(self.root)
        prefix = in_root_command(self.chroot) if self.chroot is not None else ["dockerd"]
        config = [f"--config-file={self._seen_by_dockerd(self.config)}"] if self.config else []
        self.process = subprocess.Popen(
            [
                *prefix,
                *config,
                f"--data-root={inner}/data",
                f"--exec-root={inner}/exec",
                f"--pidfile={inner}/dockerd.pid",
                f"--host=unix://{inner}/docker.sock",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                *([f"--host={self.tcp}"] if self.tcp else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"private dockerd exited: {self.log_tail()}")
            try:
                connect(self.socket).ping()
                return
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"private dockerd did not answer in {timeout}s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill(self) -> None:
        """The engine dies: SIGKILL to dockerd and the containerd it started."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def log_tail(self, lines: int = 15) -> str:
        path = self.root / "dockerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def in_root_command(chroot: Path) -> list[str]:
    """``dockerd`` of the root filesystem ``chroot``, as ``.ci/debian13-engines`` runs it: in a
    private mount namespace, with ``chroot`` bind-mounted on itself (the classic builder needs
    it: ``remount /, flags: 0x84000: invalid argument`` without), proc, sys, dev and a tmpfs
    on ``/run``. Every step execs, so the process started is dockerd itself, and the mounts
    vanish with its namespace."""
    script = (
        'd="$1"; shift; mount --bind "$d" "$d"; mount -t proc proc "$d/proc";'
        ' mount --rbind /sys "$d/sys"; mount --rbind /dev "$d/dev";'
        ' mount -t tmpfs -o mode=755 tmpfs "$d/run";'
        ' exec chroot "$d" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        ' HOME=/root LANG=C.UTF-8 "$@"'
    )
    namespace = ["unshare", "--mount", "--propagation", "private"]
    return [*namespace, "sh", "-euc", script, "sh", str(chroot), "dockerd"]


@contextlib.contextmanager
def _running(daemon: PrivateDockerd) -> Iterator[PrivateDockerd]:
    """Start ``daemon``; afterwards stop it, unmount its data root and remove its folder."""
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        subprocess.run(["umount", "-R", f"{daemon.root}/data"], capture_output=True, check=False)
        shutil.rmtree(daemon.root, ignore_errors=True)


@contextlib.contextmanager
def private_dockerd(tcp: str | None = None) -> Iterator[PrivateDockerd]:
    """Start a private dockerd (root and ``dockerd`` needed), stop and remove it afterwards."""
    if shutil.which("dockerd") is None:
        engine_missing("no dockerd binary for a private engine")
    if os.geteuid() != 0:
        engine_missing("a private dockerd needs root")
    # Short path: unix socket paths are limited to about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="ipd-", dir="/tmp"))
    with _running(PrivateDockerd(root, tcp=tcp)) as daemon:
        yield daemon


@contextlib.contextmanager
def private_podman() -> Iterator[str]:
    """Start a private, empty Podman service (Debian's podman through ``.ci/podman-service``,
    in a folder of its own: its storage, volumes and socket); yield its socket's URL; stop
    and remove it afterwards."""
    if shutil.which("podman") is None:
        engine_missing("no podman binary for a private Podman service")
    if os.geteuid() != 0:
        engine_missing("a private Podman service needs root")
    root = Path(tempfile.mkdtemp(prefix="ipp-", dir="/tmp"))
    script = Path(__file__).resolve().parent.parent / ".ci" / "podman-service"
    env = {**os.environ, "PODMAN_SERVICE_DIR": str(root)}
    try:
        started = subprocess.run(
            [str(script), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if started.returncode != 0:
            raise RuntimeError(f"a private Podman service did not start: {started.stderr[-2000:]}")
        yield f"unix://{started.stdout.strip().splitlines()[-1]}"
    finally:
        subprocess.run(
            [str(script), "stop"], env=env, capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


#: Where ``.ci/debian13-engines`` made the Debian 13 root (``.ci/run`` sets it).
TRIXIE_ROOT_VARIABLE = "IMAGEPRUNE_TRIXIE_ROOT"


@contextlib.contextmanager
def private_c8d_dockerd() -> Iterator[PrivateDockerd]:
    """A private, empty Docker 26.1 on the containerd image store: the dockerd of the Debian 13
    root named by ``IMAGEPRUNE_TRIXIE_ROOT``, with a fresh data root and socket inside it;
    stopped and removed afterwards. Root needed."""
    trixie = os.environ.get(TRIXIE_ROOT_VARIABLE, "")
    if not trixie:
        engine_missing(
            f"{TRIXIE_ROOT_VARIABLE} names no Debian 13 root (.ci/debian13-engines root makes one)"
        )
    chroot = Path(trixie).resolve()
    if not (chroot / "usr/sbin/dockerd").is_file():
        engine_missing(f"{TRIXIE_ROOT_VARIABLE}={trixie} holds no usr/sbin/dockerd")
    if os.geteuid() != 0:
        engine_missing("a private dockerd needs root")
    # Inside the root, where dockerd sees it; the host path must stay short for the socket.
    root = Path(tempfile.mkdtemp(prefix="ipc8d-", dir=chroot / "tmp"))
    config = root / "daemon.json"
    config.write_text(json.dumps({"features": {"containerd-snapshotter": True}}))
    with _running(PrivateDockerd(root, chroot=chroot, config=config)) as daemon:
        client = connect(daemon.socket)
        try:
            status = dict(client.info().get("DriverStatus") or [])
        finally:
            client.close()
        if status.get("driver-type") != "io.containerd.snapshotter.v1":
            raise RuntimeError(f"the private dockerd is not on the containerd store: {status}")
        yield daemon


@contextlib.contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[None]:
    """``path`` locked by another process (a ``filelock.FileLock``) until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import filelock, time; lock = filelock.FileLock({str(path)!r}); lock.acquire();"
            " print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout is None or holder.stdout.readline().strip() != "held":
            raise RuntimeError("the lock holder did not start")
        yield
    finally:
        holder.kill()
        holder.wait()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A layer: a tar of ``files``, with fixed metadata so equal inputs give equal layers."""
    return _tar(files, mtime=1_600_000_000)


def image_archive(
    images: Sequence[tuple[str | None, dict[str, str], Sequence[bytes]]],
    created: str = "2024-01-01T00:00:00Z",
) -> bytes:
    """A ``docker save`` archive: for each image, its tag (or None), labels and layer tars;
    each says it was ``created`` then.

    ``docker load`` makes images without parent links from it, as pulled or BuildKit images
    are, in seconds and without a registry.
    """
    blobs: dict[str, bytes] = {}
    manifest = []
    for tag, labels, layers in images:
        names = []
        for layer in layers:
            digest = hashlib.sha256(layer).hexdigest()
            blobs[f"{digest}/layer.tar"] = layer
            names.append(f"{digest}/layer.tar")
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": created,
                "config": {"Labels": labels},
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers],
                },
                "history": [{"created": created} for _ in layers],
            }
        ).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        blobs[config_name] = config
        manifest.append(
            {"Config": config_name, "RepoTags": [tag] if tag else None, "Layers": names}
        )
    blobs["manifest.json"] = json.dumps(manifest).encode()
    return _tar(blobs)


def _tar(files: dict[str, bytes], mtime: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def assert_usage_error(pytester: Any, args: Sequence[str], message: str) -> None:
    """A pytest run with ``args`` stops with a usage error whose first line is ``message``,
    before any test runs, and without a traceback."""
    import pytest

    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == f"ERROR: {message}"
    assert "ran" not in result.stdout.str()
    assert "Traceback" not in result.stderr.str()
