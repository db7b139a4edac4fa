"""Login/logout/me, the user directory (filters for assignment) and the read-only catalog."""

import pytest

from tests import domain_builders as b

pytestmark = pytest.mark.django_db


def test_login_returns_token_usable_with_authorization_header_then_logout_revokes_it():
    dept = b.department()
    op = b.operator(dept, username="olga")
    response = b.client().post("/api/auth/login/", {"username": "olga", "password": "pw-123456"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json()["user"]["username"] == "olga"
    api = b.client()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api.get("/api/auth/me/").json()
    assert (me["id"], me["role"], me["department"], me["department_name"]) == (op.pk, "operator", dept.pk, dept.name)
    assert api.post("/api/auth/logout/").status_code == 204
    assert api.get("/api/auth/me/").status_code == 401


def test_each_login_gets_its_own_token_and_both_stay_valid():
    b.maker(username="mia")
    api = b.client()
    first = api.post("/api/auth/login/", {"username": "mia", "password": "pw-123456"}, format="json").json()
    second = api.post("/api/auth/login/", {"username": "mia", "password": "pw-123456"}, format="json").json()
    assert first["token"] != second["token"]
    for key in (first["token"], second["token"]):
        assert b.client().get("/api/auth/me/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_inactive_user_cannot_log_in():
    b.maker(username="gone", is_active=False)
    response = b.client().post("/api/auth/login/", {"username": "gone", "password": "pw-123456"}, format="json")
    assert response.status_code == 400


def test_users_filter_by_role_and_department_for_assignment():
    shop = b.Shop()
    api = b.client(shop.cut_sup)
    rows = api.get(f"/api/users/?role=operator&department={shop.cutting.pk}").json()["results"]
    assert sorted(r["id"] for r in rows) == sorted([shop.cut_op.pk, shop.cut_op2.pk])
    assert all(r["role"] == "operator" and r["department"] == shop.cutting.pk for r in rows)
    makers = api.get("/api/users/?role=maker").json()["results"]
    assert {r["id"] for r in makers} == {shop.maker.pk, shop.other_maker.pk}
    assert "password" not in rows[0]


def test_catalog_endpoints_list_products_with_routing_customers_departments_processes():
    shop = b.Shop()
    cust = b.customer()
    api = b.client(shop.maker)
    products = api.get("/api/products/").json()["results"]
    product = next(p for p in products if p["id"] == shop.product.pk)
    assert [step["department"] for step in product["routing"]] == [shop.cutting.pk, shop.welding.pk]
    assert cust.pk in [c["id"] for c in api.get("/api/customers/").json()["results"]]
    departments = api.get("/api/departments/").json()["results"]
    assert {shop.cutting.pk, shop.welding.pk} <= {d["id"] for d in departments}
    processes = api.get(f"/api/processes/?department={shop.welding.pk}").json()["results"]
    assert [p["department"] for p in processes] == [shop.welding.pk]
    assert api.get(f"/api/products/{shop.product.pk}/").json()["sku"] == shop.product.sku


def test_catalog_is_read_only_over_the_api():
    shop = b.Shop()
    assert b.client(shop.admin).post("/api/products/", {"sku": "x", "name": "y"}, format="json").status_code == 405


def test_task_list_filters_and_ordering():
    shop = b.Shop()
    wo1 = shop.approved()
    wo2 = shop.approved()
    first, _ = shop.tasks(wo1)
    b.client(shop.cut_op).post(f"/api/tasks/{first.pk}/claim/")
    api = b.client(shop.admin)

    def ids(query):
        return [r["id"] for r in api.get(f"/api/tasks/?{query}").json()["results"]]

    assert ids(f"assigned_operator={shop.cut_op.pk}") == [first.pk]
    assert ids("status=in_progress") == [first.pk]
    assert sorted(ids(f"work_order={wo2.pk}")) == sorted(wo2.tasks.values_list("id", flat=True))
    assert len(ids(f"assigned_department={shop.welding.pk}")) == 2
    assert sorted(ids(f"process={first.process_id}")) == sorted([first.pk, shop.tasks(wo2)[0].pk])
    assert ids("ordering=-id") == sorted(ids("ordering=id"), reverse=True)


def test_work_order_list_filters():
    shop = b.Shop()
    cust = b.customer()
    urgent = b.work_order(shop.maker, shop.product, priority="urgent", cust=cust)
    approved = shop.approved()
    api = b.client(shop.admin)

    def ids(query):
        return [r["id"] for r in api.get(f"/api/workorders/?{query}").json()["results"]]

    assert ids("priority=urgent") == [urgent.pk]
    assert ids(f"customer={cust.pk}") == [urgent.pk]
    assert ids("approval_status=approved") == [approved.pk]
    assert set(ids("status=open")) == {urgent.pk, approved.pk}
    assert ids("ordering=id")[0] < ids("ordering=id")[-1]


# --- reference lists kept per process (core/api.py ReferenceListMixin) ---------------------------------
def test_a_catalog_list_is_answered_from_memory_until_its_time_is_up(settings, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workorder.core import api as views

    settings.REFERENCE_CACHE_SECONDS = 10
    clock = [1000.0]
    monkeypatch.setattr(views.time, "monotonic", lambda: clock[0])
    shop = b.Shop()
    api = b.client(shop.maker)
    first = api.get("/api/products/?page_size=5").json()
    b.product_with_routing(shop.cutting)  # an edit in the admin
    with CaptureQueriesContext(connection) as ctx:
        kept = api.get("/api/products/?page_size=5").json()
    assert kept == first
    assert not [q for q in ctx.captured_queries if "catalog_product" in q["sql"]]  # only the token lookup
    clock[0] += 10.5
    fresh = api.get("/api/products/?page_size=5").json()
    assert fresh["count"] == first["count"] + 1


def test_catalog_list_answers_are_kept_per_host_and_query_and_only_when_200(settings):
    settings.REFERENCE_CACHE_SECONDS = 10
    settings.ALLOWED_HOSTS = ["testserver", "other.example"]
    shop = b.Shop()
    for _ in range(3):
        b.customer()
    api = b.client(shop.maker)
    assert api.get("/api/customers/?page_size=1").json()["next"].startswith("http://testserver/")
    other = api.get("/api/customers/?page_size=1", HTTP_HOST="other.example").json()
    assert other["next"].startswith("http://other.example/")
    assert api.get("/api/customers/?page_size=2").json()["results"] != api.get(
        "/api/customers/?page_size=2&page=2").json()["results"]
    for _ in range(2):
        assert api.get("/api/customers/?page=abc").status_code == 400
        assert api.get("/api/customers/?page=99").status_code == 404
    b.customer()
    assert len(api.get("/api/customers/?page_size=50").json()["results"]) == 4  # a new query string
    settings.REFERENCE_CACHE_SECONDS = 0  # off: every answer computed
    assert len(api.get("/api/customers/?page_size=2&page=2").json()["results"]) == 2


def test_catalog_lists_still_need_a_signed_in_user_when_kept(settings):
    settings.REFERENCE_CACHE_SECONDS = 10
    shop = b.Shop()
    assert b.client(shop.maker).get("/api/products/").status_code == 200
    assert b.client().get("/api/products/").status_code == 401


def test_the_user_directory_is_kept_too_and_a_write_still_checks_the_database(settings):
    settings.REFERENCE_CACHE_SECONDS = 10
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    api = b.client(shop.cut_sup)
    path = f"/api/users/?role=operator&department={shop.cutting.pk}"
    listed = {row["id"] for row in api.get(path).json()["results"]}
    assert shop.cut_op2.pk in listed
    shop.cut_op2.is_active = False
    shop.cut_op2.save()
    assert {row["id"] for row in api.get(path).json()["results"]} == listed  # within the kept time
    response = api.post(f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op2.pk}, format="json")
    assert response.status_code == 400 and "operator_id" in response.json()["errors"]
    settings.REFERENCE_CACHE_SECONDS = 0
    assert shop.cut_op2.pk not in {row["id"] for row in api.get(path).json()["results"]}
