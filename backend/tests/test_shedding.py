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


def waits_observed() -> dict[str, float]:
    """workorder_http_request_queue_seconds' cumulative buckets by upper bound, and its count."""
    observed = {}
    for metric in shedding.queue_wait.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                observed[sample.labels["le"]] = sample.value
            elif sample.name.endswith("_count"):
                observed["count"] = sample.value
    return observed


def test_every_stamped_request_s_wait_is_observed_shed_or_served():
    before = waits_observed()
    Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(0.03))  # served
    Client(REMOTE_ADDR="").get("/api/tasks/", **stamped(3.0))  # shed
    after = waits_observed()
    assert after["count"] == before["count"] + 2
    assert after["0.025"] == before["0.025"]  # 30 ms is not within 25 ms...
    assert after["0.05"] == before["0.05"] + 1  # ...but within 50 ms
    assert after["2.5"] == before["2.5"] + 1  # the 3-second wait only past 2.5 s
    assert after["5.0"] == before["5.0"] + 2


def test_unstamped_requests_and_strangers_stamps_are_not_observed():
    before = waits_observed()["count"]
    Client(REMOTE_ADDR="").get("/api/tasks/")
    Client(REMOTE_ADDR="203.0.113.9").get("/api/tasks/", **stamped(0.5))
    assert waits_observed()["count"] == before


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
