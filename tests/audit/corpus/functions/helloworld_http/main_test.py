from unittest.mock import Mock

import flask
import pytest

import main


@pytest.fixture(scope="module")
def app():
    return flask.Flask(__name__)


def test_print_name(app):
    name = "test"
    data = {"name": name}
    with app.test_request_context(json=data):
        res = main.hello_http(flask.request)
        assert "Hello {}!".format(name) in res


def test_print_hello_world(app):
    with app.test_request_context(json=""):
        res = main.hello_http(flask.request)
        assert "Hello World!" in res


def test_mock_request():
    req = Mock(get_json=Mock(return_value={"name": "mock"}), args={})
    assert main.hello_http(req) == "Hello mock!"
