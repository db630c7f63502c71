"""Filter parsing and matching, against moby's own rules and test tables (no daemon).

Expected instants are computed with :func:`calendar.timegm`, independently of the parser.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_imageprune.errors import FilterError
from pytest_imageprune.model.filters import (
    NANOS,
    Filters,
    parse_filters,
    parse_go_duration,
    parse_rfc3339_nano,
    parse_until,
)


def utc(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS[.fffffffff]`` (UTC) to ns since the epoch, without the parser."""
    whole, _, frac = text.partition(".")
    date, _, clock = whole.partition("T")
    year, month, day = (int(part) for part in date.split("-"))
    hour, minute, sec = (int(part) for part in clock.split(":"))
    seconds = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    return seconds * NANOS + int(frac.ljust(9, "0"))


NOW = utc("2020-01-02T03:04:05.123456789")
HOUR = 3600 * NANOS
MINUTE = 60 * NANOS


def ids(cases: list[tuple[str, object]]) -> list[str]:
    return [repr(case[0]) for case in cases]


# R6 (docs/rules.md) and moby's timestamp_test.go, now = NOW, UTC.
UNTIL_CASES: list[tuple[str, object]] = [
    ("10m", "2020-01-02T02:54:05.123456789"),
    ("1m", "2020-01-02T03:03:05.123456789"),
    ("1h30m", "2020-01-02T01:34:05.123456789"),
    ("1.5h", "2020-01-02T01:34:05.123456789"),
    ("0s", NOW),
    ("0m", NOW),
    ("+0", NOW),
    ("-0", NOW),
    ("-1m", "2020-01-02T03:05:05.123456789"),
    ("0", 0),
    ("2024", 2024 * NANOS),
    ("1136073600", "2006-01-01T00:00:00"),
    ("1136073600.5", "2006-01-01T00:00:00.5"),
    ("1136073600.000000001", "2006-01-01T00:00:00.000000001"),
    ("1136073600.", "2006-01-01T00:00:00"),  # an error before v29.4
    ("1136073600.0", "2006-01-01T00:00:00"),
    ("1136073600.0000000010", "2006-01-01T00:00:00.000000001"),  # truncated
    ("1136073600.0000000009", "2006-01-01T00:00:00"),  # truncated, not rounded
    ("1136073600.00000001", "2006-01-01T00:00:00.00000001"),  # padded
    ("1136073600.1", "2006-01-01T00:00:00.1"),
    ("1136073600." + "1" * 20, "2006-01-01T00:00:00.111111111"),  # 20 digits: the maximum
    ("+1136073600", "2006-01-01T00:00:00"),  # strconv.ParseInt takes a "+"
    ("2006-01-02", "2006-01-02T00:00:00"),
    ("2006-01-02Z", "2006-01-02T00:00:00"),
    ("2006-01-02+07:00", "2006-01-01T17:00:00"),
    ("2006-01-02+00:00", "2006-01-02T00:00:00"),
    ("2006-01-02-00:00", "2006-01-02T00:00:00"),
    ("2006-01-02-00:01", "2006-01-02T00:01:00"),
    ("2006-01-02T15", "2006-01-02T15:00:00"),
    ("2006-01-02T15Z", "2006-01-02T15:00:00"),
    ("2006-01-02T15+00:00", "2006-01-02T15:00:00"),
    ("2006-01-02T15-00:00", "2006-01-02T15:00:00"),
    ("2006-01-02T1", "2006-01-02T01:00:00"),
    ("2006-01-02T1Z", "2006-01-02T01:00:00"),
    ("2006-01-02T15:04", "2006-01-02T15:04:00"),
    ("2006-01-02T15:04Z", "2006-01-02T15:04:00"),
    ("2006-01-02T15:04+00:00", "2006-01-02T15:04:00"),
    ("2006-01-02T15:04-00:00", "2006-01-02T15:04:00"),
    ("2006-01-02T15:04:05", "2006-01-02T15:04:05"),
    ("2006-01-02T15:04:05Z", "2006-01-02T15:04:05"),
    ("2015-05-13T20:39:09Z", "2015-05-13T20:39:09"),
    ("2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05.999999999"),
    ("2006-01-02T15:04:05.999999999Z", "2006-01-02T15:04:05.999999999"),
    ("2006-01-02T15:04:05.999999999+07:00", "2006-01-02T08:04:05.999999999"),
    ("2006-01-02T15:04:05,5", "2006-01-02T15:04:05.5"),  # Go takes a comma too
    ("2006-01-02T15:04:05,25Z", "2006-01-02T15:04:05.25"),
    ("2004-02-29", "2004-02-29T00:00:00"),
    ("2006-01-02T15:04+24:00", "2006-01-01T15:04:00"),  # Go allows hour 24 in offsets
]


@pytest.mark.parametrize(("value", "expected"), UNTIL_CASES, ids=ids(UNTIL_CASES))
def test_parse_until(value: str, expected: object) -> None:
    want = utc(expected) if isinstance(expected, str) else expected
    assert parse_until(value, NOW, 0) == want


UNTIL_ERRORS: list[tuple[str, object]] = [
    ("", r"^failed to parse value as time or duration: value is empty$"),
    (" ", r'value is empty \(value " "\)$'),
    (" 1136073600 \t", r'invalid seconds " 1136073600 \\t": invalid syntax$'),
    ("1136073600 ", r'invalid seconds "1136073600 "'),
    ("1d", r'^failed to parse value as time or duration: invalid seconds "1d": invalid syntax$'),
    ("invalid", r'invalid seconds "invalid": invalid syntax'),
    ("foo.bar", r'invalid seconds "foo": invalid syntax \(value "foo.bar"\)$'),
    ("1136073600.bar", r"invalid character 'b' at position 0 \(value \"1136073600.bar\"\)"),
    (".0000000009", r'invalid seconds "": invalid syntax \(value ".0000000009"\)'),
    ("1136073600." + "1" * 21, r"length 21 exceeds maximum 20 \(value \"1136073600\.1{21}\"\)"),
    ("99999999999999999999", r'invalid seconds "99999999999999999999": value out of range'),
    ("2006-01-02 15:04:05", r'^parsing time "2006-01-02 15:04:05": extra text: " 15:04:05"$'),
    ("-1", r'^parsing time "-1" as "2006-01-02": cannot parse "-1" as "2006"$'),
    ("2006-01-02T", r'"2006-01-02T" as "2006-01-02T15": cannot parse "" as "15"$'),
    ("2006-01-02T15:0", r'"2006-01-02T15:0" as "2006-01-02T15:04": cannot parse "0" as "04"$'),
    ("2006-01-02T15:0Z", r'as "2006-01-02T15:04Z07:00": cannot parse "0Z" as "04"$'),
    ("2006-01-02T15:04:0", r'as "2006-01-02T15:04:05": cannot parse "0" as "05"$'),
    ("2006-01-02T15:04:0Z", r'as "2006-01-02T15:04:05Z07:00": cannot parse "0Z" as "05"$'),
    ("2006-01-02TZ", r'"2006-01-02TZ" as "2006-01-02T15Z07:00": cannot parse "Z" as "15"$'),
    ("2006-1-02", r'"2006-1-02" as "2006-01-02": cannot parse "1-02" as "01"$'),
    ("06-01-02", r'"06-01-02" as "2006-01-02": cannot parse "06-01-02" as "2006"$'),
    ("2005-02-29", r'^parsing time "2005-02-29": day out of range$'),
    ("2006-13-01", r'^parsing time "2006-13-01": month out of range$'),
    ("2006-01-02T24", r'^parsing time "2006-01-02T24": hour out of range$'),
    ("2006-01-02T15:60", r"minute out of range$"),
    ("2006-01-02T15:04+25:00", r'"2006-01-02T15:04\+25:00": time zone offset hour out of range'),
    ("2006-01-02z", r'"2006-01-02z" as "2006-01-02Z07:00": cannot parse "z" as "Z07:00"$'),
    ("2006-01-02T15:04:05Z.", r'^parsing time "2006-01-02T15:04:05Z.": extra text: "."$'),
    ("2006-01-02T15:04:05.", r'"2006-01-02T15:04:05.": extra text: "."$'),
]


@pytest.mark.parametrize(("value", "pattern"), UNTIL_ERRORS, ids=ids(UNTIL_ERRORS))
def test_parse_until_errors(value: str, pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        parse_until(value, NOW, 0)


LOCAL_CASES: list[tuple[str, object]] = [
    ("2006-01-02", "2006-01-01T22:00:00"),
    ("2006-01-02T15", "2006-01-02T13:00:00"),
    ("2006-01-02T15:04", "2006-01-02T13:04:00"),
    ("2006-01-02T15:04:05", "2006-01-02T13:04:05"),
    ("2006-01-02T15:04:05.5", "2006-01-02T13:04:05.5"),
    # A zone in the value wins; durations and Unix seconds know no zone.
    ("2006-01-02Z", "2006-01-02T00:00:00"),
    ("2006-01-02T15:04:05+07:00", "2006-01-02T08:04:05"),
    ("1136073600", "2006-01-01T00:00:00"),
    ("10m", "2020-01-02T02:54:05.123456789"),
]


@pytest.mark.parametrize(("value", "expected"), LOCAL_CASES, ids=ids(LOCAL_CASES))
def test_parse_until_local_zone_uses_the_current_offset(value: str, expected: str) -> None:
    assert parse_until(value, NOW, 2 * 3600) == utc(expected)


def test_parse_until_duration_overflowing_negation_wraps_as_in_go() -> None:
    # ParseDuration gives math.MinInt64; Go's -d is MinInt64 again, so "until" lies 292
    # years in the past rather than in the future.
    assert parse_until("-9223372036854775808ns", NOW, 0) == NOW - 2**63


def test_parse_until_huge_unix_seconds_wrap_as_in_go() -> None:
    # time.Unix adds the year-1 offset in int64: the instant wraps to the far past.
    assert parse_until("9223372036854775807", NOW, 0) < 0


# Go's time_test.go parseDurationTests, plus the brief's cases.
DURATIONS: list[tuple[str, object]] = [
    ("0", 0),
    ("5s", 5 * NANOS),
    ("-5s", -5 * NANOS),
    ("+5s", 5 * NANOS),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * NANOS),
    ("5.6s", 5_600_000_000),
    ("5.s", 5 * NANOS),
    ("1.s", NANOS),
    (".5s", 500_000_000),
    ("1.004s", 1_004_000_000),
    ("100.00100s", 100_001_000_000),
    ("10ns", 10),
    ("11us", 11_000),
    ("12\u00b5s", 12_000),  # micro sign
    ("12\u03bcs", 12_000),  # Greek mu
    ("1\u00b5s", 1_000),
    ("1us", 1_000),
    ("300ms", 300_000_000),
    ("15m", 15 * MINUTE),
    ("16h", 16 * HOUR),
    ("1h30m", 90 * MINUTE),
    ("1.5h", 90 * MINUTE),
    ("-1m", -MINUTE),
    ("10.5s4m", 4 * MINUTE + 10_500_000_000),
    ("-2m3.4s", -(2 * MINUTE + 3_400_000_000)),
    ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * NANOS + 4_000_000 + 5_000 + 6),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14_425_000_000),
    ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * MINUTE),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * NANOS + 372539827),
    # uint64 sum wraps at exactly 1<<64 in Go, and the check after it misses that
    ("9223372036854775808ns9223372036854775808ns", 0),
]


@pytest.mark.parametrize(("value", "expected"), DURATIONS, ids=ids(DURATIONS))
def test_parse_go_duration(value: str, expected: int) -> None:
    assert parse_go_duration(value) == expected


DURATION_ERRORS: list[tuple[str, object]] = [
    ("", r'^time: invalid duration ""$'),
    ("3", r'^time: missing unit in duration "3"$'),
    ("-", r'^time: invalid duration "-"$'),
    ("s", r'^time: invalid duration "s"$'),
    (".", r'^time: invalid duration "\."$'),
    ("-.", r'^time: invalid duration "-\."$'),
    (".s", r'^time: invalid duration "\.s"$'),
    ("+.s", r'^time: invalid duration "\+\.s"$'),
    ("1d", r'^time: unknown unit "d" in duration "1d"$'),
    ("1 h", r'^time: unknown unit " h" in duration "1 h"$'),
    (" 1h", r'^time: invalid duration " 1h"$'),
    ("1H", r'^time: unknown unit "H" in duration "1H"$'),
    ("\ufffd", r'^time: invalid duration "\\xef\\xbf\\xbd"$'),
    ("1\u00e9", r'unknown unit "\\xc3\\xa9" in duration "1\\xc3\\xa9"$'),
    ("9999999999h", r'^time: invalid duration "9999999999h"$'),
    ("9223372036854775810ns", r'invalid duration "9223372036854775810ns"'),
    ("9223372036854775808ns", r'invalid duration "9223372036854775808ns"'),
    ("-9223372036854775809ns", r'invalid duration "-9223372036854775809ns"'),
    ("9223372036854776us", r'invalid duration "9223372036854776us"'),
    ("3000000h", r'invalid duration "3000000h"'),
    ("9223372036854775.808us", r'invalid duration "9223372036854775\.808us"'),
    ("9223372036854ms775us808ns", r'invalid duration "9223372036854ms775us808ns"'),
]


@pytest.mark.parametrize(("value", "pattern"), DURATION_ERRORS, ids=ids(DURATION_ERRORS))
def test_parse_go_duration_errors(value: str, pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        parse_go_duration(value)


CREATED = utc("2026-11-27T18:40:50")


@pytest.mark.parametrize("digits", range(10))
def test_parse_rfc3339_nano_fraction_lengths(digits: int) -> None:
    frac = "351187612"[:digits]
    text = f"2026-11-27T18:40:50{'.' if digits else ''}{frac}Z"
    assert parse_rfc3339_nano(text) == CREATED + int(frac.ljust(9, "0") or "0")


@pytest.mark.parametrize(
    ("suffix", "offset_s"),
    [("Z", 0), ("+00:00", 0), ("+02:00", 7200), ("-05:30", -19800), ("-00:00", 0)],
    ids=["Z", "+00:00", "+02:00", "-05:30", "-00:00"],
)
def test_parse_rfc3339_nano_offsets(suffix: str, offset_s: int) -> None:
    value = parse_rfc3339_nano(f"2026-11-27T18:40:50.351187612{suffix}")
    assert value == CREATED + 351187612 - offset_s * NANOS


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("2026-11-27T18:40:50", r'cannot parse "" as "Z07:00"$'),
        ("2026-11-27 18:40:50Z", r'cannot parse " 18:40:50Z" as "T"$'),
        ("2026-11-27T18:40:50.1234567891Zx", r'extra text: "x"$'),
        ("", r'^parsing time "" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "2006"$'),
    ],
    ids=["no zone", "space", "extra", "empty"],
)
def test_parse_rfc3339_nano_errors(value: str, pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        parse_rfc3339_nano(value)


def test_parse_rfc3339_nano_before_the_epoch_and_year_zero() -> None:
    assert parse_rfc3339_nano("1969-12-31T23:59:59.5Z") == -NANOS // 2
    assert parse_rfc3339_nano("0001-01-01T00:00:00Z") == -62135596800 * NANOS
    assert parse_rfc3339_nano("0000-03-01T00:00:00Z") == -62162035200 * NANOS


@given(
    seconds=st.integers(min_value=-62135596800, max_value=253402300799),
    nanos=st.integers(min_value=0, max_value=NANOS - 1),
    offset_min=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_parse_rfc3339_nano_round_trips(seconds: int, nanos: int, offset_min: int) -> None:
    local = seconds + offset_min * 60
    year, month, day, hour, minute, sec = _civil(local)
    sign = "+" if offset_min >= 0 else "-"
    zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    frac = f".{nanos:09d}".rstrip("0").rstrip(".")
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{sec:02d}{frac}{zone}"
    if 0 <= year <= 9999:
        assert parse_rfc3339_nano(text) == seconds * NANOS + nanos


def _civil(seconds: int) -> tuple[int, int, int, int, int, int]:
    days, rest = divmod(seconds, 86400)
    # Howard Hinnant's civil_from_days, written out independently of the module.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return year, month, day, rest // 3600, rest % 3600 // 60, rest % 60


@given(seconds=st.integers(0, 2**40), nanos=st.integers(0, NANOS - 1))
def test_unix_seconds_with_nine_digit_fraction(seconds: int, nanos: int) -> None:
    assert parse_until(f"{seconds}.{nanos:09d}", NOW, 0) == seconds * NANOS + nanos


@given(seconds=st.integers(0, 2**40), frac=st.text("0123456789", min_size=1, max_size=20))
def test_unix_seconds_fraction_is_padded_or_truncated(seconds: int, frac: str) -> None:
    expected = seconds * NANOS + int(frac[:9].ljust(9, "0"))
    assert parse_until(f"{seconds}.{frac}", NOW, 0) == expected


# --- R2, R4, R5: validation in Filters.from_mapping -------------------------------------

DANGLING: list[tuple[object, object]] = [
    (None, True),
    (["true"], True),
    (["1"], True),
    (["false"], False),
    (["0"], False),
    (["true", "1"], True),
    (["false", "0"], False),
    (["true", "yes"], True),  # a true value and no false one: accepted
    (["false", "no"], False),
    (["yes"], "invalid filter 'dangling=[yes]'"),
    (["True"], "invalid filter 'dangling=[True]'"),
    (["false", "true"], "invalid filter 'dangling=[false true]'"),
    (["1", "0", "true"], "invalid filter 'dangling=[0 1 true]'"),
    ([""], "invalid filter 'dangling=[]'"),
    ([], "invalid filter 'dangling'"),
]


@pytest.mark.parametrize(("values", "expected"), DANGLING, ids=[repr(case[0]) for case in DANGLING])
def test_dangling(values: list[str] | None, expected: object) -> None:
    args: dict[str, list[str]] = {} if values is None else {"dangling": values}
    if isinstance(expected, str):
        with pytest.raises(FilterError, match=f"^{re.escape(expected)}$"):
            Filters.from_mapping(args)
    else:
        assert Filters.from_mapping(args).dangling is expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"reference": ["alpine"]}, "invalid filter 'reference'"),
        ({"before": ["x"]}, "invalid filter 'before'"),
        ({"LABEL": ["a"]}, "invalid filter 'LABEL'"),
        ({"Dangling": ["true"]}, "invalid filter 'Dangling'"),
        ({"until": ["1h"], "zeta": [], "beta": ["x"]}, "invalid filter 'beta'"),
        ({"": ["x"]}, "invalid filter"),
        ({"dangling": ["maybe"], "reference": ["x"]}, "invalid filter 'reference'"),
    ],
    ids=["reference", "before", "LABEL", "Dangling", "first-sorted", "empty-key", "keys-first"],
)
def test_unknown_keys(args: dict[str, list[str]], message: str) -> None:
    with pytest.raises(FilterError, match=f"^{re.escape(message)}$"):
        Filters.from_mapping(args)


def test_until_two_distinct_values() -> None:
    with pytest.raises(FilterError, match=r"^more than one until filter specified$"):
        Filters.from_mapping({"until": ["1h", "2h"]})


def test_until_duplicates_collapse() -> None:
    filters = Filters.from_mapping({"until": ["1h", "1h"]})
    assert filters.until == "1h"
    assert filters.to_docker() == {"until": ["1h"]}
    assert filters.until_ns(NOW, 0) == NOW - HOUR


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("1d", r"^invalid value for 'until' filter: .*\"1d\""),
        ("", r"^invalid value for 'until' filter: .*value is empty$"),
        ("2006-01-02T", r"^invalid value for 'until' filter: parsing time \"2006-01-02T\""),
    ],
    ids=["1d", "empty", "date"],
)
def test_until_invalid_value(value: str, pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        Filters.from_mapping({"until": [value]})


@pytest.mark.parametrize(
    ("values", "key", "bad", "texts"),
    [
        (["label"], None, (), ("label",)),
        (["label=ci", "reference=alpine"], "reference", ("alpine",), ("reference=alpine",)),
        (["dangling=maybe"], "dangling", ("maybe",), ("dangling=maybe",)),
        (["until=yesterday"], "until", ("yesterday",), ("until=yesterday",)),
        (["until=1h", " Until = 2h"], "until", ("1h", "2h"), ("until=1h", " Until = 2h")),
    ],
    ids=["no-equals", "unknown-key", "dangling", "until", "two-untils"],
)
def test_a_filter_error_carries_what_a_message_needs(
    values: list[str], key: str | None, bad: tuple[str, ...], texts: tuple[str, ...]
) -> None:
    """The key at fault, its values, and the filters as typed: the plugin words its usage
    error from them (Docker's wording stays the exception's message)."""
    with pytest.raises(FilterError) as caught:
        parse_filters(values)
    assert (caught.value.key, caught.value.values, caught.value.texts) == (key, bad, texts)


def test_until_empty_set_is_an_error() -> None:
    with pytest.raises(FilterError, match=r"^invalid value for 'until' filter: no value given$"):
        Filters.from_mapping({"until": []})


def test_validation_order_dangling_before_until() -> None:
    with pytest.raises(FilterError, match="dangling"):
        Filters.from_mapping({"dangling": ["x"], "until": ["1h", "2h"]})


def test_no_trimming_or_lowercasing_in_the_daemon() -> None:
    with pytest.raises(FilterError, match=r"^invalid filter 'dangling=\[ true\]'$"):
        Filters.from_mapping({"dangling": [" true"]})
    with pytest.raises(FilterError, match=r"^invalid value for 'until' filter: .*\" 1h\""):
        Filters.from_mapping({"until": [" 1h"]})
    assert Filters.from_mapping({"label": [" a "]}).label == frozenset({" a "})


def test_bare_string_value_is_one_value() -> None:
    assert Filters.from_mapping({"label": "a=b"}).label == frozenset({"a=b"})


def test_until_ns() -> None:
    assert Filters().until_ns(NOW, 0) is None
    assert Filters(until="10m").until_ns(NOW, 7200) == NOW - 10 * MINUTE
    assert Filters(until="2006-01-02").until_ns(NOW, 7200) == utc("2006-01-01T22:00:00")


@pytest.mark.parametrize(
    ("value", "offset_s"),
    [("0001-01-01T00:00:00Z", 0), ("0001-01-01", 0), ("0001-01-01T02:00:00+02:00", 0)],
    ids=["zoned", "local", "offset"],
)
def test_until_at_go_zero_time_disables_the_filter(value: str, offset_s: int) -> None:
    # The daemon skips the until test when until.IsZero().
    assert Filters(until=value).until_ns(NOW, offset_s) is None


def test_until_near_go_zero_time_is_kept() -> None:
    assert Filters(until="0001-01-01").until_ns(NOW, 3600) == (-62135596800 - 3600) * NANOS


def test_to_docker_raw_and_is_default() -> None:
    assert Filters().is_default
    assert Filters().to_docker() == {}
    assert Filters.from_mapping({}).is_default
    filters = Filters.from_mapping({"label": ["b=c", "a"], "dangling": ["false"]})
    assert not filters.is_default
    assert filters.to_docker() == {"dangling": ["false"], "label": ["a", "b=c"]}
    assert dict(filters.raw) == {"dangling": ("false",), "label": ("a", "b=c")}
    assert not Filters.from_mapping({"dangling": ["true"]}).is_default


def test_fields_built_directly_give_raw() -> None:
    filters = Filters(dangling=False, label=frozenset({"b", "a"}), until="1h")
    assert filters.to_docker() == {"dangling": ["false"], "label": ["a", "b"], "until": ["1h"]}
    assert filters == Filters.from_mapping(filters.to_docker())
    assert hash(filters) == hash(Filters.from_mapping(filters.to_docker()))


# --- R7: labels ------------------------------------------------------------------------

LABEL_CASES: list[tuple[list[str], dict[str, str] | None, bool]] = [
    (["label=a"], {"a": "1"}, True),
    (["label=a"], {"b": "1"}, False),
    (["label=a"], {}, False),
    (["label=a"], None, False),
    (["label=a=1"], {"a": "1"}, True),
    (["label=a=1"], {"a": "2"}, False),
    (["label=a="], {"a": ""}, True),
    (["label=a="], {"a": "1"}, False),
    (["label=a=b=c"], {"a": "b=c"}, True),
    (["label=a", "label=b"], {"a": "1"}, False),
    (["label=a", "label=b"], {"a": "1", "b": "1"}, True),
    (["label!=a"], {"a": "1"}, False),
    (["label!=a"], {"b": "1"}, True),
    (["label!=a"], {}, True),
    (["label!=a=1"], {"a": "1"}, False),
    (["label!=a=1"], {"a": "2"}, True),
    (["label!=a=1"], {}, True),
    (["label!=a", "label!=b"], {"a": "1"}, True),
    (["label!=a", "label!=b"], {"a": "1", "b": "2"}, False),
    (["label=a", "label!=a"], {"a": "1"}, False),
    (["label=A"], {"a": "1"}, False),
    (["label=a=X"], {"a": "x"}, False),
    ([], {}, True),
    ([], None, True),
]


@pytest.mark.parametrize(
    ("cli", "labels", "expected"),
    LABEL_CASES,
    ids=[f"{' '.join(cli) or 'none'}|{labels}" for cli, labels, _ in LABEL_CASES],
)
def test_match_labels(cli: list[str], labels: dict[str, str] | None, expected: bool) -> None:
    assert parse_filters(cli).match_labels(labels) is expected


def test_label_not_with_no_values_excludes_every_image() -> None:
    # MatchKVList is true for an empty set, and Contains("label!") is true.
    filters = Filters.from_mapping({"label!": []})
    assert not filters.match_labels({"a": "1"})
    assert not filters.match_labels(None)
    assert Filters.from_mapping({"label": []}).match_labels(None)


def _go_match_labels(fields: Mapping[str, frozenset[str]], labels: Mapping[str, str]) -> bool:
    """A line-by-line transcription of moby's matchLabels and Args.MatchKVList."""

    def match_kv_list(key: str) -> bool:
        field_values = fields.get(key, frozenset())
        if len(field_values) == 0:
            return True
        if len(labels) == 0:
            return False
        for value in field_values:
            test_k, sep, test_v = value.partition("=")
            if test_k not in labels:
                return False
            if sep and test_v != labels[test_k]:
                return False
        return True

    if not match_kv_list("label"):
        return False
    return not ("label!" in fields and match_kv_list("label!"))


_KEYS = st.sampled_from(["a", "b", "", "a=b"])
_FILTER_VALUES = st.builds(
    lambda key, value: key if value is None else f"{key}={value}",
    _KEYS,
    st.none() | st.sampled_from(["", "1", "2", "x=y"]),
)


@given(
    label=st.none() | st.frozensets(_FILTER_VALUES, max_size=3),
    label_not=st.none() | st.frozensets(_FILTER_VALUES, max_size=3),
    labels=st.dictionaries(_KEYS, st.sampled_from(["", "1", "2", "x=y"]), max_size=3),
)
def test_match_labels_agrees_with_go(
    label: frozenset[str] | None, label_not: frozenset[str] | None, labels: dict[str, str]
) -> None:
    fields = {
        key: values
        for key, values in (("label", label), ("label!", label_not))
        if values is not None
    }
    assert Filters.from_mapping(fields).match_labels(labels) is _go_match_labels(fields, labels)


# --- R27: command-line form ------------------------------------------------------------

CLI_CASES: list[tuple[list[str], dict[str, list[str]]]] = [
    (["label=a"], {"label": ["a"]}),
    (["label!=a=b"], {"label!": ["a=b"]}),
    ([" LABEL =  a=b  "], {"label": ["a=b"]}),
    (["Dangling=false"], {"dangling": ["false"]}),
    (["until= 10m\t"], {"until": ["10m"]}),
    (["label= a b "], {"label": ["a b"]}),
    (["label=a", "label=a", "label=b"], {"label": ["a", "b"]}),
    ([""], {}),  # an empty flag value adds nothing
    (["label="], {"label": [""]}),  # an empty value is still added (FilterOpt.Set)
    (["label=  "], {"label": [""]}),
    ([], {}),
]


@pytest.mark.parametrize(("cli", "docker"), CLI_CASES, ids=[repr(cli) for cli, _ in CLI_CASES])
def test_parse_filters(cli: list[str], docker: dict[str, list[str]]) -> None:
    assert parse_filters(cli).to_docker() == docker


def test_parse_filters_fields() -> None:
    filters = parse_filters(["dangling=false", "label=a", "label!=b=c", "until=24h"])
    assert filters == Filters(
        dangling=False,
        label=frozenset({"a"}),
        label_not=frozenset({"b=c"}),
        until="24h",
        raw=filters.raw,
    )
    assert filters.until_ns(NOW, 0) == NOW - 24 * HOUR


@pytest.mark.parametrize(
    ("cli", "pattern"),
    [
        (["foo"], r"^bad format of filter 'foo' \(expected name=value\)$"),
        (["label=a", "dangling"], r"^bad format of filter 'dangling' \(expected name=value\)$"),
        (["  "], r"^bad format of filter '  ' \(expected name=value\)$"),
        (["reference=x"], r"^invalid filter 'reference'$"),
        (["=x"], r"^invalid filter$"),
        (["dangling="], r"^invalid filter 'dangling=\[\]'$"),
        (["dangling=yes"], r"^invalid filter 'dangling=\[yes\]'$"),
        (["dangling=TRUE"], r"^invalid filter 'dangling=\[TRUE\]'$"),
        (["until=1h", "until=2h"], r"^more than one until filter specified$"),
        (["until="], r"^invalid value for 'until' filter: .*value is empty$"),
        (["until=1d"], r"^invalid value for 'until' filter: .*\"1d\""),
    ],
    ids=[
        "no-equals",
        "second-no-equals",
        "blank",
        "unknown",
        "empty-name",
        "dangling-empty",
        "dangling-yes",
        "dangling-TRUE",
        "two-untils",
        "until-empty",
        "until-1d",
    ],
)
def test_parse_filters_errors(cli: list[str], pattern: str) -> None:
    with pytest.raises(FilterError, match=pattern):
        parse_filters(cli)


def test_filter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="reference"):
        parse_filters(["reference=x"])
