"""Docker's image-prune filters, validated and applied as the daemon does (rules R2-R8, R27).

Pure functions over plain data: nothing here talks to Docker. ``now`` and the daemon's
UTC offset are passed in, so that an ``until`` value means here what it means to the
daemon at the start of its prune (``daemon/images/image_prune.go``,
``daemon/internal/filters``, ``daemon/internal/timestamp`` in moby/moby, v29.4 and later).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pytest_imageprune.errors import FilterError
from pytest_imageprune.model import gotime as _gotime
from pytest_imageprune.model.gotime import GO_SPACE, GO_ZERO_NS, NANOS

__all__ = [
    "ACCEPTED_FILTERS",
    "NANOS",
    "Filters",
    "parse_filters",
    "parse_go_duration",
    "parse_rfc3339_nano",
    "parse_until",
]

#: The keys ``ImagesPrune`` accepts (``imagesAcceptedFilters``); anything else is an error.
ACCEPTED_FILTERS = frozenset({"dangling", "label", "label!", "until"})

_EMPTY: Mapping[str, tuple[str, ...]] = MappingProxyType({})
_UNTIL_PREFIX = "invalid value for 'until' filter: "
_PARSE_FAILED = "failed to parse value as time or duration: "


@dataclass(frozen=True)
class Filters:
    """Validated Docker image-prune filters (daemon semantics, rules R2-R8).

    Build one with :meth:`from_mapping` (API form) or :func:`parse_filters` (CLI form).
    ``raw`` keeps the filters as given, each key's values sorted, for reports and for
    :meth:`to_docker`; when a ``Filters`` is built directly without ``raw``, ``raw`` is
    derived from the other fields.
    """

    dangling: bool = True
    label: frozenset[str] = frozenset()
    label_not: frozenset[str] = frozenset()
    until: str | None = None
    raw: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY, hash=False)

    def __post_init__(self) -> None:
        raw = dict(self.raw)
        if not raw:
            if not self.dangling:
                raw["dangling"] = ("false",)
            if self.label:
                raw["label"] = tuple(self.label)
            if self.label_not:
                raw["label!"] = tuple(self.label_not)
            if self.until is not None:
                raw["until"] = (self.until,)
        frozen = {key: tuple(sorted(set(raw[key]))) for key in sorted(raw)}
        object.__setattr__(self, "raw", MappingProxyType(frozen))

    @classmethod
    def from_mapping(cls, args: Mapping[str, Iterable[str]]) -> Filters:
        """Validate ``args`` (key to a set of values) as ``ImagesPrune`` does.

        The checks and their order are the daemon's: unknown keys (R2), ``dangling``
        through ``GetBoolOrDefault`` (R4), then ``until`` (R5, R6). Nothing is trimmed or
        lowercased. A bare string value counts as one value, as in docker-py.
        """
        sets = {
            key: frozenset((values,) if isinstance(values, str) else values)
            for key, values in args.items()
        }
        unknown = sorted(set(sets) - ACCEPTED_FILTERS)
        if unknown:  # Go reports one key, the first in map order; the first sorted here
            key = unknown[0]
            raise FilterError(_invalid_filter(key), key=key, values=tuple(sorted(sets[key])))
        dangling = True
        if "dangling" in sets:
            values = sets["dangling"]
            if not values:
                raise FilterError(_invalid_filter("dangling"), key="dangling")
            is_false = "0" in values or "false" in values
            is_true = "1" in values or "true" in values
            if is_false == is_true:
                raise FilterError(
                    _invalid_filter("dangling", sorted(values)),
                    key="dangling",
                    values=tuple(sorted(values)),
                )
            dangling = is_true
        until = None
        if "until" in sets:
            untils = sets["until"]
            if len(untils) > 1:
                message = "more than one until filter specified"
                raise FilterError(message, key="until", values=tuple(sorted(untils)))
            if not untils:  # the daemon indexes untilFilters[0] and panics
                raise FilterError(_UNTIL_PREFIX + "no value given", key="until")
            (until,) = untils
            try:
                parse_until(until, 0, 0)
            except FilterError as exc:
                raise FilterError(_UNTIL_PREFIX + str(exc), key="until", values=(until,)) from None
        return cls(
            dangling=dangling,
            label=sets.get("label", frozenset()),
            label_not=sets.get("label!", frozenset()),
            until=until,
            raw={key: tuple(values) for key, values in sets.items()},
        )

    def to_docker(self) -> dict[str, list[str]]:
        """The list form docker-py sends (``POST /images/prune?filters=...``)."""
        return {key: list(values) for key, values in self.raw.items()}

    def until_ns(self, now_ns: int, utc_offset_s: int) -> int | None:
        """The ``until`` instant in ns since the epoch, or None when there is none.

        Computed as the daemon does at the start of a prune: durations back from
        ``now_ns``; dates without a zone in a fixed zone at ``utc_offset_s``, the
        daemon's *current* offset. A value that lands on Go's zero time
        (``0001-01-01T00:00:00Z``) disables the filter in the daemon
        (``until.IsZero()``), so it gives None here too.
        """
        if self.until is None:
            return None
        instant = parse_until(self.until, now_ns, utc_offset_s)
        return None if instant == GO_ZERO_NS else instant

    def match_labels(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an image with these ``Config.Labels`` passes ``label`` and ``label!`` (R7).

        Every ``label`` value must match (``MatchKVList``); the image is then excluded
        only when every ``label!`` value matches. A ``label!`` key given with no values
        matches, and so excludes, every image, as in the daemon.
        """
        labels = labels or {}
        if not match_kv_list(self.label, labels):
            return False
        has_label_not = bool(self.label_not) or "label!" in self.raw
        return not (has_label_not and match_kv_list(self.label_not, labels))

    def match_labels_containerd(self, labels: Mapping[str, str] | None) -> bool:
        """The containerd store's label rules (R25, Docker 29.4.1 and later).

        Every ``label`` and ``label!`` value is a check of its own, all ANDed: ``label!=k``
        passes when ``k`` is absent, ``label!=k=v`` when ``k`` is absent or differs, and a
        key ending in ``!`` flips its check (``label=a!=b`` is ``label!=a=b``).
        """
        labels = labels or {}
        checks = [(value, False) for value in self.label]
        checks += [(value, True) for value in self.label_not]
        for value, negated in checks:
            key, found, wanted = value.partition("=")
            negate = negated != key.endswith("!")
            key = key.removesuffix("!")
            present = key in labels
            if not found:
                if present == negate:
                    return False
            elif not present:
                if not negate:
                    return False
            elif (labels[key] == wanted) == negate:
                return False
        return True

    @property
    def is_default(self) -> bool:
        """No filters given at all: dangling-only mode with nothing else."""
        return not self.raw


def _invalid_filter(key: str, values: list[str] | None = None) -> str:
    """The text of moby's ``invalidFilter`` error."""
    if not key:
        return "invalid filter"
    shown = "" if values is None else "=[" + " ".join(values) + "]"
    return f"invalid filter '{key}{shown}'"


def match_kv_list(values: frozenset[str], labels: Mapping[str, str]) -> bool:
    """moby's ``Args.MatchKVList``: every ``k`` / ``k=v`` value is in ``labels``."""
    if not values:
        return True
    if not labels:
        return False
    for value in values:
        key, has_value, wanted = value.partition("=")
        if key not in labels or (has_value and labels[key] != wanted):
            return False
    return True


def parse_filters(values: Iterable[str]) -> Filters:
    """Filters as typed on a command line (``docker image prune --filter``), validated.

    Each string is read as docker/cli's ``FilterOpt.Set`` reads it (R27): an empty
    string is skipped; otherwise it is split at the first ``=``, the name trimmed and
    lowercased, the value trimmed (so ``label!=a=b`` is ``label!`` with ``a=b``, and
    ``label=`` is ``label`` with the value ``""``). Then :meth:`Filters.from_mapping`.
    """
    args, typed = split_filters(values)
    try:
        return Filters.from_mapping(args)
    except FilterError as exc:
        exc.texts = tuple(typed.get(exc.key or "", ()))
        raise


def split_filters(values: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """docker/cli's ``FilterOpt.Set`` over each string (R27): the values by key, and the
    filters as typed by key (for messages). ``FilterError`` for one without ``=``."""
    args: dict[str, list[str]] = {}
    typed: dict[str, list[str]] = {}
    for value in values:
        if value == "":
            continue
        name, has_equals, rest = value.partition("=")
        if not has_equals:
            raise FilterError(
                f"bad format of filter '{value}' (expected name=value)", texts=(value,)
            )
        key = name.strip(GO_SPACE).lower()
        args.setdefault(key, []).append(rest.strip(GO_SPACE))
        typed.setdefault(key, []).append(value)
    return args, typed


def parse_until(value: str, now_ns: int, utc_offset_s: int) -> int:
    """An ``until`` value as the daemon reads it (R6), in ns since the epoch.

    In order: a Go duration back from ``now_ns`` (but ``"0"`` is Unix 0); a date or
    date-time, whose layout is chosen from the characters in the value, in the fixed
    zone ``utc_offset_s`` when it names no zone; Unix seconds ``secs[.frac]``. Raises
    :class:`FilterError` with the daemon's message, naming the value.
    """
    if value.strip(GO_SPACE) == "":
        suffix = f" (value {_gotime.strconv_quote(value)})" if value else ""
        raise FilterError(_PARSE_FAILED + "value is empty" + suffix)
    if value != "0":
        try:
            duration = _gotime.parse_duration(value)
        except FilterError:
            pass
        else:
            return now_ns + _gotime.wrap64(-duration)
    zoned = any(char in value for char in "zZ+") or value.count("-") == 3
    if "." in value:
        layout = _gotime.RFC3339_NANO if zoned else _gotime.RFC3339_NANO_LOCAL
    elif "T" in value:
        colons = value.count(":")
        if zoned and "z" not in value and "Z" not in value and colons > 0:
            colons -= 1  # the colon of a ±hh:mm offset
        if colons == 0:
            layout = _gotime.HOUR_ZONED if zoned else _gotime.HOUR_LOCAL
        elif colons == 1:
            layout = _gotime.HOUR_MINUTE_ZONED if zoned else _gotime.HOUR_MINUTE_LOCAL
        else:
            layout = _gotime.RFC3339 if zoned else _gotime.RFC3339_LOCAL
    else:
        layout = _gotime.DATE_ZONED if zoned else _gotime.DATE_LOCAL
    try:
        return _gotime.parse_layout(layout, value, 0 if zoned else utc_offset_s)
    except FilterError:
        if "-" in value:
            raise  # "was probably an RFC3339 like timestamp": Go's parse error
    try:
        return _gotime.parse_unix_timestamp(value)
    except FilterError as exc:
        message = _PARSE_FAILED + str(exc)
        quoted = _gotime.strconv_quote(value)
        if quoted not in message:
            message += f" (value {quoted})"
        raise FilterError(message) from None


def parse_go_duration(value: str) -> int:
    """Go's ``time.ParseDuration``, in ns; :class:`FilterError` with Go's message if bad."""
    return _gotime.parse_duration(value)


def parse_rfc3339_nano(value: str) -> int:
    """A ``Created`` time from the daemon (RFC 3339, 0 to 9 fraction digits) to ns.

    Parsed as Go's ``time.Time`` JSON decoding does (``time.Parse(time.RFC3339, v)``),
    keeping the nanoseconds that :class:`datetime.datetime` would lose.
    """
    return _gotime.parse_layout(_gotime.RFC3339, value, 0)


def engine_time(value: object, *, zero: bool = False) -> int | None:
    """A time the engine answered with (RFC 3339), in ns; None for none, for one that does
    not parse, and for Go's zero time (``0001-01-01``: unset) and any other before 1970,
    unless ``zero`` keeps them (an image's ``Created``, where R12 tells them apart)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ns = parse_rfc3339_nano(value)
    except (FilterError, ValueError):
        return None
    return ns if zero or ns > 0 else None
