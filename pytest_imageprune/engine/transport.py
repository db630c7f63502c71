"""HTTP/1.1 over one kept-alive unix socket, just what the Docker API needs.

``http.client`` would do, but importing it costs about 40 ms here (it imports ``ssl`` and
``email``), on the way to the first request of every session, and it parses each answer's
headers with ``email``'s parser. The engine's API asks for little: requests without a body,
answers with a ``Content-Length``, a chunked body, or a body that ends with the connection.
``request`` and ``response`` are separate, so that a request can be sent early and its
answer read later. ``UnixHTTP`` reads the answers as JSON and maps the engine's errors.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Callable
from typing import Any, BinaryIO

from pytest_imageprune.engine.api import EngineError, status_error
from pytest_imageprune.errors import EngineUnavailable

#: A header line longer than this is not the engine talking.
_MAX_LINE = 65536

_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
#: How many of the newest marks an event stream remembers (``EventStream``).
_MARKS = 1024


class ProtocolError(OSError):
    """The peer's answer is not HTTP/1.1 as this module reads it."""


class Closed(ConnectionError):
    """The connection was closed before an answer began: on a reused one, the engine
    closed it while it was idle."""


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        #: The answer's headers, by lowercase name.
        self.headers = headers if headers is not None else {}


class UnixConnection:
    """One connection; ``OSError`` (with ``Closed`` and ``ProtocolError``) on any failure,
    after which the connection is closed and the next request opens a new one."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        #: Whether the open connection has carried an answer before.
        self.reused = False

    def request(self, method: str, url: str, body: bytes = b"") -> None:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            self._sock, self._file, self.reused = sock, sock.makefile("rb"), False
        kind = "Content-Type: application/json\r\n" if body else ""
        head = f"{method} {url} HTTP/1.1\r\nHost: docker\r\n{kind}"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        try:
            self._sock.sendall(head.encode("ascii") + body)
        except BaseException:
            self.close()
            raise

    def response(self, method: str = "GET") -> Response:
        file = self._file
        if file is None:
            raise Closed("no request was sent")
        try:
            status, headers = self._head(file)
            while 100 <= status < 200:  # interim answers: the final one follows
                status, headers = self._head(file)
            body = self._body(file, method, status, headers)
        except ValueError as exc:  # closed by another thread meanwhile
            self.close()
            raise Closed(str(exc)) from exc
        except BaseException:  # Ctrl-C mid-answer leaves the connection half read, too
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        else:
            self.reused = True
        return Response(status, body, headers)

    def close(self) -> None:
        """Close; a thread blocked reading this connection gets an error, not a hang."""
        self.reused = False
        sock, file = self._sock, self._file
        self._sock = self._file = None
        if sock is not None:
            with contextlib.suppress(OSError):  # not connected, or already shut
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in another thread
            sock.close()
        if file is not None:
            file.close()

    @staticmethod
    def _head(file: BinaryIO) -> tuple[int, dict[str, str]]:
        line = file.readline(_MAX_LINE + 1)
        if not line:
            raise Closed("the engine closed the connection without answering")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {line[:80]!r}")
        status = int(parts[1])
        # HTTP/1.0 closes after each answer unless it says otherwise.
        headers: dict[str, str] = {} if parts[0] != b"HTTP/1.0" else {"connection": "close"}
        while True:
            line = file.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise ProtocolError("a header line is too long")
            if line in (b"\r\n", b"\n"):
                return status, headers
            if not line:
                raise ProtocolError("the connection ended in the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()

    @staticmethod
    def _body(file: BinaryIO, method: str, status: int, headers: dict[str, str]) -> bytes:
        if method == "HEAD" or status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _chunked(file)
        length = headers.get("content-length")
        if length is not None:
            if not _DECIMAL.fullmatch(length):
                raise ProtocolError(f"a bad Content-Length: {length!r}")
            return _exactly(file, int(length))
        headers["connection"] = "close"  # the body ends with the connection
        return file.read()


def _exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise ProtocolError(f"the connection ended {size - len(data)} bytes short of the body")
    return data


def _chunked(file: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        line = file.readline(_MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise ProtocolError(f"a bad chunk size: {line[:80]!r}")
        size = int(size_text, 16)
        if size == 0:
            while file.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(_exactly(file, size))
        if file.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk does not end with CRLF")


class UnixHTTP:
    """JSON over one kept-alive unix socket connection (``DockerEngine._http``); errors
    mapped once."""

    def __init__(self, endpoint: str, path: str, timeout: float = 300.0) -> None:
        self.endpoint = endpoint
        self.path = path
        self.timeout = timeout
        self._made: UnixConnection | None = None

    @property
    def _conn(self) -> UnixConnection:
        if self._made is None:
            self._made = UnixConnection(self.path, self.timeout)
        return self._made

    def call(self, method: str, url: str, *, stream: bool = False) -> Any:
        """The answer's JSON; with ``stream``, the list of JSON values it holds one after
        another (``/events``)."""
        self.send(method, url)
        return self.receive(method, url, stream=stream)

    def send(self, method: str, url: str) -> None:
        """Send a request whose answer ``receive`` reads, now or later."""
        reused = self._conn.reused
        try:
            self._conn.request(method, url)
        except OSError as exc:
            if reused and method == "GET":  # an idle connection the engine closed: once more
                return self.send(method, url)
            raise EngineUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        return None

    def receive(self, method: str, url: str, *, stream: bool = False) -> Any:
        reused = self._conn.reused
        try:
            response = self._conn.response(method)
        except (Closed, ConnectionResetError) as exc:
            # The engine closed an idle connection: ask again on a new one. Never a
            # DELETE: it may have been carried out before the connection broke.
            if reused and method == "GET":
                return self.call(method, url, stream=stream)
            raise EngineUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise EngineUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        return _answer(response, method, url, stream=stream)

    def exchange(self, method: str, url: str, body: bytes = b"") -> tuple[Any, dict[str, str]]:
        """One request with a JSON ``body``: the answer's JSON, and its headers (the
        engine's ``Date`` among them). Asked again on a new connection only when an idle
        one was closed before a GET was answered."""
        reused = self._conn.reused
        try:
            self._conn.request(method, url, body)
            response = self._conn.response(method)
        except (Closed, ConnectionResetError, BrokenPipeError) as exc:
            if reused and method == "GET":
                return self.exchange(method, url, body)
            raise EngineUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise EngineUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        answer = _answer(response, method, url)
        return answer, response.headers

    def close(self) -> None:
        if self._made is not None:
            self._made.close()


def values(text: str) -> list[Any]:
    """The JSON values of a stream, one after another (whitespace between them)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return values
        value, at = decoder.raw_decode(text, at)
        values.append(value)


def _answer(response: Response, method: str, url: str, *, stream: bool = False) -> Any:
    """The JSON of an answer (each value of a stream of them), or the engine's error."""
    if response.status >= 400:
        raise status_error(response.status, response.body)
    try:
        if stream:
            return values(response.body.decode())
        return json.loads(response.body) if response.body else None
    except ValueError as exc:
        raise EngineError(f"{response.status}: {method} {url}: not JSON: {exc}") from exc


class EventStream:
    """A streamed answer (``GET /events`` with no ``until``: what the engine's log holds
    from ``since``, then what happens) read as it comes, on a connection and a daemon thread
    of its own, until ``finish``. Of each JSON value, ``keep(value)`` says what to keep (if
    not None), and ``mark(value)`` what marks its place (if not None: a volume's name as it
    is made), which ``finish`` may wait for."""

    def __init__(
        self,
        path: str,
        url: str,
        keep: Callable[[Any], Any],
        mark: Callable[[Any], str | None],
    ) -> None:
        import collections
        import threading

        self.url = url
        self._keep, self._mark = keep, mark
        self._connection = UnixConnection(path, None)
        self._kept: list[Any] = []
        self._marks: collections.deque[str] = collections.deque(maxlen=_MARKS)
        self._done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="imageprune-events", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def finish(self, marker: str | None, limit_s: float) -> list[Any]:
        """What was kept, once ``marker`` came (at once without one; or once the answer
        ended, or ``limit_s`` passed, whatever the peer does); the connection closed."""
        import time

        deadline = time.monotonic() + limit_s
        with self._changed:
            while marker is not None and marker not in self._marks and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        self.close()
        self._thread.join(min(1.0, limit_s))
        with self._changed:
            return list(self._kept)

    def close(self) -> None:
        """Close the connection: a read blocked on it ends at once."""
        self._connection.close()

    def _read(self) -> None:
        connection = self._connection
        try:
            connection.request("GET", self.url)
            file = connection._file
            if file is None:
                return
            status, headers = connection._head(file)
            if status >= 400 or "chunked" not in headers.get("transfer-encoding", "").lower():
                return  # refused, or not a stream this reads: nothing kept
            decoder = json.JSONDecoder()
            text, at = "", 0
            while True:
                line = file.readline(_MAX_LINE + 1)
                size_text = line.split(b";", 1)[0].strip()
                if not _HEX.fullmatch(size_text) or int(size_text, 16) == 0:
                    return
                chunk = _exactly(file, int(size_text, 16) + 2)
                text = text[at:] + chunk[:-2].decode(errors="replace")
                at = 0
                found = []
                while True:
                    while at < len(text) and text[at].isspace():
                        at += 1
                    try:
                        value, at = decoder.raw_decode(text, at)
                    except ValueError:
                        break  # the rest comes with the next chunk
                    found.append(value)
                if len(text) - at > _MAX_LINE:
                    return  # no value is that long: not a stream of events
                self._take(found)
        except (OSError, ValueError):
            return  # closed (``finish``), or the engine went: what came is kept
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _take(self, values: list[Any]) -> None:
        with self._changed:
            for value in values:
                kept = self._keep(value)
                if kept is not None:
                    self._kept.append(kept)
                mark = self._mark(value)
                if mark is not None:
                    self._marks.append(mark)
            self._changed.notify_all()
