"""A budget as given: its SIZE, read as Docker writes sizes (``20GB``, ``500MiB``), and its
keep patterns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True)
class Budget:
    """``--prune-images-budget`` and ``--prune-images-keep``, checked."""

    size: int
    #: SIZE as the user wrote it, for the lines they read.
    spelled: str
    #: Regular expressions over ``repo:tag``; an image with a name one finds is kept.
    keep: tuple[str, ...] = ()

    def patterns(self) -> list[re.Pattern[str]]:
        return [re.compile(p) for p in self.keep]


#: Decimal units as ``docker images`` and ``docker system df`` print sizes (go-units'
#: ``HumanSize``: ``kB``, ``MB``, ``GB``), and binary ones as IEC spells them (``KiB``,
#: ``MiB``, ``GiB``). Case does not matter; the ``B`` may be left out (``20g``).
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i)?)?(b)?\s*$", re.IGNORECASE)

SIZE_FORMS = "a number of bytes with a unit: 20GB, 500MB, 1.5GiB, 750MiB or 1000000 (bytes)"


class SizeError(ValueError):
    """``value`` is not a size; ``str()`` says why."""

    def __init__(self, value: str, why: str) -> None:
        super().__init__(why)
        self.value = value


def parse_size(value: str) -> int:
    """The bytes ``value`` names: ``kB``/``MB``/``GB``/``TB``/``PB`` are powers of 1000, as
    Docker prints sizes; ``KiB``/``MiB``/``GiB``/``TiB``/``PiB`` powers of 1024. Raises
    ``SizeError``.

    (Docker's own parser, go-units' ``FromHumanSize``, reads ``MiB`` as ``MB``; this one
    reads it as IEC does, since that is what a person writing ``MiB`` means.)
    """
    match = _SIZE.match(value)
    if match is None:
        raise SizeError(value, f"{value!r} is not a size: write {SIZE_FORMS}")
    number, prefix, binary, _ = match.groups()
    if binary and not prefix:
        raise SizeError(value, f"{value!r} is not a size: write {SIZE_FORMS}")
    try:
        amount = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        raise SizeError(value, f"{value!r} is not a size: write {SIZE_FORMS}") from None
    base = 1024 if binary else 1000
    size = int(amount * base ** _POWERS[(prefix or "").lower()])
    if size <= 0:
        raise SizeError(value, f"{value!r} is no room at all: a budget is more than 0 bytes")
    return size
