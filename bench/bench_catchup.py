"""How long the replicator takes to catch a store up after a long outage: run keys that
the primary missed (ten completions and a claimed trigger each) copied from a SQLite
backup, into a SQLite primary or, with ``--postgres``, a throwaway schema of the
PostgreSQL on 127.0.0.1:5432 (``PHASEGATE_TEST_PG_URL`` to use another).

    .venv/bin/python bench/bench_catchup.py [--run-keys 2000] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from phasegate.model import Completion, Status, Trigger, TriggerReason, trigger_id_for
from phasegate.replicator import Replicator
from phasegate.resilience.breaker import CircuitBreaker
from phasegate.resilience.retry import RetryPolicy
from phasegate.stores.guarded import Counters, GuardedStore, StoreRole
from phasegate.stores.sql import SqlStore

PIPELINE = "catchup"
AT = datetime(2026, 1, 28, 6, tzinfo=UTC)
PG_URL = os.environ.get("PHASEGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def fill(store: SqlStore, keys: list[str]) -> None:
    """Ten completions and a claimed trigger for each run key."""
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        store.record_completions(
            [
                Completion("load", key, f"p{i}", Status.SUCCESS, occurred_at=AT)
                for key in chunk
                for i in range(10)
            ]
        )
        store.claim_triggers(
            [
                Trigger(
                    trigger_id=trigger_id_for(PIPELINE, "load", key, 1),
                    pipeline=PIPELINE,
                    phase="load",
                    next_phase="report",
                    run_key=key,
                    reason=TriggerReason.COMPLETE,
                    triggered_at=AT,
                    processors=tuple(f"p{i}" for i in range(10)),
                )
                for key in chunk
            ]
        )


def catch_up(primary_url: str, backup_url: str, run_keys: int) -> float:
    """Seconds for one forced catch-up pass over ``run_keys`` the primary missed."""
    primary = SqlStore(primary_url, pipeline=PIPELINE, name="primary")
    backup = SqlStore(backup_url, pipeline=PIPELINE, name="backup")
    try:
        for store in (primary, backup):
            store.ensure_schema()
        keys = [f"2026-{index:05d}" for index in range(run_keys)]
        fill(backup, keys)
        counters = Counters()

        def guarded(store: SqlStore, role: StoreRole) -> GuardedStore:
            breaker = CircuitBreaker(str(role))
            return GuardedStore(
                store, role, policy=RetryPolicy(), breaker=breaker, counters=counters
            )

        replicator = Replicator(
            guarded(primary, StoreRole.PRIMARY),
            guarded(backup, StoreRole.BACKUP),
            counters=counters,
        )
        replicator.note_missed(StoreRole.PRIMARY, keys)
        started = time.perf_counter()
        left = replicator.run_once(force=True)[StoreRole.PRIMARY]
        elapsed = time.perf_counter() - started
        if left or len(primary.list_runs(limit=run_keys + 1)) != run_keys:
            raise RuntimeError(f"the catch-up left {len(left)} run keys behind")
        return elapsed
    finally:
        primary.close()
        backup.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-keys", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true", help="the primary on PostgreSQL")
    args = parser.parse_args(argv)
    if args.run_keys < 1:
        parser.error(f"--run-keys must be 1 or more, not {args.run_keys}")
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        primary = f"sqlite:///{directory}/primary.db"
        schema = f"catchup_{uuid.uuid4().hex[:12]}"
        if args.postgres:
            engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
            with engine.begin() as connection:
                connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
            primary = f"{PG_URL}?schema={schema}"
        try:
            seconds = catch_up(primary, f"sqlite:///{directory}/backup.db", args.run_keys)
        finally:
            if args.postgres:
                with engine.begin() as connection:
                    connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    target = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"caught up {args.run_keys} run keys from SQLite into {target} in {seconds:.2f} s "
        f"({1000 * seconds / args.run_keys:.2f} ms per run key)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
