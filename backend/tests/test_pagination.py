"""Pagination: {"count","next","previous","results"}, bounded page_size, cheap cached counts."""

import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import domain_builders as b
from workorder.core import pagination
from workorder.core.pagination import MAX_PAGE_SIZE

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    cache.clear()
    pagination.counts.clear_local()
    shop = b.Shop()
    for _ in range(6):
        shop.approved()  # 12 tasks, 6 orders
    return shop


def count_queries(ctx):
    return [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("SELECT COUNT")]


def test_response_shape_and_links(shop):
    body = b.client(shop.admin).get("/api/tasks/?page_size=5&page=2").json()
    assert list(body) == ["count", "next", "previous", "results"]
    assert body["count"] == 12 and len(body["results"]) == 5
    assert "page=3" in body["next"] and "page_size=5" in body["next"]
    assert body["previous"] is not None


def test_default_page_size_is_20_and_maximum_is_100():
    cache.clear()
    shop = b.Shop()
    for _ in range(55):
        shop.approved()  # 110 tasks
    api = b.client(shop.admin)
    assert len(api.get("/api/tasks/").json()["results"]) == 20
    assert MAX_PAGE_SIZE == 100
    assert len(api.get("/api/tasks/?page_size=1000").json()["results"]) == 100


def test_count_is_cached_for_the_same_query(shop):
    api = b.client(shop.admin)
    with CaptureQueriesContext(connection) as first:
        assert api.get("/api/tasks/?page_size=5&status=pending").json()["count"] == 12
    with CaptureQueriesContext(connection) as second:
        assert api.get("/api/tasks/?page_size=5&status=pending&page=2").json()["count"] == 12
    assert len(count_queries(first)) == 1
    assert count_queries(second) == []


def test_count_cache_is_per_filter_and_per_visibility(shop):
    b.client(shop.admin).get("/api/tasks/?page_size=5")
    operator_count = b.client(shop.cut_op).get("/api/tasks/?page_size=5").json()["count"]
    assert operator_count == 6  # not the admin's cached 12
    assert b.client(shop.admin).get("/api/tasks/?page_size=5&status=completed").json()["count"] == 0


def test_short_first_page_needs_no_count_query(shop):
    with CaptureQueriesContext(connection) as ctx:
        body = b.client(shop.cut_op).get("/api/tasks/?page_size=50").json()
    assert body["count"] == 6 and body["next"] is None
    assert count_queries(ctx) == []


def test_cached_count_expires(shop, settings):
    settings.PAGINATION_COUNT_CACHE_SECONDS = 0  # 0 = do not keep
    api = b.client(shop.admin)
    api.get("/api/tasks/?page_size=5")
    shop.approved()
    assert api.get("/api/tasks/?page_size=5").json()["count"] == 14


def test_a_stale_cached_count_never_claims_fewer_rows_than_the_first_page_shows(shop, settings, monkeypatch):
    settings.PAGINATION_COUNT_CACHE_SECONDS = 60
    keys = []
    original = pagination.count_cache_key
    monkeypatch.setattr(pagination, "count_cache_key", lambda *args: keys.append(original(*args)) or keys[-1])
    api = b.client(shop.admin)
    api.get("/api/workorders/?page_size=2&page=2")
    pagination.counts.clear_local()
    cache.set(keys[-1], [1, time.time()], 60)  # an old count of 1 row for this query
    body = api.get("/api/workorders/?page_size=2").json()
    assert len(body["results"]) == 2
    # the first page fetched page_size + 1 = 3 rows: that many exist, whatever the cache says
    assert body["count"] == 3 and body["next"] is not None


@pytest.mark.parametrize("who, path, joins", [
    ("cut_op", "/api/tasks/?page_size=2", 0),  # the department's tasks: no join at all
    ("admin", "/api/workorders/?page_size=2", 0),
    ("maker", "/api/tasks/?page_size=2", 1),  # makers see the tasks of their orders: the one join that filters
])
def test_a_list_count_joins_only_what_its_filters_need_and_counts_the_rows_the_pages_show(shop, who, path, joins):
    api = b.client(getattr(shop, who))
    with CaptureQueriesContext(connection) as ctx:
        body = api.get(path).json()
    [count_sql] = count_queries(ctx)
    assert count_sql.upper().count(" JOIN ") == joins, count_sql
    shown, page = [], 1
    while True:  # every page, uncounted: the rows themselves
        rows = api.get(f"{path}&page={page}").json()
        shown += rows["results"]
        if rows["next"] is None:
            break
        page += 1
    assert body["count"] == len(shown) == len({row["id"] for row in shown}) > 2
