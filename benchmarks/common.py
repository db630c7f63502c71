"""Shared helpers for the benchmarks: many small labelled images, fast, and medians.

Images come from ``docker load`` of an archive made here (each image its own small layer
and its own label), which makes a thousand images in seconds; nothing is pulled.

The package is timed as installed: an install from a wheel writes its bytecode, an
editable one under ``PYTHONDONTWRITEBYTECODE`` would compile every module at each start
(about 30 ms here), so importing this writes it first (``compileall``). Pytest rewrites the
asserts of every module of a plugin it loads and caches the result as bytecode of its own
(``*-pytest-*.pyc``), unless bytecode is not written: the sessions ``run`` starts are let
write it, as a user's are (under ``PYTHONDONTWRITEBYTECODE`` every session rewrote and
compiled each of the plugin's modules again: some 300 ms here, on the plugin's side only).
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import docker

import pytest_imageprune

compileall.compile_dir(Path(pytest_imageprune.__file__).parent, quiet=1)


def client() -> docker.APIClient:
    return docker.APIClient(version="auto", timeout=600, **docker.utils.kwargs_from_env())


def archive(count: int, labels: dict[str, str], salt: str) -> bytes:
    """A ``docker save`` archive of ``count`` untagged labelled images.

    They share one small layer: loading a thousand images that each have a layer of their
    own takes the engine minutes here (it unpacks every one), and the deletions the
    benchmark compares cost the engine the same either way.
    """
    blobs: dict[str, bytes] = {}
    manifest = []
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = f"{salt}\n".encode() * 20
        info = tarfile.TarInfo("file")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    digest = hashlib.sha256(layer_bytes).hexdigest()
    blobs[f"{digest}.tar"] = layer_bytes
    for n in range(count):
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {"Labels": {**labels, "n": str(n)}},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]},
            }
        ).encode()
        name = hashlib.sha256(config).hexdigest() + ".json"
        blobs[name] = config
        manifest.append({"Config": name, "RepoTags": None, "Layers": [f"{digest}.tar"]})
    blobs["manifest.json"] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def load(api: docker.APIClient, count: int, labels: dict[str, str]) -> None:
    for _ in api.load_image(archive(count, labels, uuid.uuid4().hex)):
        pass


def remove_labelled(api: docker.APIClient, label: str) -> None:
    for image in api.images(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_image(image["Id"], force=True)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """``argv`` in ``cwd``, writing bytecode (pytest's rewritten modules' too)."""
    written = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env={**written, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{argv} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def tiny_project(seconds: float = 0.0, conftest_seconds: float = 0.0) -> Path:
    """A folder with 20 tests that take ``seconds`` in all: the session the plugin rides on.

    With ``conftest_seconds``, its conftest takes that long to load, as a project's heavy
    imports do.
    """
    root = Path(tempfile.mkdtemp(prefix="imageprune-bench-"))
    (root / "test_tiny.py").write_text(
        "import time\n\nimport pytest\n\n"
        "@pytest.mark.parametrize('n', range(20))\ndef test_n(n):\n"
        f"    time.sleep({seconds / 20!r})\n    assert n >= 0\n"
    )
    if conftest_seconds:
        (root / "conftest.py").write_text(f"import time\n\ntime.sleep({conftest_seconds!r})\n")
    # Hypothesis, a test dependency of this project, would add 0.8 s to every start-up.
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider -p no:hypothesispytest -q\n"
    )
    return root


PYTEST = [sys.executable, "-m", "pytest"]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"
