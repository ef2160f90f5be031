import os

import functions_framework
import googleapiclient.discovery
from flask import jsonify
from slack.signature import SignatureVerifier

kgsearch = googleapiclient.discovery.build(
    "kgsearch", "v1", developerKey=os.environ.get("KG_API_KEY"), cache_discovery=False
)


def verify_signature(request):
    """Raises ValueError when the request was not signed by Slack."""
    request.get_data()
    verifier = SignatureVerifier(os.environ["SLACK_SECRET"])
    if not verifier.is_valid_request(request.data, request.headers):
        raise ValueError("Invalid request/credentials.")


def format_slack_message(query, response):
    """A Slack message with the top Knowledge Graph result."""
    entity = None
    if response and response.get("itemListElement"):
        entity = response["itemListElement"][0]["result"]
    message = {"response_type": "in_channel", "text": f"Query: {query}", "attachments": []}
    if entity:
        message["attachments"].append({"title": entity.get("name", ""), "color": "#3367d6"})
    return message


@functions_framework.http
def kg_search(request):
    """Answers a Slack slash command with a Knowledge Graph search."""
    if request.method != "POST":
        return "Only POST requests are accepted", 405
    verify_signature(request)
    response = kgsearch.entities().search(query=request.form["text"], limit=1).execute()
    return jsonify(format_slack_message(request.form["text"], response))
