"""Requests that queued longer than the deadline are shed with a fast 503 (core/shedding.py)."""

import time

import pytest
from django.test import Client, override_settings

from workorder.core import shedding

pytestmark = pytest.mark.django_db


def shed_count() -> float:
    return shedding.shed_past_deadline._value.get()


def stamped(seconds_ago: float) -> dict:
    return {"HTTP_X_REQUEST_START": f"t={time.time() - seconds_ago:.3f}"}


def test_a_request_queued_past_the_deadline_is_503_with_retry_after_and_counted():
    before = shed_count()
    response = Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(2.0))  # "" = a unix-socket peer (nginx)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"detail": shedding.DETAIL, "code": "overloaded", "errors": {}}
    assert shed_count() == before + 1


def test_by_default_a_request_that_waited_past_800_ms_is_shed_and_one_within_it_is_served():
    assert Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(0.85)).status_code == 503
    assert Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(0.6)).status_code == 401


def test_a_request_within_the_deadline_is_served():
    response = Client(REMOTE_ADDR="127.0.0.1").get("/api/tasks/", **stamped(0.1))
    assert response.status_code == 401  # reached the API (no token), not shed


def test_a_stamp_from_an_untrusted_peer_is_ignored():
    response = Client(REMOTE_ADDR="203.0.113.9").get("/api/tasks/", **stamped(60))
    assert response.status_code == 401


@pytest.mark.parametrize("stamp", ["", "t=", "t=abc", "garbage"])
def test_missing_or_malformed_stamps_are_ignored(stamp):
    assert Client(REMOTE_ADDR="").get("/api/tasks/", HTTP_X_REQUEST_START=stamp).status_code == 401


def test_liveness_is_never_shed():
    assert Client(REMOTE_ADDR="").get("/health/", **stamped(60)).status_code == 200


@override_settings(WORKORDER_QUEUE_DEADLINE_MS=0)
def test_a_deadline_of_zero_turns_shedding_off():
    assert Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(60)).status_code == 401
