"""The PostgreSQL backend's health check (workorder.core.postgresql): a healthy idle connection is
judged without a round trip, and a connection the server ended is never used for a request."""

from __future__ import annotations

import time

import pytest
from django.db import connections
from django.db.backends.postgresql import base as django_base

from workorder.core.postgresql.base import DatabaseWrapper

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wrapper():
    """A connection of its own (the test's default connection is inside pytest-django's handling),
    persistent and health-checked as in production."""
    settings_dict = {**connections["default"].settings_dict, "CONN_MAX_AGE": 300, "CONN_HEALTH_CHECKS": True}
    wrapper = DatabaseWrapper(settings_dict, alias="health-check")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def terminate(wrapper) -> None:
    """End the wrapper's server backend from another connection, as a restart or an admin would."""
    pid = wrapper.connection.info.backend_pid
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone() == (True,)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the FATAL message and EOF reach the socket
        import select

        if select.select([wrapper.connection.fileno()], [], [], 0.05)[0]:
            return
    raise AssertionError("the terminated connection's socket never became readable")


def test_settings_use_the_project_backend():
    assert connections["default"].settings_dict["ENGINE"] == "workorder.core.postgresql"
    assert isinstance(connections["default"], DatabaseWrapper)


def test_a_healthy_idle_connection_is_usable_without_asking_the_server(wrapper, monkeypatch):
    def no_round_trip(self):
        raise AssertionError("SELECT 1 sent for a healthy idle connection")

    monkeypatch.setattr(django_base.DatabaseWrapper, "is_usable", no_round_trip)
    for _ in range(3):
        assert wrapper.is_usable() is True
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)


def test_a_terminated_connection_is_unusable_and_the_next_request_reconnects(wrapper):
    old_pid = wrapper.connection.info.backend_pid
    terminate(wrapper)
    assert wrapper.is_usable() is False
    # What Django does at a request's first query: the failed check closes, the cursor reconnects.
    wrapper.health_check_done = False
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid


def test_a_connection_with_unread_server_messages_gets_the_round_trip_check(wrapper, monkeypatch):
    """Something to read on an idle connection that is still alive (a notice, a notification):
    Django's own SELECT 1 decides, and the connection stays."""
    with wrapper.cursor() as cursor:
        cursor.execute("LISTEN workorder_health_check_test")
    with connections["default"].cursor() as cursor:
        cursor.execute("NOTIFY workorder_health_check_test")
    time.sleep(0.2)
    asked = []
    original = django_base.DatabaseWrapper.is_usable
    monkeypatch.setattr(django_base.DatabaseWrapper, "is_usable", lambda self: asked.append(1) or original(self))
    assert wrapper.is_usable() is True and asked == [1]
