"""Generate ``src/phasegate/audit/provides.json``: distribution -> modules and requirements.

For every distribution listed below, the entry is read from package metadata
(RECORD or top_level.txt, and Requires-Dist without extras) when the
distribution is installed where this script runs, and otherwise taken from the
curated entry, written from the same metadata of the distribution's current
wheel. Install what you can before regenerating, then review the diff:

    .venv/bin/pip install functions-framework google-cloud-translate ...
    .venv/bin/python scripts/gen_audit_provides.py          # rewrites the file
    .venv/bin/python scripts/gen_audit_provides.py --check  # exit 1 when it would change
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from phasegate.audit.names import installed_info, normalise

TARGET = Path(__file__).resolve().parents[1] / "src" / "phasegate" / "audit" / "provides.json"

_CORE = "google-api-core google-auth google-cloud-core proto-plus protobuf"
_GAPIC = "google-api-core google-auth proto-plus protobuf grpcio"


def _gcp(name: str, *versions: str, requires: str = _GAPIC) -> tuple[str, tuple[str, str]]:
    """A ``google-cloud-NAME`` client: ``google.cloud.NAME`` plus its versioned packages."""
    module = name.replace("-", "_")
    mods = [f"google.cloud.{module}"] + [f"google.cloud.{module}_{v}" for v in versions]
    return f"google-cloud-{name}", (" ".join(mods), requires)


# distribution -> ("module ...", "required distribution ..."); names as on PyPI.
CURATED: dict[str, tuple[str, str]] = dict(
    [
        (
            "google-cloud-firestore",
            (
                "google.cloud.firestore google.cloud.firestore_admin "
                "google.cloud.firestore_admin_v1 google.cloud.firestore_bundle "
                "google.cloud.firestore_v1",
                _CORE,
            ),
        ),
        (
            "google-cloud-bigquery",
            (
                "google.cloud.bigquery google.cloud.bigquery_v2",
                "google-api-core google-auth google-cloud-core google-resumable-media packaging "
                "python-dateutil requests",
            ),
        ),
        (
            "google-cloud-pubsub",
            (
                "google.cloud.pubsub google.cloud.pubsub_v1 google.pubsub google.pubsub_v1",
                "google-api-core google-auth grpc-google-iam-v1 grpcio grpcio-status "
                "opentelemetry-api opentelemetry-sdk proto-plus protobuf",
            ),
        ),
        (
            "google-cloud-storage",
            (
                "google.cloud._storage google.cloud._storage_v2 google.cloud.storage",
                "google-api-core google-auth google-cloud-core google-crc32c "
                "google-resumable-media requests",
            ),
        ),
        (
            "google-cloud-translate",
            (
                "google.cloud.translate google.cloud.translate_v2 google.cloud.translate_v3 "
                "google.cloud.translate_v3beta1",
                _CORE + " grpc-google-iam-v1 grpcio",
            ),
        ),
        _gcp("vision", "v1", "v1p1beta1", "v1p2beta1", "v1p3beta1", "v1p4beta1"),
        _gcp(
            "logging",
            "v2",
            requires=_CORE + " google-cloud-appengine-logging "
            "google-cloud-audit-log grpc-google-iam-v1 opentelemetry-api",
        ),
        (
            "google-cloud-secret-manager",
            (
                "google.cloud.secretmanager google.cloud.secretmanager_v1 "
                "google.cloud.secretmanager_v1beta1 google.cloud.secretmanager_v1beta2",
                _GAPIC + " grpc-google-iam-v1",
            ),
        ),
        _gcp("tasks", "v2", "v2beta2", "v2beta3", requires=_GAPIC + " grpc-google-iam-v1"),
        _gcp("datastore", "v1", requires=_CORE),
        _gcp("spanner", "v1", requires=_CORE + " grpc-google-iam-v1 sqlparse"),
        _gcp("kms", "v1", requires=_GAPIC + " grpc-google-iam-v1"),
        _gcp("monitoring", "v3"),
        _gcp(
            "error-reporting", requires="google-cloud-logging google-api-core proto-plus protobuf"
        ),
        _gcp("language", "v1", "v1beta2", "v2"),
        _gcp("speech", "v1", "v1p1beta1", "v2"),
        _gcp("texttospeech", "v1", "v1beta1"),
        _gcp("videointelligence", "v1", "v1beta2", "v1p1beta1", "v1p2beta1", "v1p3beta1"),
        _gcp("scheduler", "v1", "v1beta1"),
        _gcp("run", "v2"),
        _gcp("functions", "v1", "v2", "v2alpha", "v2beta"),
        _gcp("bigtable", "v2", "admin", "admin_v2", requires=_CORE + " grpc-google-iam-v1"),
        _gcp("dlp", "v2"),
        _gcp("dataproc", "v1"),
        _gcp("container", "v1", "v1beta1"),
        _gcp("compute", "v1"),
        _gcp("redis", "v1", "v1beta1"),
        _gcp("iot", "v1", requires=_GAPIC + " grpc-google-iam-v1"),
        _gcp("automl", "v1", "v1beta1"),
        _gcp("billing", "v1"),
        _gcp("documentai", "v1", "v1beta3"),
        (
            "google-cloud-workflows",
            (
                "google.cloud.workflows google.cloud.workflows_v1 google.cloud.workflows_v1beta "
                "google.cloud.workflows.executions google.cloud.workflows.executions_v1",
                _GAPIC,
            ),
        ),
        (
            "google-cloud-bigquery-storage",
            (
                "google.cloud.bigquery_storage google.cloud.bigquery_storage_v1 "
                "google.cloud.bigquery_storage_v1beta2",
                _GAPIC,
            ),
        ),
        (
            "google-cloud-resource-manager",
            (
                "google.cloud.resourcemanager google.cloud.resourcemanager_v3",
                _GAPIC + " grpc-google-iam-v1",
            ),
        ),
        (
            "google-cloud-aiplatform",
            (
                "google.cloud.aiplatform google.cloud.aiplatform_v1 "
                "google.cloud.aiplatform_v1beta1 vertexai",
                _CORE + " google-cloud-bigquery google-cloud-storage packaging pydantic shapely",
            ),
        ),
        (
            "google-cloud-dataflow-client",
            ("google.cloud.dataflow google.cloud.dataflow_v1beta3", _GAPIC),
        ),
        (
            "google-cloud-ndb",
            ("google.cloud.ndb", "google-cloud-datastore protobuf pymemcache redis"),
        ),
        (
            "google-cloud-core",
            (
                "google.cloud._helpers google.cloud._http google.cloud._testing "
                "google.cloud.client google.cloud.environment_vars google.cloud.exceptions "
                "google.cloud.obsolete "
                "google.cloud.operation google.cloud.version",
                "google-api-core google-auth",
            ),
        ),
        (
            "cloud-sql-python-connector",
            ("google.cloud.sql.connector", "aiohttp cryptography dnspython google-auth requests"),
        ),
        (
            "google-api-core",
            (
                "google.api_core",
                "google-auth googleapis-common-protos opentelemetry-api proto-plus protobuf "
                "requests",
            ),
        ),
        ("google-auth", ("google.auth google.oauth2", "cryptography pyasn1-modules")),
        ("google-auth-oauthlib", ("google_auth_oauthlib", "google-auth requests-oauthlib")),
        ("google-auth-httplib2", ("google_auth_httplib2", "google-auth httplib2")),
        (
            "google-api-python-client",
            (
                "apiclient googleapiclient",
                "google-api-core google-auth google-auth-httplib2 httplib2 uritemplate",
            ),
        ),
        (
            "googleapis-common-protos",
            (
                "google.api google.cloud.common_resources_pb2 "
                "google.cloud.extended_operations_pb2 google.cloud.location google.gapic "
                "google.logging google.longrunning google.rpc google.type",
                "protobuf",
            ),
        ),
        ("grpc-google-iam-v1", ("google.iam.v1", "googleapis-common-protos grpcio protobuf")),
        ("google-events", ("google.events", "proto-plus protobuf")),
        (
            "google-resumable-media",
            ("google._async_resumable_media google.resumable_media", "google-crc32c"),
        ),
        ("google-crc32c", ("google_crc32c", "")),
        ("protobuf", ("google._upb._message google.protobuf", "")),
        ("proto-plus", ("proto", "protobuf")),
        ("grpcio", ("grpc", "typing-extensions")),
        ("grpcio-status", ("grpc_status", "googleapis-common-protos grpcio protobuf")),
        (
            "functions-framework",
            (
                "functions_framework google.cloud.functions google.cloud.functions_v1 "
                "google.cloud.functions_v1beta2",
                "click cloudevents flask gunicorn starlette uvicorn uvicorn-worker watchdog "
                "werkzeug",
            ),
        ),
        (
            "flask",
            ("flask", "blinker click importlib-metadata itsdangerous jinja2 markupsafe werkzeug"),
        ),
        ("werkzeug", ("werkzeug", "markupsafe")),
        ("jinja2", ("jinja2", "markupsafe")),
        ("markupsafe", ("markupsafe", "")),
        ("itsdangerous", ("itsdangerous", "")),
        ("click", ("click", "")),
        ("cloudevents", ("cloudevents", "deprecation")),
        ("gunicorn", ("gunicorn", "")),
        ("slackclient", ("slack", "aiohttp")),
        ("slack-sdk", ("slack slack_sdk", "")),
        ("slack-bolt", ("slack_bolt", "slack-sdk")),
        ("pyyaml", ("_yaml yaml", "")),
        ("pillow", ("PIL", "")),
        ("beautifulsoup4", ("bs4", "soupsieve typing-extensions")),
        ("python-dateutil", ("dateutil", "six")),
        ("scikit-learn", ("sklearn", "joblib numpy scipy threadpoolctl")),
        ("scikit-image", ("skimage", "imageio lazy-loader networkx numpy packaging pillow scipy")),
        ("opencv-python", ("cv2", "numpy")),
        ("opencv-python-headless", ("cv2", "numpy")),
        ("opencv-contrib-python", ("cv2", "numpy")),
        ("python-dotenv", ("dotenv", "")),
        ("psycopg2-binary", ("psycopg2", "")),
        ("psycopg2", ("psycopg2", "")),
        ("psycopg", ("psycopg", "typing-extensions")),
        ("psycopg-binary", ("psycopg_binary", "")),
        ("pyjwt", ("jwt", "")),
        ("attrs", ("attr attrs", "")),
        ("mysqlclient", ("MySQLdb", "")),
        ("pymysql", ("pymysql", "")),
        ("pycryptodome", ("Crypto", "")),
        ("pycryptodomex", ("Cryptodome", "")),
        ("pyopenssl", ("OpenSSL", "cryptography")),
        ("python-magic", ("magic", "")),
        ("python-jose", ("jose", "ecdsa pyasn1 rsa")),
        ("python-slugify", ("slugify", "text-unidecode")),
        ("python-multipart", ("multipart python_multipart", "")),
        ("python-json-logger", ("pythonjsonlogger", "")),
        ("python-http-client", ("python_http_client", "")),
        ("python-telegram-bot", ("telegram", "httpx")),
        ("msgpack-python", ("msgpack", "")),
        ("typing-extensions", ("typing_extensions", "")),
        ("dnspython", ("dns", "")),
        ("pyserial", ("serial", "")),
        ("pyzmq", ("zmq", "")),
        ("gitpython", ("git", "gitdb")),
        ("pygithub", ("github", "pyjwt pynacl requests typing-extensions urllib3")),
        ("wand", ("wand", "")),
        ("websocket-client", ("websocket", "")),
        ("discord-py", ("discord", "aiohttp")),
        ("pymongo", ("bson gridfs pymongo", "dnspython")),
        ("ruamel-yaml", ("ruamel.yaml", "")),
        ("pyasn1-modules", ("pyasn1_modules", "pyasn1")),
        ("charset-normalizer", ("charset_normalizer", "")),
        ("setuptools", ("_distutils_hack pkg_resources setuptools", "")),
        ("sendgrid", ("sendgrid", "ecdsa python-http-client werkzeug")),
        ("twilio", ("twilio", "aiohttp aiohttp-retry pyjwt requests")),
        ("requests", ("requests", "certifi charset-normalizer idna urllib3")),
        ("requests-oauthlib", ("requests_oauthlib", "oauthlib requests")),
        ("pandas", ("pandas", "numpy python-dateutil pytz tzdata")),
        (
            "pandas-gbq",
            (
                "pandas_gbq",
                "db-dtypes google-api-core google-auth google-auth-oauthlib "
                "google-cloud-bigquery numpy pandas pyarrow pydata-google-auth setuptools",
            ),
        ),
        ("db-dtypes", ("db_dtypes", "numpy packaging pandas pyarrow")),
        (
            "pydata-google-auth",
            ("pydata_google_auth", "google-auth google-auth-oauthlib setuptools"),
        ),
        (
            "matplotlib",
            (
                "matplotlib mpl_toolkits pylab",
                "contourpy cycler fonttools kiwisolver "
                "numpy packaging pillow pyparsing python-dateutil",
            ),
        ),
        (
            "pydantic",
            ("pydantic", "annotated-types pydantic-core typing-extensions typing-inspection"),
        ),
        (
            "aiohttp",
            ("aiohttp", "aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl"),
        ),
        ("boto3", ("boto3", "botocore jmespath s3transfer")),
        ("pytest", ("_pytest py pytest", "iniconfig packaging pluggy pygments")),
        ("pytest-mock", ("pytest_mock", "pytest")),
        ("pytest-asyncio", ("pytest_asyncio", "pytest")),
        ("mock", ("mock", "")),
        ("responses", ("responses", "pyyaml requests urllib3")),
        ("freezegun", ("freezegun", "python-dateutil")),
        ("backoff", ("backoff", "")),
        ("tenacity", ("tenacity", "")),
        ("httpx", ("httpx", "anyio certifi httpcore idna")),
        ("numpy", ("numpy", "")),
        ("nats-py", ("nats", "")),
        ("pyarrow", ("pyarrow", "")),
        ("lxml", ("lxml", "")),
        ("markdown", ("markdown", "")),
        ("faker", ("faker", "tzdata")),
    ]
)


def build() -> dict[str, object]:
    """The document to write: every distribution's modules, requirements and source."""
    entries: dict[str, dict[str, object]] = {}
    for name, (modules, requires) in sorted(CURATED.items()):
        key = normalise(name)
        found = installed_info(key)
        if found is not None:
            entries[key] = {
                "modules": list(found.modules),
                "requires": list(found.requires),
                "source": "metadata",
            }
        else:
            entries[key] = {
                "modules": sorted(modules.split()),
                "requires": sorted({normalise(r) for r in requires.split()}),
                "source": "curated",
            }
    return {
        "generated_by": "scripts/gen_audit_provides.py",
        "distributions": dict(sorted(entries.items())),
    }


def render() -> str:
    """The file's text, stable for diffs."""
    return json.dumps(build(), indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the file, or with ``--check`` say whether it is current (exit 1 when not)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text("utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run scripts/gen_audit_provides.py")  # noqa: T201
            return 1
        return 0
    args.output.write_text(text, "utf-8")
    count = text.count('"source"')
    print(f"wrote {args.output} ({count} distributions)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
