"""``log:`` — one JSON line per trigger on stdout, or appended to a file with ``log:/path``."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path
from typing import TextIO

from phasegate.errors import TransientDeliveryError
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
        line = trigger.to_json() + "\n"
        with self._lock:
            if self.path is None:
                stream = self._stream or sys.stdout
                stream.write(line)
                stream.flush()
                return
            try:
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line)
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
