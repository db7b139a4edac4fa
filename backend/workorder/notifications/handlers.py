"""Who is notified of what happens in production: the listeners of production's events.

Never the person who acted. Approval: the maker and the supervisors of every department that gets a
task. Rejection and work-order completion: the maker. Assignment, claim, task completion: the
assignee (and the previous assignee on re-assignment), the supervisors of the task's department and
the maker. Connected in NotificationsConfig.ready(); each runs inside the action's transaction.

Also the listener of accounts' tokens_revoked (sent after commit): the open WebSockets of the revoked
tokens close with 4401, in whichever daphne process they are (consumers.py).
"""

from __future__ import annotations

import datetime as dt

from django.dispatch import receiver
from django.utils import timezone

from workorder.accounts.models import Role, User
from workorder.accounts.signals import tokens_revoked
from workorder.core.statements import rows_by_pk
from workorder.production import events
from workorder.production.models import WorkOrder

from .delivery import close_revoked
from .models import Notification, NotificationKind
from .services import notify


def supervisor_ids(department_ids) -> list[int]:
    """The active supervisors of these departments. One department (every task event) is read with a
    statement compiled once per process (core/statements.py)."""
    departments = list(department_ids)
    if len(departments) == 1 and isinstance(departments[0], int):
        rows = rows_by_pk(("department-supervisors",),
                          lambda key: _supervisors(department_id=key).values_list("id"), departments[0])
        return [row[0] for row in rows]
    return list(_supervisors(department_id__in=departments).values_list("id", flat=True))


def _supervisors(**department):
    return User.objects.filter(role=Role.SUPERVISOR, is_active=True, **department).order_by("id")


def _task_concerned(task, extra=()) -> list[int]:
    ids = list(extra)
    if task.assigned_operator_id:
        ids.append(task.assigned_operator_id)
    ids.extend(supervisor_ids([task.assigned_department_id]))
    ids.append(task.work_order.created_by_id)
    return ids


def _task_label(task) -> str:
    return f"{task.sequence} ({task.process.name}) of {task.work_order.number}"


@receiver(events.published, sender=events.WorkOrderApproved, dispatch_uid="notify_work_order_approved")
def work_order_approved(sender, event: events.WorkOrderApproved, **kwargs) -> None:
    work_order = event.work_order
    notify([work_order.created_by_id], NotificationKind.WORK_ORDER_APPROVED,
           f"Work order {work_order.number} was approved ({len(event.tasks)} tasks).", work_order,
           exclude=event.actor)
    notify(supervisor_ids({task.assigned_department_id for task in event.tasks}),
           NotificationKind.WORK_ORDER_APPROVED,
           f"Work order {work_order.number} was approved: new tasks for your department.", work_order,
           exclude=event.actor)


@receiver(events.published, sender=events.WorkOrderRejected, dispatch_uid="notify_work_order_rejected")
def work_order_rejected(sender, event: events.WorkOrderRejected, **kwargs) -> None:
    work_order = event.work_order
    notify([work_order.created_by_id], NotificationKind.WORK_ORDER_REJECTED,
           f"Work order {work_order.number} was rejected: {event.reason}", work_order, exclude=event.actor)


@receiver(events.published, sender=events.WorkOrderCompleted, dispatch_uid="notify_work_order_completed")
def work_order_completed(sender, event: events.WorkOrderCompleted, **kwargs) -> None:
    work_order = event.work_order
    notify([work_order.created_by_id], NotificationKind.WORK_ORDER_COMPLETED,
           f"Work order {work_order.number} is completed.", work_order, exclude=event.actor)


@receiver(events.published, sender=events.TaskClaimed, dispatch_uid="notify_task_claimed")
def task_claimed(sender, event: events.TaskClaimed, **kwargs) -> None:
    notify(_task_concerned(event.task), NotificationKind.TASK_CLAIMED,
           f"{event.actor.username} claimed task {_task_label(event.task)}.", event.task, exclude=event.actor)


@receiver(events.published, sender=events.TaskAssigned, dispatch_uid="notify_task_assigned")
def task_assigned(sender, event: events.TaskAssigned, **kwargs) -> None:
    previous = event.previous_operator_id
    extra = [previous] if previous and previous != event.operator.pk else []
    notify(_task_concerned(event.task, extra), NotificationKind.TASK_ASSIGNED,
           f"Task {_task_label(event.task)} was assigned to {event.operator.username}.", event.task,
           exclude=event.actor)


@receiver(events.published, sender=events.TaskCompleted, dispatch_uid="notify_task_completed")
def task_completed(sender, event: events.TaskCompleted, **kwargs) -> None:
    task = event.task
    notify(_task_concerned(task), NotificationKind.TASK_COMPLETED,
           f"Task {_task_label(task)} is completed ({task.completed_quantity}/{task.planned_quantity}).",
           task, exclude=event.actor)


DEMO_NOTIFICATIONS_PER_USER = 8


@receiver(events.published, sender=events.DemoDataSeeded, dispatch_uid="seed_demo_notifications")
def demo_data_seeded(sender, event: events.DemoDataSeeded, **kwargs) -> None:
    """A few read and unread notifications for demo users that have none (one bulk INSERT, no push)."""
    users = event.users
    have = set(Notification.objects.filter(recipient__in=users).values_list("recipient_id", flat=True).distinct())
    sample = list(WorkOrder.objects.order_by("-id").values_list("id", "number")[:DEMO_NOTIFICATIONS_PER_USER])
    now = timezone.now()
    rows = [
        Notification(recipient=user, kind=NotificationKind.WORK_ORDER_APPROVED,
                     message=f"Work order {number} was approved.", object_type=WorkOrder._meta.label_lower,
                     object_id=work_order_id, created_at=now - dt.timedelta(minutes=n),
                     read_at=now if n % 2 else None)
        for user in users if user.pk not in have
        for n, (work_order_id, number) in enumerate(sample)
    ]
    Notification.objects.bulk_create(rows, batch_size=5000)


@receiver(tokens_revoked, dispatch_uid="close_websockets_of_revoked_tokens")
def close_websockets_of_revoked_tokens(sender, user_id: int, token_ids: list[int] | None = None, **kwargs) -> None:
    close_revoked(user_id, token_ids)
