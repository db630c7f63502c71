"""Where users run it: GitHub Actions, Docker contexts, hooks and fixtures, tox; real engine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import lock_held_elsewhere
from tests.test_plugin_engine import ROOT, Namespace, ns, run, write_tests

pytestmark = pytest.mark.engine

__all__ = ["ns"]  # the fixture, used by name


def test_github_actions_step_summary_and_warnings(
    pytester: pytest.Pytester, ns: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "summary.md"
    summary.write_text("# earlier step output\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_tests(pytester, 'def test_build():\n    make("a")\n')
    result = run(pytester, ns.scope)
    assert result.ret == 0
    text = summary.read_text()
    assert text.startswith("# earlier step output\n")  # appended, not replaced
    assert "### pytest-imageprune" in text
    assert ns.built("a")[-1].removeprefix("sha256:")[:12] in text
    assert "::warning" not in result.stdout.str()

    # A held lock is a warning annotation on stdout.
    lock = pytester.path / "held.lock"
    with lock_held_elsewhere(lock):
        result = run(pytester, ns.scope, f"--prune-images-lock={lock}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["::warning title=pytest-imageprune::*already running*"])


def test_the_protect_hook_keeps_images_and_the_report_hook_hears_the_end(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    pytester.makeconftest(
        """
        import json

        def pytest_imageprune_protect(image):
            if (image.labels or {}).get("keep") == "please":
                return "asked to keep it"
            return None

        def pytest_imageprune_report(report):
            with open("hook-report.json", "w") as out:
                json.dump(report.to_dict(), out)
        """
    )
    write_tests(
        pytester,
        """
        def test_build():
            make("protected", labels={"keep": "please"})
            make("plain")
        """,
    )
    result = run(pytester, ns.scope, "-v")
    assert result.ret == 0
    assert ns.exists(ns.built("protected")[-1])
    assert not ns.exists(ns.built("plain")[-1])
    result.stdout.fnmatch_lines(["*kept * protected: asked to keep it*"])
    heard = json.loads((pytester.path / "hook-report.json").read_text())
    assert ns.built("plain")[-1] in {r.get("Deleted") for r in heard["ImagesDeleted"]}


def test_the_fixtures_give_the_label_and_the_baseline_even_on_xdist_workers(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    before = ns.build("before")
    write_tests(
        pytester,
        f"""
        import pytest

        @pytest.mark.parametrize("n", range(2))
        def test_uses_fixtures(n, imageprune_label, imageprune_baseline):
            assert imageprune_label == {{"itest": "{ns.name}", "team": "a"}}
            assert imageprune_baseline is not None
            assert "{before[-1]}" in imageprune_baseline.tags
            make(f"labelled{{n}}", labels={{"team": "a"}})
        """,
    )
    result = run(pytester, ns.scope, "--prune-images=label=team=a", "-n", "2")
    result.assert_outcomes(passed=2)
    assert not ns.exists(ns.built("labelled0")[-1])
    assert not ns.exists(ns.built("labelled1")[-1])
    assert ns.exists(before[-1])


def _context(config: Path, name: str, host: str) -> None:
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host}}})
    )


@pytest.mark.parametrize("how", ["DOCKER_CONTEXT", "docker context use"])
def test_the_engine_is_chosen_as_the_docker_cli_chooses_it(
    pytester: pytest.Pytester, ns: Namespace, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    config = pytester.path / "docker-config"
    _context(config, "ci-engine", host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    if how == "DOCKER_CONTEXT":
        monkeypatch.setenv("DOCKER_CONTEXT", "ci-engine")
        (config / "config.json").write_text(json.dumps({"currentContext": "elsewhere"}))
    else:
        (config / "config.json").write_text(json.dumps({"currentContext": "ci-engine"}))
    write_tests(pytester, 'def test_build():\n    make("a")\n')
    report = pytester.path / "report.json"
    result = run(pytester, ns.scope, f"--prune-images-report={report}")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"imageprune: at session end*; engine {host}*ci-engine*"])
    # Built on the engine under test (IMAGEPRUNE_TEST_HOST: DOCKER_HOST is unset here), and
    # pruned there: the context chose it. (Built on the default socket instead, the image
    # would be missing from the engine under test and the report alike, and left behind.)
    assert ns.built("a")[-1] in json.loads(report.read_text())["deleted_ids"]
    assert not ns.exists(ns.built("a")[-1])


def test_an_unknown_context_is_one_warning_not_a_traceback(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(pytester.path))
    monkeypatch.setenv("DOCKER_CONTEXT", "no-such-context")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("--prune-images")
    assert result.ret == 0
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*WARNING*no-such-context*"])


def test_tox_run_parallel_with_the_ini_recipe(pytester: pytest.Pytester, ns: Namespace) -> None:
    """The README's tox recipe, as written, with two environments in parallel."""
    tox = [sys.executable, "-m", "tox"]  # a test dependency (the "test" extra)
    pytester.makefile(
        ".ini",
        tox=textwrap.dedent(
            f"""
            [tox]
            env_list = a, b

            [testenv]
            skip_install = true
            deps = {ROOT}
            pass_env =
                DOCKER_HOST
                IMAGEPRUNE_TEST_HOST
                IMAGEPRUNE_TEST_NS
                IMAGEPRUNE_TEST_OUT
                PYTEST_IMAGEPRUNE_ENGINE_ROOM
                PYTHONPATH
            commands = pytest -p no:cacheprovider {{posargs}}

            [testenv:a]
            set_env = WHICH = a

            [testenv:b]
            set_env = WHICH = b

            [pytest]
            prune_images =
                label=itest={ns.name}
            prune_images_lock = {pytester.path / "tox.lock"}
            """
        ),
    )
    write_tests(
        pytester, 'import os\n\ndef test_build():\n    make("env_" + os.environ["WHICH"])\n'
    )
    result = subprocess.run(
        [*tox, "run-parallel", "--parallel-live", "-e", "a,b"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not ns.exists(ns.built("env_a")[-1]), output
    assert not ns.exists(ns.built("env_b")[-1]), output


@pytest.mark.private_engine
def test_a_tcp_engine_named_by_docker_host(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DOCKER_HOST=tcp://...``: the Docker SDK path, on a private dockerd on loopback."""
    import socket

    from tests.support import connect, private_dockerd
    from tests.test_plugin_engine import INNER

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"tcp://127.0.0.1:{port}"
    out = pytester.path / "built"
    out.mkdir()
    with private_dockerd(tcp=host):
        monkeypatch.setenv("DOCKER_HOST", host)
        monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
        monkeypatch.setenv("IMAGEPRUNE_TEST_NS", "tcp")
        monkeypatch.setenv("IMAGEPRUNE_TEST_OUT", str(out))
        monkeypatch.setenv("PYTHONPATH", str(ROOT))
        pytester.makepyfile(inner=INNER)
        write_tests(pytester, 'def test_build():\n    make("over_tcp")\n')
        result = run(pytester, "--prune-images=label=itest=tcp", "-v")
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines([f"imageprune: at session end*; engine {host} (DOCKER_HOST)*"])
        result.stdout.fnmatch_lines(["imageprune: deleted 2 images*"])
        client = connect(host)
        try:
            assert client.images(all=True, filters={"label": "itest=tcp"}) == []
        finally:
            client.close()
