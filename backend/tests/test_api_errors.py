"""JSON errors everywhere, one shape: {"detail", "code", "errors"}; bad input never gives a 500."""

import pytest

from tests import domain_builders as b

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    shop = b.Shop()
    shop.wo = shop.approved()
    shop.first, shop.second = shop.tasks(shop.wo)
    return shop


def assert_error(response, status, code=None):
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    assert isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["code"] == code
    return body


def test_unauthenticated_requests_get_401_json(shop):
    anonymous = b.client()
    for path in ("/api/tasks/", "/api/workorders/", f"/api/tasks/{shop.first.pk}/", "/api/statistics/task_summary/",
                 "/api/notifications/", "/api/auth/me/", "/api/products/"):
        assert_error(anonymous.get(path), 401, "not_authenticated")


def test_invalid_token_is_401(shop):
    api = b.client()
    api.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(api.get("/api/tasks/"), 401, "authentication_failed")


def test_malformed_json_is_400(shop):
    api = b.client(shop.cut_op)
    response = api.generic("POST", f"/api/tasks/{shop.first.pk}/update_progress/", '{"quantity": ',
                           content_type="application/json")
    assert_error(response, 400, "parse_error")


@pytest.mark.parametrize("quantity", ["abc", None, [], {}, 1.5, "", 10**30])
def test_wrong_types_give_400_with_field_message(shop, quantity):
    b.client(shop.cut_op).post(f"/api/tasks/{shop.first.pk}/claim/")
    response = b.client(shop.cut_op).post(f"/api/tasks/{shop.first.pk}/update_progress/", {"quantity": quantity},
                                          format="json")
    body = assert_error(response, 400, "invalid")
    assert list(body["errors"]) == ["quantity"] and body["errors"]["quantity"]


def test_body_that_is_not_an_object_is_400(shop):
    response = b.client(shop.cut_sup).post(f"/api/tasks/{shop.first.pk}/assign/", [1, 2], format="json")
    assert_error(response, 400, "invalid")


@pytest.mark.parametrize("operator_id", ["x", -1, 0, 2**70, None, True])
def test_bad_operator_ids_give_400(shop, operator_id):
    response = b.client(shop.cut_sup).post(f"/api/tasks/{shop.first.pk}/assign/", {"operator_id": operator_id},
                                           format="json")
    assert_error(response, 400, "invalid")


@pytest.mark.parametrize("query", [
    "status=bogus", "assigned_department=abc", "assigned_operator=1.5", "work_order=-1", "process=99999999999999999999",
    "page=0", "page=abc", "page_size=0", "page_size=-5", "page_size=lots",
])
def test_unknown_filter_and_paging_values_give_400(shop, query):
    body = assert_error(b.client(shop.admin).get(f"/api/tasks/?{query}"), 400, "invalid")
    assert body["errors"]


@pytest.mark.parametrize("query", ["status=bogus", "approval_status=maybe", "priority=asap", "customer=x"])
def test_unknown_work_order_filter_values_give_400(shop, query):
    assert_error(b.client(shop.admin).get(f"/api/workorders/?{query}"), 400, "invalid")


def test_users_filter_rejects_unknown_role(shop):
    assert_error(b.client(shop.admin).get("/api/users/?role=wizard"), 400, "invalid")


def test_page_past_the_end_is_404_json(shop):
    assert_error(b.client(shop.admin).get("/api/tasks/?page=50"), 404, "not_found")


def test_page_size_above_maximum_is_clamped_to_100(shop):
    shop.long_order(105)  # 107 tasks in all
    response = b.client(shop.admin).get("/api/tasks/?page_size=100000")
    assert response.status_code == 200
    body = response.json()
    assert (len(body["results"]), body["count"]) == (100, 107)
    assert len(b.client(shop.admin).get(body["next"]).json()["results"]) == 7


@pytest.mark.parametrize("path", ["/api/tasks/999999/", "/api/tasks/abc/", "/api/tasks/99999999999999999999999/",
                                  "/api/workorders/0/", "/api/notifications/123456/", "/api/products/777777/"])
def test_unknown_objects_are_404_json(shop, path):
    assert_error(b.client(shop.admin).get(path), 404, "not_found")


def test_actions_on_unknown_objects_are_404_json(shop):
    assert_error(b.client(shop.cut_op).post("/api/tasks/999999/claim/"), 404, "not_found")


def test_conflict_is_409_json(shop):
    b.client(shop.cut_op).post(f"/api/tasks/{shop.first.pk}/claim/")
    assert_error(b.client(shop.cut_op2).post(f"/api/tasks/{shop.first.pk}/claim/"), 409, "conflict")


def test_forbidden_is_403_json(shop):
    assert_error(b.client(shop.maker).post(f"/api/workorders/{shop.wo.pk}/approve/"), 403, "permission_denied")


def test_wrong_method_is_405_json(shop):
    assert_error(b.client(shop.admin).delete(f"/api/tasks/{shop.first.pk}/"), 405, "method_not_allowed")


def test_work_order_create_with_bad_types_is_400_per_field(shop):
    response = b.client(shop.maker).post("/api/workorders/", {
        "customer": "x", "product": [1], "production_quantity": "many", "delivery_date": "31/12/2026",
        "priority": "asap"}, format="json")
    body = assert_error(response, 400, "invalid")
    assert set(body["errors"]) == {"customer", "product", "production_quantity", "delivery_date", "priority"}


def test_null_characters_in_strings_are_400(shop):
    wo = b.work_order(shop.maker, shop.product)
    response = b.client(shop.cut_sup).post(f"/api/workorders/{wo.pk}/reject/", {"reason": "bad\x00reason"},
                                           format="json")
    assert_error(response, 400, "invalid")


def test_login_with_bad_credentials_is_400(shop):
    response = b.client().post("/api/auth/login/", {"username": shop.maker.username, "password": "wrong"},
                               format="json")
    body = assert_error(response, 400, "invalid")
    assert "non_field_errors" in body["errors"]
    assert_error(b.client().post("/api/auth/login/", {}, format="json"), 400, "invalid")


@pytest.mark.parametrize("path", ["/api/tasks/1.5/", "/api/nope/", "/api/tasks/1/nope/", "/api/"])
def test_unmatched_api_paths_are_404_json(shop, path):
    assert_error(b.client(shop.admin).get(path), 404, "not_found")


def test_actions_on_non_numeric_ids_are_404_json(shop):
    assert_error(b.client(shop.admin).post("/api/notifications/-1.1/read/"), 404, "not_found")


@pytest.mark.parametrize("field,value", [("customer", 10**30), ("product", 2**63), ("customer", -5),
                                         ("production_quantity", 10**30), ("delivery_date", "10000-01-01"),
                                         ("priority", None)])
def test_out_of_range_values_in_work_order_bodies_are_400(shop, field, value):
    body = {"customer": b.customer().pk, "product": shop.product.pk, "production_quantity": 5,
            "delivery_date": "2030-01-01", "priority": "low", field: value}
    body_errors = assert_error(b.client(shop.maker).post("/api/workorders/", body, format="json"), 400)["errors"]
    assert field in body_errors
    wo = b.work_order(shop.maker, shop.product)
    patch = b.client(shop.maker).patch(f"/api/workorders/{wo.pk}/", {field: value}, format="json")
    assert field in assert_error(patch, 400)["errors"]


def test_form_encoded_and_unsupported_media_types_do_not_crash(shop):
    api = b.client(shop.cut_op)
    b.client(shop.cut_op).post(f"/api/tasks/{shop.first.pk}/claim/")
    form = api.post(f"/api/tasks/{shop.first.pk}/update_progress/", {"quantity": "2"})
    assert form.status_code == 200
    odd = api.generic("POST", f"/api/tasks/{shop.first.pk}/update_progress/", "quantity=2", content_type="text/plain")
    assert_error(odd, 415, "unsupported_media_type")
