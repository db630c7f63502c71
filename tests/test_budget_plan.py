"""The storage budget without an engine: SIZE read as Docker writes it, the pure plan (what
goes, in which order, what it frees, what holds the rest) and the evidence of use."""

from __future__ import annotations

import re

import pytest

from pytest_imageprune.budget.gather import last_uses, upper_bound
from pytest_imageprune.budget.plan import (
    HOOK,
    IN_USE,
    LIVE,
    PATTERN,
    UNREAD,
    Inventory,
    Use,
    decide,
)
from pytest_imageprune.budget.size import SizeError, parse_size
from pytest_imageprune.engine.store import CLASSIC, CONTAINERD
from pytest_imageprune.model.gotime import NANOS
from pytest_imageprune.model.images import Container, Image, Snapshot
from pytest_imageprune.model.outcome import Kept

# -- SIZE -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("20GB", 20_000_000_000),
        ("500MB", 500_000_000),
        ("500MiB", 500 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("1.5 gb", 1_500_000_000),
        ("750mi", 750 * 1024**2),
        ("10kB", 10_000),
        ("2t", 2 * 10**12),
        ("1000000", 1_000_000),
        ("64b", 64),
    ],
)
def test_a_size_reads_as_docker_writes_it(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "20 GiBs", "-1GB", "1e9", "ten", "5iB", "0", "0MB"])
def test_what_is_not_a_size_says_so(text: str) -> None:
    with pytest.raises(SizeError, match=re.escape(repr(text))):
        parse_size(text)


# -- the plan ---------------------------------------------------------------------------------

S = NANOS  # one second, in ns


def img(
    name: str,
    *,
    parent: str | None = None,
    tags: tuple[str, ...] = (),
    digests: tuple[str, ...] = (),
    size: int = 0,
) -> Image:
    return Image(
        f"sha256:{name}", parent=f"sha256:{parent}" if parent else None, tags=tags,
        digests=digests, size=size,
    )  # fmt: skip


def inventory(
    images: list[Image],
    layers: dict[str, dict[str, int]],
    used: dict[str, int],
    *,
    containers: tuple[Container, ...] = (),
    store: str = CLASSIC,
) -> Inventory:
    """``layers``: each image's own layers (name: bytes), below them its parent's."""
    snapshot = Snapshot.of(images, containers)
    chains: dict[str, tuple[str, ...]] = {}

    def chain(image: Image) -> tuple[str, ...]:
        if image.id not in chains:
            below = chain(snapshot.images[image.parent]) if image.parent else ()
            chains[image.id] = below + tuple(layers.get(image.id.removeprefix("sha256:"), {}))
        return chains[image.id]

    for image in images:
        chain(image)
    sizes = {k: v for own in layers.values() for k, v in own.items()}
    uses = {f"sha256:{n}": Use(t * S, f"used at {t}") for n, t in used.items()}
    return Inventory(snapshot, store, chains, sizes, uses)


def evicted(decision: object) -> list[str]:
    return [e.image.removeprefix("sha256:") for e in decision.evictions]  # type: ignore[attr-defined]


def test_the_least_recently_used_go_first_until_the_images_fit() -> None:
    images = [img(n, tags=(f"{n}:1",)) for n in ("a", "b", "c", "d")]
    layers = {n: {f"L{n}": 100} for n in ("a", "b", "c", "d")}
    inv = inventory(images, layers, {"a": 30, "b": 10, "c": 20, "d": 40})
    decision = decide(inv, 250)
    assert decision.total == 400
    assert evicted(decision) == ["b", "c"]  # 200 left: within 250, so "a" stays
    assert decision.after == 200
    assert decision.shortfall == 0
    assert decide(inv, 400).evictions == ()  # fits already


def test_shared_layers_count_once_and_free_only_with_the_last_image() -> None:
    base = {"base": 1000}
    images = [img("a", tags=("a:1",)), img("b", tags=("b:1",)), img("c", tags=("c:1",))]
    layers = {"a": {**base, "ta": 10}, "b": {**base, "tb": 20}, "c": {"tc": 5}}
    inv = inventory(images, layers, {"a": 1, "b": 2, "c": 3})
    decision = decide(inv, 6)
    assert decision.total == 1035
    assert [(e.image[-1], e.size) for e in decision.evictions] == [("a", 10), ("b", 1020)]


def test_an_untagged_parent_goes_with_its_last_child_and_a_tagged_one_after_it() -> None:
    images = [
        img("p", size=100),
        img("c1", parent="p", tags=("c1:1",), size=150),
        img("c2", parent="p", tags=("c2:1",), size=170),
        img("t", tags=("t:1",), size=10),
        img("u", parent="t", tags=("u:1",), size=40),
    ]
    layers = {
        "p": {"Lp": 100},
        "c1": {"L1": 50},
        "c2": {"L2": 70},
        "t": {"Lt": 10},
        "u": {"Lu": 30},
    }
    inv = inventory(images, layers, {"p": 1, "c1": 2, "c2": 3, "t": 9, "u": 4})
    decision = decide(inv, 1)
    # The parent's last use is its latest child's; a child goes before its parent.
    assert [(e.image.removeprefix("sha256:"), e.size) for e in decision.evictions] == [
        ("c1", 50),
        ("c2", 170),  # the untagged parent goes with it
        ("u", 30),
        ("t", 10),
    ]
    assert decision.after == 0


def test_in_use_kept_by_pattern_live_and_hook_are_never_evicted_nor_their_parents() -> None:
    images = [
        img("base", size=100),
        img("run", parent="base", tags=("app:1",), size=110),
        img("kept", tags=("registry.example/ci/tool:2",), size=20),
        img("lib", tags=("busybox:latest",), size=30),
        img("live", tags=("live:1",), size=40),
        img("hook", tags=("hook:1",), size=50),
        img("free", tags=("free:1",), size=60),
    ]
    layers = {n: {f"L{n}": i.size - (100 if n == "run" else 0)} for n, i in
              ((i.id.removeprefix("sha256:"), i) for i in images)}  # fmt: skip
    stopped = Container("c" * 64, "sha256:run", running=False)
    inv = inventory(images, layers, {}, containers=(stopped,))

    def keep(image: Image) -> str | None:
        if image.id == "sha256:live":
            return Kept("may belong to a live session (pid 7)", live=True)
        return "protected: mine" if image.id == "sha256:hook" else None

    patterns = [re.compile("/ci/"), re.compile("^docker.io/library/busybox")]
    decision = decide(inv, 1, patterns=patterns, keep=keep)
    assert evicted(decision) == ["free"]
    held = {i.removeprefix("sha256:"): h for i, h in decision.held.items()}
    assert held["run"].kind == held["base"].kind == IN_USE
    assert held["base"].reason.startswith("parent of ")
    assert "(stopped)" in held["run"].reason
    assert held["kept"].kind == held["lib"].kind == PATTERN  # found, or fully spelled
    assert held["live"].kind == LIVE
    assert held["hook"].kind == HOOK
    by_kind = {h.kind: (h.images, h.size) for h in decision.holdings}
    assert by_kind == {IN_USE: (2, 110), PATTERN: (2, 50), LIVE: (1, 40), HOOK: (1, 50)}
    assert decision.after == 250
    assert decision.shortfall == 249


def test_a_held_untagged_parent_keeps_the_children_whose_eviction_would_take_it() -> None:
    """The daemon's cascade takes an untagged parent along with its last child: one a hook
    keeps holds its children; one a container uses does not (the daemon refuses it), but
    what the cascade would have freed with it is not counted."""
    images = [
        img("p", size=100),
        img("c", parent="p", tags=("app:1",), size=150),
        img("x", tags=("x:1",), size=10),
    ]
    layers = {"p": {"Lp": 100}, "c": {"Lc": 50}, "x": {"Lx": 10}}
    inv = inventory(images, layers, {"c": 1, "x": 2})
    decision = decide(inv, 1, keep=lambda i: "protected: mine" if i.id == "sha256:p" else None)
    assert evicted(decision) == ["x"]
    held = {i.removeprefix("sha256:"): h for i, h in decision.held.items()}
    assert held["c"].kind == HOOK
    assert "untagged parent" in held["c"].reason

    used = Container("d" * 64, "sha256:p", running=False)
    inv = inventory(images, layers, {"c": 1, "x": 2}, containers=(used,))
    decision = decide(inv, 1)
    assert [(e.image.removeprefix("sha256:"), e.size) for e in decision.evictions] == [
        ("c", 50),  # the daemon refuses the parent: its 100 stay
        ("x", 10),
    ]
    assert decision.after == 100


def test_an_image_whose_layers_could_not_be_read_is_never_evicted() -> None:
    images = [img("a", tags=("a:1",)), img("b", tags=("b:1",))]
    inv = inventory(images, {"a": {"La": 5}, "b": {"Lb": 5}}, {"a": 1, "b": 2})
    inv = Inventory(inv.snapshot, inv.store, inv.chains, inv.layer_sizes, inv.uses,
                    frozenset({"sha256:a"}))  # fmt: skip
    decision = decide(inv, 1)
    assert evicted(decision) == ["b"]
    assert decision.held["sha256:a"].kind == UNREAD


def test_a_container_naming_its_image_by_bare_id_holds_it() -> None:
    images = [img("a" * 64, tags=("a:1",)), img("b" * 64, tags=("b:1",))]
    layers = {"a" * 64: {"La": 5}, "b" * 64: {"Lb": 5}}
    used = Container("d" * 64, "a" * 64, running=True)
    inv = inventory(images, layers, {}, containers=(used,))
    assert evicted(decide(inv, 1)) == ["b" * 64]


def test_a_pattern_finds_a_name_as_docker_and_as_podman_list_it() -> None:
    images = [
        img("a", tags=("docker.io/library/postgres:15",)),  # as Podman lists it
        img("b", tags=("docker.io/acme/tool:1",)),
        img("c", tags=("busybox:latest",)),  # as Docker lists it
        img("d", tags=("free:1",)),
    ]
    inv = inventory(images, {n: {f"L{n}": 5} for n in "abcd"}, {})
    patterns = [re.compile("^postgres:"), re.compile("^acme/tool:"), re.compile("^busybox:")]
    assert evicted(decide(inv, 1, patterns=patterns)) == ["d"]


def test_a_pattern_finds_an_image_pulled_by_digest_alone_by_its_digest() -> None:
    digest = "sha256:" + "e" * 64
    images = [
        img("a", digests=(f"alpine@{digest}",)),  # docker pull alpine@sha256:...
        img("b", digests=(f"other@{digest}",)),
        img("c", tags=("pinned:1",), digests=(f"pinned@{digest}",)),
    ]
    inv = inventory(images, {n: {f"L{n}": 5} for n in "abc"}, {"a": 1, "b": 2, "c": 3})
    patterns = [re.compile("^alpine@"), re.compile(f"@{digest}$")]
    assert evicted(decide(inv, 1, patterns=patterns[:1])) == ["b", "c"]
    assert evicted(decide(inv, 1, patterns=patterns[1:])) == []


def test_a_pattern_searches_the_name_as_docuum_matches_it() -> None:
    images = [img("a", tags=("ci-cache:1",)), img("b", tags=("app:ci",))]
    inv = inventory(images, {"a": {"La": 5}, "b": {"Lb": 5}}, {})
    assert evicted(decide(inv, 1, patterns=[re.compile("ci")])) == []
    assert evicted(decide(inv, 1, patterns=[re.compile("^ci")])) == ["b"]


def test_on_the_containerd_store_each_image_goes_on_its_own() -> None:
    images = [
        img("p", size=100),
        img("c", parent="p", tags=("c:1",), size=150),
        img("d", digests=("repo@sha256:" + "d" * 64,), size=30),
    ]
    layers = {"p": {"Lp": 60}, "c": {"Lc": 40}, "d": {"Ld": 20}}
    inv = inventory(images, layers, {"p": 1, "c": 2}, store=CONTAINERD)
    decision = decide(inv, 1)
    assert evicted(decision) == ["c", "p"]  # the child first, then the parent, by itself
    assert decision.held["sha256:d"].reason.startswith("named by digest only")


def test_ties_are_ordered_the_same_every_time() -> None:
    images = [img(n, tags=(f"{n}:1",)) for n in "zyx"]
    inv = inventory(images, {n: {f"L{n}": 1} for n in "zyx"}, {})
    assert evicted(decide(inv, 1)) == ["x", "y"]


def test_the_list_gives_an_upper_bound_that_needs_no_reads() -> None:
    images = [img("p", size=100), img("c", parent="p", tags=("c:1",), size=130),
              img("o", tags=("o:1",), size=100)]  # fmt: skip
    assert upper_bound(Snapshot.of(images)) == 230


# -- last use ---------------------------------------------------------------------------------


def test_last_use_is_the_latest_evidence() -> None:
    images = [
        img("a", tags=("app:1",)),
        img("b", tags=("busybox:latest",)),
        img("c"),
        Image("sha256:" + "e" * 64, tags=("e:1",), created_s=50),
    ]
    containers = (Container("k" * 64, "sha256:a", running=False, created_s=300),)
    snapshot = Snapshot.of(images, containers)
    times = {"sha256:a": (100 * S, 200 * S), "sha256:b": (100 * S, None), "sha256:c": (None, None)}
    events = [
        {"Type": "container", "Action": "create", "timeNano": 400 * S,
         "Actor": {"ID": "f" * 64, "Attributes": {"image": "busybox"}}},
        {"Type": "container", "Action": "destroy", "timeNano": 900 * S,
         "Actor": {"ID": "f" * 64, "Attributes": {"image": "app:1"}}},
        {"Type": "container", "Action": "start", "timeNano": 500 * S,
         "Actor": {"ID": "g" * 64, "Attributes": {"image": "nosuch:1"}}},
    ]  # fmt: skip
    uses = last_uses(snapshot, times, events)
    assert uses["sha256:a"] == Use(300 * S, f"container {'k' * 12} created")
    assert uses["sha256:b"].ns == 400 * S
    assert "the engine's events" in uses["sha256:b"].evidence
    assert "sha256:c" not in uses  # no evidence: the oldest of all
    assert uses["sha256:" + "e" * 64] == Use(50 * S, "created (the image's Created)")


@pytest.mark.parametrize("seed", range(6))
def test_the_containerd_total_is_what_deleting_every_image_frees(seed: int) -> None:
    """``ContainerdSpace.total`` against counting each deletion, in any order."""
    import random

    from pytest_imageprune.images.containerd_space import ContainerdSpace

    rng = random.Random(seed)
    base = [f"sha256:b{n:063x}" for n in range(1, 4)]
    usage = {layer: rng.randint(1, 9) * 100 for layer in base}
    images, chains = [], {}
    for n in range(12):
        chain = (*base[: rng.randint(0, 3)], f"sha256:c{n:063x}")
        usage[chain[-1]] = rng.randint(1, 9) * 10
        unpacked = sum(usage[c] for c in chain)
        images.append(Image(f"sha256:{n:064x}", size=unpacked + rng.randint(0, 500)))
        chains[images[-1].id] = chain
    snapshot = Snapshot.of(images)
    ids = sorted(snapshot.images)
    rng.shuffle(ids)
    counted = ContainerdSpace.of(snapshot, chains, usage)
    freed = sum(counted.count([{"Deleted": i}]) for i in ids)
    assert ContainerdSpace.of(snapshot, chains, usage).total() == freed


# -- at session end, on a fake engine ---------------------------------------------------------


def _layered_engine() -> object:
    from tests.fakes import FakeEngine

    class Layered(FakeEngine):
        """Each image one layer of its own, of its ``Size``."""

        def inspect(self, image_id: str) -> dict[str, object]:
            data = dict(super().inspect(image_id))
            data["RootFS"] = {"Layers": ["sha256:d" + image_id.removeprefix("sha256:")[1:]]}
            return data

    images = [
        Image(f"sha256:{n:064x}", tags=(f"app{n}:1",), created_s=1_700_000_000 + n, size=100)
        for n in range(1, 4)
    ]
    return Layered(Snapshot.of(images))


@pytest.mark.parametrize("started_meanwhile", [False, True])
def test_a_session_that_starts_during_the_reads_keeps_what_the_budget_chose(
    started_meanwhile: bool,
) -> None:
    """The live sessions are read again when the deletions ask: one that started after the
    decision, whose baseline holds the chosen images, keeps them."""
    from pytest_imageprune.budget.apply import NOT_DONE, apply_budget
    from pytest_imageprune.budget.size import Budget

    engine = _layered_engine()
    reads: list[int] = []

    def keep_live() -> object:
        reads.append(1)
        if started_meanwhile and len(reads) > 1:
            return lambda image: Kept("in a live session's baseline (pid 9)", live=True)
        return lambda image: None

    report = apply_budget(
        engine,  # type: ignore[arg-type]
        Budget(150, "150B"),
        dry_run=False,
        keep_live=keep_live,  # type: ignore[arg-type]
    )
    assert report.decision is not None
    assert [e.names for e in report.decision.evictions] == [("app1:1",), ("app2:1",)]
    assert report.total_before == 300
    if started_meanwhile:
        assert engine.calls == []  # type: ignore[attr-defined]
        assert report.evicted == []
        assert report.shortfall == 150
        # What holds the rest says so: the two chosen, then kept for the live session.
        assert [(h.kind, h.images, h.size) for h in report.holdings] == [(NOT_DONE, 2, 200)]
        assert "held: 2 images chosen, then not evicted (200B)" in report.lines()[-1]
    else:
        assert engine.calls == ["app1:1", "app2:1"]  # type: ignore[attr-defined]
        assert [e.names for e in report.evicted] == [("app1:1",), ("app2:1",)]
        assert report.total_after == 100
        assert report.shortfall == 0
