from unittest import mock

import flask
import pytest

import main


@pytest.fixture(scope="module")
def app():
    return flask.Flask(__name__)


def test_verify_signature_request_form_empty(app):
    with app.test_request_context(data={}, headers={}), pytest.raises(ValueError):
        main.verify_signature(flask.request)


@mock.patch("main.kgsearch")
def test_format_slack_message(kgsearch):
    message = main.format_slack_message("lion", {"itemListElement": []})
    assert message["text"] == "Query: lion"
    kgsearch.assert_not_called()
