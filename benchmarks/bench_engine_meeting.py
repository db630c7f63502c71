"""What it costs for sessions to meet in the engine: each candidate mechanism, side by side.

    python benchmarks/bench_engine_meeting.py [--rounds 15] [--baseline 2000]
        (DOCKER_HOST names the engine: a unix socket)

Sessions that share an engine and nothing else (CI jobs in containers on one host's socket,
hosts over tcp) can only meet in the engine (issue 20). A session would keep there a lease
(renewed while it lives), its record (filters, start, baseline: up to thousands of image
IDs), and take one engine-wide lock while it prunes. This measures, on the engine named by
``DOCKER_HOST``, one request each, median of ``--rounds``:

- a **labelled volume** (a lease, a small record): create, list by label, remove; and one
  whose labels hold a ``--baseline``-image record (IDs compressed into one label);
- a **record image** imported from a tiny tar (``POST /images/create?fromSrc=-``), read back
  (``GET /images/{name}/get``), removed;
- a **lock by name**: what answers a second create of the same name (a volume, a network,
  a container of the record image): only a conflict (409) makes a lock.

It prints each step's median in ms, the total a session would pay (join, and leave), and
what each engine answered to the second create. Nothing is left behind (everything made is
named ``pytest-imageprune-bench-*``).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import secrets
import socket
import statistics
import tarfile
import time
import urllib.parse
import zlib

PREFIX = "pytest-imageprune-bench"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


class Engine:
    """One keep-alive connection to the engine's unix socket."""

    def __init__(self, host: str) -> None:
        if not host.startswith("unix://"):
            raise SystemExit(f"DOCKER_HOST={host}: a unix socket is needed here")
        self.conn = _UnixConnection(host.removeprefix("unix://"))

    def ask(
        self, method: str, path: str, body: bytes | None = None, content: str = "application/json"
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": content} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def _q(**params: str) -> str:
    return urllib.parse.urlencode(params)


def _record_tar(record: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("record.json")
        info.size, info.mtime = len(record), 0
        tar.addfile(info, io.BytesIO(record))
    return out.getvalue()


def _imported_id(answer: bytes) -> str:
    for line in reversed(answer.decode().splitlines()):
        status = str(json.loads(line).get("status") or json.loads(line).get("id") or "")
        if status.startswith("sha256:") or len(status) == 64:
            return status.removeprefix("sha256:")
    raise SystemExit(f"image: import: no ID in {answer[:300]!r}")


def _baseline_label(count: int) -> str:
    ids = [secrets.token_hex(32) for _ in range(count)]
    return base64.b64encode(zlib.compress(json.dumps(ids).encode(), 9)).decode()


class Rounds:
    """The times of each step, and what a second create of one name answered."""

    def __init__(self, engine: Engine, big: str) -> None:
        self.engine = engine
        self.big = big
        self.times: dict[str, list[float]] = {}
        self.conflicts: dict[str, int] = {}

    def timed(
        self,
        step: str,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        ok: tuple[int, ...] = (200, 201, 204),
        content: str = "application/json",
    ) -> bytes:
        start = time.perf_counter()
        status, answer = self.engine.ask(method, path, body, content)
        self.times.setdefault(step, []).append((time.perf_counter() - start) * 1000)
        if status not in ok:
            raise SystemExit(f"{step}: {status} {answer[:300]!r}")
        return answer

    def again(self, kind: str, method: str, path: str, body: bytes) -> None:
        self.conflicts[kind] = self.engine.ask(method, path, body)[0]

    def one(self, n: int) -> None:
        name = f"{PREFIX}-{os.getpid()}-{n}"
        labels = {PREFIX: "lease", "started": str(time.time_ns())}
        spec = json.dumps({"Name": name, "Labels": labels}).encode()
        self.timed("volume: create", "POST", "/volumes/create", spec)
        self.again("volume", "POST", "/volumes/create", spec)
        flt = _q(filters=json.dumps({"label": [PREFIX]}))
        self.timed("volume: list by label", "GET", f"/volumes?{flt}")
        self.timed("volume: remove", "DELETE", f"/volumes/{name}")
        spec = json.dumps({"Name": name, "Labels": {PREFIX: "record", "baseline": self.big}})
        self.timed("volume+record: create", "POST", "/volumes/create", spec.encode())
        self.timed("volume+record: list", "GET", f"/volumes?{flt}")
        self.timed("volume+record: remove", "DELETE", f"/volumes/{name}")

        tar = _record_tar(json.dumps({"baseline": self.big}).encode())
        query = _q(fromSrc="-", repo=f"{PREFIX}-record", tag=str(n), changes=f"LABEL {PREFIX}=1")
        answer = self.timed(
            "image: import", "POST", f"/images/create?{query}", tar, content="application/x-tar"
        )
        # The imported image's ID, as the last line of the answer says it (Podman 4 names
        # an import otherwise than asked).
        ref = _imported_id(answer)
        self.timed("image: get (read back)", "GET", f"/images/{ref}/get")
        net = json.dumps({"Name": name, "Internal": True, "CheckDuplicate": True}).encode()
        self.timed("network: create", "POST", "/networks/create", net)
        self.again("network", "POST", "/networks/create", net)
        self.timed("network: remove", "DELETE", f"/networks/{name}")
        box = json.dumps({"Image": ref, "Cmd": ["/none"]}).encode()
        self.timed("container: create", "POST", f"/containers/create?{_q(name=name)}", box)
        self.again("container", "POST", f"/containers/create?{_q(name=name)}", box)
        self.timed("container: remove", "DELETE", f"/containers/{name}")
        self.timed("image: remove", "DELETE", f"/images/{ref}?force=1")

    def report(self) -> None:
        med = {step: statistics.median(values) for step, values in self.times.items()}
        for step, value in med.items():
            print(f"  {step:26} {value:8.2f}")
        look = med["volume: list by label"]
        record = sum(med[f"volume+record: {s}"] for s in ("create", "remove", "list"))
        image = med["image: import"] + med["image: remove"] + look
        print("\na session's cost, by mechanism (join + leave, plus one look at the others):")
        lease = med["volume: create"] + med["volume: remove"] + look
        print(f"  lease volume, no record:         {lease:8.2f}")
        print(f"  lease volume holding the record: {record:8.2f}")
        print(f"  record image (import, remove):   {image:8.2f}")
        print(f"  (a sweep reads a record image back: {med['image: get (read back)']:.2f})")
        print("\na second create of the same name answers (409: usable as a lock):")
        for kind, status in self.conflicts.items():
            print(f"  {kind:10} {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", type=int, default=2000, help="images in the big record")
    args = parser.parse_args()
    engine = Engine(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    about = json.loads(engine.ask("GET", "/version")[1])
    print(f"engine: {about.get('Version')} (API {about.get('ApiVersion')})")
    big = _baseline_label(args.baseline)
    print(f"a {args.baseline}-image baseline in one label: {len(big)} bytes")
    rounds = Rounds(engine, big)
    for n in range(args.rounds):
        rounds.one(n)
    print(f"\nmedians of {args.rounds} rounds, ms:")
    rounds.report()


if __name__ == "__main__":
    main()
