import base64

from cloudevents.http import CloudEvent

import main


def test_functions_pubsub_subscribe_should_print_message(capsys):
    attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub"}
    data = {"message": {"data": base64.b64encode(b"Pub/Sub").decode()}}
    main.subscribe(CloudEvent(attributes, data))
    out, _ = capsys.readouterr()
    assert out == "Hello, Pub/Sub!\n"
