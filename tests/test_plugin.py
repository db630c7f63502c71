"""The pytest glue without an engine: options, ini, usage errors, exit status, start-up cost."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_imageprune.settings import load_settings
from tests.support import assert_usage_error

UNREACHABLE = "unix:///nonexistent/imageprune-test.sock"


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKER_HOST", UNREACHABLE)
    return UNREACHABLE


def test_not_enabled_registers_nothing(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    assert load_settings(config) is None
    assert config.pluginmanager.get_plugin("imageprune-session") is None


@pytest.mark.parametrize(
    ("args", "filters"),
    [
        pytest.param(["--prune-images"], {}, id="bare"),
        pytest.param(["--prune-images=label=ci"], {"label": ("ci",)}, id="one"),
        pytest.param(
            ["--prune-images=label=ci", "--prune-images=until=24h"],
            {"label": ("ci",), "until": ("24h",)},
            id="repeated",
        ),
        pytest.param(["--prune-images", "label=ci"], {"label": ("ci",)}, id="space-separated"),
        pytest.param(["--prune-images=label!=keep=yes"], {"label!": ("keep=yes",)}, id="label-not"),
    ],
)
def test_command_line_filters(
    pytester: pytest.Pytester, args: list[str], filters: dict[str, tuple[str, ...]]
) -> None:
    settings = load_settings(pytester.parseconfig(*args))
    assert settings is not None
    assert dict(settings.filters.raw) == filters
    assert settings.scope == "session"


@pytest.mark.parametrize(
    ("args", "ini"),
    [
        pytest.param(["--prune-images-dry-run"], "", id="option"),
        pytest.param([], "prune_images_dry_run = true", id="ini"),
        pytest.param(["--prune-images-dry-run", "--prune-images-scope=all"], "", id="scope-all"),
    ],
)
def test_a_dry_run_alone_previews_a_bare_prune_images(
    pytester: pytest.Pytester, args: list[str], ini: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    settings = load_settings(pytester.parseconfig(*args))
    assert settings is not None
    assert (settings.images, settings.dry_run, settings.dry_run_alone) == (True, True, True)
    assert dict(settings.filters.raw) == {}  # Docker's default: dangling images only
    assert settings.kinds == {}


@pytest.mark.parametrize(
    ("args", "images"),
    [
        pytest.param(["--prune-images=label=ci"], True, id="images"),
        pytest.param(["--prune-containers"], False, id="another-kind"),
    ],
)
def test_a_dry_run_with_something_enabled_previews_that(
    pytester: pytest.Pytester, args: list[str], images: bool
) -> None:
    settings = load_settings(pytester.parseconfig(*args, "--prune-images-dry-run"))
    assert settings is not None
    assert (settings.images, settings.dry_run, settings.dry_run_alone) == (images, True, False)


def test_no_prune_images_wins_over_a_dry_run(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig("--prune-images-dry-run", "--no-prune-images")
    assert load_settings(config) is None


def test_a_dry_run_alone_says_so_before_any_test_and_after(
    pytester: pytest.Pytester, no_engine: str
) -> None:
    """It once printed nothing at all: a user previewing a prune saw nothing to prune."""
    pytester.makepyfile("def test_ok(): print('the test ran')")
    result = pytester.runpytest_subprocess("--prune-images-dry-run", "-s")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, a dry run of a bare --prune-images (what"
            " --prune-images-dry-run alone previews): images this session produces matching"
            f" dangling=true; engine {no_engine}*",
            "*the test ran*",
            f"imageprune: WARNING Docker engine at {no_engine} is unreachable*",
        ]
    )


def test_ini_enables_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        prune_images =
            label=ci
            dangling=false
        prune_images_scope = all
        prune_images_report = out/report.json
        """
    )
    settings = load_settings(pytester.parseconfig())
    assert settings is not None
    assert dict(settings.filters.raw) == {"label": ("ci",), "dangling": ("false",)}
    assert settings.scope == "all"
    assert settings.report_path == pytester.path / "out" / "report.json"
    assert "tox.ini" in settings.source or "pytest.ini" in settings.source

    override = load_settings(
        pytester.parseconfig("--prune-images=label=other", "--prune-images-scope=session")
    )
    assert override is not None
    assert dict(override.filters.raw) == {"label": ("other",)}
    assert override.scope == "session"
    assert load_settings(pytester.parseconfig("--no-prune-images")) is None


def test_pyproject_enables(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        prune_images = ["label=ci"]
        """
    )
    settings = load_settings(pytester.parseconfig())
    assert settings is not None
    assert dict(settings.filters.raw) == {"label": ("ci",)}


#: What each usage error says: one prefix, where the value came from, what is wrong, and
#: what to write instead (Docker's own wording, naming Go's parser, stays out).
UNTIL_FORMS = (
    "Write --prune-images=until= and a Go duration back from now (10m, 1h30m), an RFC 3339"
    " date or time (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds"
    " (1700000000.5), such as --prune-images=until=24h"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--prune-images=label"],
            "pytest-imageprune: --prune-images=label (command line): the label filter has no"
            " value. Write --prune-images=label=KEY or --prune-images=label=KEY=VALUE, such as"
            " --prune-images=label=ci",
            id="key-without-value",
        ),
        pytest.param(
            ["--prune-images=until=yesterday"],
            "pytest-imageprune: --prune-images=until=yesterday (command line): 'yesterday' is"
            f" not a time. {UNTIL_FORMS}",
            id="until",
        ),
        pytest.param(
            ["--prune-images=until=1d"],
            "pytest-imageprune: --prune-images=until=1d (command line): '1d' is not a time."
            f" {UNTIL_FORMS}",
            id="until-days",
        ),
        pytest.param(
            ["--prune-images=dangling=maybe"],
            "pytest-imageprune: --prune-images=dangling=maybe (command line): 'maybe' is not"
            " true or false. Write --prune-images=dangling=true (or 1) or"
            " --prune-images=dangling=false (or 0)",
            id="dangling",
        ),
        pytest.param(
            ["--prune-images=dangling=true", "--prune-images=dangling=0"],
            "pytest-imageprune: --prune-images=dangling=true --prune-images=dangling=0 (command"
            " line): dangling is given both true and false. Give one. Write"
            " --prune-images=dangling=true (or 1) or --prune-images=dangling=false (or 0)",
            id="dangling-both",
        ),
        pytest.param(
            ["--prune-images=reference=alpine"],
            "pytest-imageprune: --prune-images=reference=alpine (command line): 'reference' is"
            " not a filter of docker image prune. The filters are dangling=BOOL,"
            " label=KEY[=VALUE], label!=KEY[=VALUE] and until=TIME",
            id="unknown-key",
        ),
        pytest.param(
            ["--prune-images=everything"],
            "pytest-imageprune: --prune-images=everything (command line): 'everything' is not a"
            " filter. A filter is --prune-images=KEY=VALUE: dangling=BOOL, label=KEY[=VALUE],"
            " label!=KEY[=VALUE] and until=TIME",
            id="not-a-filter",
        ),
        pytest.param(
            ["--prune-images=until=1h", "--prune-images=until=2h"],
            "pytest-imageprune: --prune-images=until=1h --prune-images=until=2h (command line):"
            " until is given 2 times; docker image prune takes one. Keep one",
            id="two-untils",
        ),
        pytest.param(
            ["--prune-images", "tests/"],
            "pytest-imageprune: --prune-images tests/ (command line): tests/ is a path, not a"
            " filter (--prune-images takes the word after it as its FILTER). Write"
            " --prune-images=FILTER, such as --prune-images=label=ci, or put a bare"
            " --prune-images after the paths",
            id="swallowed-path",
        ),
        pytest.param(
            ["--prune-images", "--prune-images-scope=everything"],
            "pytest-imageprune: --prune-images-scope=everything (command line): 'everything' is"
            " not a scope. Write session (the images this session produced, the default) or"
            " all (every image, as docker image prune)",
            id="scope",
        ),
    ],
)
def test_bad_values_are_usage_errors_before_any_test(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    (pytester.path / "tests").mkdir()
    assert_usage_error(pytester, args, message)


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        pytest.param(
            "prune_images = label=ci\n    before=x",
            "prune_images = before=x (tox.ini): 'before' is not a filter of docker image prune."
            " The filters are dangling=BOOL, label=KEY[=VALUE], label!=KEY[=VALUE] and"
            " until=TIME",
            id="unknown-key",
        ),
        pytest.param(
            "prune_images = label",
            "prune_images = label (tox.ini): the label filter has no value. Write label=KEY or"
            " label=KEY=VALUE, such as label=ci",
            id="key-without-value",
        ),
        pytest.param(
            "prune_images = until=yesterday",
            "prune_images = until=yesterday (tox.ini): 'yesterday' is not a time. Write until="
            " and a Go duration back from now (10m, 1h30m), an RFC 3339 date or time"
            " (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds (1700000000.5),"
            " such as until=24h",
            id="until",
        ),
        pytest.param(
            "prune_images = label=ci\nprune_images_scope = every",
            "prune_images_scope = every (tox.ini): 'every' is not a scope. Write session (the"
            " images this session produced, the default) or all (every image, as docker image"
            " prune)",
            id="scope",
        ),
    ],
)
def test_a_bad_ini_value_names_the_ini_key_and_file(
    pytester: pytest.Pytester, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == f"ERROR: pytest-imageprune: {message}"
    assert "ran" not in result.stdout.str()


def test_a_path_with_an_equals_sign_is_still_a_path(pytester: pytest.Pytester) -> None:
    (pytester.path / "d=1").mkdir()
    pytester.makepyfile(**{"d=1/test_z": "def test_z(): pass"})
    result = pytester.runpytest_subprocess("--prune-images", "d=1/test_z.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--prune-images d=1/test_z.py (command line): d=1/test_z.py is a path*"]
    )


def test_the_path_after_a_bare_option_can_come_first(
    pytester: pytest.Pytester, no_engine: str
) -> None:
    pytester.makepyfile(test_one="def test_one(): pass")
    result = pytester.runpytest_subprocess(
        "test_one.py", "--prune-images", "--prune-images-dry-run"
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param("def test_ok(): pass", pytest.ExitCode.OK, id="pass"),
        pytest.param("def test_bad(): assert False", pytest.ExitCode.TESTS_FAILED, id="fail"),
    ],
)
@pytest.mark.parametrize("scope", ["session", "all"])
def test_an_unreachable_engine_keeps_the_verdict(
    pytester: pytest.Pytester, no_engine: str, body: str, status: int, scope: str
) -> None:
    pytester.makepyfile(body)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--prune-images=label=ci",
        f"--prune-images-scope={scope}",
        f"--prune-images-report={report}",
    )
    assert result.ret == status
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "INTERNALERROR" not in output
    warnings = [line for line in output.splitlines() if no_engine in line and "WARNING" in line]
    assert len(warnings) == 1, output
    data = json.loads(report.read_text())
    assert data["status"] in {"engine-unreachable", "no-baseline"}
    assert data["ImagesDeleted"] == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param("def test_ok(): print('the test ran')", pytest.ExitCode.OK, id="pass"),
        pytest.param(
            "def test_bad():\n    print('the test ran')\n    assert False",
            pytest.ExitCode.TESTS_FAILED,
            id="fail",
        ),
    ],
)
def test_an_unreachable_engine_is_said_in_the_header_with_what_to_check(
    pytester: pytest.Pytester, no_engine: str, body: str, status: int
) -> None:
    """Before any test runs, not only at the end; the verdict stays the tests'."""
    pytester.makepyfile(body)
    result = pytester.runpytest_subprocess("--prune-images=label=ci", "-s")
    assert result.ret == status
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, prune images this session produces matching label=ci;"
            f" engine {no_engine} (DOCKER_HOST): not reachable (*No such file or directory);"
            " check that the Docker daemon runs and that this is its socket (`docker info`"
            " asks the same engine): nothing will be pruned",
            "*the test ran*",
            f"imageprune: WARNING Docker engine at {no_engine} is unreachable*; nothing pruned",
        ]
    )


@pytest.mark.parametrize(
    ("endpoint", "cause", "scope", "said"),
    [
        pytest.param(
            "unix:///var/run/docker.sock",
            PermissionError(13, "Permission denied"),
            "session",
            "not reachable (denied); check that this user may use the engine's socket (its"
            " group, often docker) (`docker info` asks the same engine): nothing will be pruned",
            id="socket-denied",
        ),
        pytest.param(
            "tcp://build-host:2376",
            ConnectionRefusedError(111, "Connection refused"),
            "all",
            "not reachable (denied); check that the engine runs and answers at this address,"
            " and its TLS or ssh settings (`docker info` asks the same engine): it is asked"
            " again at session end",
            id="tcp-scope-all",
        ),
    ],
)
def test_what_an_unreachable_engine_says_to_check(
    endpoint: str, cause: OSError, scope: str, said: str
) -> None:
    from pytest_imageprune.errors import EngineUnavailable
    from pytest_imageprune.session.say import unreachable_at_start

    exc = EngineUnavailable(endpoint, "denied")
    exc.__cause__ = cause  # as ``raise ... from`` sets it
    assert unreachable_at_start(exc, scope=scope) == said


@pytest.mark.parametrize("flag", ["--collect-only", "--setup-plan"])
def test_nothing_runs_nothing_is_pruned(
    pytester: pytest.Pytester, no_engine: str, flag: str
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images", flag)
    assert result.ret == pytest.ExitCode.OK
    assert "imageprune:" not in result.stdout.str()


class _Listener:
    """A unix socket for ``DOCKER_HOST`` that counts who calls it and answers 500 to all.

    It stands where an engine would be, to show when the plugin calls one and how often:
    ``asked`` is a file made when the first request arrives, ``calls()`` the connections
    made, every one of them once the caller has exited.
    """

    def __init__(self, folder: str) -> None:
        self.path = f"{folder}/engine.sock"
        self.asked = Path(folder) / "asked"
        self._connections = 0
        #: What it answers, by path (500 to anything else), and what it was asked.
        self.answers: dict[str, object] = {}
        self.paths: list[str] = []
        self._stopped = threading.Event()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(self.path)
        self._socket.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def calls(self) -> int:
        """Stop listening, answer what is still waiting, and count it all."""
        self._stopped.set()
        self._thread.join()
        return self._connections

    def _serve(self) -> None:
        while not self._stopped.is_set():
            if select.select([self._socket], [], [], 0.05)[0]:
                self._answer()
        self._socket.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # connections made before the caller exited
                self._answer()

    def _answer(self) -> None:
        peer, _ = self._socket.accept()
        self._connections += 1
        with peer, contextlib.suppress(OSError):  # the caller may be gone
            peer.settimeout(5)
            while request := peer.recv(65536):  # one request a packet: small GETs
                self.asked.touch()
                path = request.split(b" ", 2)[1].decode()
                self.paths.append(path)
                if path not in self.answers:
                    body = b'{"message": "not an engine"}'
                    peer.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    return
                body = json.dumps(self.answers[path]).encode()
                peer.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Listener]:
    with tempfile.TemporaryDirectory(prefix="ipe-") as folder:  # AF_UNIX paths are short
        fake = _Listener(folder)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{fake.path}")
        # The pytest run under test controls its session, even when this one is an xdist
        # worker's (whose variable it would inherit).
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
        try:
            yield fake
        finally:
            fake.calls()


@pytest.mark.parametrize(
    "flags",
    [
        ["--help"],
        ["--version", "--version"],  # one --version stops before pytest loads any plugin
        ["--markers"],
        ["--fixtures"],
        ["--fixtures-per-test"],
        ["--collect-only"],
        ["--setup-plan"],
    ],
    ids=lambda flags: flags[0],
)
def test_commands_that_run_no_test_never_call_the_engine(
    pytester: pytest.Pytester, listener: _Listener, flags: list[str]
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images", *flags)
    assert result.ret == pytest.ExitCode.OK
    assert listener.calls() == 0


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"OSType": "windows", "Driver": "windowsfilter"}, "windows containers are not supported"),
        ({"OSType": "linux", "Driver": "mystery"}, "image store 'mystery' is not recognised"),
    ],
    ids=["windows", "unknown-store"],
)
def test_an_unsupported_store_deletes_nothing_and_says_so_in_one_line(
    pytester: pytest.Pytester, listener: _Listener, info: dict[str, str], reason: str
) -> None:
    """A fake engine: no Windows engine or unknown store can be had here."""
    listener.answers["/version"] = {"Version": "29.4.0", "Components": [{"Name": "Engine"}]}
    listener.answers["/info"] = {**info, "ServerVersion": "29.4.0"}
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images=label=ci", "--prune-images-scope=all")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"imageprune: WARNING {reason}: nothing will be deleted"])
    result.stdout.fnmatch_lines([f"imageprune: WARNING *{reason}; nothing deleted"])
    assert listener.calls() == 1
    assert listener.paths == ["/version", "/info"]  # no listing, no delete


def test_the_engine_is_asked_before_the_conftests_load(
    pytester: pytest.Pytester, listener: _Listener
) -> None:
    """A project's conftests may take a while to import: the baseline is asked for first."""
    pytester.makeconftest(
        f"""
        import pathlib, time

        asked = pathlib.Path({str(listener.asked)!r})
        waited = time.monotonic() + 10
        while not asked.exists() and time.monotonic() < waited:
            time.sleep(0.01)
        ASKED = asked.exists()

        def pytest_report_header():
            return [f"asked before the conftest loaded: {{ASKED}}"]
        """
    )
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images=label=ci")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["asked before the conftest loaded: True"])
    assert listener.calls() == 1  # the session went on with the answer it got


def test_a_conftest_that_changes_the_settings_wins(
    pytester: pytest.Pytester, listener: _Listener
) -> None:
    """The early start read the command line; a conftest may change it before configure."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_configure(config):
            config.option.prune_images = ["label=changed"]
        """
    )
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess(
        "--prune-images=label=ci", "--prune-images-report=r.json"
    )
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["filters"] == {"label": ["changed"]}
    assert listener.calls() == 2  # the early start's, then the session's own


def test_xdist_workers_never_call_the_engine(
    pytester: pytest.Pytester, listener: _Listener
) -> None:
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('n', range(4))\ndef test_ok(n): pass"
    )
    result = pytester.runpytest_subprocess("--prune-images", "-n", "2")
    result.assert_outcomes(passed=4)
    assert listener.calls() == 1  # the controller's baseline


def test_xdist_workers_never_register_the_plugin(pytester: pytest.Pytester, no_engine: str) -> None:
    pytester.makeconftest(
        """
        import os

        def pytest_sessionstart(session):
            config = session.config
            if hasattr(config, "workerinput"):
                plugin = config.pluginmanager.get_plugin("imageprune-session")
                name = config.workerinput["workerid"]
                with open(f"{name}.txt", "w") as out:
                    out.write(repr(plugin))
        """
    )
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('n', range(4))\ndef test_ok(n): pass"
    )
    result = pytester.runpytest_subprocess("--prune-images", "-n", "2")
    result.assert_outcomes(passed=4)
    seen = sorted(p.read_text() for p in pytester.path.glob("gw*.txt"))
    assert seen == ["None", "None"]
    # The controller did register: its one warning line says the engine is unreachable.
    assert result.stdout.str().count(no_engine) >= 1


def test_not_enabled_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    """Installed, not enabled: no Docker SDK, requests, urllib3 or dateutil at start-up, and
    of the plugin only what registers its options and reads its settings (every pytest run
    pays for each module: ``model.images`` alone, its dataclasses, took 4 ms)."""
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            heavy = sorted(
                m for m in sys.modules
                if m.split(".")[0] in {"docker", "requests", "urllib3", "dateutil"}
            )
            print("HEAVY:", heavy)
            own = sorted(m for m in sys.modules if m.startswith("pytest_imageprune"))
            print("OWN:", " ".join(own))
        """
    )
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("-s", "-p", "no:xdist", "-p", "no:hypothesispytest")
    result.stdout.fnmatch_lines(["*HEAVY: []"])
    own = next(line for line in result.stdout.lines if line.startswith("OWN:")).split()[1:]
    assert own == [
        "pytest_imageprune",
        "pytest_imageprune.hookspecs",
        "pytest_imageprune.kinds",
        "pytest_imageprune.kinds.table",
        "pytest_imageprune.model",
        "pytest_imageprune.model.scopes",
        "pytest_imageprune.plugin",
        "pytest_imageprune.settings",
    ]
    assert "imageprune" in _plugins_line(result.stdout.lines)


def _plugins_line(lines: list[str]) -> str:
    return next((line for line in lines if line.startswith("plugins:")), "")


def test_the_entry_point_is_named_imageprune() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:imageprune", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "--prune-images" not in out
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=False
    ).stdout
    assert "--prune-images-scope={session,all}" in out


def test_an_unknown_docker_context_is_said_in_the_header_before_any_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known at start, said at start: not a default socket the plugin will not use, and
    not only after every test has run."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(pytester.path))
    monkeypatch.setenv("DOCKER_CONTEXT", "nosuch")
    pytester.makepyfile("def test_ok(): print('the test ran')")
    result = pytester.runpytest_subprocess("--prune-images=label=ci", "-s")
    assert result.ret == pytest.ExitCode.OK
    problem = (
        'no Docker engine can be chosen: context "nosuch": context not found (from'
        " DOCKER_CONTEXT=nosuch; `docker context ls` lists the contexts)"
    )
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, prune images this session produces matching"
            " label=ci; no engine",
            f"imageprune: WARNING {problem}: nothing will be pruned",
            "*the test ran*",
            f"imageprune: WARNING {problem}; nothing pruned",
        ]
    )
    output = result.stdout.str()
    assert "unix:///var/run/docker.sock" not in output
    assert "meta.json" not in output


def test_help_and_the_readme_agree_on_where_the_default_lock_lives() -> None:
    from pytest_imageprune.coordination.place import shared_folders
    from pytest_imageprune.settings import DEFAULT_LOCK

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=False
    ).stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert DEFAULT_LOCK in " ".join(out.split())
    assert DEFAULT_LOCK in readme
    folder, _, name = DEFAULT_LOCK.rpartition("/")
    first = shared_folders("ENGINE:ID")[0]
    assert f"{first.parent}/pytest-imageprune-<digest>" == folder
    assert first.name.startswith("pytest-imageprune-")
    assert name == "prune.lock"
