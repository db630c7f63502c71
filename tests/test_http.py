"""The lean HTTP/1.1 client against a scripted peer on a unix socket.

The engine tests run it against real engines; this feeds it what they answer only now and
then: chunked bodies split oddly, a connection closed while idle, a body cut short.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_imageprune.engine import EngineError, ImageGone, _UnixHTTP
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


def serve(folder: Path, *replies: bytes | None) -> tuple[Peer, _UnixHTTP]:
    peer = Peer(folder / "s.sock", list(replies))
    return peer, _UnixHTTP(f"unix://{peer.path}", str(peer.path), timeout=5)


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


def test_a_body_without_length_ends_with_the_connection(sock_dir: Path) -> None:
    peer, http = serve(sock_dir, Cut(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[3]"))
    assert http.call("GET", "/x") == [3]
    peer.close()


@pytest.mark.parametrize(
    ("status", "error"), [(404, ImageGone), (409, Exception), (500, EngineError)]
)
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
    ],
)
def test_what_is_not_http_is_an_unavailable_engine(sock_dir: Path, reply: bytes) -> None:
    peer, http = serve(sock_dir, Cut(reply))
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")
    peer.close()


def test_nobody_listening_is_an_unavailable_engine(sock_dir: Path) -> None:
    http = _UnixHTTP("unix:///nowhere", str(sock_dir / "none.sock"), timeout=5)
    with pytest.raises(EngineUnavailable):
        http.call("GET", "/x")
