"""How the BigQuery store lays out its tables and turns records into rows and back.

Every table is appended to and folded at read time (see :mod:`phasegate.stores.bigquery`):
the schemas and clustering here, and the window each read keeps one row per partition
by (``QUALIFY ROW_NUMBER() OVER (...) = 1``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from phasegate.model import PhaseExecution, TimeoutReport
from phasegate.stores.gcp_records import (
    Doc,
    execution_doc,
    timeout_doc,
    to_execution,
    to_timeout,
    utc,
)

_KEY = "pipeline run_key phase attempt:INT64"
# Columns of each table, as "name[:TYPE]" (STRING unless named).
_COLUMNS = {
    "completions": f"{_KEY} processor status occurred_at:TIMESTAMP correlation_id metadata",
    "outbox": f"{_KEY} trigger_id event message claimed_at:TIMESTAMP delivered_at:TIMESTAMP "
    "attempts:INT64 last_error next_attempt_at:TIMESTAMP",
    "executions": f"{_KEY} started_at:TIMESTAMP triggered_at:TIMESTAMP "
    "duration_seconds:FLOAT64 processors reason trigger_id",
    "timeouts": f"{_KEY} started_at:TIMESTAMP reported_at:TIMESTAMP missing",
}


def _column(spec: str) -> tuple[str, str]:
    name, _, kind = spec.partition(":")
    return name, kind or "STRING"


SCHEMAS: dict[str, list[tuple[str, str]]] = {
    kind: [_column(c) for c in f"{spec} recorded_at:TIMESTAMP".split()]
    for kind, spec in _COLUMNS.items()
}
CLUSTERING = {
    "completions": ["pipeline", "run_key", "phase"],
    "outbox": ["pipeline", "run_key", "trigger_id"],
    "executions": ["pipeline", "run_key", "phase"],
    "timeouts": ["pipeline", "run_key", "phase"],
}
_IDENTITY = "phase, run_key, processor, attempt"
# What each read keeps of the appended rows: one per partition, first by the order.
CURRENT = (
    f"PARTITION BY {_IDENTITY} ORDER BY status = 'success' DESC, "
    "IF(status = 'success', occurred_at, NULL) ASC, occurred_at DESC, recorded_at ASC"
)
HISTORY = f"PARTITION BY {_IDENTITY}, status, occurred_at ORDER BY recorded_at ASC"
ENTRY = (
    "PARTITION BY trigger_id ORDER BY delivered_at IS NOT NULL DESC, delivered_at ASC, "
    "attempts DESC, recorded_at ASC"
)
FIRST = "PARTITION BY phase, run_key, attempt ORDER BY recorded_at ASC"


def jsonable(doc: Mapping[str, Any]) -> Doc:
    return {k: (utc(v).isoformat() if isinstance(v, datetime) else v) for k, v in doc.items()}


def row_id(table: str, row: Mapping[str, Any]) -> str:
    """The insert id: the row's content less when it was appended."""
    content = {k: v for k, v in row.items() if k != "recorded_at"}
    text = json.dumps([table, content], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def execution_row(execution: PhaseExecution) -> Doc:
    """An execution as an ``executions`` row (its processors as JSON text)."""
    doc = execution_doc(execution)
    return {**doc, "processors": json.dumps(doc["processors"])}


def row_execution(row: Mapping[str, Any]) -> PhaseExecution:
    """The execution an ``executions`` row holds."""
    return to_execution({**row, "processors": json.loads(row["processors"] or "[]")})


def timeout_row(report: TimeoutReport) -> Doc:
    """A timeout report as a ``timeouts`` row (its missing processors as JSON text)."""
    return {**timeout_doc(report), "missing": json.dumps(list(report.missing))}


def row_timeout(row: Mapping[str, Any]) -> TimeoutReport:
    """The timeout report a ``timeouts`` row holds."""
    return to_timeout({**row, "missing": json.loads(row["missing"] or "[]")})
