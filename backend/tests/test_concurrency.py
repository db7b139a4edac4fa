"""Real parallelism against PostgreSQL: threads, each with its own database connection, released
together by a barrier. transaction=True so every request commits for real."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests import domain_builders as b
from workorder.accounts.tokens import issue_token
from workorder.notifications.models import Notification
from workorder.production.models import ProgressReport, Task, WorkOrder

pytestmark = pytest.mark.django_db(transaction=True)


def run_parallel(calls, timeout: float = 120.0):
    """Run callables in parallel threads started at the same instant; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(index, call):
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread below
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a request hung"
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def test_two_concurrent_claims_exactly_one_succeeds_the_other_gets_409():
    for _ in range(5):  # several rounds: a race that only sometimes loses would show up
        shop = b.Shop()
        first, _ = shop.tasks(shop.approved())
        clients = [b.client(shop.cut_op), b.client(shop.cut_op2)]
        statuses = run_parallel(
            [lambda c=c, first=first: c.post(f"/api/tasks/{first.pk}/claim/").status_code for c in clients]
        )
        assert sorted(statuses) == [200, 409]
        first.refresh_from_db()
        winner = [shop.cut_op, shop.cut_op2][statuses.index(200)]
        assert first.assigned_operator_id == winner.pk and first.status == "in_progress"


def test_many_concurrent_claims_of_one_task_have_exactly_one_winner():
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    operators = [b.operator(shop.cutting) for _ in range(8)]
    statuses = run_parallel(
        [lambda o=o: b.client(o).post(f"/api/tasks/{first.pk}/claim/").status_code for o in operators]
    )
    assert Counter(statuses) == {200: 1, 409: 7}


def test_fifty_parallel_progress_reports_on_one_task_lose_none():
    shop = b.Shop()
    wo = shop.approved(quantity=1000)
    first, _ = shop.tasks(wo)
    api = b.client(shop.cut_op)
    assert api.post(f"/api/tasks/{first.pk}/claim/").status_code == 200
    quantities = [(n % 7) + 1 for n in range(50)]
    _, key = issue_token(shop.cut_op)  # one login shared by 50 clients: a user holds at most 10 tokens
    clients = [APIClient(HTTP_AUTHORIZATION=f"Token {key}") for _ in quantities]
    statuses = run_parallel([
        lambda c=c, q=q: c.post(f"/api/tasks/{first.pk}/update_progress/", {"quantity": q}, format="json").status_code
        for c, q in zip(clients, quantities, strict=True)
    ])
    assert statuses == [200] * 50
    first.refresh_from_db()
    assert first.completed_quantity == sum(quantities)
    assert ProgressReport.objects.filter(task=first).count() == 50
    assert sum(ProgressReport.objects.filter(task=first).values_list("quantity", flat=True)) == sum(quantities)


def test_parallel_reports_never_exceed_planned_quantity_and_rejected_ones_record_nothing():
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved(quantity=20))
    b.client(shop.cut_op).post(f"/api/tasks/{first.pk}/claim/")
    clients = [b.client(shop.cut_op) for _ in range(30)]
    statuses = run_parallel([
        lambda c=c: c.post(f"/api/tasks/{first.pk}/update_progress/", {"quantity": 1}, format="json").status_code
        for c in clients
    ])
    assert Counter(statuses) == {200: 20, 409: 10}
    first.refresh_from_db()
    assert first.completed_quantity == 20 and first.status == "completed"
    assert ProgressReport.objects.filter(task=first).count() == 20


def test_concurrent_work_order_creation_gives_unique_numbers():
    shop = b.Shop()
    customer = b.customer()
    body = {"customer": customer.pk, "product": shop.product.pk, "production_quantity": 5,
            "delivery_date": "2030-05-01"}
    makers = [b.maker() for _ in range(10)]
    responses = run_parallel([lambda m=m: b.client(m).post("/api/workorders/", body, format="json") for m in makers])
    assert [r.status_code for r in responses] == [201] * 10
    numbers = [r.json()["number"] for r in responses]
    assert len(set(numbers)) == 10
    assert WorkOrder.objects.filter(number__in=numbers).count() == 10


def test_concurrent_completion_of_last_two_tasks_completes_the_work_order_once():
    """The last two tasks completed at the same instant, in 10 rounds: in every round the work order is
    completed exactly once (one work_order_completed notification). Its row lock serialises the two
    "is every task done?" checks; without it both can see the other task unfinished (never completed)."""
    for _ in range(10):
        shop = b.Shop()
        wo = shop.approved(quantity=4)
        first, second = shop.tasks(wo)
        for operator, task in ((shop.cut_op, first), (shop.weld_op, second)):
            assert b.client(operator).post(f"/api/tasks/{task.pk}/claim/").status_code == 200
        assert b.client(shop.cut_op).post(f"/api/tasks/{first.pk}/update_progress/", {"quantity": 3},
                                          format="json").status_code == 200
        cut, weld = b.client(shop.cut_op), b.client(shop.weld_op)
        statuses = run_parallel([
            lambda cut=cut, first=first: cut.post(f"/api/tasks/{first.pk}/complete/").status_code,
            lambda weld=weld, second=second: weld.post(f"/api/tasks/{second.pk}/complete/").status_code,
        ])
        assert statuses == [200, 200]
        wo.refresh_from_db()
        assert wo.status == "completed"
        assert Task.objects.filter(work_order=wo, status="completed").count() == 2
        completions = Notification.objects.filter(kind="work_order_completed", object_type="production.workorder",
                                                  object_id=wo.pk)
        assert list(completions.values_list("recipient_id", flat=True)) == [shop.maker.pk]


def test_realtime_push_runs_after_a_real_commit_with_the_created_rows(monkeypatch):
    from workorder.notifications import delivery

    pushed = []
    monkeypatch.setattr(delivery, "push", lambda rows: pushed.append(sorted((n.recipient_id, n.kind) for n in rows)))
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    pushed.clear()
    assert b.client(shop.cut_op).post(f"/api/tasks/{first.pk}/claim/").status_code == 200
    assert pushed == [sorted([(shop.cut_sup.pk, "task_claimed"), (shop.maker.pk, "task_claimed")])]
    pushed.clear()
    assert b.client(shop.cut_op2).post(f"/api/tasks/{first.pk}/claim/").status_code == 409
    assert pushed == []  # a refused action pushes nothing
