"""One kind's filters: validated as its daemon's prune validates them, and what a person
is told when one is wrong (which it accepts is the kind's, in ``kinds.table.KINDS``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pytest_imageprune.errors import FilterError
from pytest_imageprune.kinds.table import BUILD_CACHE, CACHE_TYPES, KINDS, Kind
from pytest_imageprune.model.filters import (
    match_kv_list,
    parse_until,
    split_filters,
)
from pytest_imageprune.model.gotime import GO_ZERO_NS

#: Go's ``strconv.ParseBool``.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class KindFilters:
    """One kind's filters, validated as its daemon prune validates them."""

    kind: str
    label: frozenset[str] = frozenset()
    label_not: frozenset[str] = frozenset()
    until: str | None = None
    #: ``all``: volumes beyond the anonymous ones, cache records of every type and shared.
    all: bool | None = None
    type: str | None = None
    description: str | None = None
    raw: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @classmethod
    def from_mapping(cls, kind: str, args: Mapping[str, Iterable[str]]) -> KindFilters:
        spec = KINDS[kind]
        sets = {
            key: tuple(sorted(set((values,) if isinstance(values, str) else values)))
            for key, values in args.items()
        }
        for key in sorted(sets):
            if key not in spec.accepted:
                raise FilterError(f"invalid filter '{key}'", key=key, values=sets[key])
        one: dict[str, str] = {}
        for key in ("until", "all", "type", "description"):
            if key in sets:
                values = sets[key]
                if len(values) != 1:
                    raise FilterError(f"invalid filter '{key}'", key=key, values=values)
                one[key] = values[0]
        if "until" in one:
            try:
                parse_until(one["until"], 0, 0)
            except FilterError as exc:
                raise FilterError(str(exc), key="until", values=(one["until"],)) from None
        flag = None
        if "all" in one:
            if one["all"] not in _TRUE | _FALSE:
                raise FilterError("not true or false", key="all", values=(one["all"],))
            flag = one["all"] in _TRUE
        if "type" in one and one["type"] not in CACHE_TYPES:
            raise FilterError("not a record type", key="type", values=(one["type"],))
        return cls(
            kind=kind,
            label=frozenset(sets.get("label", ())),
            label_not=frozenset(sets.get("label!", ())),
            until=one.get("until"),
            all=flag,
            type=one.get("type"),
            description=one.get("description"),
            raw=MappingProxyType(sets),
        )

    def to_docker(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in sorted(self.raw.items())}

    def until_ns(self, now_ns: int, utc_offset_s: int) -> int | None:
        if self.until is None:
            return None
        instant = parse_until(self.until, now_ns, utc_offset_s)
        return None if instant == GO_ZERO_NS else instant

    def match_labels(self, labels: Mapping[str, str] | None) -> bool:
        """moby's ``matchLabels``: every ``label``; excluded when every ``label!`` matches."""
        labels = labels or {}
        if not match_kv_list(self.label, labels):
            return False
        return not ("label!" in self.raw and match_kv_list(self.label_not, labels))


def parse_kind_filters(kind: str, values: Iterable[str]) -> KindFilters:
    """A kind's filters as typed on a command line (``--filter``), validated."""
    args, typed = split_filters(values)
    try:
        return KindFilters.from_mapping(kind, args)
    except FilterError as exc:
        exc.texts = tuple(typed.get(exc.key or "", ()))
        raise


#: What each filter accepts, said to a person, for images and every kind alike; ``{o}`` is
#: the option and ``=`` on the command line, nothing in an ini file.
ACCEPTED = {
    "dangling": "Write {o}dangling=true (or 1) or {o}dangling=false (or 0)",
    "label": "Write {o}label=KEY or {o}label=KEY=VALUE, such as {o}label=ci",
    "label!": "Write {o}label!=KEY or {o}label!=KEY=VALUE, such as {o}label!=keep",
    "until": (
        "Write {o}until= and a Go duration back from now (10m, 1h30m), an RFC 3339 date or"
        " time (2024-01-15T10:00:00Z), a date (2024-01-15), or Unix seconds"
        " (1700000000.5), such as {o}until=24h"
    ),
    "all": "Write {o}all=true or {o}all=false",
    "type": "Write {o}type= and one of " + ", ".join(CACHE_TYPES),
    "description": "Write {o}description= and a record's whole description",
}


def where_given(option: str, ini_key: str, exc: FilterError, ini: str | None) -> str:
    """Where a bad filter was given, as every usage error says it: the command line when
    ``ini`` is None, else that ini file."""
    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    if ini is None:
        return " ".join(f"{option}={t}" for t in texts) + " (command line)"
    return f"{ini_key} = " + ", ".join(texts) + f" ({ini})"


def kind_usage_error(kind: Kind, exc: FilterError, ini: str | None) -> str:
    """A bad filter of ``kind`` said to a person, as ``settings.filter_usage_error`` says
    an image filter: where it came from, what is wrong, what to write instead."""
    texts = exc.texts or tuple(f"{exc.key}={v}" for v in exc.values) or (f"{exc.key}=",)
    option = f"{kind.option}=" if ini is None else ""
    where = where_given(kind.option, kind.ini, exc, ini)
    names = ", ".join(kind.accepted)
    key = exc.key
    if key is None:
        what = f"{texts[0]!r} is not a filter. A filter is {option}KEY=VALUE: {names}"
    elif key not in kind.accepted:
        what = f"{key!r} is not a filter {kind.command} takes here. The filters are {names}"
        if kind.name == BUILD_CACHE and key in ("label", "label!"):
            what += " (the build cache has no labels: docker builder prune ignores them)"
    elif len(exc.values) > 1:
        what = f"{key} is given {len(exc.values)} times; {kind.command} takes one. Keep one"
    else:
        shown = ", ".join(repr(v) for v in exc.values) if any(exc.values) else "an empty value"
        what = f"{shown} is not accepted: {exc}. " + ACCEPTED[key].format(o=option)
    return f"{where}: {what}"
