import os

from slack_sdk.webhook import WebhookClient


def alert(text):
    """Posts a line to the team's channel."""
    WebhookClient(os.environ["SLACK_WEBHOOK_URL"]).send(text=text)
