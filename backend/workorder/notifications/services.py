"""notify(): durable notification rows (one bulk INSERT) plus a realtime push after commit."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import models, transaction
from django.utils import timezone

from . import delivery
from .models import Notification

logger = logging.getLogger(__name__)


def object_label(obj: models.Model | None) -> tuple[str, int | None]:
    if obj is None:
        return "", None
    return obj._meta.label_lower, obj.pk


def notify(recipients: Iterable, kind: str, message: str, obj: models.Model | None = None,
           exclude=None) -> list[Notification]:
    """Create one notification per distinct recipient (users or user ids) about `obj`.

    `exclude` (a user or id) is skipped: nobody is notified of their own action. The rows are
    inserted now (inside the caller's transaction); delivery.push(rows) runs only if and when that
    transaction commits, so a rolled-back action never pushes anything.
    """
    exclude_id = getattr(exclude, "pk", exclude)
    ids: list[int] = []
    for recipient in recipients:
        rid = getattr(recipient, "pk", recipient)
        if rid is None or rid == exclude_id or rid in ids:
            continue
        ids.append(rid)
    if not ids:
        return []
    object_type, object_id = object_label(obj)
    now = timezone.now()
    rows = Notification.objects.bulk_create(
        [
            Notification(recipient_id=rid, kind=kind, message=message[:500], object_type=object_type,
                         object_id=object_id, created_at=now)
            for rid in ids
        ]
    )

    def push() -> None:
        try:
            delivery.push(rows)
        except Exception:
            logger.exception("realtime push of %d notifications failed", len(rows))

    transaction.on_commit(push)
    return rows


def mark_read(user, notification_id: int) -> Notification | None:
    """Mark one of the user's notifications read (idempotent); None if it is not theirs."""
    notification = Notification.objects.filter(pk=notification_id, recipient=user).first()
    if notification is None:
        return None
    if notification.read_at is None:
        now = timezone.now()
        Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(read_at=now)
        notification.read_at = now
    return notification


def mark_all_read(user) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).update(read_at=timezone.now())
