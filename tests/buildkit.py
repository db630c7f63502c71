"""Run a real BuildKit build against a Docker endpoint with the docker CLI (DOCKER_BUILDKIT=1).

The CLI must do BuildKit by itself: a CLI older than 23 (Debian 12's docker.io, /usr/bin/docker,
which builds against Docker 20.10 and 26.1 alike), or a newer one whose buildx plugin answers.
IMAGEPRUNE_DOCKER_CLI names the CLI to use instead of looking for one.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _run(cli: str, *args: str, host: str | None = None, timeout: float = 30, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env.update(DOCKER_BUILDKIT="1", DOCKER_CLI_HINTS="false")
    cmd = [cli, *(["--host", host] if host else []), *args]
    return subprocess.run(
        cmd,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


@functools.cache
def _cli() -> tuple[str | None, str]:
    """(path of a docker CLI that does BuildKit, or None; why none does)."""
    wanted = os.environ.get("IMAGEPRUNE_DOCKER_CLI")
    paths = [wanted] if wanted else ["/usr/bin/docker", shutil.which("docker")]
    why = []
    for path in dict.fromkeys(p for p in paths if p and os.access(p, os.X_OK)):
        try:
            ver = _run(path, "version", "--format", "{{.Client.Version}}").stdout.strip()
            major = int(ver.split(".")[0])
            if major < 23 or _run(path, "buildx", "version").returncode == 0:
                return path, ""
            why.append(f"{path} is docker {ver} without the buildx plugin")
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            why.append(f"{path}: {e}")
    return None, "; ".join(why) or "no docker CLI found"


def buildkit_available(host: str) -> str | None:
    """None when buildkit_build(host, ...) can work, else the reason it cannot."""
    cli, why = _cli()
    if cli is None:
        return why
    try:
        r = _run(
            cli, "version", "--format", "{{range .Server.Components}}{{.Name}};{{end}}", host=host
        )
    except subprocess.SubprocessError as e:
        return f"{host}: {e}"
    if r.returncode != 0 or not r.stdout.strip():
        return f"{host} does not answer: {(r.stderr or r.stdout).strip()[-300:]}"
    if "Podman" in r.stdout:
        return f"{host} is Podman, which has no BuildKit"
    return None


def buildkit_build(
    host: str,
    tag: str,
    *,
    labels: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    timeout: float = 120,
) -> str:
    """Build FROM scratch with BuildKit on host: COPY files (plus a random one, so the build
    cache records are new), LABEL labels; tag it. Returns the image ID (sha256:...)."""
    cli, why = _cli()
    if cli is None:
        raise RuntimeError(why)
    files = {**(files or {}), ".imageprune-nonce": os.urandom(16).hex().encode()}
    with tempfile.TemporaryDirectory(prefix="imageprune-bk-") as tmp:
        ctx = Path(tmp, "ctx")
        ctx.mkdir()
        lines = ["FROM scratch"]
        for name, data in files.items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / name).write_bytes(data)
            lines.append(f"COPY {json.dumps([name, '/' + name])}")
        lines += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (labels or {}).items()]
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        iidfile = Path(tmp, "iid")
        r = _run(
            cli,
            "build",
            "--progress=plain",
            "--iidfile",
            str(iidfile),
            "--tag",
            tag,
            str(ctx),
            host=host,
            timeout=timeout,
        )
        if r.returncode != 0 or not iidfile.exists():
            raise RuntimeError(
                f"BuildKit build of {tag} on {host} failed ({r.returncode}):\n"
                f"{(r.stderr + r.stdout)[-2000:]}"
            )
        return iidfile.read_text().strip()
