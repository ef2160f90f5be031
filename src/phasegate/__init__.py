"""phasegate: move multi-phase data pipelines from one phase to the next exactly once."""

from phasegate.clock import SYSTEM_CLOCK, Clock, SystemClock
from phasegate.config import (
    Phase,
    Pipeline,
    Secret,
    TimeoutPolicy,
    find_config_path,
    load_pipeline,
    loads_pipeline,
)
from phasegate.dispatch import Dispatcher, DispatchReport
from phasegate.errors import (
    BothStoresFailed,
    CircuitOpenError,
    ConfigError,
    DeliveryError,
    PhasegateError,
    StoreError,
    StoreUnavailable,
    TransientDeliveryError,
    TransientStoreError,
    ValidationError,
)
from phasegate.events import Event, EventBus, EventKind, Severity
from phasegate.model import (
    Completion,
    OutboxEntry,
    PhaseExecution,
    PhaseState,
    RecordSet,
    Status,
    TimeoutReport,
    Trigger,
    TriggerReason,
    trigger_id_for,
)
from phasegate.orchestrator import CompletionResult, Orchestrator, PhaseStatus, TriggerResult
from phasegate.reconcile import ReconcileReport, reconcile
from phasegate.resilience import (
    BACKUP_WRITE_POLICY,
    PRIMARY_WRITE_POLICY,
    BreakerState,
    CircuitBreaker,
    Jitter,
    RetryPolicy,
    acall_with_retry,
    call_with_retry,
    retry,
)
from phasegate.runtime import Runtime, open_runtime
from phasegate.stores import CompletionStore, open_store
from phasegate.timeouts import check_timeouts
from phasegate.tracker import ClaimOutcome, CompletionTracker, DualWriteResult, StoreRole

__version__ = "0.1.0"

__all__ = [
    "BACKUP_WRITE_POLICY",
    "PRIMARY_WRITE_POLICY",
    "SYSTEM_CLOCK",
    "BothStoresFailed",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClaimOutcome",
    "Clock",
    "Completion",
    "CompletionResult",
    "CompletionStore",
    "CompletionTracker",
    "ConfigError",
    "DeliveryError",
    "DispatchReport",
    "Dispatcher",
    "DualWriteResult",
    "Event",
    "EventBus",
    "EventKind",
    "Jitter",
    "Orchestrator",
    "OutboxEntry",
    "Phase",
    "PhaseExecution",
    "PhaseState",
    "PhaseStatus",
    "PhasegateError",
    "Pipeline",
    "ReconcileReport",
    "RecordSet",
    "RetryPolicy",
    "Runtime",
    "Secret",
    "Severity",
    "Status",
    "StoreError",
    "StoreRole",
    "StoreUnavailable",
    "SystemClock",
    "TimeoutPolicy",
    "TimeoutReport",
    "TransientDeliveryError",
    "TransientStoreError",
    "Trigger",
    "TriggerReason",
    "TriggerResult",
    "ValidationError",
    "__version__",
    "acall_with_retry",
    "call_with_retry",
    "check_timeouts",
    "find_config_path",
    "load_pipeline",
    "loads_pipeline",
    "open_runtime",
    "open_store",
    "reconcile",
    "retry",
    "trigger_id_for",
]
