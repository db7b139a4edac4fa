"""The Idempotency-Key header on writes (core/idempotency.py) against real PostgreSQL: threads with their
own connections for the in-flight cases (transaction=True, every request commits for real)."""

from __future__ import annotations

import datetime as dt
import io
import threading
import uuid

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from tests import domain_builders as b
from tests.test_concurrency import run_parallel
from workorder.core.models import IdempotencyKey
from workorder.production import services
from workorder.production.models import ProgressReport, WorkOrder

pytestmark = pytest.mark.django_db(transaction=True)


def keyed(key: str) -> dict:
    return {"HTTP_IDEMPOTENCY_KEY": key}


def in_progress_task(quantity: int = 100):
    """(shop, first task claimed by shop.cut_op)."""
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved(quantity=quantity))
    services.claim_task(shop.cut_op, first.pk)
    return shop, first


def report(client, task, key: str, quantity: int = 1):
    return client.post(f"/api/tasks/{task.pk}/update_progress/", {"quantity": quantity}, format="json",
                       **keyed(key))


def new_order_body(shop) -> dict:
    return {"customer": b.customer().pk, "product": shop.product.pk, "production_quantity": 5,
            "delivery_date": (dt.date.today() + dt.timedelta(days=10)).isoformat(), "priority": "normal"}


def test_a_repeated_keyed_write_returns_the_stored_response_and_applies_nothing():
    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    key = str(uuid.uuid4())
    first = report(api, task, key, 3)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first
    again = report(api, task, key, 3)
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # the first answer (completed_quantity 3), not the state now
    assert ProgressReport.objects.filter(task=task).count() == 1
    task.refresh_from_db()
    assert task.completed_quantity == 3


def test_parallel_identical_keyed_reports_apply_exactly_once():
    for _ in range(3):  # several rounds: a race that only sometimes loses would show up
        shop, task = in_progress_task()
        api = b.client(shop.cut_op)
        key = str(uuid.uuid4())
        responses = run_parallel([lambda api=api, task=task, key=key: report(api, task, key, 2) for _ in range(8)])
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 409} and statuses.count(200) >= 1, statuses
        refused = [r.json()["code"] for r in responses if r.status_code == 409]
        assert set(refused) <= {"idempotency_key_in_use"}
        assert len({r.content for r in responses if r.status_code == 200}) == 1  # replays equal the original
        assert ProgressReport.objects.filter(task=task).count() == 1
        task.refresh_from_db()
        assert task.completed_quantity == 2
        after = report(api, task, key, 2)
        assert after.status_code == 200 and after["Idempotent-Replayed"] == "true"


def test_a_duplicate_while_the_first_is_in_flight_gets_409_then_the_stored_response(monkeypatch):
    shop, task = in_progress_task()
    key = str(uuid.uuid4())
    written, release = threading.Event(), threading.Event()
    real = services.update_progress

    def slow_update_progress(*args, **kwargs):
        result = real(*args, **kwargs)
        if threading.current_thread().name == "first":
            written.set()
            release.wait(30)  # the write is done but not committed: the request is in flight
        return result

    monkeypatch.setattr(services, "update_progress", slow_update_progress)
    results = {}

    def first():
        results["first"] = report(b.client(shop.cut_op), task, key, 4)
        from django.db import connection

        connection.close()

    thread = threading.Thread(target=first, name="first")
    thread.start()
    try:
        assert written.wait(30)
        duplicate = report(b.client(shop.cut_op), task, key, 4)
        assert duplicate.status_code == 409, duplicate.content
        assert duplicate.json()["code"] == "idempotency_key_in_use" and duplicate["Retry-After"] == "1"
    finally:
        release.set()
        thread.join(30)
    assert results["first"].status_code == 200
    replay = report(b.client(shop.cut_op), task, key, 4)
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == results["first"].json()
    assert ProgressReport.objects.filter(task=task).count() == 1


def test_the_same_key_with_another_body_or_path_is_422_and_applies_nothing():
    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    key = str(uuid.uuid4())
    assert report(api, task, key, 1).status_code == 200
    other_body = report(api, task, key, 2)
    assert other_body.status_code == 422 and other_body.json()["code"] == "idempotency_key_reused"
    other_path = api.post(f"/api/tasks/{task.pk}/complete/", **keyed(key))
    assert other_path.status_code == 422
    task.refresh_from_db()
    assert task.completed_quantity == 1 and task.status == "in_progress"


def test_another_users_key_is_not_theirs():
    shop = b.Shop()
    body = new_order_body(shop)
    key = "shared-key-1"
    mine = b.client(shop.maker).post("/api/workorders/", body, format="json", **keyed(key))
    theirs = b.client(shop.other_maker).post("/api/workorders/", body, format="json", **keyed(key))
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs and theirs.json()["id"] != mine.json()["id"]
    assert WorkOrder.objects.filter(created_by__in=[shop.maker, shop.other_maker]).count() == 2
    replay = b.client(shop.maker).post("/api/workorders/", body, format="json", **keyed(key))
    assert replay["Idempotent-Replayed"] == "true" and replay.json()["id"] == mine.json()["id"]


def test_an_expired_key_is_a_new_request():
    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    key = str(uuid.uuid4())
    assert report(api, task, key).status_code == 200
    IdempotencyKey.objects.filter(key=key).update(created_at=timezone.now() - dt.timedelta(hours=24, seconds=1))
    again = report(api, task, key)
    assert again.status_code == 200 and "Idempotent-Replayed" not in again
    assert ProgressReport.objects.filter(task=task).count() == 2
    assert IdempotencyKey.objects.filter(key=key).count() == 1  # the new outcome replaced the expired one
    assert report(api, task, key)["Idempotent-Replayed"] == "true"


def test_a_5xx_outcome_is_rolled_back_and_not_stored_so_the_key_stays_usable(monkeypatch):
    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    key = str(uuid.uuid4())
    real = services.update_progress

    def write_then_fail(exc):
        def broken(*args, **kwargs):
            real(*args, **kwargs)  # the write happens, then the request fails: all of it must roll back
            raise exc
        return broken

    for failure, status in ((OperationalError("server closed the connection"), 503), (RuntimeError("bug"), 500)):
        monkeypatch.setattr(services, "update_progress", write_then_fail(failure))
        assert report(api, task, key, 5).status_code == status
        assert not IdempotencyKey.objects.filter(key=key).exists()
        assert ProgressReport.objects.filter(task=task).count() == 0
    monkeypatch.setattr(services, "update_progress", real)
    retried = report(api, task, key, 5)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried
    assert ProgressReport.objects.filter(task=task).count() == 1


def test_a_4xx_outcome_is_stored_and_replayed():
    shop, task = in_progress_task(quantity=5)
    api = b.client(shop.cut_op)
    key = str(uuid.uuid4())
    too_many = report(api, task, key, 6)
    assert too_many.status_code == 409 and too_many.json()["code"] == "conflict"
    replay = report(api, task, key, 6)
    assert replay.status_code == 409 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == too_many.json()


@pytest.mark.parametrize("value", ["", "x" * 256, "schlüssel", "tab\there"])
def test_an_invalid_key_is_a_400_naming_the_header(value):
    shop, task = in_progress_task()
    response = b.client(shop.cut_op).post(f"/api/tasks/{task.pk}/update_progress/", {"quantity": 1},
                                          format="json", HTTP_IDEMPOTENCY_KEY=value)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert ProgressReport.objects.filter(task=task).count() == 0


def test_the_longest_key_of_printable_ascii_is_accepted():
    shop, task = in_progress_task()
    assert report(b.client(shop.cut_op), task, "~ !" + "k" * 252).status_code == 200


def test_login_and_logout_ignore_the_header():
    shop = b.Shop()
    api = b.client()
    body = {"username": shop.maker.username, "password": "pw-123456"}
    tokens = [api.post("/api/auth/login/", body, format="json", **keyed("login-key")).json()["token"]
              for _ in range(2)]
    assert tokens[0] != tokens[1]
    assert not IdempotencyKey.objects.exists()


def test_prune_command_deletes_only_expired_keys():
    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    for n in range(3):
        report(api, task, f"key-{n}")
    IdempotencyKey.objects.filter(key__in=["key-0", "key-1"]).update(
        created_at=timezone.now() - dt.timedelta(hours=25))
    out = io.StringIO()
    call_command("prune_idempotency_keys", "--batch-size", "1", stdout=out)
    assert "removed 2 expired idempotency key(s)" in out.getvalue()
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["key-2"]


def test_metrics_count_replays_and_conflicts_and_report_the_stored_keys():
    from workorder.core import idempotency

    shop, task = in_progress_task()
    api = b.client(shop.cut_op)
    replays_before = idempotency.replays._value.get()
    mismatches_before = idempotency.conflicts.labels("mismatch")._value.get()
    report(api, task, "m-1")
    report(api, task, "m-1")
    report(api, task, "m-1", 2)
    assert idempotency.replays._value.get() == replays_before + 1
    assert idempotency.conflicts.labels("mismatch")._value.get() == mismatches_before + 1
    text = b.client().get("/metrics/", REMOTE_ADDR="127.0.0.1").content.decode()
    assert "workorder_idempotency_replays_total" in text
    assert 'workorder_idempotency_conflicts_total{reason="mismatch"}' in text
    gauge = [line for line in text.splitlines() if line.startswith("workorder_idempotency_keys ")]
    assert gauge and float(gauge[0].split()[1]) >= 1
