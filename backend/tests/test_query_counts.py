"""Every list and statistics endpoint runs a constant number of SQL queries, whatever the page size:
1 row and 100 rows cost the same."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import domain_builders as b
from workorder.core.pagination import counts
from workorder.notifications.services import notify
from workorder.production import services

pytestmark = pytest.mark.django_db


def queries_for(api, path):
    cache.clear()
    counts.clear_local()
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(path)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries), response.json()


def grow_shop(shop, orders):
    """`orders` approved work orders with 2 tasks each, claimed and partly reported."""
    for _ in range(orders):
        wo = shop.approved(quantity=10)
        first, _ = shop.tasks(wo)
        services.claim_task(shop.cut_op, first.pk)
        services.update_progress(shop.cut_op, first.pk, 2)


def test_task_list_costs_the_same_for_1_and_100_rows():
    shop = b.Shop()
    grow_shop(shop, 1)
    api = b.client(shop.cut_op)
    few, body = queries_for(api, "/api/tasks/?page_size=100")
    assert body["count"] == 1
    grow_shop(shop, 99)
    many, body = queries_for(api, "/api/tasks/?page_size=100")
    assert body["count"] == 100 and len(body["results"]) == 100
    assert few == many


def test_task_list_with_count_query_is_constant_too():
    shop = b.Shop()
    grow_shop(shop, 3)
    api = b.client(shop.admin)
    few, _ = queries_for(api, "/api/tasks/?page_size=2&page=2")
    grow_shop(shop, 60)
    many, body = queries_for(api, "/api/tasks/?page_size=100&page=2")
    assert len(body["results"]) == 26
    assert few == many


def test_task_detail_costs_the_same_with_1_and_30_progress_reports():
    shop = b.Shop()
    wo = shop.approved(quantity=100)
    first, _ = shop.tasks(wo)
    services.claim_task(shop.cut_op, first.pk)
    services.update_progress(shop.cut_op, first.pk, 1)
    api = b.client(shop.cut_op)
    few, _ = queries_for(api, f"/api/tasks/{first.pk}/")
    for _ in range(29):
        services.update_progress(shop.cut_op, first.pk, 1)
    many, body = queries_for(api, f"/api/tasks/{first.pk}/")
    assert len(body["progress_reports"]) == 30
    assert few == many


@pytest.mark.parametrize("who", ["admin", "maker", "weld_sup", "weld_op"])
def test_work_order_list_costs_the_same_for_1_and_100_rows(who):
    shop = b.Shop()
    grow_shop(shop, 1)
    api = b.client(getattr(shop, who))
    few, body = queries_for(api, "/api/workorders/?page_size=100")
    assert body["count"] == 1
    grow_shop(shop, 99)
    many, body = queries_for(api, "/api/workorders/?page_size=100")
    assert len(body["results"]) == 100
    assert few == many


def test_work_order_detail_costs_the_same_for_2_and_8_tasks():
    shop = b.Shop()
    small = shop.approved()
    long_product = b.product_with_routing(*([shop.cutting, shop.welding] * 4))
    big = b.approved_work_order(shop.maker, long_product, shop.cut_sup)
    api = b.client(shop.admin)
    few, _ = queries_for(api, f"/api/workorders/{small.pk}/")
    many, body = queries_for(api, f"/api/workorders/{big.pk}/")
    assert len(body["tasks"]) == 8
    assert few == many


def test_notification_list_costs_the_same_for_1_and_100_rows():
    shop = b.Shop()
    notify([shop.maker], "task_claimed", "one", None)
    api = b.client(shop.maker)
    few, _ = queries_for(api, "/api/notifications/?page_size=100")
    for n in range(99):
        notify([shop.maker], "task_claimed", f"n{n}", None)
    many, body = queries_for(api, "/api/notifications/?page_size=100&unread=true")
    assert len(body["results"]) == 100
    assert few == many


# rows after growing: the shop's own plus 40 departments, 40 products routed through 2 new processes
# each, 40 customers and 40 operators
@pytest.mark.parametrize("path,rows", [("/api/products/", 1 + 40), ("/api/customers/", 40),
                                       ("/api/departments/", 2 + 40), ("/api/processes/", 2 + 80),
                                       ("/api/users/", 8 + 40)])
def test_catalog_lists_cost_the_same_for_few_and_many_rows(path, rows, settings):
    settings.REFERENCE_CACHE_SECONDS = 0  # the queries of a computed answer, not a kept one
    shop = b.Shop()
    api = b.client(shop.admin)
    few, _ = queries_for(api, f"{path}?page_size=100")
    for _ in range(40):
        dept = b.department()
        b.product_with_routing(dept, shop.cutting)
        b.customer()
        b.operator(dept)
    many, body = queries_for(api, f"{path}?page_size=100")
    assert len(body["results"]) == body["count"] == rows
    assert few == many


@pytest.mark.parametrize("path", ["/api/statistics/task_summary/", "/api/statistics/department_workload/",
                                  "/api/statistics/collaboration/"])
def test_statistics_cost_the_same_for_small_and_large_data(path, settings):
    settings.STATISTICS_CACHE_SECONDS = 0
    shop = b.Shop()
    grow_shop(shop, 1)
    api = b.client(shop.admin)
    few, _ = queries_for(api, path)
    grow_shop(shop, 30)
    for _ in range(5):
        b.department()
    many, _ = queries_for(api, path)
    assert few == many


@pytest.mark.parametrize("action", ["assign", "claim", "complete"])
def test_a_task_write_reads_its_order_and_process_with_the_locked_task_and_locks_only_the_task(action):
    """The notifications name the task's work order and process: read in the locking query, not one
    query each afterwards; FOR UPDATE OF the task alone, so other tasks of the order are not blocked."""
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    if action == "complete":
        services.claim_task(shop.cut_op, first.pk)
    who, body = {"assign": (shop.cut_sup, {"operator_id": shop.cut_op.pk}), "claim": (shop.cut_op, None),
                 "complete": (shop.cut_sup, None)}[action]
    with CaptureQueriesContext(connection) as ctx:
        response = b.client(who).post(f"/api/tasks/{first.pk}/{action}/", body, format="json")
    assert response.status_code == 200, response.content
    sqls = [q["sql"] for q in ctx.captured_queries]
    locking = [sql for sql in sqls if "FOR UPDATE" in sql and 'FROM "production_task"' in sql]
    if action != "claim":  # a claim is one conditional UPDATE, then a plain read
        [locking] = locking
        assert 'FOR UPDATE OF "production_task"' in locking
        assert '"production_workorder"' in locking and '"catalog_process"' in locking
    lone = [sql for sql in sqls if sql.startswith("SELECT") and ('FROM "catalog_process"' in sql or (
        'FROM "production_workorder"' in sql and "FOR UPDATE" not in sql))]
    assert lone == []
