"""Who sees what: operators/supervisors their department's tasks, makers their own orders, admins all;
anything else is a 404 (never someone else's data)."""

import pytest

from tests import domain_builders as b

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    shop = b.Shop()
    shop.wo = shop.approved()
    shop.first, shop.second = shop.tasks(shop.wo)
    shop.pending_wo = b.work_order(shop.maker, shop.product)
    shop.foreign_wo = b.approved_work_order(shop.other_maker, shop.product, shop.cut_sup)
    return shop


def ids(response):
    assert response.status_code == 200, response.json()
    return sorted(row["id"] for row in response.json()["results"])


def test_operator_sees_only_tasks_of_own_department(shop):
    listed = ids(b.client(shop.cut_op).get("/api/tasks/"))
    expected = sorted(t.pk for t in (shop.first, *shop.foreign_wo.tasks.filter(assigned_department=shop.cutting)))
    assert listed == expected
    assert b.client(shop.cut_op).get(f"/api/tasks/{shop.second.pk}/").status_code == 404


def test_supervisor_sees_only_tasks_of_own_department(shop):
    listed = ids(b.client(shop.weld_sup).get("/api/tasks/"))
    assert shop.second.pk in listed and shop.first.pk not in listed
    assert b.client(shop.weld_sup).get(f"/api/tasks/{shop.first.pk}/").status_code == 404


def test_maker_sees_own_work_orders_and_their_tasks_only(shop):
    api = b.client(shop.maker)
    assert ids(api.get("/api/workorders/")) == sorted([shop.wo.pk, shop.pending_wo.pk])
    assert ids(api.get("/api/tasks/")) == sorted([shop.first.pk, shop.second.pk])
    assert api.get(f"/api/workorders/{shop.foreign_wo.pk}/").status_code == 404
    foreign_task = shop.foreign_wo.tasks.first()
    assert api.get(f"/api/tasks/{foreign_task.pk}/").status_code == 404


def test_admin_sees_everything(shop):
    api = b.client(shop.admin)
    assert len(ids(api.get("/api/tasks/"))) == 4
    assert len(ids(api.get("/api/workorders/"))) == 3


def test_supervisor_sees_pending_orders_to_approve_and_orders_with_tasks_in_department(shop):
    listed = ids(b.client(shop.weld_sup).get("/api/workorders/"))
    assert listed == sorted([shop.wo.pk, shop.pending_wo.pk, shop.foreign_wo.pk])
    other = b.department()
    lonely_sup = b.supervisor(other)
    assert ids(b.client(lonely_sup).get("/api/workorders/")) == [shop.pending_wo.pk]


def test_operator_sees_work_orders_with_a_task_in_department_only(shop):
    assert ids(b.client(shop.weld_op).get("/api/workorders/")) == sorted([shop.wo.pk, shop.foreign_wo.pk])
    assert b.client(shop.weld_op).get(f"/api/workorders/{shop.pending_wo.pk}/").status_code == 404


def test_user_without_role_or_department_sees_nothing(shop):
    nobody = b.user("")
    deptless_operator = b.user("operator")
    for who in (nobody, deptless_operator):
        api = b.client(who)
        assert ids(api.get("/api/tasks/")) == []
        assert ids(api.get("/api/workorders/")) == []
        assert api.get(f"/api/tasks/{shop.first.pk}/").status_code == 404


def test_actions_on_invisible_objects_are_404(shop):
    assert b.client(shop.other_maker).post(f"/api/workorders/{shop.pending_wo.pk}/approve/").status_code == 404
    assert b.client(shop.weld_sup).post(
        f"/api/tasks/{shop.first.pk}/assign/", {"operator_id": shop.cut_op.pk}, format="json").status_code == 404
    assert b.client(shop.other_maker).patch(
        f"/api/workorders/{shop.wo.pk}/", {"priority": "low"}, format="json").status_code == 404


def test_notifications_list_shows_only_your_own_newest_first_and_unread_filter(shop):
    api = b.client(shop.maker)
    rows = api.get("/api/notifications/").json()["results"]
    assert rows and all(r["kind"].startswith("work_order") for r in rows)
    created = [r["created_at"] for r in rows]
    assert created == sorted(created, reverse=True)
    other = b.client(shop.other_maker).get("/api/notifications/").json()["results"]
    assert {r["id"] for r in rows}.isdisjoint({r["id"] for r in other})
    target = rows[0]
    assert api.post(f"/api/notifications/{target['id']}/read/").json()["read_at"] is not None
    assert b.client(shop.other_maker).post(f"/api/notifications/{target['id']}/read/").status_code == 404
    unread = api.get("/api/notifications/?unread=true").json()
    assert target["id"] not in [r["id"] for r in unread["results"]]
    assert api.get("/api/notifications/?unread=false").json()["count"] == 1
    assert api.post("/api/notifications/read_all/").json() == {"updated": unread["count"]}
    assert api.get("/api/notifications/?unread=true").json()["count"] == 0
    assert api.get("/api/notifications/?unread=maybe").status_code == 400


def test_notification_body_matches_the_websocket_message_fields(shop):
    row = b.client(shop.maker).get("/api/notifications/").json()["results"][0]
    assert set(row) == {"id", "kind", "message", "object", "read_at", "created_at"}
    assert row["kind"] == "work_order_approved"
    assert row["object"] == {"type": "production.workorder", "id": shop.wo.pk}


def test_notification_without_object_has_null_object(shop):
    from workorder.notifications.services import notify

    notify([shop.other_maker], "task_claimed", "no object", None)
    row = b.client(shop.other_maker).get("/api/notifications/").json()["results"][0]
    assert row["message"] == "no object" and row["object"] is None


def test_users_with_equal_visibility_scopes_see_equal_rows(shop):
    """The cached list counts are keyed by visibility_scope instead of the compiled query: two users with
    the same scope must see the same rows (else one would get the other's count)."""
    from workorder.accounts.models import User
    from workorder.production.models import Task, WorkOrder

    nobody = User.objects.create_user("scope-nobody", password=None)
    users = [shop.cut_op, shop.cut_op2, shop.weld_op, shop.cut_sup, shop.weld_sup, shop.maker, shop.other_maker,
             shop.admin, nobody]
    for model in (Task, WorkOrder):
        seen = {}
        for user in users:
            rows = frozenset(model.objects.visible_to(user).values_list("pk", flat=True))
            scope = model.objects.visibility_scope(user)
            assert seen.setdefault(scope, rows) == rows, (model.__name__, scope, user.username)
        assert len(seen) >= 5, seen  # the shop has admins, makers, two departments and a user without a role
