import pytest


@pytest.fixture
def upload_event():
    return {"bucket": "b", "name": "x.csv", "timeCreated": "2024-05-01T10:00:00Z"}
