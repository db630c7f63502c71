"""Which Docker engine to talk to, chosen exactly as the ``docker`` CLI chooses it.

The CLI's order of precedence (``resolveContextName`` in docker/cli ``cli/command/cli.go``),
without its ``--host`` and ``--context`` flags:

1. ``DOCKER_HOST``, when not empty: the ``default`` context, with that host;
2. ``DOCKER_CONTEXT``, when not empty;
3. ``currentContext`` in ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``);
4. the ``default`` context.

The ``default`` context is ``DOCKER_HOST`` (normalised as the CLI does: ``tcp://host`` gets
port 2375), or ``unix:///var/run/docker.sock``, or ``tcp://localhost:2376`` when TLS is on
and no host is given. TLS is on when ``DOCKER_TLS_VERIFY`` or ``DOCKER_TLS`` is non-empty
(any value, ``0`` included); it verifies the server when ``DOCKER_TLS_VERIFY`` is
non-empty; the files are ``ca.pem`` (required), ``cert.pem`` and ``key.pem`` (optional) in
``DOCKER_CERT_PATH``, else in ``$DOCKER_CONFIG``. A named context is read from the CLI's
context store: ``contexts/meta/<sha256(name)>/meta.json`` (``Endpoints.docker.Host`` and
``SkipTLSVerify``) and ``contexts/tls/<sha256(name)>/docker/{ca,cert,key}.pem`` (TLS is
on when that folder exists or ``SkipTLSVerify`` is true); the ``DOCKER_TLS*`` variables do
not apply to it. Its host is used as written, except that a ``tcp://`` host without a port
gets the one Go's HTTP client dials: 443 with TLS, 80 without.

One deliberate difference: the CLI only warns about a ``config.json`` it cannot parse and
falls back to the ``default`` context. Here that is an ``EndpointError`` naming the file,
so that a prune never guesses its engine.

No ``docker`` import here except inside :meth:`Endpoint.client_kwargs`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_imageprune.errors import ImagePruneError

DEFAULT_CONTEXT = "default"
_DEFAULT_UNIX_SOCKET = "/var/run/docker.sock"
#: The engine the CLI talks to when nothing names one (``DefaultHost`` in ``opts/hosts.go``).
DEFAULT_HOST = f"unix://{_DEFAULT_UNIX_SOCKET}"
#: The CLI's host when TLS is on and no host is given (``defaultTLSHost`` in ``opts/hosts.go``).
DEFAULT_TLS_HOST = "tcp://localhost:2376"
_DEFAULT_TCP_PORT = "2375"
_DEFAULT_NPIPE = "//./pipe/docker_engine"
_BRACKETED = re.compile(r"\[([^\]]*)\](?::(.*))?")


class EndpointError(ImagePruneError, ValueError):
    """The Docker endpoint cannot be chosen or used; the message says which and why."""

    def __init__(self, message: str, *, context: str | None = None, path: Path | None = None):
        super().__init__(message)
        self.context = context
        self.path = path


@dataclass(frozen=True)
class Endpoint:
    """One Docker engine endpoint and where the choice came from."""

    #: ``unix:///var/run/docker.sock``, ``tcp://1.2.3.4:2376``, ``ssh://user@host``, ...
    host: str
    #: The context it came from (``default`` when none).
    context: str
    #: Where it came from, for people: ``DOCKER_HOST``, ``DOCKER_CONTEXT=foo``, ...
    source: str
    #: Verify the server's certificate (against ``ca.pem`` if there is one).
    tls_verify: bool = False
    #: The folder of ``ca.pem``, ``cert.pem`` and ``key.pem`` (each optional); set when TLS
    #: is on, verified or not.
    cert_path: str | None = None

    @property
    def tls(self) -> bool:
        """TLS is on: verified (``tls_verify``) or not (a ``cert_path`` without it)."""
        return self.tls_verify or self.cert_path is not None

    @property
    def scheme(self) -> str:
        return self.host.partition("://")[0]

    def describe(self) -> str:
        """``unix:///var/run/docker.sock (default socket)``, for the header line."""
        note = ""
        if self.scheme == "tcp" and self.tls:
            note = ", TLS" if self.tls_verify else ", TLS without verification"
        return f"{self.host} ({self.source}{note})"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.APIClient(**kwargs)``: ``base_url`` and more.

        - ``tcp://`` with TLS: ``tls=docker.tls.TLSConfig(...)``, with ``ca.pem`` if present,
          the client certificate if both ``cert.pem`` and ``key.pem`` are, and ``verify``.
          TLS applies to TCP only, as in the CLI (a socket or SSH never uses it).
        - ``ssh://``: ``use_ssh_client=True``. docker-py then runs the local ``ssh`` client
          (``ssh [-l user] [-p port] -- host docker system dial-stdio``), as the CLI does,
          so ``~/.ssh/config``, the agent and ``known_hosts`` behave the same; its default
          (``False``) would use paramiko, which reads only part of ``~/.ssh/config``.
          Either way docker-py needs paramiko installed: ``docker/transport/sshconn.py``
          imports it, and without it ``APIClient`` refuses ``ssh://``. Missing paramiko or
          a missing ``ssh`` program is an ``EndpointError`` saying what to install.
        - ``fd://`` (the CLI accepts it) is an ``EndpointError``: docker-py cannot use it.
        """
        scheme = self.scheme
        if scheme == "ssh":
            _require_ssh(self.host)
            return {"base_url": self.host, "use_ssh_client": True}
        if scheme == "fd":
            raise EndpointError(
                f"{self.describe()}: the Docker SDK for Python cannot connect to fd:// hosts",
                context=self.context,
            )
        kwargs: dict[str, Any] = {"base_url": self.host}
        if scheme == "tcp" and self.tls:
            kwargs["tls"] = self._tls_config()
        return kwargs

    def _tls_config(self) -> Any:
        import docker.tls

        folder = Path(self.cert_path) if self.cert_path else None
        ca = folder / "ca.pem" if folder else None
        cert = folder / "cert.pem" if folder else None
        key = folder / "key.pem" if folder else None
        client_cert = None
        if cert and key and cert.is_file() and key.is_file():
            client_cert = (str(cert), str(key))
        return docker.tls.TLSConfig(
            client_cert=client_cert,
            ca_cert=str(ca) if ca and ca.is_file() else None,
            verify=self.tls_verify,
        )


def resolve_endpoint(
    environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Endpoint:
    """The engine the ``docker`` CLI would use with this environment (see the module doc).

    ``environ`` defaults to ``os.environ``; ``home`` to ``$HOME`` (of ``environ``), used
    only when ``DOCKER_CONFIG`` is unset. Raises ``EndpointError`` naming the context or
    file for an unknown context, an unreadable context or ``config.json``, a bad host, or
    TLS without ``ca.pem``.
    """
    env = os.environ if environ is None else environ
    home = _home(env, home)
    config_dir = config_dir_of(env, home)
    if env.get("DOCKER_HOST", "") != "":
        return _default_endpoint(env, config_dir, "DOCKER_HOST")
    name = env.get("DOCKER_CONTEXT", "")
    source = f"DOCKER_CONTEXT={name}"
    if not name:
        config_file = config_dir / "config.json"
        name = current_context(config_file)
        source = f"current context {name} in {_display(config_file, home)}"
    if not name:
        return _default_endpoint(env, config_dir, None)
    if name == DEFAULT_CONTEXT:
        return _default_endpoint(env, config_dir, source)
    return _context_endpoint(name, config_dir, source)


def config_dir_of(environ: Mapping[str, str], home: Path) -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker`` (the CLI's ``config.Dir()``)."""
    return Path(environ.get("DOCKER_CONFIG") or home / ".docker")


def current_context(config_file: Path) -> str:
    """``currentContext`` in the CLI's ``config.json``; ``""`` when unset or no file."""
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise EndpointError(
            f"cannot read the Docker config file {config_file}: {exc}", path=config_file
        ) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EndpointError(
            f"the Docker config file {config_file} is not valid JSON: {exc}", path=config_file
        ) from exc
    if not isinstance(data, dict):
        raise EndpointError(
            f"the Docker config file {config_file} is not a JSON object", path=config_file
        )
    value = _field(data, "currentContext")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EndpointError(
            f"the Docker config file {config_file}: currentContext is not a string",
            path=config_file,
        )
    return value


def context_dir_name(name: str) -> str:
    """The folder of a context in the store: the hex SHA-256 of its name."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def parse_host(value: str, *, default_to_tls: bool = False) -> str:
    """The CLI's ``opts.ParseHost``: defaults filled in, a bad address refused.

    ``""`` is the default socket (``tcp://localhost:2376`` with TLS); ``tcp://host`` gets
    port 2375, ``tcp://:2376`` host localhost; a bare ``/path`` is a unix socket, a bare
    ``host:port`` TCP; ``ssh://`` and ``fd://`` pass unchanged.
    """
    host = value.strip()
    if not host:
        return DEFAULT_TLS_HOST if default_to_tls else DEFAULT_HOST
    proto, sep, rest = host.partition("://")
    if not sep:
        proto, rest = ("unix" if host.startswith(("/", "./")) else "tcp"), host
    if proto == "tcp":
        return _parse_tcp(rest, value)
    if proto in ("unix", "npipe"):
        if "://" in rest:
            raise EndpointError(f"invalid proto, expected {proto}: {value}")
        default = _DEFAULT_UNIX_SOCKET if proto == "unix" else _DEFAULT_NPIPE
        return f"{proto}://{rest or default}"
    if proto in ("ssh", "fd"):
        return host
    raise EndpointError(f"invalid bind address format: {value}")


def _parse_tcp(addr: str, original: str, default_port: str = _DEFAULT_TCP_PORT) -> str:
    if not addr:
        return f"tcp://localhost:{default_port}"
    if "://" in addr:
        raise EndpointError(f"invalid proto, expected tcp: {original}")
    netloc, slash, path = addr.partition("/")
    netloc = netloc.rpartition("@")[2]
    bracketed = _BRACKETED.fullmatch(netloc)
    if bracketed:
        name, port = bracketed.group(1), bracketed.group(2) or ""
    elif netloc.count(":") == 1:
        name, _, port = netloc.partition(":")
    elif netloc.startswith("[") or "]" in netloc:
        raise EndpointError(f"invalid bind address format: {original}")
    else:  # a bare name, or a bare IPv6 address (the CLI adds the port to it too)
        name, port = netloc, ""
    port = port or default_port
    if not port.isdigit():
        raise EndpointError(f"invalid bind address format: {original}")
    name = name or "localhost"
    joined = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    return f"tcp://{joined}{slash}{path}"


def _default_endpoint(env: Mapping[str, str], config_dir: Path, source: str | None) -> Endpoint:
    verify = env.get("DOCKER_TLS_VERIFY", "") != ""
    tls = verify or env.get("DOCKER_TLS", "") != ""
    host = parse_host(env.get("DOCKER_HOST", ""), default_to_tls=tls)
    if source is None:
        source = "default TLS host" if tls else "default socket"
    cert_path = None
    if tls:
        folder = Path(env.get("DOCKER_CERT_PATH") or config_dir)
        ca = folder / "ca.pem"
        if not ca.is_file():  # the CLI reads it whenever TLS is on, and fails without it
            why = "DOCKER_TLS_VERIFY" if verify else "DOCKER_TLS"
            raise EndpointError(
                f"TLS is on ({why} is set) but {ca} does not exist; set DOCKER_CERT_PATH to"
                " the folder of ca.pem, cert.pem and key.pem",
                context=DEFAULT_CONTEXT,
                path=ca,
            )
        cert_path = str(folder)
    return Endpoint(host, DEFAULT_CONTEXT, source, tls_verify=verify, cert_path=cert_path)


def _context_endpoint(name: str, config_dir: Path, source: str) -> Endpoint:
    digest = context_dir_name(name)
    meta_file = config_dir / "contexts" / "meta" / digest / "meta.json"
    try:
        text = meta_file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EndpointError(  # the docker CLI names meta_file too: a 64-hex path, of no help
            f'context "{name}": context not found (from {source}; `docker context ls` lists'
            " the contexts)",
            context=name,
            path=meta_file,
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EndpointError(
            f'context "{name}": cannot read {meta_file}: {exc}', context=name, path=meta_file
        ) from exc
    docker_meta = _docker_meta(name, meta_file, text)
    host = _field(docker_meta, "Host") or ""
    skip_verify = _field(docker_meta, "SkipTLSVerify") or False
    if not isinstance(host, str) or not isinstance(skip_verify, bool):
        raise EndpointError(
            f'context "{name}": {meta_file}: Host must be a string and SkipTLSVerify a boolean',
            context=name,
            path=meta_file,
        )
    if host and "://" not in host:
        raise EndpointError(
            f'context "{name}": unable to parse docker host "{host}"', context=name, path=meta_file
        )
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    tls = skip_verify or tls_dir.is_dir()
    if host.startswith("tcp://"):
        # The CLI keeps a context's host as written; Go's HTTP client then dials the
        # scheme's port when there is none (443, or 80 without TLS). docker-py needs it.
        host = _parse_tcp(host[6:], host, "443" if tls else "80")
    return Endpoint(
        host or DEFAULT_HOST,
        name,
        source,
        tls_verify=tls and not skip_verify,
        cert_path=str(tls_dir) if tls else None,
    )


def _docker_meta(name: str, meta_file: Path, text: str) -> Mapping[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise EndpointError(
            f'context "{name}": {meta_file} is not valid JSON: {exc}', context=name, path=meta_file
        ) from exc
    endpoints = _field(meta, "Endpoints") if isinstance(meta, dict) else None
    docker_meta = endpoints.get("docker") if isinstance(endpoints, dict) else None
    if not isinstance(docker_meta, dict):
        raise EndpointError(
            f'context "{name}": cannot find docker endpoint in context ({meta_file})',
            context=name,
            path=meta_file,
        )
    return docker_meta


def _field(data: Mapping[str, Any], name: str) -> Any:
    """A JSON object's field as Go's ``encoding/json`` finds it: exact, else any case."""
    if name in data:
        return data[name]
    folded = name.casefold()
    return next((value for key, value in data.items() if key.casefold() == folded), None)


def _home(env: Mapping[str, str], home: Path | None) -> Path:
    if home is not None:
        return home
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _display(path: Path, home: Path) -> str:
    """``~/.docker/config.json`` rather than the full path, when under ``home``."""
    try:
        return str(Path("~") / path.relative_to(home))
    except ValueError:
        return str(path)


def _require_ssh(host: str) -> None:
    if importlib.util.find_spec("paramiko") is None:
        raise EndpointError(
            f"{host}: the Docker SDK for Python needs paramiko for ssh:// hosts:"
            ' pip install "docker[ssh]"'
        )
    if shutil.which("ssh") is None:
        raise EndpointError(f"{host}: no ssh program on PATH (install the OpenSSH client)")
