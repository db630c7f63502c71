"""Real pytest sessions against a real engine, with images built inside the tests.

Every image here carries the label ``itest=<namespace of this test>`` and every prune is
scoped by it, so these tests can run on an engine that holds other images; the fixture
removes whatever is left of the namespace afterwards.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from pytest_imageprune.model.images import normalize_reference
from tests.support import (
    SUITE_LABELS,
    TEST_HOST_VARIABLE,
    EngineUnderTest,
    build,
    full_id,
    lock_held_elsewhere,
    remove_leftovers,
)

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent

INNER = '''
import json, os, time
from pathlib import Path

from tests.support import build, connect

NS = os.environ["IMAGEPRUNE_TEST_NS"]
OUT = Path(os.environ["IMAGEPRUNE_TEST_OUT"])


def make(name, *instructions, tag=None, labels=None, content=b"x"):
    """Build ``FROM scratch`` with the namespace label; record the step IDs under ``name``."""
    client = connect()
    try:
        ids = build(
            client,
            [*instructions, "COPY f /f"],
            tag=tag,
            files={"f": content + name.encode() + NS.encode()},
            labels={"itest": NS, **(labels or {})},
        )
    finally:
        client.close()
    (OUT / f"{name}.json").write_text(json.dumps(ids))
    return ids
'''


class Namespace:
    def __init__(
        self, client: docker.APIClient, out: Path, engine: str = "docker", store: str = "classic"
    ) -> None:
        self.client = client
        self.engine = engine  # "docker" or "podman" (see conftest.engine)
        self.store = store  # "classic", "containerd" or "podman" (see conftest.engine_store)
        self.name = f"ns{uuid.uuid4().hex[:12]}"
        self.out = out
        SUITE_LABELS.add(("itest", self.name))

    @property
    def scope(self) -> str:
        return f"--prune-images=label=itest={self.name}"

    def built(self, name: str) -> list[str]:
        ids: list[str] = json.loads((self.out / f"{name}.json").read_text())
        return ids

    def exists(self, image_id: str) -> bool:
        try:
            self.client.inspect_image(image_id)  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return False
        return True

    def build(self, name: str, *instructions: str, **kw: object) -> list[str]:
        labels = {"itest": self.name, **kw.pop("labels", {})}  # type: ignore[dict-item]
        ids = build(
            self.client,
            [*instructions, "COPY f /f"],
            files={"f": b"before" + name.encode() + self.name.encode()},
            labels=labels,
            **kw,  # type: ignore[arg-type]
        )
        (self.out / f"{name}.json").write_text(json.dumps(ids))
        return ids

    def cleanup(self) -> None:
        """Remove what the namespace left: containers (they carry their image's labels,
        and the tests label theirs), then images, children first."""
        remove_leftovers(self.client, {("itest", self.name)})


@pytest.fixture
def ns(
    engine_store: str,  # after ``engine``, which points DOCKER_HOST at the engine under test
    engine_under_test: EngineUnderTest,
    docker_api: docker.APIClient,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Namespace]:
    """A namespace on the engine under test, once on each engine; what the test builds in
    it goes there (``IMAGEPRUNE_TEST_HOST``), and what it leaves is removed afterwards."""
    out = pytester.path / "built"
    out.mkdir()
    namespace = Namespace(docker_api, out, engine_under_test.kind, engine_store)
    monkeypatch.setenv("IMAGEPRUNE_TEST_NS", namespace.name)
    monkeypatch.setenv(TEST_HOST_VARIABLE, engine_under_test.host)
    monkeypatch.setenv("IMAGEPRUNE_TEST_OUT", str(out))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(inner=INNER)
    yield namespace
    namespace.cleanup()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A pytest session in a subprocess, with its own lock and registry unless told."""
    if not any(a.startswith("--prune-images-lock") for a in args):
        args = (*args, f"--prune-images-lock={pytester.path / 'prune.lock'}")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def write_tests(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(
        test_session="from inner import make\nimport time\n\n" + textwrap.dedent(body)
    )


@pytest.mark.parametrize("mode", ["dangling=true", "dangling=false"])
def test_session_images_that_match_go_and_everything_else_stays(
    pytester: pytest.Pytester, ns: Namespace, mode: str
) -> None:
    old_tagged = ns.build("old_tagged", tag=f"{ns.name}-old:1", labels={"ci": "1"})
    old_dangling = ns.build("old_dangling", labels={"ci": "1"})
    old_chain = ns.build("old_chain", 'LABEL step="1"', labels={"ci": "1"})
    write_tests(
        pytester,
        f"""
        def test_build():
            make("new_dangling", labels={{"ci": "1"}})
            make("new_tagged", tag="{ns.name}-new:1", labels={{"ci": "1"}})
            make("new_other")
        """,
    )
    report = pytester.path / "report.json"
    result = run(
        pytester,
        ns.scope,
        "--prune-images=label=ci",
        f"--prune-images={mode}",
        f"--prune-images-report={report}",
    )
    assert result.ret == 0
    for image_id in old_tagged + old_dangling + old_chain:
        assert ns.exists(image_id), "an image from before the session was deleted"
    # Its first step (LABEL itest=...) is the build cache's, shared with the images from
    # before: the cascade stops there, as the daemon's does.
    assert not ns.exists(ns.built("new_dangling")[-1])
    assert all(ns.exists(i) for i in ns.built("new_other"))
    tagged_gone = not ns.exists(ns.built("new_tagged")[-1])
    assert tagged_gone is (mode == "dangling=false")

    data = json.loads(report.read_text())
    assert {
        "ImagesDeleted",
        "SpaceReclaimed",
        "status",
        "scope",
        "filters",
        "dry_run",
        "skipped",
        "errors",
        "duration_s",
    } <= set(data)
    assert data["status"] == "completed"
    assert data["scope"] == "session"
    assert data["SpaceReclaimed"] > 0
    deleted = {r["Deleted"] for r in data["ImagesDeleted"] if "Deleted" in r}
    assert ns.built("new_dangling")[-1] in deleted
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, prune images this session*",
            "*imageprune: deleted * image*reclaimed*",
        ]
    )


def test_nothing_from_before_the_session_is_deleted_or_untagged(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    """The baseline promise on every store: the session's images go, and nothing that was
    there before loses an image or a name; the old image of a rebuilt tag is the one
    exception (it is the session's garbage)."""
    base = ns.build("base", 'LABEL step="base"', tag=f"{ns.name}-base:1")
    old_app = ns.build("app_v1", tag=f"{ns.name}-app:1")
    lone = ns.build("lone")  # untagged: dangling, from before
    used = ns.build("used", tag=f"{ns.name}-used:1")
    ns.client.create_container(used[-1], command="/nothing")  # by ID
    write_tests(
        pytester,
        f"""
        from tests.support import connect

        def test_session():
            client = connect()
            client.tag("{base[-1]}", "{ns.name}-new", "1")  # a new name, an old image
            client.tag("{lone[-1]}", "{ns.name}-lone", "1")  # a name on an old dangling one
            client.close()
            # The same first steps as "base" (the builder's cache shares its untagged
            # parents from before), then a step of its own.
            make("child", 'LABEL step="base"', content=b"child")
            make("app_v2", tag="{ns.name}-app:1", content=b"v2")
        """,
    )
    result = run(pytester, ns.scope, "--prune-images=dangling=false", "-v")
    assert result.ret == 0, result.stdout.str()
    for image_id in [*base, *old_app[:-1], *lone, *used]:
        assert ns.exists(image_id), f"an image from before the session was deleted: {image_id}"
    # Podman lists names fully qualified (docker.io/library/...): compare them so.
    names = {
        full_id(i["Id"]): {normalize_reference(t) for t in i["RepoTags"] or ()}
        for i in ns.client.images(all=True)
    }
    assert normalize_reference(f"{ns.name}-base:1") in names[base[-1]]
    assert normalize_reference(f"{ns.name}-used:1") in names[used[-1]]
    assert not ns.exists(old_app[-1])  # the old image of the rebuilt tag
    assert not ns.exists(ns.built("child")[-1])
    assert not ns.exists(ns.built("app_v2")[-1])
    if ns.store == "containerd":
        # Names are records there: the session's names go where the image can stay.
        assert normalize_reference(f"{ns.name}-new:1") not in names[base[-1]]
        # Its only name: it stays with it.
        assert names[lone[-1]] == {normalize_reference(f"{ns.name}-lone:1")}
        result.stdout.fnmatch_lines(["*kept * last name of an image from before the session*"])


def test_label_not_and_until_keep_what_they_say(pytester: pytest.Pytester, ns: Namespace) -> None:
    write_tests(
        pytester,
        """
        def test_build():
            make("drop")
            make("keep", labels={"keep": "1"})
            time.sleep(4)
            make("late")
        """,
    )
    result = run(
        pytester,
        ns.scope,
        "--prune-images=label!=keep",
        "--prune-images=until=2s",
        "--prune-images=dangling=false",
        "-v",
    )
    assert result.ret == 0
    assert not ns.exists(ns.built("drop")[-1])
    assert ns.exists(ns.built("keep")[-1])
    assert ns.exists(ns.built("late")[-1])
    result.stdout.fnmatch_lines(["*kept * labels do not match*"])
    result.stdout.fnmatch_lines(["*kept * created after until*"])


@pytest.mark.parametrize("mode", ["dangling=true", "dangling=false"])
def test_a_rebuilt_tag_orphans_its_old_image_which_goes(
    pytester: pytest.Pytester, ns: Namespace, mode: str
) -> None:
    """As the README says: the old image goes either way; the new one, tagged, stays with
    the tag in dangling mode, and goes with it under dangling=false."""
    tag = f"{ns.name}-app:latest"
    old = ns.build("v1", tag=tag)
    write_tests(pytester, f'def test_rebuild():\n    make("v2", tag="{tag}", content=b"v2")\n')
    result = run(pytester, ns.scope, f"--prune-images={mode}")
    assert result.ret == 0
    assert not ns.exists(old[-1])
    new = ns.built("v2")[-1]
    tags = {normalize_reference(t) for i in ns.client.images() for t in i["RepoTags"] or ()}
    if mode == "dangling=true":
        assert ns.exists(new)
        assert normalize_reference(tag) in tags
    else:
        assert not ns.exists(new)
        assert normalize_reference(tag) not in tags


def test_an_image_in_use_is_skipped_and_reported(pytester: pytest.Pytester, ns: Namespace) -> None:
    write_tests(
        pytester,
        """
        import inner
        from tests.support import connect

        def test_use():
            image = make("used")[-1]
            client = connect()
            client.create_container(image, command="/nothing", labels={"itest": inner.NS})
            client.close()
        """,
    )
    report = pytester.path / "report.json"
    result = run(pytester, ns.scope, f"--prune-images-report={report}")
    assert result.ret == 0
    assert ns.exists(ns.built("used")[-1])
    result.stdout.fnmatch_lines(["*skipped 1 in use*"])
    skipped = json.loads(report.read_text())["skipped"]
    assert [s["Id"] for s in skipped] == [ns.built("used")[-1]]
    assert "container" in skipped[0]["reason"]


def test_a_held_lock_deletes_nothing_and_does_not_wait(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    lock = pytester.path / "prune.lock"
    with lock_held_elsewhere(lock):
        write_tests(pytester, 'def test_build():\n    make("kept")\n')
        result = run(pytester, ns.scope, f"--prune-images-lock={lock}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "imageprune: a prune operation is already running (* a process outside the session"
            f" registry, is pruning; lock {lock}); nothing deleted yet, and nothing is lost: *"
        ]
    )
    assert ns.exists(ns.built("kept")[-1])
    # Released, the same lock lets the next session prune what it builds, and what the
    # first session could not.
    write_tests(pytester, 'def test_build():\n    make("again")\n')
    result = run(pytester, ns.scope, f"--prune-images-lock={lock}")
    assert result.ret == 0
    assert not ns.exists(ns.built("again")[-1])
    assert not ns.exists(ns.built("kept")[-1])
    result.stdout.fnmatch_lines(
        ["*pruned what the session of pid * left for the next prune: deleted * image*"]
    )


def test_under_xdist_the_controller_prunes_once_after_every_worker(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    write_tests(
        pytester,
        """
        import pytest
        from tests.support import connect

        @pytest.mark.parametrize("n", range(4))
        def test_build_and_keep_using(n):
            image = make(f"w{n}")[-1]
            time.sleep(1.5)
            client = connect()
            client.inspect_image(image)  # still there while its worker runs
            client.close()
        """,
    )
    result = run(pytester, ns.scope, "-n", "2")
    result.assert_outcomes(passed=4)
    output = result.stdout.str()
    assert output.count("imageprune: deleted") == 1, output
    assert output.count("imageprune: at session end") == 1
    for n in range(4):
        assert not ns.exists(ns.built(f"w{n}")[-1])


def test_ini_enables_and_no_prune_images_overrides(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    pytester.makeini(f"[pytest]\nprune_images =\n    label=itest={ns.name}\n")
    write_tests(pytester, 'def test_build():\n    make("a")\n')
    result = run(pytester, "--no-prune-images")
    assert result.ret == 0
    assert "imageprune:" not in result.stdout.str()
    assert ns.exists(ns.built("a")[-1])
    # (A rebuild of "a" would come from the build cache: images from before the session.)
    write_tests(pytester, 'def test_build():\n    make("b")\n')
    result = run(pytester)
    assert result.ret == 0
    assert not ns.exists(ns.built("b")[-1])
    assert ns.exists(ns.built("a")[-1])


def test_keyboard_interrupt_during_the_tests_still_prunes(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    write_tests(pytester, 'def test_build():\n    make("a")\n    raise KeyboardInterrupt\n')
    result = run(pytester, ns.scope)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not ns.exists(ns.built("a")[-1])
    result.stdout.fnmatch_lines(["*imageprune: deleted 2 images*"])


def test_dry_run_says_what_it_would_delete_and_deletes_nothing(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    write_tests(pytester, 'def test_build():\n    make("a", \'LABEL two="steps"\')\n')
    report = pytester.path / "report.json"
    result = run(pytester, ns.scope, "--prune-images-dry-run", f"--prune-images-report={report}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*imageprune: would delete 3 images*would reclaim *(estimated)*"])
    assert all(ns.exists(i) for i in ns.built("a"))
    data = json.loads(report.read_text())
    assert data["dry_run"] is True
    assert {r["Deleted"] for r in data["ImagesDeleted"] if "Deleted" in r} == set(ns.built("a"))


def test_a_dry_run_alone_previews_the_dangling_images_and_deletes_nothing(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    """No label scopes it: on a shared engine, images another client built meanwhile may be
    listed too, so the namespace's are checked, not the whole list."""
    write_tests(pytester, 'def test_build():\n    make("a")\n')
    report = pytester.path / "report.json"
    result = run(pytester, "--prune-images-dry-run", f"--prune-images-report={report}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "imageprune: at session end, a dry run of a bare --prune-images*",
            "imageprune: would delete * image*, would untag*",
        ]
    )
    dangling = ns.built("a")[-1]  # the head, untagged: dangling
    assert all(ns.exists(i) for i in ns.built("a"))
    data = json.loads(report.read_text())
    assert (data["dry_run"], data["filters"]) == (True, {})
    assert dangling in data["deleted_ids"]


def test_the_steps_of_a_tagged_build_are_dangling_except_on_the_classic_store(
    pytester: pytest.Pytester, ns: Namespace
) -> None:
    write_tests(
        pytester,
        f'def test_build():\n    make("app", \'LABEL step="own"\', tag="{ns.name}-app:1")\n',
    )
    result = run(pytester, ns.scope)
    assert result.ret == 0
    *steps, final = ns.built("app")
    assert len(steps) == 2
    assert ns.exists(final)  # tagged: kept on every engine
    if ns.store == "podman":
        # Podman commits a build's last step with no parent (ParentId ""), so the step
        # images have no child: dangling, they go, as `podman image prune` takes them too.
        assert not any(ns.exists(i) for i in steps)
    elif ns.store == "containerd":
        # Docker's containerd store has no "has children" rule (R22): untagged steps are
        # dangling records, and its prune takes them.
        assert not any(ns.exists(i) for i in steps)
    else:
        assert all(ns.exists(i) for i in steps)  # parents of the tagged image
