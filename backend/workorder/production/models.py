"""Work orders, their tasks (one per routing step) and every progress report as its own row.

State changes go through production/services.py (row locks / conditional UPDATEs, transitions from
production/states.py); never save() a status from a view. Who sees what is a QuerySet method:
`Task.objects.visible_to(user)`, `WorkOrder.objects.visible_to(user)`.
"""

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.lookups import IsNull
from django.utils import timezone

from workorder.accounts.models import Role

from .states import ApprovalStatus, TaskStatus, WorkOrderStatus


class Priority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


class NumberSequence(models.Model):
    """Gap-tolerant counters for human-readable numbers (WO-2026-000123), one row per name+year.

    Incremented under a row lock (services.reserve_numbers), so concurrent creations never collide.
    """

    name = models.CharField(max_length=50, primary_key=True)
    last_value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.last_value}"


class WorkOrderQuerySet(models.QuerySet):
    def visible_to(self, user) -> "WorkOrderQuerySet":
        """Admins: all. Makers: the orders they created. Operators: orders with a task in their department.
        Supervisors: those, plus every order awaiting (or refused) approval, which has no department yet.
        Anyone else (no role, or no department): none. A row outside this set is a 404, never a leak."""
        if not user.is_authenticated:
            return self.none()
        if user.is_admin:
            return self
        if user.role == Role.MAKER:
            return self.filter(created_by_id=user.pk)
        if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
            department_tasks = Task.objects.filter(work_order_id=OuterRef("pk"), assigned_department_id=user.department_id)
            if user.role == Role.SUPERVISOR:
                # "awaiting approval OR has a task here" as a scalar subquery, not EXISTS: PostgreSQL turns
                # an EXISTS under OR into a hashed subplan that reads every task of the department (~20k
                # rows, 6-22 ms) for each 20-row page, while the scalar subquery probes task_dept_wo_idx
                # once per row scanned (0.3 ms). See "Profile" in docs/performance.md.
                first_department_task = Subquery(department_tasks.order_by().values("pk")[:1])
                return self.filter(
                    Q(approval_status__in=[ApprovalStatus.PENDING, ApprovalStatus.REJECTED])
                    | Q(IsNull(first_department_task, False))
                )
            return self.filter(Exists(department_tasks))
        return self.none()

    def visibility_scope(self, user) -> str:
        """A name for the set visible_to(user) returns: users with equal scopes see equal rows (keys the
        cached list counts; keep it in step with visible_to, test_visibility.py checks both)."""
        if not user.is_authenticated:
            return "none"
        if user.is_admin:
            return "all"
        if user.role == Role.MAKER:
            return f"maker:{user.pk}"
        if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
            return f"{user.role}:{user.department_id}"
        return "none"


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user) -> "TaskQuerySet":
        """Admins: all. Operators and supervisors: the tasks of their department. Makers: the tasks of the
        orders they created. Anyone else: none."""
        if not user.is_authenticated:
            return self.none()
        if user.is_admin:
            return self
        if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
            return self.filter(assigned_department_id=user.department_id)
        if user.role == Role.MAKER:
            return self.filter(work_order__created_by_id=user.pk)
        return self.none()

    def visibility_scope(self, user) -> str:
        """A name for the set visible_to(user) returns: users with equal scopes see equal rows (keys the
        cached list counts; keep it in step with visible_to, test_visibility.py checks both)."""
        if not user.is_authenticated:
            return "none"
        if user.is_admin:
            return "all"
        if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
            return f"department:{user.department_id}"
        if user.role == Role.MAKER:
            return f"maker:{user.pk}"
        return "none"


class WorkOrder(models.Model):
    number = models.CharField(max_length=32, unique=True, editable=False)
    customer = models.ForeignKey("catalog.Customer", on_delete=models.PROTECT, related_name="work_orders")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="work_orders")
    production_quantity = models.PositiveIntegerField()
    delivery_date = models.DateField()
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    approval_status = models.CharField(
        max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    status = models.CharField(max_length=12, choices=WorkOrderStatus.choices, default=WorkOrderStatus.OPEN)
    rejection_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="created_work_orders"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="decided_work_orders",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="wo_status_idx"),
            models.Index(fields=["approval_status", "-id"], name="wo_approval_idx"),
            models.Index(fields=["priority", "-id"], name="wo_priority_idx"),
            models.Index(fields=["customer", "-id"], name="wo_customer_idx"),
            models.Index(fields=["created_by", "-id"], name="wo_created_by_idx"),
            models.Index(fields=["delivery_date", "id"], name="wo_delivery_idx"),
            models.Index(fields=["created_at"], name="wo_created_at_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(production_quantity__gt=0), name="wo_quantity_positive"),
        ]

    def __str__(self) -> str:
        return self.number


class Task(models.Model):
    """One routing step of an approved work order, done by one department (and one operator)."""

    work_order = models.ForeignKey(WorkOrder, on_delete=models.CASCADE, related_name="tasks")
    process = models.ForeignKey("catalog.Process", on_delete=models.PROTECT, related_name="tasks")
    sequence = models.PositiveIntegerField(help_text="1-based position in the work order's routing")
    assigned_department = models.ForeignKey("catalog.Department", on_delete=models.PROTECT, related_name="tasks")
    assigned_operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tasks"
    )
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    planned_quantity = models.PositiveIntegerField()
    completed_quantity = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["work_order", "sequence"], name="task_unique_sequence"),
            models.CheckConstraint(
                condition=Q(completed_quantity__lte=models.F("planned_quantity")), name="task_not_over_planned"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "id"], name="task_status_idx"),
            models.Index(fields=["assigned_department", "status", "id"], name="task_dept_status_idx"),
            models.Index(fields=["assigned_department", "id"], name="task_dept_idx"),
            # work-order visibility for operators/supervisors: EXISTS(task of my department)
            models.Index(fields=["assigned_department", "work_order"], name="task_dept_wo_idx"),
            models.Index(fields=["assigned_operator", "status", "id"], name="task_operator_status_idx"),
            models.Index(fields=["process", "id"], name="task_process_idx"),
            models.Index(fields=["sequence", "id"], name="task_sequence_idx"),
            models.Index(fields=["created_at"], name="task_created_at_idx"),
            models.Index(fields=["updated_at"], name="task_updated_at_idx"),
            models.Index(fields=["completed_at"], name="task_completed_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.work_order_id}/{self.sequence}"


class ProgressReport(models.Model):
    """Units produced on a task, reported by one operator at one time. Append-only history."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="progress_reports")
    operator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="progress_reports")
    quantity = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"], name="progress_task_idx")]
        constraints = [models.CheckConstraint(condition=Q(quantity__gt=0), name="progress_quantity_positive")]

    def __str__(self) -> str:
        return f"{self.task_id}+{self.quantity}"
