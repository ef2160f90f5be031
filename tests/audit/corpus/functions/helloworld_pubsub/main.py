import base64

import functions_framework
from cloudevents.http import CloudEvent


@functions_framework.cloud_event
def subscribe(cloud_event: CloudEvent) -> None:
    """Prints the message a Pub/Sub push delivered."""
    print("Hello, " + base64.b64decode(cloud_event.data["message"]["data"]).decode() + "!")
