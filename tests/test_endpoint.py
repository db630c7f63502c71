"""Choosing the engine as the docker CLI does: precedence, contexts, TLS, host syntax.

Pure: a tmp_path is the home folder (and ``~/.docker``), the environment is a dict.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest

from pytest_imageprune.engine.endpoint import (
    DEFAULT_HOST,
    Endpoint,
    EndpointError,
    context_dir_name,
    parse_host,
    resolve_endpoint,
)
from pytest_imageprune.errors import ImagePruneError

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    (folder / ".docker").mkdir(parents=True)
    return folder


def write_config(config_dir: Path, data: Any) -> Path:
    path = config_dir / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def make_context(
    config_dir: Path,
    name: str,
    host: str,
    *,
    skip_tls_verify: bool = False,
    tls_files: tuple[str, ...] = (),
) -> Path:
    """A context as ``docker context create`` stores it; returns its TLS folder."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    docker = {"Host": host, "SkipTLSVerify": skip_tls_verify}
    document = {"Name": name, "Metadata": {}, "Endpoints": {"docker": docker}}
    (meta / "meta.json").write_text(json.dumps(document), encoding="utf-8")
    tls = config_dir / "contexts" / "tls" / digest / "docker"
    if tls_files:
        make_certs(tls, tls_files)
    return tls


def make_certs(folder: Path, names: tuple[str, ...] = TLS_FILES) -> Path:
    """Throwaway PEM files: docker-py's TLSConfig only checks that they exist."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("-----BEGIN DUMMY-----\n", encoding="utf-8")
    return folder


# -- precedence ------------------------------------------------------------------------


def test_nothing_set_is_the_default_socket(home: Path) -> None:
    ep = resolve_endpoint({}, home)
    assert ep == Endpoint(DEFAULT_HOST, "default", "default socket")
    assert not ep.tls
    assert ep.describe() == "unix:///var/run/docker.sock (default socket)"


def test_docker_host_wins_over_docker_context_and_config(home: Path) -> None:
    write_config(home / ".docker", {"currentContext": "from-config"})
    env = {"DOCKER_HOST": "tcp://10.0.0.1:2375", "DOCKER_CONTEXT": "missing"}
    ep = resolve_endpoint(env, home)
    assert (ep.host, ep.context, ep.source) == ("tcp://10.0.0.1:2375", "default", "DOCKER_HOST")
    assert ep.describe() == "tcp://10.0.0.1:2375 (DOCKER_HOST)"


def test_empty_docker_host_counts_as_unset(home: Path) -> None:
    make_context(home / ".docker", "remote", "tcp://10.0.0.2:2375")
    ep = resolve_endpoint({"DOCKER_HOST": "", "DOCKER_CONTEXT": "remote"}, home)
    assert (ep.host, ep.context, ep.source) == (
        "tcp://10.0.0.2:2375",
        "remote",
        "DOCKER_CONTEXT=remote",
    )


def test_docker_context_wins_over_the_config_file(home: Path) -> None:
    make_context(home / ".docker", "a", "tcp://10.0.0.1:2375")
    make_context(home / ".docker", "b", "tcp://10.0.0.2:2375")
    write_config(home / ".docker", {"currentContext": "b"})
    ep = resolve_endpoint({"DOCKER_CONTEXT": "a"}, home)
    assert (ep.host, ep.context) == ("tcp://10.0.0.1:2375", "a")


def test_current_context_in_the_config_file(home: Path) -> None:
    make_context(home / ".docker", "b", "ssh://me@build-host")
    write_config(home / ".docker", {"auths": {}, "currentContext": "b"})
    ep = resolve_endpoint({}, home)
    assert (ep.host, ep.context) == ("ssh://me@build-host", "b")
    assert ep.source == "current context b in ~/.docker/config.json"
    assert ep.describe() == "ssh://me@build-host (current context b in ~/.docker/config.json)"


def test_config_file_without_current_context_is_the_default(home: Path) -> None:
    write_config(home / ".docker", {"auths": {}, "currentContext": ""})
    assert resolve_endpoint({}, home).source == "default socket"


def test_docker_config_moves_config_and_contexts(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "cfg"
    elsewhere.mkdir()
    make_context(elsewhere, "c", "tcp://10.0.0.3:2375")
    write_config(elsewhere, {"currentContext": "c"})
    write_config(home / ".docker", {"currentContext": "not-this-one"})
    ep = resolve_endpoint({"DOCKER_CONFIG": str(elsewhere)}, home)
    assert (ep.host, ep.context) == ("tcp://10.0.0.3:2375", "c")
    assert ep.source == f"current context c in {elsewhere / 'config.json'}"


def test_home_comes_from_the_environment(home: Path) -> None:
    make_context(home / ".docker", "h", "tcp://10.0.0.4:2375")
    assert resolve_endpoint({"HOME": str(home), "DOCKER_CONTEXT": "h"}).context == "h"


@pytest.mark.parametrize(
    "env",
    [{"DOCKER_CONTEXT": "default"}, {}],
    ids=["DOCKER_CONTEXT=default", "currentContext=default"],
)
def test_the_default_context_by_name(home: Path, env: dict[str, str]) -> None:
    write_config(home / ".docker", {"currentContext": "default"})
    make_certs(home / ".docker")
    ep = resolve_endpoint({**env, "DOCKER_TLS_VERIFY": "1"}, home)
    # The default context by name still takes its TLS from the environment.
    assert (ep.context, ep.host, ep.tls_verify) == ("default", "tcp://localhost:2376", True)
    assert ep.source.startswith("DOCKER_CONTEXT=default" if env else "current context default")


# -- named contexts --------------------------------------------------------------------


def test_context_folder_is_the_sha256_of_the_name() -> None:
    assert context_dir_name("default") == hashlib.sha256(b"default").hexdigest()


def test_named_context_with_tls_material(home: Path) -> None:
    tls = make_context(home / ".docker", "secure", "tcp://10.0.0.5:2376", tls_files=TLS_FILES)
    ep = resolve_endpoint({"DOCKER_CONTEXT": "secure"}, home)
    assert (ep.tls, ep.tls_verify, ep.cert_path) == (True, True, str(tls))
    assert ep.describe() == "tcp://10.0.0.5:2376 (DOCKER_CONTEXT=secure, TLS)"


def test_named_context_skip_tls_verify(home: Path) -> None:
    make_context(home / ".docker", "lax", "tcp://10.0.0.6:2376", skip_tls_verify=True)
    ep = resolve_endpoint({"DOCKER_CONTEXT": "lax"}, home)
    assert (ep.tls, ep.tls_verify) == (True, False)
    assert ep.describe().endswith("TLS without verification)")


def test_named_context_ignores_the_tls_variables(home: Path) -> None:
    make_context(home / ".docker", "plain", "tcp://10.0.0.7:2375")
    env = {"DOCKER_CONTEXT": "plain", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nowhere"}
    ep = resolve_endpoint(env, home)
    assert (ep.tls, ep.cert_path) == (False, None)


@pytest.mark.parametrize(
    ("skip", "expected"),
    [(True, "tcp://10.0.0.9:443"), (False, "tcp://10.0.0.9:80")],
    ids=["tls", "plain"],
)
def test_named_context_tcp_host_without_port(home: Path, skip: bool, expected: str) -> None:
    # `docker context create x --docker host=tcp://10.0.0.9` stores no port; the CLI's Go
    # HTTP client then dials 443 (TLS) or 80.
    make_context(home / ".docker", "x", "tcp://10.0.0.9", skip_tls_verify=skip)
    assert resolve_endpoint({"DOCKER_CONTEXT": "x"}, home).host == expected


def test_named_context_without_host_is_the_default_socket(home: Path) -> None:
    make_context(home / ".docker", "empty", "")
    assert resolve_endpoint({"DOCKER_CONTEXT": "empty"}, home).host == DEFAULT_HOST


def test_context_field_names_match_in_any_case(home: Path) -> None:
    digest = context_dir_name("lower")
    meta = home / ".docker" / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    document = {"name": "lower", "endpoints": {"docker": {"host": "tcp://10.0.0.8:2375"}}}
    (meta / "meta.json").write_text(json.dumps(document), encoding="utf-8")
    assert resolve_endpoint({"DOCKER_CONTEXT": "lower"}, home).host == "tcp://10.0.0.8:2375"


@pytest.mark.parametrize(
    "env",
    [{"DOCKER_CONTEXT": "nope"}, {}],
    ids=["DOCKER_CONTEXT", "config.json"],
)
def test_unknown_context_is_an_error_naming_it(home: Path, env: dict[str, str]) -> None:
    write_config(home / ".docker", {"currentContext": "nope"})
    with pytest.raises(EndpointError, match=r'^context "nope": context not found \(from ') as info:
        resolve_endpoint(env, home)
    assert isinstance(info.value, ImagePruneError)
    assert isinstance(info.value, ValueError)
    assert info.value.context == "nope"


@pytest.mark.parametrize(
    ("document", "pattern"),
    [
        ("{not json", "is not valid JSON"),
        ({"Name": "broken", "Endpoints": {}}, "cannot find docker endpoint"),
        ({"Endpoints": {"docker": {"Host": 2375}}}, "Host must be a string"),
        ({"Endpoints": {"docker": {"Host": "10.0.0.9:2375"}}}, "unable to parse docker host"),
    ],
    ids=["not-json", "no-docker-endpoint", "host-not-string", "host-without-scheme"],
)
def test_broken_context_metadata(home: Path, document: Any, pattern: str) -> None:
    meta = home / ".docker" / "contexts" / "meta" / context_dir_name("broken")
    meta.mkdir(parents=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (meta / "meta.json").write_text(text, encoding="utf-8")
    with pytest.raises(EndpointError, match=pattern) as info:
        resolve_endpoint({"DOCKER_CONTEXT": "broken"}, home)
    assert 'context "broken"' in str(info.value)


# -- config.json -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"currentContext": ', "is not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"currentContext": 3}', "currentContext is not a string"),
    ],
    ids=["truncated", "array", "number"],
)
def test_malformed_config_file_is_an_error_naming_it(home: Path, text: str, pattern: str) -> None:
    path = write_config(home / ".docker", text)
    with pytest.raises(EndpointError, match=pattern) as info:
        resolve_endpoint({}, home)
    assert str(path) in str(info.value)
    assert info.value.path == path


@pytest.mark.parametrize(
    "env",
    [{"DOCKER_HOST": "unix:///run/other.sock"}, {"DOCKER_CONTEXT": "default"}],
    ids=["DOCKER_HOST", "DOCKER_CONTEXT"],
)
def test_malformed_config_file_is_not_read_when_not_needed(home: Path, env: dict[str, str]) -> None:
    write_config(home / ".docker", "{broken")
    assert resolve_endpoint(env, home).context == "default"


# -- TLS of the default context --------------------------------------------------------


def test_tls_verify_with_cert_path(home: Path, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    env = {
        "DOCKER_HOST": "tcp://10.0.0.10:2376",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(certs),
    }
    ep = resolve_endpoint(env, home)
    assert (ep.tls, ep.tls_verify, ep.cert_path) == (True, True, str(certs))
    assert ep.describe() == "tcp://10.0.0.10:2376 (DOCKER_HOST, TLS)"


def test_tls_cert_path_defaults_to_the_config_dir(home: Path, tmp_path: Path) -> None:
    make_certs(home / ".docker")
    env = {"DOCKER_HOST": "tcp://10.0.0.10:2376", "DOCKER_TLS_VERIFY": "1"}
    assert resolve_endpoint(env, home).cert_path == str(home / ".docker")
    config = make_certs(tmp_path / "cfg")
    env["DOCKER_CONFIG"] = str(config)
    assert resolve_endpoint(env, home).cert_path == str(config)


@pytest.mark.parametrize(
    ("env", "verify"),
    [
        ({"DOCKER_TLS_VERIFY": "0"}, True),  # any non-empty value, as in the CLI
        ({"DOCKER_TLS": "1"}, False),
        ({"DOCKER_TLS": "1", "DOCKER_TLS_VERIFY": ""}, False),
    ],
    ids=["verify-0-still-verifies", "DOCKER_TLS", "empty-verify"],
)
def test_tls_switches(home: Path, env: dict[str, str], verify: bool) -> None:
    make_certs(home / ".docker")
    ep = resolve_endpoint({"DOCKER_HOST": "tcp://10.0.0.11:2376", **env}, home)
    assert (ep.tls, ep.tls_verify) == (True, verify)


def test_cert_path_alone_does_not_turn_tls_on(home: Path, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    env = {"DOCKER_HOST": "tcp://10.0.0.12:2375", "DOCKER_CERT_PATH": str(certs)}
    assert not resolve_endpoint(env, home).tls


def test_tls_without_a_host_is_localhost_2376(home: Path) -> None:
    make_certs(home / ".docker")
    ep = resolve_endpoint({"DOCKER_TLS_VERIFY": "1"}, home)
    assert (ep.host, ep.source) == ("tcp://localhost:2376", "default TLS host")


def test_tls_without_ca_pem_is_an_error_naming_it(home: Path, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", ("cert.pem", "key.pem"))
    env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    with pytest.raises(EndpointError, match="DOCKER_TLS_VERIFY") as info:
        resolve_endpoint(env, home)
    assert str(certs / "ca.pem") in str(info.value)


# -- host syntax -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tcp://1.2.3.4:2376", "tcp://1.2.3.4:2376"),
        ("tcp://1.2.3.4", "tcp://1.2.3.4:2375"),
        ("tcp://:2376", "tcp://localhost:2376"),
        ("tcp://", "tcp://localhost:2375"),
        ("1.2.3.4:2376", "tcp://1.2.3.4:2376"),
        ("tcp://[::1]", "tcp://[::1]:2375"),
        ("tcp://[::1]:2376", "tcp://[::1]:2376"),
        ("tcp://docker.example:2376/prefix", "tcp://docker.example:2376/prefix"),
        (" unix:///run/docker.sock ", "unix:///run/docker.sock"),
        ("unix://", DEFAULT_HOST),
        ("/run/user/1000/docker.sock", "unix:///run/user/1000/docker.sock"),
        ("ssh://me@host", "ssh://me@host"),
        ("ssh://me@host:2222", "ssh://me@host:2222"),
        ("", DEFAULT_HOST),
    ],
    ids=lambda value: value or "empty",
)
def test_parse_host(value: str, expected: str) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    "value", ["http://h:2375", "tcp://h:port", "unix://a://b", "tcp://tcp://h"], ids=str
)
def test_parse_host_refuses(value: str) -> None:
    with pytest.raises(EndpointError, match="invalid"):
        parse_host(value)


def test_a_bad_docker_host_is_an_error(home: Path) -> None:
    with pytest.raises(EndpointError, match=r"invalid bind address format: foo://bar"):
        resolve_endpoint({"DOCKER_HOST": "foo://bar"}, home)


def test_tcp_docker_host_gets_the_default_port(home: Path) -> None:
    assert resolve_endpoint({"DOCKER_HOST": "tcp://10.0.0.13"}, home).host == (
        "tcp://10.0.0.13:2375"
    )


# -- client_kwargs ---------------------------------------------------------------------


def test_client_kwargs_without_tls() -> None:
    assert Endpoint(DEFAULT_HOST, "default", "default socket").client_kwargs() == {
        "base_url": DEFAULT_HOST
    }
    tcp = Endpoint("tcp://10.0.0.14:2375", "default", "DOCKER_HOST")
    assert tcp.client_kwargs() == {"base_url": "tcp://10.0.0.14:2375"}


def test_client_kwargs_builds_a_real_tls_config(tmp_path: Path) -> None:
    import docker
    import docker.tls

    certs = make_certs(tmp_path / "certs")
    ep = Endpoint("tcp://10.0.0.15:2376", "default", "DOCKER_HOST", True, str(certs))
    kwargs = ep.client_kwargs()
    tls = kwargs["tls"]
    assert isinstance(tls, docker.tls.TLSConfig)
    assert tls.verify is True
    assert tls.ca_cert == str(certs / "ca.pem")
    assert tls.cert == (str(certs / "cert.pem"), str(certs / "key.pem"))
    # And docker-py takes it: HTTPS, verified against ca.pem, with the client certificate.
    client = docker.APIClient(version="1.41", **kwargs)
    try:
        assert client.base_url == "https://10.0.0.15:2376"
        assert client.verify == str(certs / "ca.pem")
        assert client.cert == (str(certs / "cert.pem"), str(certs / "key.pem"))
    finally:
        client.close()


def test_client_kwargs_tls_without_verification_or_client_cert(tmp_path: Path) -> None:
    import docker

    certs = make_certs(tmp_path / "certs", ("ca.pem",))
    ep = Endpoint("tcp://10.0.0.16:2376", "lax", "DOCKER_CONTEXT=lax", False, str(certs))
    tls = ep.client_kwargs()["tls"]
    assert (tls.verify, tls.cert) == (False, None)
    client = docker.APIClient(version="1.41", **ep.client_kwargs())
    try:
        assert (client.base_url, client.verify) == ("https://10.0.0.16:2376", False)
    finally:
        client.close()


def test_client_kwargs_tls_from_a_context_without_files(tmp_path: Path) -> None:
    # SkipTLSVerify with no TLS folder: TLS on, nothing to load.
    ep = Endpoint("tcp://10.0.0.17:2376", "c", "DOCKER_CONTEXT=c", False, str(tmp_path / "no"))
    tls = ep.client_kwargs()["tls"]
    assert (tls.verify, tls.ca_cert, tls.cert) == (False, None, None)


def test_client_kwargs_no_tls_over_a_socket(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    ep = Endpoint(DEFAULT_HOST, "default", "default socket", True, str(certs))
    assert ep.client_kwargs() == {"base_url": DEFAULT_HOST}
    assert ep.describe() == "unix:///var/run/docker.sock (default socket)"


def _fake_find_spec(present: bool) -> Any:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if name == "paramiko":
            return ModuleSpec("paramiko", None) if present else None
        return real(name, package)

    return find_spec


def test_ssh_needs_paramiko(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(False))
    ep = Endpoint("ssh://me@host", "remote", "DOCKER_CONTEXT=remote")
    with pytest.raises(EndpointError, match=r'pip install "docker\[ssh\]"'):
        ep.client_kwargs()


def test_ssh_uses_the_ssh_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(True))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    ep = Endpoint("ssh://me@host", "remote", "DOCKER_CONTEXT=remote")
    assert ep.client_kwargs() == {"base_url": "ssh://me@host", "use_ssh_client": True}


def test_ssh_needs_the_ssh_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(True))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EndpointError, match="no ssh program"):
        Endpoint("ssh://me@host", "remote", "x").client_kwargs()


def test_fd_hosts_are_refused() -> None:
    with pytest.raises(EndpointError, match="fd://"):
        Endpoint("fd://", "default", "DOCKER_HOST").client_kwargs()


def test_importing_the_module_imports_no_docker() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_imageprune.engine.endpoint as e; "
        "e.resolve_endpoint({'DOCKER_HOST': 'unix:///x'}); "
        "heavy = ('docker', 'requests', 'urllib3', 'dateutil'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
