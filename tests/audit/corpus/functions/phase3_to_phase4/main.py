import base64
import json

from shared.completion import record
from shared.notify import alert


def on_phase3_done(event, context):
    """Records a phase-3 processor's completion and tells the channel."""
    message = json.loads(base64.b64decode(event["data"]))
    record("phase3", message["processor"], message["day"])
    alert(f"phase 3 {message['processor']} done for {message['day']}")
