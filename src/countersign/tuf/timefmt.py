"""Go's RFC 3339 time, as notary writes ``expires``.

Python's ``datetime`` keeps microseconds; notary writes up to nanoseconds and
keeps the writer's UTC offset. Re-emitting a file byte for byte needs both, so
:class:`GoTime` carries the nanoseconds and the offset it was read with.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import total_ordering

from countersign.errors import FormatError

_DIGITS = frozenset("0123456789")


def _digits(text: str, start: int, count: int, what: str) -> int:
    part = text[start : start + count]
    if len(part) != count or not set(part) <= _DIGITS:
        raise FormatError(f"time {text[:40]!r}: bad {what}")
    return int(part)


@total_ordering
@dataclass(frozen=True)
class GoTime:
    """An instant with nanosecond precision and the UTC offset it was written in."""

    seconds: int  # whole seconds since the Unix epoch
    nanos: int  # 0 .. 999_999_999
    offset_minutes: int = 0

    @classmethod
    def parse(cls, text: str) -> GoTime:
        """Parse RFC 3339 as Go's ``time.Time.UnmarshalJSON`` accepts it."""
        if not isinstance(text, str) or not 20 <= len(text) <= 40:
            raise FormatError(f"time {str(text)[:40]!r} is not RFC 3339")
        year = _digits(text, 0, 4, "year")
        month = _digits(text, 5, 2, "month")
        day = _digits(text, 8, 2, "day")
        hour = _digits(text, 11, 2, "hour")
        minute = _digits(text, 14, 2, "minute")
        second = _digits(text, 17, 2, "second")
        if (text[4], text[7], text[10], text[13], text[16]) != ("-", "-", "T", ":", ":"):
            raise FormatError(f"time {text!r} is not RFC 3339")
        pos = 19
        nanos = 0
        if pos < len(text) and text[pos] in ".,":
            end = pos + 1
            while end < len(text) and text[end] in _DIGITS:
                end += 1
            frac = text[pos + 1 : end]
            if not 1 <= len(frac) <= 9:
                raise FormatError(f"time {text!r}: bad fraction of a second")
            nanos = int(frac.ljust(9, "0"))
            pos = end
        zone = text[pos:]
        if zone == "Z":
            offset = 0
        elif len(zone) == 6 and zone[0] in "+-" and zone[3] == ":":
            oh = _digits(zone, 1, 2, "zone hour")
            om = _digits(zone, 4, 2, "zone minute")
            if oh > 23 or om > 59:
                raise FormatError(f"time {text!r}: zone offset out of range")
            offset = (oh * 60 + om) * (-1 if zone[0] == "-" else 1)
        else:
            raise FormatError(f"time {text!r} has no valid zone (Z or +hh:mm)")
        try:
            local = _dt.datetime(
                year, month, day, hour, minute, second,
                tzinfo=_dt.timezone(_dt.timedelta(minutes=offset)),
            )
        except ValueError as exc:
            raise FormatError(f"time {text!r}: {exc}") from None
        return cls(int(local.timestamp()), nanos, offset)

    @classmethod
    def from_datetime(cls, when: _dt.datetime) -> GoTime:
        """A time from an aware ``datetime``, written in UTC as notary's server does."""
        if when.tzinfo is None:
            raise ValueError("naive datetime: an expiry needs a time zone")
        utc = when.astimezone(_dt.UTC)
        return cls(int(utc.replace(microsecond=0).timestamp()), utc.microsecond * 1000, 0)

    @classmethod
    def now(cls) -> GoTime:
        return cls.from_datetime(_dt.datetime.now(_dt.UTC))

    def to_datetime(self) -> _dt.datetime:
        """The instant as an aware ``datetime`` (nanoseconds truncated to microseconds)."""
        zone = _dt.timezone(_dt.timedelta(minutes=self.offset_minutes))
        base = _dt.datetime.fromtimestamp(self.seconds, zone)
        return base + _dt.timedelta(microseconds=self.nanos // 1000)

    def add(self, delta: _dt.timedelta) -> GoTime:
        total = self.seconds * 10**9 + self.nanos + (
            (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        )
        return GoTime(total // 10**9, total % 10**9, self.offset_minutes)

    def format(self) -> str:
        """Go's ``RFC3339Nano`` rendering: trailing zeros trimmed, ``Z`` for UTC."""
        local = _dt.datetime.fromtimestamp(
            self.seconds, _dt.timezone(_dt.timedelta(minutes=self.offset_minutes))
        )
        if not 1 <= local.year <= 9999:
            raise FormatError("time is outside the years notary can write")
        text = (
            f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
            f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        )
        if self.nanos:
            text += "." + f"{self.nanos:09d}".rstrip("0")
        if self.offset_minutes == 0:
            return text + "Z"
        sign = "-" if self.offset_minutes < 0 else "+"
        hours, minutes = divmod(abs(self.offset_minutes), 60)
        return f"{text}{sign}{hours:02d}:{minutes:02d}"

    def _key(self) -> tuple[int, int]:
        return (self.seconds, self.nanos)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, GoTime):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GoTime):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.format()
