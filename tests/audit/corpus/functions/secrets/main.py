import os

import functions_framework
import google.auth
from google.cloud import secretmanager
from google.protobuf import timestamp_pb2

client = secretmanager.SecretManagerServiceClient()
_, PROJECT = google.auth.default()


@functions_framework.http
def rotate(request):
    """Adds a new version of the named secret and reports when."""
    name = client.secret_path(PROJECT, os.environ["SECRET_ID"])
    version = client.add_secret_version(
        request={"parent": name, "payload": {"data": request.get_data()}}
    )
    created = timestamp_pb2.Timestamp()
    created.CopyFrom(version.create_time)
    return {"version": version.name, "created": created.ToJsonString()}
