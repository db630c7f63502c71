"""The one Docker boundary: the only module that speaks to the engine or imports ``docker``."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_imageprune.engine.api import (
    MEETING_LABEL,
    Conflict,
    Engine,
    EngineError,
    Gone,
    ObjectKind,
    Record,
    at_least,
    http_date_ns,
    network_in_use,
    status_error,
)
from pytest_imageprune.engine.endpoint import DEFAULT_HOST
from pytest_imageprune.engine.events import container_use, peer_started_ns, seconds, volume_made
from pytest_imageprune.engine.store import (
    CLASSIC,
    CONTAINERD,
    UNSUPPORTED,
    Store,
    detect,
    is_podman,
)
from pytest_imageprune.engine.transport import UnixHTTP, values
from pytest_imageprune.errors import EngineNotConfigured, EngineUnavailable
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Snapshot, full_id

if TYPE_CHECKING:
    import docker

    from pytest_imageprune.engine.transport import EventStream

#: What an image reference keeps unquoted in a URL.
_REF = "/:@"


class DockerEngine:
    """An ``Engine`` over HTTP: its own lean client on a unix socket, the SDK elsewhere.

    On a unix socket (the usual case, CI included) a lean HTTP/1.1 client (``_http``) keeps
    one connection alive and costs a fraction of a millisecond a request; the Docker SDK
    would cost about 120 ms to import and a millisecond a request more. For tcp, TLS and
    ssh endpoints the SDK's ``APIClient`` does the talking, imported on first use.
    """

    def __init__(
        self,
        client: docker.APIClient | None = None,
        endpoint: str = DEFAULT_HOST,
        *,
        connect: Callable[[], docker.APIClient] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.description = endpoint
        self._client = client
        self._connect = connect
        self._lock = threading.Lock()
        self._store: Store | None = None
        #: ``GET /info``'s answer, kept by ``store`` (Docker only).
        self._info: Mapping[str, Any] | None = None
        #: ``GET /version``'s answer, kept by ``store``.
        self._version: Mapping[str, Any] | None = None
        socket_path = _unix_socket(endpoint)
        self._http: UnixHTTP | None = None
        if socket_path and client is None:
            self._http = UnixHTTP(endpoint, socket_path)

    @classmethod
    def from_env(cls, timeout: float = 60.0) -> DockerEngine:
        """The engine the docker CLI would talk to; nothing is contacted until it is used."""
        from pytest_imageprune.engine.endpoint import EndpointError, resolve_endpoint

        try:
            endpoint = resolve_endpoint()
        except EndpointError as exc:
            raise EngineNotConfigured("the configured Docker endpoint", str(exc)) from exc

        def connect() -> docker.APIClient:
            import docker

            return docker.APIClient(
                version="auto", timeout=int(timeout), **endpoint.client_kwargs()
            )

        engine = cls(None, endpoint.host, connect=connect)
        engine.description = endpoint.describe()
        return engine

    @property
    def client(self) -> docker.APIClient:
        """The SDK client, connected on first use."""
        with self._lock:
            if self._client is None:
                if self._connect is None:
                    raise EngineUnavailable(self.endpoint, "no client")
                with self._mapped():
                    self._client = self._connect()
            return self._client

    def spawn(self, count: int) -> list[Engine]:
        """``count`` engines on connections of their own, for requests in flight together.

        An engine made from a client it was given (its TLS and address are that client's)
        spawns none: requests then go one at a time.
        """
        engines: list[Engine] = [self]
        if self._http is None and self._connect is None:
            return engines
        for _ in range(count - 1):
            twin = type(self)(None, self.endpoint, connect=self._twin)
            twin._store = self._store
            if self._http is None:
                twin._http = None
            engines.append(twin)
        return engines

    def _twin(self) -> docker.APIClient:
        if self._connect is None:
            raise EngineUnavailable(self.endpoint, "no client")
        return self._connect()

    def snapshot(self, meanwhile: Callable[[], object] | None = None) -> Snapshot:
        """Every image and container.

        ``meanwhile`` runs while the engine lists the images (on a unix socket; elsewhere,
        before the request).
        """
        taken_ns = time.time_ns()
        try:
            images = self._list_images(meanwhile)
        except EngineError as exc:
            images = self._list_images_again(exc)
        snapshot = Snapshot.from_api(images, self.objects("containers"), taken_ns)
        if snapshot.containers and self.store.kind == CONTAINERD:
            snapshot = self._created_with(snapshot)
        return snapshot

    def _list_images(self, meanwhile: Callable[[], object] | None) -> Any:
        if self._http is not None:
            self._http.send("GET", "/images/json?all=1")
            if meanwhile is not None:
                try:
                    meanwhile()
                except BaseException:
                    self._http.close()  # the answer is never read: no stale one for later
                    raise
            return self._http.receive("GET", "/images/json?all=1")
        _ = self.client  # connected first: an engine out of reach runs nothing meanwhile
        if meanwhile is not None:
            meanwhile()
        return self.request("GET", "/images/json?all=1")

    def _list_images_again(self, error: EngineError) -> Any:
        """Podman fails the whole listing (500, "image not known") when an image it is
        reading is removed meanwhile by another client: the listing is asked again, a few
        times, before the error stands."""
        for _ in range(LIST_RETRIES):
            if not _vanished_meanwhile(error):
                break
            try:
                return self.request("GET", "/images/json?all=1")
            except EngineError as exc:
                error = exc
        raise error

    def _created_with(self, snapshot: Snapshot) -> Snapshot:
        """On the containerd store a container protects the record it was created with
        (R23): where the list shows the image ID instead, the container's inspect tells."""
        containers = []
        for listed in snapshot.containers:
            if listed.created_with is not None:
                containers.append(listed)
                continue
            try:
                config = self.container(listed.id).get("Config")
            except Gone:  # removed meanwhile: it protects nothing any more
                continue
            image = config.get("Image") if isinstance(config, Mapping) else None
            containers.append(dataclasses.replace(listed, config_image=str(image or "")))
        return dataclasses.replace(snapshot, containers=tuple(containers))

    def inspect(self, image_id: str) -> Mapping[str, Any]:
        answer: Mapping[str, Any] = self.request("GET", f"/images/{_quote(image_id, _REF)}/json")
        return answer

    def look(self, image_id: str) -> Mapping[str, Any]:
        """``GET /images/{id}/json``: the lightest question the API has about an image's
        names now (``RepoTags``, ``RepoDigests``), which lists its layers too."""
        answer = self.request("GET", f"/images/{_quote(image_id, _REF)}/json")
        if not isinstance(answer, Mapping):
            raise EngineError(f"GET /images/{image_id}/json: not an object")
        return answer

    def history(self, image_id: str) -> Sequence[Mapping[str, Any]]:
        answer: Sequence[Mapping[str, Any]] = self.request(
            "GET", f"/images/{_quote(image_id, _REF)}/history"
        )
        return answer

    def delete(self, target: str) -> list[Record]:
        """``DELETE /images/{target}?force=0``: with the daemon's parent cascade on the classic
        store (``noprune=0``), without it on the containerd store, whose prune has none."""
        noprune = self.store.kind == CONTAINERD
        query = f"force=0&noprune={int(noprune)}"
        records = self.request("DELETE", f"/images/{_quote(target, _REF)}?{query}")
        return [
            {"Deleted": full_id(r["Deleted"])} if "Deleted" in r else dict(r) for r in records or ()
        ]

    # -- the other kinds (``api.Objects``) ------------------------------------------------
    def objects(self, kind: ObjectKind) -> Sequence[Mapping[str, Any]]:
        if kind == "volumes":
            answer = self.request("GET", "/volumes") or {}
            volumes: Sequence[Mapping[str, Any]] = answer.get("Volumes") or []
            return volumes
        path = "/containers/json?all=1" if kind == "containers" else f"/{kind}"
        listed: Sequence[Mapping[str, Any]] = self.request("GET", path) or []
        return listed

    def disk_usage(self, what: str) -> Mapping[str, Any]:
        query = f"?type={what}" if at_least(self.api_version, "1.42") else ""
        answer = self.request("GET", f"/system/df{query}")
        return answer if isinstance(answer, Mapping) else {}

    def container(self, container_id: str, *, size: bool = False) -> Mapping[str, Any]:
        query = "?size=1" if size else ""
        answer: Mapping[str, Any] = self.request(
            "GET", f"/containers/{_quote(container_id)}/json{query}"
        )
        return answer

    def network(self, network_id: str) -> Mapping[str, Any]:
        answer: Mapping[str, Any] = self.request("GET", f"/networks/{_quote(network_id)}")
        return answer

    def remove(self, kind: ObjectKind, target: str) -> None:
        try:
            self.request("DELETE", f"/{kind}/{_quote(target)}")
        except EngineError as exc:
            # A network with active endpoints: Docker answers 403, Podman 500.
            if kind == "networks" and network_in_use(exc.status, str(exc)):
                raise Conflict(str(exc), in_use=True) from exc
            raise

    def prune_cache(self, ids: Sequence[str], *, all: bool) -> Mapping[str, Any]:
        """One ``id`` filter, a regex anchored at both ends (the daemon reads ``id`` as an
        unanchored regex, one value per key)."""
        wanted = {"id": [f"^({'|'.join(ids)})$"]}
        query = f"all={int(all)}&filters={_quote(json.dumps(wanted), '/')}"
        answer = self.request("POST", f"/build/prune?{query}")
        if not isinstance(answer, Mapping):
            raise TypeError(f"POST /build/prune answered {answer!r}")
        return answer

    # -- where sessions meet (``api.Meets``) ---------------------------------------------
    def meeting_volumes(self) -> tuple[list[Mapping[str, Any]], int | None]:
        """The volumes sessions meet by (``api.MEETING_LABEL``), and the engine's clock when
        it answered."""
        wanted = _quote(json.dumps({"label": [MEETING_LABEL]}))
        answer, now = self.exchange("GET", f"/volumes?filters={wanted}")
        volumes = answer.get("Volumes") if isinstance(answer, Mapping) else None
        return [v for v in volumes or () if isinstance(v, Mapping)], now

    def make_volume(
        self, name: str, labels: Mapping[str, str]
    ) -> tuple[Mapping[str, Any], int | None]:
        """``POST /volumes/create``: the volume as the engine has it (an existing one of that
        name keeps its own labels), and the engine's clock when it answered."""
        wanted = {"Name": name, "Labels": dict(labels)}
        answer, now = self.exchange("POST", "/volumes/create", wanted)
        return (answer if isinstance(answer, Mapping) else {}), now

    def drop_volume(self, name: str) -> None:
        """``DELETE /volumes/{name}``; ``Gone`` when there is none."""
        self.exchange("DELETE", f"/volumes/{_quote(name)}")

    def clock_ns(self) -> int | None:
        """Now on the engine's clock, at the latest: the ``Date`` of its answer to
        ``GET /version`` (whole seconds), plus a second; None without one."""
        _, now = self.exchange("GET", "/version")
        return None if now is None else now + NANOS

    def exchange(self, method: str, path: str, body: object = None) -> tuple[Any, int | None]:
        """A request with a JSON ``body``: its answer, and the engine's clock from the
        answer's ``Date`` (whole seconds, ns; None without one)."""
        data = b"" if body is None else json.dumps(body).encode()
        if self._http is not None:
            answer, headers = self._http.exchange(method, path, data)
            return answer, http_date_ns(headers.get("date"))
        client = self.client
        with self._mapped():
            url = f"{client.base_url}/v{client.api_version}{path}"
            response = client.request(
                method,
                url,
                data=data or None,
                headers={"Content-Type": "application/json"} if data else None,
                timeout=client.timeout,
            )
        if response.status_code >= 400:
            raise status_error(response.status_code, response.content)
        try:
            answer = response.json() if response.content else None
        except ValueError as exc:
            raise EngineError(f"{response.status_code}: {method} {path}: not JSON: {exc}") from exc
        return answer, http_date_ns(response.headers.get("Date"))

    @property
    def store(self) -> Store:
        """The engine's image store, from ``/version`` and ``/info``: asked once."""
        if self._store is None:
            try:
                version = self._get("/version")
                self._version = version
                info = None if is_podman(version) else self._get("/info")
                self._info = info
            except (EngineError, Gone, Conflict) as exc:
                self._store = Store(UNSUPPORTED, "", f"the engine did not describe itself: {exc}")
            else:
                self._store = detect(version, info)
        return self._store

    @property
    def engine_id(self) -> str:
        """What tells this engine from any other: its ``ID`` and its ``DockerRootDir`` from
        ``/info`` (asked with ``store``), which only the engine's users can read. Docker
        20.10 takes the ID from ``/etc/docker/key.json``, so every dockerd of one host
        reports the same one; their data roots differ. Empty for Podman, whose ``ID``
        changes with every request."""
        _ = self.store  # asks /version, and /info unless the engine is Podman
        info = self._info or {}
        ident, root = str(info.get("ID") or ""), str(info.get("DockerRootDir") or "")
        return f"{ident} {root}" if ident and root else ident

    def events(self, since_ns: int, until_ns: int) -> list[Mapping[str, Any]] | None:
        """The engine's events from ``since_ns`` to ``until_ns`` (``GET /events``), as far
        as its log reaches back: Docker keeps the newest 256 in memory, of every type, and
        none from before it started. Returns at once when ``until_ns`` is past. None where
        the engine keeps no such log (Podman answers, but with nothing to go by)."""
        if self.store.kind not in (CLASSIC, CONTAINERD):
            return None
        query = f"since={seconds(since_ns)}&until={seconds(until_ns)}"
        answer = self.request("GET", f"/events?{query}", stream=True)
        return [event for event in answer if isinstance(event, Mapping)]

    def watch_uses(self, since_ns: int) -> EventStream | None:
        """The engine's container events from ``since_ns`` on, as they come (``EventStream``:
        each create or start, slimmed to what names its image), with the volumes made (their
        names mark the stream's place). None where the log cannot be streamed: Podman's says
        nothing to go by; off a unix socket, ``container_events`` asks at the end."""
        path = _unix_socket(self.endpoint)
        if self.store.kind not in (CLASSIC, CONTAINERD) or path is None or self._http is None:
            return None
        from pytest_imageprune.engine.transport import EventStream

        wanted = _quote(json.dumps({"type": ["container", "volume"], "event": ["create", "start"]}))
        url = f"/events?since={seconds(since_ns)}&filters={wanted}"
        return EventStream(path, url, keep=container_use, mark=volume_made).start()

    def container_events(self, since_ns: int, until_ns: int) -> list[Mapping[str, Any]] | None:
        """The engine's container creates and starts from ``since_ns`` to ``until_ns`` (at
        once when that is past); None where the engine keeps no such log (Podman)."""
        if self.store.kind not in (CLASSIC, CONTAINERD):
            return None
        found = (container_use(e) for e in self.events(since_ns, until_ns) or ())
        return [e for e in found if e is not None]

    def started_ns(self) -> int | None:
        """When the process answering on the engine's unix socket started (its peer's
        credentials, then ``/proc``): Docker's event log holds nothing from before then.
        None where that cannot be told (tcp, ssh, a process in another pid namespace)."""
        path = _unix_socket(self.endpoint)
        if path is None:
            return None
        return peer_started_ns(path)

    @property
    def lists_layers(self) -> bool:
        """Whether delete answers name the layers released (Docker's classic store)."""
        return self.store.kind == CLASSIC

    def request(self, method: str, path: str, *, stream: bool = False) -> Any:
        """Any request (``path`` with its query, already quoted), the answer's JSON (with
        ``stream``, the JSON values it holds one after another), on either transport.
        Errors: 404 ``Gone``, 409 ``Conflict``, other statuses ``EngineError``."""
        if self._http is not None:
            return self._http.call(method, path, stream=stream)
        client = self.client
        with self._mapped():
            url = f"{client.base_url}/v{client.api_version}{path}"
            response = client.request(method, url, timeout=client.timeout)
        if response.status_code >= 400:
            raise status_error(response.status_code, response.content)
        try:
            if stream:
                return values(response.content.decode())
            return response.json() if response.content else None
        except ValueError as exc:
            raise EngineError(f"{response.status_code}: {method} {path}: not JSON: {exc}") from exc

    @property
    def api_version(self) -> str:
        """The engine's API version (``/version``'s ``ApiVersion``), "" when unknown."""
        _ = self.store
        return str(self._version.get("ApiVersion") or "") if self._version else ""

    @property
    def version(self) -> str:
        """The engine's own version (``/version``'s ``Version``), "" when unknown."""
        _ = self.store
        return str(self._version.get("Version") or "") if self._version else ""

    @property
    def podman(self) -> bool:
        _ = self.store
        return self._version is not None and is_podman(self._version)

    def _get(self, path: str) -> Mapping[str, Any]:
        answer = self.request("GET", path)
        if not isinstance(answer, Mapping):
            raise EngineError(f"GET {path}: not an object")
        return answer

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._client is not None:
            self._client.close()

    def _mapped(self) -> _ErrorMapper:
        return _ErrorMapper(self.endpoint)


#: How many times a listing that failed for an image removed meanwhile is asked again.
LIST_RETRIES = 3


def _vanished_meanwhile(error: EngineError) -> bool:
    """Podman's answer to a listing during which an image went: a 500 saying "image not
    known" (its ``ErrImageUnknown``)."""
    return error.status == 500 and "image not known" in str(error)


def _unix_socket(endpoint: str) -> str | None:
    for prefix in ("unix://", "http+unix://"):
        if endpoint.startswith(prefix):
            return endpoint.removeprefix(prefix) or None
    return None


def _quote(part: str, safe: str = "") -> str:
    """``part`` as it goes into a URL: the one quoting of the package (images keep the
    ``/``, ``:`` and ``@`` of a reference; an object's ID or name keeps nothing)."""
    from urllib.parse import quote

    return quote(part, safe=safe)


class _ErrorMapper:
    """Turns the SDK's exceptions into ours: an answer as ``api.status_error`` reads any
    answer, anything else as the engine unreachable."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        import docker.errors
        import requests.exceptions

        response = getattr(exc, "response", None)
        if isinstance(exc, docker.errors.APIError) and response is not None:
            # The engine's answer, whichever transport carried it: one mapping (api).
            raise status_error(response.status_code, response.content) from exc
        unreachable = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
        if isinstance(exc, unreachable):
            raise EngineUnavailable(self.endpoint, _first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
