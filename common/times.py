"""The one time zone of the sources and the one way govshare stamps what it records."""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

SOURCE_ZONE_NAME = "Asia/Shanghai"
# Source timestamps (updated_at, dates) are local time without a zone.
SOURCE_ZONE = ZoneInfo(SOURCE_ZONE_NAME)


def today() -> date:
    """Today at the sources: what "not in the future" and "expired" are judged against."""
    return datetime.now(SOURCE_ZONE).date()


def utc_now() -> str:
    """Now in UTC, to the second, ISO 8601: the time stamp of every record govshare writes."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
