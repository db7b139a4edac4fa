"""A password change or a deactivation revokes every API token of the user.

Compares the stored password hash and is_active with the ones being saved (one query, skipped when
update_fields leaves both out, e.g. the admin login's last_login update). The rehash Django does at
login when the preferred hasher changed (PBKDF2 -> Argon2id) is not a change (User.check_password).
Bulk QuerySet.update() sends no signals: code that deactivates users in bulk calls tokens.revoke_all().
"""

from __future__ import annotations

from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from .models import User
from .tokens import revoke_all

WATCHED_FIELDS = {"password", "is_active"}


@receiver(pre_save, sender=User, dispatch_uid="accounts.tokens.note_credentials_change")
def note_credentials_change(sender, instance: User, raw=False, update_fields=None, **kwargs):
    instance._revoke_tokens_after_save = False
    if raw or instance.pk is None or getattr(instance, "_rehashing_password", False):
        return
    if update_fields is not None and not (WATCHED_FIELDS & set(update_fields)):
        return
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    changed_password = before["password"] != instance.password
    deactivated = before["is_active"] and not instance.is_active
    instance._revoke_tokens_after_save = changed_password or deactivated


@receiver(post_save, sender=User, dispatch_uid="accounts.tokens.revoke_after_credentials_change")
def revoke_after_credentials_change(sender, instance: User, raw=False, **kwargs):
    if getattr(instance, "_revoke_tokens_after_save", False):
        instance._revoke_tokens_after_save = False
        revoke_all(instance)  # tokens_revoked is sent once the transaction commits
