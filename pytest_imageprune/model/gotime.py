"""Go's time and number parsing, as far as the daemon's ``until`` filter uses it.

Transcribed from Go's ``time/format.go`` (``ParseDuration``, ``parse``) and
``strconv.ParseInt``, and moby's ``daemon/internal/timestamp`` (``parseTimestamp``),
so that what Docker accepts, this accepts, and the error texts read the same.
Instants are ints of nanoseconds since the Unix epoch; Python ints do not overflow,
so the few int64 wrap-arounds Go has are reproduced on purpose with :func:`wrap64`.
"""

from __future__ import annotations

from pytest_imageprune.errors import FilterError

NANOS = 1_000_000_000
_UNIX_TO_INTERNAL = 62_135_596_800  # seconds from 0001-01-01 to 1970-01-01
GO_ZERO_NS = -_UNIX_TO_INTERNAL * NANOS  # time.Time{}: IsZero() is true for this instant
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1

# unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip also strips \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
GO_SPACE += "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": NANOS,
    "m": 60 * NANOS,
    "h": 3600 * NANOS,
}
_ESCAPES = dict(
    zip("\a\b\f\n\r\t\v", (r"\a", r"\b", r"\f", r"\n", r"\r", r"\t", r"\v"), strict=True)
)


def wrap64(value: int) -> int:
    """``value`` as Go's int64 arithmetic leaves it (two's complement wrap-around)."""
    return (value - _INT64_MIN) % (1 << 64) + _INT64_MIN


def _is_digit(text: str, index: int) -> bool:
    return index < len(text) and "0" <= text[index] <= "9"


def time_quote(text: str) -> str:
    """Go's ``time.quote``: non-ASCII and control characters as ``\\x`` escapes of bytes."""
    out = ['"']
    for char in text:
        if char >= "\x80" or char < " ":
            raw = char.encode("utf-8", "surrogatepass")
            out.extend(f"\\x{byte:02x}" for byte in raw)
        else:
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


def _escape(char: str, quote: str) -> str:
    """One rune as ``strconv.Quote`` (or ``QuoteRune``) writes it inside ``quote``s."""
    if char in (quote, "\\"):
        return "\\" + char
    if char.isprintable():
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def strconv_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (what ``%q`` prints for a string)."""
    return '"' + "".join(_escape(char, '"') for char in text) + '"'


def _leading_int(text: str) -> tuple[int, str]:
    """``leadingInt``: consume ``[0-9]*``; ValueError when it passes 1<<63."""
    value, index = 0, 0
    while _is_digit(text, index):
        if value > (1 << 63) // 10:
            raise ValueError(text)
        value = value * 10 + ord(text[index]) - 48
        if value > 1 << 63:
            raise ValueError(text)
        index += 1
    return value, text[index:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    """``leadingFraction``: digits after the point; stops gaining precision on overflow."""
    value, scale, index, overflow = 0, 1.0, 0, False
    while _is_digit(text, index):
        digit = ord(text[index]) - 48
        index += 1
        if overflow:
            continue
        if value > _INT64_MAX // 10 or value * 10 + digit > 1 << 63:
            overflow = True
            continue
        value = value * 10 + digit
        scale *= 10
    return value, scale, text[index:]


def parse_duration(value: str) -> int:
    """Go's ``time.ParseDuration``, in nanoseconds."""

    def invalid(what: str = "invalid duration ") -> FilterError:
        return FilterError(f"time: {what}{time_quote(value)}")

    text, total, negative = value, 0, False
    if text[:1] in ("-", "+"):
        negative, text = text[0] == "-", text[1:]
    if text == "0":
        return 0
    if not text:
        raise invalid()
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid()
        before = len(text)
        try:
            whole, text = _leading_int(text)
        except ValueError:
            raise invalid() from None
        pre, post, frac, scale = before != len(text), False, 0, 1.0
        if text[:1] == ".":
            before = len(text) - 1
            frac, scale, text = _leading_fraction(text[1:])
            post = before != len(text)
        if not pre and not post:
            raise invalid()
        end = 0
        while end < len(text) and not (text[end] == "." or "0" <= text[end] <= "9"):
            end += 1
        if end == 0:
            raise invalid("missing unit in duration ")
        unit_name, text = text[:end], text[end:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise invalid(f"unknown unit {time_quote(unit_name)} in duration ")
        if whole > (1 << 63) // unit:
            raise invalid()
        whole *= unit
        if frac > 0:
            whole += int(float(frac) * (float(unit) / scale))
            if whole > 1 << 63:
                raise invalid()
        total = (total + whole) & _UINT64_MAX  # uint64: 1<<63 + 1<<63 wraps to 0, as in Go
        if total > 1 << 63:
            raise invalid()
    if negative:
        return -total
    if total > _INT64_MAX:
        raise invalid()
    return total


def _parse_int64(text: str) -> int:
    """``strconv.ParseInt(text, 10, 64)``; ValueError carries Go's reason."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body:
        raise ValueError("invalid syntax")
    value = 0
    for char in body:
        if not "0" <= char <= "9":
            raise ValueError("invalid syntax")
        if value >= _UINT64_MAX // 10 + 1:
            raise ValueError("value out of range")
        value = value * 10 + ord(char) - 48
        if value > _UINT64_MAX:
            raise ValueError("value out of range")
    if text[:1] == "-":
        value = -value
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("value out of range")
    return value


def parse_unix_timestamp(value: str) -> int:
    """moby's ``parseTimestamp``: ``secs[.frac]`` to ns (v29.4 rules); FilterError if bad."""
    secs_text, dot, frac = value.partition(".")
    try:
        secs = _parse_int64(secs_text)
    except ValueError as exc:
        raise FilterError(f"invalid seconds {strconv_quote(secs_text)}: {exc}") from None
    nsec = 0
    if dot and frac not in ("", "0", "000000000"):
        raw = frac.encode("utf-8", "surrogatepass")
        if len(raw) > 20:
            raise FilterError(f"invalid nanoseconds: length {len(raw)} exceeds maximum 20")
        for index, byte in enumerate(raw):
            if not 0x30 <= byte <= 0x39:
                char = "'" + _escape(chr(byte), "'") + "'"
                raise FilterError(
                    f"invalid nanoseconds: invalid character {char} at position {index}"
                )
        nsec = int(raw[:9].decode().ljust(9, "0"))
    # time.Unix adds the year-1 offset in int64, which wraps for huge seconds.
    return (wrap64(secs + _UNIX_TO_INTERNAL) - _UNIX_TO_INTERNAL) * NANOS + nsec


# Layouts as element lists; "".join() gives Go's layout string. Elements not in _ELEMENTS
# are literal text.
Layout = tuple[str, ...]
RFC3339: Layout = ("2006", "-", "01", "-", "02", "T", "15", ":", "04", ":", "05", "Z07:00")
RFC3339_NANO: Layout = (*RFC3339[:-1], ".999999999", "Z07:00")
RFC3339_LOCAL: Layout = RFC3339[:-1]
RFC3339_NANO_LOCAL: Layout = RFC3339_NANO[:-1]
HOUR_MINUTE_ZONED: Layout = (*RFC3339[:9], "Z07:00")
HOUR_MINUTE_LOCAL: Layout = RFC3339[:9]
HOUR_ZONED: Layout = (*RFC3339[:7], "Z07:00")
HOUR_LOCAL: Layout = RFC3339[:7]
DATE_ZONED: Layout = (*RFC3339[:5], "Z07:00")
DATE_LOCAL: Layout = RFC3339[:5]
_ELEMENTS = frozenset({"2006", "01", "02", "15", "04", "05", ".999999999", "Z07:00"})


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (year 0 included)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in(month: int, year: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


class _Bad(Exception):
    """Go's ``errBad``: the element does not parse (reported as "cannot parse")."""


class _Range(Exception):
    """Go's ``rangeErrString``: the element parsed but is out of range."""


def _getnum(text: str, fixed: bool) -> tuple[int, str]:
    """Go's ``getnum``: one or two digits (exactly two when ``fixed``)."""
    if not _is_digit(text, 0) or (fixed and not _is_digit(text, 1)):
        raise _Bad
    if not _is_digit(text, 1):
        return int(text[0]), text[1:]
    return int(text[:2]), text[2:]


def _fraction(text: str) -> tuple[int, str]:
    """A ``[.,]digits`` fraction (Go's ``parseNanoseconds``): ns, keeping 9 digits."""
    end = 2
    while _is_digit(text, end):
        end += 1
    kept = min(end, 10)
    return int(text[1:kept]) * 10 ** (10 - kept), text[end:]


def _has_fraction(text: str) -> bool:
    return text[:1] in (".", ",") and _is_digit(text, 1)


def _zone(text: str) -> tuple[int, str]:
    """Go's ``Z07:00`` element: ``Z`` or ``±hh:mm``; offset in seconds east of UTC."""
    if text[:1] == "Z":
        return 0, text[1:]
    if len(text) < 6 or text[3] != ":":
        raise _Bad
    hours = minutes = 0
    bad = False
    try:
        hours, _ = _getnum(text[1:3], True)
        minutes, _ = _getnum(text[4:6], True)
    except _Bad:
        bad = True
    if minutes > 60:
        raise _Range("time zone offset minute")
    if hours > 24:
        raise _Range("time zone offset hour")
    if bad or text[0] not in ("+", "-"):
        raise _Bad
    offset = (hours * 60 + minutes) * 60
    return (offset if text[0] == "+" else -offset), text[6:]


def parse_layout(layout: Layout, value: str, default_offset_s: int) -> int:
    """Go's ``time.Parse`` for the layouts above, to ns since the epoch.

    ``default_offset_s`` is the fixed zone used when the value carries no zone
    (``ParseInLocation(layout, value, FixedZone(name, offset))``; 0 for ``time.Parse``).
    """
    year, month, day, hour, minute, sec, nsec = 0, 1, 1, 0, 0, 0, 0
    offset, rest = default_offset_s, value
    for position, element in enumerate(layout):
        hold = rest
        try:
            if element not in _ELEMENTS:
                if not rest.startswith(element):
                    raise _Bad
                rest = rest[len(element) :]
            elif element == "2006":
                if len(rest) < 4 or not all("0" <= char <= "9" for char in rest[:4]):
                    raise _Bad
                year, rest = int(rest[:4]), rest[4:]
            elif element in ("01", "02", "04", "05"):
                number, rest = _getnum(rest, True)
                if element == "01":
                    month = _checked(number, 1, 12, "month")
                elif element == "02":
                    day = number  # checked against the month once all is parsed
                elif element == "04":
                    minute = _checked(number, 0, 59, "minute")
                else:
                    sec = _checked(number, 0, 59, "second")
                    following = layout[position + 1 : position + 2]
                    if _has_fraction(rest) and following != (".999999999",):
                        nsec, rest = _fraction(rest)  # Go takes a fraction after seconds
            elif element == "15":
                number, rest = _getnum(rest, False)
                hour = _checked(number, 0, 23, "hour")
            elif element == ".999999999":
                if _has_fraction(rest):
                    nsec, rest = _fraction(rest)
            else:
                offset, rest = _zone(rest)
        except _Range as exc:
            raise FilterError(f"parsing time {time_quote(value)}: {exc} out of range") from None
        except _Bad:
            raise FilterError(
                f"parsing time {time_quote(value)} as {time_quote(''.join(layout))}: "
                f"cannot parse {time_quote(hold)} as {time_quote(element)}"
            ) from None
    if rest:
        raise FilterError(f"parsing time {time_quote(value)}: extra text: {time_quote(rest)}")
    if not 1 <= day <= _days_in(month, year):
        raise FilterError(f"parsing time {time_quote(value)}: day out of range")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec
    return (seconds - offset) * NANOS + nsec


def _checked(number: int, low: int, high: int, what: str) -> int:
    if not low <= number <= high:
        raise _Range(what)
    return number
