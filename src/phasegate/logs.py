"""Logging set-up: plain text for people, JSON lines for log collectors; secrets masked."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from phasegate.redact import ScrubbingFilter

_EXTRAS = ("event", "run_key", "phase", "correlation_id", "trigger_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, severity, logger, message and context."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRAS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "WARNING", fmt: str = "text") -> None:
    """Log to stderr at ``level`` as ``text`` or ``json``, masking secrets."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubbingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
