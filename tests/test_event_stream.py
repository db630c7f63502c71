"""The engine's event stream as the session reads it (``transport.EventStream``), against a
peer that answers as a test says: a real engine cannot be made to misbehave on demand (a
proxy in front of its socket can). What the stream keeps and how it ends on a real engine
is in ``test_budget_engine`` (the record of uses)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_imageprune.engine.events import container_use, volume_made
from pytest_imageprune.engine.transport import EventStream

MARKER = "pytest-imageprune-" + "f" * 32 + "-lease-3"


def _event(kind: str, action: str, name: str, when: int) -> bytes:
    attributes = {"image": name} if kind == "container" else {}
    actor = {"ID": name if kind == "volume" else "c" * 64, "Attributes": attributes}
    event = {"Type": kind, "Action": action, "timeNano": when, "Actor": actor}
    return json.dumps(event).encode() + b"\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A unix socket whose peer answers as the test says (``mode``, appended to the list)."""
    path = str(tmp_path / "peer.sock")
    modes: list[str] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(5)

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            mode = modes[-1]
            try:
                if mode == "not chunked":  # a streamed answer that ends with the connection
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                    while True:
                        conn.sendall(_event("container", "create", "app:1", 1))
                        time.sleep(0.3)
                elif mode == "trickle":  # one chunk announced, sent a byte at a time
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n")
                    while True:
                        conn.sendall(b" ")
                        time.sleep(0.005)
                elif mode == "forbidden":
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}")
                else:  # "events": the log, one event split across two chunks, then the marker
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    first = _event("container", "create", "app:1", 10)
                    conn.sendall(_chunk(first[:20]) + _chunk(first[20:]))
                    conn.sendall(_chunk(_event("container", "destroy", "app:1", 11)))
                    conn.sendall(_chunk(_event("volume", "create", "other-volume", 12)))
                    time.sleep(0.2)  # the tests' last event, and then the lease "finishing"
                    conn.sendall(_chunk(_event("container", "start", "db:2", 13)))
                    conn.sendall(_chunk(_event("volume", "create", MARKER, 14)))
                    time.sleep(60)  # an engine keeps the stream open
            except OSError:
                return

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield path, modes
    server.close()
    os.unlink(path)


def _stream(path: str) -> EventStream:
    return EventStream(path, "/events?since=0", keep=container_use, mark=volume_made).start()


def test_the_stream_keeps_each_use_and_ends_at_its_marker(peer: tuple[str, list[str]]) -> None:
    path, modes = peer
    modes.append("events")
    stream = _stream(path)
    started = time.monotonic()
    kept = stream.finish(MARKER, 5.0)
    took = time.monotonic() - started
    assert [(e["Action"], e["Actor"]["Attributes"]["image"]) for e in kept] == [
        ("create", "app:1"),
        ("start", "db:2"),
    ]
    assert took < 2.0, took  # at the marker, not at the limit


@pytest.mark.parametrize("mode", ["not chunked", "trickle", "forbidden"])
def test_the_stream_is_read_no_longer_than_its_limit_whatever_the_peer_does(
    peer: tuple[str, list[str]], mode: str
) -> None:
    """A peer (a proxy in front of the engine's socket) that keeps an answer going, sends
    it a byte at a time, or refuses it: the session's end waits no longer than the limit,
    and keeps nothing it could not read."""
    path, modes = peer
    modes.append(mode)
    stream = _stream(path)
    started = time.monotonic()
    kept = stream.finish(MARKER, 1.0)
    assert time.monotonic() - started < 3.0
    assert kept == []
