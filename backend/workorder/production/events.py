"""What happened in production, for the apps above it (notifications) to react to.

services.py publishes an event after each state change, inside the action's transaction: a listener
that writes (notification rows) writes in the same transaction, so a refused or rolled-back action
leaves nothing behind. Production itself never imports a listener.

    from workorder.production.events import TaskClaimed, published
    @receiver(published, sender=TaskClaimed)
    def on_task_claimed(sender, event: TaskClaimed, **kwargs): ...
"""

from __future__ import annotations

from dataclasses import dataclass

from django.dispatch import Signal

from workorder.accounts.models import User

from .models import Task, WorkOrder

published = Signal()  # sender: the event class; keyword argument `event`: the event


@dataclass(frozen=True)
class WorkOrderApproved:
    actor: User
    work_order: WorkOrder
    tasks: list[Task]  # the tasks the approval created, in routing order


@dataclass(frozen=True)
class WorkOrderRejected:
    actor: User
    work_order: WorkOrder
    reason: str


@dataclass(frozen=True)
class WorkOrderCompleted:
    actor: User
    work_order: WorkOrder


@dataclass(frozen=True)
class TaskClaimed:
    actor: User
    task: Task


@dataclass(frozen=True)
class TaskAssigned:
    actor: User
    task: Task
    operator: User
    previous_operator_id: int | None


@dataclass(frozen=True)
class TaskCompleted:
    actor: User
    task: Task


@dataclass(frozen=True)
class DemoDataSeeded:
    """seed_demo created or updated the demo users and work orders: apps above may add their demo rows."""

    users: list[User]


def publish(event) -> None:
    """Deliver `event` to every listener now; a listener's exception aborts the action."""
    published.send(sender=type(event), event=event)
