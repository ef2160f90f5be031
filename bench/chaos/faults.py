"""The seeded fault plan and its runner: primary outages, SIGKILLs, receiver outages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chaos.cluster import PrivatePostgres
from chaos.receivers import TriggerReceiver
from chaos.replicas import Replica

PRIMARY_OUTAGE = "primary_outage"
REPLICA_KILL = "replica_sigkill"
RECEIVER_OUTAGE = "receiver_outage"


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault: when (share of the load sent), what, for how long, on which replica."""

    at: float
    kind: str
    seconds: float
    replica: int = 0


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One fault as it happened (monotonic times)."""

    kind: str
    target: str
    started: float
    ended: float


def plan_faults(
    rng: random.Random,
    *,
    primary_outages: int,
    kills: int,
    receiver_outages: int,
    replicas: int,
    outage_seconds: tuple[float, float] = (3.0, 8.0),
    receiver_outage_seconds: tuple[float, float] = (5.0, 12.0),
) -> list[Fault]:
    """Faults spread over 10–90 % of the load, in a seeded order."""
    plan = [
        Fault(rng.uniform(0.1, 0.9), PRIMARY_OUTAGE, rng.uniform(*outage_seconds))
        for _ in range(primary_outages)
    ]
    plan += [
        Fault(rng.uniform(0.1, 0.9), REPLICA_KILL, rng.uniform(0.5, 3.0), rng.randrange(replicas))
        for _ in range(kills)
    ]
    plan += [
        Fault(rng.uniform(0.1, 0.9), RECEIVER_OUTAGE, rng.uniform(*receiver_outage_seconds))
        for _ in range(receiver_outages)
    ]
    return sorted(plan, key=lambda fault: fault.at)


class FaultRunner:
    """Starts each planned fault when the load reaches it; one fault per target at a time
    (``serial``: one fault at a time, so a small run's faults never overlap)."""

    def __init__(
        self,
        plan: Sequence[Fault],
        *,
        cluster: PrivatePostgres,
        replicas: Sequence[Replica],
        receiver: TriggerReceiver,
        serial: bool = False,
    ) -> None:
        self.plan = list(plan)
        self.serial = serial
        self.cluster = cluster
        self.replicas = list(replicas)
        self.receiver = receiver
        self.records: list[FaultRecord] = []
        self._locks: dict[str, asyncio.Lock] = {}

    async def run(self, progress: Callable[[], float]) -> None:
        """Wait for each fault's moment, start it; return once every fault has ended."""
        tasks = []
        for fault in self.plan:
            while progress() < fault.at:
                await asyncio.sleep(0.05)
            tasks.append(asyncio.create_task(self._inject(fault)))
        await asyncio.gather(*tasks)

    async def _inject(self, fault: Fault) -> None:
        target = f"replica r{fault.replica}" if fault.kind == REPLICA_KILL else fault.kind
        lock = self._locks.setdefault("all" if self.serial else target, asyncio.Lock())
        async with lock:
            started = time.monotonic()
            if fault.kind == PRIMARY_OUTAGE:
                await asyncio.to_thread(self.cluster.stop, "immediate")
                await asyncio.sleep(fault.seconds)
                await asyncio.to_thread(self.cluster.start)
            elif fault.kind == REPLICA_KILL:
                replica = self.replicas[fault.replica]
                await asyncio.to_thread(replica.kill)
                started = replica.kills[-1]
                await asyncio.sleep(fault.seconds)
                await asyncio.to_thread(replica.start)
            else:
                # The stretch counts from the first refusal: an outage no trigger meets
                # exercises nothing.
                refused = self.receiver.refused
                self.receiver.failing = True
                for _ in range(400):
                    if self.receiver.refused > refused:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(fault.seconds)
                self.receiver.failing = False
            self.records.append(FaultRecord(fault.kind, target, started, time.monotonic()))
