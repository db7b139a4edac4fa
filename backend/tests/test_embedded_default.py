"""The embedded default (no DATABASE_URL: SQLite in the state directory) served the way run-dev.sh
serves it: `workorder-manage runserver` with DJANGO_DEBUG=1 on seed_demo's data. Parallel writes to
one row must queue behind SQLite's single writer, not fail with "database is locked"."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from harness.process import ManagedProcess
from harness.services import free_port, wait_for_port
from tests.runtime_support import manage, run_python, script, server_env

pytestmark = pytest.mark.services

PASSWORD = "embedded-demo-pw"
PARALLEL = 20

# A work order for test_operator's department (Cutting, seed_demo's first), approved, its task claimed.
SETUP_TASK = r"""
import datetime, json
from workorder.accounts.models import User
from workorder.catalog.models import Customer, Process, Product, RoutingStep
from workorder.production import services
operator = User.objects.get(username="test_operator")
process = Process.objects.filter(department=operator.department).first()
product = Product.objects.create(sku="EMBEDDED-1", name="Embedded widget")
RoutingStep.objects.create(product=product, process=process, sequence=10)
order = services.create_work_order(User.objects.get(username="test_maker"), customer=Customer.objects.first(),
                                   product=product, production_quantity=10000,
                                   delivery_date=datetime.date.today() + datetime.timedelta(days=7), priority="normal")
services.approve_work_order(User.objects.get(username="test_supervisor"), order.pk)
task = order.tasks.get()
services.claim_task(operator, task.pk)
print(json.dumps({"task": task.pk}))
"""


def request(port: int, method: str, path: str, body: dict | None = None, token: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    env = server_env(tmp, DJANGO_DEBUG="1")  # no DATABASE_URL, no REDIS_URL: the embedded default
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo", "--work-orders", "20", "--password", PASSWORD)
    task = run_python(env, SETUP_TASK)["task"]
    port = free_port()
    server = ManagedProcess("runserver", [script("workorder-manage"), "runserver", f"127.0.0.1:{port}", "--noreload"],
                            log_path=tmp / "runserver.log", env=env, cwd=str(tmp)).start()
    try:
        wait_for_port(port, timeout=60)
        yield {"port": port, "task": task, "server": server}
    finally:
        server.stop()


def test_parallel_progress_reports_on_one_task_all_succeed_on_sqlite(dev_server):
    port, task = dev_server["port"], dev_server["task"]
    status, body = request(port, "POST", "/api/auth/login/", {"username": "test_operator", "password": PASSWORD})
    assert status == 200, body[:300]
    token = json.loads(body)["token"]
    quantities = [(n % 5) + 1 for n in range(PARALLEL)]
    barrier = threading.Barrier(PARALLEL)
    results: list = [None] * PARALLEL

    def report(index: int) -> None:
        barrier.wait(timeout=30)
        results[index] = request(port, "POST", f"/api/tasks/{task}/update_progress/",
                                 {"quantity": quantities[index]}, token)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    statuses = [result[0] if result else None for result in results]
    failures = [result[1][:200] for result in results if result and result[0] != 200]
    assert statuses == [200] * PARALLEL, (statuses, failures)
    status, body = request(port, "GET", f"/api/tasks/{task}/", token=token)
    assert status == 200
    assert json.loads(body)["completed_quantity"] == sum(quantities)
    assert "database is locked" not in dev_server["server"].log_path.read_text()


def test_parallel_identical_keyed_reports_apply_once_on_sqlite(dev_server):
    """No advisory locks on SQLite: its IMMEDIATE transactions queue the duplicates behind the first,
    which then find its stored outcome."""
    port, task = dev_server["port"], dev_server["task"]
    _, body = request(port, "POST", "/api/auth/login/", {"username": "test_operator", "password": PASSWORD})
    token = json.loads(body)["token"]
    before = json.loads(request(port, "GET", f"/api/tasks/{task}/", token=token)[1])["completed_quantity"]
    barrier = threading.Barrier(PARALLEL)
    results: list = [None] * PARALLEL

    def report(index: int) -> None:
        barrier.wait(timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", f"/api/tasks/{task}/update_progress/", body=json.dumps({"quantity": 3}),
                         headers={"Content-Type": "application/json", "Authorization": f"Token {token}",
                                  "Idempotency-Key": "sqlite-once"})
            response = conn.getresponse()
            results[index] = (response.status, response.getheader("Idempotent-Replayed"), response.read())
        finally:
            conn.close()

    threads = [threading.Thread(target=report, args=(i,)) for i in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [r[0] for r in results] == [200] * PARALLEL, results
    assert sorted(r[1] or "" for r in results) == [""] + ["true"] * (PARALLEL - 1)
    assert len({r[2] for r in results}) == 1
    after = json.loads(request(port, "GET", f"/api/tasks/{task}/", token=token)[1])["completed_quantity"]
    assert after == before + 3
