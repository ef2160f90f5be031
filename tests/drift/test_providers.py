"""The gcloud providers: the real gcloud CLI against a local stand-in for the Cloud Functions v2
API, and recorded ``describe`` JSON through a stand-in ``gcloud`` for Cloud Run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from phasegate.drift.providers import CloudFunctionsProvider, CloudRunProvider, parse_time
from support import RecordingServer, unavailable

FUNCTION = {
    "name": "projects/my-project/locations/us-west2/functions/phase2-to-phase3",
    "environment": "GEN_2",
    "state": "ACTIVE",
    "updateTime": "2026-01-27T18:04:05.123456789Z",
    "labels": {"commit-sha": "0a1b2c3d4e5f", "deployment-tool": "cli-gcloud"},
    "buildConfig": {"runtime": "python311", "entryPoint": "main"},
    "serviceConfig": {
        "service": "projects/my-project/locations/us-west2/services/phase2-to-phase3"
    },
}


@pytest.mark.slow
def test_gcloud_functions_describe_through_the_real_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcloud asks GET /v2/projects/P/locations/R/functions/NAME; we read updateTime and the SHA label."""
    if shutil.which("gcloud") is None:
        unavailable("the Google Cloud CLI is not installed; the stand-in test covers the parsing")
    not_found = json.dumps(
        {
            "error": {
                "code": 404,
                "message": "Function missing does not exist",
                "status": "NOT_FOUND",
            }
        }
    ).encode()
    with RecordingServer(
        (200, {"Content-Type": "application/json"}, json.dumps(FUNCTION).encode())
    ) as server:
        server.responses = [(404, {"Content-Type": "application/json"}, not_found)]
        token = tmp_path / "token"
        token.write_text("test-access-token")
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud-config"))
        monkeypatch.setenv("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        monkeypatch.setenv("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", str(token))
        monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDFUNCTIONS", server.url + "/")
        provider = CloudFunctionsProvider(
            project="my-project",
            region="us-west2",
            sha_label="commit-sha",
            concurrency=1,
            timeout=60,
        )
        deployments = provider.describe(["missing", "phase2-to-phase3"])
    paths = sorted(r.path.split("?")[0] for r in server.requests)
    assert paths == [
        "/v2/projects/my-project/locations/us-west2/functions/missing",
        "/v2/projects/my-project/locations/us-west2/functions/phase2-to-phase3",
    ]
    assert all(r.headers["authorization"] == "Bearer test-access-token" for r in server.requests)
    found = deployments["phase2-to-phase3"]
    assert found.deployed_at == datetime(2026, 1, 27, 18, 4, 5, 123456, tzinfo=UTC)
    assert found.commit == "0a1b2c3d4e5f"
    assert found.error is None
    missing = deployments["missing"]
    assert missing.error is not None
    assert "missing" in missing.error or "NOT_FOUND" in missing.error or "404" in missing.error


def stand_in_gcloud(tmp_path: Path, answers: dict[str, object]) -> Path:
    """A fake ``gcloud`` that prints recorded describe JSON, or fails like gcloud does."""
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps(answers))
    script = tmp_path / "gcloud"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"answers = json.load(open({str(recorded)!r}))\n"
        "name = sys.argv[sys.argv.index('describe') + 1]\n"
        "open("
        + repr(str(tmp_path / "calls.log"))
        + ", 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if name not in answers:\n"
        "    sys.stderr.write(f'ERROR: (gcloud.run.services.describe) Cannot find service [{name}]\\n')\n"
        "    sys.exit(1)\n"
        "print(json.dumps(answers[name]))\n"
    )
    script.chmod(0o755)
    return script


RUN_SERVICE = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {
        "name": "phasegate-api",
        "namespace": "123456",
        "labels": {"cloud.googleapis.com/location": "us-west2"},
        "annotations": {"run.googleapis.com/ingress": "all"},
        "creationTimestamp": "2025-12-01T09:00:00.000000Z",
    },
    "spec": {
        "template": {
            "metadata": {
                "name": "phasegate-api-00042-xyz",
                "annotations": {
                    "commit-sha": "feedface1234",
                    "autoscaling.knative.dev/maxScale": "10",
                },
            }
        }
    },
    "status": {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "lastTransitionTime": "2026-01-26T07:30:00.654321Z",
            },
            {
                "type": "ConfigurationsReady",
                "status": "True",
                "lastTransitionTime": "2026-01-26T07:29:50Z",
            },
        ],
        "latestReadyRevisionName": "phasegate-api-00042-xyz",
    },
}


def test_cloud_run_describe_through_a_stand_in_gcloud(tmp_path: Path) -> None:
    """The Ready condition gives the time, the template annotation the SHA; a missing service is unknown."""
    gcloud = stand_in_gcloud(tmp_path, {"phasegate-api": RUN_SERVICE})
    provider = CloudRunProvider(
        project="my-project", region="us-west2", sha_label="commit-sha", gcloud=str(gcloud)
    )
    deployments = provider.describe(["phasegate-api", "gone"])
    assert deployments["phasegate-api"].deployed_at == datetime(
        2026, 1, 26, 7, 30, 0, 654321, tzinfo=UTC
    )
    assert deployments["phasegate-api"].commit == "feedface1234"
    assert "Cannot find service [gone]" in (deployments["gone"].error or "")
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert (
        "run services describe phasegate-api --format=json --region=us-west2 --project=my-project"
        in calls
    )


def test_gcloud_functions_parsing_through_a_stand_in(tmp_path: Path) -> None:
    """The same parsing with a stand-in gcloud, for machines without the Cloud CLI."""
    gcloud = stand_in_gcloud(tmp_path, {"phase2-to-phase3": FUNCTION})
    provider = CloudFunctionsProvider(
        project="p", region="r", sha_label="commit-sha", gcloud=str(gcloud)
    )
    found = provider.describe(["phase2-to-phase3"])["phase2-to-phase3"]
    assert (found.commit, found.deployed_at) == ("0a1b2c3d4e5f", parse_time(FUNCTION["updateTime"]))
    assert "--gen2" in (tmp_path / "calls.log").read_text()
    missing = CloudFunctionsProvider(
        project="p", region="r", sha_label="x", gcloud=str(tmp_path / "nope")
    )
    assert "not found; install the Google Cloud CLI" in (missing.describe(["a"])["a"].error or "")
