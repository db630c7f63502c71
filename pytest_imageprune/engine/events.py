"""The engine's event log as the plugin reads it: what of an event it keeps (a container's
use of an image, a volume made), the times the API's ``since`` and ``until`` take, and when
the process answering on the engine's socket started (Docker's log holds nothing from
before). ``client.DockerEngine`` asks; ``transport.EventStream`` streams."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pytest_imageprune.model.gotime import NANOS


def seconds(ns: int) -> str:
    """A time as the API's ``since`` and ``until`` take it: seconds, then nanoseconds."""
    return f"{ns // NANOS}.{ns % NANOS:09d}"


def peer_started_ns(socket_path: str) -> int | None:
    """When the process listening on ``socket_path`` started, in ns since the epoch."""
    import socket
    import struct

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(socket_path)
            credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid = struct.unpack("3i", credentials)[0]
        if pid <= 0:
            return None  # another pid namespace: the kernel does not say
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as system:
            boot_s = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        ticks = os.sysconf("SC_CLK_TCK")
        return boot_s * NANOS + int(fields[19]) * NANOS // ticks
    except (OSError, ValueError, IndexError, StopIteration, struct.error):
        return None


def container_use(event: Any) -> Mapping[str, Any] | None:
    """A container's create or start, as much of it as names its image and when."""
    if not isinstance(event, Mapping) or event.get("Type") != "container":
        return None
    if event.get("Action") not in ("create", "start"):
        return None
    actor = event.get("Actor")
    attributes = actor.get("Attributes") if isinstance(actor, Mapping) else None
    image = attributes.get("image") if isinstance(attributes, Mapping) else None
    who = actor.get("ID") if isinstance(actor, Mapping) else None
    return {
        "Type": "container",
        "Action": event.get("Action"),
        "timeNano": event.get("timeNano"),
        "Actor": {"ID": who, "Attributes": {"image": image}},
    }


def volume_made(event: Any) -> str | None:
    """The name of the volume an event says was made: what marks an event stream's place
    (``transport.EventStream``)."""
    if not isinstance(event, Mapping) or event.get("Type") != "volume":
        return None
    actor = event.get("Actor")
    name = actor.get("ID") if isinstance(actor, Mapping) else None
    return name if event.get("Action") == "create" and isinstance(name, str) else None
