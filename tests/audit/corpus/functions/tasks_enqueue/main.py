import datetime
import json
import os

import jwt
from dotenv import load_dotenv
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

load_dotenv()
client = tasks_v2.CloudTasksClient()


def enqueue(request):
    """Creates an HTTP task, signed with a short-lived token, to run in a minute."""
    parent = client.queue_path(os.environ["PROJECT"], os.environ["REGION"], os.environ["QUEUE"])
    token = jwt.encode({"sub": "enqueue"}, os.environ["TASK_SECRET"], algorithm="HS256")
    schedule = timestamp_pb2.Timestamp()
    schedule.FromDatetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1))
    task = {
        "http_request": {
            "http_method": tasks_v2.HttpMethod.POST,
            "url": os.environ["WORKER_URL"],
            "headers": {"Authorization": f"Bearer {token}"},
            "body": json.dumps(request.get_json()).encode(),
        },
        "schedule_time": schedule,
        "dispatch_deadline": duration_pb2.Duration(seconds=300),
    }
    return {"name": client.create_task(request={"parent": parent, "task": task}).name}
