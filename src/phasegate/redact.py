"""Keep secrets out of anything printed: logs, alerts, health output, error messages.

Each :class:`~phasegate.runtime.Runtime` owns its :class:`Scrubber` (the secrets of
its pipeline file) and applies it to phasegate's loggers while it is open, so
secrets are masked when phasegate is embedded as a library too, not only when the
CLI or the service set up logging. :data:`SCRUBBER` is the safe default for code
that runs before any runtime exists: it masks secret-shaped strings only.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
_PATTERNS = [
    # Slack incoming webhooks: the path is the secret.
    (
        re.compile(r"(https?://hooks\.slack(?:-gov)?\.com/services/)[A-Za-z0-9_/\-]+"),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]+"), MASK),
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), MASK),
    # user:password@ in any URL.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\g<1>{MASK}@"),
    (re.compile(r"(?i)\b(bearer|token)(\s+|=)[A-Za-z0-9._~+/\-]{8,}=*"), rf"\g<1>\g<2>{MASK}"),
]


def redact_url(url: str, *, hide_path: bool = False) -> str:
    """``url`` without user info and query string (where tokens usually hide).

    ``hide_path`` masks the path too, for URLs whose path is the secret (webhooks).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if hide_path or "hooks.slack" in host:
        return urlunsplit((parts.scheme, host, "/" + MASK, "", ""))
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Scrubber:
    """Replaces known secret values and secret-shaped strings with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._filter: ScrubbingFilter | None = None
        self._loggers: list[logging.Logger] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Treat each of ``secrets`` (at least 4 characters) as secret from now on."""
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if s and len(s) >= 4}

    def scrub(self, text: str) -> str:
        """``text`` with every secret masked."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def apply_to_logs(self, prefix: str = "phasegate") -> None:
        """Mask this scrubber's secrets in every record of the ``prefix`` loggers.

        A logger-level filter sees the records its own logger creates, so it goes on
        ``prefix`` and each of its descendants that exist now (phasegate's modules are
        imported by then); :meth:`remove_from_logs` takes it off again.
        """
        with self._lock:
            if self._filter is None:
                self._filter = ScrubbingFilter(self)
            names = [
                name
                for name, logger in logging.root.manager.loggerDict.items()
                if isinstance(logger, logging.Logger) and name.startswith(prefix + ".")
            ]
            for name in [prefix, *names]:
                logger = logging.getLogger(name)
                if self._filter not in logger.filters:
                    logger.addFilter(self._filter)
                    self._loggers.append(logger)

    def remove_from_logs(self) -> None:
        """Undo :meth:`apply_to_logs`."""
        with self._lock:
            if self._filter is not None:
                for logger in self._loggers:
                    logger.removeFilter(self._filter)
            self._loggers.clear()


SCRUBBER = Scrubber()
"""Secret-shaped strings only; for code that logs before a runtime (and its secrets) exists.
Add secrets to a runtime's own scrubber, never to this one."""


class ScrubbingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's final message."""

    def __init__(self, scrubber: Scrubber | None = None) -> None:
        super().__init__()
        self._scrubber = scrubber or SCRUBBER

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask ``record``'s message and traceback in place; never drops a record."""
        message = record.getMessage()
        cleaned = self._scrubber.scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._scrubber.scrub(
                logging.Formatter().formatException(record.exc_info)
            )
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
