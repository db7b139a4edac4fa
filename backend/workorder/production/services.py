"""Business rules for work orders and tasks: the only place that changes their state.

Every state change runs in transaction.atomic() and either locks the row it decides on
(select_for_update) or is a conditional UPDATE whose WHERE clause is the rule, so parallel
requests cannot both succeed where only one may (claims) nor lose an update (progress reports).
Which state may follow which comes from the transition tables in states.py. Rule violations raise
domain errors (workorder.core.errors), which the API edge turns into 400/403/404/409 and the admin
into messages. After each change an event (events.py) tells the apps above (notifications).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from workorder.accounts.models import Role, User
from workorder.catalog.models import RoutingStep
from workorder.core.errors import Conflict, NotFound, PermissionDenied, ValidationError

from . import events
from .models import NumberSequence, ProgressReport, Task, WorkOrder
from .states import APPROVAL, TASK, WORK_ORDER


# --- numbers ------------------------------------------------------------------------------------
def reserve_numbers(name: str, count: int = 1) -> int:
    """Reserve `count` consecutive values of counter `name`; returns the first. Row-locked until commit."""
    with transaction.atomic():
        NumberSequence.objects.get_or_create(name=name)
        NumberSequence.objects.filter(name=name).update(last_value=F("last_value") + count)
        last = NumberSequence.objects.values_list("last_value", flat=True).get(name=name)
    return last - count + 1


def work_order_number_prefix(year: int) -> str:
    return f"WO-{year}"


def format_work_order_number(year: int, value: int) -> str:
    return f"{work_order_number_prefix(year)}-{value:06d}"


def next_work_order_number(today: dt.date | None = None) -> str:
    year = (today or timezone.localdate()).year
    return format_work_order_number(year, reserve_numbers(work_order_number_prefix(year)))


# --- roles ----------------------------------------------------------------------------------------
def require_can_create_work_order(user) -> None:
    if not (user.is_admin or user.role in (Role.MAKER, Role.SUPERVISOR)):
        raise PermissionDenied("Only makers, supervisors and admins create work orders.")


def require_supervisor(user, action: str) -> None:
    if not (user.is_admin or user.role == Role.SUPERVISOR):
        raise PermissionDenied(f"Only supervisors and admins {action}.")


def _locked(model, pk: int):
    try:
        return model.objects.select_for_update().get(pk=pk)
    except model.DoesNotExist:
        raise NotFound() from None


def _locked_task(task_id: int) -> Task:
    """The task row, locked, with its work order and process read in the same query (the notifications
    name both) but not locked: other tasks of the order stay writable."""
    try:
        return Task.objects.select_for_update(of=("self",)).select_related("work_order", "process").get(pk=task_id)
    except Task.DoesNotExist:
        raise NotFound() from None


# --- work orders --------------------------------------------------------------------------------
def create_work_order(user, *, customer, product, production_quantity: int, delivery_date,
                      priority: str) -> WorkOrder:
    require_can_create_work_order(user)
    with transaction.atomic():
        return WorkOrder.objects.create(
            number=next_work_order_number(),
            customer=customer,
            product=product,
            production_quantity=production_quantity,
            delivery_date=delivery_date,
            priority=priority,
            created_by=user,
        )


PLAN_FIELDS = {"customer", "product", "production_quantity"}


def update_work_order(user, work_order_id: int, changes: dict) -> WorkOrder:
    """PATCH: the plan (customer, product, quantity) only while pending approval; the schedule
    (delivery date, priority) while the order is not finished. Makers edit their own orders."""
    if not (user.is_admin or user.role in (Role.MAKER, Role.SUPERVISOR)):
        raise PermissionDenied("Only the maker, supervisors and admins change work orders.")
    with transaction.atomic():
        work_order = _locked(WorkOrder, work_order_id)
        if user.role == Role.MAKER and not user.is_admin and work_order.created_by_id != user.pk:
            raise PermissionDenied("Makers change only their own work orders.")
        if PLAN_FIELDS & changes.keys():
            APPROVAL.require("change_plan", work_order.approval_status, number=work_order.number)
        if changes:
            WORK_ORDER.require("change", work_order.status, number=work_order.number)
            for field, value in changes.items():
                setattr(work_order, field, value)
            work_order.save(update_fields=[*changes.keys(), "updated_at"])
        return work_order


def approve_work_order(user, work_order_id: int) -> WorkOrder:
    """pending -> approved, creating one task per routing step (one bulk INSERT). A supervisor may not
    approve a work order they created (four eyes) unless WORKORDER_ALLOW_SELF_APPROVAL is on."""
    require_supervisor(user, "approve work orders")
    with transaction.atomic():
        work_order = _locked(WorkOrder, work_order_id)
        if (work_order.created_by_id == user.pk and not user.is_admin
                and not settings.WORKORDER_ALLOW_SELF_APPROVAL):
            raise PermissionDenied(
                f"Work order {work_order.number} was created by you; another supervisor must approve it.")
        approved = APPROVAL.target("approve", work_order.approval_status, number=work_order.number)
        steps = list(
            RoutingStep.objects.filter(product_id=work_order.product_id)
            .select_related("process").order_by("sequence")
        )
        if not steps:
            raise Conflict(f"Product of work order {work_order.number} has no routing; add routing steps first.")
        now = timezone.now()
        tasks = Task.objects.bulk_create(
            [
                Task(work_order=work_order, process=step.process, sequence=index,
                     assigned_department_id=step.process.department_id,
                     planned_quantity=work_order.production_quantity, created_at=now)
                for index, step in enumerate(steps, start=1)
            ]
        )
        work_order.approval_status = approved
        work_order.approved_by = user
        work_order.approved_at = now
        work_order.save(update_fields=["approval_status", "approved_by", "approved_at", "updated_at"])
        events.publish(events.WorkOrderApproved(user, work_order, tasks))
    return work_order


def reject_work_order(user, work_order_id: int, reason: str) -> WorkOrder:
    """pending -> rejected; the order is cancelled."""
    require_supervisor(user, "reject work orders")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["A reason is required to reject a work order."]})
    with transaction.atomic():
        work_order = _locked(WorkOrder, work_order_id)
        work_order.approval_status = APPROVAL.target("reject", work_order.approval_status, number=work_order.number)
        work_order.status = WORK_ORDER.target("cancel", work_order.status, number=work_order.number)
        work_order.rejection_reason = reason
        work_order.approved_by = user
        work_order.approved_at = timezone.now()
        work_order.save(update_fields=["approval_status", "status", "rejection_reason", "approved_by",
                                       "approved_at", "updated_at"])
        events.publish(events.WorkOrderRejected(user, work_order, reason))
    return work_order


def _start_work_order(work_order_id: int, now) -> None:
    """The first task started: open -> in progress (a no-op for an order already in progress)."""
    WorkOrder.objects.filter(pk=work_order_id, status__in=WORK_ORDER.sources("start")).update(
        status=WORK_ORDER.target("start"), updated_at=now
    )


def _complete_work_order_if_done(user, work_order_id: int) -> None:
    """Called after a task reached a final state (its row still locked by the caller's transaction).
    The work order's row lock serialises two tasks finishing at once: exactly one completes the order."""
    work_order = _locked(WorkOrder, work_order_id)
    if not WORK_ORDER.allows("complete", work_order.status):
        return
    if Task.objects.filter(work_order_id=work_order_id, status__in=TASK.open_states).exists():
        return
    work_order.status = WORK_ORDER.target("complete", work_order.status)
    work_order.completed_at = timezone.now()
    work_order.save(update_fields=["status", "completed_at", "updated_at"])
    events.publish(events.WorkOrderCompleted(user, work_order))


# --- tasks --------------------------------------------------------------------------------------
def claim_task(user, task_id: int) -> Task:
    """An operator takes a pending, unassigned task of their own department: one conditional UPDATE,
    so of two concurrent claims exactly one matches the row and the other gets 409."""
    if user.role != Role.OPERATOR or not user.department_id:
        raise PermissionDenied("Only operators of a department claim tasks.")
    now = timezone.now()
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task_id, status__in=TASK.sources("claim"), assigned_operator__isnull=True,
            assigned_department_id=user.department_id,
        ).update(status=TASK.target("claim"), assigned_operator=user, started_at=now, updated_at=now)
        task = Task.objects.select_related("work_order", "process").filter(pk=task_id).first()
        if task is None:
            raise NotFound()
        if not claimed:
            if task.assigned_department_id != user.department_id:
                raise PermissionDenied("This task belongs to another department.")
            if task.assigned_operator_id and task.status in TASK.open_states:
                raise Conflict("This task is already assigned to an operator.")
            TASK.require("claim", task.status)
            raise Conflict()  # claimable a moment ago, changed since: the caller may try again
        _start_work_order(task.work_order_id, now)
        events.publish(events.TaskClaimed(user, task))
    return task


def assign_task(user, task_id: int, operator_id) -> Task:
    """A supervisor (of the task's department) or admin gives the task to an operator of that department."""
    require_supervisor(user, "assign tasks")
    operator = User.objects.filter(pk=operator_id, is_active=True).first() if isinstance(operator_id, int) else None
    if operator is None or operator.role != Role.OPERATOR:
        raise ValidationError({"operator_id": [f"There is no active operator with id {operator_id}."]})
    now = timezone.now()
    with transaction.atomic():
        task = _locked_task(task_id)
        if not user.is_admin and task.assigned_department_id != user.department_id:
            raise PermissionDenied("Supervisors assign only the tasks of their own department.")
        if operator.department_id != task.assigned_department_id:
            raise ValidationError({"operator_id": [(
                f"Operator {operator.username} is not in the task's department "
                f"({task.assigned_department.name}); choose an operator of that department."
            )]})
        status = TASK.target("assign", task.status)
        previous_operator_id = task.assigned_operator_id
        task.assigned_operator = operator
        fields = ["assigned_operator", "updated_at"]
        if status != task.status:
            task.status = status
            task.started_at = now
            fields += ["status", "started_at"]
        task.save(update_fields=fields)
        _start_work_order(task.work_order_id, now)
        events.publish(events.TaskAssigned(user, task, operator, previous_operator_id))
    return task


def update_progress(user, task_id: int, quantity: int) -> ProgressReport:
    """Record `quantity` units just produced. The task row is locked for the whole check-and-write,
    so parallel reports are applied one after the other and none is lost."""
    if not isinstance(quantity, int) or quantity <= 0:
        raise ValidationError({"quantity": ["Report a positive number of units."]})
    with transaction.atomic():
        task = _locked_task(task_id)
        TASK.require("report_progress", task.status)
        if task.assigned_operator_id != user.pk:
            raise PermissionDenied("Only the operator assigned to this task reports its progress.")
        total = task.completed_quantity + quantity
        if total > task.planned_quantity:
            remaining = task.planned_quantity - task.completed_quantity
            raise Conflict(
                f"Reporting {quantity} would exceed the planned quantity {task.planned_quantity} "
                f"({task.completed_quantity} done, at most {remaining} more); nothing was recorded."
            )
        previous = (
            Task.objects.filter(work_order_id=task.work_order_id, sequence__lt=task.sequence)
            .order_by("-sequence").values_list("completed_quantity", "sequence").first()
        )
        if previous is not None and total > previous[0]:
            raise Conflict(
                f"The previous step (sequence {previous[1]}) has completed only {previous[0]} units; this step "
                f"cannot exceed that ({task.completed_quantity} done, {quantity} reported); nothing was recorded."
            )
        now = timezone.now()
        report = ProgressReport.objects.create(task=task, operator=user, quantity=quantity, created_at=now)
        task.completed_quantity = total
        fields = ["completed_quantity", "updated_at"]
        finished = total == task.planned_quantity
        if finished:
            task.status = TASK.target("finish", task.status)
            task.completed_at = now
            fields += ["status", "completed_at"]
        task.save(update_fields=fields)
        if finished:
            events.publish(events.TaskCompleted(user, task))
            _complete_work_order_if_done(user, task.work_order_id)
    report.task = task
    return report


def complete_task(user, task_id: int) -> Task:
    """Close an in-progress task (also short of its planned quantity): its operator, a supervisor of
    its department or an admin."""
    with transaction.atomic():
        task = _locked_task(task_id)
        allowed = (
            user.is_admin
            or task.assigned_operator_id == user.pk
            or (user.role == Role.SUPERVISOR and user.department_id == task.assigned_department_id)
        )
        if not allowed:
            raise PermissionDenied("Only the assigned operator, a supervisor of the department or an admin "
                                   "completes a task.")
        task.status = TASK.target("complete", task.status)
        task.completed_at = timezone.now()
        task.save(update_fields=["status", "completed_at", "updated_at"])
        events.publish(events.TaskCompleted(user, task))
        _complete_work_order_if_done(user, task.work_order_id)
    return task
