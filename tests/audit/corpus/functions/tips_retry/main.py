import os

import functions_framework
import requests
from werkzeug.exceptions import BadRequest

TIMEOUT = float(os.environ.get("TIMEOUT", "10"))


@functions_framework.http
def forward(request):
    """Forwards the body to the configured endpoint; lets Cloud Functions retry on 5xx."""
    payload = request.get_json(silent=True)
    if payload is None:
        raise BadRequest("expected a JSON body")
    response = requests.post(os.environ["TARGET_URL"], json=payload, timeout=TIMEOUT)
    response.raise_for_status()
    return {"status": response.status_code}
