"""Go's RFC 3339 times: nanoseconds and offsets survive a round trip."""

from __future__ import annotations

import datetime as dt

import pytest

from countersign.errors import FormatError
from countersign.tuf.timefmt import GoTime


@pytest.mark.parametrize(
    "text",
    [
        "2116-07-03T18:08:08.418734928-05:00",
        "2031-05-04T10:22:01Z",
        "2031-05-04T10:22:01.5Z",
        "2031-05-04T10:22:01.000000001+05:30",
        "0001-01-01T00:00:00Z",
    ],
)
def test_round_trip(text: str) -> None:
    assert GoTime.parse(text).format() == text


def test_go_rendering_normalises_zero_offset_and_trailing_zeros() -> None:
    assert GoTime.parse("2031-05-04T10:22:01.500+00:00").format() == "2031-05-04T10:22:01.5Z"
    assert GoTime.parse("2031-05-04T10:22:01.000Z").format() == "2031-05-04T10:22:01Z"


def test_ordering_is_by_instant_with_nanoseconds() -> None:
    a = GoTime.parse("2030-01-01T00:00:00.000000001Z")
    b = GoTime.parse("2029-12-31T19:00:00.000000002-05:00")
    assert a < b
    assert GoTime.parse("2030-01-01T05:00:00Z") == GoTime.parse("2030-01-01T00:00:00-05:00")


def test_from_datetime_and_add() -> None:
    when = dt.datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    t = GoTime.from_datetime(when)
    assert t.format() == "2030-01-01T10:00:00.25Z"
    assert t.add(dt.timedelta(days=14)).format() == "2030-01-15T10:00:00.25Z"
    assert t.to_datetime() == when
    with pytest.raises(ValueError, match="naive"):
        GoTime.from_datetime(dt.datetime(2030, 1, 1))


@pytest.mark.parametrize(
    "text",
    [
        "2031-05-04 10:22:01Z",
        "2031-05-04T10:22:01",
        "2031-05-04T10:22:01+0000",
        "2031-13-04T10:22:01Z",
        "2031-02-30T10:22:01Z",
        "2031-05-04T10:22:60Z",
        "2031-05-04T10:22:01.1234567890Z",
        "2031-05-04T10:22:01.Z",
        "0000-01-01T00:00:00Z",
        "2031-05-04T10:22:01+24:00",
        "2031-05-04t10:22:01z",
        "２０３１-05-04T10:22:01Z",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(FormatError):
        GoTime.parse(text)
