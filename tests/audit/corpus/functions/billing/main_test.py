import base64
import json
from unittest.mock import MagicMock, patch

import main


@patch("main.slack_client")
def test_notify_slack(slack_client):
    slack_client.api_call = MagicMock()
    data = {"budgetDisplayName": "test", "costAmount": 1, "budgetAmount": 2}
    main.notify_slack({"data": base64.b64encode(json.dumps(data).encode())}, None)
    assert slack_client.api_call.called
