"""Every business rule of work orders and tasks, exercised through the REST API (DRF APIClient, real PostgreSQL)."""

import datetime as dt
import re

import pytest

from tests import domain_builders as b
from workorder.notifications.models import Notification
from workorder.production.models import ProgressReport, Task, WorkOrder

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    return b.Shop()


def post(user, path, data=None):
    return b.client(user).post(path, data or {}, format="json")


# --- work orders: create, number, approve, reject, patch -----------------------------------------
def test_maker_creates_work_order_with_human_readable_unique_number(shop):
    body = {"customer": b.customer().pk, "product": shop.product.pk, "production_quantity": 25,
            "delivery_date": "2030-01-31", "priority": "high"}
    first = post(shop.maker, "/api/workorders/", body)
    second = post(shop.maker, "/api/workorders/", body)
    assert first.status_code == 201, first.json()
    data = first.json()
    assert re.fullmatch(r"WO-\d{4}-\d{6}", data["number"])
    assert data["approval_status"] == "pending" and data["status"] == "open"
    assert data["created_by"] == shop.maker.pk and data["priority"] == "high"
    assert second.json()["number"] != data["number"]


def test_operator_cannot_create_work_order(shop):
    body = {"customer": b.customer().pk, "product": shop.product.pk, "production_quantity": 5,
            "delivery_date": "2030-01-31"}
    response = post(shop.cut_op, "/api/workorders/", body)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_create_work_order_rejects_zero_quantity_and_unknown_product(shop):
    body = {"customer": b.customer().pk, "product": 999999, "production_quantity": 0,
            "delivery_date": "2030-01-31"}
    response = post(shop.maker, "/api/workorders/", body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"product", "production_quantity"}


def test_approving_creates_one_task_per_routing_step_in_routing_order(shop):
    wo = b.work_order(shop.maker, shop.product, quantity=40)
    response = post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/")
    assert response.status_code == 200, response.json()
    assert response.json()["approval_status"] == "approved"
    tasks = list(Task.objects.filter(work_order=wo).order_by("sequence"))
    assert [(t.sequence, t.assigned_department_id, t.planned_quantity, t.status) for t in tasks] == [
        (1, shop.cutting.pk, 40, "pending"), (2, shop.welding.pk, 40, "pending")]
    assert all(t.assigned_operator_id is None for t in tasks)


def test_only_supervisors_and_admins_approve(shop):
    wo = b.work_order(shop.maker, shop.product)
    assert post(shop.maker, f"/api/workorders/{wo.pk}/approve/").status_code == 403
    assert post(shop.admin, f"/api/workorders/{wo.pk}/approve/").status_code == 200


def test_approving_or_rejecting_a_non_pending_order_is_409(shop):
    wo = b.work_order(shop.maker, shop.product)
    assert post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/").status_code == 200
    again = post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    assert post(shop.cut_sup, f"/api/workorders/{wo.pk}/reject/", {"reason": "late"}).status_code == 409
    assert Task.objects.filter(work_order=wo).count() == 2  # no second set of tasks


def test_rejecting_needs_a_reason(shop):
    wo = b.work_order(shop.maker, shop.product)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        response = post(shop.cut_sup, f"/api/workorders/{wo.pk}/reject/", body)
        assert response.status_code == 400 and "reason" in response.json()["errors"]
    response = post(shop.cut_sup, f"/api/workorders/{wo.pk}/reject/", {"reason": "Material not available"})
    assert response.status_code == 200
    assert response.json()["approval_status"] == "rejected"
    assert response.json()["rejection_reason"] == "Material not available"
    assert not Task.objects.filter(work_order=wo).exists()


def test_approving_a_product_without_routing_is_409_and_creates_nothing(shop):
    wo = b.work_order(shop.maker, b.product_with_routing())
    assert post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/").status_code == 409
    wo.refresh_from_db()
    assert wo.approval_status == "pending"


def test_patch_changes_plan_only_while_pending_and_schedule_until_finished(shop):
    wo = b.work_order(shop.maker, shop.product, quantity=10)
    api = b.client(shop.maker)
    assert api.patch(f"/api/workorders/{wo.pk}/", {"production_quantity": 12}, format="json").status_code == 200
    post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/")
    conflict = api.patch(f"/api/workorders/{wo.pk}/", {"production_quantity": 15}, format="json")
    assert conflict.status_code == 409
    ok = api.patch(f"/api/workorders/{wo.pk}/", {"priority": "urgent", "delivery_date": "2031-02-03"}, format="json")
    assert ok.status_code == 200 and ok.json()["priority"] == "urgent"
    wo.refresh_from_db()
    assert wo.production_quantity == 12 and wo.delivery_date == dt.date(2031, 2, 3)


def test_put_is_not_offered_on_work_orders(shop):
    wo = b.work_order(shop.maker, shop.product)
    response = b.client(shop.maker).put(f"/api/workorders/{wo.pk}/", {}, format="json")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


# --- claim ----------------------------------------------------------------------------------------
def test_operator_claims_pending_unassigned_task_of_own_department(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/claim/")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["status"] == "in_progress" and data["assigned_operator"] == shop.cut_op.pk
    assert data["assigned_operator_username"] == shop.cut_op.username
    assert WorkOrder.objects.get(pk=first.work_order_id).status == "in_progress"


def test_claiming_an_already_claimed_task_is_409(shop):
    first, _ = shop.tasks(shop.approved())
    assert post(shop.cut_op, f"/api/tasks/{first.pk}/claim/").status_code == 200
    response = post(shop.cut_op2, f"/api/tasks/{first.pk}/claim/")
    assert response.status_code == 409
    first.refresh_from_db()
    assert first.assigned_operator_id == shop.cut_op.pk


def test_claiming_another_departments_task_is_404(shop):
    _, second = shop.tasks(shop.approved())
    assert post(shop.cut_op, f"/api/tasks/{second.pk}/claim/").status_code == 404


def test_supervisor_cannot_claim(shop):
    first, _ = shop.tasks(shop.approved())
    assert post(shop.cut_sup, f"/api/tasks/{first.pk}/claim/").status_code == 403


# --- assign ---------------------------------------------------------------------------------------
def test_supervisor_assigns_task_to_operator_of_its_department(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op2.pk})
    assert response.status_code == 200, response.json()
    assert response.json()["assigned_operator"] == shop.cut_op2.pk
    assert response.json()["status"] == "in_progress"


def test_assigning_unknown_operator_is_400_with_message(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": 987654})
    assert response.status_code == 400
    assert "no active operator" in response.json()["errors"]["operator_id"][0]


def test_assigning_a_non_operator_is_400(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.maker.pk})
    assert response.status_code == 400 and "operator_id" in response.json()["errors"]


def test_assigning_operator_of_wrong_department_is_400_with_message(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.weld_op.pk})
    assert response.status_code == 400
    message = response.json()["errors"]["operator_id"][0]
    assert shop.weld_op.username in message and shop.cutting.name in message
    first.refresh_from_db()
    assert first.assigned_operator_id is None


def test_operator_cannot_assign(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op.pk})
    assert response.status_code == 403


def test_assigning_a_completed_task_is_409(shop):
    first, _ = shop.tasks(shop.approved(quantity=5))
    post(shop.cut_op, f"/api/tasks/{first.pk}/claim/")
    post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 5})
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op2.pk})
    assert response.status_code == 409


def test_supervisor_reassigns_in_progress_task(shop):
    first, _ = shop.tasks(shop.approved())
    post(shop.cut_op, f"/api/tasks/{first.pk}/claim/")
    response = post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op2.pk})
    assert response.status_code == 200 and response.json()["assigned_operator"] == shop.cut_op2.pk


# --- progress ---------------------------------------------------------------------------------------
def claimed(shop, quantity=10):
    wo = shop.approved(quantity=quantity)
    first, second = shop.tasks(wo)
    assert post(shop.cut_op, f"/api/tasks/{first.pk}/claim/").status_code == 200
    return wo, first, second


@pytest.mark.parametrize("quantity", [0, -3])
def test_progress_quantity_must_be_positive(shop, quantity):
    _, first, _ = claimed(shop)
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": quantity})
    assert response.status_code == 400 and "quantity" in response.json()["errors"]
    assert not ProgressReport.objects.exists()


def test_progress_is_recorded_as_a_row_per_report(shop):
    _, first, _ = claimed(shop)
    for quantity in (3, 4):
        response = post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": quantity})
        assert response.status_code == 200
    assert response.json()["completed_quantity"] == 7 and response.json()["status"] == "in_progress"
    reports = list(ProgressReport.objects.filter(task=first).order_by("id").values_list("operator", "quantity"))
    assert reports == [(shop.cut_op.pk, 3), (shop.cut_op.pk, 4)]
    detail = b.client(shop.cut_op).get(f"/api/tasks/{first.pk}/").json()
    assert [r["quantity"] for r in detail["progress_reports"]] == [4, 3]


def test_progress_only_by_assigned_operator(shop):
    _, first, _ = claimed(shop)
    response = post(shop.cut_op2, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 1})
    assert response.status_code == 403
    assert post(shop.cut_sup, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 1}).status_code == 403


def test_progress_on_a_pending_task_is_409(shop):
    first, _ = shop.tasks(shop.approved())
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 1})
    assert response.status_code == 409


def test_progress_beyond_planned_is_409_and_records_nothing(shop):
    _, first, _ = claimed(shop, quantity=10)
    assert post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 8}).status_code == 200
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 3})
    assert response.status_code == 409 and "planned" in response.json()["detail"]
    first.refresh_from_db()
    assert first.completed_quantity == 8 and ProgressReport.objects.filter(task=first).count() == 1


def test_step_may_not_report_more_than_previous_step_completed(shop):
    _, first, second = claimed(shop, quantity=10)
    post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 4})
    assert post(shop.weld_op, f"/api/tasks/{second.pk}/claim/").status_code == 200
    assert post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 3}).status_code == 200
    too_many = post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 2})
    assert too_many.status_code == 409 and "previous step" in too_many.json()["detail"]
    second.refresh_from_db()
    assert second.completed_quantity == 3
    assert post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 1}).status_code == 200


def test_reaching_planned_quantity_completes_task_and_last_task_completes_work_order(shop):
    wo, first, second = claimed(shop, quantity=6)
    done = post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 6}).json()
    assert done["status"] == "completed" and done["completed_at"]
    wo.refresh_from_db()
    assert wo.status == "in_progress"
    post(shop.weld_op, f"/api/tasks/{second.pk}/claim/")
    assert post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 6}).json()["status"] == "completed"
    wo.refresh_from_db()
    assert wo.status == "completed" and wo.completed_at is not None
    after = post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 1})
    assert after.status_code == 409


# --- complete ------------------------------------------------------------------------------------------
def test_complete_closes_in_progress_task_by_its_operator(shop):
    _, first, _ = claimed(shop)
    post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 2})
    assert post(shop.cut_op2, f"/api/tasks/{first.pk}/complete/").status_code == 403
    response = post(shop.cut_op, f"/api/tasks/{first.pk}/complete/")
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert post(shop.cut_op, f"/api/tasks/{first.pk}/complete/").status_code == 409


def test_complete_of_pending_task_is_409(shop):
    first, _ = shop.tasks(shop.approved())
    assert post(shop.cut_sup, f"/api/tasks/{first.pk}/complete/").status_code == 409


def test_completing_all_tasks_via_complete_completes_work_order(shop):
    wo, first, second = claimed(shop)
    post(shop.cut_sup, f"/api/tasks/{first.pk}/complete/")
    post(shop.weld_sup, f"/api/tasks/{second.pk}/assign/", {"operator_id": shop.weld_op.pk})
    assert post(shop.weld_sup, f"/api/tasks/{second.pk}/complete/").status_code == 200
    wo.refresh_from_db()
    assert wo.status == "completed"


# --- notifications ---------------------------------------------------------------------------------
def kinds_for(user):
    return sorted(Notification.objects.filter(recipient=user).values_list("kind", flat=True))


def test_approval_notifies_maker_and_supervisors_of_task_departments(shop):
    wo = b.work_order(shop.maker, shop.product)
    post(shop.admin, f"/api/workorders/{wo.pk}/approve/")
    assert kinds_for(shop.maker) == ["work_order_approved"]
    assert kinds_for(shop.cut_sup) == ["work_order_approved"]
    assert kinds_for(shop.weld_sup) == ["work_order_approved"]
    assert kinds_for(shop.cut_op) == []
    note = Notification.objects.get(recipient=shop.maker)
    assert note.object_type == "production.workorder" and note.object_id == wo.pk


def test_rejection_notifies_the_maker(shop):
    wo = b.work_order(shop.maker, shop.product)
    post(shop.cut_sup, f"/api/workorders/{wo.pk}/reject/", {"reason": "No capacity"})
    assert kinds_for(shop.maker) == ["work_order_rejected"]
    assert "No capacity" in Notification.objects.get(recipient=shop.maker).message


def test_assignment_notifies_assignee_and_maker_but_not_the_acting_supervisor(shop):
    first, _ = shop.tasks(shop.approved())
    Notification.objects.all().delete()
    post(shop.cut_sup, f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op.pk})
    assert kinds_for(shop.cut_op) == ["task_assigned"]
    assert kinds_for(shop.maker) == ["task_assigned"]
    assert kinds_for(shop.cut_sup) == []
    assert kinds_for(shop.weld_sup) == []


def test_claim_notifies_department_supervisors_and_maker(shop):
    first, _ = shop.tasks(shop.approved())
    Notification.objects.all().delete()
    post(shop.cut_op, f"/api/tasks/{first.pk}/claim/")
    assert kinds_for(shop.cut_sup) == ["task_claimed"]
    assert kinds_for(shop.maker) == ["task_claimed"]
    assert kinds_for(shop.cut_op) == []


def test_completion_notifies_supervisors_and_maker_and_work_order_completion_notifies_maker(shop):
    _, first, second = claimed(shop, quantity=2)
    Notification.objects.all().delete()
    post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 2})
    assert kinds_for(shop.cut_sup) == ["task_completed"]
    assert kinds_for(shop.maker) == ["task_completed"]
    post(shop.weld_op, f"/api/tasks/{second.pk}/claim/")
    post(shop.weld_op, f"/api/tasks/{second.pk}/update_progress/", {"quantity": 2})
    assert "work_order_completed" in kinds_for(shop.maker)


def test_notifications_are_pushed_after_commit_only(shop, monkeypatch, django_capture_on_commit_callbacks):
    from workorder.notifications import delivery

    pushed = []
    monkeypatch.setattr(delivery, "push", lambda rows: pushed.append([n.recipient_id for n in rows]))
    wo = b.work_order(shop.maker, shop.product)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post(shop.cut_sup, f"/api/workorders/{wo.pk}/approve/")
    assert pushed == []  # nothing before commit
    for callback in callbacks:
        callback()
    assert sorted(recipient for batch in pushed for recipient in batch) == sorted([shop.maker.pk, shop.weld_sup.pk])


def test_a_failed_action_creates_no_notifications(shop):
    _, first, _ = claimed(shop, quantity=3)
    before = Notification.objects.count()
    post(shop.cut_op, f"/api/tasks/{first.pk}/update_progress/", {"quantity": 4})
    assert Notification.objects.count() == before


def test_notify_stores_exactly_what_bulk_create_stores_for_every_recipient(shop):
    """notify() writes PostgreSQL's rows with one INSERT over an array of recipients: the same rows,
    every column, as the model's bulk_create, and returns them as saved instances with their ids."""
    from django.db import connection

    from workorder.notifications import services

    assert connection.vendor == "postgresql"
    concrete = {field.name for field in Notification._meta.concrete_fields}
    assert concrete == {"id", "read_at", *services.INSERTED_FIELDS}  # a new column must be inserted too
    recipients = [shop.weld_sup.pk, shop.maker.pk, shop.cut_op.pk, shop.maker.pk]
    task = shop.tasks(shop.approved())[0]
    rows = services.notify(recipients, "task_assigned", "x" * 600, task, exclude=shop.cut_op)
    assert [row.recipient_id for row in rows] == [shop.weld_sup.pk, shop.maker.pk]  # order kept, once each
    assert all(row.pk and not row._state.adding and row._state.db == "default" for row in rows)
    reference = Notification.objects.bulk_create(
        [Notification(recipient_id=row.recipient_id, kind=row.kind, message=row.message, object_type=row.object_type,
                      object_id=row.object_id, created_at=row.created_at) for row in rows])
    fields = sorted(concrete - {"id"})

    def stored(pks):
        return [tuple(getattr(n, f) for f in fields) for n in Notification.objects.filter(pk__in=pks).order_by("pk")]

    assert stored([row.pk for row in rows]) == stored([row.pk for row in reference])
    assert [tuple(getattr(row, f) for f in fields) for row in rows] == stored([row.pk for row in rows])
    assert rows[0].message == "x" * 500 and rows[0].object_type == "production.task" and rows[0].read_at is None
