import base64
import json
import os

import slack
from googleapiclient import discovery
from slack.errors import SlackApiError

PROJECT_ID = os.getenv("GCP_PROJECT")
PROJECT_NAME = f"projects/{PROJECT_ID}"
CHANNEL = "C0XXXXXX"
slack_client = slack.WebClient(token=os.getenv("BOT_ACCESS_TOKEN"))


def notify_slack(data, context):
    """Posts the budget notification to Slack."""
    pubsub_message = json.loads(base64.b64decode(data["data"]).decode("utf-8"))
    cost = pubsub_message["costAmount"]
    budget = pubsub_message["budgetAmount"]
    try:
        slack_client.api_call(
            "chat.postMessage", json={"channel": CHANNEL, "text": f"{cost} of {budget}"}
        )
    except SlackApiError:
        print("Error posting to Slack")


def stop_billing(data, context):
    """Disables billing when the cost passed the budget."""
    pubsub_data = base64.b64decode(data["data"]).decode("utf-8")
    notification = json.loads(pubsub_data)
    if notification["costAmount"] <= notification["budgetAmount"]:
        return
    billing = discovery.build("cloudbilling", "v1", cache_discovery=False)
    projects = billing.projects()
    projects.updateBillingInfo(name=PROJECT_NAME, body={"billingAccountName": ""}).execute()
