import flask
import pytest
import responses

import main


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("TARGET_URL", "https://example.com/hook")
    return flask.Flask(__name__)


@responses.activate
def test_forward_posts_the_body(app):
    responses.post("https://example.com/hook", json={}, status=202)
    with app.test_request_context(json={"a": 1}):
        assert main.forward(flask.request) == {"status": 202}
