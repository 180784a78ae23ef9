"""Date search semantics: every date is a range, and prefixes compare ranges.

A partial date stands for the whole interval it names (``2024`` is 2024-01-01T00:00:00 up to the start of
2025); a search value does too. https://hl7.org/fhir/R5/search.html#date
Ranges are half-open ``[low, high)`` in microseconds since the epoch (UTC); a value without a time zone is
taken as UTC (the spec leaves it to the server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache

from fhir_pub.errors import Invalid

# https://hl7.org/fhir/R5/datatypes.html#dateTime, plus instant's fractional seconds
_DATE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidDate(Invalid):
    """A date search value or element that is not a FHIR date, dateTime or instant."""


@dataclass(frozen=True)
class Range:
    """A half-open interval ``[low, high)`` of microseconds since the epoch."""

    low: int
    high: int

    def overlaps(self, other: Range) -> bool:
        """Whether the two intervals share any instant."""
        return self.low < other.high and other.low < self.high


def micros(moment: datetime) -> int:
    """An aware datetime as the publication stores instants: microseconds since the epoch (UTC)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_micros = micros


def parse_instant(text: str, name: str = "_since") -> datetime:
    """A request's instant (``_since``), in UTC; it needs a time zone (a "+" sent unescaped is a space).

    https://hl7.org/fhir/R5/datatypes.html#instant. Compare it with stored instants through ``micros``,
    never as text: 2024-05-21T01:00:00+02:00 is before 2024-05-20T23:30:00Z.
    """
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid(
            f"{name}={text!r}: expected an instant such as 2024-01-01T00:00:00Z", expression=name
        ) from exc
    if value.tzinfo is None:
        raise Invalid(f"{name}={text!r}: an instant needs a time zone", expression=name)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise Invalid(f"{name}={text!r}: outside the supported instants", expression=name) from exc


def now_micros() -> int:
    """The current instant as the search index stores instants (microseconds since the epoch)."""
    return _micros(datetime.now(UTC))


@lru_cache(maxsize=1024)  # a publication repeats its dates (every meta.lastUpdated of a build, say)
def parse_range(text: str) -> Range:
    """The interval a FHIR date, dateTime or instant stands for, at its own precision."""
    match = _DATE.match(text)
    if match is None:
        raise InvalidDate(f"{text!r} is not a FHIR date, dateTime or instant")
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        month = int(parts["month"] or 1)
        day = int(parts["day"] or 1)
        hour, minute = int(parts["hour"] or 0), int(parts["minute"] or 0)
        second = int(parts["second"] or 0)
        fraction = parts["fraction"] or ""
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        zone = parts["zone"]
        tz: tzinfo = UTC
        if zone and zone != "Z":
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            tz = timezone(offset if zone[0] == "+" else -offset)
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise InvalidDate(f"{text!r} is not a valid date ({exc})") from exc
    try:
        low = _micros(start)
    except (ValueError, OverflowError) as exc:
        raise InvalidDate(f"{text!r} is outside the supported dates (years 1 to 9999)") from exc
    try:
        if parts["month"] is None:
            end = start.replace(year=year + 1)
        elif parts["day"] is None:
            end = start.replace(year=year + 1, month=1) if month == 12 else start.replace(month=month + 1)
        elif parts["hour"] is None:
            end = start + timedelta(days=1)
        elif parts["second"] is None:
            end = start + timedelta(minutes=1)
        elif not fraction:
            end = start + timedelta(seconds=1)
        else:
            digits = len(fraction) - 1
            end = start + timedelta(microseconds=max(1, 10 ** max(0, 6 - digits)))
        return Range(low, _micros(end))
    except (ValueError, OverflowError):  # the range ends after 9999-12-31: it runs to the end of time
        return Range(low, max(low, _micros(datetime.max.replace(tzinfo=UTC))) + 1)


def matches(prefix: str, value: Range, target: Range) -> bool:
    """Whether a resource's ``target`` range satisfies ``prefix`` with the search ``value`` range.

    https://hl7.org/fhir/R5/search.html#prefix: eq, the target lies within the value; ne, it does not;
    gt/lt, some of the target lies after/before the value; ge/le, the same or equal; sa/eb, the whole
    target starts after / ends before the value; ap, the ranges overlap once the value is widened by
    10% of its distance from now (at least a day).
    """
    if prefix == "eq":
        return value.low <= target.low and target.high <= value.high
    if prefix == "ne":
        return not (value.low <= target.low and target.high <= value.high)
    if prefix == "gt":
        return target.high > value.high
    if prefix == "lt":
        return target.low < value.low
    if prefix == "ge":
        return target.high > value.high or (value.low <= target.low and target.high <= value.high)
    if prefix == "le":
        return target.low < value.low or (value.low <= target.low and target.high <= value.high)
    if prefix == "sa":
        return target.low >= value.high
    if prefix == "eb":
        return target.high <= value.low
    if prefix == "ap":
        now = _micros(datetime.now(UTC))
        slack = max(86_400_000_000, abs(now - value.low) // 10)
        return Range(value.low - slack, value.high + slack).overlaps(target)
    raise ValueError(f"unknown prefix {prefix!r}")
