"""The lean HTTP/1.1 client against a scripted peer on a unix socket.

The engine tests run it against real engines; this feeds it what they answer only now and
then: chunked bodies with extensions and trailers, a connection closed while idle, a body
cut short, interim answers, and what is not HTTP at all.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_imageprune.engine.api import Conflict, EngineError, Gone, ObjectKind
from pytest_imageprune.engine.client import DockerEngine
from pytest_imageprune.engine.transport import UnixConnection, UnixHTTP
from pytest_imageprune.errors import EngineUnavailable


class Cut(bytes):
    """A reply after which the peer closes the connection."""


class Peer:
    """Accepts connections and answers each request with the next scripted reply.

    A reply of ``None`` closes the connection instead of answering; a ``Cut`` reply
    closes it after answering.
    """

    def __init__(self, path: Path, replies: list[bytes | None]) -> None:
        self.path = path
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            file = conn.makefile("rb")
            try:
                self._answer(conn, file)
            finally:
                file.close()
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _answer(self, conn: socket.socket, file: BinaryIO) -> None:
        while self.replies:
            request = b""
            while not request.endswith(b"\r\n\r\n"):
                line = file.readline()
                if not line:
                    return
                request += line
            self.requests.append(request)
            reply = self.replies.pop(0)
            if reply is None:
                return
            conn.sendall(reply)
            if isinstance(reply, Cut):
                return

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are short: pytest's tmp_path may be too long for one.
    with tempfile.TemporaryDirectory(prefix="iph-") as folder:
        yield Path(folder)


def serve(folder: Path, *replies: bytes | None) -> tuple[Peer, UnixHTTP]:
    peer = Peer(folder / "s.sock", list(replies))
    return peer, UnixHTTP(f"unix://{peer.path}", str(peer.path), timeout=5)


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers) or f"Content-Length: {len(body)}\r\n"
    return b"HTTP/1.1 200 OK\r\n" + head.encode() + b"\r\n" + body


def test_content_length_and_chunked_answers_on_one_connection(sock_dir: Path) -> None:
    chunked = b"3\r\n[1,\r\n1;ext=1\r\n2\r\n1\r\n]\r\n0\r\nTrailer: x\r\n\r\n"
    peer, http = serve(sock_dir, ok(b'{"a": 1}'), ok(chunked, "Transfer-Encoding: chunked"))
    assert http.call("GET", "/one") == {"a": 1}
    assert http.call("GET", "/two") == [1, 2]
    assert peer.connections == 1
    assert peer.requests[0].startswith(b"GET /one HTTP/1.1\r\n")
    http.close()
    peer.close()


def test_a_get_on_a_connection_closed_while_idle_is_asked_again(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, ok(b"1"), None, ok(b"2"))
    assert http.call("GET", "/x") == 1
    assert http.call("GET", "/x") == 2  # the engine closed the idle connection
    assert peer.connections == 2
    http.close()
    peer.close()


def test_an_engine_gone_after_an_answer_is_unavailable_once(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, ok(b"1"), None)
    assert http.call("GET", "/x") == 1
    peer.close()  # nobody listens any more: the retry must not loop
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")


def test_a_delete_is_never_sent_twice(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, ok(b"1"), None, ok(b"[]"))
    assert http.call("GET", "/x") == 1
    with pytest.raises(EngineUnavailable):
        http.call("DELETE", "/images/x")  # it may have been carried out
    assert [r.split(b" ")[0] for r in peer.requests] == [b"GET", b"DELETE"]
    http.close()
    peer.close()


def test_a_body_cut_short_is_an_unavailable_engine(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, Cut(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1,"))
    with pytest.raises(EngineUnavailable, match="short"):
        http.call("GET", "/x")
    peer.close()


@pytest.mark.parametrize("connection", ["", "Connection: close\r\n"])
def test_a_body_without_length_ends_with_the_connection(sock_dir: Path, connection: str) -> None:
    reply = f"HTTP/1.1 200 OK\r\n{connection}\r\n[3]".encode()
    peer, http = serve(sock_dir, Cut(reply), ok(b"4"))
    assert http.call("GET", "/x") == [3]
    assert http.call("GET", "/x") == 4  # on a new connection: that one ended
    assert peer.connections == 2
    http.close()
    peer.close()


def test_an_http_1_0_answer_closes_the_connection(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, Cut(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n5"), ok(b"6"))
    assert http.call("GET", "/x") == 5
    assert http.call("GET", "/x") == 6
    assert peer.connections == 2
    http.close()
    peer.close()


def test_interim_answers_are_skipped(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"7"), ok(b"8"))
    assert http.call("GET", "/x") == 7
    assert http.call("GET", "/x") == 8  # in step: the interim answer was not taken as one
    http.close()
    peer.close()


def test_a_request_sent_early_is_answered_later(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, ok(b"[1]"), ok(b"[2]"))
    http.send("GET", "/early")
    assert peer.requests == [] or peer.requests[0].startswith(b"GET /early ")
    assert http.receive("GET", "/early") == [1]
    assert http.call("GET", "/next") == [2]
    http.close()
    peer.close()


def test_ctrl_c_mid_answer_leaves_no_half_read_connection(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, http = serve(sock_dir, ok(b"1"), ok(b"2"))
    body = UnixConnection.__dict__["_body"]  # the staticmethod itself

    def interrupted(*args: object) -> bytes:
        monkeypatch.setattr(UnixConnection, "_body", body)
        raise KeyboardInterrupt

    monkeypatch.setattr(UnixConnection, "_body", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        http.call("GET", "/x")
    assert http.call("GET", "/x") == 2  # a new connection, not the rest of the first answer
    assert peer.connections == 2
    http.close()
    peer.close()


def test_closing_wakes_a_reader_blocked_in_another_thread(sock_dir: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_dir / "mute.sock"))
    server.listen()  # accepts, never answers
    conn = UnixConnection(str(sock_dir / "mute.sock"), timeout=60)
    conn.request("GET", "/x")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            conn.response()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0.2)
    closer = threading.Thread(target=conn.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive()  # closing did not wait for the 60 s timeout
    reader.join(5)
    assert not reader.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    server.close()


@pytest.mark.parametrize(("status", "error"), [(404, Gone), (409, Conflict), (500, EngineError)])
def test_error_statuses_carry_the_engines_message(
    sock_dir: Path, status: int, error: type[Exception]
) -> None:
    body = b'{"message": "no such image"}'
    reply = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    peer, http = serve(sock_dir, reply)
    with pytest.raises(error, match="no such image"):
        http.call("GET", "/x")
    http.close()
    peer.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    ],
)
def test_what_is_not_http_is_an_unavailable_engine(sock_dir: Path, reply: bytes) -> None:
    peer, http = serve(sock_dir, Cut(reply))
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")
    peer.close()


def test_nobody_listening_is_an_unavailable_engine(sock_dir: Path) -> None:
    http = UnixHTTP("unix:///nowhere", str(sock_dir / "none.sock"), timeout=5)
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")


# -- what DockerEngine sends: every path is built in engine/ -------------------------------


def answer(status: int, body: bytes) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def lines(peer: Peer) -> list[bytes]:
    return [request.split(b"\r\n", 1)[0] for request in peer.requests]


def test_the_build_cache_prune_sends_one_anchored_id_regex(sock_dir: Path) -> None:
    """Only the IDs and ``all`` go (Docker 20.10 takes no date in until; a description,
    with its spaces, cannot pass the engine's filter syntax)."""
    peer = Peer(sock_dir / "s.sock", [ok(b'{"CachesDeleted": ["new1"], "SpaceReclaimed": 3}')])
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    assert engine.prune_cache(["new1", "new2"], all=False)["SpaceReclaimed"] == 3
    assert lines(peer) == [
        b"POST /build/prune?all=0&filters=%7B%22id%22%3A%20%5B%22%5E%28new1%7Cnew2%29%24%22%5D%7D"
        b" HTTP/1.1"
    ]
    engine.close()
    peer.close()


@pytest.mark.parametrize(
    ("api", "path"), [("1.41", b"/system/df"), ("1.42", b"/system/df?type=build-cache")]
)
def test_disk_usage_asks_for_one_kind_from_api_1_42(sock_dir: Path, api: str, path: bytes) -> None:
    version = json.dumps({"ApiVersion": api, "Version": "20.10.24"}).encode()
    replies = [ok(version), ok(b'{"Driver": "overlay2"}'), ok(b'{"BuildCache": []}')]
    peer = Peer(sock_dir / "s.sock", list(replies))
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    assert engine.disk_usage("build-cache") == {"BuildCache": []}
    assert lines(peer)[-1] == b"GET " + path + b" HTTP/1.1"
    engine.close()
    peer.close()


@pytest.mark.parametrize(
    ("kind", "status", "message", "in_use"),
    [
        ("networks", 403, "error while removing network: n1 has active endpoints", True),
        ("networks", 500, "network n1 is being used", True),
        ("networks", 500, "boom", None),
        ("volumes", 403, "forbidden", None),
        ("volumes", 409, "remove v1: volume is in use - [c1]", True),
        ("containers", 409, "You cannot remove a running container", True),
    ],
)
def test_a_refused_removal_is_typed_at_the_boundary(
    sock_dir: Path, kind: ObjectKind, status: int, message: str, in_use: bool | None
) -> None:
    """A network with active endpoints: Docker answers 403, Podman 500; it is a conflict
    held by a container (``in_use``), which nobody outside engine/ reads from the words."""
    body = json.dumps({"message": message}).encode()
    peer = Peer(sock_dir / "s.sock", [answer(status, body)])
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    with pytest.raises(EngineError if in_use is None else Conflict) as raised:
        engine.remove(kind, "n1")
    assert lines(peer) == [f"DELETE /{kind}/n1 HTTP/1.1".encode()]
    assert message in str(raised.value)
    if in_use is not None:
        assert isinstance(raised.value, Conflict)
        assert raised.value.in_use is in_use
    else:
        assert isinstance(raised.value, EngineError)
        assert raised.value.status == status
        assert str(raised.value) == f"{status}: {message}"
    engine.close()
    peer.close()


def test_an_image_conflict_says_whether_a_container_holds_it(sock_dir: Path) -> None:
    prefix = "conflict: unable to delete abc"
    held = json.dumps({"message": f"{prefix} - image is being used by stopped container 0"})
    children = json.dumps({"message": f"{prefix} (cannot be forced) - image has dependent child"})
    peer = Peer(sock_dir / "s.sock", [answer(409, held.encode()), answer(409, children.encode())])
    http = UnixHTTP(f"unix://{peer.path}", str(peer.path), timeout=5)
    with pytest.raises(Conflict) as first:
        http.call("DELETE", "/images/abc")
    with pytest.raises(Conflict) as second:
        http.call("DELETE", "/images/abc")
    assert (first.value.in_use, second.value.in_use) == (True, False)
    http.close()
    peer.close()


def test_a_container_and_an_image_are_quoted_in_one_place(sock_dir: Path) -> None:
    peer = Peer(sock_dir / "s.sock", [ok(b"{}"), ok(b"{}"), ok(b"{}")])
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    engine.container("c1", size=True)
    engine.container("c1")
    engine.inspect("ghcr.io/o/app@sha256:ab")
    assert lines(peer) == [
        b"GET /containers/c1/json?size=1 HTTP/1.1",
        b"GET /containers/c1/json HTTP/1.1",
        b"GET /images/ghcr.io/o/app@sha256:ab/json HTTP/1.1",
    ]
    engine.close()
    peer.close()


@pytest.mark.parametrize("failures", [1, 3, 4])
def test_a_listing_podman_failed_for_an_image_removed_meanwhile_is_asked_again(
    sock_dir: Path, failures: int
) -> None:
    """Podman fails ``GET /images/json`` with 500 "image not known" when another client
    removes an image while it lists (seen in CI: the session's prune failed); the listing
    is asked again, up to three times, and any other error stands at once."""
    gone = json.dumps({"message": 'reading image "ab": locating image "ab": image not known'})
    replies = [answer(500, gone.encode())] * failures + [ok(b"[]"), ok(b"[]")]
    peer = Peer(sock_dir / "s.sock", list[bytes | None](replies))
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    if failures <= 3:
        assert engine.snapshot().images == {}
        assert lines(peer)[failures] == b"GET /images/json?all=1 HTTP/1.1"
    else:
        with pytest.raises(EngineError, match="image not known"):
            engine.snapshot()
        assert len(peer.requests) == 4
    engine.close()
    peer.close()


def test_a_listing_that_failed_otherwise_is_not_asked_again(sock_dir: Path) -> None:
    peer = Peer(sock_dir / "s.sock", [answer(500, b'{"message": "disk on fire"}'), ok(b"[]")])
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    with pytest.raises(EngineError, match="disk on fire"):
        engine.snapshot()
    assert len(peer.requests) == 1
    engine.close()
    peer.close()


@pytest.mark.parametrize(
    ("info", "key"),
    [
        ({"ID": "ABCD:EFGH", "DockerRootDir": "/var/lib/docker"}, "ABCD:EFGH /var/lib/docker"),
        ({"ID": "ABCD:EFGH", "DockerRootDir": "/srv/docker-2"}, "ABCD:EFGH /srv/docker-2"),
        ({"ID": "ABCD:EFGH"}, "ABCD:EFGH"),
        ({"DockerRootDir": "/var/lib/docker"}, ""),
    ],
)
def test_an_engine_is_told_apart_by_its_id_and_its_data_root(
    sock_dir: Path, info: dict[str, str], key: str
) -> None:
    """Docker 20.10 takes its ID from /etc/docker/key.json: every dockerd of one host
    reports the same one, and they met in one place (issue 20's probe); the data root
    tells them apart."""
    version = json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode()
    info_body = json.dumps({"Driver": "overlay2", **info}).encode()
    peer = Peer(sock_dir / "s.sock", [ok(version), ok(info_body)])
    engine = DockerEngine(endpoint=f"unix://{peer.path}")
    assert engine.engine_id == key
    engine.close()
    peer.close()
