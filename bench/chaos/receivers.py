"""Loopback receivers: the trigger receiver (failing for stretches) and a Slack webhook."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SEVERITY_BY_COLOUR = {
    "#D32F2F": "critical",
    "#F2A900": "warning",
    "#439FE0": "info",
    "#2EB67D": "resolved",
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST of a trigger: who sent it, what it was, what the receiver did with it."""

    at: float
    replica: str
    trigger_id: str
    phase: str
    run_key: str
    attempt: int
    triggered_at: str
    status: int
    processed: bool


@dataclass(frozen=True, slots=True)
class SlackAlert:
    """One Block Kit message, read back into the fields the chaos report counts."""

    at: float
    sender: str
    severity: str
    component: str
    error_type: str
    text: str

    @property
    def kind(self) -> str:
        """``component/error type`` — the class the report counts alerts by."""
        return f"{self.component}/{self.error_type}"


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a SIGKILLed replica leaves a keep-alive connection behind."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


class _Server:
    """A threading HTTP server on a free loopback port, in a daemon thread."""

    def __init__(self, handle: Any) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes: with Nagle's algorithm on,
            # the body waited for the client's delayed ACK, 40 ms per delivery.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = handle(self.path, dict(self.headers.items()), body)
                payload = b"ok" if status < 300 else b"unavailable"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class TriggerReceiver:
    """Records every trigger POST; while ``failing`` it answers 503.

    One in ``lost_ack_every`` of the POSTs it answers 503 (the 10th, 30th, 50th … with
    the default 20) it has processed all the same: a receiver whose answer was lost, so
    that trigger's next delivery is a real duplicate caused by a failed delivery. The
    count is fixed by the number of refusals, not drawn at random, so that a small run's
    redelivery share measures the dispatchers rather than the draw.
    """

    def __init__(self, lost_ack_every: int = 20) -> None:
        if lost_ack_every < 1:
            raise ValueError(f"lost_ack_every must be at least 1, got {lost_ack_every}")
        self.deliveries: list[Delivery] = []
        self.failing = False
        self.refused = 0
        self.lost_ack_every = lost_ack_every
        self._lock = threading.Lock()
        self._server = _Server(self._handle)

    @property
    def url(self) -> str:
        """The base URL; each replica posts to ``/deliver/<replica>``."""
        return self._server.url

    def _handle(self, path: str, _headers: dict[str, str], body: bytes) -> int:
        message = json.loads(body)
        replica = path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            if self.failing:
                self.refused += 1
                every = self.lost_ack_every
                status, processed = 503, self.refused % every == (every // 2) % every
            else:
                status, processed = 200, True
            self.deliveries.append(
                Delivery(
                    at=time.monotonic(),
                    replica=replica,
                    trigger_id=str(message["trigger_id"]),
                    phase=str(message["phase"]),
                    run_key=str(message["run_key"]),
                    attempt=int(message.get("attempt", 1)),
                    triggered_at=str(message.get("triggered_at")),
                    status=status,
                    processed=processed,
                )
            )
        return status

    def snapshot(self) -> list[Delivery]:
        """Every delivery so far, in arrival order."""
        with self._lock:
            return list(self.deliveries)

    def processed_phase_runs(self) -> set[tuple[str, str]]:
        """The ``(phase, run_key)`` pairs the receiver has processed at least once."""
        return {(d.phase, d.run_key) for d in self.snapshot() if d.processed}

    def close(self) -> None:
        """Stop listening."""
        self._server.close()


def parse_slack(sender: str, payload: dict[str, Any]) -> SlackAlert:
    """Read a phasegate Block Kit message back: severity (colour), component, error type."""
    attachment = (payload.get("attachments") or [{}])[0]
    fields: dict[str, str] = {}
    for block in attachment.get("blocks", []):
        for item in block.get("fields", []) or []:
            name, _, value = str(item.get("text", "")).partition(":*\n")
            fields[name.lstrip("*")] = value
    return SlackAlert(
        at=time.monotonic(),
        sender=sender,
        severity=SEVERITY_BY_COLOUR.get(str(attachment.get("color")), "unknown"),
        component=fields.get("Component", "?"),
        error_type=fields.get("Error type", "?"),
        text=str(payload.get("text", "")),
    )


class SlackReceiver:
    """A Slack-compatible incoming webhook that keeps every message it is sent."""

    def __init__(self) -> None:
        self.alerts: list[SlackAlert] = []
        self._lock = threading.Lock()
        self._server = _Server(self._handle)

    @property
    def url(self) -> str:
        """The base URL; each sender posts to ``/slack/<sender>``."""
        return self._server.url

    def _handle(self, path: str, _headers: dict[str, str], body: bytes) -> int:
        alert = parse_slack(path.rstrip("/").rsplit("/", 1)[-1], json.loads(body))
        with self._lock:
            self.alerts.append(alert)
        return 200

    def snapshot(self) -> list[SlackAlert]:
        """Every alert so far."""
        with self._lock:
            return list(self.alerts)

    def counts(self) -> dict[str, dict[str, int]]:
        """Alerts per ``component/error type``, per severity."""
        table: dict[str, Counter[str]] = {}
        for alert in self.snapshot():
            table.setdefault(alert.kind, Counter())[alert.severity] += 1
        return {kind: dict(sorted(c.items())) for kind, c in sorted(table.items())}

    def close(self) -> None:
        """Stop listening."""
        self._server.close()
