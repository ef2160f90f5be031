import base64
import json

from shared.completion import record
from shared.names import run_key


def on_phase2_done(event, context):
    """Records a phase-2 processor's completion."""
    message = json.loads(base64.b64decode(event["data"]))
    record("phase2", message["processor"], message["day"])
    return run_key("phase3", message["day"])
