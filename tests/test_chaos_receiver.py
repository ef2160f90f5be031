"""The chaos run's trigger receiver and how its redeliveries are classified: the lost
acknowledgements it plays are counted (the 10th, 30th, 50th… refusal), not drawn, so that
the small run in ``make test`` measures the dispatchers rather than a random draw."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from chaos.receivers import TriggerReceiver
from chaos.verify import CRASHED_REPLICA, FAILED_DELIVERY, UNEXPLAINED, classify_redeliveries


@pytest.fixture
def receiver() -> Iterator[TriggerReceiver]:
    receiver = TriggerReceiver()
    yield receiver
    receiver.close()


def post(receiver: TriggerReceiver, trigger_id: str, replica: str = "r0") -> int:
    body = json.dumps(
        {"trigger_id": trigger_id, "phase": "load", "run_key": "2026-01-28", "attempt": 1}
    ).encode()
    request = urllib.request.Request(f"{receiver.url}/deliver/{replica}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_the_receiver_processes_the_10th_and_30th_refusal_and_no_other(
    receiver: TriggerReceiver,
) -> None:
    receiver.failing = True
    statuses = [post(receiver, f"t{n}") for n in range(1, 46)]
    assert set(statuses) == {503}
    assert receiver.refused == 45
    processed = [d.trigger_id for d in receiver.snapshot() if d.processed]
    assert processed == ["t10", "t30"]


def test_a_receiver_that_is_up_processes_every_post_and_counts_no_refusal(
    receiver: TriggerReceiver,
) -> None:
    assert [post(receiver, f"t{n}") for n in range(3)] == [200, 200, 200]
    assert receiver.refused == 0
    assert all(d.processed for d in receiver.snapshot())


def test_a_lost_acknowledgement_makes_one_failed_delivery_redelivery(
    receiver: TriggerReceiver,
) -> None:
    receiver.failing = True
    for n in range(1, 10):
        post(receiver, f"refused{n}")  # refusals 1-9: not processed
    post(receiver, "lost")  # refusal 10: processed, answered 503
    receiver.failing = False
    post(receiver, "lost")  # its retry: a real duplicate, after a failed delivery
    post(receiver, "refused3")  # a retry of a refusal it never processed: not a redelivery

    found = classify_redeliveries(receiver.snapshot(), kills={}, faults=[])

    assert found.by_cause == {CRASHED_REPLICA: 0, FAILED_DELIVERY: 1, UNEXPLAINED: 0}
    assert found.retries_after_refusal == 1


def test_a_lost_acknowledgement_every_n_refusals_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lost_ack_every must be at least 1, got 0"):
        TriggerReceiver(lost_ack_every=0)
