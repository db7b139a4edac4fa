"""/admin/ has every domain model registered and its pages render; production state is read-only there
and the admin actions (approve, reject, assign, complete) go through the services."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client

from tests import domain_builders as b
from workorder.notifications.models import Notification
from workorder.production.models import WorkOrder

pytestmark = pytest.mark.django_db

DOMAIN_APPS = ("catalog", "accounts", "production", "notifications")
CREATED_ONLY_BY_THE_APP = {"accounts.AuthToken"}  # API tokens: issued by a login, never typed into the admin


def test_every_domain_model_is_registered_in_admin():
    for label in DOMAIN_APPS:
        for model in apps.get_app_config(label).get_models():
            assert admin.site.is_registered(model), model


def test_admin_changelists_and_change_pages_render():
    shop = b.Shop()
    wo = shop.approved()
    client = Client()
    client.force_login(shop.admin)
    for label in DOMAIN_APPS:
        for model in apps.get_app_config(label).get_models():
            opts = model._meta
            assert client.get(f"/admin/{opts.app_label}/{opts.model_name}/").status_code == 200, opts.label
            add_status = 403 if opts.label in CREATED_ONLY_BY_THE_APP else 200
            assert client.get(f"/admin/{opts.app_label}/{opts.model_name}/add/").status_code == add_status, opts.label
    assert client.get(f"/admin/production/workorder/{wo.pk}/change/").status_code == 200
    task = wo.tasks.first()
    assert client.get(f"/admin/production/task/{task.pk}/change/").status_code == 200


# --- state is read-only; actions go through the services ---------------------------------------------
def admin_client(shop) -> Client:
    client = Client()
    client.force_login(shop.admin)
    return client


def form_inputs(response) -> set[str]:
    import re

    return set(re.findall(r'<(?:input|select|textarea)[^>]*\sname="([^"]+)"', response.content.decode()))


def test_state_fields_are_read_only_in_the_change_forms():
    shop = b.Shop()
    wo = shop.approved()
    first, _ = shop.tasks(wo)
    client = admin_client(shop)
    task_inputs = form_inputs(client.get(f"/admin/production/task/{first.pk}/change/"))
    assert {"work_order", "process", "planned_quantity"} <= task_inputs
    assert not {"status", "completed_quantity", "assigned_operator", "started_at", "completed_at"} & task_inputs
    order_inputs = form_inputs(client.get(f"/admin/production/workorder/{wo.pk}/change/"))
    assert {"delivery_date", "priority"} <= order_inputs
    # approved: the plan is frozen like in the API; the state always
    assert not {"approval_status", "status", "approved_by", "rejection_reason", "number", "customer", "product",
                "production_quantity"} & order_inputs
    assert not {"tasks-0-status", "tasks-0-completed_quantity", "tasks-0-assigned_operator"} & order_inputs
    pending_inputs = form_inputs(client.get(f"/admin/production/workorder/{b.work_order(shop.maker, shop.product).pk}/change/"))
    assert {"customer", "product", "production_quantity"} <= pending_inputs


def test_posting_a_state_field_changes_nothing():
    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    response = admin_client(shop).post(f"/admin/production/task/{first.pk}/change/", {
        "work_order": first.work_order_id, "process": first.process_id, "sequence": first.sequence,
        "assigned_department": first.assigned_department_id, "planned_quantity": first.planned_quantity,
        "status": "completed", "completed_quantity": first.planned_quantity, "assigned_operator": shop.cut_op.pk})
    assert response.status_code == 302, response.content[:2000]
    first.refresh_from_db()
    assert (first.status, first.completed_quantity, first.assigned_operator_id) == ("pending", 0, None)


def test_adding_a_work_order_in_admin_gives_it_a_number():
    shop = b.Shop()
    customer = b.customer()
    response = admin_client(shop).post("/admin/production/workorder/add/", {
        "customer": customer.pk, "product": shop.product.pk, "production_quantity": 3, "delivery_date": "2030-01-31",
        "priority": "normal", "created_by": shop.maker.pk,
        "tasks-TOTAL_FORMS": 0, "tasks-INITIAL_FORMS": 0, "tasks-MIN_NUM_FORMS": 0, "tasks-MAX_NUM_FORMS": 1000})
    assert response.status_code == 302, response.content[:2000]
    created = WorkOrder.objects.get(customer=customer)
    assert created.number.startswith("WO-") and created.approval_status == "pending"


def test_approve_action_creates_tasks_and_notifies_like_the_api():
    shop = b.Shop()
    wo = b.work_order(shop.maker, shop.product)
    response = admin_client(shop).post("/admin/production/workorder/", {
        "action": "approve_selected", "_selected_action": [wo.pk]}, follow=True)
    assert "Approved: 1." in response.content.decode()
    wo.refresh_from_db()
    assert wo.approval_status == "approved" and wo.approved_by_id == shop.admin.pk
    assert wo.tasks.count() == 2
    assert kinds(shop.maker) == ["work_order_approved"]
    assert kinds(shop.cut_sup) == ["work_order_approved"] and kinds(shop.weld_sup) == ["work_order_approved"]


def test_approving_an_approved_order_in_admin_is_an_error_message():
    shop = b.Shop()
    wo = shop.approved()
    response = admin_client(shop).post("/admin/production/workorder/", {
        "action": "approve_selected", "_selected_action": [wo.pk]}, follow=True)
    assert f"{wo.number}: Work order {wo.number} is already approved." in response.content.decode()
    assert wo.tasks.count() == 2


def test_reject_action_needs_the_reason_and_notifies_the_maker():
    shop = b.Shop()
    wo = b.work_order(shop.maker, shop.product)
    client = admin_client(shop)
    refused = client.post("/admin/production/workorder/", {
        "action": "reject_selected", "_selected_action": [wo.pk], "reason": ""}, follow=True)
    assert "A reason is required to reject a work order." in refused.content.decode()
    client.post("/admin/production/workorder/", {
        "action": "reject_selected", "_selected_action": [wo.pk], "reason": "No capacity"}, follow=True)
    wo.refresh_from_db()
    assert (wo.approval_status, wo.status, wo.rejection_reason) == ("rejected", "cancelled", "No capacity")
    assert kinds(shop.maker) == ["work_order_rejected"]


def test_assign_and_complete_actions_go_through_the_services():
    shop = b.Shop()
    wo = shop.approved()
    first, second = shop.tasks(wo)
    Notification.objects.all().delete()
    client = admin_client(shop)
    wrong = client.post("/admin/production/task/", {
        "action": "assign_selected", "_selected_action": [second.pk], "operator": shop.cut_op.pk}, follow=True)
    assert "is not in the task&#x27;s department" in wrong.content.decode()
    client.post("/admin/production/task/", {
        "action": "assign_selected", "_selected_action": [first.pk], "operator": shop.cut_op.pk}, follow=True)
    client.post("/admin/production/task/", {
        "action": "assign_selected", "_selected_action": [second.pk], "operator": shop.weld_op.pk}, follow=True)
    first.refresh_from_db()
    assert (first.status, first.assigned_operator_id) == ("in_progress", shop.cut_op.pk)
    assert kinds(shop.cut_op) == ["task_assigned"]
    response = client.post("/admin/production/task/", {
        "action": "complete_selected", "_selected_action": [first.pk, second.pk]}, follow=True)
    assert "Completed: 2." in response.content.decode()
    wo.refresh_from_db()
    assert wo.status == "completed"
    assert kinds(shop.maker) == ["task_assigned", "task_assigned", "task_completed", "task_completed",
                                 "work_order_completed"]


def kinds(user) -> list[str]:
    return sorted(Notification.objects.filter(recipient=user).values_list("kind", flat=True))
