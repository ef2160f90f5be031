"""``log:`` — one JSON line per trigger on stdout, or appended to a file with ``log:/path``.

Several triggers handed over together (a dispatcher pass) are appended with one write,
one flush and one sync: all of them are delivered, or each gets the same error."""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from phasegate.errors import DeliveryError, TransientDeliveryError
from phasegate.model import Trigger


class LogTransport:
    """Writes each trigger message as a JSON line; a file is flushed and fsynced per line
    (a device or a pipe, such as ``log:/dev/null``, is written without the sync)."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, stream: TextIO | None = None
    ) -> None:
        self.path = Path(path) if path else None
        self._stream = stream
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def deliver(self, trigger: Trigger) -> None:
        """Append the trigger's JSON line."""
        self._append(trigger.to_json() + "\n")

    def deliver_many(self, triggers: Sequence[Trigger]) -> list[DeliveryError | None]:
        """Append every trigger's line at once (one sync for all of them); an error is
        each trigger's outcome (the dispatcher then retries them one by one). The
        dispatcher calls this, not :meth:`deliver`, for a pass of several triggers: a
        subclass that overrides one overrides both."""
        try:
            self._append("".join(trigger.to_json() + "\n" for trigger in triggers))
        except TransientDeliveryError as exc:
            return [exc] * len(triggers)
        return [None] * len(triggers)

    def _append(self, lines: str) -> None:
        with self._lock:
            if self.path is None:
                stream = self._stream or sys.stdout
                stream.write(lines)
                stream.flush()
                return
            try:
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(lines)
                    file.flush()
                    # Only a regular file can be synced: /dev/null or a FIFO answer EINVAL.
                    if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                        os.fsync(file.fileno())
            except OSError as exc:
                raise TransientDeliveryError(
                    f"cannot append to {self.path}: {exc.strerror}"
                ) from exc

    def ping(self) -> None:
        """The file's folder must be writable."""
        if self.path is not None and not os.access(self.path.parent, os.W_OK):
            raise TransientDeliveryError(f"{self.path.parent} is not writable")

    def describe(self) -> str:
        """``log:`` or ``log:/path``."""
        return f"log:{self.path}" if self.path else "log:"

    def close(self) -> None:
        """Nothing to release."""
