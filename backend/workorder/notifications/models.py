"""Durable notifications; the WebSocket push (delivery.py) is only a hint to re-fetch."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class NotificationKind(models.TextChoices):
    TASK_ASSIGNED = "task_assigned", "Task assigned"
    TASK_CLAIMED = "task_claimed", "Task claimed"
    TASK_COMPLETED = "task_completed", "Task completed"
    WORK_ORDER_APPROVED = "work_order_approved", "Work order approved"
    WORK_ORDER_REJECTED = "work_order_rejected", "Work order rejected"
    WORK_ORDER_COMPLETED = "work_order_completed", "Work order completed"


class Notification(models.Model):
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=30, choices=NotificationKind.choices)
    message = models.CharField(max_length=500)
    # The object it is about: model label ("production.task", "production.workorder") and primary key.
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.BigIntegerField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["recipient", "read_at", "created_at"], name="notif_recipient_read_idx"),
            models.Index(fields=["recipient", "-created_at", "-id"], name="notif_recipient_new_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.recipient_id}"
