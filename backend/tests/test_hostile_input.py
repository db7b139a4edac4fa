"""Hostile input over HTTP: every case gets a 4xx with a JSON body whose message says what is wrong.

Oversized bodies (413), deeply nested JSON (400), wrong content types (415), undecodable bytes,
non-standard JSON literals (NaN, Infinity), huge numbers (integer overflow in quantities, ids, page
numbers and page sizes), unicode and NUL bytes in text fields and filters, absurd dates, huge
headers; and, pinned in-process, what the fault test found: the database unreachable is a 503, a
Redis outage is a cache miss. Runs in-process against real PostgreSQL; the same cases through nginx are part of the
production-stack tests (nginx's own limit is client_max_body_size, 10m).
"""

from __future__ import annotations

import json

import pytest

from tests import domain_builders as b
from workorder.production.models import ProgressReport, WorkOrder

pytestmark = pytest.mark.django_db

MAX_BODY = 1024 * 1024  # settings.DATA_UPLOAD_MAX_MEMORY_SIZE


@pytest.fixture
def shop():
    shop = b.Shop()
    shop.pending = b.work_order(shop.maker, shop.product)
    shop.wo = shop.approved(quantity=10)
    shop.first, shop.second = shop.tasks(shop.wo)
    from workorder.production import services

    services.claim_task(shop.cut_op, shop.first.pk)
    shop.customer = b.customer()
    return shop


def send(api, method: str, path: str, body, content_type: str = "application/json"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return api.generic(method, path, body, content_type=content_type)


def assert_clear_4xx(response, status: int, *words: str, field: str | None = None):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    message = body["detail"] + " " + json.dumps(body["errors"])
    for word in words:
        assert word.lower() in message.lower(), (word, body)
    if field:
        assert field in body["errors"] and body["errors"][field], body
    return body


# --- size and shape of the body --------------------------------------------------------------------
def test_oversized_body_is_413(shop):
    response = send(b.client(shop.cut_sup), "POST", f"/api/workorders/{shop.pending.pk}/reject/",
                    {"reason": "x" * (MAX_BODY + 10)})
    assert_clear_4xx(response, 413, "larger than", str(MAX_BODY))
    shop.pending.refresh_from_db()
    assert shop.pending.approval_status == "pending"


def test_body_just_under_the_limit_is_judged_on_its_content(shop):
    response = send(b.client(shop.cut_sup), "POST", f"/api/workorders/{shop.pending.pk}/reject/",
                    {"reason": "x" * (MAX_BODY - 100)})
    assert_clear_4xx(response, 400, "no more than 2000 characters", field="reason")


@pytest.mark.parametrize("document", [
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    '{"quantity": ' + "[" * 5_000 + "1" + "]" * 5_000 + "}",
], ids=["arrays", "objects", "inside-a-field"])
def test_deeply_nested_json_is_400(shop, document):
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/", document)
    assert response.status_code == 400, response.content[:300]
    assert_clear_4xx(response, 400)
    assert ProgressReport.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-yaml",
                                          "image/png", "application/json-patch+json"])
def test_wrong_content_type_is_415(shop, content_type):
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/",
                    '{"quantity": 1}', content_type=content_type)
    assert_clear_4xx(response, 415, "unsupported media type", content_type)
    assert ProgressReport.objects.count() == 0


@pytest.mark.parametrize("raw, words", [
    (b'{"quantity": 1', ["parse error"]),
    (b'{"quantity": "\xff\xfe"}', ["parse error", "utf-8"]),
    (b'{"quantity": NaN}', ["parse error", "nan"]),
    (b'{"quantity": Infinity}', ["parse error", "infinity"]),
    (b'{"quantity": -Infinity}', ["parse error", "infinity"]),
    (b'{"quantity": 1' + b"0" * 5000 + b"}", ["parse error", "digits"]),
    (b"\x00\x00\x00", ["parse error"]),
], ids=["truncated", "bad-utf8", "nan", "infinity", "minus-infinity", "5000-digits", "nul-bytes"])
def test_undecodable_json_is_400(shop, raw, words):
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/", raw)
    assert_clear_4xx(response, 400, *words)
    assert ProgressReport.objects.count() == 0


# --- integer overflow and wrong numbers in quantities and ids -------------------------------------
@pytest.mark.parametrize("quantity, words", [
    (2**31, ["less than or equal to 1000000"]),
    (2**63, ["less than or equal to 1000000"]),
    (2**64 + 1, ["less than or equal to 1000000"]),
    (10**100, ["less than or equal to 1000000"]),
    (1e308, ["valid integer"]),
    (-(2**63), ["greater than or equal to 1"]),
    (0, ["greater than or equal to 1"]),
    (1.5, ["valid integer"]),
    ("1e3", ["valid integer"]),
    (True, ["valid integer"]),
    (None, ["may not be null"]),
    ([], ["valid integer"]),
    ({"$gt": 0}, ["valid integer"]),
], ids=lambda v: repr(v)[:20])
def test_quantity_overflow_and_wrong_types_are_400(shop, quantity, words):
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/",
                    {"quantity": quantity})
    assert_clear_4xx(response, 400, *words, field="quantity")
    assert ProgressReport.objects.count() == 0


@pytest.mark.parametrize("production_quantity", [2**31, 2**63, -1, 10**30, "∞"])
def test_work_order_quantity_overflow_is_400(shop, production_quantity):
    before = WorkOrder.objects.count()
    response = send(b.client(shop.maker), "POST", "/api/workorders/", {
        "customer": shop.customer.pk, "product": shop.product.pk, "production_quantity": production_quantity,
        "delivery_date": "2030-01-31", "priority": "normal"})
    assert_clear_4xx(response, 400, field="production_quantity")
    assert WorkOrder.objects.count() == before


@pytest.mark.parametrize("field, value", [("customer", 2**63), ("customer", 2**70), ("product", -1),
                                          ("product", "1; DROP TABLE x"), ("customer", 1.0)])
def test_foreign_key_overflow_is_400(shop, field, value):
    body = {"customer": shop.customer.pk, "product": shop.product.pk, "production_quantity": 1,
            "delivery_date": "2030-01-31"}
    body[field] = value
    response = send(b.client(shop.maker), "POST", "/api/workorders/", body)
    assert_clear_4xx(response, 400, field=field)


@pytest.mark.parametrize("operator_id", [2**63, 2**64, -(2**63) - 1, 10**40, "9" * 100])
def test_operator_id_overflow_is_400(shop, operator_id):
    response = send(b.client(shop.cut_sup), "POST", f"/api/tasks/{shop.second.pk}/assign/",
                    {"operator_id": operator_id})
    assert_clear_4xx(response, 404, "not found")  # visibility comes first: the welding task is not cutting's
    response = send(b.client(shop.admin), "POST", f"/api/tasks/{shop.second.pk}/assign/",
                    {"operator_id": operator_id})
    assert_clear_4xx(response, 400, field="operator_id")


@pytest.mark.parametrize("path", [
    "/api/tasks/99999999999999999999/", "/api/tasks/9223372036854775808/", "/api/tasks/-1/",
    "/api/tasks/0/", "/api/tasks/1e5/", "/api/tasks/%00/", "/api/tasks/%E2%80%AE1/",
    "/api/workorders/99999999999999999999999/", "/api/notifications/9223372036854775807/",
    "/api/tasks/99999999999999999999/claim/", "/api/tasks/1.5/update_progress/",
])
def test_ids_in_the_path_out_of_range_are_404(shop, path):
    for method in ("GET", "POST") if not path.endswith(("claim/", "update_progress/")) else ("POST",):
        response = send(b.client(shop.admin), method, path, {"quantity": 1})
        if method == "POST" and response.status_code == 405:
            continue
        assert_clear_4xx(response, 404, "not found")


# --- pagination ---------------------------------------------------------------------------------
@pytest.mark.parametrize("query, status, words", [
    ("page=99999999999999999999", 404, ["fewer pages"]),
    ("page=9223372036854775808", 404, ["fewer pages"]),
    ("page=" + "9" * 5000, 400, ["page", "positive integer"]),
    ("page=-1", 400, ["page", "positive integer"]),
    ("page=0", 400, ["page", "positive integer"]),
    ("page=1e3", 400, ["page", "positive integer"]),
    ("page=%00", 400, ["page", "positive integer"]),
    ("page_size=0", 400, ["page_size", "positive integer"]),
    ("page_size=-5", 400, ["page_size", "positive integer"]),
    ("page_size=" + "9" * 5000, 400, ["page_size", "positive integer"]),
    ("page_size=NaN", 400, ["page_size", "positive integer"]),
])
def test_absurd_pages_are_4xx(shop, query, status, words):
    for path in ("/api/tasks/", "/api/workorders/", "/api/notifications/", "/api/users/", "/api/products/"):
        response = b.client(shop.admin).get(f"{path}?{query}")
        assert_clear_4xx(response, status, *words)


@pytest.mark.parametrize("page_size", ["99999999999999999999", "9223372036854775808", "101", "1000000"])
def test_huge_page_sizes_are_clamped_to_100(shop, page_size):
    shop.long_order(110)  # 112 tasks in all: more than one clamped page
    response = b.client(shop.admin).get(f"/api/tasks/?page_size={page_size}")
    assert response.status_code == 200
    body = response.json()
    assert (len(body["results"]), body["count"]) == (100, 112)
    assert "page=2" in body["next"]


@pytest.mark.parametrize("query, field", [
    ("work_order=99999999999999999999", "work_order"), ("assigned_operator=-1", "assigned_operator"),
    ("status=%00", "status"), ("status=pending%00", "status"), ("process=1e3", "process"),
    ("assigned_department=%E2%80%AE", "assigned_department"),
])
def test_absurd_filters_are_400(shop, query, field):
    assert_clear_4xx(b.client(shop.admin).get(f"/api/tasks/?{query}"), 400, field=field)


# --- text fields: unicode and NUL bytes --------------------------------------------------------
@pytest.mark.parametrize("reason", ["a\x00b", "\x00", "ok\u0000"])
def test_nul_bytes_in_text_fields_are_400(shop, reason):
    response = send(b.client(shop.cut_sup), "POST", f"/api/workorders/{shop.pending.pk}/reject/", {"reason": reason})
    assert_clear_4xx(response, 400, "null characters", field="reason")
    shop.pending.refresh_from_db()
    assert shop.pending.approval_status == "pending"


@pytest.mark.parametrize("reason", [
    "Kein Material 🚫 — 中文 — עברית \u202eRTL\u202c", "\U0010ffff\ufeff\u200b zero-width", "Ω" * 2000,
    "emoji 👩‍🔧 with ZWJ",
])
def test_unicode_in_text_fields_is_stored_intact(shop, reason):
    response = send(b.client(shop.cut_sup), "POST", f"/api/workorders/{shop.pending.pk}/reject/", {"reason": reason})
    assert response.status_code == 200, response.content[:300]
    shop.pending.refresh_from_db()
    assert shop.pending.rejection_reason == reason.strip()


@pytest.mark.parametrize("reason", ["\ud800", "x\udfff"])
def test_lone_surrogates_are_400(shop, reason):
    raw = json.dumps({"reason": reason})  # "\ud800" escaped: valid JSON, not valid unicode text
    response = send(b.client(shop.cut_sup), "POST", f"/api/workorders/{shop.pending.pk}/reject/", raw)
    assert_clear_4xx(response, 400, "surrogate characters are not allowed", field="reason")
    shop.pending.refresh_from_db()
    assert shop.pending.approval_status == "pending"


@pytest.mark.parametrize("username", ["a\x00", "\x00", "x" * 151, "😀" * 151])
def test_login_with_hostile_usernames_is_400(shop, username):
    response = send(b.client(), "POST", "/api/auth/login/", {"username": username, "password": "pw-123456"})
    assert_clear_4xx(response, 400, field="username")


def test_login_with_huge_password_is_400_without_hashing_it(shop):
    response = send(b.client(), "POST", "/api/auth/login/", {"username": shop.maker.username, "password": "x" * 100_000})
    assert_clear_4xx(response, 400, "no more than 512 characters", field="password")


@pytest.mark.parametrize("date", ["0000-00-00", "99999-01-01", "2030-02-30", "2030-01-31T00:00:00\x00", "-1-01-01",
                                  "2030-01-31" + " " * 10000])
def test_absurd_dates_are_400(shop, date):
    response = send(b.client(shop.maker), "POST", "/api/workorders/", {
        "customer": shop.customer.pk, "product": shop.product.pk, "production_quantity": 1,
        "delivery_date": date})
    assert_clear_4xx(response, 400, field="delivery_date")


@pytest.mark.parametrize("priority", ["URGENT", "urgent\x00", "", None, 1, ["urgent"]])
def test_unknown_choices_are_400(shop, priority):
    response = send(b.client(shop.maker), "POST", "/api/workorders/", {
        "customer": shop.customer.pk, "product": shop.product.pk, "production_quantity": 1,
        "delivery_date": "2030-01-31", "priority": priority})
    assert_clear_4xx(response, 400, field="priority")


# --- headers and bodies of the wrong shape --------------------------------------------------------
@pytest.mark.parametrize("header", ["Token " + "a" * 100_000, "Token a b c", "Token \x00", "Bearer x", "Token"])
def test_hostile_authorization_headers_are_401(shop, header):
    response = b.client().get("/api/auth/me/", HTTP_AUTHORIZATION=header)
    assert_clear_4xx(response, 401)


@pytest.mark.parametrize("body", ['"just a string"', "[1, 2, 3]", "null", "42", "true"])
def test_body_that_is_not_an_object_is_400(shop, body):
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/", body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert ProgressReport.objects.count() == 0


def test_many_unknown_fields_are_ignored_not_fatal(shop):
    body = {f"field{i}": "x" * 10 for i in range(20_000)}
    body["quantity"] = 1
    assert len(json.dumps(body)) < MAX_BODY  # ~550 KB: under the limit, so judged on its content
    response = send(b.client(shop.cut_op), "POST", f"/api/tasks/{shop.first.pk}/update_progress/", body)
    assert response.status_code == 200, response.content[:200]
    assert response.json()["completed_quantity"] == 1 and ProgressReport.objects.count() == 1


def test_form_encoded_body_is_parsed_like_json(shop):
    response = b.client(shop.cut_op).post(f"/api/tasks/{shop.first.pk}/update_progress/", "quantity=1",
                                          content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content[:200]
    assert ProgressReport.objects.count() == 1


# --- a dependency failing mid-request (the fault test's findings, pinned in-process) ----------------
@pytest.mark.parametrize("error", ["OperationalError", "InterfaceError"])
def test_database_unavailable_is_503_with_retry_after(shop, monkeypatch, error):
    import django.db

    from workorder.production.models import TaskQuerySet

    def unavailable(*args, **kwargs):
        raise getattr(django.db, error)("server closed the connection unexpectedly")

    monkeypatch.setattr(TaskQuerySet, "visible_to", unavailable)
    response = b.client(shop.admin).get("/api/tasks/")
    body = assert_clear_4xx_or_5xx(response, 503, "database is unavailable")
    assert body["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"


def test_redis_cache_outage_degrades_to_misses():
    from workorder.core.cache import PrometheusRedisCache

    cache = PrometheusRedisCache("redis://127.0.0.1:9/0", {"OPTIONS": {"socket_connect_timeout": 0.5,
                                                                       "socket_timeout": 0.5}})
    assert cache.get("key", "default") == "default"
    cache.set("key", 1)  # no exception
    assert cache.add("lock", 1) is True  # "go ahead and recompute"
    assert cache.delete("lock") is False  # no exception


def test_statistics_answer_while_redis_is_down(shop, settings):
    """The statistics views read, lock, write and delete cache keys: all must survive an outage."""
    settings.CACHES = {"default": {"BACKEND": "workorder.core.cache.PrometheusRedisCache",
                                   "LOCATION": "redis://127.0.0.1:9/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    from django.core.cache import caches

    caches._settings = None  # let django.core.cache pick up the overridden CACHES
    try:
        for path in ("/api/statistics/task_summary/", "/api/statistics/department_workload/",
                     "/api/statistics/collaboration/", "/api/tasks/?page=1", "/api/workorders/"):
            response = b.client(shop.admin).get(path)
            assert response.status_code == 200, (path, response.content[:200])
    finally:
        caches._settings = None


def assert_clear_4xx_or_5xx(response, status: int, *words: str):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    return body
