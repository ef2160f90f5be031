"""Time as a collaborator: every component takes a ``Clock`` so tests can drive it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time for records and monotonic time for intervals, plus sleeping."""

    def now(self) -> datetime:
        """The current UTC time, timezone-aware."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a fake clock advances instead."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep()``."""
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def utc_iso(moment: datetime) -> str:
    """Render ``moment`` as ISO 8601 UTC with a ``Z`` suffix (microseconds kept when set)."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")
