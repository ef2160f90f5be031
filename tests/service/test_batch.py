"""``POST /v1/completions:batch``: a result per item, bad items rejected by index and field."""

from __future__ import annotations

from fastapi.testclient import TestClient

from phasegate.service.app import create_app
from support import Harness

RUN = "2026-01-28"


def client_for(harness: Harness) -> TestClient:
    return TestClient(create_app(harness.runtime))


def test_a_batch_records_good_items_and_names_each_bad_one(harness: Harness) -> None:
    """Good items are recorded and answered; each bad one gets its index, field and code."""
    with client_for(harness) as client:
        answer = client.post(
            "/v1/completions:batch",
            json={
                "completions": [
                    {"phase": "extract", "run_key": RUN, "processor": "api"},
                    {"phase": "extract", "run_key": RUN, "processor": "nobody"},
                    {"phase": "extract", "run_key": RUN, "processor": "files", "colour": "red"},
                    {"phase": "extract", "run_key": RUN, "processor": "files"},
                    [1, 2],
                ]
            },
        )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["recorded"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["ok"] for r in results] == [True, False, False, True, False]
    assert [(r["error"]["field"], r["error"]["code"]) for r in results if not r["ok"]] == [
        ("processor", "unknown_processor"),
        ("colour", "unknown_field"),
        ("item", "wrong_type"),
    ]
    assert results[0]["trigger_id"] == results[3]["trigger_id"] is not None
    assert {c.processor for c in harness.tracker.completions(RUN)} == {"api", "files"}


def test_a_batch_over_the_limits_is_refused_whole(harness: Harness) -> None:
    """Over 1,000 items is 413, a body that is not {"completions": [...]} is 400; nothing
    is recorded."""
    item = {"phase": "extract", "run_key": RUN, "processor": "api"}
    with client_for(harness) as client:
        too_many = client.post("/v1/completions:batch", json={"completions": [item] * 1001})
        not_a_batch = client.post("/v1/completions:batch", json=[item])
        wrong_key = client.post("/v1/completions:batch", json={"items": [item]})
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "too_large"
    assert (not_a_batch.status_code, wrong_key.status_code) == (400, 400)
    assert not_a_batch.json()["error"]["field"] == "completions"
    assert harness.tracker.completions(RUN) == []


def test_a_batch_when_both_stores_are_down_is_503_and_acknowledges_nothing(
    harness: Harness,
) -> None:
    """With both stores down the batch is not acknowledged: 503, nothing recorded."""
    harness.primary_fault.fail()
    harness.backup_fault.fail()
    item = {"phase": "extract", "run_key": RUN, "processor": "api"}
    with client_for(harness) as client:
        answer = client.post("/v1/completions:batch", json={"completions": [item]})
    assert answer.status_code == 503
    harness.primary_fault.heal()
    harness.backup_fault.heal()
    assert harness.tracker.primary.completions(RUN) == []
    assert harness.tracker.backup.completions(RUN) == []


def test_a_batch_is_counted_per_outcome_in_the_metrics(harness: Harness) -> None:
    """Each recorded item counts under its phase and status, each rejected one as
    rejected: the batch adds up in ``phasegate_completions_total``."""
    reports = [
        {"phase": "extract", "run_key": RUN, "processor": "api"},
        {"phase": "extract", "run_key": RUN, "processor": "files", "status": "failed"},
        {"phase": "extract", "run_key": "2026-01-29", "processor": "api"},
        {"phase": "extract", "run_key": RUN, "processor": "nobody"},
        {"phase": "nope", "run_key": RUN, "processor": "api"},
        "not a report",
    ]
    with client_for(harness) as client:
        assert client.post("/v1/completions:batch", json={"completions": reports}).is_success
        again = client.post("/v1/completions:batch", json={"completions": reports[:1]})
        assert again.json()["recorded"] == 1
        text = client.get("/metrics").text
    counted = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("phasegate_completions_total{")
    }
    assert counted == {
        'phasegate_completions_total{outcome="recorded",phase="extract",status="success"}': 3.0,
        'phasegate_completions_total{outcome="recorded",phase="extract",status="failed"}': 1.0,
        'phasegate_completions_total{outcome="rejected",phase="",status=""}': 3.0,
    }
